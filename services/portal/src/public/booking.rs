//! Prendre rendez-vous: the procedure, the number of people and the site
//! (step 1), the next free slots then the week's calendar (step 2), the
//! citizen's details and the ANTS pre-application numbers (step 3), then
//! the booking. Steps 1 to 3 are GET pages whose query holds no personal
//! data; the details are posted. When nothing is free, the waiting list.
//!
//! The booking is the appointment role's (`BookAppointment`, idempotent on
//! the form's one-time id, race-safe on its slot claims): a citizen who
//! loses the race for a slot is told so plainly and shown the others. The
//! SMS and the email with the calendar file are the role's notifications.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use guichet_platform::contact::{Email, Phone, clean_name};
use guichet_proto::appointment::v1 as apb;
use guichet_proto::convert::{datetime, timestamp};
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1 as ipb;
use serde::Deserialize;
use tonic::Code;

use super::guard::{Purpose, Refusal};
use super::{Catalog, Layout, Public, Visitor, error, refused, respond, unavailable, when};

/// A field's error, shown beside it and in the summary.
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// The citizen's choice of steps 1 and 2 (in the query).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub demarche: String,
    #[serde(default)]
    pub personnes: String,
    #[serde(default)]
    pub lieu: String,
    /// Step 2: the week shown (its Monday, `YYYY-MM-DD`).
    #[serde(default)]
    pub semaine: String,
    /// Step 3: the slot chosen, `<site>|<unix seconds>`.
    #[serde(default)]
    pub creneau: String,
}

/// A checked choice.
pub struct Checked {
    pub kind: apb::AppointmentType,
    pub people: u32,
    /// Empty: every site.
    pub site: String,
}

impl Choice {
    /// The choice checked against the catalog, or the errors of step 1.
    pub fn check(&self, cat: &Catalog) -> Result<Checked, Vec<FieldError>> {
        let mut errors = Vec::new();
        let kind = cat.kind(&self.demarche);
        if kind.is_none() {
            errors.push(err("demarche", "Choisissez votre démarche."));
        }
        let people: u32 = self.personnes.trim().parse().unwrap_or(0);
        let max = kind.map(|k| k.max_people.max(1)).unwrap_or(1);
        if people == 0 || people > max {
            errors.push(err(
                "personnes",
                &format!("Indiquez un nombre de personnes entre 1 et {max}."),
            ));
        }
        if !self.lieu.is_empty() && cat.site(&self.lieu).is_none() {
            errors.push(err("lieu", "Choisissez un lieu de la liste."));
        }
        match kind {
            Some(k) if errors.is_empty() => Ok(Checked {
                kind: k.clone(),
                people,
                site: self.lieu.clone(),
            }),
            _ => Err(errors),
        }
    }

    /// The query of the steps after this one.
    pub fn query(&self) -> String {
        serde_urlencoded::to_string([
            ("demarche", self.demarche.as_str()),
            ("personnes", self.personnes.as_str()),
            ("lieu", self.lieu.as_str()),
        ])
        .unwrap_or_default()
    }
}

/// A slot offered: the radio's value and its French label.
pub struct SlotView {
    pub value: String,
    pub label: String,
    /// Short label inside a day's group: "09h30".
    pub hour: String,
    pub site: String,
}

/// One day of the week's calendar.
pub struct DayView {
    pub label: String,
    pub slots: Vec<SlotView>,
}

pub fn slot_value(site: &str, start: DateTime<Utc>) -> String {
    format!("{site}|{}", start.timestamp())
}

pub fn parse_slot(raw: &str) -> Option<(String, DateTime<Utc>)> {
    let (site, t) = raw.split_once('|')?;
    let t = DateTime::from_timestamp(t.parse().ok()?, 0)?;
    (!site.is_empty() && site.len() <= 100).then(|| (site.to_owned(), t))
}

fn slot_view(cat: &Catalog, s: &apb::Slot, sites: bool) -> Option<SlotView> {
    let start = datetime(s.start_time.as_ref()?)?;
    let site = if sites {
        cat.site_name(&s.site_id)
    } else {
        String::new()
    };
    Some(SlotView {
        value: slot_value(&s.site_id, start),
        label: if site.is_empty() {
            when(start)
        } else {
            format!("{} — {site}", when(start))
        },
        hour: guichet_platform::french::hour(start),
        site,
    })
}

/// Monday 00:00 (Paris) of the week holding `t`, as a date.
fn monday_of(t: DateTime<Utc>) -> NaiveDate {
    let local = guichet_platform::calendar::to_paris(t).date();
    local - Duration::days(i64::from(local.weekday().num_days_from_monday()))
}

/// The UTC instant of Paris midnight at the start of `d`.
fn paris_midnight(d: NaiveDate) -> DateTime<Utc> {
    guichet_platform::calendar::from_paris(d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// Free slots of `checked` in [from, to).
pub async fn search(
    p: &Public,
    checked: &Checked,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i32,
) -> Result<Vec<apb::Slot>, tonic::Status> {
    let mut c = p.app.clients.appointment.clone();
    Ok(
        c.search_availability(p.app.clients.public(apb::SearchAvailabilityRequest {
            appointment_type: checked.kind.id.clone(),
            site_ids: if checked.site.is_empty() {
                vec![]
            } else {
                vec![checked.site.clone()]
            },
            people: checked.people,
            start_time: Some(timestamp(from)),
            end_time: Some(timestamp(to)),
            page_size: limit,
            distinct_times: true,
        }))
        .await?
        .into_inner()
        .slots,
    )
}

/// The next free slots and the week's calendar of a choice.
pub struct Calendar {
    pub next: Vec<SlotView>,
    pub days: Vec<DayView>,
    pub week_label: String,
    pub previous_week: Option<String>,
    pub next_week: Option<String>,
}

pub async fn calendar(
    p: &Public,
    cat: &Catalog,
    checked: &Checked,
    week: &str,
) -> Result<Calendar, tonic::Status> {
    let now = p.now();
    let horizon = now + Duration::days(i64::from(checked.kind.max_delay_days.clamp(1, 365)));
    let many_sites = checked.site.is_empty() && cat.sites.len() > 1;
    let next_raw = search(p, checked, now, horizon, p.guard_next_slots() as i32).await?;
    let first_week = monday_of(now);
    let week = NaiveDate::parse_from_str(week, "%Y-%m-%d")
        .ok()
        .map(|d| d - Duration::days(i64::from(d.weekday().num_days_from_monday())))
        .filter(|d| *d >= first_week && paris_midnight(*d) < horizon)
        .or_else(|| {
            next_raw
                .first()
                .and_then(|s| s.start_time.as_ref())
                .and_then(datetime)
                .map(monday_of)
        })
        .unwrap_or(first_week);
    let from = paris_midnight(week);
    let to = paris_midnight(week + Duration::days(7));
    let week_raw = if next_raw.is_empty() {
        vec![]
    } else {
        search(p, checked, from, to, 500).await?
    };
    let mut days: Vec<DayView> = Vec::new();
    for s in &week_raw {
        let Some(start) = s.start_time.as_ref().and_then(datetime) else {
            continue;
        };
        let label = guichet_platform::french::day_date(start);
        let Some(v) = slot_view(cat, s, many_sites) else {
            continue;
        };
        match days.last_mut() {
            Some(d) if d.label == label => d.slots.push(v),
            _ => days.push(DayView {
                label,
                slots: vec![v],
            }),
        }
    }
    let previous = week - Duration::days(7);
    let following = week + Duration::days(7);
    Ok(Calendar {
        next: next_raw
            .iter()
            .filter_map(|s| slot_view(cat, s, many_sites))
            .collect(),
        days,
        week_label: format!(
            "Semaine du {}",
            guichet_platform::french::day_date(paris_midnight(week))
        ),
        previous_week: (previous >= first_week).then(|| previous.format("%Y-%m-%d").to_string()),
        next_week: (paris_midnight(following) < horizon)
            .then(|| following.format("%Y-%m-%d").to_string()),
    })
}

impl Public {
    fn guard_next_slots(&self) -> u32 {
        self.app.config.public.next_slots
    }
}

// ---------------------------------------------------------------------------
// Step 1: the procedure, the people, the site.

#[derive(askama::Template)]
#[template(path = "public/booking_start.html")]
struct StartPage {
    layout: Layout,
    choice: Choice,
    kinds: Vec<apb::AppointmentType>,
    sites: Vec<apb::Site>,
    max_people: u32,
    errors: Vec<FieldError>,
}

impl StartPage {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
}

fn start_page(
    p: &Public,
    cat: Catalog,
    choice: Choice,
    errors: Vec<FieldError>,
    headers: &HeaderMap,
) -> Response {
    let max_people = cat.kinds.iter().map(|k| k.max_people).max().unwrap_or(1);
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = StartPage {
        layout: Layout::new(p, "rendez-vous", headers),
        choice,
        kinds: cat.kinds,
        sites: cat.sites,
        max_people: max_people.max(1),
        errors,
    };
    (status, respond(p, &page)).into_response()
}

pub async fn start(
    State(p): State<Public>,
    headers: HeaderMap,
    Query(mut choice): Query<Choice>,
) -> Response {
    let cat = match Catalog::load(&p).await {
        Ok(c) => c,
        Err(e) => return unavailable(&p, &e),
    };
    if choice.personnes.is_empty() {
        choice.personnes = "1".into();
    }
    start_page(&p, cat, choice, vec![], &headers)
}

// ---------------------------------------------------------------------------
// Step 2: the free slots.

#[derive(askama::Template)]
#[template(path = "public/booking_slots.html")]
struct SlotsPage {
    layout: Layout,
    kind: String,
    people: u32,
    site: String,
    query: String,
    choice: Choice,
    cal: Calendar,
    /// Why the citizen is back here (a slot just taken).
    alert: Option<String>,
    /// The waiting list form, when nothing is free.
    waitlist_token: String,
    demande: String,
}

/// The slots page of a choice, with an alert when the citizen comes back
/// to it.
async fn slots_page(
    p: &Public,
    visitor: &Visitor,
    choice: Choice,
    alert: Option<String>,
    status: StatusCode,
    headers: &HeaderMap,
) -> Response {
    let cat = match Catalog::load(p).await {
        Ok(c) => c,
        Err(e) => return unavailable(p, &e),
    };
    let checked = match choice.check(&cat) {
        Ok(c) => c,
        Err(errors) => return start_page(p, cat, choice, errors, headers),
    };
    let cal = match calendar(p, &cat, &checked, &choice.semaine).await {
        Ok(c) => c,
        Err(e) => return unavailable(p, &e),
    };
    let page = SlotsPage {
        layout: Layout::new(p, "rendez-vous", headers),
        kind: checked.kind.name.clone(),
        people: checked.people,
        site: if checked.site.is_empty() {
            "tous les lieux".into()
        } else {
            cat.site_name(&checked.site)
        },
        query: choice.query(),
        choice,
        cal,
        alert,
        waitlist_token: p
            .guard
            .form_token(&visitor.id, Purpose::WaitingList, p.now()),
        demande: uuid::Uuid::now_v7().to_string(),
    };
    (status, respond(p, &page)).into_response()
}

pub async fn slots(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    Query(choice): Query<Choice>,
) -> Response {
    slots_page(&p, &visitor, choice, None, StatusCode::OK, &headers).await
}

/// A slot offered from outside (the waiting list's message, the national
/// ANTS search's callback): `/rendez-vous/nouveau?type=&site=&debut=&personnes=`
/// leads to the details of that slot, or to the slots when it is malformed.
#[derive(Debug, Default, Deserialize)]
pub struct Offered {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    debut: String,
    #[serde(default)]
    personnes: String,
}

pub async fn offered(Query(o): Query<Offered>) -> Response {
    let people = o.personnes.parse::<u32>().unwrap_or(1).max(1).to_string();
    let choice = Choice {
        demarche: o.kind,
        personnes: people,
        lieu: o.site.clone(),
        ..Default::default()
    };
    let start = DateTime::parse_from_rfc3339(o.debut.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc));
    let to = match start {
        Some(t) => format!(
            "/rendez-vous/coordonnees?{}&{}",
            choice.query(),
            serde_urlencoded::to_string([("creneau", slot_value(&o.site, t))]).unwrap_or_default()
        ),
        None => format!("/rendez-vous/creneaux?{}", choice.query()),
    };
    axum::response::Redirect::to(&to).into_response()
}

// ---------------------------------------------------------------------------
// Step 3: the citizen's details, then the booking.

/// The values of the details form.
#[derive(Debug, Default, Clone)]
pub struct Details {
    pub prenom: String,
    pub nom: String,
    pub telephone: String,
    pub courriel: String,
    /// One pre-application number per person (ANTS types).
    pub ants: Vec<String>,
    pub jeton: String,
    pub demande: String,
}

#[derive(askama::Template)]
#[template(path = "public/booking_details.html")]
struct DetailsPage {
    layout: Layout,
    kind: String,
    ants: bool,
    people: u32,
    when: String,
    site: String,
    address: String,
    choice: Choice,
    query: String,
    v: Details,
    errors: Vec<FieldError>,
    /// A refusal of the appointment role, in French (a number already
    /// booked, the no-show policy…).
    alert: Option<String>,
}

impl DetailsPage {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }

    fn ants_value(&self, i: &usize) -> &str {
        self.v.ants.get(*i).map(String::as_str).unwrap_or_default()
    }

    fn ants_field(&self, i: &usize) -> String {
        format!("ants{}", i + 1)
    }
}

struct DetailsContext {
    cat: Catalog,
    checked: Checked,
    site: String,
    start: DateTime<Utc>,
}

/// The catalog, the checked choice and the slot of a details page.
async fn details_context(p: &Public, choice: &Choice) -> Result<DetailsContext, Response> {
    let cat = Catalog::load(p).await.map_err(|e| unavailable(p, &e))?;
    let checked = choice.check(&cat).map_err(|_| {
        error(
            p,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choix incomplet",
            "La démarche, le nombre de personnes ou le lieu manque. Recommencez depuis « Prendre rendez-vous ».",
        )
    })?;
    let (site, start) = parse_slot(&choice.creneau)
        .filter(|(s, _)| cat.site(s).is_some() && (checked.site.is_empty() || *s == checked.site))
        .ok_or_else(|| {
            error(
                p,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Créneau à choisir",
                "Choisissez d'abord un créneau dans la liste des créneaux libres.",
            )
        })?;
    Ok(DetailsContext {
        cat,
        checked,
        site,
        start,
    })
}

fn details_page(
    p: &Public,
    ctx: &DetailsContext,
    choice: Choice,
    v: Details,
    errors: Vec<FieldError>,
    alert: Option<String>,
    headers: &HeaderMap,
) -> DetailsPage {
    DetailsPage {
        layout: Layout::new(p, "rendez-vous", headers),
        kind: ctx.checked.kind.name.clone(),
        ants: !ctx.checked.kind.ants_reason.is_empty(),
        people: ctx.checked.people,
        when: when(ctx.start),
        site: ctx.cat.site_name(&ctx.site),
        address: ctx.cat.site_address(&ctx.site),
        query: choice.query(),
        choice,
        v,
        errors,
        alert,
    }
}

pub async fn details(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    Query(choice): Query<Choice>,
) -> Response {
    let ctx = match details_context(&p, &choice).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let v = Details {
        ants: vec![String::new(); ctx.checked.people as usize],
        jeton: p.guard.form_token(&visitor.id, Purpose::Book, p.now()),
        demande: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    };
    let page = details_page(&p, &ctx, choice, v, vec![], None, &headers);
    respond(&p, &page)
}

/// The posted details form: the choice and the details.
fn read_form(fields: Vec<(String, String)>) -> (Choice, Details) {
    let mut c = Choice::default();
    let mut d = Details::default();
    let mut ants: Vec<(usize, String)> = Vec::new();
    for (k, v) in fields {
        match k.as_str() {
            "demarche" => c.demarche = v,
            "personnes" => c.personnes = v,
            "lieu" => c.lieu = v,
            "creneau" => c.creneau = v,
            "prenom" => d.prenom = v,
            "nom" => d.nom = v,
            "telephone" => d.telephone = v,
            "courriel" => d.courriel = v,
            "jeton" => d.jeton = v,
            "demande" => d.demande = v,
            other => {
                if let Some(i) = other
                    .strip_prefix("ants")
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|i| (1..=20).contains(i))
                {
                    ants.push((i - 1, v));
                }
            }
        }
    }
    let n = ants.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
    d.ants = vec![String::new(); n];
    for (i, v) in ants {
        d.ants[i] = v;
    }
    (c, d)
}

/// The details' errors; the numbers upper-cased and trimmed.
fn check_details(d: &mut Details, ants: bool, people: u32) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if d.prenom.trim().is_empty() {
        errors.push(err("prenom", "Indiquez votre prénom."));
    } else if clean_name(&d.prenom).is_err() {
        errors.push(err(
            "prenom",
            "Ce prénom contient des caractères non admis.",
        ));
    }
    if d.nom.trim().is_empty() {
        errors.push(err("nom", "Indiquez votre nom."));
    } else if clean_name(&d.nom).is_err() {
        errors.push(err("nom", "Ce nom contient des caractères non admis."));
    }
    let phone = d.telephone.trim();
    let email = d.courriel.trim();
    if phone.is_empty() && email.is_empty() {
        errors.push(err(
            "telephone",
            "Indiquez un numéro de téléphone portable ou une adresse de courriel, pour recevoir la confirmation.",
        ));
    }
    if !phone.is_empty() && Phone::parse(phone).is_err() {
        errors.push(err(
            "telephone",
            "Numéro de téléphone invalide (exemple : 06 12 34 56 78).",
        ));
    }
    if !email.is_empty() && Email::parse(email).is_err() {
        errors.push(err(
            "courriel",
            "Adresse de courriel invalide (exemple : nom@exemple.fr).",
        ));
    }
    d.ants
        .resize(if ants { people as usize } else { 0 }, String::new());
    let mut seen = Vec::new();
    for (i, raw) in d.ants.iter_mut().enumerate() {
        let field = format!("ants{}", i + 1);
        let clean: String = raw
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect::<String>()
            .to_ascii_uppercase();
        *raw = clean.clone();
        if clean.is_empty() {
            errors.push(err(
                &field,
                &format!(
                    "Indiquez le numéro de pré-demande de la personne {} (reçu après la pré-demande en ligne sur ants.gouv.fr).",
                    i + 1
                ),
            ));
        } else if clean.len() != 10 || !clean.chars().all(|c| c.is_ascii_alphanumeric()) {
            errors.push(err(
                &field,
                "Un numéro de pré-demande compte 10 lettres ou chiffres (exemple : 1234567AB8).",
            ));
        } else if seen.contains(&clean) {
            errors.push(err(
                &field,
                "Ce numéro est déjà indiqué pour une autre personne : chaque personne a le sien.",
            ));
        } else {
            seen.push(clean);
        }
    }
    errors
}

pub async fn book(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let now = p.now();
    let (choice, mut d) = read_form(fields);
    // A forged or stale form is refused before anything is read.
    let too_fast = match p
        .guard
        .check_form(Some(&visitor.id), &d.jeton, Purpose::Book, now)
    {
        Ok(()) => false,
        Err(Refusal::TooFast) => true,
        Err(why) => {
            metrics::counter!("guichet_portal_public_refused_total", "why" => "form").increment(1);
            return refused(&p, why);
        }
    };
    let ctx = match details_context(&p, &choice).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if uuid::Uuid::parse_str(&d.demande).is_err() {
        d.demande = uuid::Uuid::now_v7().to_string();
    }
    let again = |p: &Public, mut d: Details, errors, alert, status: StatusCode| {
        d.jeton = p.guard.form_token(&visitor.id, Purpose::Book, p.now());
        let page = details_page(p, &ctx, choice.clone(), d, errors, alert, &headers);
        (status, respond(p, &page)).into_response()
    };
    if too_fast {
        metrics::counter!("guichet_portal_public_refused_total", "why" => "too_fast").increment(1);
        return again(
            &p,
            d,
            vec![],
            Some("Prenez le temps de vérifier vos informations, puis envoyez à nouveau le formulaire.".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    if let Err(why) = p.guard.attempt(&visitor.id, now) {
        metrics::counter!("guichet_portal_public_refused_total", "why" => "session").increment(1);
        return refused(&p, why);
    }
    let ants = !ctx.checked.kind.ants_reason.is_empty();
    let errors = check_details(&mut d, ants, ctx.checked.people);
    if !errors.is_empty() {
        return again(&p, d, errors, None, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // The citizen, as the dossier role knows or creates them (the answer
    // never says which).
    let mut dossier = p.app.clients.dossier.clone();
    let phone = d.telephone.trim().to_owned();
    let email = d.courriel.trim().to_owned();
    let citizen = dossier
        .resolve_citizen(
            p.app.clients.public(dpb::ResolveCitizenRequest {
                hint: Some(ipb::CitizenHint {
                    given_name: d.prenom.trim().to_owned(),
                    family_name: d.nom.trim().to_owned(),
                    phones: Some(phone.clone())
                        .filter(|s| !s.is_empty())
                        .into_iter()
                        .collect(),
                    emails: Some(email.clone())
                        .filter(|s| !s.is_empty())
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                request_id: format!("portal-booking-{}", d.demande),
                candidates_only: false,
            }),
        )
        .await;
    let citizen_id = match citizen {
        Ok(r) => r.into_inner().citizen.map(|c| c.id).unwrap_or_default(),
        Err(e) => return unavailable(&p, &e),
    };
    let mut appointment = p.app.clients.appointment.clone();
    let res = appointment
        .book_appointment(p.app.clients.public(apb::BookAppointmentRequest {
            appointment_type: ctx.checked.kind.id.clone(),
            site_id: ctx.site.clone(),
            desk_id: String::new(),
            start_time: Some(timestamp(ctx.start)),
            people: ctx.checked.people,
            citizen_id,
            dossier_id: String::new(),
            contact: Some(apb::Contact {
                phone: phone.clone(),
                email: email.clone(),
            }),
            application_ids: d.ants.clone(),
            request_id: format!("portal-{}", d.demande),
        }))
        .await;
    match res {
        Ok(b) => {
            let b = b.into_inner();
            p.guard.booked(&visitor.id);
            metrics::counter!("guichet_portal_public_bookings_total").increment(1);
            tracing::info!(booking_id = %b.id, "citizen booked online");
            let told = match (phone.is_empty(), email.is_empty()) {
                (false, false) => {
                    "Un SMS et un courriel (avec le fichier d'agenda) vous confirment ce rendez-vous."
                }
                (false, true) => "Un SMS vous confirme ce rendez-vous.",
                _ => "Un courriel (avec le fichier d'agenda) vous confirme ce rendez-vous.",
            };
            web_redirect(
                &p,
                &super::manage::link(&b.id, &b.cancel_token),
                &format!(
                    "Votre rendez-vous est confirmé. {told} Gardez le lien de cette page : il permet de le déplacer ou de l'annuler."
                ),
            )
        }
        Err(e) if e.code() == Code::Aborted => {
            metrics::counter!("guichet_portal_public_slot_taken_total").increment(1);
            let mut back = choice.clone();
            back.creneau.clear();
            slots_page(
                &p,
                &visitor,
                back,
                Some(format!(
                    "Le créneau du {} vient d'être réservé par quelqu'un d'autre. Choisissez-en un autre ci-dessous ; vos informations ne sont pas perdues si vous revenez en arrière.",
                    when(ctx.start)
                )),
                StatusCode::CONFLICT,
                &headers,
            )
            .await
        }
        Err(e) if e.code() == Code::FailedPrecondition => again(
            &p,
            d,
            vec![],
            Some(e.message().to_owned()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(e) if e.code() == Code::InvalidArgument => {
            tracing::info!(error = %e.message(), "public booking refused as invalid");
            again(
                &p,
                d,
                vec![],
                Some(
                    "Ce créneau ne peut pas être réservé en ligne. Choisissez-en un autre.".into(),
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(e) => unavailable(&p, &e),
    }
}

fn web_redirect(p: &Public, to: &str, message: &str) -> Response {
    crate::web::redirect_with(to, message, p.app.config.secure_cookies)
}

// ---------------------------------------------------------------------------
// The waiting list, when nothing is free.

#[derive(Debug, Default, Deserialize)]
pub struct WaitForm {
    #[serde(default)]
    demarche: String,
    #[serde(default)]
    personnes: String,
    #[serde(default)]
    lieu: String,
    #[serde(default)]
    telephone: String,
    #[serde(default)]
    courriel: String,
    #[serde(default)]
    jeton: String,
    #[serde(default)]
    demande: String,
}

#[derive(askama::Template)]
#[template(path = "public/waitlist_done.html")]
struct WaitDone {
    layout: Layout,
    kind: String,
}

pub async fn join_waiting_list(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    Form(f): Form<WaitForm>,
) -> Response {
    let now = p.now();
    // Joining the list takes a slot from no one: only a forged or stale
    // form is refused, not a quick one.
    match p
        .guard
        .check_form(Some(&visitor.id), &f.jeton, Purpose::WaitingList, now)
    {
        Ok(()) | Err(Refusal::TooFast) => {}
        Err(why) => return refused(&p, why),
    }
    let choice = Choice {
        demarche: f.demarche.clone(),
        personnes: f.personnes.clone(),
        lieu: f.lieu.clone(),
        ..Default::default()
    };
    let cat = match Catalog::load(&p).await {
        Ok(c) => c,
        Err(e) => return unavailable(&p, &e),
    };
    let Ok(checked) = choice.check(&cat) else {
        return slots_page(&p, &visitor, choice, None, StatusCode::OK, &headers).await;
    };
    let phone = f.telephone.trim();
    let email = f.courriel.trim();
    let bad = (phone.is_empty() && email.is_empty())
        || (!phone.is_empty() && Phone::parse(phone).is_err())
        || (!email.is_empty() && Email::parse(email).is_err());
    if bad {
        return slots_page(
            &p,
            &visitor,
            choice,
            Some("Pour être prévenu(e), indiquez un numéro de téléphone portable (exemple : 06 12 34 56 78) ou une adresse de courriel valide.".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
            &headers,
        )
        .await;
    }
    let demande = if uuid::Uuid::parse_str(&f.demande).is_ok() {
        f.demande.clone()
    } else {
        uuid::Uuid::now_v7().to_string()
    };
    let mut c = p.app.clients.appointment.clone();
    let res = c
        .join_waiting_list(p.app.clients.public(apb::JoinWaitingListRequest {
            appointment_type: checked.kind.id.clone(),
            site_ids: if checked.site.is_empty() {
                vec![]
            } else {
                vec![checked.site.clone()]
            },
            people: checked.people,
            citizen_id: String::new(),
            contact: Some(apb::Contact {
                phone: phone.to_owned(),
                email: email.to_owned(),
            }),
            before_time: Some(timestamp(
                now + Duration::days(i64::from(checked.kind.max_delay_days.clamp(1, 365))),
            )),
            request_id: format!("portal-waitlist-{demande}"),
        }))
        .await;
    match res {
        Ok(_) => {
            metrics::counter!("guichet_portal_public_waitlist_total").increment(1);
            respond(
                &p,
                &WaitDone {
                    layout: Layout::new(&p, "rendez-vous", &headers),
                    kind: checked.kind.name.clone(),
                },
            )
        }
        Err(e) => unavailable(&p, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_numbers_of_each_person_are_checked_and_cleaned() {
        let mut d = Details {
            prenom: "Jeanne".into(),
            nom: "Martin".into(),
            telephone: "06 12 34 56 78".into(),
            ants: vec!["12345-67ab8 ".into(), "1234567AB8".into()],
            ..Default::default()
        };
        let errors = check_details(&mut d, true, 2);
        assert_eq!(d.ants[0], "1234567AB8");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "ants2");
        let mut d = Details {
            prenom: "Jeanne".into(),
            nom: "Martin".into(),
            ants: vec!["123".into()],
            ..Default::default()
        };
        let fields: Vec<String> = check_details(&mut d, true, 1)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["telephone", "ants1"]);
    }

    #[test]
    fn a_slot_value_reads_back() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let v = slot_value("mairie", t);
        assert_eq!(parse_slot(&v), Some(("mairie".into(), t)));
        assert_eq!(parse_slot("mairie"), None);
        assert_eq!(parse_slot("|12"), None);
    }

    #[test]
    fn weeks_start_on_a_paris_monday() {
        // Sunday 2026-12-06 23:30 UTC is Monday 00:30 in Paris.
        let t = Utc.with_ymd_and_hms(2026, 12, 6, 23, 30, 0).unwrap();
        assert_eq!(monday_of(t), NaiveDate::from_ymd_opt(2026, 12, 7).unwrap());
        assert_eq!(
            paris_midnight(NaiveDate::from_ymd_opt(2026, 12, 7).unwrap()),
            Utc.with_ymd_and_hms(2026, 12, 6, 23, 0, 0).unwrap()
        );
    }
}
