//! The pages and their routes.

mod agenda;
mod automatic;
mod calls;
mod citizens;
mod desk;
mod devices;
mod fiche;
mod hall;
mod indicators;
mod intake;
mod login;
mod lookup;
mod mail;
mod mailroom;
mod queue;
mod rules;
mod search;
mod signatures;
mod studio;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::web::{self, Agent, App};

/// What the layout of every page shows.
pub struct Layout {
    pub town: String,
    pub agent: String,
    pub csrf: String,
    /// The navigation entry of the page (`file`, `recherche`…).
    pub nav: &'static str,
    pub flash: Option<String>,
    /// Supervisors and admins see the indicators and the hall's devices.
    pub supervisor: bool,
    /// Admins map the PBX extensions.
    pub admin: bool,
    /// Process owners and admins see the process studio.
    pub studio: bool,
    /// Agents (and supervisors, admins) see the front desk's pages.
    pub desk: bool,
}

impl Layout {
    pub fn new(app: &App, agent: &Agent, nav: &'static str, headers: &http::HeaderMap) -> Layout {
        Layout {
            town: app.town.hall(),
            agent: agent.display_name.clone(),
            csrf: agent.csrf.clone(),
            nav,
            flash: web::flash(headers),
            supervisor: indicators::may_read(agent),
            admin: calls::may_map(agent),
            studio: studio::may_edit(agent),
            desk: agent.has(guichet_platform::auth::Role::Agent),
        }
    }
}

/// A part of a page that needs one role: what it shows, or why it cannot.
pub struct Section<T> {
    pub ok: Option<T>,
    pub error: Option<String>,
    /// The failed call's code, for the page's HTTP status.
    pub code: Option<tonic::Code>,
}

impl<T> Section<T> {
    pub fn from(res: Result<T, tonic::Status>, what: &str) -> Section<T> {
        match res {
            Ok(v) => Section::done(v),
            Err(e) => Section {
                ok: None,
                error: Some(web::explain(&e, what)),
                code: Some(e.code()),
            },
        }
    }

    pub fn failed(message: String) -> Section<T> {
        Section {
            ok: None,
            error: Some(message),
            code: None,
        }
    }

    pub fn done(value: T) -> Section<T> {
        Section {
            ok: Some(value),
            error: None,
            code: None,
        }
    }
}

/// A page response: clears the flash it showed.
pub fn respond<T: askama::Template>(app: &App, t: &T) -> Response {
    web::clear_flash(web::render(t), app.config.secure_cookies)
}

/// [`respond`] with the page's HTTP status (a refused form, a conflict).
pub fn respond_with<T: askama::Template>(app: &App, t: &T, status: StatusCode) -> Response {
    (status, respond(app, t)).into_response()
}

pub fn router(app: App, stop: CancellationToken) -> Router {
    let frame_ancestors = if app.config.frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        app.config.frame_ancestors.join(" ")
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/file") }))
        .route("/connexion", get(login::form).post(login::local))
        .route("/connexion/oidc", get(login::oidc_start))
        .route("/connexion/oidc/retour", get(login::oidc_back))
        .route("/deconnexion", post(login::logout))
        .route("/file", get(queue::page))
        .route("/file/lignes", get(queue::rows))
        .route("/file/offres", get(queue::offers))
        .route("/file/suivante", post(queue::take_next))
        .route("/presence", post(queue::presence))
        .route("/offres/{id}/accepter", post(queue::accept))
        .route("/offres/{id}/refuser", post(queue::reject))
        .route("/evenements", get(events))
        .route("/demande/{id}", get(fiche::work_item))
        .route("/demande/{id}/terminer", post(fiche::complete))
        .route("/demande/{id}/transferer", post(fiche::transfer))
        .route("/demande/{id}/rappel", post(fiche::callback))
        .route("/demande/{id}/candidat", post(citizens::resolve))
        .route("/dossier/{id}", get(fiche::dossier))
        .route("/dossier/{id}/etape", post(fiche::transition))
        .route("/dossier/{id}/note", post(fiche::note))
        .route(
            "/dossier/{id}/piece",
            post(fiche::document).layer(DefaultBodyLimit::max(20 * 1024 * 1024)),
        )
        .route("/document/{id}", get(fiche::download))
        .route("/citoyen/{id}", get(fiche::citizen))
        .route("/citoyen/{id}/dossier", post(fiche::open_dossier))
        .route("/recherche", get(search::form).post(search::search))
        .route("/citoyens/a-confirmer", get(citizens::page))
        .route("/nouvelle-demande", get(intake::form).post(intake::submit))
        .route("/indicateurs", get(indicators::page))
        .route("/indicateurs/direct", get(indicators::live))
        .route("/indicateurs/export.csv", get(indicators::export))
        .route("/indicateurs/{key}/elements", get(indicators::items))
        .route("/guichet", get(desk::page))
        .route("/guichet/reglages", post(desk::save))
        .route("/guichet/appeler", post(desk::call_next))
        .route("/guichet/attente", get(desk::waiting_fragment))
        .route("/guichet/evenements", get(desk::events))
        .route("/guichet/ticket/{id}/{step}", post(desk::act))
        .route("/agenda", get(agenda::page))
        .route("/agenda/{id}/{step}", post(agenda::act))
        .route(
            "/dossier/{id}/rendez-vous",
            get(agenda::book_form).post(agenda::book),
        )
        .route(
            "/dossier/{id}/signatures",
            get(signatures::page).post(signatures::create),
        )
        .route("/dossier/{id}/signatures/liste", get(signatures::list))
        .route("/signatures/evenements", get(signatures::events))
        .route("/signature/{id}", get(signatures::evidence))
        .route("/signature/{id}/{step}", post(signatures::act))
        .route(
            "/dossier/{id}/courriels",
            get(mail::page).post(mail::answer),
        )
        .route("/modeles", get(mail::modules).post(mail::save_module))
        .route("/courrier", get(mailroom::page))
        .route("/courrier-automatique", get(automatic::page))
        .route(
            "/courrier/envoyer",
            post(mailroom::upload).layer(DefaultBodyLimit::max(mailroom::MAX_UPLOAD_BYTES)),
        )
        .route("/courrier/{id}/liberer", post(mailroom::release))
        .route("/appels", get(calls::journal))
        .route("/appel/{id}", get(calls::pop))
        .route("/appels/evenements", get(calls::events))
        .route(
            "/telephonie/postes",
            get(calls::extensions).post(calls::set_extension),
        )
        .route("/telephonie/postes/retirer", post(calls::delete_extension))
        .route("/studio/regles", get(rules::page))
        .route("/studio/regles/essayer", post(rules::try_rules))
        .route("/studio/regles/publier", post(rules::publish))
        .route("/appareils", get(devices::page).post(devices::enrol))
        .route("/appareils/{id}/retirer", post(devices::revoke))
        .route("/borne", get(hall::kiosk))
        .route("/borne/ticket", post(hall::take_ticket))
        .route("/borne/rendez-vous", post(hall::check_in))
        .route("/ecran", get(hall::board))
        .route("/ecran/appels", get(hall::board_calls))
        .route("/ecran/evenements", get(hall::board_events))
        .route("/studio", get(studio::catalog))
        .route("/studio/export", get(studio::export))
        .route("/studio/import", post(studio::import))
        .route("/studio/messages", get(studio::messages))
        .route(
            "/studio/messages/{id}",
            get(studio::message).post(studio::save_message),
        )
        .route(
            "/studio/messages/{id}/retablir",
            post(studio::reset_message),
        )
        .route("/studio/procedure/{id}", get(studio::process))
        .route(
            "/studio/procedure/{id}/brouillon",
            get(studio::draft).post(studio::create_draft),
        )
        .route(
            "/studio/procedure/{id}/brouillon/modifier",
            post(studio::edit),
        )
        .route(
            "/studio/procedure/{id}/brouillon/texte",
            post(studio::save_text),
        )
        .route(
            "/studio/procedure/{id}/brouillon/supprimer",
            post(studio::delete_draft),
        )
        .route("/studio/procedure/{id}/publier", post(studio::publish))
        .route("/studio/procedure/{id}/essai", get(studio::dry_run))
        .route(
            "/studio/procedure/{id}/migration",
            get(studio::migration).post(studio::migrate),
        )
        .route("/static/{file}", get(asset))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(frame_ancestors),
            web::security_headers,
        ))
        .layer(axum::Extension(stop))
        .with_state(app)
}

async fn not_found() -> Response {
    web::error_page(
        StatusCode::NOT_FOUND,
        "Page introuvable",
        "Cette page n'existe pas. Vérifiez l'adresse ou revenez à la file unique.",
    )
}

/// The live changes of the queue for an open page.
async fn events(
    State(app): State<App>,
    _agent: Agent,
    axum::Extension(stop): axum::Extension<CancellationToken>,
) -> Response {
    app.live.stream(stop, "queue").into_response()
}

/// The vendored scripts and the style sheet, compiled in.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (body, ty): (&'static [u8], &str) = match file.as_str() {
        "guichet.css" => (
            include_bytes!("../../static/guichet.css"),
            "text/css; charset=utf-8",
        ),
        "portal.js" => (
            include_bytes!("../../static/portal.js"),
            "text/javascript; charset=utf-8",
        ),
        "public.js" => (
            include_bytes!("../../static/public.js"),
            "text/javascript; charset=utf-8",
        ),
        "htmx-2.0.11.min.js" => (
            include_bytes!("../../static/htmx-2.0.11.min.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return not_found().await,
    };
    ([(header::CONTENT_TYPE, ty)], body).into_response()
}
