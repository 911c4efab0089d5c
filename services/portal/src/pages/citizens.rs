//! Citoyens à confirmer: the "maybe" matches of citizen resolution, shown
//! to the agent with what a merge would move, to confirm or reject.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::routing::v1 as rpb;
use serde::Deserialize;

use super::{Layout, Section, respond};
use crate::session::Session;
use crate::views;
use crate::web::{self, Agent, App};

pub struct Pair {
    pub item_id: String,
    pub summary: String,
    pub channel: views::Tag,
    pub from_id: String,
    pub from_name: String,
    pub from_dossiers: usize,
    pub to_id: String,
    pub to_name: String,
    pub to_contacts: String,
    pub why: String,
    pub confidence: u32,
}

#[derive(askama::Template)]
#[template(path = "citizens.html")]
struct CandidatesPage {
    layout: Layout,
    pairs: Section<Vec<Pair>>,
}

async fn citizen(app: &App, agent: &Session, id: &str) -> Option<dpb::Citizen> {
    let mut c = app.clients.dossier.clone();
    c.get_citizen(
        app.clients
            .request(agent, dpb::GetCitizenRequest { id: id.to_owned() }),
    )
    .await
    .ok()
    .map(|r| r.into_inner())
}

async fn dossier_count(app: &App, agent: &Session, id: &str) -> usize {
    let mut c = app.clients.dossier.clone();
    c.list_dossiers(app.clients.request(
        agent,
        dpb::ListDossiersRequest {
            citizen_id: id.to_owned(),
            page_size: 100,
            ..Default::default()
        },
    ))
    .await
    .map(|r| r.into_inner().dossiers.len())
    .unwrap_or(0)
}

async fn pairs(app: &App, agent: &Session) -> Result<Vec<Pair>, tonic::Status> {
    let mut items = Vec::new();
    for status in [
        rpb::WorkItemStatus::Pending,
        rpb::WorkItemStatus::Offered,
        rpb::WorkItemStatus::Assigned,
        rpb::WorkItemStatus::Wrapping,
    ] {
        let mut c = app.clients.routing.clone();
        let list = c
            .list_work_items(app.clients.request(
                agent,
                rpb::ListWorkItemsRequest {
                    status: status as i32,
                    page_size: 500,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        items.extend(list.items.into_iter().filter(|i| !i.candidates.is_empty()));
    }
    let mut pairs = Vec::new();
    for item in items.iter().take(100) {
        let from = citizen(app, agent, &item.citizen_id).await;
        let from_dossiers = dossier_count(app, agent, &item.citizen_id).await;
        for cand in &item.candidates {
            let Some(to) = citizen(app, agent, &cand.citizen_id).await else {
                continue;
            };
            pairs.push(Pair {
                item_id: item.id.clone(),
                summary: item.summary.clone(),
                channel: views::channel(item.channel),
                from_id: item.citizen_id.clone(),
                from_name: from
                    .as_ref()
                    .map(views::citizen_name)
                    .unwrap_or_else(|| "Personne non identifiée".into()),
                from_dossiers,
                to_id: to.id.clone(),
                to_name: views::citizen_name(&to),
                to_contacts: to
                    .phones
                    .iter()
                    .chain(to.emails.iter())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                why: cand.why.clone(),
                confidence: (cand.confidence * 100.0).round() as u32,
            });
        }
    }
    Ok(pairs)
}

pub async fn page(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    let pairs = Section::from(pairs(&app, &agent).await, "La file d'attente");
    respond(
        &app,
        &CandidatesPage {
            layout: Layout::new(&app, &agent, "citoyens", &headers),
            pairs,
        },
    )
}

#[derive(Deserialize)]
pub struct ResolveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    citoyen: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    retour: String,
}

pub async fn resolve(
    State(app): State<App>,
    agent: Agent,
    Path(id): Path<String>,
    Form(f): Form<ResolveForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let back = if web::safe_return(&f.retour) {
        f.retour.clone()
    } else {
        format!("/demande/{id}")
    };
    let confirm = match f.decision.as_str() {
        "confirmer" => true,
        "rejeter" => false,
        _ => {
            return web::redirect_with(
                &back,
                "Choisissez : même personne ou non.",
                app.config.secure_cookies,
            );
        }
    };
    let mut c = app.clients.routing.clone();
    let msg = match c
        .resolve_citizen_candidate(app.clients.request(
            &agent,
            rpb::ResolveCitizenCandidateRequest {
                id,
                citizen_id: f.citoyen,
                confirm,
            },
        ))
        .await
    {
        Ok(_) if confirm => {
            "Fiches réunies : les dossiers et l'historique sont rattachés au citoyen connu."
                .to_owned()
        }
        Ok(_) => "C'est noté : ce ne sont pas les mêmes personnes (inscrit aux deux historiques)."
            .to_owned(),
        Err(e)
            if matches!(
                e.code(),
                tonic::Code::FailedPrecondition | tonic::Code::NotFound
            ) =>
        {
            "Ce rapprochement n'est plus proposé (déjà traité par un collègue).".to_owned()
        }
        Err(e) => web::explain(&e, "La file d'attente"),
    };
    web::redirect_with(&back, &msg, app.config.secure_cookies)
}
