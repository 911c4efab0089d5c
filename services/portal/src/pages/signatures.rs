//! Signatures of a dossier (`/dossier/<id>/signatures`): prepare a request
//! (a PDF of the dossier, its title, the signer and her mobile phone,
//! prefilled from the citizen), follow its status live (the signature
//! role's events, relayed over server-sent events), send a code again,
//! cancel; open the evidence and its verification (`/signature/<id>`).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use guichet_proto::signature::v1 as spb;
use serde::Deserialize;

use super::{Layout, Section, respond, respond_with};
use crate::views;
use crate::web::{self, Agent, App};

pub struct SignerRow {
    pub id: String,
    pub name: String,
    pub phone: String,
    pub status: &'static str,
    pub codes_sent: u32,
    pub signed_at: String,
}

pub struct RequestRow {
    pub id: String,
    pub title: String,
    pub status: &'static str,
    pub tag: &'static str,
    pub created: String,
    pub expires: String,
    pub pending: bool,
    pub signed: bool,
    pub signers: Vec<SignerRow>,
}

#[derive(askama::Template)]
#[template(path = "signatures.html")]
struct SignaturesPage {
    layout: Layout,
    dossier_id: String,
    reference: String,
    documents: Vec<(String, String)>,
    signer_name: String,
    signer_phone: String,
    request_id: String,
    list: Section<Vec<RequestRow>>,
    error: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "signatures_list.html")]
struct ListFragment {
    layout_csrf: String,
    dossier_id: String,
    list: Section<Vec<RequestRow>>,
}

fn status_word(s: i32) -> (&'static str, &'static str) {
    use spb::RequestStatus as R;
    match R::try_from(s).unwrap_or(R::Unspecified) {
        R::Pending => ("En attente de signature", "info"),
        R::Signed => ("Signé", "ok"),
        R::Declined => ("Refusé", "danger"),
        R::Expired => ("Expiré", "neutral"),
        R::Cancelled => ("Annulé", "neutral"),
        R::Locked => ("Bloqué (trop de codes)", "warn"),
        R::Unspecified => ("Inconnu", "neutral"),
    }
}

fn signer_word(s: &str) -> &'static str {
    match s {
        "signed" => "a signé",
        "declined" => "a refusé",
        "expired" => "délai dépassé",
        _ => "n'a pas encore signé",
    }
}

async fn requests(app: &App, agent: &Agent, dossier_id: &str) -> Section<Vec<RequestRow>> {
    let mut s = app.clients.signature.clone();
    let res = s
        .list_signature_requests(app.clients.request(
            agent,
            spb::ListSignatureRequestsRequest {
                page_size: 50,
                page_token: String::new(),
                filter: format!("dossier_id = \"{}\"", dossier_id.replace('"', "")),
            },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .signature_requests
                .into_iter()
                .map(|r| {
                    let (status, tag) = status_word(r.status);
                    RequestRow {
                        pending: r.status == spb::RequestStatus::Pending as i32,
                        signed: r.status == spb::RequestStatus::Signed as i32,
                        created: views::ts(&r.create_time)
                            .map(views::when)
                            .unwrap_or_default(),
                        expires: views::ts(&r.expire_time)
                            .map(views::when)
                            .unwrap_or_default(),
                        signers: r
                            .signers
                            .into_iter()
                            .map(|s| SignerRow {
                                status: signer_word(&s.status),
                                signed_at: views::ts(&s.sign_time)
                                    .map(views::when)
                                    .unwrap_or_default(),
                                codes_sent: s.codes_sent,
                                id: s.id,
                                name: s.name,
                                phone: s.masked_phone,
                            })
                            .collect(),
                        id: r.id,
                        title: r.title,
                        status,
                        tag,
                    }
                })
                .collect()
        });
    Section::from(res, "Le service des signatures")
}

async fn render_page(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    dossier_id: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let dossier = match super::lookup::dossier(app, agent, dossier_id).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let documents = super::lookup::documents(app, agent, &dossier.id)
        .await
        .into_iter()
        .filter(|doc| doc.media_type == "application/pdf")
        .map(|doc| (doc.sha256, doc.filename))
        .collect();
    let c = super::lookup::citizen(app, agent, &dossier.citizen_id).await;
    let (signer_name, signer_phone) = (
        format!("{} {}", c.given_name, c.family_name)
            .trim()
            .to_owned(),
        c.phones.first().cloned().unwrap_or_default(),
    );
    let page = SignaturesPage {
        layout: Layout::new(app, agent, "", headers),
        list: requests(app, agent, &dossier.id).await,
        dossier_id: dossier.id,
        reference: dossier.reference,
        documents,
        signer_name,
        signer_phone,
        request_id: uuid::Uuid::now_v7().to_string(),
        error,
    };
    respond_with(app, &page, status)
}

pub async fn page(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    render_page(&app, &agent, &headers, &id, None, StatusCode::OK).await
}

/// The requests, refreshed live.
pub async fn list(State(app): State<App>, agent: Agent, Path(id): Path<String>) -> Response {
    web::render(&ListFragment {
        layout_csrf: agent.csrf.clone(),
        list: requests(&app, &agent, &id).await,
        dossier_id: id,
    })
}

#[derive(Deserialize)]
pub struct CreateForm {
    csrf: String,
    #[serde(default)]
    document: String,
    #[serde(default)]
    titre: String,
    #[serde(default)]
    nom: String,
    #[serde(default)]
    telephone: String,
    #[serde(default)]
    jeton: String,
}

pub async fn create(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CreateForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let bad = |m: &str| {
        render_page(
            &app,
            &agent,
            &headers,
            &id,
            Some(m.to_owned()),
            StatusCode::BAD_REQUEST,
        )
    };
    if f.document.trim().is_empty() {
        return bad("Choisissez le document à faire signer (un PDF du dossier).").await;
    }
    if f.titre.trim().is_empty() || f.nom.trim().is_empty() || f.telephone.trim().is_empty() {
        return bad(
            "Indiquez le titre du document, le nom du signataire et son téléphone portable.",
        )
        .await;
    }
    let mut s = app.clients.signature.clone();
    let res = s
        .create_signature_request(app.clients.request(
            &agent,
            spb::CreateSignatureRequestRequest {
                dossier_id: id.clone(),
                document_sha256: f.document.trim().to_owned(),
                document_content: Vec::new(),
                title: f.titre.trim().to_owned(),
                process_template: String::new(),
                signers: vec![spb::Signer {
                    name: f.nom.trim().to_owned(),
                    phone: f.telephone.trim().to_owned(),
                    ..Default::default()
                }],
                consent_text: String::new(),
                expire_time: None,
                request_id: format!("portal-{}", f.jeton.trim()),
                send_codes: true,
            },
        ))
        .await;
    match res {
        Ok(r) => web::redirect_with(
            &format!("/dossier/{id}/signatures"),
            &format!(
                "Demande de signature « {} » envoyée : le code part par SMS.",
                r.get_ref().title
            ),
            app.config.secure_cookies,
        ),
        Err(e) => {
            let message = match e.code() {
                tonic::Code::InvalidArgument => format!("La demande est refusée : {}", e.message()),
                _ => web::explain(&e, "Le service des signatures"),
            };
            render_page(
                &app,
                &agent,
                &headers,
                &id,
                Some(message),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct ActForm {
    csrf: String,
    #[serde(default)]
    dossier: String,
    #[serde(default)]
    signataire: String,
}

/// `renvoyer` (a new code to a signer) or `annuler`.
pub async fn act(
    State(app): State<App>,
    agent: Agent,
    Path((id, step)): Path<(String, String)>,
    Form(f): Form<ActForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let back = format!(
        "/dossier/{}/signatures",
        f.dossier.replace(['/', '?', '#'], "")
    );
    let mut s = app.clients.signature.clone();
    let res = match step.as_str() {
        "renvoyer" => s
            .resend_code(app.clients.request(
                &agent,
                spb::SendCodeRequest {
                    signature_request_id: id,
                    signer_id: f.signataire.clone(),
                },
            ))
            .await
            .map(|r| {
                format!(
                    "Nouveau code envoyé par SMS ({} envoyé(s), encore {} possible(s)).",
                    r.get_ref().codes_sent,
                    r.get_ref().codes_left
                )
            }),
        "annuler" => s
            .cancel_signature_request(app.clients.request(
                &agent,
                spb::CancelSignatureRequestRequest {
                    id,
                    reason: "Annulée par la mairie".into(),
                },
            ))
            .await
            .map(|_| "Demande de signature annulée.".to_owned()),
        _ => {
            return web::error_page(
                StatusCode::NOT_FOUND,
                "Page introuvable",
                "Cette action n'existe pas.",
            );
        }
    };
    let message = match res {
        Ok(m) => m,
        Err(e) => match e.code() {
            tonic::Code::ResourceExhausted | tonic::Code::FailedPrecondition => {
                format!("Impossible pour le moment : {}", e.message())
            }
            _ => web::explain(&e, "Le service des signatures"),
        },
    };
    web::redirect_with(&back, &message, app.config.secure_cookies)
}

#[derive(askama::Template)]
#[template(path = "signature_evidence.html")]
struct EvidencePage {
    layout: Layout,
    title: String,
    dossier_id: String,
    valid: bool,
    seal_valid: bool,
    key_id: String,
    original: String,
    signed: String,
    evidence: String,
    findings: Vec<String>,
    signers: Vec<String>,
}

/// The evidence of a signed request and the verification of its seal.
pub async fn evidence(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut s = app.clients.signature.clone();
    let req = match s
        .get_signature_request(
            app.clients
                .request(&agent, spb::GetSignatureRequestRequest { id: id.clone() }),
        )
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            return web::error_page(
                StatusCode::NOT_FOUND,
                "Preuve de signature",
                &web::explain(&e, "Le service des signatures"),
            );
        }
    };
    let ev = match s
        .get_evidence(app.clients.request(
            &agent,
            spb::GetEvidenceRequest {
                signature_request_id: id.clone(),
                include_signed_document: false,
            },
        ))
        .await
    {
        Ok(e) => e.into_inner(),
        Err(e) => {
            return web::error_page(
                StatusCode::CONFLICT,
                "Preuve de signature",
                &web::explain(&e, "Le service des signatures"),
            );
        }
    };
    let checked = s
        .verify(app.clients.request(
            &agent,
            spb::VerifyRequest {
                document: Vec::new(),
                document_sha256: ev.signed_document_sha256.clone(),
                evidence_json: ev.evidence_json.clone(),
            },
        ))
        .await;
    let (valid, seal_valid, key_id, findings, signers) = match checked {
        Ok(v) => {
            let v = v.into_inner();
            (
                v.valid,
                v.seal_valid,
                v.key_id,
                v.findings,
                v.signers
                    .into_iter()
                    .map(|s| {
                        format!(
                            "{} — {}",
                            s.name,
                            views::ts(&s.sign_time).map(views::when).unwrap_or_default()
                        )
                    })
                    .collect(),
            )
        }
        Err(e) => (
            false,
            false,
            String::new(),
            vec![web::explain(&e, "Le service des signatures")],
            Vec::new(),
        ),
    };
    let page = EvidencePage {
        layout: Layout::new(&app, &agent, "", &headers),
        title: req.title,
        dossier_id: req.dossier_id,
        valid,
        seal_valid,
        key_id,
        original: req.document_sha256,
        signed: ev.signed_document_sha256,
        evidence: ev.evidence_sha256,
        findings,
        signers,
    };
    respond(&app, &page)
}

/// The signature role's changes (no personal data), for the live list.
pub async fn events(
    State(app): State<App>,
    _agent: Agent,
    axum::Extension(stop): axum::Extension<tokio_util::sync::CancellationToken>,
) -> Response {
    app.live.stream(stop, "signature").into_response()
}
