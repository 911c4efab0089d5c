//! The ANTS editor endpoints (JSON shapes, X-HUB-RDV-AUTH-TOKEN) and the
//! anti-duplicate coordination client against a local stand-in of the
//! national API.

use std::sync::{Arc, Mutex};

use guichet_proto::appointment::v1 as pb;
use guichet_proto::convert::timestamp;
use guichet_testkit::{Backend, http_get_with};
use serde_json::Value;
use tonic::Code;

use crate::appointment_booking::{Fixture, book_req, utc};

const TOKEN: &str = "ants-token-0123456789abcdef";

fn with_ants(cfg: &mut guichet::GuichetConfig) {
    cfg.appointment.http_addr = "127.0.0.1:0".into();
    cfg.appointment.ants.auth_token = TOKEN.to_owned().into();
    cfg.appointment.public_base_url = "https://rdv.villeneuve.example.fr".into();
}

#[tokio::test]
async fn appointment_ants_endpoints_answer_the_documented_shapes_to_the_token_only() {
    let Some(f) = Fixture::new(Backend::Sqlite, with_ants, None).await else {
        return;
    };
    let addr = f.ants.expect("ANTS endpoints served");
    let get = |path: &'static str, token: Option<&'static str>| async move {
        let headers: Vec<(&str, &str)> = token
            .map(|t| vec![("X-HUB-RDV-AUTH-TOKEN", t)])
            .unwrap_or_default();
        let (status, body) = http_get_with(addr, path, &headers).await.unwrap();
        (status, body)
    };
    assert_eq!(get("/api/ants/getManagedMeetingPoints", None).await.0, 401);
    assert_eq!(
        get("/api/ants/getManagedMeetingPoints", Some("wrong"))
            .await
            .0,
        401
    );

    let (status, body) = get("/api/ants/getManagedMeetingPoints", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let points: Value = serde_json::from_str(&body).unwrap();
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 2);
    for key in [
        "id",
        "name",
        "longitude",
        "latitude",
        "public_entry_address",
        "zip_code",
        "city_name",
        "website",
        "city_logo",
    ] {
        assert!(points[0].get(key).is_some(), "meeting point has {key}");
    }
    assert!(points[0]["latitude"].is_f64());

    // A booking at the mairie on Monday 10:00 Paris (the clock says 08:00).
    let mut portal = f.portal().await;
    let mut req = book_req(utc(2027, 1, 4, 9, 0), "c1", "");
    req.desk_id = "dr1".into();
    req.application_ids = vec!["abcde12345".into()];
    let b = portal.book_appointment(req).await.unwrap().into_inner();
    assert_eq!(b.application_ids, vec!["ABCDE12345"]);
    let mut bad = book_req(utc(2027, 1, 4, 9, 15), "c2", "");
    bad.application_ids = vec!["ABC-123".into()];
    let err = portal.book_appointment(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("10 lettres ou chiffres"));

    let (status, body) = get(
        "/api/ants/availableTimeSlots?meeting_point_ids=mairie&meeting_point_ids=annexe&start_date=2027-01-04&end_date=2027-01-05&reason=PASSPORT&documents_number=2",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let slots: Value = serde_json::from_str(&body).unwrap();
    let mairie = slots["mairie"].as_array().unwrap();
    let annexe = slots["annexe"].as_array().unwrap();
    assert!(!mairie.is_empty() && !annexe.is_empty());
    // Paris time, with its offset; 10:00 is still free on dr2 (2 people: 30 min).
    assert_eq!(mairie[0]["datetime"], "2027-01-04T10:00:00+01:00");
    assert!(
        mairie[0]["callback_url"]
            .as_str()
            .unwrap()
            .starts_with("https://rdv.villeneuve.example.fr/")
    );
    assert!(
        mairie
            .iter()
            .all(|s| s["datetime"] != "2027-01-04T11:45:00+01:00"),
        "two people do not fit at 11:45"
    );
    let (status, _) = get(
        "/api/ants/availableTimeSlots?meeting_point_ids=mairie&reason=PASSPORT",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400);

    let (status, body) = get(
        "/api/ants/searchApplicationIds?application_ids=ABCDE12345&application_ids=ZZZZZ99999",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    let found: Value = serde_json::from_str(&body).unwrap();
    let list = found["ABCDE12345"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["meeting_point"], "Hôtel de ville");
    assert_eq!(list[0]["datetime"], "2027-01-04T10:00:00+01:00");
    assert!(list[0]["management_url"].as_str().unwrap().contains(&b.id));
    assert!(list[0]["cancel_url"].as_str().unwrap().contains(&b.id));
    assert_eq!(found["ZZZZZ99999"].as_array().unwrap().len(), 0);
    let (status, _) = get(
        "/api/ants/searchApplicationIds?application_ids=short",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400);
    f.finish().await;
}

/// What the stand-in national API received: method, query, token header.
type Calls = Arc<Mutex<Vec<(String, String, String)>>>;

async fn stand_in() -> (String, Calls) {
    use axum::extract::{RawQuery, State};
    use axum::http::{HeaderMap, Method};
    let calls: Calls = Arc::default();
    let app = axum::Router::new()
        .route(
            "/api/appointments",
            axum::routing::any(
                |State(calls): State<Calls>,
                 method: Method,
                 headers: HeaderMap,
                 RawQuery(q): RawQuery| async move {
                    let token = headers
                        .get("x-rdv-opt-auth-token")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    calls
                        .lock()
                        .unwrap()
                        .push((method.to_string(), q.unwrap_or_default(), token));
                    axum::Json(serde_json::json!({"success": true}))
                },
            ),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/api"), calls)
}

#[tokio::test]
async fn appointment_pre_applications_are_declared_moved_and_deleted_nationally() {
    let (url, calls) = stand_in().await;
    let Some(f) = Fixture::new(
        Backend::Sqlite,
        move |cfg| {
            cfg.appointment.ants.coordination_url = url;
            cfg.appointment.ants.coordination_token = "coordination-secret".to_owned().into();
        },
        None,
    )
    .await
    else {
        return;
    };
    let mut portal = f.portal().await;
    let mut req = book_req(utc(2027, 1, 5, 9, 0), "c1", "");
    req.application_ids = vec!["ABCDE12345".into()];
    let b = portal.book_appointment(req).await.unwrap().into_inner();
    f.core.run_due_jobs().await.unwrap();
    portal
        .reschedule_booking(pb::RescheduleBookingRequest {
            id: b.id.clone(),
            start_time: Some(timestamp(utc(2027, 1, 6, 9, 0))),
            cancel_token: b.cancel_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    f.core.run_due_jobs().await.unwrap();
    portal
        .cancel_booking(pb::CancelBookingRequest {
            id: b.id.clone(),
            cancel_token: b.cancel_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    f.core.run_due_jobs().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let methods: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        methods,
        vec!["POST", "DELETE", "POST", "DELETE"],
        "reschedule = delete + declare"
    );
    assert!(calls.iter().all(|c| c.2 == "coordination-secret"));
    assert!(calls[0].1.contains("application_id=ABCDE12345"));
    assert!(
        calls[0]
            .1
            .contains("appointment_date=2027-01-05T10%3A00%3A00"),
        "{}",
        calls[0].1
    );
    assert!(calls[0].1.contains("management_url="));
    assert!(
        calls[1]
            .1
            .contains("appointment_date=2027-01-05T10%3A00%3A00")
    );
    assert!(
        calls[2]
            .1
            .contains("appointment_date=2027-01-06T10%3A00%3A00")
    );
    f.finish().await;
}

#[tokio::test]
async fn appointment_desk_agenda_feed_is_served_to_agents_over_http() {
    let Some(f) = Fixture::new(
        Backend::Sqlite,
        |cfg| cfg.appointment.http_addr = "127.0.0.1:0".into(),
        None,
    )
    .await
    else {
        return;
    };
    let addr = f.ants.expect("HTTP endpoints served");
    let mut portal = f.portal().await;
    let mut req = book_req(utc(2027, 1, 5, 9, 0), "c1", "");
    req.desk_id = "dr2".into();
    let b = portal.book_appointment(req).await.unwrap().into_inner();
    let agent = f.env.token("agent-1", &[guichet_testkit::TokenRole::Agent]);
    let service = f
        .env
        .token("portail", &[guichet_testkit::TokenRole::CitizenPages]);

    // The feed's address carries the desk's key, never a person's token.
    let feed = f
        .agent()
        .await
        .export_desk_agenda(pb::ExportDeskAgendaRequest {
            desk_id: "dr2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .feed_path;
    assert!(feed.starts_with("/agenda/dr2.ics?key="), "{feed}");
    assert!(!feed.contains(&agent));
    let (status, body) = http_get_with(addr, &feed, &[]).await.unwrap();
    assert_eq!(status, 200);
    let (status, _) = http_get_with(addr, &format!("/agenda/dr2.ics?token={agent}"), &[])
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, _) = http_get_with(
        addr,
        "/agenda/dr2.ics?key=0123456789abcdef0123456789abcdef",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 403);
    // Another desk's key opens only that desk.
    let key = feed.rsplit_once("key=").unwrap().1;
    let (status, _) = http_get_with(addr, &format!("/agenda/dr1.ics?key={key}"), &[])
        .await
        .unwrap();
    assert_eq!(status, 403);
    // Citizens' appointments are never cached, nor the URL passed on.
    let res = reqwest::Client::new()
        .get(format!("http://{addr}{feed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let cal: icalendar::Calendar = body.parse().expect("valid agenda");
    use icalendar::Component;
    let uids: Vec<_> = cal
        .components
        .iter()
        .filter_map(|c| c.as_event())
        .map(|e| e.get_uid().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(uids, vec![format!("{}@guichet", b.id)]);
    let bearer = format!("Bearer {agent}");
    let (status, _) = http_get_with(addr, "/agenda/dr2.ics", &[("Authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        http_get_with(addr, "/agenda/dr2.ics", &[]).await.unwrap().0,
        401
    );
    let service = format!("Bearer {service}");
    let (status, _) = http_get_with(addr, "/agenda/dr2.ics", &[("Authorization", &service)])
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, _) = http_get_with(addr, &format!("/agenda/nope.ics?key={key}"), &[])
        .await
        .unwrap();
    assert_eq!(status, 404);
    // Without an ANTS token the ANTS endpoints are not there.
    let (status, _) = http_get_with(
        addr,
        "/api/ants/getManagedMeetingPoints",
        &[("X-HUB-RDV-AUTH-TOKEN", "x")],
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    f.finish().await;
}

#[tokio::test]
async fn appointment_the_agenda_feed_shows_a_no_show_as_not_held_and_calendars_say_publish() {
    let Some(f) = Fixture::new(
        Backend::Sqlite,
        |cfg| cfg.appointment.http_addr = "127.0.0.1:0".into(),
        None,
    )
    .await
    else {
        return;
    };
    let addr = f.ants.expect("HTTP endpoints served");
    let mut portal = f.portal().await;
    let mut agent_api = f.agent().await;
    let mut req = book_req(utc(2027, 1, 5, 9, 0), "c1", "");
    req.desk_id = "dr2".into();
    let b = portal.book_appointment(req).await.unwrap().into_inner();
    // The citizen's calendar part is sent as text/calendar; method=PUBLISH.
    let ics = portal
        .export_booking_ics(pb::ExportBookingIcsRequest { id: b.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .content;
    assert!(ics.contains("\r\nMETHOD:PUBLISH\r\n"), "{ics}");

    f.clock.set(utc(2027, 1, 5, 11, 0));
    agent_api
        .mark_no_show(pb::MarkNoShowRequest { id: b.id.clone() })
        .await
        .unwrap();
    let agent = format!(
        "Bearer {}",
        f.env.token("agent-1", &[guichet_testkit::TokenRole::Agent])
    );
    let (status, body) = http_get_with(addr, "/agenda/dr2.ics", &[("Authorization", &agent)])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let cal: icalendar::Calendar = body.parse().expect("valid agenda");
    use icalendar::Component;
    let events: Vec<_> = cal.components.iter().filter_map(|c| c.as_event()).collect();
    assert_eq!(events.len(), 1, "{body}");
    assert_ne!(
        events[0].get_status(),
        Some(icalendar::EventStatus::Confirmed),
        "{body}"
    );
    assert!(
        events[0].get_summary().unwrap().starts_with("Absent – "),
        "{body}"
    );
    assert!(
        events[0]
            .get_description()
            .unwrap()
            .contains("Statut : absent"),
        "{body}"
    );
    assert!(body.contains("\r\nMETHOD:PUBLISH\r\n"), "{body}");
    f.finish().await;
}
