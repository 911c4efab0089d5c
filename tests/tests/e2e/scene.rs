//! The case study's scene across real roles (issue 14): Jean Dupont emails
//! about a crèche place (SMTP), then phones (a CDR whose caller ID names
//! him, over HTTP), then walks in giving his name and number (counter over
//! gRPC). The call's record is named and offered as a candidate; the agent
//! confirms it on the work item; the walk-in then finds him by his number:
//! one citizen, one crèche dossier, and a timeline with the email, the call
//! and the visit.

use std::time::Duration;

use guichet_testkit::email::send;
use guichet_testkit::proto::dossier::v1 as dpb;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::*;

use crate::email_smtp::{CITY, spawn_email};
use crate::routing_intake::routed;

async fn the_scene(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let email = spawn_email(&env, &all_roles(), &[]).await;
    let app = &email.app;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);

    // 1. The email.
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("creche.eml");
    std::fs::write(
        &mail,
        format!(
            "From: Jean Dupont <jean.dupont@exemple.fr>\r\nTo: {CITY}\r\nSubject: Inscription en crèche\r\nMessage-ID: <scene-1@exemple.fr>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour,\r\nje souhaite inscrire ma fille en crèche à partir de septembre.\r\nJean Dupont\r\n"
        ),
    )
    .unwrap();
    let sent = send(
        email.smtp,
        false,
        None,
        "jean.dupont@exemple.fr",
        &[CITY],
        &[mail],
    )
    .await;
    assert!(sent.iter().all(|s| s.code == 250));
    let q = queue_client(app.grpc_addr, &agent).await;
    let first = eventually("the email routed", Duration::from_secs(30), || {
        let mut q = q.clone();
        async move {
            let items = q
                .list_work_items(qpb::ListWorkItemsRequest {
                    page_size: 50,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .items;
            items
                .into_iter()
                .find(|i| i.channel() == guichet_testkit::proto::intake::v1::Channel::Email)
        }
    })
    .await;
    assert_eq!(first.process_id, "creche-inscription", "the shipped rules");
    let jean = first.citizen_id.clone();

    // 2. The call, from a CDR whose caller ID names him (answered).
    let csv = "\"\",\"0612345678\",\"200\",\"from-trunk\",\"\"\"Jean Dupont\"\" <0612345678>\",\"SIP/trunk-1\",\"SIP/200-2\",\"Dial\",\"SIP/200\",\"2026-12-01 10:00:00\",\"2026-12-01 10:00:12\",\"2026-12-01 10:04:12\",252,240,\"ANSWERED\",\"DOCUMENTATION\",\"scene-call-1\",\"\"\n";
    let (status, body) = http_post(
        cti_addr(app),
        &format!("/api/v1/cdr/{CTI_TOKEN}"),
        "text/csv",
        csv.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let call = eventually("the call routed", Duration::from_secs(30), || {
        let mut q = q.clone();
        async move {
            q.list_work_items(qpb::ListWorkItemsRequest {
                page_size: 50,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .items
            .into_iter()
            .find(|i| i.channel() == guichet_testkit::proto::intake::v1::Channel::Telephony)
        }
    })
    .await;
    assert_eq!(
        call.status(),
        qpb::WorkItemStatus::Completed,
        "answered live"
    );
    assert!(
        call.dossier_id.is_empty(),
        "no triage dossier for an answered call"
    );
    assert_ne!(
        call.citizen_id, jean,
        "a phone number alone is not the same person"
    );
    let caller = dossier_client(app.grpc_addr, &agent)
        .await
        .get_citizen(dpb::GetCitizenRequest {
            id: call.citizen_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (caller.given_name.as_str(), caller.family_name.as_str()),
        ("Jean", "Dupont"),
        "the caller ID's name is kept"
    );
    assert_eq!(call.candidates.len(), 1, "{:?}", call.candidates);
    assert_eq!(call.candidates[0].citizen_id, jean);
    assert_eq!(call.candidates[0].why, "même nom");

    // The agent confirms: the same person.
    let settled = q
        .clone()
        .resolve_citizen_candidate(qpb::ResolveCitizenCandidateRequest {
            id: call.id.clone(),
            citizen_id: jean.clone(),
            confirm: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(settled.citizen_id, jean);
    assert!(settled.candidates.is_empty());
    let wrong = q
        .clone()
        .resolve_citizen_candidate(qpb::ResolveCitizenCandidateRequest {
            id: call.id.clone(),
            citizen_id: "not-a-candidate".into(),
            confirm: true,
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);

    // 3. The walk-in, with his name and number.
    let ticket = counter_client(app.grpc_addr, &agent)
        .await
        .issue_ticket(ticket_request(
            "Jean",
            "Dupont",
            "06 12 34 56 78",
            "inscription crèche de ma fille",
        ))
        .await
        .unwrap()
        .into_inner();
    let visit = routed(app.grpc_addr, &agent, &ticket.intake_event_id).await;
    assert_eq!(visit.citizen_id, jean, "one citizen");
    assert_eq!(visit.dossier_id, first.dossier_id, "one crèche dossier");

    let mut d = dossier_client(app.grpc_addr, &supervisor).await;
    let dossiers = d
        .list_dossiers(dpb::ListDossiersRequest {
            citizen_id: jean.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dossiers;
    assert_eq!(dossiers.len(), 1, "{dossiers:?}");
    let found = d
        .list_citizens(dpb::ListCitizensRequest {
            query: "Jean Dupont".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .citizens;
    assert_eq!(found.len(), 1, "one Jean Dupont in the directory");
    let timeline = d
        .list_citizen_timeline(dpb::ListCitizenTimelineRequest {
            citizen_id: jean.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    use guichet_testkit::proto::intake::v1::Channel;
    for channel in [Channel::Email, Channel::Telephony, Channel::Counter] {
        assert!(
            timeline
                .iter()
                .any(|e| e.channel == channel as i32 && e.kind == dpb::EntryKind::Contact as i32),
            "the {channel:?} contact on his timeline: {timeline:?}"
        );
    }
    email.app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn jean_dupont_emails_phones_and_walks_in_one_citizen_one_dossier_on_sqlite() {
    the_scene(Backend::Sqlite).await;
}

#[tokio::test]
async fn jean_dupont_emails_phones_and_walks_in_one_citizen_one_dossier_on_postgres() {
    the_scene(Backend::Postgres).await;
}
