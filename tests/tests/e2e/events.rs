//! Domain events: every change is announced on EVENTS, through the
//! transactional outbox, so a crash between commit and publish delays an
//! event but never loses it.

use guichet_platform::bus::{Bus, StreamKind};
use guichet_platform::outbox::{Outbox, create_index, create_table};
use guichet_testkit::proto::events::v1 as ev;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::*;
use sea_orm::{ConnectionTrait, TransactionTrait};

/// (ce-type, ce-subject) of every event on this test's EVENTS stream.
async fn events(env: &TestEnv, at_least: usize) -> Vec<(String, String)> {
    env.stream_headers("EVENTS", at_least)
        .await
        .iter()
        .map(|h| (header(h, "ce-type"), header(h, "ce-subject")))
        .collect()
}

#[tokio::test]
async fn a_walk_in_announces_every_change_on_the_events_stream() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let agent = env.token("agent-42", &[TokenRole::Agent]);
    crate::slice::set_available(app.grpc_addr, &agent).await;
    counter_client(app.grpc_addr, &agent)
        .await
        .issue_ticket(ticket_request(
            "Hélène",
            "Dupont",
            "06 12 34 56 78",
            "question",
        ))
        .await
        .expect("ticket");
    let item = crate::slice::take_next(app.grpc_addr, &agent).await;
    queue_client(app.grpc_addr, &agent)
        .await
        .complete_work_item(qpb::CompleteWorkItemRequest {
            id: item.id.clone(),
            outcome: "Réponse donnée".into(),
        })
        .await
        .expect("complete");

    let expected = [
        "guichet.dossier.v1.citizen_created",
        "guichet.dossier.v1.dossier_opened",
        "guichet.dossier.v1.timeline_entry_recorded",
        "guichet.routing.v1.work_item_enqueued",
        "guichet.routing.v1.work_item_assigned",
        "guichet.routing.v1.work_item_completed",
    ];
    // The roles' relays publish independently: wait until every change
    // (the visit's entry and the outcome's included) is on the stream.
    let recorded = |seen: &[(String, String)]| {
        seen.iter()
            .filter(|(t, _)| t == "guichet.dossier.v1.timeline_entry_recorded")
            .count()
    };
    let seen = eventually(
        "every change of the walk-in on EVENTS",
        std::time::Duration::from_secs(30),
        || async {
            let seen = events(&env, 7).await;
            (expected.iter().all(|ty| seen.iter().any(|(t, _)| t == ty)) && recorded(&seen) >= 2)
                .then_some(seen)
        },
    )
    .await;
    for ty in expected {
        assert!(
            seen.iter().any(|(t, _)| t == ty),
            "{ty} missing from {seen:?}"
        );
    }
    assert_eq!(recorded(&seen), 2, "the visit and the outcome");
    assert!(
        seen.iter()
            .any(|(_, s)| *s == format!("work-items/{}", item.id))
    );
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn an_event_committed_but_not_published_is_relayed_once() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let config = env.config();
    let bus = Bus::connect(&config.bus, "guichet/test")
        .await
        .expect("bus");
    bus.ensure_stream(StreamKind::Events).await.expect("stream");
    let url = format!("sqlite://{}/outbox.db?mode=rwc", env.dir.path().display());
    let db = guichet_platform::db::connect(&url, &config.database)
        .await
        .expect("db");
    db.execute(&create_table()).await.expect("table");
    db.execute(&create_index()).await.expect("index");
    let outbox = Outbox::new(db.clone(), bus);

    // A change commits with its event, and the process "dies" before publishing.
    let staged = outbox.domain_event(
        "dossier",
        "citizen_created",
        "citizens/c1".into(),
        &ev::CitizenCreated {
            citizen_id: "c1".into(),
            source_event_id: "e1".into(),
        },
    );
    let txn = db.begin().await.expect("begin");
    outbox.stage(&txn, &staged).await.expect("stage");
    txn.commit().await.expect("commit");
    assert_eq!(events_now(&env).await, 0, "nothing published yet");

    // Another process's relay publishes it.
    assert_eq!(outbox.flush().await.expect("flush"), 1);
    // Published again (crash between publish and delete): JetStream drops it.
    outbox.publish_now(&staged).await.expect("republish");
    assert_eq!(
        outbox.flush().await.expect("flush"),
        0,
        "the outbox is empty"
    );
    let seen = events(&env, 1).await;
    assert_eq!(
        seen,
        vec![(
            "guichet.dossier.v1.citizen_created".to_owned(),
            "citizens/c1".to_owned()
        )]
    );
    env.cleanup().await;
}

/// Messages on this test's EVENTS stream right now (0 if it does not exist).
async fn events_now(env: &TestEnv) -> u64 {
    let js = async_nats::jetstream::new(env.nats().await);
    match js.get_stream(env.stream("EVENTS")).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}
