//! Appointment check-in at the counter, against the appointment role's real
//! gRPC contract: both roles run in this process on one manual clock. A
//! booked citizen checks in by reference or by phone, the booking becomes
//! checked in, and the ticket is ranked in the appointment's priority
//! window (or as a walk-in when later than the grace); refusals say why.

use chrono::{DateTime, Duration, Utc};
use guichet_proto::appointment::v1 as apb;
use guichet_testkit::proto::counter::v1 as cpb;
use guichet_testkit::*;
use tonic::Code;

use crate::appointment_booking::{Fixture, book_req, utc};

/// 2027-01-04 is a Monday; Paris is UTC+1 in January.
fn paris(h: u32, mi: u32) -> DateTime<Utc> {
    utc(2027, 1, 4, h - 1, mi)
}

fn check_in_ref(reference: &str) -> cpb::CheckInAppointmentRequest {
    cpb::CheckInAppointmentRequest {
        booking_reference: reference.into(),
        ..Default::default()
    }
}

fn walk_in(given: &str) -> cpb::IssueTicketRequest {
    let mut r = ticket_request(given, "Martin", "", "passeport perdu");
    r.service = "passeports".into();
    r
}

fn precondition_kind(s: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    s.get_details_precondition_failure()
        .and_then(|p| p.violations.first().map(|v| v.r#type.clone()))
        .unwrap_or_default()
}

async fn check_in_scenario(backend: Backend) {
    let Some(f) = Fixture::new(backend, |_| {}, None).await else {
        return;
    };
    let url = format!("http://{}", f.grpc);
    let counter = f
        .env
        .spawn_counter_with_clock(
            f.clock.clone(),
            &[("GUICHET__COUNTER__APPOINTMENT_URL", url.as_str())],
        )
        .await;
    let kiosk_token = f.env.token("borne-accueil", &[TokenRole::Kiosk]);
    let agent = f.env.token("agent-1", &[TokenRole::Agent]);
    let mut kiosk = counter_client(counter.grpc_addr, &kiosk_token).await;
    let mut desk = counter_client(counter.grpc_addr, &agent).await;
    let mut portal = f.portal().await;

    // Monday 08:00: a passport appointment at 10:15, another at 11:00 for
    // another phone, and one at the annex.
    let b1 = portal
        .book_appointment(book_req(paris(10, 15), "c1", "b1"))
        .await
        .unwrap()
        .into_inner();
    let mut r2 = book_req(paris(11, 0), "c2", "b2");
    r2.contact.as_mut().unwrap().phone = "+33 6 98 76 54 32".into();
    let b2 = portal.book_appointment(r2).await.unwrap().into_inner();
    let mut r3 = book_req(paris(10, 30), "c3", "b3");
    r3.site_id = "annexe".into();
    r3.contact.as_mut().unwrap().phone = "06 11 22 33 44".into();
    let b3 = portal.book_appointment(r3).await.unwrap().into_inner();

    // Too early: the window opens an hour before.
    let err = kiosk
        .check_in_appointment(check_in_ref(&b1.reference))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(precondition_kind(&err), "TOO_EARLY");

    // 09:20: a walk-in for passports.
    f.clock.set(paris(9, 20));
    let w1 = desk
        .issue_ticket(walk_in("Walk"))
        .await
        .unwrap()
        .into_inner();

    // 09:30: the 10:15 citizen checks in by reference, typed in lower case.
    f.clock.set(paris(9, 30));
    let done = kiosk
        .check_in_appointment(check_in_ref(&b1.reference.to_lowercase()))
        .await
        .unwrap()
        .into_inner();
    let t1 = done.ticket.clone().unwrap();
    assert!(!done.late);
    assert_eq!(done.booking_id, b1.id);
    assert_eq!(t1.service, "passeports");
    assert_eq!(t1.number, "P002");
    assert_eq!(t1.priority, "rendez-vous");
    assert_eq!(t1.booking_id, b1.id);
    assert_eq!(
        done.message,
        "Votre rendez-vous de 10h15 est enregistré. Ticket P002 : vous serez appelé(e) à l'écran."
    );
    // The booking is checked in with the appointment role.
    let seen = f
        .agent()
        .await
        .get_booking(apb::GetBookingRequest {
            id: b1.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.status(), apb::BookingStatus::CheckedIn);
    // A second tap on the kiosk gives the same ticket.
    let again = kiosk
        .check_in_appointment(check_in_ref(&b1.reference))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.ticket.unwrap().id, t1.id);

    // 09:50: another walk-in. The appointment ranks at 09:45 (10:15 minus
    // 30 minutes): after the 09:20 walk-in, before the 09:50 one.
    f.clock.set(paris(9, 50));
    let w2 = desk
        .issue_ticket(walk_in("Late"))
        .await
        .unwrap()
        .into_inner();
    let mut order = Vec::new();
    for d in ["1", "2", "3"] {
        let t = desk
            .call_next(cpb::CallNextRequest {
                desk: d.into(),
                services: vec!["passeports".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        order.push(t.id);
    }
    assert_eq!(order, vec![w1.id, t1.id, w2.id]);

    // 11:20: the 11:00 citizen comes by phone (another format), after the
    // 15-minute grace: checked in, but queued as a walk-in.
    f.clock.set(paris(11, 20));
    let late = kiosk
        .check_in_appointment(cpb::CheckInAppointmentRequest {
            phone: "06 98 76 54 32".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(late.late);
    assert_eq!(late.booking_id, b2.id);
    assert!(late.message.contains("le délai de 15 minutes est dépassé"));
    let lt = late.ticket.unwrap();
    assert_eq!(lt.number, "P004");

    // Refusals.
    let annex = kiosk
        .check_in_appointment(check_in_ref(&b3.reference))
        .await
        .unwrap_err();
    assert_eq!(precondition_kind(&annex), "OTHER_SITE", "{annex:?}");
    let unknown = kiosk
        .check_in_appointment(check_in_ref("RDV-ZZZZZZZZ"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let nobody = kiosk
        .check_in_appointment(cpb::CheckInAppointmentRequest {
            phone: "06 00 00 00 01".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Code::NotFound);
    let both = kiosk
        .check_in_appointment(cpb::CheckInAppointmentRequest {
            booking_reference: b1.reference.clone(),
            phone: "06 12 34 56 78".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
    assert!(both.message().contains("not both"), "{both:?}");
    let bad_phone = kiosk
        .check_in_appointment(cpb::CheckInAppointmentRequest {
            phone: "pas un numéro".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_phone.code(), Code::InvalidArgument);

    // A cancelled booking, and one on another day.
    let b5 = portal
        .book_appointment(book_req(paris(10, 0) + Duration::days(1), "c5", "b5"))
        .await
        .unwrap()
        .into_inner();
    let other_day = kiosk
        .check_in_appointment(check_in_ref(&b5.reference))
        .await
        .unwrap_err();
    assert_eq!(precondition_kind(&other_day), "TOO_EARLY");
    assert!(
        other_day.message().contains("mardi 05/01 à 10h00"),
        "{other_day:?}"
    );
    f.agent()
        .await
        .cancel_booking(apb::CancelBookingRequest {
            id: b5.id.clone(),
            reason: "demande de l'usager".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let cancelled = kiosk
        .check_in_appointment(check_in_ref(&b5.reference))
        .await
        .unwrap_err();
    assert_eq!(precondition_kind(&cancelled), "BOOKING_STATUS");

    counter.stop().await;
    f.finish().await;
}

#[tokio::test]
async fn counter_checks_appointments_in_sqlite() {
    check_in_scenario(Backend::Sqlite).await;
}

#[tokio::test]
async fn counter_checks_appointments_in_postgres() {
    check_in_scenario(Backend::Postgres).await;
}

#[tokio::test]
async fn counter_check_in_is_refused_clearly_when_not_configured() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let clock = guichet_platform::clock::ManualClock::new(paris(9, 0));
    let counter = env.spawn_counter_with_clock(clock, &[]).await;
    let kiosk = env.token("borne-accueil", &[TokenRole::Kiosk]);
    let err = counter_client(counter.grpc_addr, &kiosk)
        .await
        .check_in_appointment(check_in_ref("RDV-ABCDEFGH"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("counter.appointment_url"));
    counter.stop().await;
    env.cleanup().await;
}
