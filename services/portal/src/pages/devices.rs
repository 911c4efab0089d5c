//! Appareils: the hall's kiosks and waiting-room boards. A supervisor
//! enrols the browser in front of her as a kiosk or a board of a site: the
//! browser gets a long-lived device cookie (its SHA-256 only is kept), her
//! own session ends (a kiosk is never left signed in), and the browser
//! opens its page. A device opens only its own pages, as the portal's
//! `citizen_pages` identity, until a supervisor removes it.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use guichet_platform::auth::Role;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};
use serde::Deserialize;

use super::{Layout, respond_with};
use crate::db::entities::device;
use crate::session;
use crate::views;
use crate::web::{self, Agent, App};

/// The device cookie.
pub const COOKIE: &str = "guichet_appareil";
/// A device stays enrolled this long without being enrolled again (400
/// days, the longest browsers keep a cookie).
const MAX_AGE_SECS: i64 = 400 * 24 * 3600;

pub const KIOSK: &str = "borne";
pub const BOARD: &str = "ecran";

/// Who may enrol and remove devices.
pub fn may_manage(agent: &Agent) -> bool {
    agent.has(Role::Supervisor) || agent.has(Role::Admin)
}

/// The enrolled device of this browser, of `kind`; otherwise the page that
/// says how to enrol it.
#[allow(clippy::result_large_err)]
pub async fn device_of(
    app: &App,
    headers: &HeaderMap,
    kind: &str,
) -> Result<device::Model, Response> {
    let refuse = || {
        web::error_page(
            StatusCode::FORBIDDEN,
            "Appareil non activé",
            "Cet appareil n'est pas activé pour cette page. Un superviseur l'active depuis la page « Appareils » du portail des agents.",
        )
    };
    let Some(secret) = session::cookie(headers, COOKIE) else {
        return Err(refuse());
    };
    let found = device::Entity::find()
        .filter(device::Column::SecretHash.eq(session::digest(secret)))
        .filter(device::Column::RevokeTime.is_null())
        .one(&app.db)
        .await;
    match found {
        Ok(Some(d)) if d.kind == kind => Ok(d),
        Ok(_) => Err(refuse()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the devices");
            Err(web::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service indisponible",
                "Le portail ne répond pas pour le moment. Réessayez dans un instant.",
            ))
        }
    }
}

/// Note that the device showed its page (at most one write per ten minutes).
pub async fn seen(app: &App, d: &device::Model) {
    let now = app.now();
    if now - d.last_seen_time < chrono::Duration::minutes(10) {
        return;
    }
    let res = device::Entity::update_many()
        .col_expr(device::Column::LastSeenTime, Expr::value(now))
        .filter(device::Column::Id.eq(d.id.as_str()))
        .exec(&app.db)
        .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "cannot note the device's visit");
    }
}

pub struct Row {
    pub id: String,
    pub kind: &'static str,
    pub site: String,
    pub label: String,
    pub created: String,
    pub seen: String,
    pub active: bool,
}

#[derive(askama::Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    layout: Layout,
    rows: Vec<Row>,
    error: Option<String>,
    load_error: Option<String>,
}

fn kind_word(k: &str) -> &'static str {
    match k {
        KIOSK => "Borne",
        BOARD => "Écran de salle d'attente",
        _ => "Inconnu",
    }
}

async fn render_page(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let listed = device::Entity::find()
        .order_by_desc(device::Column::CreateTime)
        .all(&app.db)
        .await;
    let (rows, load_error) = match listed {
        Ok(list) => (
            list.into_iter()
                .map(|d| Row {
                    kind: kind_word(&d.kind),
                    created: format!("{} par {}", views::when(d.create_time), d.created_by),
                    seen: views::when(d.last_seen_time),
                    active: d.revoke_time.is_none(),
                    id: d.id,
                    site: d.site,
                    label: d.label,
                })
                .collect(),
            None,
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot list the devices");
            (
                Vec::new(),
                Some("La liste des appareils n'a pas pu être lue.".to_owned()),
            )
        }
    };
    let page = DevicesPage {
        layout: Layout::new(app, agent, "appareils", headers),
        rows,
        error,
        load_error,
    };
    respond_with(app, &page, status)
}

fn forbidden() -> Response {
    web::forbidden(
        "Seuls les superviseurs et les administrateurs gèrent les appareils de l'accueil.",
    )
}

pub async fn page(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    if !may_manage(&agent) {
        return forbidden();
    }
    render_page(&app, &agent, &headers, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct EnrolForm {
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    label: String,
}

/// Enrol this browser: the device cookie, the end of the agent's session,
/// and the device's page.
pub async fn enrol(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(f): Form<EnrolForm>,
) -> Response {
    if !may_manage(&agent) {
        return forbidden();
    }
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let bad = |m: &str| {
        render_page(
            &app,
            &agent,
            &headers,
            Some(m.to_owned()),
            StatusCode::BAD_REQUEST,
        )
    };
    let kind = match f.kind.as_str() {
        KIOSK => KIOSK,
        BOARD => BOARD,
        _ => {
            return bad("Choisissez le type d'appareil : borne ou écran de salle d'attente.").await;
        }
    };
    let site = f.site.trim();
    if site.is_empty()
        || site.len() > 64
        || !site
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad("Le site est un identifiant sans espace (par exemple « mairie »).").await;
    }
    let label = f.label.trim();
    if label.is_empty() || label.chars().count() > 80 {
        return bad(
            "Donnez à l'appareil un nom de 1 à 80 caractères (par exemple « Borne du hall »).",
        )
        .await;
    }
    let secret = session::random_token();
    let now = app.now();
    let row = device::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        secret_hash: Set(session::digest(&secret)),
        kind: Set(kind.to_owned()),
        site: Set(site.to_owned()),
        label: Set(label.to_owned()),
        csrf: Set(session::random_token()),
        created_by: Set(agent.subject.clone()),
        create_time: Set(now),
        last_seen_time: Set(now),
        revoke_time: Set(None),
    };
    if let Err(e) = row.insert(&app.db).await {
        tracing::error!(error = %e, "cannot enrol the device");
        return render_page(
            &app,
            &agent,
            &headers,
            Some("L'appareil n'a pas pu être activé. Réessayez dans un instant.".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    }
    tracing::info!(kind, site, "device enrolled");
    if let Err(e) = session::end(&app.db, &agent.id).await {
        tracing::error!(error = %e, "cannot end the session after enrolling a device");
    }
    let mut r = Redirect::to(if kind == KIOSK { "/borne" } else { "/ecran" }).into_response();
    let secure = app.config.secure_cookies;
    session::add_cookie(&mut r, COOKIE, &secret, secure, Some(MAX_AGE_SECS));
    session::add_cookie(&mut r, session::COOKIE, "", secure, Some(0));
    r
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// Remove a device: its cookie opens nothing any more.
pub async fn revoke(
    State(app): State<App>,
    agent: Agent,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !may_manage(&agent) {
        return forbidden();
    }
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let res = device::Entity::update_many()
        .col_expr(device::Column::RevokeTime, Expr::value(Some(app.now())))
        .filter(device::Column::Id.eq(id.as_str()))
        .filter(device::Column::RevokeTime.is_null())
        .exec(&app.db)
        .await;
    match res {
        Ok(r) if r.rows_affected == 1 => {
            tracing::info!(device_id = %id, "device removed");
            web::redirect_with("/appareils", "Appareil retiré.", app.config.secure_cookies)
        }
        Ok(_) => web::redirect_with(
            "/appareils",
            "Cet appareil était déjà retiré.",
            app.config.secure_cookies,
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot remove the device");
            web::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service indisponible",
                "L'appareil n'a pas pu être retiré. Réessayez dans un instant.",
            )
        }
    }
}
