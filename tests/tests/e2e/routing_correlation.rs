//! Correlation against the dossier service's open/closed state: the same
//! citizen's open dossier of the same process within the window, and a
//! quoted closed dossier reopened or replaced per its process.

use guichet_testkit::proto::dossier::v1 as dpb;
use guichet_testkit::proto::intake::v1 as ipb;
use guichet_testkit::*;

use crate::routing_intake::routed;
use crate::routing_queue::setup;

const RULES: &str = r#"
[[rule]]
id = "renseignement"
process = "demande-information"
when = { keywords = ["renseignement"] }
"#;

fn visit(body: &str, at: chrono::DateTime<chrono::Utc>) -> ipb::IntakeEvent {
    let mut e = intake_at(ipb::Channel::Counter, at);
    e.body = body.into();
    e.citizen = Some(ipb::CitizenHint {
        given_name: "Jeanne".into(),
        family_name: "Lefèvre".into(),
        phones: vec!["06 98 76 54 32".into()],
        ..Default::default()
    });
    e
}

#[tokio::test]
async fn routing_attaches_to_the_citizens_open_dossier_within_the_window_and_handles_quoted_closed_dossiers()
 {
    let Some(s) = setup(Backend::Sqlite, Some(RULES), &[]).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let now = chrono::Utc::now();

    // Two questions from the same citizen: one dossier.
    let a = visit("renseignement sur les horaires", now);
    env.publish_intake(&a).await;
    let first = routed(r.grpc_addr, &agent, &a.id).await;
    assert_eq!(
        (first.correlation.as_str(), first.process_id.as_str()),
        ("new", "demande-information")
    );
    let b = visit("autre renseignement : les tarifs", now);
    env.publish_intake(&b).await;
    let second = routed(r.grpc_addr, &agent, &b.id).await;
    assert_eq!(second.correlation, "citizen_window");
    assert_eq!(second.dossier_id, first.dossier_id);
    // Outside the window (72 h): a new dossier.
    let c = visit("renseignement encore", now + chrono::Duration::hours(96));
    env.publish_intake(&c).await;
    let third = routed(r.grpc_addr, &agent, &c.id).await;
    assert_eq!(third.correlation, "new");
    assert_ne!(third.dossier_id, first.dossier_id);

    // The first dossier is answered (closed); a letter quoting it: this
    // process does not reopen, so a new dossier of the same process.
    let mut dossiers = dossier_client(s.dossier.grpc_addr, &agent).await;
    let closed = dossiers
        .transition_dossier(dpb::TransitionDossierRequest {
            id: first.dossier_id.clone(),
            to_state: "repondue".into(),
            request_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(closed.closed);
    let mut letter = intake_at(ipb::Channel::Scan, now);
    letter.body = format!("Suite à ma demande {} …", first.dossier_reference);
    env.publish_intake(&letter).await;
    let l = routed(r.grpc_addr, &agent, &letter.id).await;
    assert_eq!(l.correlation, "new_after_closed");
    assert_ne!(l.dossier_id, first.dossier_id);
    assert_eq!(l.process_id, "demande-information");
    assert_eq!(l.citizen_id, first.citizen_id);

    // A triage dossier closed then quoted: its process reopens it.
    let mut q = visit("bonjour", now);
    q.citizen = Some(ipb::CitizenHint {
        family_name: "Moreau".into(),
        emails: vec!["moreau@example.fr".into()],
        ..Default::default()
    });
    env.publish_intake(&q).await;
    let t = routed(r.grpc_addr, &agent, &q.id).await;
    assert_eq!(t.process_id, "a-qualifier");
    dossiers
        .transition_dossier(dpb::TransitionDossierRequest {
            id: t.dossier_id.clone(),
            to_state: "traitee".into(),
            request_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut again = intake_at(ipb::Channel::Email, now);
    again.quoted_reference = t.dossier_reference.clone();
    env.publish_intake(&again).await;
    let re = routed(r.grpc_addr, &agent, &again.id).await;
    assert_eq!(re.correlation, "reopened");
    assert_eq!(re.dossier_id, t.dossier_id);
    let d = dossiers
        .get_dossier(dpb::GetDossierRequest {
            id: t.dossier_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.closed, "reopened");
    s.finish().await;
}

#[tokio::test]
async fn routing_attaches_an_appointment_check_in_to_the_bookings_dossier() {
    let Some(s) = setup(Backend::Sqlite, Some(RULES), &[]).await else {
        return;
    };
    let (env, r) = (&s.env, &s.r);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let now = chrono::Utc::now();
    // The dossier the booking belongs to (a request of another citizen
    // name, so only the booking can tie the visit to it).
    let a = visit("renseignement sur un passeport", now);
    env.publish_intake(&a).await;
    let first = routed(r.grpc_addr, &agent, &a.id).await;

    // The counter's check-in event names the booking's dossier and no one.
    let mut checkin = intake_at(ipb::Channel::Counter, now);
    checkin.body = "Rendez-vous RDV-7K3M9QXT (passeport-depot) à 10h15".into();
    checkin.details = Some(ipb::intake_event::Details::Counter(ipb::CounterDetails {
        ticket_id: "t-1".into(),
        ticket_number: "P002".into(),
        service: "passeports".into(),
        site: "mairie".into(),
        priority: "rendez-vous".into(),
        booking_id: "b-1".into(),
        booking_reference: "RDV-7K3M9QXT".into(),
        dossier_id: first.dossier_id.clone(),
        ..Default::default()
    }));
    env.publish_intake(&checkin).await;
    let item = routed(r.grpc_addr, &agent, &checkin.id).await;
    assert_eq!(item.correlation, "appointment");
    assert_eq!(item.dossier_id, first.dossier_id);
    assert_eq!(item.citizen_id, first.citizen_id);
    s.finish().await;
}
