//! Agenda: the appointments of a site and day (and a desk): who is
//! expected, checked in, seen, absent or cancelled; the desk marks a
//! booking seen or absent, or cancels it for the town. **Prendre un
//! rendez-vous** from a dossier: the slot picker (type, site, number of
//! people), then the booking for the dossier's citizen, linked to the
//! dossier (so it reaches her timeline). Every call is made with the
//! agent's token: the appointment role decides what she may do.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{Duration, NaiveDate, NaiveTime};
use guichet_platform::calendar::{from_paris, to_paris};
use guichet_proto::appointment::v1 as apb;
use guichet_proto::convert::timestamp;
use guichet_proto::dossier::v1 as dpb;
use serde::Deserialize;

use super::{Layout, Section, respond, respond_with};
use crate::views;
use crate::web::{self, Agent, App};

#[derive(Deserialize, Default)]
pub struct AgendaQuery {
    #[serde(default)]
    site: String,
    /// YYYY-MM-DD (Paris).
    #[serde(default)]
    jour: String,
    #[serde(default)]
    guichet: String,
}

pub struct BookingRow {
    pub id: String,
    pub time: String,
    pub reference: String,
    pub kind: String,
    pub desk: String,
    pub people: u32,
    pub citizen: String,
    pub dossier: String,
    pub status: &'static str,
    pub tag: &'static str,
    /// Booked or checked in: may be marked seen or absent.
    pub expected: bool,
    pub state: apb::BookingStatus,
    pub cancellable: bool,
}

#[derive(askama::Template)]
#[template(path = "agenda.html")]
struct AgendaPage {
    layout: Layout,
    sites: Vec<(String, String)>,
    desks: Vec<(String, String)>,
    site: String,
    day: String,
    day_words: String,
    desk: String,
    previous: String,
    next: String,
    /// This page's query (where an action comes back to).
    here: String,
    rows: Section<Vec<BookingRow>>,
    counts: String,
}

pub fn status_word(s: i32) -> (&'static str, &'static str) {
    use apb::BookingStatus as B;
    match B::try_from(s).unwrap_or(B::Unspecified) {
        B::Booked => ("Attendu", "info"),
        B::CheckedIn => ("Arrivé", "warn"),
        B::Seen => ("Reçu", "ok"),
        B::NoShow => ("Absent", "danger"),
        B::CancelledByCitizen => ("Annulé par le citoyen", "neutral"),
        B::CancelledByTown => ("Annulé par la mairie", "neutral"),
        B::Unspecified => ("Inconnu", "neutral"),
    }
}

/// "lundi 4 janvier 2027".
fn day_words(d: NaiveDate) -> String {
    let noon = NaiveTime::from_hms_opt(12, 0, 0).unwrap_or(NaiveTime::MIN);
    guichet_platform::french::day_date(from_paris(d.and_time(noon)))
}

fn paris_day(app: &App, asked: &str) -> NaiveDate {
    NaiveDate::parse_from_str(asked.trim(), "%Y-%m-%d")
        .unwrap_or_else(|_| to_paris(app.now()).date())
}

pub async fn page(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Query(q): Query<AgendaQuery>,
) -> Response {
    let mut a = app.clients.appointment.clone();
    let sites = a
        .list_sites(app.clients.request(&agent, apb::ListSitesRequest {}))
        .await
        .map(|r| r.into_inner().sites)
        .unwrap_or_default();
    let types: HashMap<String, String> = a
        .list_appointment_types(app.clients.request(
            &agent,
            apb::ListAppointmentTypesRequest { public_only: false },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .types
                .into_iter()
                .map(|t| (t.id, t.name))
                .collect()
        })
        .unwrap_or_default();
    let site = if q.site.trim().is_empty() {
        sites.first().map(|s| s.id.clone()).unwrap_or_default()
    } else {
        q.site.trim().to_owned()
    };
    let desks: Vec<(String, String)> = sites
        .iter()
        .find(|s| s.id == site)
        .map(|s| {
            s.desks
                .iter()
                .map(|d| (d.id.clone(), d.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let day = paris_day(&app, &q.jour);
    let start = from_paris(day.and_time(NaiveTime::MIN));
    let end = from_paris((day + Duration::days(1)).and_time(NaiveTime::MIN));
    let listed = a
        .list_bookings(app.clients.request(
            &agent,
            apb::ListBookingsRequest {
                filter: Some(apb::BookingFilter {
                    site_id: site.clone(),
                    desk_id: q.guichet.trim().to_owned(),
                    start_time: Some(timestamp(start)),
                    end_time: Some(timestamp(end)),
                    ..Default::default()
                }),
                page_size: 500,
                page_token: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner().bookings);
    let mut names: HashMap<String, String> = HashMap::new();
    let rows = match listed {
        Ok(mut bookings) => {
            bookings.sort_by_key(|b| {
                b.slot
                    .as_ref()
                    .and_then(|s| views::ts(&s.start_time))
                    .unwrap_or(start)
            });
            let mut d = app.clients.dossier.clone();
            let mut rows = Vec::new();
            for b in bookings {
                if !b.citizen_id.is_empty() && !names.contains_key(&b.citizen_id) {
                    let name = d
                        .get_citizen(app.clients.request(
                            &agent,
                            dpb::GetCitizenRequest {
                                id: b.citizen_id.clone(),
                            },
                        ))
                        .await
                        .map(|c| views::citizen_name(&c.into_inner()))
                        .unwrap_or_else(|_| "Citoyen".to_owned());
                    names.insert(b.citizen_id.clone(), name);
                }
                let slot = b.slot.clone().unwrap_or_default();
                let (status, tag) = status_word(b.status);
                use apb::BookingStatus as B;
                let st = B::try_from(b.status).unwrap_or(B::Unspecified);
                rows.push(BookingRow {
                    time: views::ts(&slot.start_time)
                        .map(|t| to_paris(t).format("%H:%M").to_string())
                        .unwrap_or_default(),
                    kind: types
                        .get(&slot.appointment_type)
                        .cloned()
                        .unwrap_or(slot.appointment_type.clone()),
                    desk: desks
                        .iter()
                        .find(|(id, _)| *id == slot.desk_id)
                        .map(|(_, n)| n.clone())
                        .unwrap_or(slot.desk_id.clone()),
                    citizen: names.get(&b.citizen_id).cloned().unwrap_or_default(),
                    expected: matches!(st, B::Booked | B::CheckedIn),
                    state: st,
                    cancellable: st == B::Booked,
                    status,
                    tag,
                    people: b.people,
                    dossier: b.dossier_id,
                    reference: b.reference,
                    id: b.id,
                });
            }
            Section::done(rows)
        }
        Err(e) => Section::from(Err(e), "Le service des rendez-vous"),
    };
    let counts = rows
        .ok
        .as_ref()
        .map(|r| {
            let expected = r.iter().filter(|b| b.expected).count();
            let seen = r
                .iter()
                .filter(|b| b.state == apb::BookingStatus::Seen)
                .count();
            let absent = r
                .iter()
                .filter(|b| b.state == apb::BookingStatus::NoShow)
                .count();
            format!("{} rendez-vous : {expected} attendu(s) ou arrivé(s), {seen} reçu(s), {absent} absent(s)", r.len())
        })
        .unwrap_or_default();
    let link = |d: NaiveDate| {
        serde_urlencoded::to_string([
            ("site", site.as_str()),
            ("jour", &d.format("%Y-%m-%d").to_string()),
            ("guichet", q.guichet.trim()),
        ])
        .unwrap_or_default()
    };
    let page = AgendaPage {
        layout: Layout::new(&app, &agent, "agenda", &headers),
        sites: sites
            .iter()
            .map(|s| (s.id.clone(), s.name.clone()))
            .collect(),
        desks,
        previous: link(day - Duration::days(1)),
        here: link(day),
        next: link(day + Duration::days(1)),
        day: day.format("%Y-%m-%d").to_string(),
        day_words: day_words(day),
        site,
        desk: q.guichet.trim().to_owned(),
        rows,
        counts,
    };
    respond(&app, &page)
}

#[derive(Deserialize)]
pub struct ActForm {
    csrf: String,
    /// Where to come back (the agenda's query).
    #[serde(default)]
    retour: String,
}

/// `recu`, `absent` or `annuler` on a booking.
pub async fn act(
    State(app): State<App>,
    agent: Agent,
    Path((id, step)): Path<(String, String)>,
    Form(f): Form<ActForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let back = if f.retour.starts_with("site=") || f.retour.is_empty() {
        format!("/agenda?{}", f.retour)
    } else {
        "/agenda".to_owned()
    };
    let mut a = app.clients.appointment.clone();
    let res = match step.as_str() {
        "recu" => a
            .mark_booking_seen(
                app.clients
                    .request(&agent, apb::MarkBookingSeenRequest { id }),
            )
            .await
            .map(|b| format!("Rendez-vous {} : reçu.", b.into_inner().reference)),
        "absent" => a
            .mark_no_show(app.clients.request(&agent, apb::MarkNoShowRequest { id }))
            .await
            .map(|b| format!("Rendez-vous {} : absent.", b.into_inner().reference)),
        "annuler" => a
            .cancel_booking(app.clients.request(
                &agent,
                apb::CancelBookingRequest {
                    id,
                    cancel_token: String::new(),
                    reason: "Annulé par la mairie".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|b| {
                format!(
                    "Rendez-vous {} annulé : le citoyen est prévenu.",
                    b.into_inner().reference
                )
            }),
        _ => {
            return web::error_page(
                StatusCode::NOT_FOUND,
                "Page introuvable",
                "Cette action n'existe pas.",
            );
        }
    };
    let message = match res {
        Ok(m) => m,
        Err(e) => web::explain(&e, "Le service des rendez-vous"),
    };
    web::redirect_with(&back, &message, app.config.secure_cookies)
}

#[derive(Deserialize, Default)]
pub struct PickQuery {
    #[serde(default)]
    r#type: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    personnes: String,
}

pub struct SlotChoice {
    pub value: String,
    pub label: String,
}

/// The free times of one day ("lundi 4 janvier 2027").
type SlotDays = Vec<(String, Vec<SlotChoice>)>;

#[derive(askama::Template)]
#[template(path = "agenda_book.html")]
struct BookPage {
    layout: Layout,
    dossier_id: String,
    dossier_reference: String,
    citizen: String,
    types: Vec<(String, String)>,
    sites: Vec<(String, String)>,
    chosen_type: String,
    chosen_site: String,
    people: u32,
    slots: Option<Section<SlotDays>>,
    request_id: String,
    error: Option<String>,
}

async fn book_page(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    dossier_id: &str,
    q: PickQuery,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let dossier = match super::lookup::dossier(app, agent, dossier_id).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let citizen =
        views::citizen_name(&super::lookup::citizen(app, agent, &dossier.citizen_id).await);
    let mut a = app.clients.appointment.clone();
    let types: Vec<(String, String)> = a
        .list_appointment_types(app.clients.request(
            agent,
            apb::ListAppointmentTypesRequest { public_only: false },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .types
                .into_iter()
                .map(|t| (t.id, t.name))
                .collect()
        })
        .unwrap_or_default();
    let sites: Vec<(String, String)> = a
        .list_sites(app.clients.request(agent, apb::ListSitesRequest {}))
        .await
        .map(|r| {
            r.into_inner()
                .sites
                .into_iter()
                .map(|s| (s.id, s.name))
                .collect()
        })
        .unwrap_or_default();
    let people = q.personnes.trim().parse::<u32>().unwrap_or(1).clamp(1, 10);
    let slots = if q.r#type.trim().is_empty() {
        None
    } else {
        let now = app.now();
        let res = a
            .search_availability(app.clients.request(
                agent,
                apb::SearchAvailabilityRequest {
                    appointment_type: q.r#type.trim().to_owned(),
                    site_ids: if q.site.trim().is_empty() {
                        Vec::new()
                    } else {
                        vec![q.site.trim().to_owned()]
                    },
                    people,
                    start_time: Some(timestamp(now)),
                    end_time: Some(timestamp(now + Duration::days(60))),
                    page_size: 60,
                    distinct_times: true,
                },
            ))
            .await
            .map(|r| {
                let mut days: SlotDays = Vec::new();
                for s in r.into_inner().slots {
                    let Some(t) = views::ts(&s.start_time) else {
                        continue;
                    };
                    let local = to_paris(t);
                    let day = day_words(local.date());
                    let site = sites
                        .iter()
                        .find(|(id, _)| *id == s.site_id)
                        .map(|(_, n)| n.clone())
                        .unwrap_or(s.site_id.clone());
                    let choice = SlotChoice {
                        value: format!("{}|{}", s.site_id, views::iso(t)),
                        label: format!("{} — {site}", local.format("%H:%M")),
                    };
                    match days.last_mut() {
                        Some((d, list)) if *d == day => list.push(choice),
                        _ => days.push((day, vec![choice])),
                    }
                }
                days
            });
        Some(Section::from(res, "Le service des rendez-vous"))
    };
    let page = BookPage {
        layout: Layout::new(app, agent, "agenda", headers),
        dossier_id: dossier.id,
        dossier_reference: dossier.reference,
        citizen,
        types,
        sites,
        chosen_type: q.r#type.trim().to_owned(),
        chosen_site: q.site.trim().to_owned(),
        people,
        slots,
        request_id: uuid::Uuid::now_v7().to_string(),
        error,
    };
    respond_with(app, &page, status)
}

pub async fn book_form(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PickQuery>,
) -> Response {
    book_page(&app, &agent, &headers, &id, q, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct BookForm {
    csrf: String,
    #[serde(default)]
    r#type: String,
    #[serde(default)]
    personnes: String,
    #[serde(default)]
    creneau: String,
    #[serde(default)]
    jeton: String,
}

/// Book the chosen slot for the dossier's citizen.
pub async fn book(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<BookForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let pick = PickQuery {
        r#type: f.r#type.clone(),
        site: String::new(),
        personnes: f.personnes.clone(),
    };
    let Some((site, start)) = f.creneau.split_once('|').and_then(|(s, t)| {
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| (s.to_owned(), t.with_timezone(&chrono::Utc)))
    }) else {
        return book_page(
            &app,
            &agent,
            &headers,
            &id,
            pick,
            Some("Choisissez un créneau.".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let dossier = match super::lookup::dossier(&app, &agent, &id).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let c = super::lookup::citizen(&app, &agent, &dossier.citizen_id).await;
    let contact = apb::Contact {
        phone: c.phones.first().cloned().unwrap_or_default(),
        email: c.emails.first().cloned().unwrap_or_default(),
    };
    let mut a = app.clients.appointment.clone();
    let res = a
        .book_appointment(app.clients.request(
            &agent,
            apb::BookAppointmentRequest {
                appointment_type: f.r#type.trim().to_owned(),
                site_id: site.clone(),
                desk_id: String::new(),
                start_time: Some(timestamp(start)),
                people: f.personnes.trim().parse::<u32>().unwrap_or(1).max(1),
                citizen_id: dossier.citizen_id.clone(),
                dossier_id: dossier.id.clone(),
                contact: Some(contact),
                application_ids: Vec::new(),
                request_id: format!("portal-{}", f.jeton.trim()),
            },
        ))
        .await;
    match res {
        Ok(b) => {
            let b = b.into_inner();
            let day = to_paris(start).date();
            web::redirect_with(
                &format!(
                    "/agenda?{}",
                    serde_urlencoded::to_string([
                        ("site", site.as_str()),
                        ("jour", &day.format("%Y-%m-%d").to_string()),
                    ])
                    .unwrap_or_default()
                ),
                &format!(
                    "Rendez-vous {} réservé le {} pour {}.",
                    b.reference,
                    views::when(start),
                    dossier.reference
                ),
                app.config.secure_cookies,
            )
        }
        Err(e) => {
            let message = match e.code() {
                tonic::Code::AlreadyExists
                | tonic::Code::Aborted
                | tonic::Code::FailedPrecondition => {
                    format!(
                        "Ce créneau n'est plus disponible ({}) : choisissez-en un autre.",
                        e.message()
                    )
                }
                _ => web::explain(&e, "Le service des rendez-vous"),
            };
            book_page(
                &app,
                &agent,
                &headers,
                &id,
                pick,
                Some(message),
                StatusCode::CONFLICT,
            )
            .await
        }
    }
}
