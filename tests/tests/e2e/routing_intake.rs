//! Intake through routing: classification rules (accents, dry run, hot
//! reload refusing a broken file), requests without any citizen hint, and
//! correlation to an existing dossier by quoted reference and email thread.

use std::time::Duration;

use guichet::Role;
use guichet_testkit::proto::dossier::v1 as dpb;
use guichet_testkit::proto::intake::v1 as ipb;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::*;

use crate::routing_queue::{available, rules_path, setup, t0};

const RULES: &str = r#"
[[rule]]
id = "etat-civil"
description = "Actes d'état civil"
process = "a-qualifier"
priority = 7
skills = ["etat-civil"]
queue = "etat-civil"
sla = "2d"
when = { channels = ["email", "scan"], keywords = ["acte de naissance", "état civil"] }
"#;

/// The work item routed from `intake_event_id`, once it exists.
pub async fn routed(
    addr: std::net::SocketAddr,
    token: &str,
    intake_event_id: &str,
) -> qpb::WorkItem {
    let q = queue_client(addr, token).await;
    eventually(
        "the intake event routed to a work item",
        Duration::from_secs(30),
        || {
            let mut q = q.clone();
            let id = intake_event_id.to_owned();
            async move {
                let mut page_token = String::new();
                loop {
                    let page = q
                        .list_work_items(qpb::ListWorkItemsRequest {
                            page_size: 200,
                            page_token,
                            ..Default::default()
                        })
                        .await
                        .ok()?
                        .into_inner();
                    if let Some(it) = page.items.into_iter().find(|i| i.intake_event_id == id) {
                        return Some(it);
                    }
                    if page.next_page_token.is_empty() {
                        return None;
                    }
                    page_token = page.next_page_token;
                }
            }
        },
    )
    .await
}

fn email(subject: &str, body: &str) -> ipb::IntakeEvent {
    let mut e = intake_at(ipb::Channel::Email, t0());
    e.subject = subject.into();
    e.body = body.into();
    e
}

#[tokio::test]
async fn routing_rules_classify_explain_and_hot_reload_keeping_the_previous_rules_on_a_broken_file()
{
    let Some(s) = setup(
        Backend::Sqlite,
        Some(RULES),
        &[("GUICHET__ROUTING__RULES_RELOAD_MS", "100")],
    )
    .await
    else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let rules = rules_path(env);
    let boss = env.token("chef", &[TokenRole::Supervisor]);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let sup = queue_client(r.grpc_addr, &boss).await;
    let explain = |e: ipb::IntakeEvent| {
        let mut sup = sup.clone();
        async move {
            sup.explain_classification(qpb::ExplainClassificationRequest { intake: Some(e) })
                .await
                .unwrap()
                .into_inner()
        }
    };

    // Dry run: accents and case do not matter, whole words do.
    let c = explain(email("Demande d'ACTE DE NAISSANCE", "")).await;
    assert_eq!(c.rule_id, "etat-civil");
    assert_eq!((c.priority, c.queue_id.as_str()), (7, "etat-civil"));
    assert!(
        c.evaluations[0]
            .reasons
            .iter()
            .any(|r| r.contains("acte de naissance")),
        "{:?}",
        c.evaluations
    );
    // Thursday 10:00 Paris + 2 working days: Friday, then Saturday morning.
    assert_eq!(
        c.sla_due_time.unwrap().seconds,
        chrono::DateTime::parse_from_rfc3339("2026-11-28T09:00:00Z")
            .unwrap()
            .timestamp()
    );
    assert_eq!(explain(email("Etat-Civil", "")).await.rule_id, "etat-civil");
    // Plurals count; a word that only looks alike does not.
    assert_eq!(
        explain(email("deux actes de naissance", "")).await.rule_id,
        "etat-civil"
    );
    let none = explain(email("naissance d'un projet", "")).await;
    assert_eq!(none.rule_id, "", "no rule: triage");
    assert_eq!(none.process_id, "a-qualifier");
    assert!(!none.evaluations[0].matched);
    let denied = queue_client(r.grpc_addr, &agent)
        .await
        .explain_classification(qpb::ExplainClassificationRequest {
            intake: Some(email("x", "")),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let bad = sup
        .clone()
        .explain_classification(qpb::ExplainClassificationRequest { intake: None })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // The rules drive routing: queue, priority, skills, SLA.
    let mut e = email("Acte de naissance", "pour mon fils");
    e.citizen = Some(ipb::CitizenHint {
        family_name: "Martin".into(),
        emails: vec!["martin@example.fr".into()],
        ..Default::default()
    });
    env.publish_intake(&e).await;
    let it = routed(r.grpc_addr, &agent, &e.id).await;
    assert_eq!(
        (it.queue_id.as_str(), it.priority, it.rule_id.as_str()),
        ("etat-civil", 7, "etat-civil")
    );
    assert_eq!(it.skills, vec!["etat-civil".to_string()]);
    assert_eq!(it.sla_state(), qpb::SlaState::Ok);

    // A broken file: refused with the reason, previous rules kept.
    std::fs::write(
        &rules,
        RULES.replace("queue = \"etat-civil\"", "queue = \"nulle-part\""),
    )
    .unwrap();
    let c = eventually("the broken file refused", Duration::from_secs(10), || {
        let f = explain(email("acte de naissance", ""));
        async move { Some(f.await).filter(|c| !c.last_reload_error.is_empty()) }
    })
    .await;
    assert!(
        c.last_reload_error.contains("nulle-part"),
        "{}",
        c.last_reload_error
    );
    assert_eq!(c.rule_id, "etat-civil", "previous rules still in force");

    // A good file again: applied.
    std::fs::write(
        &rules,
        "[[rule]]\nid = \"urbanisme\"\nprocess = \"a-qualifier\"\nqueue = \"urbanisme\"\nwhen = { keywords = [\"permis de construire\"] }\n",
    )
    .unwrap();
    let c = eventually("the new rules applied", Duration::from_secs(10), || {
        let f = explain(email("PERMIS de Construire", ""));
        async move { Some(f.await).filter(|c| c.rule_id == "urbanisme") }
    })
    .await;
    assert!(c.last_reload_error.is_empty());
    assert_eq!(explain(email("acte de naissance", "")).await.rule_id, "");
    s.finish().await;
}

#[tokio::test]
async fn routing_correlates_by_quoted_reference_and_email_thread_and_queues_requests_without_a_citizen()
 {
    let Some(s) = setup(Backend::Sqlite, None, &[]).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let agent = env.token("agent-1", &[TokenRole::Agent]);

    // A call from a withheld number: no hint, still queued (no dossier).
    let call = intake_at(ipb::Channel::Telephony, t0());
    env.publish_intake(&call).await;
    let it = routed(r.grpc_addr, &agent, &call.id).await;
    assert!(it.dossier_id.is_empty() && it.citizen_id.is_empty());
    assert_eq!(it.correlation, "none");
    assert_eq!(it.status(), qpb::WorkItemStatus::Pending);

    // A number that does not parse (mistyped at the desk): still queued,
    // for the agent to identify the person, not dead-lettered.
    let mut typo = intake_at(ipb::Channel::Counter, t0());
    typo.citizen = Some(ipb::CitizenHint {
        phones: vec!["07 11 22 33 44".into()],
        ..Default::default()
    });
    env.publish_intake(&typo).await;
    let it = routed(r.grpc_addr, &agent, &typo.id).await;
    assert_eq!(it.correlation, "unidentified");
    assert!(it.dossier_id.is_empty());

    // A first visit opens a dossier.
    let mut visit = intake_at(ipb::Channel::Counter, t0());
    visit.body = "renseignement".into();
    visit.citizen = Some(ipb::CitizenHint {
        given_name: "Hélène".into(),
        family_name: "Dupont".into(),
        phones: vec!["06 12 34 56 78".into()],
        ..Default::default()
    });
    env.publish_intake(&visit).await;
    let first = routed(r.grpc_addr, &agent, &visit.id).await;
    assert_eq!(first.correlation, "new");
    assert!(first.dossier_reference.starts_with("VIN-"));

    // A letter quoting the reference (lower case, in the text) joins it,
    // even from an address the citizen never used before.
    let mut letter = intake_at(ipb::Channel::Scan, t0());
    letter.body = format!(
        "Madame, concernant le dossier {} je vous envoie…",
        first.dossier_reference.to_lowercase()
    );
    letter.citizen = Some(ipb::CitizenHint {
        family_name: "Durand".into(),
        ..Default::default()
    });
    env.publish_intake(&letter).await;
    let second = routed(r.grpc_addr, &agent, &letter.id).await;
    assert_eq!(second.correlation, "reference");
    assert_eq!(second.dossier_id, first.dossier_id);
    assert_eq!(second.citizen_id, first.citizen_id);

    // An email, then a reply to it without anything identifying the sender.
    let mut mail = email("Question", "Bonjour");
    mail.citizen = Some(ipb::CitizenHint {
        emails: vec!["paul@example.fr".into()],
        ..Default::default()
    });
    mail.details = Some(ipb::intake_event::Details::Email(ipb::EmailDetails {
        message_id: "<m1@example.fr>".into(),
        ..Default::default()
    }));
    // With an attachment already in the object store, as email ingress
    // leaves it; and one of a type the dossier does not keep.
    let pdf = b"%PDF-1.4 justificatif de domicile".to_vec();
    let sha = guichet_platform::objects::ObjectStore::local(env.dir.path().join("objects"))
        .put(&pdf)
        .await
        .unwrap();
    mail.attachments = vec![
        ipb::AttachmentRef {
            sha256: sha.clone(),
            media_type: "application/pdf".into(),
            size_bytes: pdf.len() as u64,
            filename: "justificatif.pdf".into(),
        },
        ipb::AttachmentRef {
            sha256: sha.clone().replace(&sha[..4], "0000"),
            media_type: "application/x-msdownload".into(),
            size_bytes: 10,
            filename: "virus.exe".into(),
        },
    ];
    env.publish_intake(&mail).await;
    let m1 = routed(r.grpc_addr, &agent, &mail.id).await;
    assert_eq!(m1.correlation, "new");
    assert_ne!(m1.dossier_id, first.dossier_id);
    let docs = dossier_client(s.dossier.grpc_addr, &agent)
        .await
        .list_documents(dpb::ListDocumentsRequest {
            dossier_id: m1.dossier_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let shas: Vec<&str> = docs.documents.iter().map(|d| d.sha256.as_str()).collect();
    assert_eq!(
        shas,
        vec![sha.as_str()],
        "the PDF on the dossier, the .exe refused"
    );
    // The email role owns threading: a reply carries the reference of the
    // dossier its thread belongs to, marked as found by the thread.
    let mut reply = email("Re: Question", "Merci");
    reply.quoted_reference = m1.dossier_reference.clone();
    reply.details = Some(ipb::intake_event::Details::Email(ipb::EmailDetails {
        message_id: "<m2@example.fr>".into(),
        in_reply_to: "<m1@example.fr>".into(),
        references: vec!["<m1@example.fr>".into()],
        reference_source: "thread".into(),
        ..Default::default()
    }));
    env.publish_intake(&reply).await;
    let m2 = routed(r.grpc_addr, &agent, &reply.id).await;
    assert_eq!(m2.correlation, "email_thread");
    assert_eq!(m2.dossier_id, m1.dossier_id);

    // Completing the item without a dossier works (nothing to record).
    available(r.grpc_addr, &agent, false).await;
    let mut q = queue_client(r.grpc_addr, &agent).await;
    let mut taken = Vec::new();
    while let Ok(t) = q.take_next(qpb::TakeNextRequest::default()).await {
        let t = t.into_inner();
        taken.push(t.id.clone());
        q.complete_work_item(qpb::CompleteWorkItemRequest {
            id: t.id,
            outcome: "Traité".into(),
        })
        .await
        .unwrap();
    }
    assert_eq!(taken.len(), 6);
    s.finish().await;
}

#[tokio::test]
async fn routing_replicas_share_the_durable_consumer_and_route_each_event_once_on_postgres() {
    let Some(env) = TestEnv::new(Backend::Postgres).await else {
        return;
    };
    let dossier = env.spawn(&[Role::Dossier]).await;
    let clock = ManualClock::new(t0());
    let a = env
        .spawn_routing_with_clock(clock.clone(), dossier.grpc_addr, &[])
        .await;
    let b = env
        .spawn_routing_with_clock(clock.clone(), dossier.grpc_addr, &[])
        .await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let mut ids = Vec::new();
    for i in 0..30 {
        let mut e = intake_at(ipb::Channel::Counter, t0());
        e.citizen = Some(ipb::CitizenHint {
            family_name: format!("Replique{i}"),
            phones: vec![format!("+336{:08}", 20_000_000 + i)],
            ..Default::default()
        });
        env.publish_intake(&e).await;
        ids.push(e.id);
    }
    let q = queue_client(a.grpc_addr, &agent).await;
    let items = eventually("30 items routed", Duration::from_secs(60), || {
        let mut q = q.clone();
        async move {
            let page = q
                .list_work_items(qpb::ListWorkItemsRequest {
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            Some(page.items).filter(|i| i.len() >= 30)
        }
    })
    .await;
    let mut routed: Vec<String> = items.into_iter().map(|i| i.intake_event_id).collect();
    routed.sort();
    ids.sort();
    assert_eq!(routed, ids, "each event routed exactly once");
    a.stop().await;
    b.stop().await;
    dossier.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn routing_refuses_to_start_on_a_broken_rules_file_naming_the_key() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let path = rules_path(&env);
    std::fs::write(
        &path,
        "[[rule]]\nid = \"x\"\nprocess = \"a-qualifier\"\nwhen = { channels = [\"fax\"] }\n",
    )
    .unwrap();
    let path = path.display().to_string();
    let config = env.config_with(&[("GUICHET__ROUTING__RULES_FILE", &path)]);
    let err = guichet::start(
        config,
        &[Role::Dossier, Role::Routing],
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .err()
    .expect("start refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("routing.rules_file") && msg.contains("fax"),
        "{msg}"
    );
    env.cleanup().await;
}

/// Issue 14: automatic mail is nobody's request. An auto-reply to a message
/// of a known dossier lands on that dossier's timeline only; a newsletter
/// and an unthreaded bounce are set aside (the email role keeps them, listed
/// as automatic): no citizen, no dossier, no work item.
#[tokio::test]
async fn automatic_mail_lands_on_its_dossier_timeline_only_or_is_set_aside() {
    let Some(s) = setup(Backend::Sqlite, None, &[]).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let mut mail = email(
        "Inscription en crèche",
        "Bonjour, je voudrais une place en crèche.",
    );
    mail.citizen = Some(ipb::CitizenHint {
        emails: vec!["paul@example.fr".into()],
        ..Default::default()
    });
    mail.details = Some(ipb::intake_event::Details::Email(ipb::EmailDetails {
        message_id: "<m1@example.fr>".into(),
        ..Default::default()
    }));
    env.publish_intake(&mail).await;
    let m1 = routed(r.grpc_addr, &agent, &mail.id).await;
    assert!(!m1.dossier_id.is_empty());

    // The email role threads automatic mail too: an auto-reply to a known
    // message carries that message's dossier reference.
    let automatic = |subject: &str, from: &str, reason: &str, reply_to: &str| {
        let mut e = email(subject, "Message automatique");
        if reply_to == "<m1@example.fr>" {
            e.quoted_reference = m1.dossier_reference.clone();
        }
        e.citizen = Some(ipb::CitizenHint {
            family_name: "Newsletter Commerce".into(),
            emails: vec![from.into()],
            ..Default::default()
        });
        e.details = Some(ipb::intake_event::Details::Email(ipb::EmailDetails {
            message_id: format!("<{}@auto.example>", uuid::Uuid::now_v7()),
            in_reply_to: reply_to.into(),
            auto_submitted: true,
            auto_reason: reason.into(),
            bounce: reason == "bounce",
            reference_source: if reply_to == "<m1@example.fr>" {
                "thread".into()
            } else {
                String::new()
            },
            ..Default::default()
        }));
        e
    };
    let ooo = automatic(
        "Réponse automatique : absent",
        "paul@example.fr",
        "auto-submitted",
        "<m1@example.fr>",
    );
    env.publish_intake(&ooo).await;
    let news = automatic("Nos promotions", "news@commerce.example", "list", "");
    env.publish_intake(&news).await;
    let bounce = automatic(
        "Undelivered Mail Returned to Sender",
        "mailer-daemon@mx.example",
        "bounce",
        "<inconnu@ailleurs.example>",
    );
    let last = env.publish_intake(&bounce).await;
    env.wait_consumed("INTAKE", "routing", last).await;

    let mut d = dossier_client(s.dossier.grpc_addr, &agent).await;
    let timeline = d
        .list_dossier_timeline(dpb::ListDossierTimelineRequest {
            dossier_id: m1.dossier_id.clone(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let auto: Vec<_> = timeline
        .entries
        .iter()
        .filter(|e| e.summary.starts_with("Courrier automatique"))
        .collect();
    assert_eq!(
        auto.len(),
        1,
        "the auto-reply on its dossier: {:?}",
        timeline.entries
    );
    assert_eq!(auto[0].source_event_id, ooo.id);
    for robot in [
        "news@commerce.example",
        "mailer-daemon@mx.example",
        "Newsletter",
    ] {
        let found = d
            .list_citizens(dpb::ListCitizensRequest {
                query: robot.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(found.citizens.is_empty(), "no citizen for {robot}");
    }
    let items = queue_client(r.grpc_addr, &agent)
        .await
        .list_work_items(qpb::ListWorkItemsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let ids: Vec<_> = items.iter().map(|i| i.intake_event_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![mail.id.as_str()],
        "only the person's request is queued"
    );
    s.finish().await;
}

/// Issue 14: a quoted reference that does not exist is not silently
/// dropped: the new dossier and its work item say "référence citée
/// inconnue", for the agent to find what the citizen means.
#[tokio::test]
async fn an_unknown_quoted_reference_is_shown_to_the_agent() {
    let Some(s) = setup(Backend::Sqlite, None, &[]).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let mut mail = email(
        "Re: mon dossier VIN-2026-999999",
        "Bonjour, où en est mon dossier VIN-2026-999999 ?",
    );
    mail.citizen = Some(ipb::CitizenHint {
        emails: vec!["claire@example.fr".into()],
        ..Default::default()
    });
    // With a forwarded message (.eml) as the email role stores it: a
    // document of the dossier like any other.
    let eml = b"From: ecole@example.fr\r\nSubject: Certificat\r\n\r\nBonjour".to_vec();
    let sha = guichet_platform::objects::ObjectStore::local(env.dir.path().join("objects"))
        .put(&eml)
        .await
        .unwrap();
    mail.attachments = vec![ipb::AttachmentRef {
        sha256: sha.clone(),
        media_type: "message/rfc822".into(),
        size_bytes: eml.len() as u64,
        filename: "message-transfere.eml".into(),
    }];
    env.publish_intake(&mail).await;
    let item = routed(r.grpc_addr, &agent, &mail.id).await;
    assert_eq!(item.correlation, "new");
    let docs = dossier_client(s.dossier.grpc_addr, &agent)
        .await
        .list_documents(dpb::ListDocumentsRequest {
            dossier_id: item.dossier_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        docs.documents
            .iter()
            .map(|d| d.sha256.as_str())
            .collect::<Vec<_>>(),
        vec![sha.as_str()],
        "the forwarded message is a document of the dossier"
    );
    assert!(
        item.summary
            .contains("référence citée inconnue : VIN-2026-999999"),
        "{}",
        item.summary
    );
    let timeline = dossier_client(s.dossier.grpc_addr, &agent)
        .await
        .list_dossier_timeline(dpb::ListDossierTimelineRequest {
            dossier_id: item.dossier_id.clone(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        timeline.entries.iter().any(|e| e
            .summary
            .starts_with("Référence citée inconnue : VIN-2026-999999")),
        "{:?}",
        timeline.entries
    );
    s.finish().await;
}

/// Issue 14: a merge made at the dossier role (an agent merging two files)
/// reaches the queue: work items of the merged record name the kept one.
#[tokio::test]
async fn work_items_follow_a_citizen_merge() {
    let Some(s) = setup(Backend::Sqlite, None, &[]).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let visit = |family: &str, phone: &str| {
        let mut e = intake_at(ipb::Channel::Counter, t0());
        e.body = "renseignement".into();
        e.citizen = Some(ipb::CitizenHint {
            given_name: "Paul".into(),
            family_name: family.into(),
            phones: vec![phone.into()],
            ..Default::default()
        });
        e
    };
    let a = visit("Martin", "06 11 11 11 11");
    env.publish_intake(&a).await;
    let b = visit("Martin", "06 22 22 22 22");
    env.publish_intake(&b).await;
    let kept = routed(r.grpc_addr, &agent, &a.id).await;
    let merged = routed(r.grpc_addr, &agent, &b.id).await;
    assert_ne!(kept.citizen_id, merged.citizen_id);
    dossier_client(s.dossier.grpc_addr, &agent)
        .await
        .merge_citizens(dpb::MergeCitizensRequest {
            target_citizen_id: kept.citizen_id.clone(),
            source_citizen_id: merged.citizen_id.clone(),
            reason: "même personne, deux numéros".into(),
        })
        .await
        .unwrap();
    let q = queue_client(r.grpc_addr, &agent).await;
    eventually(
        "the item follows the merge",
        Duration::from_secs(30),
        || {
            let mut q = q.clone();
            let id = merged.id.clone();
            let want = kept.citizen_id.clone();
            async move {
                let it = q
                    .get_work_item(qpb::GetWorkItemRequest {
                        id,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                (it.citizen_id == want).then_some(())
            }
        },
    )
    .await;
    s.finish().await;
}
