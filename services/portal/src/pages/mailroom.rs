//! Courrier (the mail room, `/courrier`): scanned letters. The quarantine
//! (files the scan role could not read, with the reason in French), which a
//! supervisor releases to be read again or forwards with the image only;
//! the letters read lately with their pages, OCR confidence and their
//! request in the queue; and a scan uploaded from the browser (a station
//! without a watched folder), streamed to the scan role.

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use guichet_platform::auth::Role;
use guichet_proto::routing::v1 as rpb;
use guichet_proto::scan::v1 as spb;
use serde::Deserialize;

use super::{Layout, Section, respond_with};
use crate::views;
use crate::web::{self, Agent, App};

/// The largest scan the browser may send (the scan role has its own limit).
pub const MAX_UPLOAD_BYTES: usize = 50 * 1024 * 1024;

pub struct QuarantineRow {
    pub id: String,
    pub filename: String,
    pub reason: &'static str,
    pub detail: String,
    pub received: String,
    pub released: u32,
}

pub struct LetterRow {
    pub filename: String,
    pub pages: u32,
    pub confidence: String,
    pub received: String,
    pub request: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "mailroom.html")]
struct MailroomPage {
    layout: Layout,
    may_release: bool,
    quarantine: Section<Vec<QuarantineRow>>,
    letters: Section<Vec<LetterRow>>,
    error: Option<String>,
}

pub fn reason_word(r: i32) -> &'static str {
    use spb::QuarantineReason as Q;
    match Q::try_from(r).unwrap_or(Q::Unspecified) {
        Q::EmptyFile => "fichier vide",
        Q::Truncated => "fichier tronqué (copie interrompue)",
        Q::UnsupportedType => "type de fichier non pris en charge (PDF, TIFF, PNG ou JPEG attendu)",
        Q::EncryptedPdf => "PDF protégé par un mot de passe",
        Q::Unreadable => "PDF illisible",
        Q::ImageTooSmall => "image trop petite pour être lue",
        Q::OcrTimeout => "lecture trop longue (délai dépassé)",
        Q::TooManyPages => "trop de pages",
        Q::TooLarge => "fichier trop volumineux",
        Q::NoText => "aucun texte trouvé (page blanche, photo)",
        Q::OcrFailed => "les outils de lecture ont échoué",
        Q::Unspecified => "raison inconnue",
    }
}

fn may_release(agent: &Agent) -> bool {
    agent.has(Role::Supervisor) || agent.has(Role::Admin)
}

async fn list(app: &App, agent: &Agent, filter: &str) -> Result<Vec<spb::ScanFile>, tonic::Status> {
    let mut s = app.clients.scan.clone();
    s.list_scan_files(app.clients.request(
        agent,
        spb::ListScanFilesRequest {
            page_size: 50,
            page_token: String::new(),
            filter: filter.to_owned(),
        },
    ))
    .await
    .map(|r| r.into_inner().scan_files)
}

async fn render(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let quarantine = Section::from(
        list(app, agent, "state = QUARANTINED").await.map(|l| {
            l.into_iter()
                .map(|f| QuarantineRow {
                    id: f.name.trim_start_matches("scanFiles/").to_owned(),
                    reason: reason_word(f.quarantine_reason),
                    received: views::ts(&f.received_at)
                        .map(views::when)
                        .unwrap_or_default(),
                    released: f.release_count,
                    detail: f.quarantine_detail,
                    filename: f.filename,
                })
                .collect()
        }),
        "Le service du courrier",
    );
    let letters = match list(app, agent, "state = PUBLISHED").await {
        Ok(l) => {
            let mut r = app.clients.routing.clone();
            let mut rows = Vec::new();
            for f in l.into_iter().take(20) {
                let request = if f.intake_event_id.is_empty() {
                    None
                } else {
                    r.get_work_item(app.clients.request(
                        agent,
                        rpb::GetWorkItemRequest {
                            intake_event_id: f.intake_event_id.clone(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .ok()
                    .map(|i| format!("/demande/{}", i.into_inner().id))
                };
                rows.push(LetterRow {
                    pages: f.page_count,
                    confidence: format!("{:.0} %", f.ocr_confidence * 100.0),
                    received: views::ts(&f.received_at)
                        .map(views::when)
                        .unwrap_or_default(),
                    filename: f.filename,
                    request,
                });
            }
            Section::done(rows)
        }
        Err(e) => Section::from(Err(e), "Le service du courrier"),
    };
    let page = MailroomPage {
        layout: Layout::new(app, agent, "courrier", headers),
        may_release: may_release(agent),
        quarantine,
        letters,
        error,
    };
    respond_with(app, &page, status)
}

pub async fn page(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    render(&app, &agent, &headers, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct ReleaseForm {
    csrf: String,
    #[serde(default)]
    sans_texte: String,
}

/// Read a quarantined file again, or forward it with the image only.
pub async fn release(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ReleaseForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    if !may_release(&agent) {
        return web::forbidden(
            "Seuls les superviseurs et les administrateurs libèrent le courrier en quarantaine.",
        );
    }
    let mut s = app.clients.scan.clone();
    let res = s
        .release_scan_file(app.clients.request(
            &agent,
            spb::ReleaseScanFileRequest {
                name: format!("scanFiles/{id}"),
                without_text: f.sans_texte == "1",
            },
        ))
        .await;
    match res {
        Ok(r) => {
            let f = r.into_inner();
            let message = if f.state == spb::ScanState::Published as i32 {
                format!("« {} » transmis : il est dans la file unique.", f.filename)
            } else {
                format!(
                    "« {} » reste en quarantaine : {}.",
                    f.filename,
                    reason_word(f.quarantine_reason)
                )
            };
            web::redirect_with("/courrier", &message, app.config.secure_cookies)
        }
        Err(e) => {
            render(
                &app,
                &agent,
                &headers,
                Some(web::explain(&e, "Le service du courrier")),
                StatusCode::CONFLICT,
            )
            .await
        }
    }
}

/// A scan sent from the browser, streamed to the scan role.
pub async fn upload(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let mut csrf = String::new();
    let mut file: Option<(String, String, Vec<u8>)> = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) => match field.name() {
                Some("csrf") => csrf = field.text().await.unwrap_or_default(),
                Some("fichier") => {
                    let name = field.file_name().unwrap_or("courrier").to_owned();
                    let ty = field.content_type().unwrap_or("").to_owned();
                    match field.bytes().await {
                        Ok(b) => file = Some((name, ty, b.to_vec())),
                        Err(_) => {
                            return render(
                                &app,
                                &agent,
                                &headers,
                                Some("Le fichier est trop volumineux (50 Mo au plus).".into()),
                                StatusCode::PAYLOAD_TOO_LARGE,
                            )
                            .await;
                        }
                    }
                }
                _ => {}
            },
            Ok(None) => break,
            Err(_) => {
                return render(
                    &app,
                    &agent,
                    &headers,
                    Some("L'envoi du fichier a échoué : réessayez.".into()),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
        }
    }
    if let Err(r) = web::check_csrf(&agent, &csrf) {
        return r;
    }
    let Some((filename, media_type, content)) = file.filter(|(_, _, c)| !c.is_empty()) else {
        return render(
            &app,
            &agent,
            &headers,
            Some("Choisissez le fichier scanné (PDF, TIFF, PNG ou JPEG).".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let mut parts = vec![spb::UploadScanRequest {
        part: Some(spb::upload_scan_request::Part::Metadata(
            spb::UploadMetadata {
                filename: filename.clone(),
                media_type,
                batch_id: format!("portail-{}", agent.subject),
            },
        )),
    }];
    parts.extend(content.chunks(256 * 1024).map(|c| spb::UploadScanRequest {
        part: Some(spb::upload_scan_request::Part::Chunk(c.to_vec())),
    }));
    let mut s = app.clients.scan.clone();
    let res = s
        .upload_scan(app.clients.request(&agent, futures::stream::iter(parts)))
        .await;
    match res {
        Ok(r) => {
            let f = r.into_inner();
            let message = if f.state == spb::ScanState::Published as i32 {
                format!(
                    "« {} » lu ({} page(s)) : il est dans la file unique.",
                    f.filename, f.page_count
                )
            } else {
                format!(
                    "« {} » mis en quarantaine : {}.",
                    f.filename,
                    reason_word(f.quarantine_reason)
                )
            };
            web::redirect_with("/courrier", &message, app.config.secure_cookies)
        }
        Err(e) => {
            render(
                &app,
                &agent,
                &headers,
                Some(web::explain(&e, "Le service du courrier")),
                StatusCode::BAD_GATEWAY,
            )
            .await
        }
    }
}
