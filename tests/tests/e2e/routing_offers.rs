//! Push distribution: offers reserved for one agent, accepted, rejected or
//! timed out (then offered to the next agent; repeated timeouts set the
//! agent away); the lifecycle events; offers in flight surviving a restart
//! and several replicas maintaining one database.

use guichet::Role;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::*;

use crate::routing_queue::{available, event_types_until, item, setup, t0};

async fn get(addr: std::net::SocketAddr, token: &str, id: &str) -> qpb::WorkItem {
    queue_client(addr, token)
        .await
        .get_work_item(qpb::GetWorkItemRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn routing_offers_move_on_after_reject_and_timeout_and_repeated_timeouts_set_the_agent_away()
{
    let Some(s) = setup(
        Backend::Sqlite,
        None,
        &[("GUICHET__ROUTING__MAX_MISSED_OFFERS", "2")],
    )
    .await
    else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|a| env.token(a, &[TokenRole::Agent]));
    let boss = env.token("chef", &[TokenRole::Supervisor]);
    for t in [&alice, &bob, &carol] {
        available(r.grpc_addr, t, true).await;
    }
    let mut alice_offers = queue_client(r.grpc_addr, &alice)
        .await
        .watch_offers(qpb::WatchOffersRequest {})
        .await
        .unwrap()
        .into_inner();
    let (x, _) = r
        .queue
        .enqueue(item("counter", 0, t0(), None, None))
        .await
        .unwrap();

    // Offered to one agent (ties: alphabetical), reserved for 30 s; pushed
    // to her stream.
    assert_eq!(r.maintain().await.offered, 1);
    let pushed = tokio::time::timeout(std::time::Duration::from_secs(10), alice_offers.message())
        .await
        .expect("offer pushed")
        .unwrap()
        .unwrap();
    assert_eq!(pushed.id, x.id);
    assert_eq!(pushed.status(), qpb::WorkItemStatus::Offered);
    let o = get(r.grpc_addr, &boss, &x.id).await;
    assert_eq!(o.status(), qpb::WorkItemStatus::Offered);
    assert_eq!(o.agent_id, "alice");
    assert_eq!(
        o.offer_expire_time.unwrap().seconds,
        (t0() + chrono::Duration::seconds(30)).timestamp()
    );
    assert_eq!(r.maintain().await.offered, 0, "exactly one holder");

    // Alice declines: the next agent gets it.
    let back = queue_client(r.grpc_addr, &alice)
        .await
        .reject_offer(qpb::RejectOfferRequest {
            id: x.id.clone(),
            reason: "en pause".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.status(), qpb::WorkItemStatus::Pending);
    r.maintain().await;
    assert_eq!(get(r.grpc_addr, &boss, &x.id).await.agent_id, "bob");

    // Bob lets it time out: carol gets it, in the same pass.
    r.clock.advance(chrono::Duration::seconds(31));
    let m = r.maintain().await;
    assert_eq!((m.offers_expired, m.offered), (1, 1));
    assert_eq!(get(r.grpc_addr, &boss, &x.id).await.agent_id, "carol");
    let late = queue_client(r.grpc_addr, &bob)
        .await
        .accept_offer(qpb::AcceptOfferRequest { id: x.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    let mut cq = queue_client(r.grpc_addr, &carol).await;
    let acc = cq
        .accept_offer(qpb::AcceptOfferRequest { id: x.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acc.status(), qpb::WorkItemStatus::Assigned);
    assert_eq!(acc.agent_id, "carol");

    // Lifecycle: wrapping, then completed, each step timestamped.
    let w = cq
        .wrap_up_work_item(qpb::WrapUpWorkItemRequest { id: x.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.status(), qpb::WorkItemStatus::Wrapping);
    assert!(w.wrap_time.is_some());
    let done = cq
        .complete_work_item(qpb::CompleteWorkItemRequest {
            id: x.id.clone(),
            outcome: "Renseignement donné".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status(), qpb::WorkItemStatus::Completed);
    assert!(
        done.offer_time.is_some() && done.assign_time.is_some() && done.complete_time.is_some()
    );

    // A second timeout in a row sets bob away; the item is not re-offered
    // to him. Alice is offline, so bob is the only candidate.
    queue_client(r.grpc_addr, &alice)
        .await
        .set_presence(qpb::SetPresenceRequest {
            presence: qpb::Presence::Offline as i32,
            accept_offers: false,
        })
        .await
        .unwrap();
    queue_client(r.grpc_addr, &carol)
        .await
        .set_presence(qpb::SetPresenceRequest {
            presence: qpb::Presence::Busy as i32,
            accept_offers: false,
        })
        .await
        .unwrap();
    let (y, _) = r
        .queue
        .enqueue(item("counter", 0, r.queue.now(), None, None))
        .await
        .unwrap();
    r.maintain().await;
    assert_eq!(get(r.grpc_addr, &boss, &y.id).await.agent_id, "bob");
    r.clock.advance(chrono::Duration::seconds(31));
    let m = r.maintain().await;
    assert_eq!((m.offers_expired, m.offered), (1, 0));
    let y2 = get(r.grpc_addr, &boss, &y.id).await;
    assert_eq!(y2.status(), qpb::WorkItemStatus::Pending);
    let b = queue_client(r.grpc_addr, &boss)
        .await
        .get_agent(qpb::GetAgentRequest { id: "bob".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.presence(), qpb::Presence::Away);
    assert_eq!(b.missed_offers, 2);
    let away = queue_client(r.grpc_addr, &boss)
        .await
        .list_agents(qpb::ListAgentsRequest {
            presence: qpb::Presence::Away as i32,
            queue_id: "accueil".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = away.agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, vec!["bob"]);
    let all = queue_client(r.grpc_addr, &boss)
        .await
        .list_agents(qpb::ListAgentsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.agents.len(), 2);
    let rest = queue_client(r.grpc_addr, &boss)
        .await
        .list_agents(qpb::ListAgentsRequest {
            page_size: 2,
            page_token: all.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.agents.len(), 1, "alice, bob | carol");
    assert_eq!(rest.agents[0].id, "carol");

    // Every step was an event.
    let wanted = [
        "work_item_enqueued",
        "work_item_offered",
        "work_item_offer_rejected",
        "work_item_offer_expired",
        "work_item_assigned",
        "work_item_wrapping",
        "work_item_completed",
        "agent_presence_changed",
    ]
    .map(|t| format!("guichet.routing.v1.{t}"));
    event_types_until(env, |types| wanted.iter().all(|w| types.contains(w))).await;
    s.finish().await;
}

async fn restart(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let dossier = env.spawn(&[Role::Dossier]).await;
    let clock = ManualClock::new(t0());
    let first = env
        .spawn_routing_with_clock(clock.clone(), dossier.grpc_addr, &[])
        .await;
    let ann = env.token("ann", &[TokenRole::Agent]);
    let ben = env.token("ben", &[TokenRole::Agent]);
    available(first.grpc_addr, &ann, true).await;
    let mut items = Vec::new();
    for _ in 0..3 {
        items.push(
            first
                .queue
                .enqueue(item("email", 0, t0(), None, None))
                .await
                .unwrap()
                .0
                .id,
        );
    }
    assert_eq!(
        first.maintain().await.offered,
        3,
        "ann takes up to 5 emails"
    );
    // The replica dies with three offers in flight.
    first.stop().await;

    // Two replicas come up on the same database; ben is available too.
    clock.advance(chrono::Duration::seconds(45));
    let a = env
        .spawn_routing_with_clock(clock.clone(), dossier.grpc_addr, &[])
        .await;
    let b = env
        .spawn_routing_with_clock(clock.clone(), dossier.grpc_addr, &[])
        .await;
    available(a.grpc_addr, &ben, true).await;
    let (ma, mb) = tokio::join!(a.queue.maintain(), b.queue.maintain());
    let (ma, mb) = (ma.unwrap(), mb.unwrap());
    assert_eq!(
        ma.offers_expired + mb.offers_expired,
        3,
        "the lost timers are recovered once"
    );
    let boss = env.token("chef", &[TokenRole::Supervisor]);
    for id in &items {
        let it = get(b.grpc_addr, &boss, id).await;
        assert_eq!(
            it.status(),
            qpb::WorkItemStatus::Offered,
            "offered again, never stuck"
        );
        assert_eq!(it.agent_id, "ben", "to the next agent");
    }
    let accepted = queue_client(b.grpc_addr, &ben)
        .await
        .accept_offer(qpb::AcceptOfferRequest {
            id: items[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.status(), qpb::WorkItemStatus::Assigned);
    a.stop().await;
    b.stop().await;
    dossier.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn routing_offers_in_flight_survive_a_restart_and_replicas_share_the_timers_on_sqlite() {
    restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn routing_offers_in_flight_survive_a_restart_and_replicas_share_the_timers_on_postgres() {
    restart(Backend::Postgres).await;
}
