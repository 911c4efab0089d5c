//! Mon guichet: the counter desk as NovoSGA's. The agent chooses her site,
//! her desk and the services she serves (kept as her preference); she calls
//! the next ticket, calls it again, starts, marks a no-show, finishes with
//! an outcome or redirects the ticket to another service. The current
//! ticket opens its request's fiche (routing hands a called ticket's
//! request to the agent who called it).

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use guichet_proto::counter::v1 as cpb;
use guichet_proto::routing::v1 as rpb;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde::{Deserialize, Serialize};

use super::{Layout, Section, respond_with};
use crate::db::entities::preference;
use crate::views;
use crate::web::{self, Agent, App};

/// The preference key of the desk settings.
const DESK_KEY: &str = "desk";

/// Where the agent works today.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct DeskSettings {
    pub site: String,
    pub desk: String,
    /// Services she serves; all when empty.
    pub services: Vec<String>,
}

pub async fn settings_of(app: &App, subject: &str) -> Option<DeskSettings> {
    let row = preference::Entity::find_by_id((subject.to_owned(), DESK_KEY.to_owned()))
        .one(&app.db)
        .await
        .map_err(|e| tracing::warn!(error = %e, "cannot read the desk settings"))
        .ok()??;
    serde_json::from_str(&row.value).ok()
}

async fn save_settings(app: &App, subject: &str, s: &DeskSettings) -> Result<(), sea_orm::DbErr> {
    let value = serde_json::to_string(s).unwrap_or_default();
    preference::Entity::insert(preference::ActiveModel {
        subject: Set(subject.to_owned()),
        key: Set(DESK_KEY.to_owned()),
        value: Set(value),
        update_time: Set(Utc::now()),
    })
    .on_conflict(
        OnConflict::columns([preference::Column::Subject, preference::Column::Key])
            .update_columns([preference::Column::Value, preference::Column::UpdateTime])
            .to_owned(),
    )
    .exec_without_returning(&app.db)
    .await
    .map(|_| ())
}

pub struct ServiceChoice {
    pub name: String,
    pub label: String,
    pub checked: bool,
}

/// The ticket at the desk.
pub struct Current {
    pub id: String,
    pub number: String,
    pub service: String,
    pub in_service: bool,
    pub status_word: &'static str,
    pub called_at: String,
    pub recalls: u32,
    pub waited: String,
    pub priority: String,
    pub appointment: Option<String>,
    pub transferred_from: String,
    /// The request's fiche in the portal, once routing has it.
    pub fiche: Option<String>,
}

pub struct WaitingRow {
    pub label: String,
    pub waiting: u32,
    pub longest: String,
    pub estimate: String,
}

pub struct DoneRow {
    pub number: String,
    pub service: String,
    pub outcome: &'static str,
    pub at: String,
}

#[derive(askama::Template)]
#[template(path = "desk.html")]
struct DeskPage {
    layout: Layout,
    settings: DeskSettings,
    configured: bool,
    services: Section<Vec<ServiceChoice>>,
    current: Section<Option<Current>>,
    waiting: Section<Vec<WaitingRow>>,
    done: Vec<DoneRow>,
    error: Option<String>,
    /// Every service, for the redirect.
    all_services: Vec<(String, String)>,
}

#[derive(askama::Template)]
#[template(path = "desk_waiting.html")]
struct WaitingFragment {
    waiting: Section<Vec<WaitingRow>>,
}

fn status_word(s: i32) -> &'static str {
    match cpb::TicketStatus::try_from(s) {
        Ok(cpb::TicketStatus::Waiting) => "En attente",
        Ok(cpb::TicketStatus::Called) => "Appelé",
        Ok(cpb::TicketStatus::InService) => "En cours de réception",
        Ok(cpb::TicketStatus::Done) => "Reçu",
        Ok(cpb::TicketStatus::NoShow) => "Absent",
        _ => "Inconnu",
    }
}

/// Service name → the label citizens read.
fn labels_of(l: &cpb::ListServicesResponse) -> BTreeMap<String, String> {
    l.services
        .iter()
        .map(|s| (s.name.clone(), s.label.clone()))
        .collect()
}

/// The counter's services and their labels (name → label).
async fn services(app: &App, agent: &Agent) -> Result<cpb::ListServicesResponse, tonic::Status> {
    let mut c = app.clients.counter.clone();
    c.list_services(app.clients.request(agent, cpb::ListServicesRequest {}))
        .await
        .map(|r| r.into_inner())
}

async fn tickets(
    app: &App,
    agent: &Agent,
    s: &DeskSettings,
    statuses: &[cpb::TicketStatus],
    limit: u32,
) -> Result<Vec<cpb::Ticket>, tonic::Status> {
    let mut c = app.clients.counter.clone();
    c.list_tickets(app.clients.request(
        agent,
        cpb::ListTicketsRequest {
            site: s.site.clone(),
            desk: s.desk.clone(),
            statuses: statuses.iter().map(|s| *s as i32).collect(),
            services: Vec::new(),
            limit,
        },
    ))
    .await
    .map(|r| r.into_inner().tickets)
}

/// The request of a ticket in the unified queue (its fiche).
async fn fiche_of(app: &App, agent: &Agent, intake_event_id: &str) -> Option<String> {
    if intake_event_id.is_empty() {
        return None;
    }
    let mut r = app.clients.routing.clone();
    r.get_work_item(app.clients.request(
        agent,
        rpb::GetWorkItemRequest {
            intake_event_id: intake_event_id.to_owned(),
            ..Default::default()
        },
    ))
    .await
    .ok()
    .map(|i| format!("/demande/{}", i.into_inner().id))
}

async fn waiting(
    app: &App,
    agent: &Agent,
    s: &DeskSettings,
    labels: &BTreeMap<String, String>,
) -> Section<Vec<WaitingRow>> {
    let mut c = app.clients.counter.clone();
    let res = c
        .list_waiting_times(app.clients.request(
            agent,
            cpb::ListWaitingTimesRequest {
                site: s.site.clone(),
            },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .services
                .into_iter()
                .filter(|w| s.services.is_empty() || s.services.contains(&w.service))
                .map(|w| WaitingRow {
                    label: labels.get(&w.service).cloned().unwrap_or(w.service),
                    waiting: w.waiting,
                    longest: views::duration(chrono::Duration::seconds(i64::from(
                        w.longest_wait_seconds,
                    ))),
                    estimate: views::duration(chrono::Duration::seconds(i64::from(
                        w.estimated_wait_seconds,
                    ))),
                })
                .collect()
        });
    Section::from(res, "Le guichet d'accueil")
}

async fn render_page(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let saved = settings_of(app, &agent.subject).await;
    let configured = saved.is_some();
    let listed = services(app, agent).await;
    let mut settings = saved.unwrap_or_default();
    let labels = listed.as_ref().map(labels_of).unwrap_or_default();
    if settings.site.is_empty()
        && let Ok(l) = &listed
    {
        settings.site = l.default_site.clone();
    }
    let all_services: Vec<(String, String)> =
        labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let services = Section::from(
        listed.map(|l| {
            l.services
                .into_iter()
                .map(|s| ServiceChoice {
                    checked: settings.services.contains(&s.name),
                    name: s.name,
                    label: s.label,
                })
                .collect()
        }),
        "Le guichet d'accueil",
    );
    let label = |s: &str| labels.get(s).cloned().unwrap_or_else(|| s.to_owned());
    let (current, waiting, done) = if configured {
        let now = app.now();
        let current = match tickets(
            app,
            agent,
            &settings,
            &[cpb::TicketStatus::Called, cpb::TicketStatus::InService],
            1,
        )
        .await
        {
            Ok(list) => match list.into_iter().next() {
                Some(t) => {
                    let called = views::ts(&t.call_time);
                    let issued = views::ts(&t.issued_at);
                    Section::done(Some(Current {
                        fiche: fiche_of(app, agent, &t.intake_event_id).await,
                        in_service: t.status == cpb::TicketStatus::InService as i32,
                        status_word: status_word(t.status),
                        called_at: called.map(views::when).unwrap_or_default(),
                        waited: match (issued, views::ts(&t.start_time).or(called)) {
                            (Some(i), Some(s)) => views::duration(s - i),
                            (Some(i), None) => views::duration(now - i),
                            _ => String::new(),
                        },
                        appointment: views::ts(&t.appointment_time).map(views::when),
                        service: label(&t.service),
                        transferred_from: if t.transferred_from.is_empty() {
                            String::new()
                        } else {
                            label(&t.transferred_from)
                        },
                        id: t.id,
                        number: t.number,
                        recalls: t.recalls,
                        priority: t.priority,
                    }))
                }
                None => Section::done(None),
            },
            Err(e) => Section::from(Err(e), "Le guichet d'accueil"),
        };
        let done = tickets(
            app,
            agent,
            &settings,
            &[cpb::TicketStatus::Done, cpb::TicketStatus::NoShow],
            10,
        )
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|t| DoneRow {
            number: t.number,
            service: label(&t.service),
            outcome: if t.status == cpb::TicketStatus::NoShow as i32 {
                "Absent"
            } else {
                "Reçu"
            },
            at: views::ts(&t.finish_time)
                .or(views::ts(&t.no_show_time))
                .map(views::when)
                .unwrap_or_default(),
        })
        .collect();
        (current, waiting(app, agent, &settings, &labels).await, done)
    } else {
        (Section::done(None), Section::done(Vec::new()), Vec::new())
    };
    let page = DeskPage {
        layout: Layout::new(app, agent, "guichet", headers),
        settings,
        configured,
        services,
        current,
        waiting,
        done,
        error,
        all_services,
    };
    respond_with(app, &page, status)
}

pub async fn page(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    render_page(&app, &agent, &headers, None, StatusCode::OK).await
}

/// The waiting counts, refreshed live.
pub async fn waiting_fragment(State(app): State<App>, agent: Agent) -> Response {
    let settings = settings_of(&app, &agent.subject).await.unwrap_or_default();
    let labels = services(&app, &agent)
        .await
        .map(|l| labels_of(&l))
        .unwrap_or_default();
    let waiting = waiting(&app, &agent, &settings, &labels).await;
    web::render(&WaitingFragment { waiting })
}

/// The desk form: site, desk and the services served.
pub async fn save(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    if let Err(r) = web::check_csrf(&agent, &get("csrf")) {
        return r;
    }
    let settings = DeskSettings {
        site: get("site"),
        desk: get("guichet"),
        services: fields
            .iter()
            .filter(|(n, _)| n == "services")
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    };
    let bad = |message: &str| {
        render_page(
            &app,
            &agent,
            &headers,
            Some(message.to_owned()),
            StatusCode::BAD_REQUEST,
        )
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars().count() <= 32
            && s.chars()
                .all(|c| c.is_alphanumeric() || c == ' ' || c == '-' || c == '_')
    };
    if !name_ok(&settings.desk) {
        return bad("Indiquez le nom de votre guichet tel qu'il s'affiche en salle (1 à 32 lettres ou chiffres, par exemple « 3 »).").await;
    }
    if !settings.site.is_empty()
        && !settings
            .site
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad("Le site est un identifiant sans espace (par exemple « mairie »).").await;
    }
    if let Err(e) = save_settings(&app, &agent.subject, &settings).await {
        tracing::error!(error = %e, "cannot save the desk settings");
        return bad("Vos réglages n'ont pas pu être enregistrés. Réessayez dans un instant.").await;
    }
    web::redirect_with(
        "/guichet",
        &format!("Vous êtes au guichet {}.", settings.desk),
        app.config.secure_cookies,
    )
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
    #[serde(default)]
    resultat: String,
    #[serde(default)]
    service: String,
}

/// Call the next ticket of the desk's services.
pub async fn call_next(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let Some(s) = settings_of(&app, &agent.subject).await else {
        return render_page(
            &app,
            &agent,
            &headers,
            Some("Choisissez d'abord votre guichet et vos services.".into()),
            StatusCode::CONFLICT,
        )
        .await;
    };
    let mut c = app.clients.counter.clone();
    let res = c
        .call_next(app.clients.request(
            &agent,
            cpb::CallNextRequest {
                desk: s.desk.clone(),
                services: s.services.clone(),
                site: s.site.clone(),
            },
        ))
        .await;
    match res {
        Ok(t) => web::redirect_with(
            "/guichet",
            &format!(
                "Ticket {} appelé au guichet {}.",
                t.get_ref().number,
                s.desk
            ),
            app.config.secure_cookies,
        ),
        Err(e) => {
            let message = match e.code() {
                tonic::Code::NotFound => "Personne n'attend pour vos services.".to_owned(),
                _ => web::explain(&e, "Le guichet d'accueil"),
            };
            render_page(&app, &agent, &headers, Some(message), StatusCode::CONFLICT).await
        }
    }
}

/// One step on the desk's ticket: `rappeler`, `commencer`, `absent`,
/// `terminer` (with the outcome) or `rediriger` (to another service).
pub async fn act(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let mut c = app.clients.counter.clone();
    let action = || cpb::TicketActionRequest {
        ticket_id: id.clone(),
    };
    let res = match step.as_str() {
        "rappeler" => c
            .recall_ticket(app.clients.request(&agent, action()))
            .await
            .map(|t| format!("Ticket {} rappelé.", t.get_ref().number)),
        "commencer" => c
            .start_service(app.clients.request(&agent, action()))
            .await
            .map(|t| format!("Réception du ticket {} commencée.", t.get_ref().number)),
        "absent" => c
            .mark_no_show(app.clients.request(&agent, action()))
            .await
            .map(|t| format!("Ticket {} noté absent.", t.get_ref().number)),
        "terminer" => {
            let outcome = f.resultat.trim();
            if outcome.chars().count() > 4000 {
                return render_page(
                    &app,
                    &agent,
                    &headers,
                    Some("Le résultat fait au plus 4 000 caractères.".into()),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
            // The agent's words close the request first; the counter's end
            // of visit then finds it completed.
            if !outcome.is_empty()
                && let Err(message) = complete_request(&app, &agent, &id, outcome).await
            {
                return render_page(&app, &agent, &headers, Some(message), StatusCode::CONFLICT)
                    .await;
            }
            c.finish_service(app.clients.request(&agent, action()))
                .await
                .map(|t| format!("Ticket {} terminé.", t.get_ref().number))
        }
        "rediriger" => c
            .transfer_ticket(app.clients.request(
                &agent,
                cpb::TransferTicketRequest {
                    ticket_id: id.clone(),
                    service: f.service.clone(),
                },
            ))
            .await
            .map(|t| {
                format!(
                    "Ticket {} redirigé : il attend de nouveau.",
                    t.get_ref().number
                )
            }),
        _ => {
            return web::error_page(
                StatusCode::NOT_FOUND,
                "Page introuvable",
                "Cette action n'existe pas.",
            );
        }
    };
    match res {
        Ok(message) => web::redirect_with("/guichet", &message, app.config.secure_cookies),
        Err(e) => {
            let message = match (e.code(), step.as_str()) {
                (tonic::Code::FailedPrecondition, "absent") => {
                    "Rappelez d'abord le ticket : le citoyen n'est noté absent qu'après un rappel."
                        .to_owned()
                }
                (tonic::Code::FailedPrecondition, _) => {
                    "Ce ticket a changé d'état entre-temps : la page est à jour.".to_owned()
                }
                (tonic::Code::InvalidArgument, "rediriger") => {
                    "Choisissez le service vers lequel rediriger le citoyen.".to_owned()
                }
                _ => web::explain(&e, "Le guichet d'accueil"),
            };
            render_page(&app, &agent, &headers, Some(message), StatusCode::CONFLICT).await
        }
    }
}

/// Complete the ticket's request with the agent's outcome when she holds
/// it; a request held by nobody is left to the end of visit.
async fn complete_request(
    app: &App,
    agent: &Agent,
    ticket_id: &str,
    outcome: &str,
) -> Result<(), String> {
    let mut c = app.clients.counter.clone();
    let ticket = c
        .get_ticket(app.clients.request(
            agent,
            cpb::GetTicketRequest {
                ticket_id: ticket_id.to_owned(),
            },
        ))
        .await
        .map_err(|e| web::explain(&e, "Le guichet d'accueil"))?
        .into_inner();
    let mut r = app.clients.routing.clone();
    let Ok(item) = r
        .get_work_item(app.clients.request(
            agent,
            rpb::GetWorkItemRequest {
                intake_event_id: ticket.intake_event_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .map(|i| i.into_inner())
    else {
        return Ok(());
    };
    let held = item.agent_id == agent.subject
        && (item.status == rpb::WorkItemStatus::Assigned as i32
            || item.status == rpb::WorkItemStatus::Wrapping as i32);
    if !held {
        return Ok(());
    }
    r.complete_work_item(app.clients.request(
        agent,
        rpb::CompleteWorkItemRequest {
            id: item.id,
            outcome: outcome.to_owned(),
        },
    ))
    .await
    .map(|_| ())
    .map_err(|e| web::explain(&e, "La file d'attente"))
}

/// The live changes of the counter for the desk page (no personal data).
pub async fn events(
    State(app): State<App>,
    _agent: Agent,
    axum::Extension(stop): axum::Extension<tokio_util::sync::CancellationToken>,
) -> Response {
    app.live.stream(stop, "counter").into_response()
}
