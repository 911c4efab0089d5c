//! The counter's waiting room: numbering per service and Paris day,
//! priorities with fairness, desk calls (recall, no-show, start, finish,
//! transfer), ten desks calling at once, and the display board feed.

use std::time::Duration;

use chrono::TimeZone;
use guichet::Role;
use guichet_testkit::proto::counter::v1 as cpb;
use guichet_testkit::*;

fn ticket(given: &str, service: &str, priority: &str) -> cpb::IssueTicketRequest {
    let mut r = ticket_request(given, "Durand", "", "question");
    r.service = service.into();
    r.priority = priority.into();
    r
}

async fn issue(
    addr: std::net::SocketAddr,
    token: &str,
    req: cpb::IssueTicketRequest,
) -> cpb::Ticket {
    counter_client(addr, token)
        .await
        .issue_ticket(req)
        .await
        .expect("issue ticket")
        .into_inner()
}

async fn call_next(
    addr: std::net::SocketAddr,
    token: &str,
    desk: &str,
    services: &[&str],
) -> Result<cpb::Ticket, tonic::Status> {
    counter_client(addr, token)
        .await
        .call_next(cpb::CallNextRequest {
            desk: desk.into(),
            services: services.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

fn action(id: &str) -> cpb::TicketActionRequest {
    cpb::TicketActionRequest {
        ticket_id: id.into(),
    }
}

#[tokio::test]
async fn counter_numbers_restart_at_paris_midnight_not_utc_midnight() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    // 23:30 in Paris (UTC+1 in November) on the 27th.
    let clock = ManualClock::new(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 27, 22, 30, 0)
            .unwrap(),
    );
    let counter = env.spawn_counter_with_clock(clock.clone(), &[]).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let a = issue(counter.grpc_addr, &agent, ticket("A", "general", "")).await;
    let p = issue(counter.grpc_addr, &agent, ticket("B", "passeports", "")).await;
    let b = issue(counter.grpc_addr, &agent, ticket("C", "general", "")).await;
    assert_eq!(
        (a.number.as_str(), p.number.as_str(), b.number.as_str()),
        ("G001", "P001", "G002")
    );
    // 00:05 in Paris on the 28th, still the 27th in UTC: a new day.
    clock.set(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 27, 23, 5, 0)
            .unwrap(),
    );
    let c = issue(counter.grpc_addr, &agent, ticket("D", "general", "")).await;
    assert_eq!(c.number, "G001");
    let e = issue(counter.grpc_addr, &agent, ticket("E", "etat-civil", "")).await;
    assert_eq!(e.number, "E001");
    // The waiting room resets too: yesterday's waiting tickets are not called.
    let first = call_next(counter.grpc_addr, &agent, "1", &["general"])
        .await
        .unwrap();
    assert_eq!(first.id, c.id);
    let none = call_next(counter.grpc_addr, &agent, "1", &["general"])
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::NotFound);
    // A priority category that does not exist is refused, naming the field.
    let err = counter_client(counter.grpc_addr, &agent)
        .await
        .issue_ticket(ticket("F", "general", "vip"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("priority"), "{}", err.message());
    // A desk name is shown on the public board: never markup.
    let err = call_next(
        counter.grpc_addr,
        &agent,
        "<img src=x onerror=alert(1)>",
        &["general"],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("desk"), "{}", err.message());
    call_next(counter.grpc_addr, &agent, "Passeports 1", &["general"])
        .await
        .unwrap_err()
        .code()
        .eq(&tonic::Code::NotFound)
        .then_some(())
        .expect("a plain name is accepted (nobody waits)");
    counter.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn counter_priority_tickets_go_first_without_starving_normal_ones() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let clock = ManualClock::new(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 27, 8, 30, 0)
            .unwrap(),
    );
    let counter = env.spawn_counter_with_clock(clock.clone(), &[]).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let addr = counter.grpc_addr;
    // senior = 15 min, handicap = 30 min (defaults).
    let a = issue(addr, &agent, ticket("A", "general", "")).await; // rank 08:30
    clock.advance(chrono::Duration::minutes(10));
    let b = issue(addr, &agent, ticket("B", "general", "senior")).await; // rank 08:25
    clock.advance(chrono::Duration::minutes(10));
    let c = issue(addr, &agent, ticket("C", "general", "")).await; // rank 08:50
    clock.advance(chrono::Duration::minutes(20));
    let d = issue(addr, &agent, ticket("D", "general", "senior")).await; // rank 08:55
    clock.advance(chrono::Duration::minutes(1));
    let e = issue(addr, &agent, ticket("E", "general", "handicap")).await; // rank 08:41
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(call_next(addr, &agent, "1", &[]).await.expect("call").id);
    }
    // B (priority) before A; E's weight puts it before C; C, who has waited
    // longer than D's advantage, before D.
    assert_eq!(order, vec![b.id, a.id, e.id, c.id, d.id]);
    let none = call_next(addr, &agent, "1", &[]).await.unwrap_err();
    assert_eq!(none.code(), tonic::Code::NotFound);
    counter.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn counter_visit_steps_are_timed_and_no_show_needs_a_recall() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let clock = ManualClock::new(chrono::Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap());
    let counter = env.spawn_counter_with_clock(clock.clone(), &[]).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let addr = counter.grpc_addr;
    let mut c = counter_client(addr, &agent).await;

    // Served: 12 min waiting, 7 min at the desk.
    let t1 = issue(addr, &agent, ticket("A", "general", "")).await;
    let t2 = issue(addr, &agent, ticket("B", "general", "")).await;
    let t3 = issue(addr, &agent, ticket("C", "general", "")).await;
    clock.advance(chrono::Duration::minutes(12));
    let called = call_next(addr, &agent, "3", &["general"]).await.unwrap();
    assert_eq!(
        (called.id.as_str(), called.desk.as_str()),
        (t1.id.as_str(), "3")
    );
    assert_eq!(called.status(), cpb::TicketStatus::Called);
    let started = c.start_service(action(&t1.id)).await.unwrap().into_inner();
    assert_eq!(started.waiting_seconds, 12 * 60);
    clock.advance(chrono::Duration::minutes(7));
    let done = c.finish_service(action(&t1.id)).await.unwrap().into_inner();
    assert_eq!(done.status(), cpb::TicketStatus::Done);
    assert_eq!(done.service_seconds, 7 * 60);
    let again = c.finish_service(action(&t1.id)).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    // No-show: refused before a recall, accepted after one.
    let called = call_next(addr, &agent, "3", &[]).await.unwrap();
    assert_eq!(called.id, t2.id);
    let early = c.mark_no_show(action(&t2.id)).await.unwrap_err();
    assert_eq!(early.code(), tonic::Code::FailedPrecondition);
    let recalled = c.recall_ticket(action(&t2.id)).await.unwrap().into_inner();
    assert_eq!(recalled.recalls, 1);
    let gone = c.mark_no_show(action(&t2.id)).await.unwrap().into_inner();
    assert_eq!(gone.status(), cpb::TicketStatus::NoShow);
    assert!(gone.no_show_time.is_some());

    // Transfer: back to waiting in the other service, same number.
    let called = call_next(addr, &agent, "3", &["general"]).await.unwrap();
    assert_eq!(called.id, t3.id);
    let moved = c
        .transfer_ticket(cpb::TransferTicketRequest {
            ticket_id: t3.id.clone(),
            service: "passeports".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.status(), cpb::TicketStatus::Waiting);
    assert_eq!(
        (moved.service.as_str(), moved.transferred_from.as_str()),
        ("passeports", "general")
    );
    assert_eq!(moved.number, t3.number);
    assert_eq!(
        call_next(addr, &agent, "1", &["general"])
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    let at_passports = call_next(addr, &agent, "P1", &["passeports"])
        .await
        .unwrap();
    assert_eq!(at_passports.id, t3.id);
    counter.stop().await;
    env.cleanup().await;
}

async fn ten_desks_never_call_the_same_ticket(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env.spawn(&[Role::IngressCounter]).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    for i in 0..10 {
        issue(
            app.grpc_addr,
            &agent,
            ticket(&format!("C{i}"), "general", ""),
        )
        .await;
    }
    let mut calls = Vec::new();
    for desk in 0..12 {
        let agent = agent.clone();
        let addr = app.grpc_addr;
        calls.push(tokio::spawn(async move {
            call_next(addr, &agent, &desk.to_string(), &[]).await
        }));
    }
    let mut ids = Vec::new();
    let mut empty = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(t) => ids.push(t.id),
            Err(s) if s.code() == tonic::Code::NotFound => empty += 1,
            Err(s) => panic!("call next failed: {s:?}"),
        }
    }
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(
        (n, ids.len(), empty),
        (10, 10, 2),
        "every ticket called once"
    );
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn counter_ten_desks_calling_at_once_never_get_the_same_ticket_sqlite() {
    ten_desks_never_call_the_same_ticket(Backend::Sqlite).await;
}

#[tokio::test]
async fn counter_ten_desks_calling_at_once_never_get_the_same_ticket_postgres() {
    ten_desks_never_call_the_same_ticket(Backend::Postgres).await;
}

#[tokio::test]
async fn counter_display_board_receives_calls_in_order_over_sse_and_grpc() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&[Role::IngressCounter]).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let screen = env.token("screen-hall", &[TokenRole::Kiosk]);
    let mut sse = SseReader::connect(
        http_addr_of(&app, Role::IngressCounter),
        "/board/mairie/events",
    )
    .await;
    let mut other_site = SseReader::connect(
        http_addr_of(&app, Role::IngressCounter),
        "/board/annexe/events",
    )
    .await;
    let mut grpc = counter_client(app.grpc_addr, &screen)
        .await
        .watch_board(cpb::WatchBoardRequest {
            site: "mairie".into(),
        })
        .await
        .expect("watch board")
        .into_inner();
    let p = issue(app.grpc_addr, &agent, ticket("A", "passeports", "")).await;
    let g = issue(app.grpc_addr, &agent, ticket("B", "general", "")).await;
    let mut annexe = ticket("C", "general", "");
    annexe.site = "annexe".into();
    issue(app.grpc_addr, &agent, annexe).await;
    call_next(app.grpc_addr, &agent, "3", &["passeports"])
        .await
        .unwrap();
    call_next(app.grpc_addr, &agent, "1", &["general"])
        .await
        .unwrap();
    counter_client(app.grpc_addr, &agent)
        .await
        .recall_ticket(action(&p.id))
        .await
        .unwrap();
    counter_client(app.grpc_addr, &agent)
        .await
        .call_next(cpb::CallNextRequest {
            desk: "A1".into(),
            site: "annexe".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let expected = [
        format!("Ticket {} → guichet 3", p.number),
        format!("Ticket {} → guichet 1", g.number),
        format!("Rappel : ticket {} → guichet 3", p.number),
    ];
    for text in &expected {
        let data = sse.next_data(Duration::from_secs(10)).await;
        assert_eq!(data["text"].as_str().unwrap(), text, "{data}");
        let call = tokio::time::timeout(Duration::from_secs(10), grpc.message())
            .await
            .expect("board call in time")
            .expect("stream")
            .expect("a call");
        assert_eq!(&call.text, text);
    }
    let annexe_call = other_site.next_data(Duration::from_secs(10)).await;
    assert_eq!(annexe_call["desk"], "A1");
    assert_eq!(annexe_call["ticket"], "G001");
    app.stop().await.unwrap();
    env.cleanup().await;
}
