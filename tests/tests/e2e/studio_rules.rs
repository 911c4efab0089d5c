//! The routing rules studio: a process owner reads the rules in force, tries
//! a change on a real past request and on the labelled examples (before and
//! after), sees a broken text refused at its line, publishes with a reason,
//! and new requests follow the new rules on every routing replica (the
//! newest publication in routing's database; or, where files stay the
//! source of truth, the rules file the studio writes). Over gRPC on SQLite
//! and PostgreSQL, and in a real browser (axe-core on every page, with and
//! without JavaScript); an agent without the permission gets no studio.

use std::time::Duration;

use guichet_platform::auth::Role as AuthRole;
use guichet_portal::PortalHandle;
use guichet_testkit::browser::{Browser, fantoccini::Locator};
use guichet_testkit::proto::intake::v1 as ipb;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::*;

use crate::portal::{account, log_in, log_out};
use crate::routing_intake::routed;
use crate::routing_queue::{event_types_until, rules_path, setup, t0};

/// The rules shipped with guichet (in force without a rules file).
const SHIPPED: &str = include_str!("../../../config/routing-rules.toml");

/// The town's change: stands at the Christmas market are an occupation of
/// the public space, which the shipped rules leave to triage.
const NEW_RULE: &str = r#"[[rule]]
id = "marche-noel"
description = "Stands du marché de Noël"
process = "occupation-domaine-public"
priority = 3
when = { keywords = ["marché de noël", "stand"] }

"#;

/// The shipped rules with [`NEW_RULE`] tried first.
fn candidate() -> String {
    let at = SHIPPED.find("[[rule]]").expect("a first rule");
    format!("{}{NEW_RULE}{}", &SHIPPED[..at], &SHIPPED[at..])
}

/// The candidate with a queue that does not exist, and the line it is on.
fn broken() -> (String, u32) {
    let text = candidate().replace(
        "priority = 3\nwhen = { keywords = [\"marché de noël\"",
        "priority = 3\nqueue = \"nulle-part\"\nwhen = { keywords = [\"marché de noël\"",
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("queue = \"nulle-part\""))
        .expect("the broken line") as u32
        + 1;
    (text, line)
}

fn market_mail(subject: &str, body: &str) -> ipb::IntakeEvent {
    let mut e = intake_at(ipb::Channel::Email, t0());
    e.subject = subject.into();
    e.body = body.into();
    e
}

async fn rules_of(addr: std::net::SocketAddr, token: &str) -> qpb::RoutingRules {
    queue_client(addr, token)
        .await
        .get_routing_rules(qpb::GetRoutingRulesRequest {})
        .await
        .expect("get routing rules")
        .into_inner()
}

async fn studio_over_grpc(backend: Backend) {
    let fast = [("GUICHET__ROUTING__RULES_RELOAD_MS", "100")];
    let Some(s) = setup(backend, None, &fast).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    // A second replica on the same database and stream.
    let r2 = env
        .spawn_routing_with_clock(ManualClock::new(t0()), s.dossier.grpc_addr, &fast)
        .await;
    let owner = env.token("po-1", &[TokenRole::ProcessOwner]);
    let admin = env.token("admin-1", &[TokenRole::Admin]);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);
    let mut po = queue_client(r.grpc_addr, &owner).await;

    // Only process owners (and admins) use the studio.
    for token in [&agent, &supervisor] {
        let denied = queue_client(r.grpc_addr, token)
            .await
            .get_routing_rules(qpb::GetRoutingRulesRequest {})
            .await
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    }
    let running = rules_of(r.grpc_addr, &admin).await;
    assert_eq!(running.source(), qpb::RulesSource::Shipped);
    assert_eq!(running.text, SHIPPED);
    assert_eq!(running.studio_writes, "database");
    assert!(running.publication.is_none());
    assert!(running.rules.len() >= 20, "{}", running.rules.len());
    let rule = running
        .rules
        .iter()
        .find(|x| x.id == "occupation-domaine-public")
        .expect("a rule for the public space");
    assert_eq!(rule.process_id, "occupation-domaine-public");
    assert!(
        rule.conditions
            .iter()
            .any(|c| c.starts_with("l'un des mots : ") && c.contains("«\u{a0}benne\u{a0}»")),
        "{:?}",
        rule.conditions
    );

    // A past request the rules in force leave to triage.
    let past = market_mail(
        "Un stand au marché de Noël",
        "Bonjour, je voudrais tenir un stand de vin chaud au marché de Noël du 12 décembre.",
    );
    env.publish_intake(&past).await;
    let past_item = routed(r.grpc_addr, &supervisor, &past.id).await;
    assert_eq!(
        (past_item.rule_id.as_str(), past_item.process_id.as_str()),
        ("", "a-qualifier")
    );

    // Tried: the past request and a typed one, before and after; the
    // labelled examples measured under both.
    let trial = po
        .try_routing_rules(qpb::TryRoutingRulesRequest {
            candidate_text: candidate(),
            requests: vec![qpb::TrialRequest {
                channel: ipb::Channel::Counter as i32,
                subject: String::new(),
                body: "acte de naissance de ma fille".into(),
            }],
            work_item_ids: vec![past_item.id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(trial.problems.is_empty(), "{:?}", trial.problems);
    assert_eq!(trial.running_version, running.version);
    assert_ne!(trial.candidate_version, running.version);
    assert_eq!(trial.results.len(), 2);
    let typed = &trial.results[0];
    assert!(!typed.changed, "a civil-status request stays where it was");
    assert_eq!(
        typed.before.as_ref().unwrap().process_id,
        typed.after.as_ref().unwrap().process_id
    );
    let tried = &trial.results[1];
    assert_eq!(tried.work_item_id, past_item.id);
    assert_eq!(tried.recorded_process_id, "a-qualifier");
    assert!(tried.error.is_empty(), "{}", tried.error);
    assert!(tried.changed);
    let (before, after) = (
        tried.before.as_ref().unwrap(),
        tried.after.as_ref().unwrap(),
    );
    assert_eq!(
        (before.rule_id.as_str(), before.process_id.as_str()),
        ("", "a-qualifier")
    );
    assert!(
        before.reasons[0].contains("à qualifier"),
        "{:?}",
        before.reasons
    );
    assert_eq!(
        (
            after.rule_id.as_str(),
            after.process_id.as_str(),
            after.priority
        ),
        ("marche-noel", "occupation-domaine-public", 3)
    );
    assert!(
        after.reasons.iter().any(|w| w.contains("marché de noël")),
        "{:?}",
        after.reasons
    );
    let (ra, ca) = (
        trial.running_accuracy.unwrap(),
        trial.candidate_accuracy.unwrap(),
    );
    assert!(ra.total >= 200 && ca.total == ra.total);
    assert!(ra.accuracy >= 0.9, "{ra:?}");
    assert_eq!(trial.corpus, "shipped");
    // The corpus changes listed are exactly the outcomes that differ.
    assert_eq!(
        ca.correct as i64 - ra.correct as i64,
        trial
            .corpus_changes
            .iter()
            .map(|c| {
                i64::from(c.after_process_id == c.expected_process_id)
                    - i64::from(c.before_process_id == c.expected_process_id)
            })
            .sum::<i64>()
    );

    // Without the funeral-plot rule, the labelled funeral requests go
    // elsewhere: the accuracy drops by exactly the examples listed.
    let without: String = SHIPPED
        .split("[[rule]]")
        .filter(|block| !block.contains("id = \"concession-funeraire\""))
        .collect::<Vec<_>>()
        .join("[[rule]]");
    let worse = po
        .try_routing_rules(qpb::TryRoutingRulesRequest {
            candidate_text: without,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (ra, wa) = (
        worse.running_accuracy.unwrap(),
        worse.candidate_accuracy.unwrap(),
    );
    assert!(wa.correct < ra.correct, "{ra:?} {wa:?}");
    assert_eq!(worse.candidate_rules.len(), running.rules.len() - 1);
    assert!(!worse.corpus_changes.is_empty());
    assert!(
        worse.corpus_changes.iter().all(|c| {
            c.expected_process_id == "concession-funeraire"
                && c.before_process_id == "concession-funeraire"
                && c.after_process_id != "concession-funeraire"
        }),
        "{:?}",
        worse.corpus_changes
    );
    assert_eq!(
        (ra.correct - wa.correct) as usize,
        worse.corpus_changes.len()
    );

    // A broken candidate: refused at its line, the rules in force still tried.
    let (bad, line) = broken();
    let refused = po
        .try_routing_rules(qpb::TryRoutingRulesRequest {
            candidate_text: bad.clone(),
            work_item_ids: vec![past_item.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.problems.len(), 1);
    let p = &refused.problems[0];
    assert_eq!((p.line, p.column), (line, 9), "{p:?}");
    assert!(
        p.message.contains("la file « nulle-part » n'existe pas"),
        "{}",
        p.message
    );
    assert!(refused.candidate_version.is_empty() && refused.candidate_accuracy.is_none());
    assert!(refused.results[0].before.is_some() && refused.results[0].after.is_none());

    // Bad input names the field.
    let field_of = |e: tonic::Status| e.message().to_owned();
    let e = po
        .try_routing_rules(qpb::TryRoutingRulesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(field_of(e).contains("candidate_text"));
    let e = po
        .try_routing_rules(qpb::TryRoutingRulesRequest {
            candidate_text: candidate(),
            work_item_ids: vec!["pas-un-element".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(field_of(e).contains("work_item_ids[0]"));
    let e = po
        .try_routing_rules(qpb::TryRoutingRulesRequest {
            candidate_text: candidate(),
            requests: vec![qpb::TrialRequest {
                channel: ipb::Channel::Email as i32,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(field_of(e).contains("requests[0]"));
    let publish = |text: String, reason: &str, base: &str| qpb::PublishRoutingRulesRequest {
        text,
        reason: reason.into(),
        base_version: base.into(),
        author_name: "Paule Orsini".into(),
    };
    let e = po
        .publish_routing_rules(publish(candidate(), "  ", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(field_of(e).contains("reason"));
    let e = po
        .publish_routing_rules(publish(bad, "essai", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(field_of(e).contains(&format!("text: line {line}")));
    let e = po
        .publish_routing_rules(publish(candidate(), "essai", "0000000000000000"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    let e = queue_client(r.grpc_addr, &agent)
        .await
        .publish_routing_rules(publish(candidate(), "essai", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        po.list_rules_publications(qpb::ListRulesPublicationsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .publications
            .is_empty(),
        "nothing refused was recorded"
    );

    // Published, with who and why: in force here at once, on the other
    // replica within its reload interval.
    let publication = po
        .publish_routing_rules(publish(
            candidate(),
            "Les stands du marché de Noël relèvent de l'occupation du domaine public",
            &running.version,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(publication.author, "po-1");
    assert_eq!(publication.author_name, "Paule Orsini");
    assert_eq!(publication.version, trial.candidate_version);
    assert_eq!(publication.previous_version, running.version);
    assert!(publication.written_to.is_empty());
    assert_eq!(publication.rule_count as usize, running.rules.len() + 1);
    let now = rules_of(r.grpc_addr, &owner).await;
    assert_eq!(now.source(), qpb::RulesSource::Database);
    assert_eq!(now.text, candidate());
    assert_eq!(now.publication.as_ref().unwrap().id, publication.id);
    assert_eq!(now.rules[0].id, "marche-noel");
    let other = eventually("the other replica follows", Duration::from_secs(10), || {
        let (owner, want) = (owner.clone(), publication.version.clone());
        let addr = r2.grpc_addr;
        async move {
            let g = rules_of(addr, &owner).await;
            (g.version == want).then_some(g)
        }
    })
    .await;
    assert_eq!(other.source(), qpb::RulesSource::Database);
    assert_eq!(
        other.publication.unwrap().reason,
        "Les stands du marché de Noël relèvent de l'occupation du domaine public"
    );
    // The same text again is nothing to publish.
    let e = po
        .publish_routing_rules(publish(candidate(), "encore", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // New requests follow the new rules.
    let next = market_mail(
        "Réservation d'un stand",
        "Je souhaite réserver un emplacement au marché de Noël.",
    );
    env.publish_intake(&next).await;
    let item = routed(r.grpc_addr, &supervisor, &next.id).await;
    assert_eq!(
        (
            item.rule_id.as_str(),
            item.process_id.as_str(),
            item.priority
        ),
        ("marche-noel", "occupation-domaine-public", 3)
    );

    // The history, and the audit event.
    let history = po
        .list_rules_publications(qpb::ListRulesPublicationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .publications;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].id, publication.id);
    assert_eq!(history[0].author, "po-1");
    event_types_until(env, |t| {
        t.iter().any(|t| t == "guichet.routing.v1.rules_published")
    })
    .await;

    // What classification read is kept a limited time: once forgotten, a
    // past request can no longer be tried (and says so).
    let forgotten = routing::studio::forget_inputs(r.queue.db(), t0() + chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(forgotten, 2, "the two requests routed");
    let late_trial = po
        .try_routing_rules(qpb::TryRoutingRulesRequest {
            candidate_text: candidate(),
            work_item_ids: vec![past_item.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        late_trial.results[0].error.contains("n'est pas conservé"),
        "{:?}",
        late_trial.results[0]
    );
    assert!(late_trial.results[0].before.is_none());

    // A replica started later has the published rules from its start.
    r2.stop().await;
    let r3 = env
        .spawn_routing_with_clock(
            ManualClock::new(t0()),
            s.dossier.grpc_addr,
            &[("GUICHET__ROUTING__RULES_RELOAD_MS", "3600000")],
        )
        .await;
    let late = rules_of(r3.grpc_addr, &owner).await;
    assert_eq!(late.version, publication.version);
    assert_eq!(late.source(), qpb::RulesSource::Database);
    r3.stop().await;
    s.finish().await;
}

#[tokio::test]
async fn rules_studio_tries_a_change_on_past_requests_and_publishes_it_to_every_replica() {
    studio_over_grpc(Backend::Sqlite).await;
}

#[tokio::test]
async fn rules_studio_tries_a_change_on_past_requests_and_publishes_it_to_every_replica_postgres() {
    studio_over_grpc(Backend::Postgres).await;
}

#[test]
fn the_studio_writes_files_only_where_a_rules_file_is_configured() {
    let check = |extra: &[(&str, &str)]| {
        let mut vars = vec![(
            "GUICHET__AUTH__SIGNING_KEY".to_owned(),
            SIGNING_KEY.to_owned(),
        )];
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        guichet::GuichetConfig::load(None, vars)
            .expect("types are right")
            .validate(&[guichet::Role::Routing])
            .map_err(|e| e.to_string())
    };
    let err = check(&[("GUICHET__ROUTING__STUDIO_WRITES", "file")]).unwrap_err();
    assert!(err.contains("routing.studio_writes"), "{err}");
    let err = check(&[("GUICHET__ROUTING__STUDIO_WRITES", "disque")]).unwrap_err();
    assert!(err.contains("routing.studio_writes"), "{err}");
    check(&[
        ("GUICHET__ROUTING__STUDIO_WRITES", "file"),
        (
            "GUICHET__ROUTING__RULES_FILE",
            "/etc/guichet/routing-rules.toml",
        ),
    ])
    .unwrap();
    check(&[]).unwrap();
}

/// A town's own labelled requests, measured instead of the shipped ones.
const TOWN_CORPUS: &str = r#"
[[request]]
id = "marche-1"
channel = "email"
subject = "Stand au marché de Noël"
body = "Je voudrais un emplacement pour vendre des jouets."
expected = "occupation-domaine-public"

[[request]]
id = "naissance-1"
channel = "counter"
body = "Une copie de mon acte de naissance"
expected = "acte-etat-civil"
"#;

/// Files as the source of truth: the studio writes the rules file, says
/// where, and records the publication; the town's own labelled requests
/// measure the change.
#[tokio::test]
async fn rules_studio_writes_the_rules_file_where_files_are_the_source_of_truth() {
    let corpus_dir = tempfile::tempdir().unwrap();
    let corpus = corpus_dir.path().join("corpus.toml");
    std::fs::write(&corpus, TOWN_CORPUS).unwrap();
    let corpus = corpus.display().to_string();
    let Some(s) = setup(
        Backend::Sqlite,
        Some(SHIPPED),
        &[
            ("GUICHET__ROUTING__RULES_RELOAD_MS", "100"),
            ("GUICHET__ROUTING__STUDIO_WRITES", "file"),
            ("GUICHET__ROUTING__CORPUS_FILE", &corpus),
        ],
    )
    .await
    else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let path = rules_path(env);
    let owner = env.token("po-1", &[TokenRole::ProcessOwner]);
    let running = rules_of(r.grpc_addr, &owner).await;
    assert_eq!(running.source(), qpb::RulesSource::File);
    assert_eq!(running.studio_writes, "file");
    assert_eq!(running.file_path, path.display().to_string());
    let trial = queue_client(r.grpc_addr, &owner)
        .await
        .try_routing_rules(qpb::TryRoutingRulesRequest {
            candidate_text: candidate(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trial.corpus, corpus);
    let (before, after) = (
        trial.running_accuracy.unwrap(),
        trial.candidate_accuracy.unwrap(),
    );
    assert_eq!((before.total, before.correct, before.to_triage), (2, 1, 1));
    assert_eq!((after.total, after.correct, after.accuracy), (2, 2, 1.0));
    assert_eq!(trial.corpus_changes.len(), 1);
    assert_eq!(trial.corpus_changes[0].id, "marche-1");
    assert_eq!(trial.corpus_changes[0].before_process_id, "a-qualifier");
    let publication = queue_client(r.grpc_addr, &owner)
        .await
        .publish_routing_rules(qpb::PublishRoutingRulesRequest {
            text: candidate(),
            reason: "Marché de Noël".into(),
            base_version: running.version.clone(),
            author_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(publication.written_to, path.display().to_string());
    assert_eq!(publication.author_name, "po-1", "the subject when no name");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), candidate());
    let now = rules_of(r.grpc_addr, &owner).await;
    assert_eq!(now.source(), qpb::RulesSource::File);
    assert_eq!(now.version, publication.version);
    assert_eq!(now.publication.unwrap().id, publication.id);
    let next = market_mail("Stand", "Un stand au marché de Noël, s'il vous plaît.");
    env.publish_intake(&next).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let item = routed(r.grpc_addr, &agent, &next.id).await;
    assert_eq!(item.rule_id, "marche-noel");
    // An edit of the file by hand is still read (the file rules).
    std::fs::write(&path, SHIPPED).unwrap();
    eventually(
        "the file edited by hand applies",
        Duration::from_secs(10),
        || {
            let (owner, want) = (owner.clone(), running.version.clone());
            let addr = r.grpc_addr;
            async move {
                let g = rules_of(addr, &owner).await;
                (g.version == want).then_some(())
            }
        },
    )
    .await;
    s.finish().await;
}

/// Set a form field's value at once (a rules text is long to type).
async fn set_value(b: &Browser, id: &str, value: &str) {
    b.client
        .execute(
            "document.getElementById(arguments[0]).value = arguments[1]; return true;",
            vec![id.into(), value.into()],
        )
        .await
        .expect("set the field");
}

#[tokio::test]
async fn a_process_owner_changes_tries_and_publishes_a_routing_rule_in_the_browser() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(
        &portal,
        "paule",
        "Paule Orsini",
        &[AuthRole::Agent, AuthRole::ProcessOwner],
        &[],
    )
    .await;
    account(&portal, "marie", "Marie Durand", &[AuthRole::Agent], &[]).await;
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);

    // A request that came in before the change, left to triage.
    let mut past = intake_at(ipb::Channel::Email, chrono::Utc::now());
    past.subject = "Un stand au marché de Noël".into();
    past.body = "Bonjour, je voudrais tenir un stand de vin chaud au marché de Noël.".into();
    env.publish_intake(&past).await;
    let past_item = routed(app.grpc_addr, &supervisor, &past.id).await;
    assert_eq!(past_item.process_id, "a-qualifier");

    // The rules in force, to read.
    log_in(&b, &base, "paule").await;
    b.wait_text("File unique", Duration::from_secs(10)).await;
    b.goto(&format!("{base}/studio/regles")).await;
    let text = b
        .wait_text("Règles en vigueur", Duration::from_secs(10))
        .await;
    assert!(text.contains("les règles livrées avec guichet"), "{text}");
    assert!(text.contains("occupation-domaine-public"));
    assert!(text.contains("Aucune publication depuis le studio"));
    b.check_page("studio-regles").await;
    // The text in force, unfolded.
    b.client
        .find(Locator::Css("details summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("id = \"occupation-domaine-public\"", Duration::from_secs(5))
        .await;
    b.check_page("studio-regles-texte").await;

    // The change, tried on the past request: before and after.
    set_value(&b, "texte", &candidate()).await;
    b.client
        .find(Locator::Id(&format!("demande-{}", past_item.id)))
        .await
        .expect("the past request offered")
        .click()
        .await
        .unwrap();
    b.click_text("Essayer").await;
    let text = b
        .wait_text("Résultat de l'essai", Duration::from_secs(20))
        .await;
    let row = b
        .client
        .find(Locator::XPath(
            "//table[caption[contains(., 'avant et après')]]/tbody/tr[1]",
        ))
        .await
        .expect("the tried request's row")
        .text()
        .await
        .unwrap();
    assert!(row.contains("Un stand au marché de Noël"), "{row}");
    assert!(row.contains("règle : aucune"), "{row}");
    assert!(row.contains("règle : marche-noel"), "{row}");
    assert!(row.contains("mot-clé « marché de noël » trouvé"), "{row}");
    assert!(row.contains("Changé"), "{row}");
    assert!(
        text.contains("Justesse sur les exemples livrés avec guichet"),
        "{text}"
    );
    assert!(text.contains("Règles essayées"));
    b.check_page("studio-regles-essai").await;

    // A broken text: refused at its line, linked to the editor.
    let (bad, line) = broken();
    set_value(&b, "texte", &bad).await;
    b.click_text("Essayer").await;
    let text = b
        .wait_text(&format!("Ligne {line}, colonne 9"), Duration::from_secs(20))
        .await;
    assert!(
        text.contains("la file « nulle-part » n'existe pas"),
        "{text}"
    );
    assert!(
        text.contains(&format!("→ {line} | queue = \"nulle-part\"")),
        "{text}"
    );
    let editor = b.client.find(Locator::Id("texte")).await.unwrap();
    assert_eq!(
        editor.attr("aria-describedby").await.unwrap().as_deref(),
        Some("texte-aide texte-erreur")
    );
    assert_eq!(
        editor.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    b.check_page("studio-regles-erreur").await;

    // Published with a reason (required).
    set_value(&b, "texte", &candidate()).await;
    b.click_text("Publier").await;
    b.wait_text("Dites pourquoi vous publiez", Duration::from_secs(10))
        .await;
    let reason = b.client.find(Locator::Id("raison")).await.unwrap();
    assert_eq!(
        reason.attr("aria-describedby").await.unwrap().as_deref(),
        Some("raison-erreur")
    );
    b.check_page("studio-regles-raison").await;
    b.fill(
        "raison",
        "Les stands du marché de Noël relèvent du domaine public",
    )
    .await;
    // From the reason to the button with the keyboard alone.
    b.keys("\u{E004}").await;
    assert_eq!(b.focused_text().await, "Publier");
    b.keys("\u{E007}").await;
    let text = b
        .wait_text("Règles publiées", Duration::from_secs(20))
        .await;
    assert_eq!(b.current_path().await, "/studio/regles");
    assert!(text.contains("une publication du studio"), "{text}");
    assert!(
        text.contains("Les stands du marché de Noël relèvent du domaine public"),
        "{text}"
    );
    assert!(text.contains("Paule Orsini"), "{text}");
    assert!(text.contains("marche-noel"));
    b.check_page("studio-regles-publiees").await;

    // A new request goes by the new rule.
    let mut next = intake_at(ipb::Channel::Email, chrono::Utc::now());
    next.subject = "Réservation".into();
    next.body = "Je souhaite réserver un stand au marché de Noël.".into();
    env.publish_intake(&next).await;
    let item = routed(app.grpc_addr, &supervisor, &next.id).await;
    assert_eq!(
        (item.rule_id.as_str(), item.process_id.as_str()),
        ("marche-noel", "occupation-domaine-public")
    );

    // An agent without the permission: no studio in the navigation, and a
    // French refusal at the address.
    log_out(&b).await;
    log_in(&b, &base, "marie").await;
    let text = b.wait_text("File unique", Duration::from_secs(10)).await;
    assert!(!text.contains("Procédures"), "{text}");
    b.goto(&format!("{base}/studio/regles")).await;
    b.wait_text(
        "réservé aux responsables de procédures",
        Duration::from_secs(10),
    )
    .await;
    b.check_page("studio-regles-refus").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = b.cookie("guichet_session").await.expect("session cookie");
    let res = http
        .get(format!("{base}/studio/regles"))
        .header("cookie", format!("guichet_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    b.close().await;

    // Without JavaScript the trial works the same (plain form posts).
    let Some(b) = Browser::start_without_javascript().await else {
        return;
    };
    log_in(&b, &base, "paule").await;
    b.wait_text("File unique", Duration::from_secs(10)).await;
    b.goto(&format!("{base}/studio/regles")).await;
    b.wait_text("Règles en vigueur", Duration::from_secs(10))
        .await;
    b.fill("objet", "Stand au marché de Noël").await;
    b.fill("corps", "Pour la vente de jouets en bois.").await;
    b.click_text("Essayer").await;
    let text = b
        .wait_text("Résultat de l'essai", Duration::from_secs(20))
        .await;
    assert!(text.contains("règle : marche-noel"), "{text}");
    assert!(
        text.contains("Inchangé"),
        "the text in force tried on itself"
    );
    // (axe-core needs JavaScript: the same page was checked above.)
    let png = b.client.screenshot().await.expect("screenshot");
    std::fs::write(b.shots.join("studio-regles-sans-javascript.png"), png).unwrap();
    b.close().await;
    app.stop().await.expect("app stops");
    env.cleanup().await;
}
