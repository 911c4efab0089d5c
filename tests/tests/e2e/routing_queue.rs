//! The unified queue: serving order (priority, SLA due, age) with ageing
//! and SLA escalation on a controlled clock, 50 agents racing, transfers to
//! a department and back, statistics of a scripted scenario.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use guichet::Role;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::routing::queue::NewItem;
use guichet_testkit::*;

/// A test's environment, its dossier role, and routing on a manual clock
/// starting at [`t0`].
pub struct Setup {
    pub env: TestEnv,
    pub dossier: guichet::RunningApp,
    pub r: RoutingUnderTest,
}

/// Where [`setup`] writes the rules file.
pub fn rules_path(env: &TestEnv) -> std::path::PathBuf {
    env.dir.path().join("routing-rules.toml")
}

/// Start dossier and routing for a test; `rules` become routing's rules
/// file; `extra` are `GUICHET__…` overrides. `None` when the backend is
/// not available (see [`TestEnv::new`]).
pub async fn setup(backend: Backend, rules: Option<&str>, extra: &[(&str, &str)]) -> Option<Setup> {
    let env = TestEnv::new(backend).await?;
    let path = rules_path(&env).display().to_string();
    let mut overrides = extra.to_vec();
    if let Some(text) = rules {
        std::fs::write(&path, text).expect("write rules");
        overrides.push(("GUICHET__ROUTING__RULES_FILE", &path));
    }
    let dossier = env.spawn(&[Role::Dossier]).await;
    let r = env
        .spawn_routing_with_clock(ManualClock::new(t0()), dossier.grpc_addr, &overrides)
        .await;
    Some(Setup { env, dossier, r })
}

impl Setup {
    pub async fn finish(self) {
        self.r.stop().await;
        self.dossier.stop().await.expect("dossier stops");
        self.env.cleanup().await;
    }
}

/// The ce-types on the test's EVENTS stream, once `done` holds for them
/// (the outbox relays events shortly after each commit).
pub async fn event_types_until(env: &TestEnv, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let done = &done;
    eventually(
        "the expected events on EVENTS",
        Duration::from_secs(30),
        || async move {
            let headers = env.stream_headers("EVENTS", 1).await;
            let types: Vec<String> = headers.iter().map(|h| header(h, "ce-type")).collect();
            done(&types).then_some(types)
        },
    )
    .await
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0).unwrap()
}

pub fn item(
    channel: &str,
    priority: i32,
    enter: DateTime<Utc>,
    due: Option<DateTime<Utc>>,
    warn: Option<DateTime<Utc>>,
) -> NewItem {
    NewItem {
        intake_event_id: uuid::Uuid::now_v7().to_string(),
        channel: channel.into(),
        priority,
        dossier_id: String::new(),
        dossier_reference: String::new(),
        citizen_id: String::new(),
        process_id: "a-qualifier".into(),
        summary: "Demande".into(),
        enter_time: enter,
        queue_id: "accueil".into(),
        skills: vec![],
        sla_due: due,
        sla_warn: warn,
        rule_id: String::new(),
        correlation: "none".into(),
        candidates: vec![],
        handled: None,
        kept_input: None,
        warnings: Vec::new(),
    }
}

pub async fn available(addr: std::net::SocketAddr, token: &str, offers: bool) {
    queue_client(addr, token)
        .await
        .set_presence(qpb::SetPresenceRequest {
            presence: qpb::Presence::Available as i32,
            accept_offers: offers,
        })
        .await
        .expect("set presence");
}

async fn pending_ids(addr: std::net::SocketAddr, token: &str, page_size: i32) -> Vec<String> {
    let mut q = queue_client(addr, token).await;
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = q
            .list_work_items(qpb::ListWorkItemsRequest {
                status: qpb::WorkItemStatus::Pending as i32,
                queue_id: "accueil".into(),
                page_size,
                page_token,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        out.extend(page.items.into_iter().map(|i| i.id));
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

async fn ordering(backend: Backend) {
    let Some(s) = setup(backend, None, &[]).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let m = chrono::Duration::minutes;
    // Arrange: an old low-priority item, and three priority-5 items: one
    // without SLA, two with SLAs due in 2 h and 1 h.
    let (a, _) = r
        .queue
        .enqueue(item("email", 0, t0() - m(240), None, None))
        .await
        .unwrap();
    let (b, _) = r
        .queue
        .enqueue(item("email", 5, t0(), None, None))
        .await
        .unwrap();
    let (c, _) = r
        .queue
        .enqueue(item(
            "email",
            5,
            t0(),
            Some(t0() + m(120)),
            Some(t0() + m(96)),
        ))
        .await
        .unwrap();
    let (d, _) = r
        .queue
        .enqueue(item(
            "email",
            5,
            t0() + chrono::Duration::seconds(1),
            Some(t0() + m(60)),
            Some(t0() + m(48)),
        ))
        .await
        .unwrap();

    // Priority, then SLA due, then age; keyset pages of 3 see the same order.
    assert_eq!(
        pending_ids(r.grpc_addr, &agent, 3).await,
        vec![d.id.clone(), c.id.clone(), b.id.clone(), a.id.clone()]
    );

    // Ageing (accueil: +1 per 30 min, at most 10): the 4-hour-old item
    // climbs above fresh priority-5 work: no starvation.
    r.maintain().await;
    assert_eq!(
        pending_ids(r.grpc_addr, &agent, 2).await,
        vec![a.id.clone(), d.id.clone(), c.id.clone(), b.id.clone()]
    );

    // 61 minutes later d has breached its SLA: +10, ahead of everything.
    r.clock.advance(m(61));
    let done = r.maintain().await;
    assert_eq!(done.escalated, 1);
    let mut q = queue_client(r.grpc_addr, &agent).await;
    let dd = q
        .get_work_item(qpb::GetWorkItemRequest {
            id: d.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dd.sla_state(), qpb::SlaState::Breached);
    assert_eq!(
        dd.priority,
        5 + 10 + 2,
        "base + breach bump + 2 ageing steps"
    );
    let aa = q
        .get_work_item(qpb::GetWorkItemRequest {
            id: a.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aa.priority, 10, "ageing is capped");

    // The agent takes them in that order.
    available(r.grpc_addr, &agent, false).await;
    let mut taken = Vec::new();
    for _ in 0..4 {
        let it = q
            .take_next(qpb::TakeNextRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(it.status(), qpb::WorkItemStatus::Assigned);
        taken.push(it.id);
    }
    assert_eq!(taken, vec![d.id, a.id, c.id, b.id]);
    let empty = q
        .take_next(qpb::TakeNextRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::NotFound);

    // The escalation was announced for supervisors.
    event_types_until(env, |types| {
        types.iter().any(|t| t == "guichet.routing.v1.sla_breached")
    })
    .await;
    s.finish().await;
}

#[tokio::test]
async fn routing_serves_by_priority_then_sla_then_age_with_ageing_and_escalation_on_sqlite() {
    ordering(Backend::Sqlite).await;
}

#[tokio::test]
async fn routing_serves_by_priority_then_sla_then_age_with_ageing_and_escalation_on_postgres() {
    ordering(Backend::Postgres).await;
}

async fn race(backend: Backend) {
    let Some(s) = setup(backend, None, &[]).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let mut ids = HashSet::new();
    for i in 0..120 {
        let (it, _) = r
            .queue
            .enqueue(item(
                "email",
                i % 3,
                t0() - chrono::Duration::seconds(i as i64),
                None,
                None,
            ))
            .await
            .unwrap();
        ids.insert(it.id);
    }
    let mut tasks = Vec::new();
    for n in 0..50 {
        let token = env.token(&format!("agent-{n:02}"), &[TokenRole::Agent]);
        let addr = r.grpc_addr;
        tasks.push(tokio::spawn(async move {
            available(addr, &token, false).await;
            let mut q = queue_client(addr, &token).await;
            let mut mine = Vec::new();
            loop {
                match q.take_next(qpb::TakeNextRequest::default()).await {
                    Ok(it) => mine.push(it.into_inner()),
                    // Capacity (5 emails) reached, or the queue is empty.
                    Err(s)
                        if s.code() == tonic::Code::NotFound
                            || s.code() == tonic::Code::FailedPrecondition =>
                    {
                        return mine;
                    }
                    Err(s) => panic!("take next: {s:?}"),
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut per_agent = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        per_agent.push(mine.len());
        for it in mine {
            assert!(
                seen.insert(it.id.clone()),
                "item {} handed out twice",
                it.id
            );
        }
    }
    assert_eq!(seen.len(), 120, "every item handed out once");
    assert_eq!(seen, ids);
    assert!(
        per_agent.iter().all(|n| *n <= 5),
        "capacity respected: {per_agent:?}"
    );

    // One agent calling 10 times at once: capacity (2 emails) holds.
    for _ in 0..5 {
        r.queue
            .enqueue(item("email", 0, t0(), None, None))
            .await
            .unwrap();
    }
    let boss = env.token("chef", &[TokenRole::Supervisor]);
    queue_client(r.grpc_addr, &boss)
        .await
        .update_agent(qpb::UpdateAgentRequest {
            id: "agent-solo".into(),
            capacities: vec![qpb::ChannelCapacity {
                channel: guichet_testkit::proto::intake::v1::Channel::Email as i32,
                capacity: 2,
                load: 0,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let solo = env.token("agent-solo", &[TokenRole::Agent]);
    available(r.grpc_addr, &solo, false).await;
    let q = queue_client(r.grpc_addr, &solo).await;
    let calls = (0..10).map(|_| {
        let mut q = q.clone();
        async move { q.take_next(qpb::TakeNextRequest::default()).await.is_ok() }
    });
    let got = futures::future::join_all(calls).await;
    assert_eq!(got.iter().filter(|ok| **ok).count(), 2, "{got:?}");
    s.finish().await;
}

#[tokio::test]
async fn routing_50_agents_racing_never_get_the_same_item_on_sqlite() {
    race(Backend::Sqlite).await;
}

#[tokio::test]
async fn routing_50_agents_racing_never_get_the_same_item_on_postgres() {
    race(Backend::Postgres).await;
}

#[tokio::test]
async fn routing_transfers_an_item_to_a_department_and_back() {
    let Some(s) = setup(Backend::Sqlite, None, &[]).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let front = env.token("agent-accueil", &[TokenRole::Agent]);
    let clerk = env.token("agent-ec", &[TokenRole::Agent]);
    let boss = env.token("chef", &[TokenRole::Supervisor]);
    let (it, _) = r
        .queue
        .enqueue(item("scan", 0, t0(), None, None))
        .await
        .unwrap();
    queue_client(r.grpc_addr, &boss)
        .await
        .update_agent(qpb::UpdateAgentRequest {
            id: "agent-ec".into(),
            queues: vec!["etat-civil".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    // A partial update (field mask) keeps the queues and sets a capacity.
    let ec = queue_client(r.grpc_addr, &boss)
        .await
        .update_agent(qpb::UpdateAgentRequest {
            id: "agent-ec".into(),
            skills: vec!["etat-civil".into()],
            update_mask: Some(guichet_testkit::prost_types::FieldMask {
                paths: vec!["skills".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ec.queues, vec!["etat-civil".to_string()]);
    assert_eq!(ec.skills, vec!["etat-civil".to_string()]);
    let bad_mask = queue_client(r.grpc_addr, &boss)
        .await
        .update_agent(qpb::UpdateAgentRequest {
            id: "agent-ec".into(),
            update_mask: Some(guichet_testkit::prost_types::FieldMask {
                paths: vec!["presence".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_mask.code(), tonic::Code::InvalidArgument);
    available(r.grpc_addr, &front, false).await;
    available(r.grpc_addr, &clerk, false).await;
    let mut fq = queue_client(r.grpc_addr, &front).await;
    let mut cq = queue_client(r.grpc_addr, &clerk).await;
    assert_eq!(
        cq.take_next(qpb::TakeNextRequest::default())
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound,
        "the état civil clerk does not see the front desk's queue"
    );
    fq.take_next(qpb::TakeNextRequest::default()).await.unwrap();

    // Act: the front desk sends it to état civil.
    let moved = fq
        .transfer_work_item(qpb::TransferWorkItemRequest {
            id: it.id.clone(),
            queue_id: "etat-civil".into(),
            reason: "acte à établir".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.status(), qpb::WorkItemStatus::Pending);
    assert_eq!(moved.queue_id, "etat-civil");
    assert_eq!(moved.previous_queue_id, "accueil");
    assert!(moved.agent_id.is_empty());
    let bad = fq
        .transfer_work_item(qpb::TransferWorkItemRequest {
            id: it.id.clone(),
            queue_id: "nulle-part".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("queue_id"), "{}", bad.message());
    assert_eq!(
        fq.transfer_work_item(qpb::TransferWorkItemRequest {
            id: it.id.clone(),
            queue_id: String::new(),
            reason: String::new(),
        })
        .await
        .unwrap_err()
        .code(),
        tonic::Code::FailedPrecondition,
        "an agent transfers only what it holds"
    );
    let got = cq
        .take_next(qpb::TakeNextRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, it.id);

    // And back to the front desk.
    let back = cq
        .transfer_work_item(qpb::TransferWorkItemRequest {
            id: it.id.clone(),
            queue_id: String::new(),
            reason: "pièce manquante, rappeler l'usager".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.queue_id, "accueil");
    assert_eq!(back.previous_queue_id, "etat-civil");
    let again = fq
        .take_next(qpb::TakeNextRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, it.id);
    event_types_until(env, |types| {
        types
            .iter()
            .filter(|t| *t == "guichet.routing.v1.work_item_transferred")
            .count()
            == 2
    })
    .await;
    s.finish().await;
}

#[tokio::test]
async fn routing_statistics_match_a_scripted_scenario_and_watch_streams_changes() {
    let Some(s) = setup(Backend::Sqlite, None, &[]).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let boss = env.token("chef", &[TokenRole::Supervisor]);
    let secs = chrono::Duration::seconds;
    // Five emails enter at t0, SLAs due at +100, +100, +200, +400 s and none.
    let mut ids = Vec::new();
    for (p, due) in [
        (9, Some(100)),
        (8, Some(100)),
        (1, Some(200)),
        (7, Some(400)),
        (6, None),
    ] {
        let (it, _) = r
            .queue
            .enqueue(item("email", p, t0(), due.map(|d| t0() + secs(d)), None))
            .await
            .unwrap();
        ids.push(it.id);
    }
    available(r.grpc_addr, &agent, false).await;
    let mut q = queue_client(r.grpc_addr, &agent).await;
    let mut sup = queue_client(r.grpc_addr, &boss).await;
    let mut watch = sup
        .watch_queue(qpb::WatchQueueRequest {
            queue_id: "accueil".into(),
            window: None,
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.entered, 5);
    // Taken after 60, 120 and 300 s (priorities 9, 8, 7 first).
    for at in [60, 120, 300] {
        r.clock.set(t0() + secs(at));
        q.take_next(qpb::TakeNextRequest::default()).await.unwrap();
    }
    q.complete_work_item(qpb::CompleteWorkItemRequest {
        id: ids[0].clone(),
        outcome: "Réponse envoyée".into(),
    })
    .await
    .unwrap();
    sup.cancel_work_item(qpb::CancelWorkItemRequest {
        id: ids[4].clone(),
        reason: "doublon".into(),
    })
    .await
    .unwrap();
    r.clock.set(t0() + secs(600));
    let st = sup
        .get_queue_statistics(qpb::GetQueueStatisticsRequest {
            queue_id: "accueil".into(),
            window: Some(guichet_testkit::prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (st.entered, st.completed, st.cancelled, st.accepted),
        (5, 1, 1, 3)
    );
    assert_eq!(
        st.average_wait.unwrap().seconds,
        160,
        "(60 + 120 + 300) / 3"
    );
    assert_eq!(st.p90_wait.unwrap().seconds, 300);
    // Due in the window: +100 taken at 60 (met), +100 taken at 120
    // (breached), +200 never taken (breached), +400 taken at 300 (met).
    assert_eq!((st.sla_due, st.sla_breached), (4, 2));
    assert!((st.sla_breach_rate - 0.5).abs() < 1e-9);
    let count = |s: qpb::WorkItemStatus| {
        st.by_status
            .iter()
            .find(|c| c.status == s as i32)
            .map(|c| c.count)
            .unwrap_or(-1)
    };
    assert_eq!(count(qpb::WorkItemStatus::Pending), 1);
    assert_eq!(count(qpb::WorkItemStatus::Assigned), 2);
    assert_eq!(st.longest_wait.unwrap().seconds, 600);
    assert_eq!(st.pending_by_priority.len(), 1);
    assert_eq!(st.pending_by_priority[0].priority, 1);
    assert_eq!((st.available_agents, st.eligible_agents), (1, 1));

    // The watcher saw the changes; a new item shows up in the stream.
    r.queue
        .enqueue(item("email", 0, t0() + secs(600), None, None))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = watch.message().await.unwrap().unwrap();
            if m.entered == 6 {
                return m;
            }
        }
    })
    .await
    .expect("watch shows the new item");
    assert_eq!(seen.completed, 1);
    let denied = q
        .get_queue_statistics(qpb::GetQueueStatisticsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    drop(watch);
    s.finish().await;
}
