//! La fiche: a work item, a dossier or a citizen, with the citizen's
//! identity, all their dossiers, the dossier's process guidance and the
//! timeline across channels; and the actions taken from it.

use axum::Form;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::{AttachmentRef, Channel};
use guichet_proto::routing::v1 as rpb;
use serde::{Deserialize, Serialize};

use super::queue::{Row, processes, queues, row};
use super::{Layout, Section, respond};
use crate::session::Session;
use crate::views::{self, Tag};
use crate::web::{self, Agent, App};

const TIMELINE_PAGE: i32 = 30;

pub struct Candidate {
    pub citizen_id: String,
    pub name: String,
    pub why: String,
    pub confidence: u32,
}

pub struct ItemView {
    pub row: Row,
    pub sla_due: String,
    pub correlation: String,
    pub candidates: Vec<Candidate>,
    /// What the agent must know before trusting the request (unverified
    /// sender, mail claiming to be the town's, a burst).
    pub warnings: Vec<String>,
    pub open: bool,
    /// A telephony request she holds: callbacks made and unanswered.
    pub callback: Option<(u32, u32)>,
}

pub struct CitizenView {
    pub id: String,
    pub name: String,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    pub address: String,
    pub since: String,
}

pub struct DossierRow {
    pub id: String,
    pub reference: String,
    pub process: String,
    pub state: String,
    pub state_class: &'static str,
    pub opened: String,
}

pub struct Check {
    pub document_id: String,
    pub title: String,
    pub required: bool,
    pub provided: bool,
}

pub struct NextAction {
    pub to_state: String,
    pub label: String,
    pub requires_reason: bool,
    pub allowed: bool,
    pub blocked: String,
}

pub struct Doc {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub size: String,
    pub when: String,
}

pub struct DossierView {
    pub id: String,
    pub citizen_id: String,
    pub reference: String,
    /// What the citizen follows the dossier with on the public pages.
    pub follow_code: String,
    pub process: String,
    pub version: u32,
    pub state: String,
    pub state_class: &'static str,
    pub revision: i64,
    pub sla: Tag,
    pub sla_due: String,
    pub restricted: bool,
    pub guidance: Vec<String>,
    pub checklist: Vec<Check>,
    pub actions: Vec<NextAction>,
    pub state_actions: Vec<String>,
    pub documents: Vec<Doc>,
}

pub struct Entry {
    pub iso: String,
    pub when: String,
    pub channel: Tag,
    pub kind: &'static str,
    pub private: bool,
    pub dossier: String,
    pub summary: String,
}

pub struct Timeline {
    pub entries: Vec<Entry>,
    pub next: Option<String>,
}

#[derive(Deserialize, Serialize, Default, Clone)]
pub struct TimelineFilters {
    #[serde(default)]
    pub canal: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub du: String,
    #[serde(default)]
    pub au: String,
    #[serde(default)]
    pub suite: String,
}

/// What a failed form keeps: the message, the field it is about, what was
/// typed.
#[derive(Default)]
pub struct Values {
    pub resultat: String,
    pub motif: String,
    pub texte: String,
}

#[derive(Default)]
pub struct FormState {
    pub error: Option<String>,
    pub field: String,
    pub values: Values,
}

#[derive(askama::Template)]
#[template(path = "fiche.html")]
struct FichePage {
    layout: Layout,
    title: String,
    form_error: Option<String>,
    field: String,
    values: Values,
    item: Option<ItemView>,
    citizen: Section<CitizenView>,
    citizen_id: Option<String>,
    dossiers: Section<Vec<DossierRow>>,
    dossier: Option<Section<DossierView>>,
    timeline: Section<Timeline>,
    timeline_filters: TimelineFilters,
    self_path: String,
    channels: &'static [(&'static str, &'static str)],
    kinds: Vec<(&'static str, &'static str)>,
    queues: Vec<(String, String)>,
    processes: Vec<(String, String)>,
}

async fn citizen_view(app: &App, agent: &Session, id: &str) -> Section<CitizenView> {
    let mut c = app.clients.dossier.clone();
    let res = c
        .get_citizen(
            app.clients
                .request(agent, dpb::GetCitizenRequest { id: id.to_owned() }),
        )
        .await
        .map(|r| {
            let c = r.into_inner();
            let address = c
                .address
                .as_ref()
                .map(|a| {
                    [a.lines.join(", "), format!("{} {}", a.postal_code, a.city)]
                        .iter()
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            CitizenView {
                id: c.id.clone(),
                name: views::citizen_name(&c),
                phones: c.phones.clone(),
                emails: c.emails.clone(),
                address,
                since: views::ts(&c.create_time)
                    .map(views::when)
                    .unwrap_or_default(),
            }
        });
    Section::from(res, "Le service des dossiers")
}

fn state_class(d: &dpb::Dossier) -> &'static str {
    if d.closed { "neutral" } else { "info" }
}

async fn dossier_rows(app: &App, agent: &Session, citizen_id: &str) -> Section<Vec<DossierRow>> {
    let mut c = app.clients.dossier.clone();
    let res = c
        .list_dossiers(app.clients.request(
            agent,
            dpb::ListDossiersRequest {
                citizen_id: citizen_id.to_owned(),
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .dossiers
                .iter()
                .map(|d| DossierRow {
                    id: d.id.clone(),
                    reference: d.reference.clone(),
                    process: d.process_title.clone(),
                    state: d.state_title.clone(),
                    state_class: state_class(d),
                    opened: views::ts(&d.create_time)
                        .map(views::when)
                        .unwrap_or_default(),
                })
                .collect()
        });
    Section::from(res, "Le service des dossiers")
}

fn size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} o")
    } else if bytes < 1024 * 1024 {
        format!("{} Ko", bytes / 1024)
    } else {
        format!("{:.1} Mo", bytes as f64 / (1024.0 * 1024.0))
    }
}

fn state_action(a: &dpb::StateAction) -> String {
    match a.kind.as_str() {
        "send_message" => format!("Message « {} » envoyé au citoyen", a.template),
        "request_signature" => "Demande de signature électronique envoyée au citoyen".to_owned(),
        "book_appointment" => format!("Proposition de rendez-vous ({})", a.appointment_type),
        other => other.to_owned(),
    }
}

async fn dossier_view(app: &App, agent: &Session, id: &str) -> Result<DossierView, tonic::Status> {
    let mut c = app.clients.dossier.clone();
    let d = c
        .get_dossier(
            app.clients
                .request(agent, dpb::GetDossierRequest { id: id.to_owned() }),
        )
        .await?
        .into_inner();
    let (guidance, documents, process) = {
        let mut g = app.clients.dossier.clone();
        let mut l = app.clients.dossier.clone();
        let mut p = app.clients.dossier.clone();
        tokio::join!(
            g.get_guidance(app.clients.request(
                agent,
                dpb::GetGuidanceRequest {
                    dossier_id: d.id.clone()
                }
            )),
            l.list_documents(app.clients.request(
                agent,
                dpb::ListDocumentsRequest {
                    dossier_id: d.id.clone(),
                    page_size: 100,
                    ..Default::default()
                },
            )),
            p.get_process(app.clients.request(
                agent,
                dpb::GetProcessRequest {
                    id: d.process_id.clone(),
                    version: d.process_version,
                },
            ))
        )
    };
    let guidance = guidance?.into_inner();
    let documents = documents
        .map(|r| r.into_inner().documents)
        .unwrap_or_default();
    let restricted = process
        .map(|p| !p.into_inner().restricted_group.is_empty())
        .unwrap_or(false);
    Ok(DossierView {
        id: d.id.clone(),
        citizen_id: d.citizen_id.clone(),
        reference: d.reference.clone(),
        follow_code: d.follow_code.clone(),
        process: d.process_title.clone(),
        version: d.process_version,
        state: d.state_title.clone(),
        state_class: state_class(&d),
        revision: d.revision,
        sla: views::dossier_sla(guidance.sla_status),
        sla_due: views::ts(&guidance.sla_due_time)
            .map(views::when)
            .unwrap_or_default(),
        restricted,
        guidance: paragraphs(&guidance.guidance),
        checklist: guidance
            .checklist
            .iter()
            .map(|c| Check {
                document_id: c.document_id.clone(),
                title: c.title.clone(),
                required: c.required,
                provided: c.provided,
            })
            .collect(),
        actions: guidance
            .next_actions
            .iter()
            .map(|a| NextAction {
                to_state: a.to_state.clone(),
                label: if a.label.is_empty() {
                    a.to_state_title.clone()
                } else {
                    a.label.clone()
                },
                requires_reason: a.requires_reason,
                allowed: a.allowed,
                blocked: a.blocked_reason.clone(),
            })
            .collect(),
        state_actions: guidance.actions.iter().map(state_action).collect(),
        documents: documents
            .iter()
            .map(|doc| Doc {
                id: doc.id.clone(),
                name: if doc.filename.is_empty() {
                    "(sans nom)".to_owned()
                } else {
                    doc.filename.clone()
                },
                kind: doc.document_type.clone(),
                size: size(doc.size_bytes),
                when: views::ts(&doc.create_time)
                    .map(views::when)
                    .unwrap_or_default(),
            })
            .collect(),
    })
}

/// The guidance as paragraphs: a process file wraps its sentences over
/// several lines; a line ending a sentence (or a blank line) ends one.
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
        if line.ends_with(['.', '!', '?', ':', '»']) {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn timeline_filter(f: &TimelineFilters) -> dpb::TimelineFilter {
    let day = |s: &str| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(guichet_platform::calendar::from_paris)
    };
    dpb::TimelineFilter {
        channels: Channel::from_slug(&f.canal)
            .map(|c| vec![c as i32])
            .unwrap_or_default(),
        kinds: views::ENTRY_KINDS
            .iter()
            .find(|(slug, _, _)| *slug == f.kind)
            .map(|(_, _, k)| vec![*k as i32])
            .unwrap_or_default(),
        start_time: day(&f.du).map(guichet_proto::convert::timestamp),
        // "au" is inclusive: up to the next midnight.
        end_time: day(&f.au)
            .map(|d| d + chrono::Duration::days(1))
            .map(guichet_proto::convert::timestamp),
    }
}

async fn timeline(
    app: &App,
    agent: &Session,
    citizen_id: &str,
    f: &TimelineFilters,
    path: &str,
) -> Section<Timeline> {
    let mut c = app.clients.dossier.clone();
    let res = c
        .list_citizen_timeline(app.clients.request(
            agent,
            dpb::ListCitizenTimelineRequest {
                citizen_id: citizen_id.to_owned(),
                page_size: TIMELINE_PAGE,
                page_token: f.suite.clone(),
                filter: Some(timeline_filter(f)),
            },
        ))
        .await
        .map(|r| {
            let r = r.into_inner();
            let next = (!r.next_page_token.is_empty()).then(|| {
                let mut more = f.clone();
                more.suite = r.next_page_token.clone();
                format!(
                    "{path}?{}",
                    serde_urlencoded::to_string(&more).unwrap_or_default()
                )
            });
            Timeline {
                entries: r
                    .entries
                    .iter()
                    .map(|e| {
                        let at = views::ts(&e.occur_time).unwrap_or_else(|| app.now());
                        Entry {
                            iso: views::iso(at),
                            when: views::when(at),
                            channel: views::channel(e.channel),
                            kind: views::entry_kind(e.kind),
                            private: e.visibility == dpb::NoteVisibility::Private as i32,
                            dossier: e.dossier_id.clone(),
                            summary: e.summary.clone(),
                        }
                    })
                    .collect(),
                next,
            }
        });
    Section::from(res, "L'historique")
}

/// What the fiche is about.
enum Subject {
    Item(String),
    Dossier(String),
    Citizen(String),
}

async fn fiche(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    subject: Subject,
    tf: TimelineFilters,
    form: FormState,
) -> Response {
    let mut status = if form.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let (self_path, mut item, mut dossier_id, mut citizen_id) = match &subject {
        Subject::Item(id) => (format!("/demande/{id}"), None, None, None),
        Subject::Dossier(id) => (format!("/dossier/{id}"), None, Some(id.clone()), None),
        Subject::Citizen(id) => (format!("/citoyen/{id}"), None, None, Some(id.clone())),
    };
    let mut title = String::new();
    if let Subject::Item(id) = &subject {
        let mut c = app.clients.routing.clone();
        match c
            .get_work_item(app.clients.request(
                agent,
                rpb::GetWorkItemRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            ))
            .await
        {
            Ok(r) => {
                let w = r.into_inner();
                if !w.dossier_id.is_empty() {
                    dossier_id = Some(w.dossier_id.clone());
                }
                if !w.citizen_id.is_empty() {
                    citizen_id = Some(w.citizen_id.clone());
                }
                let titles = app.catalog.titles(&app.clients, agent).await;
                let mut candidates = Vec::new();
                for cand in &w.candidates {
                    let name = match citizen_view(app, agent, &cand.citizen_id).await.ok {
                        Some(v) => v.name,
                        None => "Citoyen".to_owned(),
                    };
                    candidates.push(Candidate {
                        citizen_id: cand.citizen_id.clone(),
                        name,
                        why: cand.why.clone(),
                        confidence: (cand.confidence * 100.0).round() as u32,
                    });
                }
                let open = matches!(
                    rpb::WorkItemStatus::try_from(w.status),
                    Ok(rpb::WorkItemStatus::Assigned | rpb::WorkItemStatus::Wrapping)
                ) && w.agent_id == agent.subject;
                let r = row(app, &w, &titles, &Default::default());
                title = format!("Demande — {}", r.channel.word);
                item = Some(ItemView {
                    sla_due: views::ts(&w.sla_due_time)
                        .map(views::when)
                        .unwrap_or_default(),
                    correlation: correlation(&w.correlation).to_owned(),
                    candidates,
                    warnings: w.warnings.clone(),
                    callback: (open
                        && w.channel == guichet_proto::intake::v1::Channel::Telephony as i32)
                        .then_some((w.callback_attempts, w.callback_unanswered)),
                    open,
                    row: r,
                });
            }
            Err(e) => {
                let code = if e.code() == tonic::Code::NotFound {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_GATEWAY
                };
                return web::error_page(code, "Demande", &web::explain(&e, "La file d'attente"));
            }
        }
    }
    let dossier = match &dossier_id {
        Some(id) => {
            let res = dossier_view(app, agent, id).await;
            if let Err(e) = &res
                && matches!(subject, Subject::Dossier(_))
                && matches!(
                    e.code(),
                    tonic::Code::NotFound | tonic::Code::PermissionDenied
                )
            {
                // Through any page, a dossier the agent may not read is not
                // shown (nor is its citizen through it).
                return web::error_page(
                    StatusCode::NOT_FOUND,
                    "Dossier",
                    &web::explain(e, "Le service des dossiers"),
                );
            }
            if let Ok(d) = &res {
                if title.is_empty() {
                    title = format!("Dossier {}", d.reference);
                }
                if citizen_id.is_none() {
                    citizen_id = Some(d.citizen_id.clone());
                }
            }
            Some(Section::from(res, "Le service des dossiers"))
        }
        None => None,
    };
    let (citizen, dossiers, tl) = match &citizen_id {
        Some(cid) => {
            let (a, b, c) = tokio::join!(
                citizen_view(app, agent, cid),
                dossier_rows(app, agent, cid),
                timeline(app, agent, cid, &tf, &self_path)
            );
            (a, b, c)
        }
        None => (
            Section::failed(
                "Personne non identifiée : qualifiez la demande (recherche, nouvelle demande)."
                    .into(),
            ),
            Section::done(Vec::new()),
            Section {
                ok: Some(Timeline {
                    entries: Vec::new(),
                    next: None,
                }),
                error: None,
                code: None,
            },
        ),
    };
    if let Subject::Citizen(_) = subject {
        match &citizen.ok {
            Some(c) => title = c.name.clone(),
            None => {
                let code = match citizen.code {
                    Some(
                        tonic::Code::NotFound
                        | tonic::Code::PermissionDenied
                        | tonic::Code::InvalidArgument,
                    ) => StatusCode::NOT_FOUND,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                return web::error_page(
                    code,
                    "Citoyen",
                    citizen.error.as_deref().unwrap_or("Introuvable."),
                );
            }
        }
    }
    if title.is_empty() {
        title = "Fiche".to_owned();
        status = StatusCode::OK;
    }
    let (queues, processes) = tokio::join!(queues(app, agent), processes(app, agent));
    let p = FichePage {
        layout: Layout::new(app, agent, "file", headers),
        title,
        form_error: form.error,
        field: form.field,
        values: form.values,
        item,
        citizen,
        citizen_id,
        dossiers,
        dossier,
        timeline: tl,
        timeline_filters: tf,
        self_path,
        channels: views::CHANNELS,
        kinds: views::ENTRY_KINDS
            .iter()
            .map(|(s, l, _)| (*s, *l))
            .collect(),
        queues,
        processes,
    };
    (status, respond(app, &p)).into_response()
}

fn correlation(c: &str) -> &'static str {
    match c {
        "reference" => "par la référence citée",
        "email_thread" => "par le fil de courriels",
        "appointment" => "par le rendez-vous",
        "citizen_window" => "au dossier récent du citoyen",
        "citizen_open" => "au dossier ouvert du citoyen",
        "timeline_only" => "à l'historique du citoyen seulement",
        "new" => "nouveau dossier",
        _ => "aucun (à qualifier)",
    }
}

pub async fn work_item(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(tf): Query<TimelineFilters>,
) -> Response {
    fiche(
        &app,
        &agent,
        &headers,
        Subject::Item(id),
        tf,
        FormState::default(),
    )
    .await
}

pub async fn dossier(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(tf): Query<TimelineFilters>,
) -> Response {
    fiche(
        &app,
        &agent,
        &headers,
        Subject::Dossier(id),
        tf,
        FormState::default(),
    )
    .await
}

pub async fn citizen(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(tf): Query<TimelineFilters>,
) -> Response {
    fiche(
        &app,
        &agent,
        &headers,
        Subject::Citizen(id),
        tf,
        FormState::default(),
    )
    .await
}

/// The fiche again, with a form's refusal beside its field (422).
async fn refuse(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    subject: Subject,
    form: FormState,
) -> Response {
    fiche(
        app,
        agent,
        headers,
        subject,
        TimelineFilters::default(),
        form,
    )
    .await
}

fn failed(message: String, field: &str, values: Values) -> FormState {
    FormState {
        error: Some(message),
        field: field.to_owned(),
        values,
    }
}

#[derive(Deserialize)]
pub struct CompleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    resultat: String,
}

pub async fn complete(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CompleteForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let values = Values {
        resultat: f.resultat.clone(),
        ..Default::default()
    };
    if f.resultat.trim().is_empty() {
        let form = failed(
            "Indiquez le résultat : il est inscrit à l'historique du citoyen.".into(),
            "resultat",
            values,
        );
        return refuse(&app, &agent, &headers, Subject::Item(id), form).await;
    }
    let mut c = app.clients.routing.clone();
    match c
        .complete_work_item(app.clients.request(
            &agent,
            rpb::CompleteWorkItemRequest {
                id: id.clone(),
                outcome: f.resultat.trim().to_owned(),
            },
        ))
        .await
    {
        Ok(_) => web::redirect_with(
            "/file",
            "Demande terminée : le résultat est inscrit à l'historique.",
            app.config.secure_cookies,
        ),
        Err(e) => {
            let message = match e.code() {
                tonic::Code::FailedPrecondition | tonic::Code::Aborted | tonic::Code::PermissionDenied => {
                    "Cette demande ne peut plus être terminée par vous : elle a changé (prise, transférée ou terminée par un collègue).".to_owned()
                }
                tonic::Code::InvalidArgument => format!("Résultat refusé : {}", e.message()),
                _ => web::explain(&e, "La file d'attente"),
            };
            let form = failed(message, "resultat", values);
            refuse(&app, &agent, &headers, Subject::Item(id), form).await
        }
    }
}

#[derive(Deserialize)]
pub struct TransferForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    vers: String,
    #[serde(default)]
    motif: String,
}

pub async fn transfer(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<TransferForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let mut c = app.clients.routing.clone();
    match c
        .transfer_work_item(app.clients.request(
            &agent,
            rpb::TransferWorkItemRequest {
                id: id.clone(),
                queue_id: f.vers.clone(),
                reason: f.motif.trim().to_owned(),
            },
        ))
        .await
    {
        Ok(_) => web::redirect_with("/file", "Demande transférée.", app.config.secure_cookies),
        Err(e) => {
            let values = Values {
                motif: f.motif,
                ..Default::default()
            };
            let message = match e.code() {
                tonic::Code::FailedPrecondition if f.vers.is_empty() => {
                    "Cette demande ne vient d'aucune autre file : choisissez un service.".to_owned()
                }
                _ => web::explain(&e, "La file d'attente"),
            };
            refuse(
                &app,
                &agent,
                &headers,
                Subject::Item(id),
                failed(message, "vers", values),
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct TransitionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    vers: String,
    #[serde(default)]
    motif: String,
    #[serde(default)]
    revision: i64,
}

pub async fn transition(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<TransitionForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let mut c = app.clients.dossier.clone();
    let res = c
        .transition_dossier(app.clients.request(
            &agent,
            dpb::TransitionDossierRequest {
                id: id.clone(),
                to_state: f.vers.clone(),
                reason: f.motif.trim().to_owned(),
                expected_revision: f.revision,
                // One click, one transition: a resent form is not a second one.
                request_id: format!("portal:{}:{}:{}", id, f.revision, f.vers),
            },
        ))
        .await;
    match res {
        Ok(d) => web::redirect_with(
            &format!("/dossier/{id}"),
            &format!("Étape franchie : {}.", d.into_inner().state_title),
            app.config.secure_cookies,
        ),
        Err(e) => {
            let message = match e.code() {
                // The page was read before a colleague moved the dossier on:
                // this step no longer leaves its current state.
                tonic::Code::FailedPrecondition if web::precondition(&e) == Some("TRANSITION") => {
                    "Ce dossier a changé entre-temps (un collègue l'a fait avancer) : cette étape n'est plus possible. Vérifiez son état et recommencez.".to_owned()
                }
                tonic::Code::FailedPrecondition => format!("Étape impossible : {}", e.message()),
                tonic::Code::Aborted => "Ce dossier a été modifié entre-temps par un collègue : vérifiez son état et recommencez.".to_owned(),
                tonic::Code::InvalidArgument if e.message().contains("reason") => {
                    "Indiquez le motif : cette étape l'exige.".to_owned()
                }
                tonic::Code::PermissionDenied => "Cette étape est réservée à un autre rôle (responsable).".to_owned(),
                _ => web::explain(&e, "Le service des dossiers"),
            };
            let values = Values {
                motif: f.motif,
                ..Default::default()
            };
            refuse(
                &app,
                &agent,
                &headers,
                Subject::Dossier(id),
                failed(message, &f.vers, values),
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    texte: String,
    #[serde(default)]
    visibilite: String,
}

pub async fn note(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<NoteForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let values = Values {
        texte: f.texte.clone(),
        ..Default::default()
    };
    if f.texte.trim().is_empty() {
        return refuse(
            &app,
            &agent,
            &headers,
            Subject::Dossier(id),
            failed(
                "Écrivez la note avant de l'ajouter.".into(),
                "texte",
                values,
            ),
        )
        .await;
    }
    let visibility = if f.visibilite == "publique" {
        dpb::NoteVisibility::Public
    } else {
        dpb::NoteVisibility::Private
    };
    let mut c = app.clients.dossier.clone();
    match c
        .add_note(app.clients.request(
            &agent,
            dpb::AddNoteRequest {
                dossier_id: id.clone(),
                visibility: visibility as i32,
                text: f.texte.trim().to_owned(),
                request_id: String::new(),
            },
        ))
        .await
    {
        Ok(_) => web::redirect_with(
            &format!("/dossier/{id}"),
            "Note ajoutée à l'historique.",
            app.config.secure_cookies,
        ),
        Err(e) => {
            let message = match e.code() {
                tonic::Code::InvalidArgument => format!("Note refusée : {}", e.message()),
                _ => web::explain(&e, "Le service des dossiers"),
            };
            refuse(
                &app,
                &agent,
                &headers,
                Subject::Dossier(id),
                failed(message, "texte", values),
            )
            .await
        }
    }
}

pub async fn document(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    mut form: Multipart,
) -> Response {
    let mut csrf = String::new();
    let mut kind = String::new();
    let mut file: Option<(String, String, Vec<u8>)> = None;
    let received: Result<(), ()> = async {
        while let Some(field) = form.next_field().await.map_err(drop)? {
            match field.name().unwrap_or_default() {
                "csrf" => csrf = field.text().await.unwrap_or_default(),
                "type" => kind = field.text().await.unwrap_or_default(),
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
    if received.is_err() {
        let form = failed(
            "Le fichier n'a pas pu être reçu (20 Mo au plus).".into(),
            "fichier",
            Values::default(),
        );
        return refuse(&app, &agent, &headers, Subject::Dossier(id), form).await;
    }
    if let Err(r) = web::check_csrf(&agent, &csrf) {
        return r;
    }
    let Some((filename, media, content)) = file.filter(|(n, _, c)| !n.is_empty() && !c.is_empty())
    else {
        return refuse(
            &app,
            &agent,
            &headers,
            Subject::Dossier(id),
            failed(
                "Choisissez un fichier à joindre.".into(),
                "fichier",
                Values::default(),
            ),
        )
        .await;
    };
    let mut c = app.clients.dossier.clone();
    let res = c
        .add_document(app.clients.request(
            &agent,
            dpb::AddDocumentRequest {
                dossier_id: id.clone(),
                filename,
                media_type: media,
                document_type: if kind == "autre" { String::new() } else { kind },
                source_channel: Channel::Counter as i32,
                content,
                stored: None::<AttachmentRef>,
            },
        ))
        .await;
    match res {
        Ok(_) => web::redirect_with(
            &format!("/dossier/{id}"),
            "Pièce jointe au dossier.",
            app.config.secure_cookies,
        ),
        Err(e) => {
            let message = match e.code() {
                tonic::Code::InvalidArgument => format!("Pièce refusée : {}", e.message()),
                _ => web::explain(&e, "Le service des dossiers"),
            };
            refuse(
                &app,
                &agent,
                &headers,
                Subject::Dossier(id),
                failed(message, "fichier", Values::default()),
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct OpenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    demarche: String,
}

pub async fn open_dossier(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<OpenForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let mut c = app.clients.dossier.clone();
    match c
        .open_dossier(app.clients.request(
            &agent,
            dpb::OpenDossierRequest {
                citizen_id: id.clone(),
                process_id: f.demarche.clone(),
                request_id: String::new(),
            },
        ))
        .await
    {
        Ok(d) => {
            let d = d.into_inner();
            web::redirect_with(
                &format!("/dossier/{}", d.id),
                &format!("Dossier {} ouvert.", d.reference),
                app.config.secure_cookies,
            )
        }
        Err(e) => {
            let message = match e.code() {
                tonic::Code::InvalidArgument | tonic::Code::NotFound => {
                    "Choisissez une démarche de la liste.".to_owned()
                }
                _ => web::explain(&e, "Le service des dossiers"),
            };
            refuse(
                &app,
                &agent,
                &headers,
                Subject::Citizen(id),
                failed(message, "demarche", Values::default()),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrapped_guidance_reads_as_paragraphs() {
        let text = "Vérifiez que l'événement a eu lieu dans la commune ; sinon, orientez vers la mairie du lieu\nde l'événement.\nLa délivrance est gratuite.\n\nRappelez la démarche en ligne";
        assert_eq!(
            super::paragraphs(text),
            [
                "Vérifiez que l'événement a eu lieu dans la commune ; sinon, orientez vers la mairie du lieu de l'événement.",
                "La délivrance est gratuite.",
                "Rappelez la démarche en ligne",
            ]
        );
    }
}

#[derive(serde::Deserialize)]
pub struct CallbackForm {
    csrf: String,
    #[serde(default)]
    issue: String,
    #[serde(default)]
    note: String,
}

/// A callback made on the request: its outcome on the timeline; the request
/// closes after the town's number of unanswered attempts.
pub async fn callback(
    State(app): State<App>,
    agent: Agent,
    Path(id): Path<String>,
    Form(f): Form<CallbackForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let outcome = match f.issue.as_str() {
        "repondu" => rpb::CallbackOutcome::Answered,
        "messagerie" => rpb::CallbackOutcome::Voicemail,
        _ => rpb::CallbackOutcome::NoAnswer,
    };
    let mut c = app.clients.routing.clone();
    match c
        .record_callback_attempt(app.clients.request(
            &agent,
            rpb::RecordCallbackAttemptRequest {
                id: id.clone(),
                outcome: outcome as i32,
                note: f.note.trim().to_owned(),
            },
        ))
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            let to = if r.closed {
                "/file".to_owned()
            } else {
                format!("/demande/{id}")
            };
            web::redirect_with(
                &to,
                &format!("{}.", r.text.trim_end_matches('.')),
                app.config.secure_cookies,
            )
        }
        Err(e) => web::redirect_with(
            &format!("/demande/{id}"),
            &web::explain(&e, "La file d'attente"),
            app.config.secure_cookies,
        ),
    }
}

/// `name` for a `Content-Disposition` header: an ASCII fallback and the
/// UTF-8 name (RFC 6266 / 5987).
fn disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._- ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// A dossier's document, downloaded by an agent who may read the dossier
/// (the dossier role decides: restricted processes stay in their group).
/// Always as an attachment, never sniffed (and, as every page of the
/// portal, never cached).
pub async fn download(State(app): State<App>, agent: Agent, Path(id): Path<String>) -> Response {
    let mut d = app.clients.dossier.clone();
    let res = d
        .get_document(app.clients.request(
            &agent,
            dpb::GetDocumentRequest {
                id,
                include_content: true,
            },
        ))
        .await;
    match res {
        Ok(r) => {
            let r = r.into_inner();
            let doc = r.document.unwrap_or_default();
            let name = if doc.filename.is_empty() {
                "document"
            } else {
                doc.filename.as_str()
            };
            let media_type = match doc.media_type.as_str() {
                t @ ("application/pdf" | "image/png" | "image/jpeg" | "image/tiff"
                | "text/plain") => t,
                _ => "application/octet-stream",
            };
            (
                [
                    (header::CONTENT_TYPE, media_type.to_owned()),
                    (header::CONTENT_DISPOSITION, disposition(name)),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                ],
                r.content,
            )
                .into_response()
        }
        Err(e) => {
            let status = match e.code() {
                tonic::Code::NotFound | tonic::Code::InvalidArgument => StatusCode::NOT_FOUND,
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            web::error_page(
                status,
                "Pièce du dossier",
                &web::explain(&e, "Le service des dossiers"),
            )
        }
    }
}
