//! Email in the portal. **Courriels du dossier** (`/dossier/<id>/courriels`):
//! the dossier's thread, oldest first, each message's text with its quoted
//! history folded, its attachments (a blocked one with its reason); the
//! answer: a French text module of the procedure with its placeholders
//! filled, a preview before sending, documents of the dossier attached;
//! the email role threads it to the citizen's message and records it on
//! the timeline. **Modèles de réponse** (`/modeles`, admins): the modules.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use guichet_platform::auth::Role;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::email::v1 as epb;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};
use serde::Deserialize;

use super::{Layout, Section, respond_with};
use crate::db::entities::text_module;
use crate::views;
use crate::web::{self, Agent, App};

pub struct Part {
    pub filename: String,
    pub size: String,
    pub blocked: Option<&'static str>,
}

pub struct Message {
    pub inbound: bool,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub when: String,
    pub text: String,
    /// The whole text when it differs (quoted history, signature).
    pub full: Option<String>,
    pub parts: Vec<Part>,
    pub automatic: bool,
}

#[derive(askama::Template)]
#[template(path = "mail.html")]
struct MailPage {
    layout: Layout,
    dossier_id: String,
    reference: String,
    citizen: String,
    messages: Section<Vec<Message>>,
    modules: Vec<(String, String)>,
    chosen: String,
    text: String,
    preview: Option<String>,
    documents: Vec<(String, String, String, bool)>,
    request_id: String,
    error: Option<String>,
}

fn blocked_word(reason: &str) -> Option<&'static str> {
    match reason {
        "" => None,
        "too_large" => Some("bloquée : trop volumineuse"),
        "forbidden_type" => Some("bloquée : type de fichier refusé"),
        "too_many_parts" => Some("bloquée : trop de pièces jointes"),
        _ => Some("bloquée"),
    }
}

fn size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} o")
    } else if bytes < 1024 * 1024 {
        format!("{} Ko", bytes.div_ceil(1024))
    } else {
        format!("{:.1} Mo", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// The module's text with the dossier's values in its placeholders.
pub fn fill(
    body: &str,
    given: &str,
    family: &str,
    reference: &str,
    agent: &str,
    hall: &str,
) -> String {
    body.replace("{prenom}", given)
        .replace("{nom}", family)
        .replace("{reference}", reference)
        .replace("{agent}", agent)
        .replace("{mairie}", hall)
}

struct Context {
    dossier: dpb::Dossier,
    citizen: dpb::Citizen,
}

async fn context(app: &App, agent: &Agent, id: &str) -> Result<Context, Response> {
    let dossier = super::lookup::dossier(app, agent, id).await?;
    let citizen = super::lookup::citizen(app, agent, &dossier.citizen_id).await;
    Ok(Context { dossier, citizen })
}

#[allow(clippy::too_many_arguments)]
async fn render(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    cx: Context,
    chosen: String,
    text: String,
    preview: Option<String>,
    attached: &[String],
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let mut e = app.clients.email.clone();
    let listed = e
        .list_email_messages(app.clients.request(
            agent,
            epb::ListEmailMessagesRequest {
                page_size: 200,
                page_token: String::new(),
                filter: format!("dossier_id = \"{}\"", cx.dossier.id.replace('"', "")),
            },
        ))
        .await
        .map(|r| {
            let mut list = r.into_inner().email_messages;
            list.sort_by_key(|m| m.create_time.as_ref().map(|t| (t.seconds, t.nanos)));
            list.into_iter()
                .map(|m| Message {
                    inbound: m.direction == epb::Direction::In as i32,
                    when: views::ts(&m.create_time)
                        .map(views::when)
                        .unwrap_or_default(),
                    full: (!m.full_text.trim().is_empty() && m.full_text.trim() != m.text.trim())
                        .then(|| m.full_text.clone()),
                    parts: m
                        .parts
                        .iter()
                        .filter(|p| !p.inline || !p.rejected_reason.is_empty())
                        .map(|p| Part {
                            filename: if p.filename.is_empty() {
                                "(sans nom)".into()
                            } else {
                                p.filename.clone()
                            },
                            size: size(p.size_bytes),
                            blocked: blocked_word(&p.rejected_reason),
                        })
                        .collect(),
                    automatic: m.auto_submitted,
                    from: m.from_address,
                    to: m.to_address,
                    subject: m.subject,
                    text: m.text,
                })
                .collect()
        });
    let messages = Section::from(listed, "Le service des courriels");
    let modules = text_module::Entity::find()
        .filter(
            text_module::Column::ProcessId.is_in([cx.dossier.process_id.clone(), String::new()]),
        )
        .order_by_asc(text_module::Column::Title)
        .all(&app.db)
        .await
        .map(|l| l.into_iter().map(|m| (m.id, m.title)).collect())
        .unwrap_or_default();
    let documents = super::lookup::documents(app, agent, &cx.dossier.id)
        .await
        .into_iter()
        .map(|doc| {
            let checked = attached.contains(&doc.sha256);
            (doc.sha256, doc.filename, doc.media_type, checked)
        })
        .collect();
    let page = MailPage {
        layout: Layout::new(app, agent, "", headers),
        citizen: views::citizen_name(&cx.citizen),
        dossier_id: cx.dossier.id,
        reference: cx.dossier.reference,
        messages,
        modules,
        chosen,
        text,
        preview,
        documents,
        request_id: uuid::Uuid::now_v7().to_string(),
        error,
    };
    respond_with(app, &page, status)
}

#[derive(Deserialize, Default)]
pub struct UseModule {
    #[serde(default)]
    modele: String,
}

pub async fn page(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<UseModule>,
) -> Response {
    let cx = match context(&app, &agent, &id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let text = if q.modele.is_empty() {
        String::new()
    } else {
        match text_module::Entity::find_by_id(q.modele.clone())
            .one(&app.db)
            .await
        {
            Ok(Some(m)) => fill(
                &m.body,
                &cx.citizen.given_name,
                &cx.citizen.family_name,
                &cx.dossier.reference,
                &agent.display_name,
                &app.town.hall(),
            ),
            _ => String::new(),
        }
    };
    render(
        &app,
        &agent,
        &headers,
        cx,
        q.modele,
        text,
        None,
        &[],
        None,
        StatusCode::OK,
    )
    .await
}

/// `apercu` (render the answer as it will leave) or `envoyer`.
pub async fn answer(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if let Err(r) = web::check_csrf(&agent, &get("csrf")) {
        return r;
    }
    let cx = match context(&app, &agent, &id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let text = get("texte").trim().to_owned();
    let attached: Vec<String> = fields
        .iter()
        .filter(|(n, _)| n == "piece")
        .map(|(_, v)| v.clone())
        .collect();
    if text.is_empty() {
        return render(
            &app,
            &agent,
            &headers,
            cx,
            get("modele"),
            text,
            None,
            &attached,
            Some("Écrivez la réponse (ou choisissez un modèle).".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    if get("action") != "envoyer" {
        let preview = Some(text.clone());
        return render(
            &app,
            &agent,
            &headers,
            cx,
            get("modele"),
            text,
            preview,
            &attached,
            None,
            StatusCode::OK,
        )
        .await;
    }
    let attachments = super::lookup::documents(&app, &agent, &cx.dossier.id)
        .await
        .into_iter()
        .filter(|doc| attached.contains(&doc.sha256))
        .map(|doc| epb::ReplyAttachment {
            sha256: doc.sha256,
            filename: doc.filename,
            media_type: doc.media_type,
        })
        .collect();
    let mut e = app.clients.email.clone();
    let res = e
        .send_reply(app.clients.request(
            &agent,
            epb::SendReplyRequest {
                dossier_id: cx.dossier.id.clone(),
                text: text.clone(),
                attachments,
                request_id: format!("portal-{}", get("jeton").trim()),
            },
        ))
        .await;
    match res {
        Ok(m) => web::redirect_with(
            &format!("/dossier/{}/courriels", cx.dossier.id),
            &format!("Réponse envoyée à {}.", m.get_ref().to_address),
            app.config.secure_cookies,
        ),
        Err(err) => {
            let message = match err.code() {
                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
                    format!("La réponse n'est pas partie : {}", err.message())
                }
                _ => web::explain(&err, "Le service des courriels"),
            };
            render(
                &app,
                &agent,
                &headers,
                cx,
                get("modele"),
                text,
                None,
                &attached,
                Some(message),
                StatusCode::CONFLICT,
            )
            .await
        }
    }
}

pub fn may_edit(agent: &Agent) -> bool {
    agent.has(Role::Admin)
}

pub struct ModuleRow {
    pub id: String,
    pub process: String,
    pub title: String,
    pub body: String,
    pub updated: String,
}

#[derive(askama::Template)]
#[template(path = "modules.html")]
struct ModulesPage {
    layout: Layout,
    rows: Vec<ModuleRow>,
    processes: Vec<(String, String)>,
    error: Option<String>,
}

async fn modules_page(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let titles = app.catalog.titles(&app.clients, agent).await;
    let rows = text_module::Entity::find()
        .order_by_asc(text_module::Column::ProcessId)
        .order_by_asc(text_module::Column::Title)
        .all(&app.db)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|m| ModuleRow {
            process: if m.process_id.is_empty() {
                "Toutes les démarches".into()
            } else {
                titles
                    .get(&m.process_id)
                    .cloned()
                    .unwrap_or(m.process_id.clone())
            },
            updated: format!("{} par {}", views::when(m.update_time), m.updated_by),
            id: m.id,
            title: m.title,
            body: m.body,
        })
        .collect();
    let page = ModulesPage {
        layout: Layout::new(app, agent, "modeles", headers),
        rows,
        processes: titles.into_iter().collect(),
        error,
    };
    respond_with(app, &page, status)
}

fn admins_only() -> Response {
    web::forbidden("Seuls les administrateurs modifient les modèles de réponse.")
}

pub async fn modules(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    if !may_edit(&agent) {
        return admins_only();
    }
    modules_page(&app, &agent, &headers, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct ModuleForm {
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    demarche: String,
    #[serde(default)]
    titre: String,
    #[serde(default)]
    texte: String,
    #[serde(default)]
    supprimer: String,
}

/// Create, change (same id) or delete a module.
pub async fn save_module(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(f): Form<ModuleForm>,
) -> Response {
    if !may_edit(&agent) {
        return admins_only();
    }
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let secure = app.config.secure_cookies;
    if f.supprimer == "1" {
        return match text_module::Entity::delete_by_id(f.id.clone())
            .exec(&app.db)
            .await
        {
            Ok(_) => web::redirect_with("/modeles", "Modèle supprimé.", secure),
            Err(e) => {
                tracing::error!(error = %e, "cannot delete a text module");
                modules_page(
                    &app,
                    &agent,
                    &headers,
                    Some("Le modèle n'a pas pu être supprimé.".into()),
                    StatusCode::SERVICE_UNAVAILABLE,
                )
                .await
            }
        };
    }
    let title = f.titre.trim();
    let body = f.texte.trim();
    if title.is_empty()
        || title.chars().count() > 120
        || body.is_empty()
        || body.chars().count() > 8000
    {
        return modules_page(
            &app,
            &agent,
            &headers,
            Some(
                "Donnez un titre (120 caractères au plus) et un texte (8 000 caractères au plus)."
                    .into(),
            ),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let row = text_module::ActiveModel {
        id: Set(if f.id.trim().is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            f.id.trim().to_owned()
        }),
        process_id: Set(f.demarche.trim().to_owned()),
        title: Set(title.to_owned()),
        body: Set(body.to_owned()),
        updated_by: Set(agent.display_name.clone()),
        update_time: Set(app.now()),
    };
    let saved = if f.id.trim().is_empty() {
        row.insert(&app.db).await.map(|_| ())
    } else {
        row.update(&app.db).await.map(|_| ())
    };
    match saved {
        Ok(()) => web::redirect_with(
            "/modeles",
            &format!("Modèle « {title} » enregistré."),
            secure,
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot save a text module");
            modules_page(
                &app,
                &agent,
                &headers,
                Some("Le modèle n'a pas pu être enregistré.".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            )
            .await
        }
    }
}
