//! The telephone in the portal. **Screen pop**: when the PBX reports a call
//! ringing or answered at an agent's extension (mapped by an admin), that
//! agent's open pages — and only hers — show the caller's fiche (a known
//! number: the citizen, her open dossiers, her last contacts) or, for an
//! unknown number, a new request with the number filled in. The event
//! carries a call id only; the page asks for the pop with the agent's own
//! rights. **Postes téléphoniques** (`/telephonie/postes`, admins): the
//! mapping from PBX users and extensions to guichet agents.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use guichet_platform::auth::Role;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::telephony::v1 as tpb;
use serde::Deserialize;

use super::{Layout, Section, respond, respond_with};
use crate::views;
use crate::web::{self, Agent, App};

pub struct Known {
    pub id: String,
    pub name: String,
    pub dossiers: Vec<(String, String, String)>,
    pub last_contacts: Vec<String>,
}

#[derive(askama::Template)]
#[template(path = "call_pop.html")]
struct CallPop {
    call_id: String,
    phone: String,
    answered: bool,
    known: Vec<Known>,
    error: Option<String>,
}

/// The pop of one call for the signed-in agent.
pub async fn pop(State(app): State<App>, agent: Agent, Path(call_id): Path<String>) -> Response {
    let mut t = app.clients.telephony.clone();
    let call = match t
        .get_call(app.clients.request(
            &agent,
            tpb::GetCallRequest {
                call_id: call_id.clone(),
            },
        ))
        .await
    {
        Ok(c) => c.into_inner(),
        Err(e) => {
            return web::render(&CallPop {
                call_id,
                phone: String::new(),
                answered: false,
                known: Vec::new(),
                error: Some(web::explain(&e, "La téléphonie")),
            });
        }
    };
    let answered = call.state == "answered";
    if call.caller_phone.is_empty() {
        return web::render(&CallPop {
            call_id,
            phone: "numéro masqué".into(),
            answered,
            known: Vec::new(),
            error: None,
        });
    }
    let mut d = app.clients.dossier.clone();
    let found = d
        .list_citizens(app.clients.request(
            &agent,
            dpb::ListCitizensRequest {
                query: call.caller_phone.clone(),
                page_size: 5,
                page_token: String::new(),
            },
        ))
        .await;
    let (known, error) = match found {
        Ok(r) => {
            let mut known = Vec::new();
            for c in r.into_inner().citizens {
                known.push(fiche_of(&app, &agent, c).await);
            }
            (known, None)
        }
        Err(e) => (
            Vec::new(),
            Some(web::explain(&e, "Le service des dossiers")),
        ),
    };
    web::render(&CallPop {
        call_id,
        phone: call.caller_phone,
        answered,
        known,
        error,
    })
}

/// A known caller: her open dossiers and her last contacts.
async fn fiche_of(app: &App, agent: &Agent, c: dpb::Citizen) -> Known {
    let mut d = app.clients.dossier.clone();
    let dossiers = d
        .list_dossiers(app.clients.request(
            agent,
            dpb::ListDossiersRequest {
                citizen_id: c.id.clone(),
                page_size: 10,
                open_only: true,
                ..Default::default()
            },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .dossiers
                .into_iter()
                .map(|d| {
                    (
                        d.id,
                        d.reference,
                        format!("{} — {}", d.process_title, d.state_title),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let last_contacts = d
        .list_citizen_timeline(app.clients.request(
            agent,
            dpb::ListCitizenTimelineRequest {
                citizen_id: c.id.clone(),
                page_size: 3,
                ..Default::default()
            },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .entries
                .into_iter()
                .map(|e| {
                    let at = views::ts(&e.occur_time)
                        .map(views::when)
                        .unwrap_or_default();
                    format!("{at} — {}", e.summary)
                })
                .collect()
        })
        .unwrap_or_default();
    Known {
        name: views::citizen_name(&c),
        id: c.id,
        dossiers,
        last_contacts,
    }
}

/// The agent's own calls, live (the call id only).
pub async fn events(
    State(app): State<App>,
    agent: Agent,
    axum::Extension(stop): axum::Extension<tokio_util::sync::CancellationToken>,
) -> Response {
    app.live
        .stream_for(stop, "call", agent.subject.clone())
        .into_response()
}

pub fn may_map(agent: &Agent) -> bool {
    agent.has(Role::Admin)
}

pub struct Row {
    pub extension: String,
    pub agent: String,
    pub updated: String,
}

#[derive(askama::Template)]
#[template(path = "extensions.html")]
struct ExtensionsPage {
    layout: Layout,
    rows: Section<Vec<Row>>,
    accounts: Vec<(String, String)>,
    error: Option<String>,
}

async fn render_extensions(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let accounts = crate::accounts::list(&app.db)
        .await
        .map(|l| {
            l.into_iter()
                .filter(|a| !a.disabled)
                .map(|a| (a.id, format!("{} ({})", a.display_name, a.login)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut t = app.clients.telephony.clone();
    let rows = Section::from(
        t.list_extensions(app.clients.request(agent, tpb::ListExtensionsRequest {}))
            .await
            .map(|r| {
                r.into_inner()
                    .extensions
                    .into_iter()
                    .map(|e| Row {
                        agent: accounts
                            .iter()
                            .find(|(id, _)| *id == e.agent_id)
                            .map(|(_, n)| n.clone())
                            .unwrap_or_else(|| e.agent_id.clone()),
                        updated: format!(
                            "{} par {}",
                            views::ts(&e.update_time)
                                .map(views::when)
                                .unwrap_or_default(),
                            e.updated_by
                        ),
                        extension: e.extension,
                    })
                    .collect()
            }),
        "La téléphonie",
    );
    let page = ExtensionsPage {
        layout: Layout::new(app, agent, "postes", headers),
        rows,
        accounts,
        error,
    };
    respond_with(app, &page, status)
}

fn admins_only() -> Response {
    web::forbidden("Seuls les administrateurs associent les postes téléphoniques aux agents.")
}

pub async fn extensions(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    if !may_map(&agent) {
        return admins_only();
    }
    render_extensions(&app, &agent, &headers, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct MapForm {
    csrf: String,
    #[serde(default)]
    poste: String,
    #[serde(default)]
    compte: String,
    #[serde(default)]
    agent: String,
}

/// Map a PBX user or extension to an agent (a local account, or the
/// provider's subject typed in).
pub async fn set_extension(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(f): Form<MapForm>,
) -> Response {
    if !may_map(&agent) {
        return admins_only();
    }
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let who = if f.agent.trim().is_empty() {
        f.compte.trim()
    } else {
        f.agent.trim()
    };
    if f.poste.trim().is_empty() || who.is_empty() {
        return render_extensions(
            &app,
            &agent,
            &headers,
            Some("Indiquez le poste (utilisateur ou numéro du standard) et l'agent.".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let mut t = app.clients.telephony.clone();
    let res = t
        .set_extension(app.clients.request(
            &agent,
            tpb::SetExtensionRequest {
                extension: f.poste.trim().to_owned(),
                agent_id: who.to_owned(),
            },
        ))
        .await;
    match res {
        Ok(e) => web::redirect_with(
            "/telephonie/postes",
            &format!("Poste {} associé.", e.get_ref().extension),
            app.config.secure_cookies,
        ),
        Err(e) => {
            render_extensions(
                &app,
                &agent,
                &headers,
                Some(web::explain(&e, "La téléphonie")),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct DeleteForm {
    csrf: String,
    poste: String,
}

pub async fn delete_extension(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(f): Form<DeleteForm>,
) -> Response {
    if !may_map(&agent) {
        return admins_only();
    }
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let mut t = app.clients.telephony.clone();
    match t
        .delete_extension(app.clients.request(
            &agent,
            tpb::DeleteExtensionRequest {
                extension: f.poste.clone(),
            },
        ))
        .await
    {
        Ok(_) => web::redirect_with(
            "/telephonie/postes",
            &format!("Poste {} retiré.", f.poste),
            app.config.secure_cookies,
        ),
        Err(e) => {
            render_extensions(
                &app,
                &agent,
                &headers,
                Some(web::explain(&e, "La téléphonie")),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

pub struct CallRow {
    pub time: String,
    pub direction: &'static str,
    pub number: String,
    pub name: String,
    pub waited: String,
    pub talked: String,
    pub outcome: String,
    pub tag: &'static str,
}

#[derive(askama::Template)]
#[template(path = "calls.html")]
struct JournalPage {
    layout: Layout,
    calls: Section<Vec<CallRow>>,
    counts: String,
    callbacks: Section<super::queue::Rows>,
}

fn secs(s: u32) -> String {
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min {:02}", s / 60, s % 60)
    }
}

fn call_row(c: tpb::Call) -> CallRow {
    let (outcome, tag) = if c.blocked {
        ("Bloqué".to_owned(), "neutral")
    } else if c.state != "ended" {
        (
            if c.state == "answered" {
                "En cours"
            } else {
                "Sonne"
            }
            .to_owned(),
            "info",
        )
    } else if c.voicemail {
        ("Messagerie".to_owned(), "warn")
    } else if c.callback_requested {
        ("Rappel demandé".to_owned(), "warn")
    } else if c.missed {
        ("Manqué".to_owned(), "danger")
    } else if c.answered_by.is_empty() {
        ("Répondu".to_owned(), "ok")
    } else {
        (format!("Répondu ({})", c.answered_by), "ok")
    };
    CallRow {
        time: views::ts(&c.started_at)
            .map(|t| {
                guichet_platform::calendar::to_paris(t)
                    .format("%H:%M")
                    .to_string()
            })
            .unwrap_or_default(),
        direction: if c.direction == "out" {
            "Sortant"
        } else {
            "Entrant"
        },
        number: if c.caller_phone.is_empty() {
            "numéro masqué".into()
        } else {
            c.caller_phone
        },
        name: c.caller_name,
        waited: if c.state == "ended" {
            secs(c.waiting_seconds)
        } else {
            String::new()
        },
        talked: if c.state == "ended" && c.talk_seconds > 0 {
            secs(c.talk_seconds)
        } else {
            String::new()
        },
        outcome,
        tag,
    }
}

/// Journal d'appels: the day's calls with their waiting and talk times, and
/// the callback requests waiting in the queue with their SLA.
pub async fn journal(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    use chrono::{Duration, NaiveTime};
    use guichet_platform::calendar::{from_paris, to_paris};
    use guichet_proto::convert::timestamp;
    use guichet_proto::routing::v1 as rpb;
    let day = to_paris(app.now()).date();
    let start = from_paris(day.and_time(NaiveTime::MIN));
    let end = from_paris((day + Duration::days(1)).and_time(NaiveTime::MIN));
    let mut t = app.clients.telephony.clone();
    let listed = t
        .list_calls(app.clients.request(
            &agent,
            tpb::ListCallsRequest {
                start_time: Some(timestamp(start)),
                end_time: Some(timestamp(end)),
                missed_only: false,
                limit: 500,
            },
        ))
        .await
        .map(|r| r.into_inner().calls);
    let counts = listed
        .as_ref()
        .map(|calls| {
            let inbound: Vec<_> = calls
                .iter()
                .filter(|c| c.direction != "out" && !c.blocked)
                .collect();
            let missed = inbound.iter().filter(|c| c.missed || c.voicemail).count();
            format!(
                "{} appel(s) reçu(s), {} répondu(s), {missed} manqué(s) ; {} sortant(s)",
                inbound.len(),
                inbound.iter().filter(|c| c.answered_at.is_some()).count(),
                calls.iter().filter(|c| c.direction == "out").count()
            )
        })
        .unwrap_or_default();
    let calls = Section::from(
        listed.map(|c| c.into_iter().map(call_row).collect()),
        "La téléphonie",
    );
    let mut r = app.clients.routing.clone();
    let titles = app.catalog.titles(&app.clients, &agent).await;
    let mut callbacks = Vec::new();
    let mut error = None;
    for status in [
        rpb::WorkItemStatus::Pending,
        rpb::WorkItemStatus::Offered,
        rpb::WorkItemStatus::Assigned,
    ] {
        match r
            .list_work_items(app.clients.request(
                &agent,
                rpb::ListWorkItemsRequest {
                    status: status as i32,
                    channel: guichet_proto::intake::v1::Channel::Telephony as i32,
                    page_size: 100,
                    ..Default::default()
                },
            ))
            .await
        {
            Ok(l) => callbacks.extend(
                l.into_inner()
                    .items
                    .iter()
                    .map(|w| super::queue::row(&app, w, &titles, &Default::default())),
            ),
            Err(e) => error = Some(e),
        }
    }
    let callbacks = match error {
        Some(e) if callbacks.is_empty() => Section::from(Err(e), "La file d'attente"),
        _ => Section::done(super::queue::Rows {
            items: callbacks,
            next: None,
        }),
    };
    let page = JournalPage {
        layout: Layout::new(&app, &agent, "appels", &headers),
        calls,
        counts,
        callbacks,
    };
    respond(&app, &page)
}
