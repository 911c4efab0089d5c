//! The citizens' pages, on a listener of their own (`portal.public`):
//! book a passport or identity-card appointment, manage it from the link
//! received, join the waiting list. French, phone-first, usable without
//! JavaScript, to the same design as the agents' pages.
//!
//! No agent session exists here: the portal calls the roles with its own
//! `citizen_pages` identity, which the roles hold to the public rules (public
//! types, booking delays, no-show policy, link secrets). Every page goes
//! through [`guard`]: per-address limits, a signed visitor session, and
//! form tokens bound to it (CSRF, and forms sent back faster than a person
//! types). Nothing personal goes into a URL beyond a link's own secret, nor
//! into a log; the pages that carry a secret are `no-store` and
//! `Referrer-Policy: no-referrer`.

mod booking;
mod follow;
pub mod guard;
mod manage;
mod ticket;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use guichet_proto::appointment::v1 as apb;

use crate::web::{self, App};
use guard::{Guard, Refusal, VISITOR_COOKIE};

/// The state of the citizens' pages.
#[derive(Clone)]
pub struct Public {
    pub app: App,
    pub guard: Guard,
    /// The appointment types and sites, read again every minute at most
    /// (town data: they change with a restart of the appointment role).
    pub catalog: Arc<tokio::sync::Mutex<Option<(std::time::Instant, Catalog)>>>,
}

impl Public {
    pub fn new(app: App) -> Public {
        Public {
            guard: Guard::new(&app.config.public),
            app,
            catalog: Arc::default(),
        }
    }
}

impl Public {
    pub fn now(&self) -> DateTime<Utc> {
        self.app.now()
    }

    fn secure(&self) -> bool {
        self.app.config.secure_cookies
    }
}

/// The visitor of a request: their session id (signed cookie) and
/// address, set by [`gate`] before any handler runs.
#[derive(Clone, Debug)]
pub struct Visitor {
    pub id: String,
}

/// What the layout of every public page shows.
pub struct Layout {
    pub town: String,
    pub logo: String,
    /// The navigation entry of the page (`rendez-vous`…).
    pub nav: &'static str,
    pub flash: Option<String>,
}

impl Layout {
    pub fn new(p: &Public, nav: &'static str, headers: &http::HeaderMap) -> Layout {
        Layout {
            town: p.app.town.hall(),
            logo: p.app.town.logo_url.clone(),
            nav,
            flash: web::flash(headers),
        }
    }
}

/// A page response that clears the flash it showed.
pub fn respond<T: askama::Template>(p: &Public, t: &T) -> Response {
    web::clear_flash(web::render(t), p.secure())
}

#[derive(askama::Template)]
#[template(path = "public/error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    title: &'a str,
    message: &'a str,
}

/// A French error page in the public design.
pub fn error(p: &Public, status: StatusCode, title: &str, message: &str) -> Response {
    let page = ErrorPage {
        layout: Layout {
            town: p.app.town.hall(),
            logo: p.app.town.logo_url.clone(),
            nav: "",
            flash: None,
        },
        title,
        message,
    };
    (status, web::render(&page)).into_response()
}

/// What a role's failure means for a citizen, in French.
pub fn unavailable(p: &Public, status: &tonic::Status) -> Response {
    tracing::warn!(code = ?status.code(), "public page: a role call failed");
    error(
        p,
        StatusCode::SERVICE_UNAVAILABLE,
        "Service momentanément indisponible",
        "Le service ne répond pas pour le moment. Réessayez dans quelques minutes ; si cela dure, appelez la mairie.",
    )
}

/// The refusal page of the guard.
pub fn refused(p: &Public, why: Refusal) -> Response {
    match why {
        Refusal::TooMany => {
            let mut r = error(
                p,
                StatusCode::TOO_MANY_REQUESTS,
                "Trop de demandes",
                "Trop de demandes sont venues de votre connexion en peu de temps. Patientez quelques minutes, puis recommencez.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            r
        }
        Refusal::SessionSpent => error(
            p,
            StatusCode::TOO_MANY_REQUESTS,
            "Trop de tentatives",
            "Cette session a atteint le nombre de réservations ou d'essais permis. Fermez votre navigateur et recommencez plus tard, ou appelez la mairie.",
        ),
        Refusal::BadForm | Refusal::TooFast => error(
            p,
            StatusCode::FORBIDDEN,
            "Formulaire expiré",
            "Ce formulaire a expiré ou ne vient pas de ce site. Revenez à la page précédente, rechargez-la et recommencez.",
        ),
    }
}

/// Every public request: the address limits, then the visitor session
/// (a new signed cookie when there is none or it is not ours).
async fn gate(
    State(p): State<Public>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let now = p.now();
    let is_static = req.uri().path().starts_with("/static/");
    if !is_static {
        let ip = p.guard.client(peer.ip(), req.headers());
        let form = req.method() == http::Method::POST;
        if let Err(why) = p.guard.hit(ip, form, now) {
            metrics::counter!("guichet_portal_public_refused_total", "why" => "address")
                .increment(1);
            return refused(&p, why);
        }
    }
    let known =
        crate::session::cookie(req.headers(), VISITOR_COOKIE).and_then(|c| p.guard.visitor(c));
    let (id, new_cookie) = match known {
        Some(id) => (id, None),
        None => {
            let cookie = p.guard.new_visitor(now);
            let id = p.guard.visitor(&cookie).unwrap_or_default();
            (id, Some(cookie))
        }
    };
    req.extensions_mut().insert(Visitor { id });
    let mut res = next.run(req).await;
    if let Some(c) = new_cookie
        && !is_static
    {
        crate::session::add_cookie(&mut res, VISITOR_COOKIE, &c, p.secure(), None);
    }
    // The links of these pages carry secrets: never sent to another site.
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

pub fn router(p: Public, stop: tokio_util::sync::CancellationToken) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/rendez-vous") }))
        .route("/rendez-vous", get(booking::start))
        .route("/rendez-vous/creneaux", get(booking::slots))
        .route("/rendez-vous/coordonnees", get(booking::details))
        .route("/rendez-vous/nouveau", get(booking::offered))
        .route("/rendez-vous/reserver", post(booking::book))
        .route(
            "/rendez-vous/liste-attente",
            post(booking::join_waiting_list),
        )
        .route("/rendez-vous/{id}", get(manage::show))
        .route("/rendez-vous/{id}/calendrier.ics", get(manage::ics))
        .route("/rendez-vous/{id}/annuler", post(manage::cancel))
        .route(
            "/rendez-vous/{id}/deplacer",
            get(manage::move_form).post(manage::move_to),
        )
        .route("/rendez-vous/{id}/revoquer", post(manage::revoke))
        .route("/suivre", get(follow::form).post(follow::show))
        .route(
            "/suivre/piece",
            post(follow::upload).layer(axum::extract::DefaultBodyLimit::max(20 * 1024 * 1024)),
        )
        .route("/ticket/{token}", get(ticket::show))
        .route("/ticket/{token}/etat", get(ticket::fragment))
        .route("/ticket/{token}/evenements", get(ticket::events))
        .route("/temps-attente", get(ticket::waiting_times))
        .route("/static/{file}", get(crate::pages::asset))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(p.clone(), gate))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new("'none'".to_owned()),
            web::security_headers,
        ))
        .layer(axum::Extension(stop))
        .with_state(p)
}

async fn not_found(State(p): State<Public>) -> Response {
    error(
        &p,
        StatusCode::NOT_FOUND,
        "Page introuvable",
        "Cette page n'existe pas. Vérifiez l'adresse, ou revenez à l'accueil des services en ligne.",
    )
}

/// The public appointment types and the sites, as the appointment role
/// tells them.
#[derive(Clone)]
pub struct Catalog {
    pub kinds: Vec<apb::AppointmentType>,
    pub sites: Vec<apb::Site>,
}

impl Catalog {
    /// The catalog, from the cache when read less than a minute ago.
    pub async fn load(p: &Public) -> Result<Catalog, tonic::Status> {
        let mut cached = p.catalog.lock().await;
        if let Some((at, c)) = cached.as_ref()
            && at.elapsed() < std::time::Duration::from_secs(60)
        {
            return Ok(c.clone());
        }
        let fresh = Catalog::fetch(p).await?;
        *cached = Some((std::time::Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    async fn fetch(p: &Public) -> Result<Catalog, tonic::Status> {
        let mut c = p.app.clients.appointment.clone();
        let kinds = c
            .list_appointment_types(
                p.app
                    .clients
                    .public(apb::ListAppointmentTypesRequest { public_only: true }),
            )
            .await?
            .into_inner()
            .types;
        let sites = c
            .list_sites(p.app.clients.public(apb::ListSitesRequest {}))
            .await?
            .into_inner()
            .sites;
        Ok(Catalog { kinds, sites })
    }

    pub fn kind(&self, id: &str) -> Option<&apb::AppointmentType> {
        self.kinds.iter().find(|k| k.id == id)
    }

    pub fn site(&self, id: &str) -> Option<&apb::Site> {
        self.sites.iter().find(|s| s.id == id)
    }

    pub fn site_name(&self, id: &str) -> String {
        self.site(id).map(|s| s.name.clone()).unwrap_or_default()
    }

    /// "12 rue de la Mairie, 94000 Villeneuve".
    pub fn site_address(&self, id: &str) -> String {
        self.site(id)
            .map(|s| format!("{}, {} {}", s.address, s.zip_code, s.city))
            .unwrap_or_default()
    }
}

/// "mardi 8 décembre 2026 à 09h30", Paris time.
pub fn when(t: DateTime<Utc>) -> String {
    format!(
        "{} à {}",
        guichet_platform::french::day_date(t),
        guichet_platform::french::hour(t)
    )
}
