//! Login (local account or the town's provider) and logout.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde::Deserialize;

use crate::accounts::{self, LoginRefused};
use crate::db::entities::login_flow;
use crate::session::{self, NewSession};
use crate::web::{self, Agent, App};

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage {
    town: String,
    error: Option<String>,
    oidc_label: Option<String>,
    local: bool,
    csrf: String,
    return_to: String,
    login: String,
}

#[derive(Deserialize, Default)]
pub struct Back {
    #[serde(default)]
    retour: String,
}

fn back_to(r: &str) -> String {
    if web::safe_return(r) && !r.starts_with("/connexion") {
        r.to_owned()
    } else {
        "/file".to_owned()
    }
}

fn login_page(
    app: &App,
    status: StatusCode,
    error: Option<String>,
    return_to: &str,
    login: &str,
) -> Response {
    let csrf = session::random_token();
    let page = LoginPage {
        town: app.town.hall(),
        error,
        oidc_label: app.oidc.as_ref().map(|o| o.label().to_owned()),
        local: app.config.local_accounts,
        csrf: csrf.clone(),
        return_to: back_to(return_to),
        login: login.to_owned(),
    };
    let mut r = (status, web::render(&page)).into_response();
    session::add_cookie(
        &mut r,
        session::LOGIN_COOKIE,
        &csrf,
        app.config.secure_cookies,
        Some(3600),
    );
    r
}

pub async fn form(State(app): State<App>, headers: HeaderMap, Query(q): Query<Back>) -> Response {
    // Already signed in: straight to the page asked for.
    if let Some(secret) = session::cookie(&headers, session::COOKIE)
        && let Ok(Some(_)) = session::load(&app.db, secret, app.now(), app.idle()).await
    {
        return Redirect::to(&back_to(&q.retour)).into_response();
    }
    login_page(&app, StatusCode::OK, None, &q.retour, "")
}

#[derive(Deserialize)]
pub struct LocalLogin {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    retour: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
}

/// Start the session and go to `to`.
async fn signed_in(app: &App, new: NewSession, to: &str) -> Response {
    let max = chrono::Duration::hours(i64::from(app.config.session_max_hours));
    match session::create(&app.db, new, app.now(), max).await {
        Ok(secret) => {
            let mut r = Redirect::to(&back_to(to)).into_response();
            let secure = app.config.secure_cookies;
            session::add_cookie(&mut r, session::COOKIE, &secret, secure, None);
            session::add_cookie(&mut r, session::LOGIN_COOKIE, "", secure, Some(0));
            metrics::counter!("guichet_portal_logins_total", "result" => "ok").increment(1);
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store the session");
            login_page(
                app,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(
                    "La connexion est impossible pour le moment. Réessayez dans un instant.".into(),
                ),
                to,
                "",
            )
        }
    }
}

pub async fn local(
    State(app): State<App>,
    headers: HeaderMap,
    Form(f): Form<LocalLogin>,
) -> Response {
    let expected = session::cookie(&headers, session::LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !session::same(expected, &f.csrf) {
        return login_page(
            &app,
            StatusCode::FORBIDDEN,
            Some("Le formulaire a expiré : saisissez à nouveau vos identifiants.".into()),
            &f.retour,
            &f.login,
        );
    }
    if !app.config.local_accounts {
        return login_page(
            &app,
            StatusCode::FORBIDDEN,
            Some("Les comptes locaux sont désactivés : utilisez le compte de la ville.".into()),
            &f.retour,
            "",
        );
    }
    let refused = |message: &str| {
        metrics::counter!("guichet_portal_logins_total", "result" => "refused").increment(1);
        login_page(
            &app,
            StatusCode::UNAUTHORIZED,
            Some(message.to_owned()),
            &f.retour,
            &f.login,
        )
    };
    match accounts::authenticate(&app.db, &f.login, &f.password).await {
        Ok(Ok(account)) => {
            tracing::info!(subject = %account.id, "agent logged in (local account)");
            let new = NewSession {
                subject: account.id,
                display_name: account.display_name,
                roles: account
                    .roles
                    .split(',')
                    .filter_map(|r| r.parse().ok())
                    .collect(),
                groups: accounts::parse_groups(&account.groups),
                kind: "local",
                bearer: String::new(),
                bearer_expire_time: None,
            };
            signed_in(&app, new, &f.retour).await
        }
        Ok(Err(LoginRefused::Unknown | LoginRefused::WrongPassword)) => {
            refused("Identifiant ou mot de passe incorrect.")
        }
        Ok(Err(LoginRefused::Disabled)) => {
            refused("Ce compte est désactivé. Adressez-vous à votre responsable.")
        }
        Ok(Err(LoginRefused::Locked)) => refused(
            "Ce compte est bloqué après trop d'essais. Votre responsable peut réinitialiser le mot de passe.",
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot check the account");
            login_page(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(
                    "La connexion est impossible pour le moment. Réessayez dans un instant.".into(),
                ),
                &f.retour,
                &f.login,
            )
        }
    }
}

pub async fn oidc_start(State(app): State<App>, Query(q): Query<Back>) -> Response {
    let Some(provider) = app.oidc.clone() else {
        return login_page(&app, StatusCode::NOT_FOUND, None, &q.retour, "");
    };
    let start = match provider.start().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start an OIDC login");
            return login_page(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("Le service d'authentification de la ville ne répond pas. Réessayez dans un instant.".into()),
                &q.retour,
                "",
            );
        }
    };
    let flow = login_flow::ActiveModel {
        id: Set(start.state),
        pkce_verifier: Set(start.pkce_verifier),
        nonce: Set(start.nonce),
        return_to: Set(back_to(&q.retour)),
        create_time: Set(app.now()),
    };
    if let Err(e) = flow.insert(&app.db).await {
        tracing::error!(error = %e, "cannot store the login flow");
        return login_page(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("La connexion est impossible pour le moment. Réessayez dans un instant.".into()),
            &q.retour,
            "",
        );
    }
    Redirect::to(&start.url).into_response()
}

#[derive(Deserialize)]
pub struct OidcBack {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
}

pub async fn oidc_back(State(app): State<App>, Query(q): Query<OidcBack>) -> Response {
    let Some(provider) = app.oidc.clone() else {
        return login_page(&app, StatusCode::NOT_FOUND, None, "/", "");
    };
    // The state is one-time: taken out whatever happens next.
    let flow = match login_flow::Entity::find_by_id(q.state.clone())
        .one(&app.db)
        .await
    {
        Ok(Some(f)) => {
            let _ = login_flow::Entity::delete_by_id(q.state.clone())
                .exec(&app.db)
                .await;
            f
        }
        _ => {
            return login_page(
                &app,
                StatusCode::BAD_REQUEST,
                Some("Cette connexion a expiré ou a déjà servi : recommencez.".into()),
                "/",
                "",
            );
        }
    };
    if !q.error.is_empty() || q.code.is_empty() {
        return login_page(
            &app,
            StatusCode::UNAUTHORIZED,
            Some("Le service d'authentification de la ville a refusé la connexion.".into()),
            &flow.return_to,
            "",
        );
    }
    if app.now() - flow.create_time > chrono::Duration::minutes(15) {
        return login_page(
            &app,
            StatusCode::BAD_REQUEST,
            Some("Cette connexion a expiré : recommencez.".into()),
            &flow.return_to,
            "",
        );
    }
    match provider
        .finish(&q.code, &flow.pkce_verifier, &flow.nonce)
        .await
    {
        Ok(id) => {
            tracing::info!(subject = %id.subject, "agent logged in (OIDC)");
            let new = NewSession {
                subject: id.subject,
                display_name: id.display_name,
                roles: id.roles,
                groups: id.groups,
                kind: "oidc",
                bearer: id.bearer,
                bearer_expire_time: id.expire_time,
            };
            signed_in(&app, new, &flow.return_to).await
        }
        Err(crate::oidc::OidcError::NoRole(claim)) => {
            tracing::warn!(claim, "OIDC login without a guichet role");
            login_page(
                &app,
                StatusCode::FORBIDDEN,
                Some("Votre compte n'a pas accès au portail : demandez le rôle « agent » à votre responsable.".into()),
                &flow.return_to,
                "",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "OIDC login failed");
            login_page(
                &app,
                StatusCode::UNAUTHORIZED,
                Some("La connexion avec le compte de la ville a échoué : recommencez.".into()),
                &flow.return_to,
                "",
            )
        }
    }
}

#[derive(Deserialize)]
pub struct Csrf {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    partout: String,
}

pub async fn logout(State(app): State<App>, agent: Agent, Form(f): Form<Csrf>) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let ended = if f.partout == "1" {
        session::end_all(&app.db, &agent.subject).await.map(|_| ())
    } else {
        session::end(&app.db, &agent.id).await
    };
    if let Err(e) = ended {
        tracing::error!(error = %e, "cannot end the session");
    }
    let mut r = Redirect::to("/connexion").into_response();
    session::add_cookie(
        &mut r,
        session::COOKIE,
        "",
        app.config.secure_cookies,
        Some(0),
    );
    r
}
