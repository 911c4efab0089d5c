//! `CorrelateIntake`, the one dossier call routing makes per intake event:
//! idempotent on the event id (a redelivery, even concurrent, writes
//! nothing twice and gets the first answer), race-free for one person's
//! requests routed at once (one citizen, one dossier), and the policy's
//! branches — done work on the timeline only, automatic mail set aside,
//! an unknown reference noted, a hint that does not parse.

use guichet::Role;
use guichet_platform::auth::Role as TokenRole;
use guichet_proto::convert::timestamp;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::{Channel, CitizenHint};
use guichet_testkit::{Backend, TestEnv, dossier_client};
use tonic::Code;

type Client = dpb::dossier_service_client::DossierServiceClient<guichet_testkit::Authed>;

fn request(id: &str, phone: &str, process: &str) -> dpb::CorrelateIntakeRequest {
    dpb::CorrelateIntakeRequest {
        request_id: id.into(),
        channel: Channel::Telephony as i32,
        occur_time: Some(timestamp(chrono::Utc::now())),
        mode: dpb::IntakeMode::Request as i32,
        hint: Some(CitizenHint {
            given_name: "Lucie".into(),
            family_name: "Marchand".into(),
            phones: vec![phone.into()],
            ..Default::default()
        }),
        process_id: process.into(),
        triage_process_id: "a-qualifier".into(),
        correlation_window_seconds: 72 * 3600,
        summary: "Appel manqué (attente 35 s)".into(),
        ..Default::default()
    }
}

async fn timeline(c: &mut Client, dossier_id: &str) -> Vec<dpb::TimelineEntry> {
    c.list_dossier_timeline(dpb::ListDossierTimelineRequest {
        dossier_id: dossier_id.into(),
        page_size: 500,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .entries
}

async fn citizens_with(c: &mut Client, query: &str) -> Vec<dpb::Citizen> {
    c.list_citizens(dpb::ListCitizensRequest {
        query: query.into(),
        page_size: 50,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .citizens
}

async fn one_person_at_once(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env.spawn(&[Role::Dossier]).await;
    let service = env.service_token("routing", "dossier");
    let agent = env.token("agent-1", &[TokenRole::Agent]);

    // 20 requests of one new person routed at once, plus 4 redeliveries of
    // the first one racing it.
    let phone = "06 12 34 56 78";
    let first = uuid::Uuid::now_v7().to_string();
    let mut ids: Vec<String> = (0..20).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    ids[0] = first.clone();
    let mut calls: Vec<String> = ids.clone();
    calls.extend(std::iter::repeat_n(first.clone(), 4));
    let mut tasks = tokio::task::JoinSet::new();
    for id in calls {
        let mut c = dossier_client(app.grpc_addr, &service).await;
        tasks.spawn(async move {
            let r = c
                .correlate_intake(request(&id, phone, "acte-etat-civil"))
                .await
                .expect("every concurrent correlation succeeds")
                .into_inner();
            (id, r)
        });
    }
    let mut answers = Vec::new();
    while let Some(res) = tasks.join_next().await {
        answers.push(res.unwrap());
    }
    let dossiers: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(_, r)| r.dossier.as_ref().expect("a dossier").id.clone())
        .collect();
    assert_eq!(dossiers.len(), 1, "one dossier for one person: {answers:?}");
    let citizen_ids: std::collections::BTreeSet<&str> =
        answers.iter().map(|(_, r)| r.citizen_id.as_str()).collect();
    assert_eq!(citizen_ids.len(), 1, "one citizen");
    let new = answers
        .iter()
        .filter(|(_, r)| r.correlation == "new")
        .map(|(id, _)| id.clone())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(new.len(), 1, "opened once, then reused: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|(_, r)| r.correlation == "new" || r.correlation == "citizen_window"),
        "{answers:?}"
    );
    // The redeliveries got the first delivery's answer.
    let firsts: Vec<_> = answers.iter().filter(|(id, _)| *id == first).collect();
    assert_eq!(firsts.len(), 5);
    assert!(
        firsts
            .iter()
            .all(|(_, r)| r.correlation == firsts[0].1.correlation)
    );

    let mut a = dossier_client(app.grpc_addr, &agent).await;
    let dossier_id = dossiers.into_iter().next().unwrap();
    let entries = timeline(&mut a, &dossier_id).await;
    let contacts: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == dpb::EntryKind::Contact as i32)
        .collect();
    assert_eq!(contacts.len(), 20, "each request once on the timeline");
    let mut sources: Vec<&str> = contacts
        .iter()
        .map(|e| e.source_event_id.as_str())
        .collect();
    sources.sort();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(sources, expected);
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.kind == dpb::EntryKind::DossierOpened as i32)
            .count(),
        1
    );
    assert_eq!(
        citizens_with(&mut a, phone).await.len(),
        1,
        "one citizen for the number"
    );

    // A replay later returns the same answer and writes nothing.
    let mut svc = dossier_client(app.grpc_addr, &service).await;
    let again = svc
        .correlate_intake(request(&ids[3], phone, "acte-etat-civil"))
        .await
        .unwrap()
        .into_inner();
    let before = answers.iter().find(|(id, _)| *id == ids[3]).unwrap();
    assert_eq!(again.correlation, before.1.correlation);
    assert_eq!(again.dossier.unwrap().id, dossier_id);
    assert_eq!(timeline(&mut a, &dossier_id).await.len(), entries.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_persons_concurrent_requests_make_one_citizen_and_one_dossier_sqlite() {
    one_person_at_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_persons_concurrent_requests_make_one_citizen_and_one_dossier_postgres() {
    one_person_at_once(Backend::Postgres).await;
}

async fn branches(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env.spawn(&[Role::Dossier]).await;
    let service = env.service_token("routing", "dossier");
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let mut svc = dossier_client(app.grpc_addr, &service).await;
    let mut a = dossier_client(app.grpc_addr, &agent).await;

    // Only a service routes intake.
    let refused = a
        .correlate_intake(request("x", "06 00 00 00 01", "acte-etat-civil"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // Bad input names its field.
    let mut bad = request("", "06 00 00 00 01", "acte-etat-civil");
    let e = svc.correlate_intake(bad.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("request_id"), "{}", e.message());
    bad.request_id = "r-bad".into();
    bad.channel = 0;
    let e = svc.correlate_intake(bad).await.unwrap_err();
    assert!(e.message().contains("channel"), "{}", e.message());

    // A call answered live with nothing open: the citizen's timeline only.
    let mut done = request("r-done-1", "06 22 33 44 55", "a-qualifier");
    done.mode = dpb::IntakeMode::Done as i32;
    let r = svc
        .correlate_intake(done.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.correlation, "timeline_only");
    assert!(r.dossier.is_none());
    let citizen_id = r.citizen_id.clone();
    let on_timeline = a
        .list_citizen_timeline(dpb::ListCitizenTimelineRequest {
            citizen_id: citizen_id.clone(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(on_timeline.iter().any(|e| e.source_event_id == "r-done-1"));
    // A request opens a dossier; the next answered call goes on it.
    let opened = svc
        .correlate_intake(request("r-open", "06 22 33 44 55", "acte-etat-civil"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.correlation, "new");
    assert_eq!(opened.citizen_id, citizen_id);
    let d = opened.dossier.unwrap();
    done.request_id = "r-done-2".into();
    let r = svc.correlate_intake(done).await.unwrap().into_inner();
    assert_eq!(r.correlation, "citizen_open");
    assert_eq!(r.dossier.unwrap().id, d.id);

    // A quoted reference leads to its dossier; one that does not exist is
    // told to the agent, on the dossier and in the summary.
    let mut quoted = request("r-ref", "06 99 99 99 99", "a-qualifier");
    quoted.quoted_references = vec![d.reference.to_lowercase()];
    let r = svc.correlate_intake(quoted).await.unwrap().into_inner();
    assert_eq!(r.correlation, "reference");
    assert_eq!(r.dossier.unwrap().id, d.id);
    let mut unknown = request("r-unknown", "06 22 33 44 55", "acte-etat-civil");
    unknown.quoted_references = vec!["VIN-2019-999999".into()];
    let r = svc.correlate_intake(unknown).await.unwrap().into_inner();
    assert_eq!(r.correlation, "citizen_window");
    assert_eq!(r.unknown_references, vec!["VIN-2019-999999"]);
    assert!(
        r.summary
            .ends_with("— référence citée inconnue : VIN-2019-999999"),
        "{}",
        r.summary
    );
    let entries = timeline(&mut a, &d.id).await;
    assert!(entries.iter().any(|e| {
        e.source_event_id == "r-unknown:unknown-reference"
            && e.summary
                .starts_with("Référence citée inconnue : VIN-2019-999999")
    }));

    // Automatic mail threading nowhere: set aside, nobody created.
    let robot = dpb::CorrelateIntakeRequest {
        request_id: "r-robot".into(),
        channel: Channel::Email as i32,
        mode: dpb::IntakeMode::Automatic as i32,
        hint: Some(CitizenHint {
            family_name: "Newsletter Commerce".into(),
            emails: vec!["news@commerce.example".into()],
            ..Default::default()
        }),
        process_id: "a-qualifier".into(),
        summary: "Courrier automatique : Nos promotions".into(),
        ..Default::default()
    };
    let r = svc
        .correlate_intake(robot.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.correlation, "set_aside");
    assert!(r.dossier.is_none() && r.citizen_id.is_empty());
    assert!(
        citizens_with(&mut a, "news@commerce.example")
            .await
            .is_empty()
    );
    // Threading to a known dossier: on its timeline only.
    let mut reply = robot;
    reply.request_id = "r-robot-2".into();
    reply.thread_reference = d.reference.clone();
    let r = svc.correlate_intake(reply).await.unwrap().into_inner();
    assert_eq!(r.correlation, "email_thread");
    assert_eq!(r.dossier.unwrap().id, d.id);

    // A number that does not parse: the request is kept for an agent, the
    // answer names the field, never the value.
    let mut garbled = request("r-garbled", "06 12", "acte-etat-civil");
    garbled.hint.as_mut().unwrap().given_name.clear();
    garbled.hint.as_mut().unwrap().family_name.clear();
    let r = svc.correlate_intake(garbled).await.unwrap().into_inner();
    assert_eq!(r.correlation, "unidentified");
    assert!(r.dossier.is_none());
    assert!(r.refused.contains("hint"), "{}", r.refused);
    assert!(!r.refused.contains("06 12"), "{}", r.refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_correlation_branches_sqlite() {
    branches(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_correlation_branches_postgres() {
    branches(Backend::Postgres).await;
}
