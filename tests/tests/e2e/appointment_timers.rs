//! Appointment timers on a manual clock: J-2 reminders sent once at the
//! right time, the confirmation on booking, and the waiting list's limits
//! (one offer a day, three in all).

use chrono::Duration;
use guichet_proto::appointment::v1 as pb;
use guichet_proto::convert::timestamp;
use guichet_proto::notification::v1::NotificationRequest;
use guichet_proto::notification::v1::notification_request::Target;
use guichet_testkit::Backend;
use std::time::Duration as StdDuration;

use crate::appointment_booking::{Fixture, book_req, notifications, utc};

/// The message as the notification role words it: the request's template
/// (the shipped `templates/`) rendered with its variables, plus the `town`
/// the notification role adds; the SMS text for a phone, the email body
/// for an address.
fn worded(n: &NotificationRequest) -> String {
    let catalog =
        guichet_notification::templates::Catalog::load(None).expect("the shipped templates");
    let mut vars = n.variables.clone();
    vars.entry("town".into()).or_insert_with(|| "Ville".into());
    match &n.target {
        Some(Target::Phone(_)) => catalog
            .render_sms(&n.template, &vars)
            .expect("the SMS renders"),
        _ => {
            catalog
                .render_email(&n.template, &vars)
                .expect("the email renders")
                .body
        }
    }
}

#[tokio::test]
async fn appointment_reminder_is_sent_once_two_days_before() {
    let Some(f) = Fixture::new(Backend::Sqlite, |_| {}, None).await else {
        return;
    };
    let mut portal = f.portal().await;
    // Friday 2027-01-08 10:00 Paris; reminder due Wednesday 10:00 Paris.
    let b = portal
        .book_appointment(book_req(utc(2027, 1, 8, 9, 0), "c1", ""))
        .await
        .unwrap()
        .into_inner();
    let sent = notifications(&f.env, 1).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].template, "appointment-confirmation");
    assert_eq!(sent[0].target, Some(Target::Phone("+33612345678".into())));
    let text = &worded(&sent[0]);
    assert!(text.contains("vendredi 8 janvier 2027 à 10h00"), "{text}");
    assert!(text.contains(&b.reference));
    assert!(
        text.contains(&b.cancel_token),
        "the link carries the secret"
    );

    f.clock.set(utc(2027, 1, 6, 8, 59));
    assert_eq!(f.core.run_due_jobs().await.unwrap(), 0, "not yet");
    f.clock.set(utc(2027, 1, 6, 9, 0));
    assert_eq!(f.core.run_due_jobs().await.unwrap(), 1);
    f.clock.advance(Duration::hours(1));
    assert_eq!(f.core.run_due_jobs().await.unwrap(), 0, "once");
    let sent = notifications(&f.env, 2).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].template, "appointment-reminder");
    let text = &worded(&sent[1]);
    assert!(
        text.starts_with("Villeneuve – Rappel") || text.contains("Rappel"),
        "{text}"
    );
    assert!(text.contains("Annulez ou déplacez"));
    assert!(sent[1].variables["link"].contains(&b.id));
    f.finish().await;
}

#[tokio::test]
async fn appointment_reminder_follows_a_reschedule_and_not_a_cancellation() {
    let Some(f) = Fixture::new(Backend::Sqlite, |_| {}, None).await else {
        return;
    };
    let mut portal = f.portal().await;
    let moved = portal
        .book_appointment(book_req(utc(2027, 1, 8, 9, 0), "c1", ""))
        .await
        .unwrap()
        .into_inner();
    let cancelled = portal
        .book_appointment(book_req(utc(2027, 1, 8, 10, 0), "c2", ""))
        .await
        .unwrap()
        .into_inner();
    portal
        .reschedule_booking(pb::RescheduleBookingRequest {
            id: moved.id.clone(),
            start_time: Some(timestamp(utc(2027, 1, 12, 9, 0))),
            cancel_token: moved.cancel_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    portal
        .cancel_booking(pb::CancelBookingRequest {
            id: cancelled.id.clone(),
            cancel_token: cancelled.cancel_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Two confirmations, the new confirmation of the move, the cancellation.
    let sent = notifications(&f.env, 4).await;
    assert_eq!(sent.len(), 4);
    let cancel = sent
        .iter()
        .find(|n| n.template == "appointment-cancellation")
        .unwrap();
    assert!(
        worded(cancel).contains("est bien annulé"),
        "{:?}",
        cancel.variables
    );
    // At the old J-2 nothing is due, at the new one the reminder goes.
    f.clock.set(utc(2027, 1, 6, 9, 30));
    f.core.run_due_jobs().await.unwrap();
    f.clock.set(utc(2027, 1, 10, 9, 0));
    f.core.run_due_jobs().await.unwrap();
    let sent = notifications(&f.env, 5).await;
    let reminders: Vec<_> = sent
        .iter()
        .filter(|n| n.template == "appointment-reminder")
        .collect();
    assert_eq!(reminders.len(), 1);
    assert!(worded(reminders[0]).contains("mardi 12 janvier 2027 à 10h00"));
    f.finish().await;
}

#[tokio::test]
async fn appointment_waiting_list_offers_at_most_one_a_day_and_three_in_all() {
    let Some(f) = Fixture::new(Backend::Sqlite, |_| {}, None).await else {
        return;
    };
    let mut portal = f.portal().await;
    let mut agent = f.agent().await;
    // Bookings to cancel, one or two a day, without contact (no messages).
    let mut ids = Vec::new();
    for i in 0..6u32 {
        let mut r = book_req(
            utc(2027, 1, 25, 8, 0) + Duration::minutes(15 * i as i64),
            "c",
            "",
        );
        r.contact = None;
        ids.push(agent.book_appointment(r).await.unwrap().into_inner().id);
    }
    let w = portal
        .join_waiting_list(pb::JoinWaitingListRequest {
            appointment_type: "passeport-depot".into(),
            site_ids: vec!["mairie".into()],
            people: 1,
            citizen_id: "c9".into(),
            contact: Some(pb::Contact {
                phone: String::new(),
                email: "Camille@Example.fr".into(),
            }),
            before_time: Some(timestamp(utc(2027, 2, 1, 0, 0))),
            request_id: "wait-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let again = portal
        .join_waiting_list(pb::JoinWaitingListRequest {
            appointment_type: "passeport-depot".into(),
            contact: Some(pb::Contact {
                phone: String::new(),
                email: "camille@example.fr".into(),
            }),
            before_time: Some(timestamp(utc(2027, 2, 1, 0, 0))),
            request_id: "wait-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.id, again.id, "idempotent");
    let cancel = |id: String| {
        let mut agent = agent.clone();
        async move {
            agent
                .cancel_booking(pb::CancelBookingRequest {
                    id,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    };
    // Day 1: two slots free up, one message.
    cancel(ids[0].clone()).await;
    cancel(ids[1].clone()).await;
    f.core.run_due_jobs().await.unwrap();
    // Days 2, 3 and 4.
    for (day, id) in [(5, &ids[2]), (6, &ids[3]), (7, &ids[4])] {
        f.clock.set(utc(2027, 1, day, 8, 0));
        cancel(id.clone()).await;
        f.core.run_due_jobs().await.unwrap();
    }
    let sent = notifications(&f.env, 3).await;
    let offers: Vec<_> = sent
        .iter()
        .filter(|n| n.template == "appointment-waitlist-offer")
        .collect();
    assert_eq!(offers.len(), 3, "one a day, three in all");
    assert_eq!(
        offers[0].target,
        Some(Target::Email("camille@example.fr".into()))
    );
    assert!(worded(offers[0]).contains("créneau plus proche"));
    assert!(worded(offers[2]).contains("3/3"));
    let ids_sent: std::collections::BTreeSet<_> = offers.iter().map(|o| o.id.clone()).collect();
    assert_eq!(ids_sent.len(), 3);
    // Leaving the list.
    let left = portal
        .leave_waiting_list(pb::LeaveWaitingListRequest { id: w.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(!left.active);
    assert_eq!(left.messages_sent, 3);
    f.finish().await;
}

#[tokio::test]
async fn appointment_a_freed_slot_goes_to_the_waiting_citizen_whose_window_holds_it() {
    let Some(f) = Fixture::new(Backend::Sqlite, |_| {}, None).await else {
        return;
    };
    let mut portal = f.portal().await;
    let mut agent = f.agent().await;
    let mut r = book_req(utc(2027, 1, 25, 8, 0), "c", "");
    r.contact = None;
    let booked = agent.book_appointment(r).await.unwrap().into_inner().id;
    // Three citizens wait, in this order: Anne wants a slot before the
    // 20th (the freed one is too late for her), Bruno and Chloé before
    // February. Each hears at once of the earliest free slot of their window.
    for (who, before) in [
        ("anne@exemple.fr", utc(2027, 1, 20, 0, 0)),
        ("bruno@exemple.fr", utc(2027, 2, 1, 0, 0)),
        ("chloe@exemple.fr", utc(2027, 2, 1, 0, 0)),
    ] {
        portal
            .join_waiting_list(pb::JoinWaitingListRequest {
                appointment_type: "passeport-depot".into(),
                site_ids: vec!["mairie".into()],
                people: 1,
                citizen_id: who.into(),
                contact: Some(pb::Contact {
                    phone: String::new(),
                    email: who.into(),
                }),
                before_time: Some(timestamp(before)),
                request_id: format!("wait-{who}"),
            })
            .await
            .unwrap();
    }
    f.core.run_due_jobs().await.unwrap();
    let offers_to = |sent: &[NotificationRequest], who: &str| -> Vec<String> {
        sent.iter()
            .filter(|n| n.template == "appointment-waitlist-offer")
            .filter(|n| n.target == Some(Target::Email(who.into())))
            .map(|n| n.variables.get("link").cloned().unwrap_or_default())
            .collect()
    };
    let sent = notifications(&f.env, 3).await;
    for who in ["anne@exemple.fr", "bruno@exemple.fr", "chloe@exemple.fr"] {
        assert_eq!(
            offers_to(&sent, who).len(),
            1,
            "{who} hears of a free slot on joining"
        );
    }
    // The next day, the 25th at 09:00 (Paris) is cancelled: that very slot
    // goes to Bruno, the first whose window holds it; nobody else yet.
    f.clock.advance(Duration::days(1));
    agent
        .cancel_booking(pb::CancelBookingRequest {
            id: booked,
            ..Default::default()
        })
        .await
        .unwrap();
    f.core.run_due_jobs().await.unwrap();
    let sent = notifications(&f.env, 4).await;
    let bruno = offers_to(&sent, "bruno@exemple.fr");
    assert_eq!(bruno.len(), 2);
    assert!(
        bruno[1].contains("debut=2027-01-25T08:00:00Z"),
        "the freed slot: {}",
        bruno[1]
    );
    assert_eq!(
        offers_to(&sent, "chloe@exemple.fr").len(),
        1,
        "held for Bruno"
    );
    assert_eq!(
        offers_to(&sent, "anne@exemple.fr").len(),
        1,
        "outside Anne's window"
    );
    // Bruno lets the hold pass: still free, it goes to Chloé.
    f.clock.advance(Duration::minutes(121));
    f.core.run_due_jobs().await.unwrap();
    let sent = notifications(&f.env, 5).await;
    let chloe = offers_to(&sent, "chloe@exemple.fr");
    assert_eq!(chloe.len(), 2);
    assert!(
        chloe[1].contains("debut=2027-01-25T08:00:00Z"),
        "{}",
        chloe[1]
    );
    assert_eq!(offers_to(&sent, "anne@exemple.fr").len(), 1);
    // Taken meanwhile: nobody else is offered it.
    let mut r = book_req(utc(2027, 1, 25, 8, 0), "c", "");
    r.contact = None;
    agent.book_appointment(r).await.unwrap();
    f.clock.advance(Duration::minutes(121));
    f.core.run_due_jobs().await.unwrap();
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let sent = notifications(&f.env, 5).await;
    assert_eq!(
        sent.iter()
            .filter(|n| n.template == "appointment-waitlist-offer")
            .count(),
        5
    );
    f.finish().await;
}

#[tokio::test]
async fn appointment_bookings_and_their_contacts_are_purged_after_the_retention_period() {
    let Some(f) = Fixture::new(
        Backend::Sqlite,
        |cfg| cfg.appointment.retention_days = 200,
        None,
    )
    .await
    else {
        return;
    };
    let mut portal = f.portal().await;
    let mut agent = f.agent().await;
    let old = portal
        .book_appointment(book_req(utc(2027, 1, 5, 9, 0), "c1", "old-1"))
        .await
        .unwrap()
        .into_inner();
    let recent = agent
        .book_appointment(book_req(utc(2027, 3, 1, 9, 0), "c2", ""))
        .await
        .unwrap()
        .into_inner();
    f.clock.set(utc(2027, 7, 20, 9, 0));
    assert_eq!(f.core.purge_expired().await.unwrap(), 0, "not yet 200 days");
    // 200 days after its end (2027-01-05 09:15 UTC).
    f.clock.set(utc(2027, 7, 24, 9, 16));
    assert_eq!(f.core.purge_expired().await.unwrap(), 1);
    let err = agent
        .get_booking(pb::GetBookingRequest {
            id: old.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    agent
        .get_booking(pb::GetBookingRequest {
            id: recent.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Its key is gone too: the same request books anew.
    let again = agent
        .book_appointment(book_req(utc(2027, 7, 27, 9, 0), "c1", "old-1"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.id, old.id);
    f.finish().await;
}

#[tokio::test]
async fn appointment_email_confirmation_carries_the_booking_as_ics() {
    let Some(f) = Fixture::new(
        Backend::Sqlite,
        |cfg| cfg.appointment.notify_channels = vec!["sms".into(), "email".into()],
        None,
    )
    .await
    else {
        return;
    };
    let mut portal = f.portal().await;
    let mut req = book_req(utc(2027, 1, 8, 9, 0), "c1", "");
    req.contact = Some(pb::Contact {
        phone: "+33612345678".into(),
        email: "dominique@example.fr".into(),
    });
    let b = portal.book_appointment(req).await.unwrap().into_inner();
    let sent = notifications(&f.env, 2).await;
    let sms = sent
        .iter()
        .find(|n| matches!(n.target, Some(Target::Phone(_))))
        .unwrap();
    let email = sent
        .iter()
        .find(|n| matches!(n.target, Some(Target::Email(_))))
        .unwrap();
    assert!(!sms.variables.contains_key("ics"));
    assert_ne!(sms.id, email.id);
    let cal: icalendar::Calendar = email.variables["ics"].parse().expect("valid iCalendar");
    use icalendar::Component;
    let event = cal.components.iter().find_map(|c| c.as_event()).unwrap();
    assert_eq!(event.get_uid(), Some(format!("{}@guichet", b.id).as_str()));
    f.finish().await;
}

/// A booking moved (twice) shows on its dossier's timeline each time, once
/// even when the link job runs again.
#[tokio::test]
async fn appointment_a_reschedule_is_on_the_dossier_timeline() {
    use guichet::Role;
    use guichet_proto::dossier::v1 as dpb;
    use guichet_testkit::*;
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let dossier = env.spawn(&[Role::Dossier]).await;
    let mut cfg = env.config();
    crate::appointment_booking::town(&mut cfg);
    cfg.appointment.dossier_url = format!("http://{}", dossier.grpc_addr);
    let clock =
        guichet_platform::clock::ManualClock::new(crate::appointment_booking::monday_morning());
    let app = env.spawn_on_clock(&[Role::Appointment], cfg, &clock).await;
    let core = app
        .handle::<guichet_appointment::core::Core>()
        .expect("appointment shares its core");
    let mut d = dossier_client(
        dossier.grpc_addr,
        &env.token("agent-1", &[TokenRole::Agent]),
    )
    .await;
    let citizen = d
        .resolve_citizen(dpb::ResolveCitizenRequest {
            hint: Some(guichet_proto::intake::v1::CitizenHint {
                given_name: "Jeanne".into(),
                family_name: "Durand".into(),
                phones: vec!["+33612345678".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .citizen
        .unwrap();
    let dos = d
        .open_dossier(dpb::OpenDossierRequest {
            citizen_id: citizen.id.clone(),
            process_id: "demande-information".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut portal = appointment_client(
        app.grpc_addr,
        &env.token("portail", &[TokenRole::CitizenPages]),
    )
    .await;
    let mut req = book_req(utc(2027, 1, 8, 9, 0), &citizen.id, "");
    req.dossier_id = dos.id.clone();
    let b = portal.book_appointment(req).await.unwrap().into_inner();
    for day in [11, 12] {
        clock.advance(Duration::minutes(1));
        portal
            .reschedule_booking(pb::RescheduleBookingRequest {
                id: b.id.clone(),
                start_time: Some(timestamp(utc(2027, 1, day, 9, 0))),
                cancel_token: b.cancel_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let moved = |entries: &[dpb::TimelineEntry]| {
        entries
            .iter()
            .filter(|e| e.summary == "Rendez-vous : déplacé à un autre créneau")
            .count()
    };
    let list = |mut d: dpb::dossier_service_client::DossierServiceClient<Authed>, id: String| async move {
        d.list_dossier_timeline(dpb::ListDossierTimelineRequest {
            dossier_id: id,
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
    };
    eventually(
        "both moves on the timeline",
        std::time::Duration::from_secs(20),
        || {
            let d = d.clone();
            let id = dos.id.clone();
            let core = core.clone();
            async move {
                let _ = core.run_due_jobs().await;
                (moved(&list(d, id).await) == 2).then_some(())
            }
        },
    )
    .await;
    // Running the jobs again records nothing more.
    clock.advance(Duration::minutes(10));
    let _ = core.run_due_jobs().await;
    let entries = list(d.clone(), dos.id.clone()).await;
    assert_eq!(moved(&entries), 2, "{entries:?}");
    assert!(entries.iter().any(|e| e.summary == "Rendez-vous : réservé"));
    app.stop().await.unwrap();
    dossier.stop().await.unwrap();
    env.cleanup().await;
}
