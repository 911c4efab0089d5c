//! File unique: the unified queue with its saved views and filters, the
//! agent's presence, "Prendre la suivante", offers and the agent's items.

use std::collections::{BTreeMap, HashMap};

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::Channel;
use guichet_proto::routing::v1 as rpb;
use serde::{Deserialize, Serialize};

use super::{Layout, Section, respond_with};
use crate::session::Session;
use crate::views::{self, Tag};
use crate::web::{self, Agent, App};

/// The saved views (Zammad's overviews, Démarches Simplifiées' tabs).
const VIEWS: &[(&str, &str)] = &[
    ("a-traiter", "À traiter"),
    ("mes-demandes", "Mes demandes"),
    ("en-retard", "En retard"),
    ("proposees", "Proposées"),
    ("terminees", "Terminées"),
];

const PAGE: i32 = 50;

#[derive(Deserialize, Serialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    pub vue: String,
    #[serde(default)]
    pub canal: String,
    #[serde(default)]
    pub procedure: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub delai: String,
    /// Keyset page token of the routing role.
    #[serde(default)]
    pub suite: String,
}

impl Filters {
    fn view(&self) -> &'static str {
        VIEWS
            .iter()
            .find(|(v, _)| *v == self.vue)
            .map(|(v, _)| *v)
            .unwrap_or("a-traiter")
    }

    /// The query string of these filters (no personal data: ids only).
    fn query(&self, suite: &str) -> String {
        let mut f = self.clone();
        f.vue = self.view().to_owned();
        f.suite = suite.to_owned();
        serde_urlencoded::to_string(&f).unwrap_or_default()
    }
}

pub struct Row {
    pub id: String,
    pub channel: Tag,
    pub waited: String,
    pub entered_iso: String,
    pub sla: Tag,
    pub procedure: String,
    pub citizen: String,
    pub summary: String,
    pub status: &'static str,
    pub agent: String,
}

pub struct Rows {
    pub items: Vec<Row>,
    pub next: Option<String>,
}

pub struct Offer {
    pub id: String,
    pub channel: Tag,
    pub summary: String,
    pub expire_iso: String,
    pub expire_hour: String,
}

pub struct Mine {
    pub offers: Vec<Offer>,
    pub current: Vec<Row>,
}

pub struct Me {
    pub presence: &'static str,
    pub presence_word: &'static str,
    pub accept_offers: bool,
    pub skills: Vec<String>,
    pub queues: Vec<String>,
}

#[derive(askama::Template)]
#[template(path = "queue.html")]
struct QueuePage {
    layout: Layout,
    me: Section<Me>,
    take_error: Option<String>,
    mine: Section<Mine>,
    csrf: String,
    views: &'static [(&'static str, &'static str)],
    view: &'static str,
    filters: Filters,
    channels: &'static [(&'static str, &'static str)],
    processes: Vec<(String, String)>,
    queues: Vec<(String, String)>,
    rows: Section<Rows>,
    rows_url: String,
    page_url: String,
}

#[derive(askama::Template)]
#[template(path = "queue_rows.html")]
struct RowsFragment {
    rows: Section<Rows>,
}

#[derive(askama::Template)]
#[template(path = "queue_offers.html")]
struct OffersFragment {
    mine: Section<Mine>,
    csrf: String,
}

fn summary(item: &rpb::WorkItem) -> String {
    if item.summary.trim().is_empty() {
        "(sans objet)".to_owned()
    } else {
        item.summary.clone()
    }
}

/// Citizens' names for the rows, read in parallel (one page at most).
async fn names(app: &App, agent: &Session, items: &[rpb::WorkItem]) -> HashMap<String, String> {
    let mut ids: Vec<&str> = items
        .iter()
        .map(|i| i.citizen_id.as_str())
        .filter(|c| !c.is_empty())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let calls = ids.into_iter().map(|id| {
        let mut c = app.clients.dossier.clone();
        let req = app
            .clients
            .request(agent, dpb::GetCitizenRequest { id: id.to_owned() });
        async move {
            let name = match c.get_citizen(req).await {
                Ok(r) => views::citizen_name(&r.into_inner()),
                Err(_) => "—".to_owned(),
            };
            (id.to_owned(), name)
        }
    });
    futures::future::join_all(calls).await.into_iter().collect()
}

pub(super) fn row(
    app: &App,
    item: &rpb::WorkItem,
    titles: &BTreeMap<String, String>,
    names: &HashMap<String, String>,
) -> Row {
    let entered = views::ts(&item.enter_time).unwrap_or_else(|| app.now());
    Row {
        id: item.id.clone(),
        channel: views::channel(item.channel),
        waited: views::duration(app.now() - entered),
        entered_iso: views::iso(entered),
        sla: views::sla(item.sla_state),
        procedure: titles.get(&item.process_id).cloned().unwrap_or_else(|| {
            if item.process_id.is_empty() {
                "À qualifier".to_owned()
            } else {
                item.process_id.clone()
            }
        }),
        citizen: names
            .get(&item.citizen_id)
            .cloned()
            .unwrap_or_else(|| "Non identifié".to_owned()),
        summary: summary(item),
        status: views::status(item.status),
        agent: if item.agent_id.is_empty() {
            String::new()
        } else {
            "un agent".to_owned()
        },
    }
}

async fn list_rows(app: &App, agent: &Session, f: &Filters) -> Section<Rows> {
    let mut req = rpb::ListWorkItemsRequest {
        page_size: PAGE,
        page_token: f.suite.clone(),
        queue_id: f.service.clone(),
        process_id: f.procedure.clone(),
        channel: Channel::from_slug(&f.canal).unwrap_or(Channel::Unspecified) as i32,
        sla_state: match f.delai.as_str() {
            "ok" => rpb::SlaState::Ok,
            "bientot" => rpb::SlaState::Near,
            "retard" => rpb::SlaState::Breached,
            _ => rpb::SlaState::Unspecified,
        } as i32,
        ..Default::default()
    };
    match f.view() {
        "mes-demandes" => {
            req.status = rpb::WorkItemStatus::Assigned as i32;
            req.agent_id = agent.subject.clone();
        }
        "en-retard" => {
            req.status = rpb::WorkItemStatus::Pending as i32;
            req.sla_state = rpb::SlaState::Breached as i32;
        }
        "proposees" => req.status = rpb::WorkItemStatus::Offered as i32,
        "terminees" => req.status = rpb::WorkItemStatus::Completed as i32,
        _ => req.status = rpb::WorkItemStatus::Pending as i32,
    }
    let mut c = app.clients.routing.clone();
    let res = c.list_work_items(app.clients.request(agent, req)).await;
    let list = match res {
        Ok(r) => r.into_inner(),
        Err(e) => return Section::from(Err(e), "La file d'attente"),
    };
    let titles = app.catalog.titles(&app.clients, agent).await;
    let names = names(app, agent, &list.items).await;
    let mut items: Vec<Row> = list
        .items
        .iter()
        .map(|i| row(app, i, &titles, &names))
        .collect();
    for (r, i) in items.iter_mut().zip(&list.items) {
        if i.agent_id == agent.subject {
            r.agent = "vous".to_owned();
        }
    }
    let next = (!list.next_page_token.is_empty())
        .then(|| format!("/file?{}", f.query(&list.next_page_token)));
    Section {
        ok: Some(Rows { items, next }),
        error: None,
        code: None,
    }
}

async fn mine(app: &App, agent: &Session) -> Section<Mine> {
    let list = |status: rpb::WorkItemStatus| {
        let mut c = app.clients.routing.clone();
        let req = app.clients.request(
            agent,
            rpb::ListWorkItemsRequest {
                status: status as i32,
                agent_id: agent.subject.clone(),
                page_size: 50,
                ..Default::default()
            },
        );
        async move { c.list_work_items(req).await.map(|r| r.into_inner().items) }
    };
    let (offered, assigned, wrapping) = tokio::join!(
        list(rpb::WorkItemStatus::Offered),
        list(rpb::WorkItemStatus::Assigned),
        list(rpb::WorkItemStatus::Wrapping)
    );
    let (offered, mut current) = match (offered, assigned, wrapping) {
        (Ok(o), Ok(mut a), Ok(w)) => {
            a.extend(w);
            (o, a)
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return Section::from(Err(e), "La file d'attente");
        }
    };
    current.sort_by(|a, b| {
        a.assign_time
            .as_ref()
            .map(|t| t.seconds)
            .cmp(&b.assign_time.as_ref().map(|t| t.seconds))
    });
    let titles = BTreeMap::new();
    let names = HashMap::new();
    Section {
        ok: Some(Mine {
            offers: offered
                .iter()
                .map(|o| {
                    let expire = views::ts(&o.offer_expire_time).unwrap_or_else(|| app.now());
                    Offer {
                        id: o.id.clone(),
                        channel: views::channel(o.channel),
                        summary: summary(o),
                        expire_iso: views::iso(expire),
                        expire_hour: guichet_platform::calendar::to_paris(expire)
                            .format("%H:%M:%S")
                            .to_string(),
                    }
                })
                .collect(),
            current: current
                .iter()
                .map(|i| {
                    let mut r = row(app, i, &titles, &names);
                    let since = views::ts(&i.assign_time).unwrap_or_else(|| app.now());
                    r.waited = views::duration(app.now() - since);
                    r
                })
                .collect(),
        }),
        error: None,
        code: None,
    }
}

async fn me(app: &App, agent: &Session) -> Section<Me> {
    let mut c = app.clients.routing.clone();
    let res = c
        .get_agent(app.clients.request(agent, rpb::GetAgentRequest::default()))
        .await;
    match res {
        Ok(r) => {
            let a = r.into_inner();
            let presence = match rpb::Presence::try_from(a.presence) {
                Ok(rpb::Presence::Available | rpb::Presence::Busy) => "available",
                Ok(rpb::Presence::Away) => "away",
                _ => "offline",
            };
            Section {
                ok: Some(Me {
                    presence,
                    presence_word: views::presence(a.presence),
                    accept_offers: a.accept_offers,
                    skills: a.skills,
                    queues: a.queues,
                }),
                error: None,
                code: None,
            }
        }
        // An agent never seen by routing is simply offline.
        Err(e) if e.code() == tonic::Code::NotFound => Section {
            ok: Some(Me {
                presence: "offline",
                presence_word: "Hors ligne",
                accept_offers: false,
                skills: Vec::new(),
                queues: Vec::new(),
            }),
            error: None,
            code: None,
        },
        Err(e) => Section::from(Err(e), "La file d'attente"),
    }
}

pub(super) async fn queues(app: &App, agent: &Session) -> Vec<(String, String)> {
    let mut c = app.clients.routing.clone();
    match c
        .list_queues(app.clients.request(agent, rpb::ListQueuesRequest {}))
        .await
    {
        Ok(r) => r
            .into_inner()
            .queues
            .into_iter()
            .map(|q| (q.id, q.display_name))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub(super) async fn processes(app: &App, agent: &Session) -> Vec<(String, String)> {
    app.catalog
        .titles(&app.clients, agent)
        .await
        .into_iter()
        .collect()
}

async fn render_page(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    f: Filters,
    take_error: Option<String>,
    status: StatusCode,
) -> Response {
    let (me, mine, rows, queues, processes) = tokio::join!(
        me(app, agent),
        mine(app, agent),
        list_rows(app, agent, &f),
        queues(app, agent),
        processes(app, agent)
    );
    let p = QueuePage {
        layout: Layout::new(app, agent, "file", headers),
        me,
        take_error,
        mine,
        csrf: agent.csrf.clone(),
        views: VIEWS,
        view: f.view(),
        channels: views::CHANNELS,
        processes,
        queues,
        rows,
        rows_url: format!("/file/lignes?{}", f.query("")),
        page_url: format!("/file?{}", f.query("")),
        filters: f,
    };
    respond_with(app, &p, status)
}

pub async fn page(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Query(f): Query<Filters>,
) -> Response {
    // A process owner who is not an agent works in the studio.
    if !agent.has(guichet_platform::auth::Role::Agent) && super::studio::may_edit(&agent) {
        return axum::response::Redirect::to("/studio").into_response();
    }
    render_page(&app, &agent, &headers, f, None, StatusCode::OK).await
}

/// The rows alone (the live refresh).
pub async fn rows(State(app): State<App>, agent: Agent, Query(mut f): Query<Filters>) -> Response {
    f.suite.clear();
    web::render(&RowsFragment {
        rows: list_rows(&app, &agent, &f).await,
    })
}

pub async fn offers(State(app): State<App>, agent: Agent) -> Response {
    web::render(&OffersFragment {
        mine: mine(&app, &agent).await,
        csrf: agent.csrf.clone(),
    })
}

#[derive(Deserialize)]
pub struct TakeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    file: String,
}

pub async fn take_next(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(f): Form<TakeForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let mut c = app.clients.routing.clone();
    let res = c
        .take_next(app.clients.request(
            &agent,
            rpb::TakeNextRequest {
                queue_id: f.file.clone(),
            },
        ))
        .await;
    match res {
        Ok(item) => Redirect::to(&format!("/demande/{}", item.into_inner().id)).into_response(),
        Err(e) => {
            let message = match e.code() {
                tonic::Code::NotFound => "Aucune demande ne vous attend pour le moment.".to_owned(),
                tonic::Code::FailedPrecondition if web::precondition(&e) == Some("PRESENCE") => {
                    "Passez en « Disponible » pour prendre une demande.".to_owned()
                }
                tonic::Code::FailedPrecondition if web::precondition(&e) == Some("CAPACITY") => {
                    "Vous avez déjà le maximum de demandes en cours sur ce canal : terminez-en une d'abord.".to_owned()
                }
                _ => web::explain(&e, "La file d'attente"),
            };
            render_page(
                &app,
                &agent,
                &headers,
                Filters::default(),
                Some(message),
                StatusCode::CONFLICT,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct PresenceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    presence: String,
    #[serde(default)]
    offres: String,
}

pub async fn presence(
    State(app): State<App>,
    agent: Agent,
    Form(f): Form<PresenceForm>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let presence = match f.presence.as_str() {
        "available" => rpb::Presence::Available,
        "away" => rpb::Presence::Away,
        "offline" => rpb::Presence::Offline,
        _ => {
            return web::error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Statut inconnu",
                "Choisissez Disponible, En pause ou Hors ligne.",
            );
        }
    };
    let mut c = app.clients.routing.clone();
    let res = c
        .set_presence(app.clients.request(
            &agent,
            rpb::SetPresenceRequest {
                presence: presence as i32,
                accept_offers: f.offres == "1",
            },
        ))
        .await;
    let secure = app.config.secure_cookies;
    match res {
        Ok(a) => web::redirect_with(
            "/file",
            &format!(
                "Statut enregistré : {}.",
                views::presence(a.into_inner().presence)
            ),
            secure,
        ),
        Err(e) => web::redirect_with("/file", &web::explain(&e, "La file d'attente"), secure),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn accept(
    State(app): State<App>,
    agent: Agent,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let mut c = app.clients.routing.clone();
    match c
        .accept_offer(app.clients.request(&agent, rpb::AcceptOfferRequest { id: id.clone() }))
        .await
    {
        Ok(item) => Redirect::to(&format!("/demande/{}", item.into_inner().id)).into_response(),
        Err(e) => web::redirect_with(
            "/file",
            &match e.code() {
                tonic::Code::FailedPrecondition | tonic::Code::NotFound | tonic::Code::Aborted => {
                    "Cette proposition n'est plus valable (délai dépassé ou demande prise par un collègue).".to_owned()
                }
                _ => web::explain(&e, "La file d'attente"),
            },
            app.config.secure_cookies,
        ),
    }
}

pub async fn reject(
    State(app): State<App>,
    agent: Agent,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let mut c = app.clients.routing.clone();
    let msg = match c
        .reject_offer(app.clients.request(
            &agent,
            rpb::RejectOfferRequest {
                id,
                reason: "refusée depuis le portail".into(),
            },
        ))
        .await
    {
        Ok(_) => "Proposition refusée : elle est proposée à un collègue.".to_owned(),
        Err(e) => web::explain(&e, "La file d'attente"),
    };
    web::redirect_with("/file", &msg, app.config.secure_cookies)
}
