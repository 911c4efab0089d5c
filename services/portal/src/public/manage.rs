//! Mon rendez-vous: the page of the link the citizen received
//! (`/rendez-vous/<id>?jeton=<secret>`, the appointment role's
//! `manage_url`), without an account. See it, add it to a calendar, move
//! it, cancel it (the freed slot goes to the waiting list), or replace a
//! link that was shared (the new one goes to the booking's phone and email
//! only).
//!
//! The secret is checked by the appointment role (`GetBooking` with
//! `cancel_token`): a wrong secret, an expired link and an unknown booking
//! get the same page. The forms carry the secret in a hidden field, never
//! in another URL, with the visitor's form token (CSRF).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use guichet_proto::appointment::v1 as apb;
use guichet_proto::convert::{datetime, timestamp};
use serde::Deserialize;
use tonic::Code;

use super::booking::{Calendar, Checked, calendar, parse_slot};
use super::guard::Purpose;
use super::{Catalog, Layout, Public, Visitor, error, refused, respond, unavailable, when};
use crate::views::Tag;

/// The path of a booking's page (its secret in the query).
pub fn link(id: &str, token: &str) -> String {
    format!(
        "/rendez-vous/{}?{}",
        urlencode(id),
        serde_urlencoded::to_string([("jeton", token)]).unwrap_or_default()
    )
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("x", s)])
        .unwrap_or_default()
        .trim_start_matches("x=")
        .to_owned()
}

#[derive(Debug, Default, Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    jeton: String,
    #[serde(default)]
    semaine: String,
}

/// The status of a booking in words, with its tag.
fn status(s: i32) -> Tag {
    use apb::BookingStatus as S;
    let (word, icon, class) = match S::try_from(s).unwrap_or(S::Unspecified) {
        S::Booked => ("Confirmé", "✓", "ok"),
        S::CheckedIn => ("Arrivée enregistrée", "⌂", "info"),
        S::Seen => ("Rendez-vous passé", "✓", "neutral"),
        S::NoShow => ("Absence au rendez-vous", "!", "warn"),
        S::CancelledByCitizen => ("Annulé à votre demande", "✕", "danger"),
        S::CancelledByTown => ("Annulé par la mairie", "✕", "danger"),
        S::Unspecified => ("Inconnu", "•", "neutral"),
    };
    Tag { word, icon, class }
}

/// The booking of a link, or the one page every bad link gets.
async fn booking(p: &Public, id: &str, token: &str) -> Result<apb::Booking, Response> {
    let bad = || {
        error(
            p,
            StatusCode::NOT_FOUND,
            "Lien invalide ou expiré",
            "Ce lien de rendez-vous n'est pas valable : il est incomplet, a expiré ou a été remplacé. Utilisez le dernier lien reçu par SMS ou courriel, ou appelez la mairie.",
        )
    };
    let token = token.trim();
    if token.is_empty() || token.len() > 200 || id.len() > 100 {
        return Err(bad());
    }
    let mut c = p.app.clients.appointment.clone();
    match c
        .get_booking(p.app.clients.public(apb::GetBookingRequest {
            id: id.to_owned(),
            cancel_token: token.to_owned(),
        }))
        .await
    {
        Ok(b) => Ok(b.into_inner()),
        Err(e) if matches!(e.code(), Code::NotFound | Code::InvalidArgument) => Err(bad()),
        Err(e) => Err(unavailable(p, &e)),
    }
}

/// What a booking's page shows.
pub struct BookingView {
    pub id: String,
    pub reference: String,
    pub kind: String,
    pub when: String,
    pub site: String,
    pub address: String,
    pub people: u32,
    pub numbers: Vec<String>,
    pub status: Tag,
    /// Booked, and still movable or cancellable online.
    pub changeable: bool,
    pub booked: bool,
    /// Why it can no longer be changed online, when it is booked.
    pub locked_reason: Option<String>,
}

fn view(cat: &Catalog, b: &apb::Booking, now: DateTime<Utc>) -> BookingView {
    let slot = b.slot.clone().unwrap_or_default();
    let start = slot.start_time.as_ref().and_then(datetime).unwrap_or(now);
    let kind = cat.kind(&slot.appointment_type);
    let limit = kind.map(|k| k.cancellable_until_hours).unwrap_or(24);
    let booked = b.status == apb::BookingStatus::Booked as i32;
    let in_time = now <= start - Duration::hours(i64::from(limit));
    BookingView {
        id: b.id.clone(),
        reference: b.reference.clone(),
        kind: kind
            .map(|k| k.name.clone())
            .unwrap_or_else(|| "Rendez-vous".into()),
        when: when(start),
        site: cat.site_name(&slot.site_id),
        address: cat.site_address(&slot.site_id),
        people: b.people,
        numbers: b.application_ids.clone(),
        status: status(b.status),
        changeable: booked && in_time,
        booked,
        locked_reason: (booked && !in_time).then(|| {
            format!(
                "Ce rendez-vous ne peut plus être déplacé ni annulé en ligne moins de {limit} heures avant : appelez la mairie."
            )
        }),
    }
}

#[derive(askama::Template)]
#[template(path = "public/manage.html")]
struct ManagePage {
    layout: Layout,
    b: BookingView,
    jeton: String,
    csrf: String,
    alert: Option<String>,
}

async fn manage_page(
    p: &Public,
    visitor: &Visitor,
    b: &apb::Booking,
    token: &str,
    alert: Option<String>,
    status: StatusCode,
    headers: &HeaderMap,
) -> Response {
    let cat = match Catalog::load(p).await {
        Ok(c) => c,
        Err(e) => return unavailable(p, &e),
    };
    let page = ManagePage {
        layout: Layout::new(p, "mon-rendez-vous", headers),
        b: view(&cat, b, p.now()),
        jeton: token.to_owned(),
        csrf: p.guard.form_token(&visitor.id, Purpose::Manage, p.now()),
        alert,
    };
    (status, respond(p, &page)).into_response()
}

pub async fn show(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Response {
    match booking(&p, &id, &q.jeton).await {
        Ok(b) => manage_page(&p, &visitor, &b, &q.jeton, None, StatusCode::OK, &headers).await,
        Err(r) => r,
    }
}

/// The booking as a calendar file (`.ics`), for the citizen's agenda.
pub async fn ics(
    State(p): State<Public>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Response {
    let b = match booking(&p, &id, &q.jeton).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut c = p.app.clients.appointment.clone();
    match c
        .export_booking_ics(
            p.app
                .clients
                .public(apb::ExportBookingIcsRequest { id: b.id.clone() }),
        )
        .await
    {
        Ok(doc) => {
            let mut r = doc.into_inner().content.into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/calendar; charset=utf-8"),
            );
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"rendez-vous.ics\""),
            );
            r
        }
        Err(e) => unavailable(&p, &e),
    }
}

/// A form of the booking's page: the link's secret and the form token.
#[derive(Debug, Default, Deserialize)]
pub struct ManageForm {
    #[serde(default)]
    jeton: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirmer: String,
    #[serde(default)]
    creneau: String,
    #[serde(default)]
    demande: String,
}

impl ManageForm {
    fn request_id(&self, action: &str) -> String {
        if uuid::Uuid::parse_str(&self.demande).is_ok() {
            format!("portal-{action}-{}", self.demande)
        } else {
            format!("portal-{action}-{}", uuid::Uuid::now_v7())
        }
    }
}

/// The booking of a posted form, once its token holds.
async fn posted(
    p: &Public,
    visitor: &Visitor,
    id: &str,
    f: &ManageForm,
) -> Result<apb::Booking, Response> {
    if let Err(why) = p
        .guard
        .check_form(Some(&visitor.id), &f.csrf, Purpose::Manage, p.now())
    {
        return Err(refused(p, why));
    }
    booking(p, id, &f.jeton).await
}

#[derive(askama::Template)]
#[template(path = "public/cancel_confirm.html")]
struct CancelConfirm {
    layout: Layout,
    b: BookingView,
    jeton: String,
    csrf: String,
    link: String,
    demande: String,
}

/// Cancel: first the question, then (with `confirmer=oui`) the
/// cancellation.
pub async fn cancel(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ManageForm>,
) -> Response {
    let b = match posted(&p, &visitor, &id, &f).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if f.confirmer != "oui" {
        let cat = match Catalog::load(&p).await {
            Ok(c) => c,
            Err(e) => return unavailable(&p, &e),
        };
        let page = CancelConfirm {
            layout: Layout::new(&p, "mon-rendez-vous", &headers),
            b: view(&cat, &b, p.now()),
            jeton: f.jeton.clone(),
            csrf: p.guard.form_token(&visitor.id, Purpose::Manage, p.now()),
            link: link(&b.id, &f.jeton),
            demande: uuid::Uuid::now_v7().to_string(),
        };
        return respond(&p, &page);
    }
    let mut c = p.app.clients.appointment.clone();
    let res = c
        .cancel_booking(p.app.clients.public(apb::CancelBookingRequest {
            id: b.id.clone(),
            cancel_token: f.jeton.clone(),
            reason: String::new(),
            request_id: f.request_id("cancel"),
        }))
        .await;
    match res {
        Ok(_) => {
            metrics::counter!("guichet_portal_public_cancellations_total").increment(1);
            tracing::info!(booking_id = %b.id, "citizen cancelled online");
            crate::web::redirect_with(
                &link(&b.id, &f.jeton),
                "Votre rendez-vous est annulé. Un message vous le confirme ; le créneau est proposé aux personnes en liste d'attente.",
                p.app.config.secure_cookies,
            )
        }
        Err(e) if e.code() == Code::FailedPrecondition => {
            let message = e.message().to_owned();
            manage_page(
                &p,
                &visitor,
                &b,
                &f.jeton,
                Some(message),
                StatusCode::CONFLICT,
                &headers,
            )
            .await
        }
        Err(e) => unavailable(&p, &e),
    }
}

#[derive(askama::Template)]
#[template(path = "public/move.html")]
struct MovePage {
    layout: Layout,
    b: BookingView,
    cal: Calendar,
    jeton: String,
    csrf: String,
    link: String,
    demande: String,
    alert: Option<String>,
}

impl MovePage {
    /// The week links keep the secret in the query of this same page.
    fn week_link(&self, week: &str) -> String {
        format!(
            "{}/deplacer?{}",
            self.link.split('?').next().unwrap_or_default(),
            serde_urlencoded::to_string([("jeton", self.jeton.as_str()), ("semaine", week)])
                .unwrap_or_default()
        )
    }
}

#[allow(clippy::too_many_arguments)]
async fn move_page(
    p: &Public,
    visitor: &Visitor,
    b: &apb::Booking,
    token: &str,
    week: &str,
    alert: Option<String>,
    status: StatusCode,
    headers: &HeaderMap,
) -> Response {
    let cat = match Catalog::load(p).await {
        Ok(c) => c,
        Err(e) => return unavailable(p, &e),
    };
    let slot = b.slot.clone().unwrap_or_default();
    let Some(kind) = cat.kind(&slot.appointment_type).cloned() else {
        return error(
            p,
            StatusCode::CONFLICT,
            "Rendez-vous à déplacer par la mairie",
            "Ce rendez-vous ne se déplace pas en ligne : appelez la mairie.",
        );
    };
    let checked = Checked {
        kind,
        people: b.people.max(1),
        site: slot.site_id.clone(),
    };
    let cal = match calendar(p, &cat, &checked, week).await {
        Ok(c) => c,
        Err(e) => return unavailable(p, &e),
    };
    let page = MovePage {
        layout: Layout::new(p, "mon-rendez-vous", headers),
        b: view(&cat, b, p.now()),
        cal,
        jeton: token.to_owned(),
        csrf: p.guard.form_token(&visitor.id, Purpose::Manage, p.now()),
        link: link(&b.id, token),
        demande: uuid::Uuid::now_v7().to_string(),
        alert,
    };
    (status, respond(p, &page)).into_response()
}

pub async fn move_form(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Response {
    match booking(&p, &id, &q.jeton).await {
        Ok(b) => {
            move_page(
                &p,
                &visitor,
                &b,
                &q.jeton,
                &q.semaine,
                None,
                StatusCode::OK,
                &headers,
            )
            .await
        }
        Err(r) => r,
    }
}

pub async fn move_to(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ManageForm>,
) -> Response {
    let b = match posted(&p, &visitor, &id, &f).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let site = b
        .slot
        .as_ref()
        .map(|s| s.site_id.clone())
        .unwrap_or_default();
    let Some((_, start)) = parse_slot(&f.creneau).filter(|(s, _)| *s == site) else {
        return move_page(
            &p,
            &visitor,
            &b,
            &f.jeton,
            "",
            Some("Choisissez le nouveau créneau dans la liste.".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
            &headers,
        )
        .await;
    };
    let mut c = p.app.clients.appointment.clone();
    let res = c
        .reschedule_booking(p.app.clients.public(apb::RescheduleBookingRequest {
            id: b.id.clone(),
            start_time: Some(timestamp(start)),
            desk_id: String::new(),
            cancel_token: f.jeton.clone(),
            request_id: f.request_id("move"),
        }))
        .await;
    match res {
        Ok(_) => {
            metrics::counter!("guichet_portal_public_moves_total").increment(1);
            tracing::info!(booking_id = %b.id, "citizen moved a booking online");
            crate::web::redirect_with(
                &link(&b.id, &f.jeton),
                &format!(
                    "Votre rendez-vous est déplacé au {}. Un nouveau message de confirmation vous est envoyé.",
                    when(start)
                ),
                p.app.config.secure_cookies,
            )
        }
        Err(e) if e.code() == Code::Aborted => {
            move_page(
                &p,
                &visitor,
                &b,
                &f.jeton,
                "",
                Some(format!(
                    "Le créneau du {} vient d'être réservé par quelqu'un d'autre. Choisissez-en un autre.",
                    when(start)
                )),
                StatusCode::CONFLICT,
                &headers,
            )
            .await
        }
        Err(e) if matches!(e.code(), Code::FailedPrecondition | Code::InvalidArgument) => {
            let message = if e.code() == Code::FailedPrecondition {
                e.message().to_owned()
            } else {
                "Ce créneau ne peut pas être réservé en ligne. Choisissez-en un autre.".to_owned()
            };
            move_page(
                &p,
                &visitor,
                &b,
                &f.jeton,
                "",
                Some(message),
                StatusCode::UNPROCESSABLE_ENTITY,
                &headers,
            )
            .await
        }
        Err(e) => unavailable(&p, &e),
    }
}

#[derive(askama::Template)]
#[template(path = "public/revoked.html")]
struct Revoked {
    layout: Layout,
}

/// Replace the link: this one stops working; the new one goes to the
/// booking's phone and email.
pub async fn revoke(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ManageForm>,
) -> Response {
    let b = match posted(&p, &visitor, &id, &f).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut c = p.app.clients.appointment.clone();
    match c
        .revoke_booking_link(p.app.clients.public(apb::RevokeBookingLinkRequest {
            id: b.id.clone(),
            cancel_token: f.jeton.clone(),
            request_id: f.request_id("revoke"),
        }))
        .await
    {
        Ok(_) => {
            tracing::info!(booking_id = %b.id, "citizen replaced a booking link");
            respond(
                &p,
                &Revoked {
                    layout: Layout::new(&p, "mon-rendez-vous", &headers),
                },
            )
        }
        Err(e) if e.code() == Code::FailedPrecondition => {
            manage_page(
                &p,
                &visitor,
                &b,
                &f.jeton,
                Some("Le lien d'un rendez-vous annulé ou passé n'est pas remplacé.".into()),
                StatusCode::CONFLICT,
                &headers,
            )
            .await
        }
        Err(e) => unavailable(&p, &e),
    }
}
