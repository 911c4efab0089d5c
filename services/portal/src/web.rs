//! What every page shares: the application state, the signed-in agent
//! extractor (with the return to the page asked for after login), CSRF
//! checks, the security headers, flash messages and French errors.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use guichet_platform::auth::Authenticator;
use guichet_platform::clock::SharedClock;
use sea_orm::DatabaseConnection;
use tonic::Code;

use crate::clients::Clients;
use crate::config::Config;
use crate::live::Live;
use crate::session::{self, Session};

/// The portal's state, shared by every handler.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub auth: Arc<Authenticator>,
    pub clients: Clients,
    pub bus: guichet_platform::bus::Bus,
    pub live: Live,
    pub clock: SharedClock,
    pub oidc: Option<Arc<crate::oidc::Provider>>,
    /// The town's identity (`[town]`): its name in every page.
    pub town: guichet_platform::town::Town,
    /// Process titles by id, for the queue's rows.
    pub catalog: crate::catalog::Catalog,
    /// Where citizens reach their pages (the kiosk's QR codes); empty when
    /// they are not served.
    pub public_url: String,
}

impl App {
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub fn idle(&self) -> chrono::Duration {
        chrono::Duration::minutes(i64::from(self.config.session_idle_minutes))
    }
}

/// The signed-in agent of a request. Without a live session a page
/// redirects to the login (and back to the page after it); a fragment asked
/// by htmx gets `HX-Redirect` so the whole page goes.
pub struct Agent(pub Session);

impl std::ops::Deref for Agent {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

impl<S> FromRequestParts<S> for Agent
where
    App: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = App::from_ref(state);
        let wanted = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let login = || {
            let back = if parts.method == http::Method::GET {
                wanted.clone()
            } else {
                // After a POST, come back to the page the form was on.
                referer_path(&parts.headers).unwrap_or_else(|| "/".into())
            };
            to_login(&parts.headers, &back)
        };
        let Some(secret) = session::cookie(&parts.headers, session::COOKIE) else {
            return Err(login());
        };
        match session::load(&app.db, secret, app.now(), app.idle()).await {
            Ok(Some(s)) => Ok(Agent(s)),
            Ok(None) => Err(login()),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the session");
                Err(unavailable_page("La connexion"))
            }
        }
    }
}

/// The path of the page a form was posted from (same origin only).
fn referer_path(headers: &HeaderMap) -> Option<String> {
    let r = headers.get(header::REFERER)?.to_str().ok()?;
    let after_scheme = r.split_once("://")?.1;
    let path = &after_scheme[after_scheme.find('/')?..];
    safe_return(path).then(|| path.to_owned())
}

/// Whether `path` is a local path to return to after login (not `//host`).
pub fn safe_return(path: &str) -> bool {
    path.starts_with('/') && !path.starts_with("//") && !path.contains('\\')
}

/// The login page with the page to come back to.
pub fn to_login(headers: &HeaderMap, back: &str) -> Response {
    let target = format!(
        "/connexion?retour={}",
        serde_urlencoded::to_string([("r", back)])
            .unwrap_or_default()
            .trim_start_matches("r=")
    );
    if headers.contains_key("hx-request") {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        if let Ok(v) = HeaderValue::from_str(&target) {
            r.headers_mut().insert("hx-redirect", v);
        }
        r
    } else {
        Redirect::to(&target).into_response()
    }
}

/// Refuse a form whose CSRF token is not the session's (the error is the
/// refusal page, returned as is by the handler).
#[allow(clippy::result_large_err)]
pub fn check_csrf(agent: &Session, sent: &str) -> Result<(), Response> {
    if session::same(&agent.csrf, sent) {
        Ok(())
    } else {
        tracing::warn!("form refused: missing or wrong CSRF token");
        Err(error_page(
            StatusCode::FORBIDDEN,
            "Formulaire refusé",
            "Ce formulaire a expiré ou ne vient pas du portail. Revenez à la page et recommencez.",
        ))
    }
}

/// The security headers of WEB.md on every response; no caching of pages
/// that hold personal data.
pub async fn security_headers(
    axum::extract::State(frame_ancestors): axum::extract::State<Arc<String>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_static = req.uri().path().starts_with("/static/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; \
         frame-ancestors {frame_ancestors}"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if frame_ancestors.as_str() == "'none'" {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if is_static {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=86400"),
        );
    } else {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A rendered template, or a French error page.
pub fn render<T: askama::Template>(t: &T) -> Response {
    match t.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Erreur",
                "La page n'a pas pu être affichée. L'équipe informatique a été prévenue.",
            )
        }
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

/// A page refused to the signed-in agent, saying who may open it.
pub fn forbidden(who_may: &str) -> Response {
    error_page(StatusCode::FORBIDDEN, "Accès refusé", who_may)
}

/// A minimal, self-contained error page (no call to any role).
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = askama::Template::render(&ErrorPage { title, message })
        .unwrap_or_else(|_| message.to_owned());
    (status, Html(body)).into_response()
}

fn unavailable_page(what: &str) -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service indisponible",
        &format!("{what} ne répond pas pour le moment. Réessayez dans un instant."),
    )
}

/// What a failed call means for the agent, in French. `what` names the
/// service in a sentence ("La file d'attente").
pub fn explain(status: &tonic::Status, what: &str) -> String {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
            format!("{what} ne répond pas pour le moment. Réessayez dans un instant.")
        }
        Code::PermissionDenied => "Vous n'avez pas accès à cette information.".into(),
        Code::NotFound => "Introuvable : cet élément n'existe pas ou plus.".into(),
        Code::Unauthenticated => "Votre session a expiré : reconnectez-vous.".into(),
        Code::Internal | Code::DataLoss | Code::Unimplemented => {
            tracing::error!(code = ?status.code(), what, "role call failed");
            format!("{what} a rencontré une erreur. L'équipe informatique a été prévenue.")
        }
        _ => status.message().to_owned(),
    }
}

/// A one-time message shown on the next page (a short cookie; never
/// personal data).
pub const FLASH_COOKIE: &str = "guichet_flash";

/// Redirect to `to` with a flash message.
pub fn redirect_with(to: &str, message: &str, secure: bool) -> Response {
    let value = serde_urlencoded::to_string([("m", message)]).unwrap_or_default();
    let mut r = Redirect::to(to).into_response();
    session::add_cookie(
        &mut r,
        FLASH_COOKIE,
        value.trim_start_matches("m="),
        secure,
        Some(60),
    );
    r
}

/// The flash message of a request, if any (the response clears it).
pub fn flash(headers: &HeaderMap) -> Option<String> {
    let raw = session::cookie(headers, FLASH_COOKIE)?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("m={raw}"))
        .ok()?
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Add the header clearing the flash cookie.
pub fn clear_flash(mut r: Response, secure: bool) -> Response {
    session::add_cookie(&mut r, FLASH_COOKIE, "", secure, Some(0));
    r
}

/// The kind of a failed precondition (`TRANSITION`, `GUARD`, `CAPACITY`…),
/// as the role put it in the error details.
pub fn precondition(status: &tonic::Status) -> Option<&'static str> {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let kind = details
        .precondition_failure()?
        .violations
        .first()?
        .r#type
        .clone();
    // The kinds the pages tell apart.
    [
        "TRANSITION",
        "GUARD",
        "CAPACITY",
        "PRESENCE",
        "TOO_EARLY",
        "OTHER_SITE",
        "BOOKING_STATUS",
    ]
    .into_iter()
    .find(|k| *k == kind)
}
