//! Courrier automatique (`/courrier-automatique`): the mail no person
//! wrote — auto-replies, bounces, lists and bulk mail. None of it makes a
//! citizen, a dossier or a work item; what threads to a dossier is on its
//! timeline (linked here), the rest is set aside and listed here only, so an
//! agent can still see that the newsletter or a bounce came, and which
//! citizen address no longer receives mail. Newest first, by kind, paged.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use guichet_proto::email::v1 as epb;
use serde::Deserialize;

use super::{Layout, Section, respond_with};
use crate::views;
use crate::web::{Agent, App};

pub struct Row {
    pub received: String,
    pub from: String,
    pub subject: String,
    pub kind: &'static str,
    /// The dossier it is recorded on, or set aside.
    pub dossier: Option<(String, String)>,
}

#[derive(askama::Template)]
#[template(path = "automatic.html")]
struct AutomaticPage {
    layout: Layout,
    kind: String,
    rows: Section<Vec<Row>>,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct Params {
    #[serde(default)]
    genre: String,
    #[serde(default)]
    apres: String,
}

/// The French word for why a message is automatic.
pub fn kind_word(bounce: bool, reason: &str) -> &'static str {
    if bounce {
        return "Non-distribution";
    }
    match reason {
        "list" => "Liste de diffusion",
        "precedence-bulk" => "Envoi en nombre",
        "mailer-daemon" => "Message du serveur de courrier",
        "x-loop" => "Boucle de courrier",
        _ => "Réponse automatique",
    }
}

pub async fn page(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    let (filter, kind) = match p.genre.as_str() {
        "non-distribution" => (
            "direction = IN AND auto_submitted = true AND bounce = true",
            "non-distribution",
        ),
        "autres" => (
            "direction = IN AND auto_submitted = true AND bounce = false",
            "autres",
        ),
        // Received mail only: guichet's own acknowledgements are automatic
        // too, but nobody sent them to the town.
        _ => ("direction = IN AND auto_submitted = true", ""),
    };
    // Tokens are message ids this page was given: anything else is refused
    // by the email role with a reason shown in the section.
    let mut e = app.clients.email.clone();
    let res = e
        .list_email_messages(app.clients.request(
            &agent,
            epb::ListEmailMessagesRequest {
                page_size: 50,
                page_token: p.apres.chars().take(64).collect(),
                filter: filter.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner());
    let next = res
        .as_ref()
        .ok()
        .map(|r| r.next_page_token.clone())
        .filter(|t| !t.is_empty());
    let rows = Section::from(
        res.map(|r| {
            r.email_messages
                .into_iter()
                .map(|m| Row {
                    received: views::ts(&m.create_time)
                        .map(views::when)
                        .unwrap_or_default(),
                    kind: kind_word(m.bounce, &m.auto_reason),
                    dossier: (!m.dossier_id.is_empty())
                        .then(|| (m.dossier_id.clone(), m.dossier_reference.clone())),
                    from: m.from_address,
                    subject: m.subject,
                })
                .collect()
        }),
        "Le service des courriels",
    );
    let status = rows
        .code
        .map(|_| StatusCode::BAD_GATEWAY)
        .unwrap_or(StatusCode::OK);
    let page = AutomaticPage {
        layout: Layout::new(&app, &agent, "courrier", &headers),
        kind: kind.to_owned(),
        rows,
        next,
    };
    respond_with(&app, &page, status)
}
