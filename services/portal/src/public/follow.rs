//! Suivre ma demande: with the dossier's reference and its follow code
//! (given in the acknowledgement and by the agents; never the reference
//! alone), the state of the request in plain words, the public notes,
//! what the town still needs (the checklist's missing documents) and a way
//! to send them (uploaded to the dossier, the dossier role's size and type
//! limits apply).
//!
//! Both are posted, so neither sits in a URL or a log. A wrong code and an
//! unknown reference get the same answer, after the same work in the
//! dossier role (`FollowDossier`). Wrong tries count against the visitor
//! session and the address like booking attempts.

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use guichet_proto::convert::datetime;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::Channel;
use serde::Deserialize;
use tonic::Code;

use super::guard::Purpose;
use super::{Layout, Public, Visitor, refused, respond, unavailable, when};

#[derive(askama::Template)]
#[template(path = "public/follow_form.html")]
struct FollowForm {
    layout: Layout,
    csrf: String,
    reference: String,
    error: Option<String>,
}

fn form_page(
    p: &Public,
    visitor: &Visitor,
    reference: String,
    error: Option<String>,
    headers: &HeaderMap,
) -> Response {
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = FollowForm {
        layout: Layout::new(p, "suivre", headers),
        csrf: p.guard.form_token(&visitor.id, Purpose::Follow, p.now()),
        reference,
        error,
    };
    (status, respond(p, &page)).into_response()
}

pub async fn form(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
) -> Response {
    form_page(&p, &visitor, String::new(), None, &headers)
}

#[derive(Debug, Default, Deserialize)]
pub struct Asked {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    code: String,
}

/// One checklist line as the citizen reads it.
pub struct Needed {
    pub id: String,
    pub title: String,
    pub required: bool,
    pub provided: bool,
}

pub struct NoteView {
    pub when: String,
    pub text: String,
}

#[derive(askama::Template)]
#[template(path = "public/follow.html")]
struct FollowPage {
    layout: Layout,
    csrf: String,
    reference: String,
    code: String,
    process: String,
    state: String,
    closed: bool,
    opened: String,
    updated: String,
    notes: Vec<NoteView>,
    checklist: Vec<Needed>,
    missing: usize,
    alert: Option<String>,
    done: Option<String>,
}

fn at(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(datetime)
        .map(|t: DateTime<Utc>| when(t))
        .unwrap_or_default()
}

/// What the dossier role lets the citizen see, or the one refusal.
async fn followed(
    p: &Public,
    reference: &str,
    code: &str,
) -> Result<Option<dpb::FollowedDossier>, tonic::Status> {
    let mut c = p.app.clients.dossier.clone();
    match c
        .follow_dossier(p.app.clients.public(dpb::FollowDossierRequest {
            reference: reference.trim().to_owned(),
            follow_code: code.trim().to_owned(),
        }))
        .await
    {
        Ok(d) => Ok(Some(d.into_inner())),
        Err(e) if matches!(e.code(), Code::NotFound | Code::InvalidArgument) => Ok(None),
        Err(e) => Err(e),
    }
}

#[allow(clippy::too_many_arguments)]
fn dossier_page(
    p: &Public,
    visitor: &Visitor,
    d: dpb::FollowedDossier,
    code: &str,
    alert: Option<String>,
    done: Option<String>,
    status: StatusCode,
    headers: &HeaderMap,
) -> Response {
    let checklist: Vec<Needed> = d
        .checklist
        .iter()
        .map(|c| Needed {
            id: c.document_id.clone(),
            title: c.title.clone(),
            required: c.required,
            provided: c.provided,
        })
        .collect();
    let page = FollowPage {
        layout: Layout::new(p, "suivre", headers),
        csrf: p.guard.form_token(&visitor.id, Purpose::Follow, p.now()),
        missing: checklist.iter().filter(|c| !c.provided).count(),
        checklist,
        reference: d.reference.clone(),
        code: code.trim().to_owned(),
        process: d.process_title.clone(),
        state: d.state_title.clone(),
        closed: d.closed,
        opened: at(&d.create_time),
        updated: at(&d.update_time),
        notes: d
            .notes
            .iter()
            .map(|n| NoteView {
                when: at(&n.time),
                text: n.text.clone(),
            })
            .collect(),
        alert,
        done,
    };
    (status, respond(p, &page)).into_response()
}

const WRONG: &str = "Référence ou code de suivi incorrect. Vérifiez-les dans l'accusé de réception (la référence ressemble à VIN-2026-000123) et réessayez.";

pub async fn show(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    axum::Form(a): axum::Form<Asked>,
) -> Response {
    let now = p.now();
    if let Err(why) = p
        .guard
        .check_form(Some(&visitor.id), &a.csrf, Purpose::Follow, now)
    {
        return refused(&p, why);
    }
    if let Err(why) = p.guard.attempt(&visitor.id, now) {
        return refused(&p, why);
    }
    match followed(&p, &a.reference, &a.code).await {
        Ok(Some(d)) => dossier_page(
            &p,
            &visitor,
            d,
            &a.code,
            None,
            None,
            StatusCode::OK,
            &headers,
        ),
        Ok(None) => form_page(&p, &visitor, a.reference, Some(WRONG.into()), &headers),
        Err(e) => unavailable(&p, &e),
    }
}

/// A document the town still needs, sent by the citizen.
pub async fn upload(
    State(p): State<Public>,
    axum::Extension(visitor): axum::Extension<Visitor>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let (mut csrf, mut reference, mut code, mut kind) =
        (String::new(), String::new(), String::new(), String::new());
    let mut file: Option<(String, String, Vec<u8>)> = None;
    let received: Result<(), ()> = async {
        while let Some(field) = form.next_field().await.map_err(drop)? {
            match field.name().unwrap_or_default() {
                "csrf" => csrf = field.text().await.unwrap_or_default(),
                "reference" => reference = field.text().await.unwrap_or_default(),
                "code" => code = field.text().await.unwrap_or_default(),
                "piece" => kind = field.text().await.unwrap_or_default(),
                "fichier" => {
                    let filename = field.file_name().unwrap_or_default().to_owned();
                    let media = field
                        .content_type()
                        .unwrap_or("application/octet-stream")
                        .to_owned();
                    let bytes = field.bytes().await.map_err(drop)?;
                    file = Some((filename, media, bytes.to_vec()));
                }
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    let now = p.now();
    if let Err(why) = p
        .guard
        .check_form(Some(&visitor.id), &csrf, Purpose::Follow, now)
    {
        return refused(&p, why);
    }
    let d = match followed(&p, &reference, &code).await {
        Ok(Some(d)) => d,
        Ok(None) => return form_page(&p, &visitor, reference, Some(WRONG.into()), &headers),
        Err(e) => return unavailable(&p, &e),
    };
    let refuse = |p: &Public, d, message: &str| {
        dossier_page(
            p,
            &visitor,
            d,
            &code,
            Some(message.to_owned()),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            &headers,
        )
    };
    if received.is_err() {
        return refuse(&p, d, "Le fichier n'a pas pu être reçu : 20 Mo au plus.");
    }
    let Some((filename, media, content)) = file.filter(|(n, _, c)| !n.is_empty() && !c.is_empty())
    else {
        return refuse(&p, d, "Choisissez le fichier à envoyer.");
    };
    let Some(item) = d.checklist.iter().find(|c| c.document_id == kind).cloned() else {
        return refuse(&p, d, "Choisissez la pièce que vous envoyez.");
    };
    let mut c = p.app.clients.dossier.clone();
    let res = c
        .add_document(p.app.clients.public(dpb::AddDocumentRequest {
            dossier_id: d.dossier_id.clone(),
            filename,
            media_type: media,
            document_type: item.document_id.clone(),
            source_channel: Channel::Unspecified as i32,
            content,
            stored: None,
        }))
        .await;
    match res {
        Ok(_) => {
            metrics::counter!("guichet_portal_public_documents_total").increment(1);
            tracing::info!(dossier_id = %d.dossier_id, document_type = %item.document_id, "citizen sent a document");
            let fresh = match followed(&p, &reference, &code).await {
                Ok(Some(f)) => f,
                Ok(None) => d,
                Err(e) => return unavailable(&p, &e),
            };
            dossier_page(
                &p,
                &visitor,
                fresh,
                &code,
                None,
                Some(format!(
                    "Pièce reçue : « {} ». Elle est jointe à votre dossier ; un agent la vérifiera.",
                    item.title
                )),
                StatusCode::OK,
                &headers,
            )
        }
        Err(e) if e.code() == Code::InvalidArgument => refuse(
            &p,
            d,
            "Ce fichier n'est pas accepté : envoyez un PDF, une photo (JPEG, PNG) ou un document texte, de 20 Mo au plus.",
        ),
        Err(e) => unavailable(&p, &e),
    }
}
