//! The hall's screens, on enrolled devices only (see `devices`), calling the
//! counter as the portal's `citizen_pages` identity:
//!
//! - **Borne** (`/borne`, touch screen, large targets): take a ticket for a
//!   service (anonymous: the desk qualifies the request), or check in for
//!   an appointment by its reference or the phone given at booking. The
//!   ticket number is shown with a QR code to the citizen's ticket page.
//! - **Écran de salle d'attente** (`/ecran`, TV): the calls of the site,
//!   live, large and contrasted, with a chime and the last calls listed.
//!   It never shows a name: tickets carry none.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use guichet_proto::counter::v1 as cpb;
use guichet_proto::intake::v1::CitizenHint;
use serde::Deserialize;

use super::devices::{self, BOARD, KIOSK};
use crate::db::entities::device;
use crate::session;
use crate::views;
use crate::web::{self, App};

/// What a screen's layout shows.
pub struct Screen {
    pub town: String,
    /// The device's name ("Borne du hall").
    pub label: String,
}

impl Screen {
    fn new(app: &App, d: &device::Model) -> Screen {
        Screen {
            town: app.town.hall(),
            label: d.label.clone(),
        }
    }
}

pub struct ServiceButton {
    pub name: String,
    pub label: String,
}

#[derive(askama::Template)]
#[template(path = "kiosk.html")]
struct KioskPage {
    screen: Screen,
    csrf: String,
    request_id: String,
    services: Vec<ServiceButton>,
    priorities: Vec<(String, String)>,
    error: Option<String>,
    checkin_error: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "kiosk_ticket.html")]
struct KioskTicket {
    screen: Screen,
    number: String,
    service: String,
    message: String,
    ahead: Option<u32>,
    /// The citizen's ticket page, as a QR code image (data URI), and its
    /// address in words.
    qr: Option<String>,
    link: String,
}

/// A priority category in words.
fn priority_word(p: &str) -> String {
    match p {
        "handicap" => "Personne en situation de handicap".into(),
        "grossesse" => "Femme enceinte".into(),
        "senior" => "Personne âgée".into(),
        other => other.replace(['-', '_'], " "),
    }
}

async fn kiosk_page(
    app: &App,
    d: &device::Model,
    error: Option<String>,
    checkin_error: Option<String>,
    status: StatusCode,
) -> Response {
    let mut c = app.clients.counter.clone();
    let listed = c
        .list_services(app.clients.public(cpb::ListServicesRequest {}))
        .await
        .map(|r| r.into_inner());
    let (services, priorities, error) = match listed {
        Ok(l) => (
            l.services
                .into_iter()
                .map(|s| ServiceButton {
                    name: s.name,
                    label: s.label,
                })
                .collect(),
            l.priorities
                .into_iter()
                .map(|p| {
                    let w = priority_word(&p);
                    (p, w)
                })
                .collect(),
            error,
        ),
        Err(e) => (Vec::new(), Vec::new(), Some(web::explain(&e, "La borne"))),
    };
    let page = KioskPage {
        screen: Screen::new(app, d),
        csrf: d.csrf.clone(),
        request_id: session::random_token(),
        services,
        priorities,
        error,
        checkin_error,
    };
    (status, web::render(&page)).into_response()
}

pub async fn kiosk(State(app): State<App>, headers: HeaderMap) -> Response {
    let d = match devices::device_of(&app, &headers, KIOSK).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    devices::seen(&app, &d).await;
    kiosk_page(&app, &d, None, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct TicketForm {
    csrf: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    priorite: String,
    #[serde(default)]
    request_id: String,
}

/// Take a ticket: anonymous, for the service of the button touched.
pub async fn take_ticket(
    State(app): State<App>,
    headers: HeaderMap,
    Form(f): Form<TicketForm>,
) -> Response {
    let d = match devices::device_of(&app, &headers, KIOSK).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    if !session::same(&d.csrf, &f.csrf) {
        return kiosk_page(
            &app,
            &d,
            Some("La page a expiré : touchez de nouveau votre service.".into()),
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    let mut c = app.clients.counter.clone();
    let res = c
        .issue_ticket(app.clients.public(cpb::IssueTicketRequest {
            citizen: Some(CitizenHint::default()),
            reason: String::new(),
            service: f.service.clone(),
            site: d.site.clone(),
            // A double touch gives the same ticket.
            request_id: format!("borne-{}-{}", d.id, f.request_id.trim()),
            priority: f.priorite.trim().to_owned(),
        }))
        .await;
    match res {
        Ok(t) => {
            let t = t.into_inner();
            metrics::counter!("guichet_portal_kiosk_tickets_total", "kind" => "walk_in")
                .increment(1);
            ticket_page(&app, &d, t, None).await
        }
        Err(e) => {
            let message = match e.code() {
                tonic::Code::InvalidArgument => {
                    "Ce service n'est pas proposé ici : touchez un des services affichés.".into()
                }
                _ => web::explain(&e, "La borne"),
            };
            kiosk_page(&app, &d, Some(message), None, StatusCode::CONFLICT).await
        }
    }
}

#[derive(Deserialize)]
pub struct CheckInForm {
    csrf: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    telephone: String,
}

/// Check in for an appointment by its reference or the booking's phone.
pub async fn check_in(
    State(app): State<App>,
    headers: HeaderMap,
    Form(f): Form<CheckInForm>,
) -> Response {
    let d = match devices::device_of(&app, &headers, KIOSK).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    if !session::same(&d.csrf, &f.csrf) {
        return kiosk_page(
            &app,
            &d,
            None,
            Some("La page a expiré : recommencez.".into()),
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    let reference = f.reference.trim().to_uppercase();
    let phone = f.telephone.trim();
    if reference.is_empty() && phone.is_empty() {
        return kiosk_page(
            &app,
            &d,
            None,
            Some("Saisissez la référence de votre rendez-vous (RDV-…) ou le téléphone donné à la réservation.".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let mut c = app.clients.counter.clone();
    let res = c
        .check_in_appointment(app.clients.public(cpb::CheckInAppointmentRequest {
            booking_reference: reference,
            phone: if f.reference.trim().is_empty() {
                phone.to_owned()
            } else {
                String::new()
            },
            site: d.site.clone(),
        }))
        .await;
    match res {
        Ok(r) => {
            let r = r.into_inner();
            metrics::counter!("guichet_portal_kiosk_tickets_total", "kind" => "check_in")
                .increment(1);
            match r.ticket {
                Some(t) => ticket_page(&app, &d, t, Some(r.message)).await,
                None => {
                    kiosk_page(
                        &app,
                        &d,
                        None,
                        Some("Votre arrivée est enregistrée : présentez-vous à l'accueil.".into()),
                        StatusCode::OK,
                    )
                    .await
                }
            }
        }
        Err(e) => {
            let message = match (e.code(), web::precondition(&e)) {
                (tonic::Code::NotFound, _) => "Aucun rendez-vous aujourd'hui ne correspond : vérifiez la référence ou le téléphone, ou adressez-vous à l'accueil.".to_owned(),
                (tonic::Code::FailedPrecondition, Some("TOO_EARLY")) => "Il est trop tôt pour enregistrer votre arrivée : revenez un peu avant l'heure de votre rendez-vous.".to_owned(),
                (tonic::Code::FailedPrecondition, Some("OTHER_SITE")) => "Votre rendez-vous a lieu sur un autre site : adressez-vous à l'accueil.".to_owned(),
                (tonic::Code::FailedPrecondition, _) => "Ce rendez-vous ne peut plus être enregistré (annulé ou déjà passé) : adressez-vous à l'accueil.".to_owned(),
                (tonic::Code::InvalidArgument, _) => "La référence ressemble à RDV-ABCD1234, le téléphone à 06 12 34 56 78 : vérifiez votre saisie.".to_owned(),
                _ => web::explain(&e, "La borne"),
            };
            kiosk_page(&app, &d, None, Some(message), StatusCode::CONFLICT).await
        }
    }
}

/// The issued ticket: its number, the wait ahead and the QR code of the
/// citizen's ticket page.
async fn ticket_page(
    app: &App,
    d: &device::Model,
    t: cpb::Ticket,
    message: Option<String>,
) -> Response {
    let mut c = app.clients.counter.clone();
    let ahead = if t.public_token.is_empty() {
        None
    } else {
        c.get_ticket_position(app.clients.public(cpb::GetTicketPositionRequest {
            public_token: t.public_token.clone(),
        }))
        .await
        .ok()
        .map(|p| p.into_inner().ahead)
    };
    let service = c
        .list_services(app.clients.public(cpb::ListServicesRequest {}))
        .await
        .ok()
        .and_then(|l| {
            l.into_inner()
                .services
                .into_iter()
                .find(|s| s.name == t.service)
                .map(|s| s.label)
        })
        .unwrap_or_else(|| t.service.clone());
    let base = app.public_url.trim_end_matches('/');
    let link = if base.is_empty() || t.public_token.is_empty() {
        String::new()
    } else {
        format!("{base}/ticket/{}", t.public_token)
    };
    let page = KioskTicket {
        screen: Screen::new(app, d),
        qr: qr_data_uri(&link),
        link,
        number: t.number,
        service,
        message: message
            .unwrap_or_else(|| "Gardez ce numéro : vous serez appelé(e) à l'écran.".to_owned()),
        ahead,
    };
    web::render(&page)
}

/// `text` as a QR code, an SVG data URI (the CSP allows `data:` images).
pub fn qr_data_uri(text: &str) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

/// One call on the board.
pub struct Call {
    pub number: String,
    pub desk: String,
    pub service: String,
    pub at: String,
    pub recall: bool,
    /// Changes with every call and recall: the chime rings when it does.
    pub key: String,
}

#[derive(askama::Template)]
#[template(path = "board.html")]
struct BoardPage {
    screen: Screen,
    calls: Result<Vec<Call>, String>,
}

#[derive(askama::Template)]
#[template(path = "board_calls.html")]
struct BoardCalls {
    calls: Result<Vec<Call>, String>,
}

/// The last calls of the device's site, latest first.
async fn calls(app: &App, d: &device::Model) -> Result<Vec<Call>, String> {
    let mut c = app.clients.counter.clone();
    let labels = c
        .list_services(app.clients.public(cpb::ListServicesRequest {}))
        .await
        .map(|l| l.into_inner().services)
        .unwrap_or_default();
    let res = c
        .list_tickets(
            app.clients.public(cpb::ListTicketsRequest {
                site: d.site.clone(),
                statuses: [
                    cpb::TicketStatus::Called,
                    cpb::TicketStatus::InService,
                    cpb::TicketStatus::Done,
                    cpb::TicketStatus::NoShow,
                ]
                .iter()
                .map(|s| *s as i32)
                .collect(),
                limit: 8,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| web::explain(&e, "L'écran de la salle d'attente"))?;
    Ok(res
        .into_inner()
        .tickets
        .into_iter()
        .map(|t| {
            let at = views::ts(&t.call_time);
            Call {
                key: format!("{}-{}", t.id, t.recalls),
                service: labels
                    .iter()
                    .find(|s| s.name == t.service)
                    .map(|s| s.label.clone())
                    .unwrap_or_else(|| t.service.clone()),
                at: at
                    .map(|a| {
                        guichet_platform::calendar::to_paris(a)
                            .format("%H:%M")
                            .to_string()
                    })
                    .unwrap_or_default(),
                recall: t.recalls > 0,
                number: t.number,
                desk: t.desk,
            }
        })
        .collect())
}

pub async fn board(State(app): State<App>, headers: HeaderMap) -> Response {
    let d = match devices::device_of(&app, &headers, BOARD).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    devices::seen(&app, &d).await;
    let page = BoardPage {
        screen: Screen::new(&app, &d),
        calls: calls(&app, &d).await,
    };
    web::render(&page)
}

pub async fn board_calls(State(app): State<App>, headers: HeaderMap) -> Response {
    let d = match devices::device_of(&app, &headers, BOARD).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    web::render(&BoardCalls {
        calls: calls(&app, &d).await,
    })
}

/// The counter's changes, for the board (no personal data).
pub async fn board_events(
    State(app): State<App>,
    headers: HeaderMap,
    axum::Extension(stop): axum::Extension<tokio_util::sync::CancellationToken>,
) -> Response {
    if let Err(r) = devices::device_of(&app, &headers, BOARD).await {
        return r;
    }
    app.live.stream(stop, "counter").into_response()
}
