//! The dossier, citizen and documents a page shows, read with the agent's
//! rights: one place for the calls several pages make.

use axum::http::StatusCode;
use axum::response::Response;
use guichet_proto::dossier::v1 as dpb;

use crate::web::{self, Agent, App};

/// The dossier `id`, or the page that says why it cannot be shown.
#[allow(clippy::result_large_err)]
pub async fn dossier(app: &App, agent: &Agent, id: &str) -> Result<dpb::Dossier, Response> {
    let mut d = app.clients.dossier.clone();
    d.get_dossier(
        app.clients
            .request(agent, dpb::GetDossierRequest { id: id.to_owned() }),
    )
    .await
    .map(|x| x.into_inner())
    .map_err(|e| {
        web::error_page(
            StatusCode::NOT_FOUND,
            "Dossier",
            &web::explain(&e, "Le service des dossiers"),
        )
    })
}

/// The citizen `id` (an empty record when she cannot be read).
pub async fn citizen(app: &App, agent: &Agent, id: &str) -> dpb::Citizen {
    let mut d = app.clients.dossier.clone();
    d.get_citizen(
        app.clients
            .request(agent, dpb::GetCitizenRequest { id: id.to_owned() }),
    )
    .await
    .map(|c| c.into_inner())
    .unwrap_or_default()
}

/// The documents of a dossier (none when they cannot be read).
pub async fn documents(app: &App, agent: &Agent, dossier_id: &str) -> Vec<dpb::Document> {
    let mut d = app.clients.dossier.clone();
    d.list_documents(app.clients.request(
        agent,
        dpb::ListDocumentsRequest {
            dossier_id: dossier_id.to_owned(),
            page_size: 100,
            page_token: String::new(),
        },
    ))
    .await
    .map(|r| r.into_inner().documents)
    .unwrap_or_default()
}
