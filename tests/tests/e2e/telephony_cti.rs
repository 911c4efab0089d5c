//! The Zammad-compatible CTI webhook: scripted PBX event sequences per
//! scenario (answered, missed, busy, forwarded, answer after hangup,
//! duplicate newCall, bad token, bad direction, form-encoded body), with the
//! waiting and talk times measured on a manual clock, and the intake events
//! they publish.

use std::time::Duration;

use chrono::TimeZone;
use guichet::Role;
use guichet_testkit::proto::intake::v1 as ipb;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::proto::telephony::v1 as tpb;
use guichet_testkit::*;
use prost::Message;
use serde_json::json;

fn start() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap()
}

async fn get_call(addr: std::net::SocketAddr, token: &str, id: &str) -> tpb::Call {
    telephony_client(addr, token)
        .await
        .get_call(tpb::GetCallRequest { call_id: id.into() })
        .await
        .expect("get call")
        .into_inner()
}

fn telephony(e: &ipb::IntakeEvent) -> &ipb::TelephonyDetails {
    match &e.details {
        Some(ipb::intake_event::Details::Telephony(t)) => t,
        other => panic!("not a telephony event: {other:?}"),
    }
}

async fn intake_events(env: &TestEnv, n: usize) -> Vec<(async_nats::HeaderMap, ipb::IntakeEvent)> {
    env.stream_messages("INTAKE", n)
        .await
        .into_iter()
        .map(|(h, b)| (h, ipb::IntakeEvent::decode(b).expect("intake event")))
        .collect()
}

#[tokio::test]
async fn telephony_webhook_speaks_zammad_generic_cti() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let clock = ManualClock::new(start());
    let tel = env
        .spawn_telephony_with_clock(
            clock.clone(),
            &[("GUICHET__TELEPHONY__BLOCKED_NUMBERS", "")],
        )
        .await;
    let addr = tel.http_addr;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let t = CTI_TOKEN;

    // A bad token: 401, nothing stored.
    let (status, body) = cti_json(
        addr,
        "not-the-token-at-all",
        json!({"event":"newCall","from":"0612345678","to":"0143986500","direction":"in","callId":"x"}),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].is_string());

    // A bad direction, a bad event: 422 with an error.
    let (status, body) = cti_json(
        addr,
        t,
        json!({"event":"newCall","from":"0612345678","to":"0143986500","direction":"sideways","callId":"bad-dir"}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["error"].as_str().unwrap().contains("direction"),
        "{body}"
    );
    let (status, body) = cti_json(
        addr,
        t,
        json!({"event":"ringing","callId":"bad-ev","direction":"in"}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(body["error"].as_str().unwrap().contains("event"), "{body}");

    // Answered (JSON, `user` as an array): 45 s waiting, 3 min 12 s talking.
    let (status, body) = cti_json(
        addr,
        t,
        json!({"event":"newCall","from":"06 12 34 56 78","to":"0143986500","direction":"in","callId":"answered-1","user":["Accueil"],"queue":"accueil"}),
    )
    .await;
    assert_eq!((status, body.clone()), (200, json!({})));
    clock.advance(chrono::Duration::seconds(45));
    let (status, body) = cti_json(
        addr,
        t,
        json!({"event":"answer","from":"0612345678","to":"0143986500","direction":"in","callId":"answered-1","user":["Anne Agent"],"answeringNumber":"201"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    clock.advance(chrono::Duration::seconds(192));
    let (status, body) = cti_json(
        addr,
        t,
        json!({"event":"hangup","from":"0612345678","to":"0143986500","direction":"in","callId":"answered-1","cause":"normalClearing","answeringNumber":"201"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    let call = get_call(tel.grpc_addr, &agent, "answered-1").await;
    assert_eq!(call.state, "ended");
    assert_eq!((call.waiting_seconds, call.talk_seconds), (45, 192));
    assert_eq!(call.answered_by, "Anne Agent");
    assert_eq!(call.queue, "accueil");
    assert!(!call.missed);
    assert!(!call.intake_event_id.is_empty());

    // Missed, form-encoded (`call_id` spelling, `user[]`): hung up after 30 s.
    let (status, body) = cti_form(
        addr,
        t,
        "event=newCall&from=%2B33698765432&to=0143986500&direction=in&call_id=missed-1&user%5B%5D=Anne&user%5B%5D=Bob",
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    clock.advance(chrono::Duration::seconds(30));
    let (status, body) = cti_form(
        addr,
        t,
        "event=hangup&from=%2B33698765432&to=0143986500&direction=in&call_id=missed-1&cause=cancel",
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    let call = get_call(tel.grpc_addr, &agent, "missed-1").await;
    assert!(call.missed);
    assert_eq!((call.waiting_seconds, call.talk_seconds), (30, 0));
    assert_eq!(call.cause, "cancel");

    // Busy: the callee's line is busy (cause busy): a missed call too.
    cti_json(addr, t, json!({"event":"newCall","from":"0611111111","to":"0143986500","direction":"in","callId":"busy-1"})).await;
    clock.advance(chrono::Duration::seconds(5));
    let (status, _) = cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"in","callId":"busy-1","cause":"busy"}),
    )
    .await;
    assert_eq!(status, 200);
    let call = get_call(tel.grpc_addr, &agent, "busy-1").await;
    assert!(call.missed);
    assert_eq!(call.cause, "busy");

    // Forwarded after being answered: answered, not missed.
    cti_json(addr, t, json!({"event":"newCall","from":"0622222222","to":"0143986500","direction":"in","callId":"fwd-1"})).await;
    clock.advance(chrono::Duration::seconds(10));
    cti_json(
        addr,
        t,
        json!({"event":"answer","direction":"in","callId":"fwd-1","user":"Bob Agent"}),
    )
    .await;
    clock.advance(chrono::Duration::seconds(20));
    cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"in","callId":"fwd-1","cause":"forwarded"}),
    )
    .await;
    let call = get_call(tel.grpc_addr, &agent, "fwd-1").await;
    assert_eq!(call.answered_by, "Bob Agent", "`user` as a string");
    assert_eq!(call.cause, "forwarded");
    assert_eq!(
        (call.waiting_seconds, call.talk_seconds, call.missed),
        (10, 20, false)
    );

    // Answer arriving after its hangup: ignored, the call stays missed.
    cti_json(addr, t, json!({"event":"newCall","from":"0633333333","to":"0143986500","direction":"in","callId":"late-1"})).await;
    clock.advance(chrono::Duration::seconds(8));
    cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"in","callId":"late-1","cause":"cancel"}),
    )
    .await;
    let (status, body) = cti_json(
        addr,
        t,
        json!({"event":"answer","direction":"in","callId":"late-1","user":"Anne"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    let call = get_call(tel.grpc_addr, &agent, "late-1").await;
    assert!(call.missed);
    assert_eq!(call.answered_by, "");

    // A second hangup changes nothing either.
    let (status, _) = cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"in","callId":"late-1","cause":"normalClearing"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        get_call(tel.grpc_addr, &agent, "late-1").await.cause,
        "cancel"
    );

    // Duplicate newCall; answer and hangup for an unknown call: 422.
    let (status, body) = cti_json(addr, t, json!({"event":"newCall","from":"0633333333","to":"0143986500","direction":"in","callId":"late-1"})).await;
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("duplicate newCall"),
        "{body}"
    );
    for event in ["answer", "hangup"] {
        let (status, body) = cti_json(
            addr,
            t,
            json!({"event":event,"direction":"in","callId":"never-seen"}),
        )
        .await;
        assert_eq!(status, 422, "{event}");
        assert!(
            body["error"].as_str().unwrap().contains("unknown call"),
            "{body}"
        );
    }

    // A withheld number: counted, missed, no citizen to resolve.
    cti_json(addr, t, json!({"event":"newCall","from":"anonymous","to":"0143986500","direction":"in","callId":"anon-1"})).await;
    clock.advance(chrono::Duration::seconds(12));
    cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"in","callId":"anon-1","cause":"cancel"}),
    )
    .await;
    let call = get_call(tel.grpc_addr, &agent, "anon-1").await;
    assert!(call.anonymous && call.missed);

    // Voicemail answered it: missed.
    cti_json(addr, t, json!({"event":"newCall","from":"0644444444","to":"0143986500","direction":"in","callId":"vm-1"})).await;
    clock.advance(chrono::Duration::seconds(25));
    cti_json(
        addr,
        t,
        json!({"event":"answer","direction":"in","callId":"vm-1","user":"voicemail"}),
    )
    .await;
    clock.advance(chrono::Duration::seconds(40));
    cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"in","callId":"vm-1","cause":"normalClearing"}),
    )
    .await;
    let call = get_call(tel.grpc_addr, &agent, "vm-1").await;
    assert!(call.voicemail && call.missed);

    // The IVR's callback branch: a callback request.
    cti_json(addr, t, json!({"event":"newCall","from":"0655555555","to":"0143986500","direction":"in","callId":"ivr-1","queue":"rappel"})).await;
    clock.advance(chrono::Duration::seconds(50));
    cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"in","callId":"ivr-1","cause":"normalClearing"}),
    )
    .await;
    assert!(
        get_call(tel.grpc_addr, &agent, "ivr-1")
            .await
            .callback_requested
    );

    // Outbound: recorded, no intake event.
    cti_json(addr, t, json!({"event":"newCall","from":"201","to":"0612345678","direction":"out","callId":"out-1","user":"Anne"})).await;
    cti_json(
        addr,
        t,
        json!({"event":"answer","direction":"out","callId":"out-1","user":"Anne"}),
    )
    .await;
    clock.advance(chrono::Duration::seconds(60));
    cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"out","callId":"out-1","cause":"normalClearing"}),
    )
    .await;
    let call = get_call(tel.grpc_addr, &agent, "out-1").await;
    assert_eq!(
        (call.direction.as_str(), call.talk_seconds, call.missed),
        ("out", 60, false)
    );
    assert!(call.intake_event_id.is_empty());

    // One intake event per ended inbound call, acknowledged before the answer.
    let events = intake_events(&env, 8).await;
    assert_eq!(
        events.len(),
        8,
        "answered, missed, busy, fwd, late, anon, vm, ivr"
    );
    let by_call = |id: &str| {
        events
            .iter()
            .map(|(_, e)| e)
            .find(|e| telephony(e).call_id == id)
            .unwrap_or_else(|| panic!("event of {id}"))
    };
    let answered = by_call("answered-1");
    assert_eq!(answered.channel(), ipb::Channel::Telephony);
    let d = telephony(answered);
    assert_eq!(
        (d.waiting_seconds, d.talk_seconds, d.missed),
        (45, 192, false)
    );
    assert_eq!(d.answered_by, "Anne Agent");
    assert_eq!(d.source, "cti");
    assert_eq!(
        answered.citizen.as_ref().unwrap().phones,
        vec!["+33612345678".to_owned()]
    );
    assert!(
        answered.subject.contains("conversation 3 min 12 s"),
        "{}",
        answered.subject
    );
    let missed = by_call("missed-1");
    assert!(telephony(missed).missed);
    let anon = by_call("anon-1");
    assert!(telephony(anon).anonymous && telephony(anon).missed);
    assert!(
        anon.citizen.is_none(),
        "no citizen hint for a withheld number"
    );
    assert!(telephony(by_call("ivr-1")).callback_requested);
    assert!(telephony(by_call("vm-1")).voicemail);
    for (h, e) in &events {
        assert_eq!(header(h, "Nats-Msg-Id"), e.id);
        assert_eq!(
            header(h, "ce-subject"),
            format!("calls/{}", telephony(e).call_id)
        );
    }
    tel.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn telephony_blocked_numbers_are_rejected_as_busy() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let clock = ManualClock::new(start());
    let tel = env
        .spawn_telephony_with_clock(
            clock,
            &[("GUICHET__TELEPHONY__BLOCKED_NUMBERS", "06 99 99 99 99")],
        )
        .await;
    let (status, body) = cti_form(
        tel.http_addr,
        CTI_TOKEN,
        "event=newCall&from=0699999999&to=0143986500&direction=in&callId=spam-1",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"action":"reject","reason":"busy"}));
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let call = get_call(tel.grpc_addr, &agent, "spam-1").await;
    assert!(call.blocked);
    assert_eq!(call.state, "ended");
    // Its hangup afterwards is ignored; an unblocked caller is accepted.
    let (status, _) = cti_json(
        tel.http_addr,
        CTI_TOKEN,
        json!({"event":"hangup","callId":"spam-1","direction":"in","cause":"busy"}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = cti_json(tel.http_addr, CTI_TOKEN, json!({"event":"newCall","from":"0612345678","to":"0143986500","direction":"in","callId":"ok-1"})).await;
    assert_eq!(body, json!({}));
    // The rejected call is counted (call_ended, blocked) and not queued.
    let events = env.stream_messages("EVENTS", 1).await;
    let ended = guichet_testkit::proto::events::v1::CallEnded::decode(events[0].1.clone()).unwrap();
    assert_eq!(ended.call_id, "spam-1");
    assert!(ended.blocked && ended.intake_event_id.is_empty());
    tel.stop().await;
    env.cleanup().await;
}

async fn all_items(addr: std::net::SocketAddr, token: &str) -> Vec<qpb::WorkItem> {
    queue_client(addr, token)
        .await
        .list_work_items(qpb::ListWorkItemsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .items
}

async fn missed_and_answered_calls_reach_queue_and_timeline(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env
        .spawn(&[Role::IngressTelephony, Role::Routing, Role::Dossier])
        .await;
    let addr = cti_addr(&app);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let t = CTI_TOKEN;

    // A missed call from a new number.
    cti_json(addr, t, json!({"event":"newCall","from":"06 12 34 56 78","to":"0143986500","direction":"in","callId":"m-1"})).await;
    let (status, _) = cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"in","callId":"m-1","cause":"cancel"}),
    )
    .await;
    assert_eq!(status, 200);
    // A missed call from a withheld number.
    cti_json(addr, t, json!({"event":"newCall","from":"anonymous","to":"0143986500","direction":"in","callId":"m-2"})).await;
    cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"in","callId":"m-2","cause":"noAnswer"}),
    )
    .await;
    // An answered call from the first number.
    cti_json(addr, t, json!({"event":"newCall","from":"+33612345678","to":"0143986500","direction":"in","callId":"a-1"})).await;
    cti_json(
        addr,
        t,
        json!({"event":"answer","direction":"in","callId":"a-1","user":"Anne Agent"}),
    )
    .await;
    cti_json(
        addr,
        t,
        json!({"event":"hangup","direction":"in","callId":"a-1","cause":"normalClearing"}),
    )
    .await;
    // An agent asks for a callback on a citizen's behalf (gRPC).
    let cb = telephony_client(app.grpc_addr, &agent)
        .await
        .request_callback(tpb::RequestCallbackRequest {
            phone: "01 43 98 65 00".into(),
            reason: "Rappeler pour le dossier de permis".into(),
            request_id: "cb-req-1".into(),
            ..Default::default()
        })
        .await
        .expect("request callback")
        .into_inner();
    let again = telephony_client(app.grpc_addr, &agent)
        .await
        .request_callback(tpb::RequestCallbackRequest {
            phone: "01 43 98 65 00".into(),
            reason: "Rappeler pour le dossier de permis".into(),
            request_id: "cb-req-1".into(),
            ..Default::default()
        })
        .await
        .expect("request callback again")
        .into_inner();
    assert_eq!(cb.id, again.id, "idempotent on request_id");

    let call = |id: &str| {
        let id = id.to_owned();
        let addr = app.grpc_addr;
        let agent = agent.clone();
        async move { get_call(addr, &agent, &id).await }
    };
    let m1 = call("m-1").await;
    let m2 = call("m-2").await;
    let a1 = call("a-1").await;
    let items = eventually("four work items", Duration::from_secs(30), || async {
        let items = all_items(app.grpc_addr, &agent).await;
        (items.len() >= 4).then_some(items)
    })
    .await;
    assert_eq!(items.len(), 4);
    let item = |event: &str| {
        items
            .iter()
            .find(|i| i.intake_event_id == event)
            .unwrap_or_else(|| panic!("item of {event}"))
            .clone()
    };
    // Missed, known or new number: a callback item with the telephony SLA.
    let missed = item(&m1.intake_event_id);
    assert_eq!(missed.channel(), ipb::Channel::Telephony);
    assert!(missed.summary.contains("à rappeler"), "{}", missed.summary);
    assert!(missed.sla_due_time.is_some(), "callback carries its SLA");
    assert!(!missed.dossier_id.is_empty());
    // Withheld: nobody can call back — recorded, closed at once, never a
    // callback waiting in the queue (issue 14).
    let anon = item(&m2.intake_event_id);
    assert!(anon.dossier_id.is_empty());
    assert_eq!(anon.status(), qpb::WorkItemStatus::Completed);
    assert!(
        anon.outcome.contains("rappel impossible"),
        "{}",
        anon.outcome
    );
    // The explicit request.
    let requested = item(&cb.intake_event_id);
    assert!(
        requested.summary.contains("rappel"),
        "{}",
        requested.summary
    );
    assert!(!requested.dossier_id.is_empty());
    // The answered call lands on the same citizen's timeline, and in the
    // queue as work already done by the agent who answered: never offered.
    let answered = item(&a1.intake_event_id);
    assert_eq!(
        answered.citizen_id, missed.citizen_id,
        "same number, same citizen"
    );
    assert_eq!(answered.status(), qpb::WorkItemStatus::Completed);
    assert_eq!(answered.agent_id, "Anne Agent");
    assert_eq!(answered.outcome, "answered");
    for open in [&missed, &requested] {
        assert_eq!(open.status(), qpb::WorkItemStatus::Pending);
    }
    let timeline = dossier_client(app.grpc_addr, &agent)
        .await
        .list_citizen_timeline(
            guichet_testkit::proto::dossier::v1::ListCitizenTimelineRequest {
                citizen_id: missed.citizen_id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("timeline")
        .into_inner()
        .entries;
    let summaries: Vec<&str> = timeline.iter().map(|e| e.summary.as_str()).collect();
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("reçu") && s.contains("conversation") && s.contains("Anne Agent")),
        "{summaries:?}"
    );
    assert!(
        summaries.iter().any(|s| s.contains("manqué")),
        "{summaries:?}"
    );
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn telephony_missed_and_answered_calls_reach_queue_and_timeline_sqlite() {
    missed_and_answered_calls_reach_queue_and_timeline(Backend::Sqlite).await;
}

#[tokio::test]
async fn telephony_missed_and_answered_calls_reach_queue_and_timeline_postgres() {
    missed_and_answered_calls_reach_queue_and_timeline(Backend::Postgres).await;
}

#[tokio::test]
async fn telephony_role_runs_as_its_own_process_and_stops_cleanly() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let process = env
        .spawn_process(
            &["ingress-telephony"],
            &[("GUICHET__TELEPHONY__HTTP_ADDR", http.as_str())],
        )
        .await;
    let addr: std::net::SocketAddr = http.parse().unwrap();
    let (status, body) = cti_form(
        addr,
        CTI_TOKEN,
        "event=newCall&from=0612345678&to=0143986500&direction=in&callId=p-1",
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, _) = cti_form(
        addr,
        CTI_TOKEN,
        "event=hangup&direction=in&callId=p-1&cause=cancel",
    )
    .await;
    assert_eq!(status, 200);
    let events = intake_events(&env, 1).await;
    assert!(telephony(&events[0].1).missed);
    let exit = process.terminate().await;
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
    env.cleanup().await;
}

/// Issue 14: a call whose hangup never comes (a PBX restart, a lost
/// webhook) does not stay "ringing" forever: after
/// `telephony.stale_call_minutes` it is ended as lost, missed when it was
/// never answered, and reaches the queue as a callback like any missed call.
#[tokio::test]
async fn a_call_without_its_hangup_is_ended_as_lost() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let clock = ManualClock::new(start());
    let tel = env
        .spawn_telephony_with_clock(
            clock.clone(),
            &[
                ("GUICHET__TELEPHONY__STALE_CALL_MINUTES", "120"),
                ("GUICHET__TELEPHONY__STALE_SWEEP_SECS", "1"),
            ],
        )
        .await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    for id in ["lost-ringing", "lost-answered"] {
        let (status, _) = cti_json(
            tel.http_addr,
            CTI_TOKEN,
            json!({"event":"newCall","from":"0612345678","to":"0143986500","direction":"in","callId":id}),
        )
        .await;
        assert_eq!(status, 200);
    }
    clock.advance(chrono::Duration::seconds(30));
    let (status, _) = cti_json(
        tel.http_addr,
        CTI_TOKEN,
        json!({"event":"answer","from":"0612345678","to":"0143986500","direction":"in","callId":"lost-answered","user":["Anne Agent"]}),
    )
    .await;
    assert_eq!(status, 200);
    // Within the limit: still in progress.
    clock.advance(chrono::Duration::minutes(60));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get_call(tel.grpc_addr, &agent, "lost-ringing").await.state,
        "ringing"
    );
    // Past it: ended as lost at the next sweep.
    clock.advance(chrono::Duration::minutes(61));
    let ringing = eventually(
        "the ringing call ended",
        Duration::from_secs(10),
        || async {
            let c = get_call(tel.grpc_addr, &agent, "lost-ringing").await;
            (c.state == "ended").then_some(c)
        },
    )
    .await;
    assert_eq!(ringing.cause, "lost");
    assert!(ringing.missed, "never answered: a missed call to return");
    let answered = eventually(
        "the answered call ended",
        Duration::from_secs(10),
        || async {
            let c = get_call(tel.grpc_addr, &agent, "lost-answered").await;
            (c.state == "ended").then_some(c)
        },
    )
    .await;
    assert_eq!(answered.cause, "lost");
    assert!(!answered.missed);
    assert_eq!(answered.talk_seconds, 0, "no talk time is made up");
    assert_eq!(answered.waiting_seconds, 30);
    // Both reach INTAKE like calls that ended normally.
    let events = intake_events(&env, 2).await;
    assert_eq!(events.len(), 2);
    tel.stop().await;
    env.cleanup().await;
}
