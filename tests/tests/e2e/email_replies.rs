//! The email thread end to end, with routing and dossier running: a new
//! request is acknowledged once (threading headers, reference, RFC 3834
//! marker), a reply to the acknowledgement by In-Reply-To alone reaches the
//! same dossier, automatic mail and noreply senders are never acknowledged,
//! a bounce marks the address undeliverable (and a new message clears it),
//! and an agent's answer goes out threaded through the notification
//! request.

use std::time::Duration;

use guichet::Role;
use guichet_platform::auth::Role as AuthRole;
use guichet_testkit::email::{fixture, send};
use guichet_testkit::proto::email::v1 as epb;
use guichet_testkit::proto::notification::v1 as npb;
use guichet_testkit::*;
use prost::Message;

use crate::email_smtp::{CITY, spawn_email};

async fn notifications(env: &TestEnv, n: usize) -> Vec<npb::NotificationRequest> {
    env.stream_messages("NOTIFY", n)
        .await
        .into_iter()
        .map(|(_, b)| npb::NotificationRequest::decode(b).expect("notification request"))
        .collect()
}

/// Address events (undeliverable / deliverable) on EVENTS, once there are `n`.
async fn address_events(env: &TestEnv, n: usize) -> Vec<(String, npb::AddressUndeliverable)> {
    eventually("address events", Duration::from_secs(30), || async {
        let all = env.stream_messages("EVENTS", 1).await;
        let found: Vec<_> = all
            .into_iter()
            .filter_map(|(h, b)| {
                let ty = header(&h, "ce-type");
                ty.starts_with("guichet.email.v1.address_").then(|| {
                    (
                        ty,
                        npb::AddressUndeliverable::decode(b).expect("address event"),
                    )
                })
            })
            .collect();
        (found.len() >= n).then_some(found)
    })
    .await
}

fn write_eml(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text.replace('\n', "\r\n")).unwrap();
    p
}

async fn the_thread(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let email = spawn_email(
        &env,
        &[Role::Dossier, Role::Routing, Role::IngressEmail],
        &[],
    )
    .await;
    let token = env.token("agent-1", &[AuthRole::Agent]);
    let mut api = epb::email_service_client::EmailServiceClient::with_interceptor(
        channel(email.app.grpc_addr).await,
        Bearer(token),
    );
    let work = tempfile::tempdir().unwrap();

    // 1. A new request: one acknowledgement, threaded.
    let sent = send(
        email.smtp,
        false,
        None,
        "helene.lefevre@example.fr",
        &[CITY],
        &[fixture("01-simple-utf8.eml")],
    )
    .await;
    assert_eq!(sent[0].code, 250);
    let ack = notifications(&env, 1).await.remove(0);
    assert_eq!(ack.template, "email-accuse-reception");
    assert_eq!(
        ack.target,
        Some(npb::notification_request::Target::Email(
            "helene.lefevre@example.fr".into()
        ))
    );
    assert_eq!(ack.auto_submitted, "auto-replied");
    assert_eq!(ack.in_reply_to, "c01@example.fr");
    assert_eq!(ack.references, vec!["c01@example.fr"]);
    assert!(
        ack.message_id.ends_with("@guichet.test"),
        "{}",
        ack.message_id
    );
    let reference = ack.reference.clone();
    assert!(
        reference.starts_with("VIN-") && reference.len() == 15,
        "{reference}"
    );
    assert_eq!(ack.variables["reference"], reference);
    assert_eq!(ack.variables["subject"], "Demande d'acte de naissance");
    assert!(!ack.variables["process_id"].is_empty());
    assert!(!ack.dossier_id.is_empty());
    let dossier_id = ack.dossier_id.clone();

    // 1b. A follow-up to the citizen's own first message (In-Reply-To a
    // message guichet received, once routing placed it).
    let sent = send(
        email.smtp,
        false,
        None,
        "helene.lefevre@example.fr",
        &[CITY],
        &[fixture("19-followup-in-reply-to.eml")],
    )
    .await;
    assert_eq!(sent[0].code, 250);
    let followup = eventually(
        "the follow-up threaded at intake",
        Duration::from_secs(30),
        || {
            let mut api = api.clone();
            async move {
                let page = api
                    .list_email_messages(epb::ListEmailMessagesRequest {
                        filter: "direction = IN".into(),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                page.email_messages
                    .into_iter()
                    .find(|m| m.message_id == "c19@example.fr" && !m.dossier_id.is_empty())
            }
        },
    )
    .await;
    assert_eq!(
        followup.dossier_reference, reference,
        "the reference found from the thread at intake"
    );
    assert_eq!(followup.dossier_id, dossier_id);

    // 2. The citizen answers the acknowledgement: In-Reply-To only, no
    // reference anywhere in the text.
    let reply = write_eml(
        work.path(),
        "reply.eml",
        &format!(
            "From: Hélène Lefèvre <helene.lefevre@example.fr>\nTo: {CITY}\nSubject: Re: ma demande\n\
             Message-ID: <c19-reply@example.fr>\nIn-Reply-To: <{}>\nReferences: <c01@example.fr> <{}>\n\
             Content-Type: text/plain; charset=utf-8\n\nMerci, je joins mon numéro de téléphone.\n",
            ack.message_id, ack.message_id
        ),
    );
    assert_eq!(
        send(
            email.smtp,
            false,
            None,
            "helene.lefevre@example.fr",
            &[CITY],
            &[reply]
        )
        .await[0]
            .code,
        250
    );
    // (INTAKE is a work queue that routing drains: what was published is
    // read back through the email API.)
    // Routing put it in the same dossier (our record learns it).
    let in_dossier = eventually(
        "both messages in the dossier",
        Duration::from_secs(30),
        || {
            let mut api = api.clone();
            let filter = format!("dossier_id = \"{dossier_id}\" AND direction = IN");
            async move {
                let page = api
                    .list_email_messages(epb::ListEmailMessagesRequest {
                        filter,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                (page.email_messages.len() == 3).then_some(page.email_messages)
            }
        },
    )
    .await;
    assert!(in_dossier.iter().all(|m| m.dossier_reference == reference));
    let follow = in_dossier
        .iter()
        .find(|m| m.message_id == "c19-reply@example.fr")
        .unwrap();
    assert_eq!(follow.in_reply_to, ack.message_id);
    assert_eq!(follow.text, "Merci, je joins mon numéro de téléphone.");

    // 3. A noreply sender opens a dossier (someone may need to read it) but
    // is never acknowledged; automatic mail (an out-of-office that threads
    // to nothing, a mailing list) gets no dossier at all and stays in the
    // "courrier automatique" (issue 14).
    let sent = send(
        email.smtp,
        false,
        None,
        "x@example.org",
        &[CITY],
        &[
            fixture("15-auto-reply.eml"),
            fixture("27-noreply-sender.eml"),
            fixture("16-mailing-list.eml"),
        ],
    )
    .await;
    assert!(sent.iter().all(|s| s.code == 250));
    let inbound = |api: epb::email_service_client::EmailServiceClient<Authed>| async move {
        let mut api = api;
        api.list_email_messages(epb::ListEmailMessagesRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .ok()
        .map(|p| p.into_inner().email_messages)
    };
    eventually(
        "routing placed the noreply sender's message",
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move {
                inbound(api)
                    .await?
                    .iter()
                    .any(|m| m.message_id == "c27@example.fr" && !m.dossier_id.is_empty())
                    .then_some(())
            }
        },
    )
    .await;
    let js = async_nats::jetstream::new(env.nats().await);
    let last = js
        .get_stream(env.stream("INTAKE"))
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .state
        .last_sequence;
    env.wait_consumed("INTAKE", "routing", last).await;
    let all = inbound(api.clone()).await.unwrap();
    for id in ["c15@example.fr", "c16@example.fr"] {
        let m = all.iter().find(|m| m.message_id == id).unwrap();
        assert!(m.auto_submitted, "{id} is automatic");
        assert!(m.dossier_id.is_empty(), "{id} opened no dossier");
    }
    let automatic = api
        .clone()
        .list_email_messages(epb::ListEmailMessagesRequest {
            page_size: 100,
            filter: "auto_submitted = true".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .email_messages;
    assert!(
        ["c15@example.fr", "c16@example.fr"]
            .iter()
            .all(|id| automatic.iter().any(|m| m.message_id == *id)),
        "kept in the courrier automatique"
    );

    // 4. A bounce: the address is undeliverable; then a person writes from it.
    assert_eq!(
        send(
            email.smtp,
            false,
            None,
            "",
            &[CITY],
            &[fixture("17-dsn-bounce.eml")]
        )
        .await[0]
            .code,
        250
    );
    let blocked = address_events(&env, 1).await;
    assert_eq!(blocked[0].0, "guichet.email.v1.address_undeliverable");
    assert_eq!(blocked[0].1.address, "inconnu@example.org");
    assert!(blocked[0].1.permanent && !blocked[0].1.cleared);
    assert_eq!(
        blocked[0].1.original_message_id,
        "sent-by-guichet-c17@guichet.localhost"
    );
    assert!(
        blocked[0].1.reason.starts_with("5.1.1"),
        "{}",
        blocked[0].1.reason
    );
    let back = write_eml(
        work.path(),
        "back.eml",
        &format!(
            "From: inconnu@example.org\nTo: {CITY}\nSubject: Mon adresse fonctionne\nMessage-ID: <back@example.org>\n\nC'est réparé.\n"
        ),
    );
    assert_eq!(
        send(
            email.smtp,
            false,
            None,
            "inconnu@example.org",
            &[CITY],
            &[back]
        )
        .await[0]
            .code,
        250
    );
    let both = address_events(&env, 2).await;
    assert_eq!(both[1].0, "guichet.email.v1.address_deliverable");
    assert_eq!(both[1].1.address, "inconnu@example.org");
    assert!(both[1].1.cleared);
    // Writing again, that person opened a new dossier: acknowledged.
    let second_ack = notifications(&env, 2).await.remove(1);
    assert_eq!(
        second_ack.target,
        Some(npb::notification_request::Target::Email(
            "inconnu@example.org".into()
        ))
    );

    // 5. An agent answers the dossier's thread — with the dossier's own
    // documents only: an object of the store the dossier does not hold (a
    // received message's raw source, known by its hash) is refused.
    let stored = api
        .list_email_messages(epb::ListEmailMessagesRequest {
            page_size: 50,
            filter: "direction = IN".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .email_messages
        .into_iter()
        .find(|m| !m.raw_sha256.is_empty())
        .expect("a stored message")
        .raw_sha256;
    let e = api
        .send_reply(epb::SendReplyRequest {
            dossier_id: dossier_id.clone(),
            text: "Voici le document.".into(),
            request_id: "answer-leak".into(),
            attachments: vec![epb::ReplyAttachment {
                sha256: stored,
                filename: "document.eml".into(),
                media_type: "message/rfc822".into(),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("attachments[0].sha256"),
        "{}",
        e.message()
    );
    let request = epb::SendReplyRequest {
        dossier_id: dossier_id.clone(),
        text: "Madame, votre acte vous sera envoyé sous huit jours.".into(),
        request_id: "answer-1".into(),
        attachments: vec![],
    };
    let sent_reply = api.send_reply(request.clone()).await.unwrap().into_inner();
    let again = api.send_reply(request).await.unwrap().into_inner();
    assert_eq!(sent_reply.name, again.name, "idempotent on request_id");
    let now = eventually("the answer on NOTIFY", Duration::from_secs(30), || async {
        let all = notifications(&env, 1).await;
        all.iter()
            .any(|n| n.template == "email-reponse-agent")
            .then_some(all)
    })
    .await;
    // Exactly: two acknowledgements (the first request, and the person
    // writing again from the unblocked address) and one answer; the other
    // new dossiers were automatic or noreply, the reply was a follow-up.
    let acks: Vec<_> = now
        .iter()
        .filter(|n| n.template == "email-accuse-reception")
        .collect();
    let answers: Vec<_> = now
        .iter()
        .filter(|n| n.template == "email-reponse-agent")
        .collect();
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert_eq!(
        acks[1].target,
        Some(npb::notification_request::Target::Email(
            "inconnu@example.org".into()
        ))
    );
    assert_eq!(answers.len(), 1, "{answers:?}");
    let a = answers[0];
    assert_eq!(
        a.variables["text"],
        "Madame, votre acte vous sera envoyé sous huit jours."
    );
    assert_eq!(
        a.subject,
        format!("Re: ma demande [{reference}]"),
        "the subject of the message answered"
    );
    assert_eq!(
        a.in_reply_to, "c19-reply@example.fr",
        "answers the last message of the thread"
    );
    assert_eq!(
        a.references,
        vec![
            "c01@example.fr".to_owned(),
            ack.message_id.clone(),
            "c19-reply@example.fr".to_owned()
        ]
    );
    assert_eq!(a.auto_submitted, "no");
    assert_eq!(a.reference, reference);
    assert_eq!(
        a.target,
        Some(npb::notification_request::Target::Email(
            "helene.lefevre@example.fr".into()
        ))
    );
    assert_eq!(a.requested_by, "agent-1");
    assert_eq!(sent_reply.direction, epb::Direction::Out as i32);
    assert_eq!(sent_reply.notification_id, a.id);

    // The original and the cleaned text are shown.
    let original = in_dossier
        .iter()
        .find(|m| m.message_id == "c01@example.fr")
        .unwrap();
    let got = api
        .get_email_message(epb::GetEmailMessageRequest {
            name: original.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.full_text.contains("Hélène Lefèvre"));
    assert_eq!(got.raw_sha256.len(), 64);
    // A dossier without email has no thread to answer.
    let err = api
        .send_reply(epb::SendReplyRequest {
            dossier_id: "no-such-dossier".into(),
            text: "x".into(),
            request_id: "r-2".into(),
            attachments: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    email.app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn email_thread_acknowledged_once_followed_by_in_reply_to_and_answered_sqlite() {
    the_thread(Backend::Sqlite).await;
}

#[tokio::test]
async fn email_thread_acknowledged_once_followed_by_in_reply_to_and_answered_postgres() {
    the_thread(Backend::Postgres).await;
}

#[tokio::test]
async fn email_acknowledgements_to_one_address_are_bounded() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let email = spawn_email(
        &env,
        &[Role::Dossier, Role::Routing, Role::IngressEmail],
        &[("GUICHET__EMAIL__ACK_MAX_PER_ADDRESS", "2")],
    )
    .await;
    let token = env.token("agent-1", &[AuthRole::Agent]);
    let api = epb::email_service_client::EmailServiceClient::with_interceptor(
        channel(email.app.grpc_addr).await,
        Bearer(token),
    );
    // Three separate new requests from the same address (three dossiers).
    let files = [
        fixture("01-simple-utf8.eml"),
        fixture("02-alternative.eml"),
        fixture("07-pdf-attachment.eml"),
    ];
    for f in &files {
        let sent = send(
            email.smtp,
            false,
            None,
            "helene.lefevre@example.fr",
            &[CITY],
            std::slice::from_ref(f),
        )
        .await;
        assert_eq!(sent[0].code, 250);
    }
    eventually("three dossiers placed", Duration::from_secs(30), || {
        let mut api = api.clone();
        async move {
            let page = api
                .list_email_messages(epb::ListEmailMessagesRequest {
                    filter: "direction = IN".into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (page.email_messages.len() == 3
                && page.email_messages.iter().all(|m| !m.dossier_id.is_empty()))
            .then_some(())
        }
    })
    .await;
    let acks = notifications(&env, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dossiers: std::collections::HashSet<_> =
        acks.iter().map(|a| a.dossier_id.clone()).collect();
    assert_eq!(
        notifications(&env, 2).await.len(),
        2,
        "at most two to one address"
    );
    assert_eq!(dossiers.len(), 2);
    email.app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn email_of_a_restricted_dossier_is_shown_only_to_its_group() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let rules = env.dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nid = \"social\"\nprocess = \"aide-sociale-ccas\"\nwhen = { channels = [\"email\"], keywords = [\"aide sociale\"] }\n",
    )
    .unwrap();
    let rules = rules.display().to_string();
    let email = spawn_email(
        &env,
        &[Role::Dossier, Role::Routing, Role::IngressEmail],
        &[("GUICHET__ROUTING__RULES_FILE", rules.as_str())],
    )
    .await;
    let client = |token: String| {
        let addr = email.app.grpc_addr;
        async move {
            epb::email_service_client::EmailServiceClient::with_interceptor(
                channel(addr).await,
                Bearer(token),
            )
        }
    };
    let mut outsider = client(env.token("agent-1", &[AuthRole::Agent])).await;
    let mut social = client(env.token_in_groups("agent-2", &[AuthRole::Agent], &["social"])).await;
    let work = tempfile::tempdir().unwrap();
    let msg = write_eml(
        work.path(),
        "social.eml",
        &format!(
            "From: Paul Martin <paul.martin@example.org>\nTo: {CITY}\nSubject: Demande d'aide sociale\n\
             Message-ID: <social-1@example.org>\nContent-Type: text/plain; charset=utf-8\n\n\
             Je sollicite une aide sociale pour mon loyer.\n"
        ),
    );
    assert_eq!(
        send(
            email.smtp,
            false,
            None,
            "paul.martin@example.org",
            &[CITY],
            &[msg]
        )
        .await[0]
            .code,
        250
    );
    let placed = eventually(
        "placed in the restricted dossier",
        Duration::from_secs(30),
        || {
            let mut social = social.clone();
            async move {
                let page = social
                    .list_email_messages(epb::ListEmailMessagesRequest::default())
                    .await
                    .ok()?
                    .into_inner();
                page.email_messages
                    .into_iter()
                    .find(|m| !m.dossier_id.is_empty())
            }
        },
    )
    .await;
    // The group sees and answers it; others see nothing of it.
    let listed = outsider
        .list_email_messages(epb::ListEmailMessagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.email_messages.is_empty(), "{listed:?}");
    let err = outsider
        .get_email_message(epb::GetEmailMessageRequest {
            name: placed.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let reply = epb::SendReplyRequest {
        dossier_id: placed.dossier_id.clone(),
        text: "Votre demande est transmise au CCAS.".into(),
        request_id: "social-answer".into(),
        attachments: vec![],
    };
    let err = outsider.send_reply(reply.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        social
            .get_email_message(epb::GetEmailMessageRequest {
                name: placed.name.clone()
            })
            .await
            .is_ok()
    );
    assert!(social.send_reply(reply).await.is_ok());
    email.app.stop().await.unwrap();
    env.cleanup().await;
}
