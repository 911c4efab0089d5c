//! The decision indicators (issue 16) on a scripted day through the real
//! roles, on a manual clock: two emails taken and answered, three walk-ins
//! (two served, one no-show), three calls from the PBX's CDR (answered,
//! abandoned after 40 s, hung up after 3 s), the callbacks, two passport
//! appointments (one seen after an early check-in, one no-show), an
//! availability sample and one signature. Every figure is asserted against
//! the value computed by hand from the script (see each assertion), on
//! SQLite and PostgreSQL; a rebuild from the stream gives the same figures;
//! a redelivered event changes nothing; a malformed and an unknown event
//! are counted as skipped without blocking the consumer.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use guichet_indicators::IndicatorsHandle;
use guichet_testkit::email::send;
use guichet_testkit::proto::appointment::v1 as apb;
use guichet_testkit::proto::counter::v1 as cpb;
use guichet_testkit::proto::indicators::v1 as ipb;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::proto::signature::v1 as spb;
use guichet_testkit::*;

use crate::email_smtp::{CITY, email_config};

/// 08:30 in Paris (summer time) on Tuesday 15 September 2026.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 15, 6, 30, 0).unwrap()
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::minutes(minutes)
}

fn ts(t: DateTime<Utc>) -> guichet_testkit::prost_types::Timestamp {
    guichet_proto::convert::timestamp(t)
}

/// The Paris day of the script.
fn day() -> ipb::Period {
    ipb::Period {
        start: Some(ts(Utc.with_ymd_and_hms(2026, 9, 14, 22, 0, 0).unwrap())),
        end: Some(ts(Utc.with_ymd_and_hms(2026, 9, 15, 22, 0, 0).unwrap())),
    }
}

type Client = ipb::indicator_service_client::IndicatorServiceClient<Authed>;

fn filter(dimension: &str, value: &str) -> ipb::Filter {
    ipb::Filter {
        dimension: dimension.into(),
        value: value.into(),
    }
}

/// The whole-day figure of `key` with `filters`: (value, count).
async fn figure(c: &Client, key: &str, filters: &[ipb::Filter]) -> (f64, u64) {
    let r = c
        .clone()
        .get_figures(ipb::GetFiguresRequest {
            period: Some(day()),
            indicators: vec![key.into()],
            filters: filters.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.figures.len(), 1, "{key}: {:?}", r.figures);
    (r.figures[0].value, r.figures[0].count)
}

/// Wait until `key` has `count` items (the events are still flowing), then
/// return its value.
async fn settled(c: &Client, key: &str, filters: &[ipb::Filter], count: u64) -> f64 {
    let f = filters.to_vec();
    eventually(
        &format!("{key} over {count} items"),
        Duration::from_secs(60),
        || {
            let f = f.clone();
            async move {
                let (v, n) = figure(c, key, &f).await;
                (n == count).then_some(v)
            }
        },
    )
    .await
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Every figure of the day, for before/after comparisons.
async fn all_figures(c: &Client) -> Vec<ipb::Figure> {
    c.clone()
        .get_figures(ipb::GetFiguresRequest {
            period: Some(day()),
            granularity: ipb::Granularity::Hour as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .figures
}

async fn the_scripted_day(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    // The clock starts on Monday 14, 09:00 (the reference day).
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 9, 14, 7, 0, 0).unwrap());
    let (mut config, smtp, _lmtp) = email_config(&env, &[]);
    // The test samples availability itself, at a known time.
    config.appointment.availability_sample_minutes = 0;
    config.counter.recalls_before_no_show = 1;
    let app = env.spawn_on_clock(&all_roles(), config, &clock).await;
    let handle: IndicatorsHandle = app.handle().expect("indicators handle");
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);
    let ind = indicators_client(app.grpc_addr, &supervisor).await;
    let q = queue_client(app.grpc_addr, &agent).await;

    // Agents read no indicators.
    let denied = indicators_client(app.grpc_addr, &agent)
        .await
        .get_figures(ipb::GetFiguresRequest {
            period: Some(day()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // 0. The day before (Monday 14, the reference period), one walk-in at
    // 09:00 served at 09:05 (wait 300 s); its queue item is then cancelled,
    // so Tuesday starts with an empty queue.
    let counter = counter_client(app.grpc_addr, &agent).await;
    counter
        .clone()
        .issue_ticket(ticket_request("Denis", "Moreau", "", "État civil"))
        .await
        .unwrap();
    clock.set(Utc.with_ymd_and_hms(2026, 9, 14, 7, 5, 0).unwrap());
    let monday = counter
        .clone()
        .call_next(cpb::CallNextRequest {
            desk: "guichet-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let act = |id: String| cpb::TicketActionRequest { ticket_id: id };
    counter
        .clone()
        .start_service(act(monday.id.clone()))
        .await
        .unwrap();
    clock.set(Utc.with_ymd_and_hms(2026, 9, 14, 7, 15, 0).unwrap());
    counter
        .clone()
        .finish_service(act(monday.id))
        .await
        .unwrap();
    // The desk's end of visit completes Monday's request.
    eventually(
        "Monday's walk-in completed by its visit",
        Duration::from_secs(30),
        || {
            let q = q.clone();
            async move {
                q.clone()
                    .list_work_items(qpb::ListWorkItemsRequest {
                        page_size: 10,
                        status: qpb::WorkItemStatus::Completed as i32,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .items
                    .into_iter()
                    .next()
            }
        },
    )
    .await;

    // Tuesday, 08:30: the agent starts.
    clock.set(at(0));
    q.clone()
        .set_presence(qpb::SetPresenceRequest {
            presence: qpb::Presence::Available as i32,
            accept_offers: false,
        })
        .await
        .unwrap();

    // 1. Two emails, at 08:30 and 08:35, from two residents.
    let dir = tempfile::tempdir().unwrap();
    for (i, (minute, from, subject)) in [
        (0, "marie.martin@exemple.fr", "Acte de naissance"),
        (
            5,
            "paul.bernard@exemple.fr",
            "Inscription sur les listes électorales",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        clock.set(at(minute));
        let mail = dir.path().join(format!("m{i}.eml"));
        std::fs::write(
            &mail,
            format!(
                "From: {from}\r\nTo: {CITY}\r\nSubject: {subject}\r\nMessage-ID: <ind-{i}@exemple.fr>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour,\r\n{subject}, merci.\r\n"
            ),
        )
        .unwrap();
        let sent = send(smtp, false, None, from, &[CITY], &[mail]).await;
        assert!(sent.iter().all(|s| s.code == 250));
        eventually("the email routed", Duration::from_secs(30), || {
            let q = q.clone();
            async move {
                let items = q
                    .clone()
                    .list_work_items(qpb::ListWorkItemsRequest {
                        page_size: 50,
                        channel: guichet_testkit::proto::intake::v1::Channel::Email as i32,
                        status: qpb::WorkItemStatus::Pending as i32,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .items;
                (items.len() == i + 1).then_some(())
            }
        })
        .await;
    }
    // Taken at 08:40 and 08:55, answered at 08:50 and 09:15: first touch
    // 600 s and 1,200 s, resolution 1,200 s and 2,400 s (business time
    // equals calendar time inside the morning's opening hours).
    for (take, done) in [(10, 20), (25, 45)] {
        clock.set(at(take));
        let it = q
            .clone()
            .take_next(qpb::TakeNextRequest::default())
            .await
            .unwrap()
            .into_inner();
        clock.set(at(done));
        q.clone()
            .complete_work_item(qpb::CompleteWorkItemRequest {
                id: it.id,
                outcome: "Réponse envoyée".into(),
            })
            .await
            .unwrap();
    }

    // 2. The PBX's CDR at 09:20: calls at 09:00 answered after 12 s (talk
    // 240 s), at 09:05 left after 40 s, at 09:10 hung up after 3 s (not an
    // offered call).
    clock.set(at(50));
    let row = |src: &str,
               start: &str,
               answer: &str,
               end: &str,
               dur: u32,
               bill: u32,
               disp: &str,
               id: &str| {
        format!(
            "\"\",\"{src}\",\"200\",\"from-trunk\",\"\"\"\"\" <{src}>\",\"SIP/trunk-1\",\"SIP/200-2\",\"Dial\",\"SIP/200\",\"{start}\",\"{answer}\",\"{end}\",{dur},{bill},\"{disp}\",\"DOCUMENTATION\",\"{id}\",\"\"\n"
        )
    };
    let csv = [
        row(
            "0611111111",
            "2026-09-15 09:00:00",
            "2026-09-15 09:00:12",
            "2026-09-15 09:04:12",
            252,
            240,
            "ANSWERED",
            "ind-call-1",
        ),
        row(
            "0622222222",
            "2026-09-15 09:05:00",
            "",
            "2026-09-15 09:05:40",
            40,
            0,
            "NO ANSWER",
            "ind-call-2",
        ),
        row(
            "0633333333",
            "2026-09-15 09:10:00",
            "",
            "2026-09-15 09:10:03",
            3,
            0,
            "NO ANSWER",
            "ind-call-3",
        ),
    ]
    .concat();
    let (status, body) = http_post(
        cti_addr(&app),
        &format!("/api/v1/cdr/{CTI_TOKEN}"),
        "text/csv",
        csv.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // The callbacks (the only pending items), taken at 09:22 and 09:25,
    // done by 09:28 (within their 2 h SLA).
    let callbacks = eventually("two callbacks queued", Duration::from_secs(30), || {
        let q = q.clone();
        async move {
            let items = q
                .clone()
                .list_work_items(qpb::ListWorkItemsRequest {
                    page_size: 50,
                    channel: guichet_testkit::proto::intake::v1::Channel::Telephony as i32,
                    status: qpb::WorkItemStatus::Pending as i32,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .items;
            (items.len() == 2).then_some(items)
        }
    })
    .await;
    assert_eq!(callbacks.len(), 2);
    for (take, done) in [(52, 55), (55, 58)] {
        clock.set(at(take));
        let it = q
            .clone()
            .take_next(qpb::TakeNextRequest::default())
            .await
            .unwrap()
            .into_inner();
        clock.set(at(done));
        q.clone()
            .complete_work_item(qpb::CompleteWorkItemRequest {
                id: it.id,
                outcome: "Rappelé".into(),
            })
            .await
            .unwrap();
    }

    // 3. Walk-ins at 09:30, 09:32, 09:34; A called and started at 09:40,
    // finished 09:45 (wait 600 s, service 300 s); B called 09:50, started
    // 09:51, finished 10:01 (wait 1,140 s, service 600 s); C called 10:02,
    // recalled 10:03, no-show 10:05.
    for (minute, name) in [(60, "Alice"), (62, "Bruno"), (64, "Chloé")] {
        clock.set(at(minute));
        counter
            .clone()
            .issue_ticket(ticket_request(name, "Durand", "", "État civil"))
            .await
            .unwrap();
    }
    let desk = |c: &cpb::counter_service_client::CounterServiceClient<Authed>| {
        let mut c = c.clone();
        async move {
            c.call_next(cpb::CallNextRequest {
                desk: "guichet-1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    // Routing follows each visit (the request handed to the desk, then
    // completed) before the clock moves on, as minutes pass at a real desk.
    let followed = |intake_event_id: String, status: qpb::WorkItemStatus| {
        let q = q.clone();
        async move {
            eventually(
                "the walk-in's request follows its visit",
                Duration::from_secs(30),
                || {
                    let mut q = q.clone();
                    let id = intake_event_id.clone();
                    async move {
                        let i = q
                            .get_work_item(qpb::GetWorkItemRequest {
                                intake_event_id: id,
                                ..Default::default()
                            })
                            .await
                            .ok()?
                            .into_inner();
                        (i.status() == status).then_some(())
                    }
                },
            )
            .await
        }
    };
    for (call, start, finish) in [(70, 70, 75), (80, 81, 91)] {
        clock.set(at(call));
        let t = desk(&counter).await;
        followed(t.intake_event_id.clone(), qpb::WorkItemStatus::Assigned).await;
        clock.set(at(start));
        counter
            .clone()
            .start_service(act(t.id.clone()))
            .await
            .unwrap();
        clock.set(at(finish));
        counter.clone().finish_service(act(t.id)).await.unwrap();
        followed(t.intake_event_id, qpb::WorkItemStatus::Completed).await;
    }
    clock.set(at(92));
    let c = desk(&counter).await;
    followed(c.intake_event_id.clone(), qpb::WorkItemStatus::Assigned).await;
    clock.set(at(93));
    counter
        .clone()
        .recall_ticket(act(c.id.clone()))
        .await
        .unwrap();
    clock.set(at(95));
    counter.clone().mark_no_show(act(c.id)).await.unwrap();
    followed(c.intake_event_id, qpb::WorkItemStatus::Completed).await;

    // 4. Two passport appointments booked at 10:10 for 14:00 and 14:15
    // (lead times 13,800 s and 14,700 s); availability sampled then: the
    // next slot bookable online (2 h ahead: from 12:10) is 13:30, 12,000 s
    // away; the mairie's two desks open 52 units of 15 min that Tuesday
    // (28 + 24), 2 of them booked.
    clock.set(at(100));
    let appointments = appointment_client(app.grpc_addr, &agent).await;
    let book = |minute_paris: u32, who: &str| apb::BookAppointmentRequest {
        appointment_type: "passeport-depot".into(),
        site_id: "mairie".into(),
        start_time: Some(ts(Utc
            .with_ymd_and_hms(2026, 9, 15, 12, minute_paris, 0)
            .unwrap())),
        people: 1,
        citizen_id: who.into(),
        contact: Some(apb::Contact {
            phone: "06 12 34 56 78".into(),
            email: String::new(),
        }),
        request_id: format!("ind-{who}"),
        ..Default::default()
    };
    let seen = appointments
        .clone()
        .book_appointment(book(0, "citoyen-1"))
        .await
        .unwrap()
        .into_inner();
    let absent = appointments
        .clone()
        .book_appointment(book(15, "citoyen-2"))
        .await
        .unwrap()
        .into_inner();
    let core: guichet_appointment::core::Core = app.handle().expect("appointment core");
    assert!(core.sample_availability().await.unwrap() > 0);
    // Checked in at 13:58 (120 s early), seen at 14:10; the other a no-show at 14:30.
    clock.set(Utc.with_ymd_and_hms(2026, 9, 15, 11, 58, 0).unwrap());
    appointments
        .clone()
        .check_in_booking(apb::CheckInBookingRequest {
            id: seen.id.clone(),
        })
        .await
        .unwrap();
    clock.set(Utc.with_ymd_and_hms(2026, 9, 15, 12, 10, 0).unwrap());
    appointments
        .clone()
        .mark_booking_seen(apb::MarkBookingSeenRequest { id: seen.id })
        .await
        .unwrap();
    clock.set(Utc.with_ymd_and_hms(2026, 9, 15, 12, 30, 0).unwrap());
    appointments
        .clone()
        .mark_no_show(apb::MarkNoShowRequest { id: absent.id })
        .await
        .unwrap();

    // 5. A signature requested at 14:40, signed at 14:43 (180 s).
    clock.set(Utc.with_ymd_and_hms(2026, 9, 15, 12, 40, 0).unwrap());
    let phone = "+33612345699";
    let mut sig = signature_client(app.grpc_addr, &agent).await;
    let req = sig
        .create_signature_request(crate::signature_flow::create_req(
            &[("Léa Petit", phone)],
            crate::signature_flow::avenant_pdf("indicateurs"),
        ))
        .await
        .unwrap()
        .into_inner();
    let signer = req.signers[0].id.clone();
    sig.send_code(spb::SendCodeRequest {
        signature_request_id: req.id.clone(),
        signer_id: signer.clone(),
    })
    .await
    .unwrap();
    let code = crate::signature_flow::read_sms_code(&env, phone, 1).await;
    clock.set(Utc.with_ymd_and_hms(2026, 9, 15, 12, 43, 0).unwrap());
    let confirmed = sig
        .confirm_code(spb::ConfirmCodeRequest {
            signature_request_id: req.id.clone(),
            signer_id: signer,
            code,
            ip: "192.0.2.10".into(),
            user_agent: "guichet-test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(confirmed.signed);

    // --- The figures, by hand -------------------------------------------
    let email = [filter("channel", "email")];
    assert!(close(
        settled(&ind, "requests.received", &email, 2).await,
        2.0
    ));
    assert!(close(
        settled(&ind, "requests.first_touch_p50", &email, 2).await,
        600.0
    ));
    assert!(close(
        figure(&ind, "requests.first_touch_p90", &email).await.0,
        1200.0
    ));
    assert!(close(
        settled(&ind, "requests.resolution_p50", &email, 2).await,
        1200.0
    ));
    assert!(close(
        figure(&ind, "requests.resolution_p90", &email).await.0,
        2400.0
    ));
    // Both answered within the 2 working days of the email SLA.
    assert!(close(
        settled(&ind, "requests.sla_compliance", &email, 2).await,
        1.0
    ));
    // Two residents, two dossiers, nobody came back.
    assert!(close(
        settled(&ind, "requests.first_contact_resolution", &email, 2).await,
        1.0
    ));
    // A walk-in's request goes to the desk agent when the ticket is called
    // (first touch: A 600 s, B 1,080 s, C 1,680 s) and ends with the visit
    // (A 900 s, B 1,740 s, C's no-show 1,860 s): A and B within their 30
    // working minutes, C one minute late.
    let counter_items = [filter("channel", "counter")];
    assert!(close(
        settled(&ind, "requests.sla_compliance", &counter_items, 3).await,
        2.0 / 3.0
    ));
    assert!(close(
        settled(&ind, "requests.first_touch_p50", &counter_items, 3).await,
        1080.0
    ));
    assert!(close(
        figure(&ind, "requests.first_touch_p90", &counter_items)
            .await
            .0,
        1680.0
    ));
    assert!(close(
        settled(&ind, "requests.resolution_p50", &counter_items, 3).await,
        1740.0
    ));

    assert!(close(
        settled(&ind, "counter.wait_p50", &[], 2).await,
        600.0
    ));
    assert!(close(figure(&ind, "counter.wait_p90", &[]).await.0, 1140.0));
    assert!(close(
        figure(&ind, "counter.service_time", &[]).await.0,
        450.0
    ));
    // Three finished visits over the 7.5 opening hours of a Tuesday.
    assert!(close(
        settled(&ind, "counter.tickets_per_hour", &[], 3).await,
        0.4
    ));

    assert!(close(settled(&ind, "calls.offered", &[], 2).await, 2.0));
    assert!(close(figure(&ind, "calls.answered", &[]).await.0, 1.0));
    assert!(close(figure(&ind, "calls.abandoned", &[]).await.0, 1.0));
    assert!(close(
        figure(&ind, "calls.abandonment_rate", &[]).await.0,
        0.5
    ));
    assert!(close(
        figure(&ind, "calls.average_speed_of_answer", &[]).await.0,
        12.0
    ));
    // Answered within 20 s: one of the two offered.
    assert!(close(figure(&ind, "calls.service_level", &[]).await.0, 0.5));
    // The 40 s call's callback was done by 09:28, due two working hours later.
    assert!(close(
        settled(&ind, "calls.callbacks_within_sla", &[], 1).await,
        1.0
    ));

    let passport = [
        filter("appointment_type", "passeport-depot"),
        filter("site", "mairie"),
    ];
    assert!(close(
        settled(&ind, "appointments.booked", &[], 2).await,
        2.0
    ));
    assert!(close(
        figure(&ind, "appointments.lead_time_p50", &[]).await.0,
        13_800.0 / 86_400.0
    ));
    assert!(close(
        settled(&ind, "appointments.next_free_slot_days", &passport, 1).await,
        12_000.0 / 86_400.0
    ));
    assert!(close(
        settled(
            &ind,
            "appointments.fill_rate",
            &[filter("site", "mairie")],
            1
        )
        .await,
        2.0 / 52.0
    ));
    assert!(close(
        settled(&ind, "appointments.no_show_rate", &[], 2).await,
        0.5
    ));
    assert!(close(
        figure(&ind, "appointments.checkin_delay_p50", &[]).await.0,
        -120.0
    ));

    assert!(close(
        settled(&ind, "signatures.completion_rate", &[], 1).await,
        1.0
    ));
    assert!(close(
        figure(&ind, "signatures.time_to_sign_p50", &[]).await.0,
        180.0
    ));

    // The queue now: no walk-in waits (each ended with its visit).
    let now = ind
        .clone()
        .get_queue_now(ipb::GetQueueNowRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        now.channels
            .iter()
            .all(|c| c.channel != "counter" || c.waiting == 0),
        "{:?}",
        now.channels
    );
    assert!(
        now.agents
            .iter()
            .any(|a| a.presence == "available" && a.agents == 1),
        "{:?}",
        now.agents
    );

    // Cut by channel: one row per channel; by hour: the 09:00 bucket holds
    // the walk-ins' waits.
    let by_channel = ind
        .clone()
        .get_figures(ipb::GetFiguresRequest {
            period: Some(day()),
            cut: "channel".into(),
            indicators: vec!["requests.received".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let received = |ch: &str| {
        by_channel
            .figures
            .iter()
            .find(|f| f.cut_value == ch)
            .map(|f| f.value)
            .unwrap_or(0.0)
    };
    assert_eq!(received("email"), 2.0);
    assert_eq!(received("counter"), 3.0);

    // Comparison: the walk-in wait before and after 09:31 (A, then B):
    // 1,140 / 600 − 1 = +90 %.
    let cmp = ind
        .clone()
        .compare_periods(ipb::ComparePeriodsRequest {
            reference: Some(ipb::Period {
                start: Some(ts(at(0))),
                end: Some(ts(at(61))),
            }),
            compared: Some(ipb::Period {
                start: Some(ts(at(61))),
                end: Some(ts(at(600))),
            }),
            indicators: vec!["counter.wait_p50".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cmp.comparisons.len(), 1, "{:?}", cmp.comparisons);
    assert!(close(cmp.comparisons[0].change.unwrap(), 0.9));
    assert_eq!(
        cmp.comparisons[0].text,
        "+90 % par rapport à la période de référence"
    );

    // Tuesday against Monday: the walk-in wait went from 300 s to 600 s.
    let monday = ind
        .clone()
        .compare_periods(ipb::ComparePeriodsRequest {
            reference: Some(ipb::Period {
                start: Some(ts(Utc.with_ymd_and_hms(2026, 9, 13, 22, 0, 0).unwrap())),
                end: Some(ts(Utc.with_ymd_and_hms(2026, 9, 14, 22, 0, 0).unwrap())),
            }),
            compared: Some(day()),
            indicators: vec!["counter.wait_p50".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        monday.comparisons[0].text,
        "+100 % par rapport à la période de référence"
    );

    // Drill down: the two emails behind the first-touch figure, with their
    // dossier references.
    let items = ind
        .clone()
        .drill_down(ipb::DrillDownRequest {
            indicator: "requests.first_touch_p50".into(),
            period: Some(day()),
            cut: "channel".into(),
            cut_value: "email".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(items.total, 2);
    assert_eq!(
        items.items.iter().map(|i| i.value).collect::<Vec<_>>(),
        vec![600.0, 1200.0]
    );
    assert!(items.items.iter().all(|i| !i.dossier_reference.is_empty()));

    // CSV for a spreadsheet.
    let csv = ind
        .clone()
        .export_csv(ipb::ExportCsvRequest {
            table: Some(ipb::export_csv_request::Table::Figures(
                ipb::GetFiguresRequest {
                    period: Some(day()),
                    indicators: vec!["counter.service_time".into()],
                    ..Default::default()
                },
            )),
        })
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8(csv.csv).unwrap();
    assert!(
        text.starts_with("\u{feff}indicateur;libellé;découpe;début;valeur;nombre;sans donnée\r\n")
    );
    assert!(
        text.contains("counter.service_time;Durée moyenne de service;;2026-09-15 00:00;450;2;non"),
        "{text}"
    );

    // Bad input: an inverted period, an unknown cut, the agent cut (off).
    let bad = |r: ipb::GetFiguresRequest| {
        let ind = ind.clone();
        async move { ind.clone().get_figures(r).await.unwrap_err() }
    };
    let e = bad(ipb::GetFiguresRequest {
        period: Some(ipb::Period {
            start: day().end,
            end: day().start,
        }),
        ..Default::default()
    })
    .await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("period"), "{}", e.message());
    let e = bad(ipb::GetFiguresRequest {
        period: Some(day()),
        cut: "couleur".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("cut"), "{}", e.message());
    let e = bad(ipb::GetFiguresRequest {
        period: Some(day()),
        cut: "agent".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // A day with no data: zeros, said so.
    let empty = ind
        .clone()
        .get_figures(ipb::GetFiguresRequest {
            period: Some(ipb::Period {
                start: Some(ts(Utc.with_ymd_and_hms(2026, 8, 1, 0, 0, 0).unwrap())),
                end: Some(ts(Utc.with_ymd_and_hms(2026, 8, 2, 0, 0, 0).unwrap())),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.empty);
    assert!(empty.figures.iter().all(|f| f.empty && f.value == 0.0));

    // Redelivered, malformed and unknown events change no figure.
    let before = all_figures(&ind).await;
    let skipped_before = handle
        .ingest
        .stats
        .skipped
        .load(std::sync::atomic::Ordering::Relaxed);
    let dupes_before = handle
        .ingest
        .stats
        .duplicates
        .load(std::sync::atomic::Ordering::Relaxed);
    let nats = env.nats().await;
    let js = async_nats::jetstream::new(nats.clone());
    let stream = js.get_stream(env.stream("EVENTS")).await.unwrap();
    let first = stream
        .get_raw_message(
            // The last visit_ended on the stream.
            stream
                .get_last_raw_message_by_subject(&env.subject("events.counter.visit_ended"))
                .await
                .unwrap()
                .sequence,
        )
        .await
        .unwrap();
    let publish = |subject: String, headers: async_nats::HeaderMap, body: Vec<u8>| {
        let js = js.clone();
        async move {
            js.publish_with_headers(subject, headers, body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let mut again = first.headers.clone();
    // A new JetStream id, the same CloudEvents id: a redelivery.
    again.insert("Nats-Msg-Id", "redelivery-1");
    publish(first.subject.to_string(), again, first.payload.to_vec()).await;
    let mut broken = first.headers.clone();
    broken.insert("Nats-Msg-Id", "broken-1");
    broken.insert("ce-id", "broken-event-1");
    publish(first.subject.to_string(), broken, vec![0xff, 0xff, 0xff]).await;
    let mut unknown = first.headers.clone();
    unknown.insert("Nats-Msg-Id", "unknown-1");
    unknown.insert("ce-id", "unknown-event-1");
    unknown.insert("ce-type", "org.example.v1.something");
    publish(
        env.subject("events.elsewhere.something"),
        unknown,
        vec![1, 2, 3],
    )
    .await;
    eventually("the extra events consumed", Duration::from_secs(30), || {
        let h = handle.clone();
        async move {
            let s = &h.ingest.stats;
            (s.skipped.load(std::sync::atomic::Ordering::Relaxed) == skipped_before + 2
                && s.duplicates.load(std::sync::atomic::Ordering::Relaxed) == dupes_before + 1)
                .then_some(())
        }
    })
    .await;
    assert_eq!(all_figures(&ind).await, before, "nothing counted twice");

    // Rebuilt from the stream alone: the same figures.
    let replayed = handle.rebuild().await.unwrap();
    assert!(replayed > 20, "{replayed} events replayed");
    assert_eq!(
        all_figures(&ind).await,
        before,
        "a rebuild gives the same figures"
    );

    if backend == Backend::Sqlite {
        dashboard_in_the_browser(&app).await;
    }
    let _ = app.stop().await;
    env.cleanup().await;
}

/// The supervisor reads the day on the dashboard: the figures computed
/// above with their definitions, Tuesday against Monday, and from a figure
/// down to its items and a dossier's fiche. An agent is refused.
async fn dashboard_in_the_browser(app: &guichet::RunningApp) {
    use guichet_portal::PortalHandle;
    use guichet_portal::accounts::{self, NewAccount};
    use guichet_testkit::browser::Browser;
    let Some(b) = Browser::start().await else {
        return;
    };
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    for (login, role) in [
        ("chef", TokenRole::Supervisor),
        ("accueil", TokenRole::Agent),
    ] {
        accounts::add(
            &portal.db,
            NewAccount {
                login: login.into(),
                display_name: login.into(),
                roles: vec![role],
                groups: vec![],
                password: "un mot de passe de test".into(),
            },
        )
        .await
        .unwrap();
    }
    let log_in = |login: &'static str| {
        let b = &b;
        let base = base.clone();
        async move {
            b.goto(&format!("{base}/connexion")).await;
            b.fill("login", login).await;
            b.fill("password", "un mot de passe de test").await;
            b.click_text("Se connecter").await;
        }
    };
    log_in("chef").await;
    b.wait_text("File unique", Duration::from_secs(10)).await;
    b.goto(&format!(
        "{base}/indicateurs?du=2026-09-15&au=2026-09-15&ref_du=2026-09-14&ref_au=2026-09-14"
    ))
    .await;
    let text = b
        .wait_text("Attente au guichet (médiane)", Duration::from_secs(10))
        .await;
    for expected in [
        // first touch of the emails is cut by channel below; all channels here
        "Délai de prise en charge (médiane)",
        "Attente au guichet (médiane)\n10 min",
        "Attente au guichet (p90)\n19 min",
        "Durée moyenne de service\n7 min 30 s",
        "Appels présentés\n2",
        "Taux d'appels perdus\n50 %",
        "Temps moyen d'attente avant réponse\n12 s",
        "Taux d'absence aux rendez-vous\n50 %",
        "Délai de signature (médiane)\n3 min",
        "+100 % par rapport à la période de référence",
        "En ce moment",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` not on the dashboard:\n{text}"
        );
    }
    b.check_page("indicateurs").await;
    // By channel: the emails' first touch, then the items behind it.
    b.goto(&format!(
        "{base}/indicateurs?du=2026-09-15&au=2026-09-15&decoupe=channel"
    ))
    .await;
    b.wait_text("Courriel", Duration::from_secs(10)).await;
    b.check_page("indicateurs-par-canal").await;
    b.goto(&format!(
        "{base}/indicateurs/requests.first_touch_p50/elements?du=2026-09-15&au=2026-09-15&decoupe=channel&valeur=email"
    ))
    .await;
    let items = b
        .wait_text("Éléments comptés", Duration::from_secs(10))
        .await;
    assert!(items.contains(": 2."), "{items}");
    assert!(
        items.contains("10 min") && items.contains("20 min"),
        "{items}"
    );
    b.check_page("indicateurs-elements").await;
    b.click_text("VIN-").await;
    b.wait_text("VIN-2026", Duration::from_secs(10)).await;
    assert!(b.current_path().await.starts_with("/dossier/"));
    // An agent does not see them.
    b.click_text("Se déconnecter").await;
    log_in("accueil").await;
    b.wait_text("File unique", Duration::from_secs(10)).await;
    assert!(!b.text().await.contains("Indicateurs"));
    b.goto(&format!("{base}/indicateurs")).await;
    b.wait_text("réservés aux responsables", Duration::from_secs(10))
        .await;
    b.close().await;
}

#[tokio::test]
async fn scripted_day_indicators_sqlite() {
    the_scripted_day(Backend::Sqlite).await;
}

#[tokio::test]
async fn scripted_day_indicators_postgres() {
    the_scripted_day(Backend::Postgres).await;
}
