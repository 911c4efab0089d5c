//! Nothing accepted is lost, nothing is done twice: crashes, redeliveries
//! and poison messages on the INTAKE stream.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::HeaderMap;
use guichet::Role;
use guichet_testkit::proto::dossier::v1 as dpb;
use guichet_testkit::proto::intake::v1 as ipb;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::*;
use prost::Message;

fn intake_event(id: &str, family: &str, phone: &str) -> ipb::IntakeEvent {
    ipb::IntakeEvent {
        id: id.into(),
        channel: ipb::Channel::Counter as i32,
        received_at: Some(guichet_testkit::proto::convert::timestamp(
            chrono::Utc::now(),
        )),
        citizen: Some(ipb::CitizenHint {
            family_name: family.into(),
            phones: vec![phone.into()],
            ..Default::default()
        }),
        body: "question".into(),
        details: Some(ipb::intake_event::Details::Counter(ipb::CounterDetails {
            ticket_number: "G900".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Publish raw bytes with CloudEvents headers, as a channel would.
async fn publish_raw(env: &TestEnv, ce_id: Option<&str>, msg_id: &str, body: Vec<u8>) {
    let js = async_nats::jetstream::new(env.nats().await);
    let mut headers = HeaderMap::new();
    if let Some(id) = ce_id {
        headers.insert("ce-id", id);
    }
    headers.insert("ce-type", "guichet.intake.v1.intake_event");
    headers.insert("ce-source", "test");
    headers.insert("Nats-Msg-Id", msg_id);
    js.publish_with_headers(env.subject("intake.counter"), headers, body.into())
        .await
        .expect("publish")
        .await
        .expect("jetstream ack");
}

async fn all_items(addr: std::net::SocketAddr, token: &str) -> Vec<qpb::WorkItem> {
    let mut q = queue_client(addr, token).await;
    let mut items = Vec::new();
    let mut token_page = String::new();
    loop {
        let page = q
            .list_work_items(qpb::ListWorkItemsRequest {
                page_size: 100,
                page_token: token_page.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        items.extend(page.items);
        if page.next_page_token.is_empty() {
            return items;
        }
        token_page = page.next_page_token;
    }
}

/// Dead-lettered messages of this test: (reason, ce-id).
async fn dead_letters(env: &TestEnv, expected: usize) -> Vec<(String, String)> {
    env.stream_headers("DEADLETTER", expected)
        .await
        .iter()
        .map(|h| (header(h, "guichet-dlq-reason"), header(h, "ce-id")))
        .collect()
}

#[tokio::test]
async fn a_redelivered_intake_event_creates_one_item_and_one_timeline_entry() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let id = uuid::Uuid::now_v7().to_string();
    let body = intake_event(&id, "Martin", "01 43 98 65 00").encode_to_vec();
    // Two copies with different Nats-Msg-Id: JetStream cannot dedupe them,
    // so routing's own idempotency must.
    publish_raw(&env, Some(&id), "copy-1", body.clone()).await;
    publish_raw(&env, Some(&id), "copy-2", body).await;
    // A marker event published after both: once it is routed, both copies were handled.
    let marker = uuid::Uuid::now_v7().to_string();
    publish_raw(
        &env,
        Some(&marker),
        &marker,
        intake_event(&marker, "Marker", "06 00 00 00 01").encode_to_vec(),
    )
    .await;
    let items = eventually("the marker routed", Duration::from_secs(30), || async {
        let items = all_items(app.grpc_addr, &agent).await;
        items
            .iter()
            .any(|i| i.intake_event_id == marker)
            .then_some(items)
    })
    .await;
    let copies: Vec<_> = items.iter().filter(|i| i.intake_event_id == id).collect();
    assert_eq!(copies.len(), 1, "one work item for one intake event");
    let timeline = dossier_client(app.grpc_addr, &agent)
        .await
        .list_dossier_timeline(dpb::ListDossierTimelineRequest {
            dossier_id: copies[0].dossier_id.clone(),
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner();
    let contacts = timeline
        .entries
        .iter()
        .filter(|e| e.kind() == dpb::EntryKind::Contact)
        .count();
    assert_eq!(contacts, 1, "one contact entry");
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_does_not_block_the_next() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    publish_raw(
        &env,
        Some("poison-1"),
        "poison-1",
        b"\xff\xfe not a protobuf message".to_vec(),
    )
    .await;
    publish_raw(
        &env,
        None,
        "poison-2",
        intake_event("x", "NoHeader", "06 00 00 00 02").encode_to_vec(),
    )
    .await;
    let good = counter_client(app.grpc_addr, &agent)
        .await
        .issue_ticket(ticket_request("Jean", "Valjean", "", "une question"))
        .await
        .expect("ticket")
        .into_inner();
    eventually(
        "the good ticket routed past the poison",
        Duration::from_secs(30),
        || async {
            all_items(app.grpc_addr, &agent)
                .await
                .iter()
                .any(|i| i.intake_event_id == good.intake_event_id)
                .then_some(())
        },
    )
    .await;
    let dlq = dead_letters(&env, 2).await;
    assert!(
        dlq.iter()
            .any(|(reason, id)| id == "poison-1" && reason.contains("undecodable")),
        "{dlq:?}"
    );
    assert!(
        dlq.iter().any(|(reason, _)| reason.contains("ce-id")),
        "{dlq:?}"
    );
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn an_event_failing_transiently_is_retried_a_bounded_number_of_times_then_dead_lettered() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    // Routing alone, pointed at a dossier that never answers.
    let dead_dossier = format!("http://127.0.0.1:{}", free_port());
    let routing = env
        .spawn_with(
            &[Role::Routing],
            env.config_with(&[("GUICHET__ROUTING__DOSSIER_URL", &dead_dossier)]),
        )
        .await;
    let id = uuid::Uuid::now_v7().to_string();
    publish_raw(
        &env,
        Some(&id),
        &id,
        intake_event(&id, "Durand", "06 11 22 33 44").encode_to_vec(),
    )
    .await;
    let dlq = dead_letters(&env, 1).await;
    assert_eq!(dlq[0].1, id);
    assert!(
        dlq[0].0.contains("transient") && dlq[0].0.contains("correlate intake"),
        "{dlq:?}"
    );
    routing.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn killing_routing_mid_stream_loses_nothing_and_duplicates_nothing() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let front = env.spawn(&[Role::Dossier, Role::IngressCounter]).await;
    let dossier_url = format!("http://{}", front.grpc_addr);
    let extra = [("GUICHET__ROUTING__DOSSIER_URL", dossier_url.as_str())];
    let routing = env.spawn_process(&["routing"], &extra).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);

    // 40 visits; kill routing (SIGKILL) as soon as the first is routed.
    const N: usize = 40;
    let mut counter = counter_client(front.grpc_addr, &agent).await;
    let mut event_ids = HashSet::new();
    for i in 0..N {
        let t = counter
            .issue_ticket(ticket_request(
                "Citoyen",
                &format!("Numéro{i}"),
                &format!("06 12 00 00 {i:02}"),
                "visite",
            ))
            .await
            .expect("ticket")
            .into_inner();
        event_ids.insert(t.intake_event_id);
    }
    let routing_addr = routing.grpc_addr;
    eventually("the first item routed", Duration::from_secs(30), || async {
        (!all_items(routing_addr, &agent).await.is_empty()).then_some(())
    })
    .await;
    routing.kill().await;

    // Restart: the durable consumer redelivers what was not acknowledged.
    let routing = env.spawn_process(&["routing"], &extra).await;
    let items = eventually(
        "every visit routed after the restart",
        Duration::from_secs(60),
        || async {
            let items = all_items(routing.grpc_addr, &agent).await;
            (items.len() >= N).then_some(items)
        },
    )
    .await;
    assert_eq!(items.len(), N, "exactly one work item per visit");
    let routed: HashSet<_> = items.iter().map(|i| i.intake_event_id.clone()).collect();
    assert_eq!(routed, event_ids);
    let mut dossiers = dossier_client(front.grpc_addr, &agent).await;
    for item in &items {
        let timeline = dossiers
            .list_dossier_timeline(dpb::ListDossierTimelineRequest {
                dossier_id: item.dossier_id.clone(),
                ..Default::default()
            })
            .await
            .expect("timeline")
            .into_inner();
        let contacts: Vec<_> = timeline
            .entries
            .iter()
            .filter(|e| e.kind() == dpb::EntryKind::Contact)
            .collect();
        assert_eq!(
            contacts.len(),
            1,
            "one timeline entry for {}",
            item.intake_event_id
        );
        assert_eq!(contacts[0].source_event_id, item.intake_event_id);
        let opened = timeline
            .entries
            .iter()
            .filter(|e| e.kind() == dpb::EntryKind::DossierOpened)
            .count();
        assert_eq!(opened, 1);
    }
    let citizens: HashSet<_> = items.iter().map(|i| i.citizen_id.clone()).collect();
    assert_eq!(citizens.len(), N, "one citizen per distinct visitor");
    assert!(routing.terminate().await.success());
    front.stop().await.expect("stop");
    env.cleanup().await;
}
