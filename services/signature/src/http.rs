//! The citizen's signing pages, in French: small accessible HTML, no
//! script. `/s/<token>` (an unguessable per-signer token, never the request
//! id) shows the document, the consent text, "Recevoir le code", the code
//! form and "Refuser de signer". Every form carries a token bound to the
//! signer's link (CSRF); the page records the client IP (X-Forwarded-For
//! only from configured proxies) and User-Agent into the evidence. Logs
//! carry ids only.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tonic::Code;

use crate::core::{self, Core, Full, Origin, paris_text};
use crate::db::entities::signer;
use crate::otp::{form_token, form_token_ok, mask_phone};

#[derive(Clone)]
struct App {
    core: Core,
    trusted: Vec<IpAddr>,
}

pub fn router(core: Core) -> Router {
    let trusted = core
        .config
        .trusted_proxies
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    Router::new()
        .route("/signature.css", get(stylesheet))
        .route("/s/{token}", get(show))
        .route("/s/{token}/document", get(document))
        .route("/s/{token}/code", post(send_code))
        .route("/s/{token}/confirm", post(confirm))
        .route("/s/{token}/decline", post(decline))
        .with_state(App { core, trusted })
}

pub use guichet_platform::net::client_ip;

fn origin(app: &App, peer: SocketAddr, headers: &HeaderMap) -> Origin {
    Origin {
        actor: "citizen".into(),
        ip: client_ip(peer.ip(), headers, &app.trusted).to_string(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(512)
            .collect(),
    }
}

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The design of the citizens' pages (the portal's style sheet, one
/// source), with the few rules of these pages.
const STYLE: &str = concat!(
    include_str!("../../portal/static/guichet.css"),
    "
/* The signing pages. */
.box { background: var(--paper); border: 1px solid var(--line); border-radius: var(--radius); padding: var(--space); margin: var(--space) 0; }
.msg, .err { border-left: 6px solid; border-radius: var(--radius); padding: .5rem var(--space); }
.msg { background: var(--ok-bg); color: var(--ok-ink); }
.err { background: var(--danger-bg); color: var(--danger-ink); }
.signature main button { font: inherit; font-weight: 600; min-height: 44px; min-width: 44px; padding: .5rem 1rem; border-radius: var(--radius); border: 2px solid var(--brand); background: var(--brand); color: var(--brand-ink); cursor: pointer; margin: .25rem 0; }
.signature main label { display: flex; align-items: center; gap: .5rem; min-height: 44px; margin: .5rem 0; }
.signature main input[type=checkbox] { width: 1.75rem; height: 1.75rem; flex: none; margin: 0; }
.signature #code { font-size: 1.3rem; letter-spacing: .3rem; width: 9rem; }
.box a { display: inline-block; min-height: 44px; line-height: 44px; }
.signature code { word-break: break-all; }
"
);

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        STYLE,
    )
        .into_response()
}

fn html(
    status: StatusCode,
    title: &str,
    town: &guichet_platform::town::Town,
    body: &str,
) -> Response {
    let logo = if town.logo_url.is_empty() {
        String::new()
    } else {
        format!(r#"<img src="{}" alt="" height="48"> "#, esc(&town.logo_url))
    };
    let page = format!(
        r##"<!doctype html>
<html lang="fr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – {town}</title>
<link rel="stylesheet" href="/signature.css">
</head>
<body class="public signature">
<a class="skip" href="#contenu">Aller au contenu</a>
<header class="header" role="banner"><div class="header__brand"><span>{logo}{town} <span class="header__town">— signature électronique</span></span></div></header>
<main id="contenu" tabindex="-1" class="public__main">
<h1>{title}</h1>
{body}
</main>
<footer class="footer" role="contentinfo"><p>{town} — signature électronique par code SMS, sans compte. Besoin d'aide ? Appelez la mairie.</p></footer>
</body>
</html>"##,
        title = esc(title),
        town = esc(&town.hall()),
    );
    let mut resp = (status, page).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    resp
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The link carries the signer's secret: never leak it as a referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; img-src https:; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn not_found(town: &guichet_platform::town::Town) -> Response {
    html(
        StatusCode::NOT_FOUND,
        "Lien inconnu",
        town,
        "<p>Ce lien de signature n'existe pas ou n'est plus valable. Vérifiez le lien reçu par SMS ou contactez la mairie.</p>",
    )
}

async fn load(app: &App, token: &str) -> Result<(Full, signer::Model), Response> {
    app.core.by_token(token).await.map_err(tonic::Status::from).map_err(|e| {
        if e.code() == Code::NotFound {
            not_found(&app.core.config.town)
        } else {
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service momentanément indisponible",
                &app.core.config.town,
                "<p>Le service de signature est momentanément indisponible. Réessayez dans quelques minutes.</p>",
            )
        }
    })
}

/// Render the page for the request's current state, with an optional
/// message (info) or error.
fn render(
    app: &App,
    token: &str,
    full: &Full,
    s: &signer::Model,
    msg: Option<(bool, String)>,
) -> Response {
    let cfg = &app.core.config;
    let r = &full.req;
    let note = match msg {
        Some((true, m)) => format!(r#"<p class="err" role="alert">{}</p>"#, esc(&m)),
        Some((false, m)) => format!(r#"<p class="msg" role="status">{}</p>"#, esc(&m)),
        None => String::new(),
    };
    let doc_link = format!(
        r#"<p><a href="/s/{t}/document">{label}</a> (PDF)</p>"#,
        t = esc(token),
        label = if r.status == core::SIGNED {
            "Télécharger le document signé"
        } else {
            "Lire le document"
        }
    );
    let info = format!(
        r#"<div class="box"><p><strong>Document :</strong> {title}</p><p><strong>Signataire :</strong> {name}</p>{doc_link}</div>"#,
        title = esc(&r.title),
        name = esc(&s.name),
    );
    let (title, body) = if s.status == core::SIGNED {
        let all = if r.status == core::SIGNED {
            "Tous les signataires ont signé : le document signé est disponible ci-dessous."
        } else {
            "Le document sera complet lorsque les autres signataires auront signé."
        };
        (
            "Votre signature est enregistrée",
            format!(
                "{note}<p>Merci. Vous avez signé le {} (heure de Paris).</p><p>{all}</p>{info}",
                s.signed_at.map(paris_text).unwrap_or_default()
            ),
        )
    } else {
        match r.status {
            core::PENDING => {
                let csrf = form_token(&cfg.code_secret, token);
                let t = esc(token);
                let phone = esc(&mask_phone(&s.phone));
                (
                    "Signer un document",
                    format!(
                        r#"{note}{info}
<h2>Consentement</h2>
<p>{consent}</p>
<h2>1. Recevoir le code</h2>
<p>Un code à 6 chiffres sera envoyé par SMS au {phone}. Il est valable {ttl} minutes.</p>
<form method="post" action="/s/{t}/code"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Recevoir le code</button></form>
<h2>2. Signer</h2>
<form method="post" action="/s/{t}/confirm">
<input type="hidden" name="csrf" value="{csrf}">
<label><input type="checkbox" name="consent" value="oui" required> J'ai lu le document et j'accepte de le signer électroniquement.</label>
<label for="code">Code reçu par SMS (6 chiffres)</label>
<input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{{6}}" maxlength="6" required>
<button type="submit">Signer le document</button>
</form>
<h2>Refuser de signer</h2>
<form method="post" action="/s/{t}/decline">
<input type="hidden" name="csrf" value="{csrf}">
<label for="reason">Motif (facultatif)</label>
<input type="text" id="reason" name="reason" maxlength="500">
<button type="submit">Refuser de signer</button>
</form>
<p>Expire le {expire} (heure de Paris).</p>"#,
                        consent = esc(&r.consent_text),
                        ttl = cfg.code_ttl_minutes,
                        expire = paris_text(r.expire_at),
                    ),
                )
            }
            core::LOCKED => (
                "Signature bloquée",
                format!(
                    "{note}<p>Par sécurité, la signature est bloquée après trop de codes erronés ou de codes demandés. Contactez la mairie : un agent pourra la débloquer.</p>{info}"
                ),
            ),
            core::EXPIRED => (
                "Délai de signature dépassé",
                format!(
                    "{note}<p>Le délai pour signer ce document est dépassé. Contactez la mairie pour recevoir une nouvelle demande.</p>"
                ),
            ),
            core::DECLINED => (
                "Signature refusée",
                format!(
                    "{note}<p>La signature de ce document a été refusée. La mairie en est informée.</p>"
                ),
            ),
            core::CANCELLED => (
                "Demande annulée",
                format!("{note}<p>La mairie a annulé cette demande de signature.</p>"),
            ),
            _ => ("Document signé", format!("{note}{info}")),
        }
    };
    html(StatusCode::OK, title, &cfg.town, &body)
}

async fn show(State(app): State<App>, Path(token): Path<String>) -> Response {
    let (full, s) = match load(&app, &token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // An overdue request shows as expired without waiting for the worker.
    let (full, s) = if full.req.status == core::PENDING && full.req.expire_at <= app.core.now() {
        let _ = app.core.expire_due().await;
        match load(&app, &token).await {
            Ok(x) => x,
            Err(r) => return r,
        }
    } else {
        (full, s)
    };
    render(&app, &token, &full, &s, None)
}

async fn document(State(app): State<App>, Path(token): Path<String>) -> Response {
    let (full, _) = match load(&app, &token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (sha, name) = match &full.req.signed_sha256 {
        Some(sha) => (
            sha.clone(),
            format!("{}-signe.pdf", core::slug(&full.req.title)),
        ),
        None => (
            full.req.document_sha256.clone(),
            format!("{}.pdf", core::slug(&full.req.title)),
        ),
    };
    match app.core.objects.get(&sha).await {
        Ok(bytes) => {
            let mut resp = bytes.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pdf"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            secure_headers(h);
            resp
        }
        Err(error) => {
            tracing::error!(%error, signature_request_id = %full.req.id, "signing page cannot read the document");
            not_found(&app.core.config.town)
        }
    }
}

fn form(body: &Bytes) -> HashMap<String, String> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// Load the signer and check the form token; the error is a page.
async fn checked(
    app: &App,
    token: &str,
    f: &HashMap<String, String>,
) -> Result<(Full, signer::Model), Response> {
    let (full, s) = load(app, token).await?;
    let csrf = f.get("csrf").map(String::as_str).unwrap_or_default();
    if !form_token_ok(&app.core.config.code_secret, token, csrf) {
        return Err(html(
            StatusCode::FORBIDDEN,
            "Formulaire expiré",
            &app.core.config.town,
            "<p>Ce formulaire n'est pas valable. Rouvrez le lien reçu par SMS et recommencez.</p>",
        ));
    }
    Ok((full, s))
}

async fn after(app: &App, token: &str, msg: Option<(bool, String)>) -> Response {
    match load(app, token).await {
        Ok((full, s)) => render(app, token, &full, &s, msg),
        Err(r) => r,
    }
}

async fn send_code(
    State(app): State<App>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let (full, s) = match checked(&app, &token, &f).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let o = origin(&app, peer, &headers);
    let resend = s.codes_sent > 0;
    let msg = match app
        .core
        .send_code(&o, &full.req.id, &s.id, resend)
        .await
        .map_err(tonic::Status::from)
    {
        Ok(sent) => (
            false,
            format!(
                "Un code a été envoyé par SMS au {}. Il est valable jusqu'à {}.",
                mask_phone(&s.phone),
                guichet_platform::calendar::to_paris(sent.code_expire_at).format("%Hh%M")
            ),
        ),
        Err(e) => (true, e.message().to_owned()),
    };
    after(&app, &token, Some(msg)).await
}

async fn confirm(
    State(app): State<App>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let (full, s) = match checked(&app, &token, &f).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if f.get("consent").map(String::as_str) != Some("oui") {
        return render(
            &app,
            &token,
            &full,
            &s,
            Some((true, "Cochez la case de consentement pour signer.".into())),
        );
    }
    let o = origin(&app, peer, &headers);
    let code = f.get("code").map(String::as_str).unwrap_or_default();
    let msg = match app
        .core
        .confirm(&o, &full.req.id, &s.id, code)
        .await
        .map_err(tonic::Status::from)
    {
        Ok(c) if c.signed => None,
        Ok(c) => Some((
            true,
            format!(
                "Code incorrect. Il vous reste {} essai{} avec ce code.",
                c.attempts_left,
                if c.attempts_left > 1 { "s" } else { "" }
            ),
        )),
        Err(e) if e.code() == Code::InvalidArgument => {
            Some((true, "Le code comporte 6 chiffres.".into()))
        }
        Err(e) => Some((true, e.message().to_owned())),
    };
    after(&app, &token, msg).await
}

async fn decline(
    State(app): State<App>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let (full, s) = match checked(&app, &token, &f).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let o = origin(&app, peer, &headers);
    let reason = f.get("reason").map(String::as_str).unwrap_or_default();
    let msg = match app
        .core
        .decline(&o, &full.req.id, &s.id, reason)
        .await
        .map_err(tonic::Status::from)
    {
        Ok(_) => None,
        Err(e) => Some((true, e.message().to_owned())),
    };
    after(&app, &token, msg).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.1"),
        );
        assert_eq!(client_ip(proxy, &h, &[proxy]).to_string(), "198.51.100.7");
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(other, &h, &[proxy]), other);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
