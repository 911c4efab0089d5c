//! Recherche: one box for a name (accents ignored), a phone number in any
//! format, an email, a dossier reference or a ticket number; results
//! grouped by kind. Posted, so what was searched never sits in a URL.

use axum::Form;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use guichet_platform::reference::Reference;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::Channel;
use guichet_proto::routing::v1 as rpb;
use serde::Deserialize;

use super::{Layout, Section, respond};
use crate::views;
use crate::web::{self, Agent, App};

pub struct CitizenHit {
    pub id: String,
    pub name: String,
    pub contacts: String,
}

pub struct DossierHit {
    pub id: String,
    pub reference: String,
    pub process: String,
    pub state: String,
}

pub struct TicketHit {
    pub id: String,
    pub summary: String,
    pub status: &'static str,
}

pub struct Results {
    pub citizens: Section<Vec<CitizenHit>>,
    pub dossiers: Section<Vec<DossierHit>>,
    pub tickets: Section<Vec<TicketHit>>,
    pub total: usize,
}

#[derive(askama::Template)]
#[template(path = "search.html")]
struct SearchPage {
    layout: Layout,
    q: String,
    error: Option<String>,
    results: Option<Results>,
}

pub async fn form(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    respond(
        &app,
        &SearchPage {
            layout: Layout::new(&app, &agent, "recherche", &headers),
            q: String::new(),
            error: None,
            results: None,
        },
    )
}

#[derive(Deserialize)]
pub struct Query {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    q: String,
}

fn count<T>(s: &Section<Vec<T>>) -> usize {
    s.ok.as_ref().map(Vec::len).unwrap_or(0)
}

fn empty<T>() -> Section<Vec<T>> {
    Section::done(Vec::new())
}

/// A ticket number as the board shows it: a letter and three digits.
fn ticket_number(q: &str) -> Option<String> {
    let q = q.trim().to_ascii_uppercase();
    let mut chars = q.chars();
    let letter = chars.next()?;
    let rest: String = chars.collect();
    (letter.is_ascii_uppercase() && rest.len() >= 3 && rest.chars().all(|c| c.is_ascii_digit()))
        .then_some(q)
}

pub async fn search(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(f): Form<Query>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let q = f.q.trim().to_owned();
    let layout = Layout::new(&app, &agent, "recherche", &headers);
    if q.chars().count() < 2 {
        return respond(
            &app,
            &SearchPage {
                layout,
                q,
                error: Some("Saisissez au moins deux caractères : un nom, un téléphone, un courriel, une référence de dossier ou un numéro de ticket.".into()),
                results: None,
            },
        );
    }
    let mut dossiers: Section<Vec<DossierHit>> = empty();
    let mut citizens: Section<Vec<CitizenHit>> = empty();
    let mut tickets: Section<Vec<TicketHit>> = empty();
    if let Some(reference) = Reference::parse(&q) {
        let mut c = app.clients.dossier.clone();
        dossiers = match c
            .get_dossier(app.clients.request(
                &agent,
                dpb::GetDossierRequest {
                    id: reference.into_string(),
                },
            ))
            .await
        {
            Ok(d) => {
                let d = d.into_inner();
                Section {
                    ok: Some(vec![DossierHit {
                        id: d.id,
                        reference: d.reference,
                        process: d.process_title,
                        state: d.state_title,
                    }]),
                    error: None,
                    code: None,
                }
            }
            // Not found and not readable look the same.
            Err(e)
                if matches!(
                    e.code(),
                    tonic::Code::NotFound | tonic::Code::PermissionDenied
                ) =>
            {
                empty()
            }
            Err(e) => Section::from(Err(e), "Le service des dossiers"),
        };
    } else if let Some(number) = ticket_number(&q) {
        // Today's visits: the counter's work items carry the ticket number.
        let mut c = app.clients.routing.clone();
        tickets = match c
            .list_work_items(app.clients.request(
                &agent,
                rpb::ListWorkItemsRequest {
                    channel: Channel::Counter as i32,
                    page_size: 500,
                    ..Default::default()
                },
            ))
            .await
        {
            Ok(r) => Section {
                ok: Some(
                    r.into_inner()
                        .items
                        .into_iter()
                        .filter(|i| {
                            i.summary
                                .split(|c: char| !c.is_ascii_alphanumeric())
                                .any(|w| w.eq_ignore_ascii_case(&number))
                        })
                        .map(|i| TicketHit {
                            status: views::status(i.status),
                            id: i.id,
                            summary: i.summary,
                        })
                        .collect(),
                ),
                error: None,
                code: None,
            },
            Err(e) => Section::from(Err(e), "La file d'attente"),
        };
    } else {
        let mut c = app.clients.dossier.clone();
        citizens = match c
            .list_citizens(app.clients.request(
                &agent,
                dpb::ListCitizensRequest {
                    query: q.clone(),
                    page_size: 50,
                    page_token: String::new(),
                },
            ))
            .await
        {
            Ok(r) => Section {
                ok: Some(
                    r.into_inner()
                        .citizens
                        .iter()
                        .map(|c| CitizenHit {
                            id: c.id.clone(),
                            name: views::citizen_name(c),
                            contacts: c
                                .phones
                                .iter()
                                .chain(c.emails.iter())
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                        .collect(),
                ),
                error: None,
                code: None,
            },
            Err(e) if e.code() == tonic::Code::InvalidArgument => Section::failed(
                "Recherche impossible avec ce texte : essayez un nom, un téléphone ou un courriel."
                    .into(),
            ),
            Err(e) => Section::from(Err(e), "Le service des dossiers"),
        };
    }
    let total = count(&citizens) + count(&dossiers) + count(&tickets);
    respond(
        &app,
        &SearchPage {
            layout,
            q,
            error: None,
            results: Some(Results {
                citizens,
                dossiers,
                tickets,
                total,
            }),
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticket_numbers_are_told_from_names() {
        assert_eq!(super::ticket_number("g004").as_deref(), Some("G004"));
        assert_eq!(super::ticket_number("Dupont"), None);
        assert_eq!(super::ticket_number("G04"), None);
    }
}
