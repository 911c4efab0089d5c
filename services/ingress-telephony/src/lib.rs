//! The telephony ingress: PBX call events, call-detail records and
//! callback requests, turned into intake events.
//!
//! A PBX already set up for Zammad's generic CTI API posts `newCall`,
//! `answer` and `hangup` to `POST /api/v1/cti/<token>`; PBXs that only
//! export Asterisk `Master.csv` files upload them (gRPC `ImportCdr` or
//! `POST /api/v1/cdr/<token>`). Every call is one row, keyed by the PBX's
//! call id, with its waiting and talk time, who answered, the queue, and
//! whether it was missed. When an inbound call ends, the call row and its
//! IntakeEvent are written in one transaction (the outbox) before the PBX
//! gets its answer; the event is then published on `guichet.intake.telephony`
//! (the relay retries it if JetStream was away). Routing then records the
//! call on the citizen's timeline and, for a missed call or a callback
//! request, queues a callback with the telephony SLA.
//!
//! Phone numbers are stored (they are what a callback needs) but never
//! logged: logs and span fields carry call ids only.

pub mod cdr;
pub mod config;
pub mod cti;
pub mod db;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes as BodyBytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use guichet_platform::auth::{AuthInterceptor, Authenticator, Role, require};
use guichet_platform::bus::{OutgoingEvent, StreamKind, new_event_id};
use guichet_platform::clock::SharedClock;
use guichet_platform::config::ConfigError;
use guichet_platform::contact::Phone;
use guichet_platform::db::is_unique_violation;
use guichet_platform::grpc::{
    GrpcServer, internal, internal_err, invalid_argument, not_found, unavailable,
};
use guichet_platform::outbox::{Outbox, Staged};
use guichet_platform::role::{BoxFuture, Listener, RoleService, RoleSpec};
use guichet_proto::convert::timestamp;
use guichet_proto::intake::v1::{
    Channel, CitizenHint, IntakeEvent, TelephonyDetails, intake_event,
};
use guichet_proto::telephony::v1 as pb;
use guichet_proto::telephony::v1::telephony_service_server::TelephonyServiceServer;
use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set,
    TransactionTrait,
};
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response as GrpcResponse, Status};

use crate::cti::{CtiEvent, CtiParams, Direction};
use crate::db::entities::{call, callback};

pub use config::Config;
pub use guichet_platform::Deps;

/// Who may ask for a callback: agents on a citizen's behalf, the IVR (service).
const CALLBACK_REQUESTERS: &[Role] = &[Role::Agent, Role::Supervisor, Role::Service];
/// Who may import CDR files.
const IMPORTERS: &[Role] = &[Role::Supervisor, Role::Admin, Role::Service];
/// Who may read a call.
const READERS: &[Role] = &[Role::Agent, Role::Supervisor, Role::Admin, Role::Service];

pub struct Service {
    api: TelephonyApi,
    auth: Arc<Authenticator>,
    listener: TcpListener,
    http_addr: SocketAddr,
}

#[derive(Clone)]
pub struct TelephonyApi {
    db: DatabaseConnection,
    outbox: Outbox,
    config: Arc<Config>,
    /// Blocked numbers in E.164.
    blocked: Arc<HashSet<String>>,
    clock: SharedClock,
}

/// The telephony role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "ingress-telephony";
    const SECTION: &'static str = "telephony";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

/// Build the role on `deps` (its clock: tests measure waiting and talk time
/// with a manual clock instead of sleeping).
pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let clock = deps.clock.clone();
    let db = deps
        .database::<db::Migrator>("telephony", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Intake).await?;
    deps.bus.ensure_stream(StreamKind::Events).await?;
    let listener = TcpListener::bind(&config.http_addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on telephony.http_addr {}: {e}",
            config.http_addr
        )
    })?;
    let http_addr = listener.local_addr()?;
    if config.webhook_token.expose_secret().is_empty() {
        tracing::warn!("telephony.webhook_token is not set: the CTI webhook refuses every request");
    }
    let blocked = config
        .blocked_numbers
        .iter()
        .filter_map(|n| Phone::parse(n).ok())
        .map(|p| p.as_str().to_owned())
        .collect();
    Ok(Service {
        api: TelephonyApi {
            outbox: Outbox::new(db.clone(), deps.bus),
            db,
            config: Arc::new(config),
            blocked: Arc::new(blocked),
            clock,
        },
        auth: deps.auth,
        listener,
        http_addr,
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(TelephonyServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// Where the CTI webhook listens (known once built: port 0 works).
    fn listeners(&self) -> Vec<Listener> {
        vec![Listener::http(self.http_addr)]
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(Service::run(*self, shutdown))
    }
}

impl Service {
    /// Serve the webhook and relay staged intake events, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let app = router(self.api.clone());
        let http = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let relay = self.api.outbox.clone().run(shutdown);
        let (served, ()) = tokio::join!(http, relay);
        served?;
        Ok(())
    }
}

/// The HTTP routes: the Zammad-compatible CTI webhook and the CDR upload.
pub fn router(api: TelephonyApi) -> Router {
    let cdr_limit = api.config.max_cdr_bytes;
    Router::new()
        .route("/api/v1/cti/{token}", post(cti_webhook))
        .route(
            "/api/v1/cdr/{token}",
            post(cdr_upload).layer(DefaultBodyLimit::max(cdr_limit)),
        )
        .with_state(api)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error_response(status: StatusCode, error: impl Into<String>) -> Response {
    json_response(status, json!({ "error": error.into() }))
}

/// Constant-time comparison of the token in the URL with the configured one.
fn token_ok(config: &Config, given: &str) -> bool {
    let want = config.webhook_token.expose_secret().as_bytes();
    let given = given.as_bytes();
    if want.is_empty() || want.len() != given.len() {
        return false;
    }
    want.iter()
        .zip(given)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn cti_webhook(
    State(api): State<TelephonyApi>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Response {
    if !token_ok(&api.config, &token) {
        metrics::counter!("guichet_telephony_cti_requests_total", "outcome" => "unauthorized")
            .increment(1);
        return error_response(StatusCode::UNAUTHORIZED, "invalid token");
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let params = match cti::parse(content_type, &body) {
        Ok(p) => p,
        Err(e) => {
            metrics::counter!("guichet_telephony_cti_requests_total", "outcome" => "invalid")
                .increment(1);
            return error_response(StatusCode::UNPROCESSABLE_ENTITY, e.0);
        }
    };
    match api.handle_cti(params).await {
        Ok(reply) => {
            metrics::counter!("guichet_telephony_cti_requests_total", "outcome" => reply.outcome())
                .increment(1);
            match reply {
                CtiReply::Reject => json_response(
                    StatusCode::OK,
                    json!({ "action": "reject", "reason": "busy" }),
                ),
                _ => json_response(StatusCode::OK, json!({})),
            }
        }
        Err(CtiError::Invalid(e)) => {
            metrics::counter!("guichet_telephony_cti_requests_total", "outcome" => "invalid")
                .increment(1);
            error_response(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        Err(CtiError::Internal(e)) => {
            tracing::error!(error = %e, "cti event not stored");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

async fn cdr_upload(
    State(api): State<TelephonyApi>,
    Path(token): Path<String>,
    body: BodyBytes,
) -> Response {
    if !token_ok(&api.config, &token) {
        return error_response(StatusCode::UNAUTHORIZED, "invalid token");
    }
    match api.import_cdr_bytes(&body).await {
        Ok(r) => json_response(
            StatusCode::OK,
            json!({ "imported": r.imported, "duplicates": r.duplicates, "errors": r.errors }),
        ),
        Err(status) => error_response(StatusCode::SERVICE_UNAVAILABLE, status.message()),
    }
}

/// What the webhook did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CtiReply {
    Accepted,
    /// A blocked caller: the PBX is told to reject the call as busy.
    Reject,
    /// Nothing to do: an answer after the hangup, a repeated answer or hangup.
    Ignored,
}

impl CtiReply {
    fn outcome(self) -> &'static str {
        match self {
            CtiReply::Accepted => "accepted",
            CtiReply::Reject => "rejected_blocked",
            CtiReply::Ignored => "ignored",
        }
    }
}

#[derive(Debug)]
enum CtiError {
    /// 422: the request contradicts what is known of the call.
    Invalid(String),
    Internal(String),
}

fn internal_cti(e: impl std::fmt::Display) -> CtiError {
    CtiError::Internal(e.to_string())
}

/// The citizen's side of a call: (E.164 number, withheld).
fn citizen_number(raw: &str) -> (Option<String>, bool) {
    if cti::is_withheld(raw) {
        return (None, true);
    }
    (Phone::parse(raw).ok().map(|p| p.as_str().to_owned()), false)
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i32 {
    i32::try_from((to - from).num_seconds().max(0)).unwrap_or(i32::MAX)
}

fn duration_fr(secs: i32) -> String {
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

/// The intake event of an ended inbound call (French text for the agent).
fn call_event(c: &call::Model, event_id: &str) -> IntakeEvent {
    let waiting = c.waiting_seconds.unwrap_or(0);
    let talk = c.talk_seconds.unwrap_or(0);
    let local = guichet_platform::calendar::to_paris(c.started_at);
    let when = local.format("%d/%m/%Y à %H:%M");
    let queue = if c.queue.is_empty() {
        String::new()
    } else {
        format!(", file « {} »", c.queue)
    };
    let number = if c.anonymous {
        " (numéro masqué)"
    } else {
        ""
    };
    // The subject is what routing shows in the queue and on the timeline
    // ("Appel : reçu, attente 45 s, conversation 3 min 12 s, répondu par Anne").
    let (subject, body) = if c.missed && c.callback_requested {
        (
            format!(
                "demande de rappel{number} (attente {})",
                duration_fr(waiting)
            ),
            format!(
                "Appel entrant le {when}{queue}{number} : l'usager demande à être rappelé. Attente : {}.",
                duration_fr(waiting)
            ),
        )
    } else if c.missed {
        let how = if c.voicemail {
            "message laissé sur la messagerie"
        } else {
            "raccroché avant réponse"
        };
        (
            format!(
                "manqué{number}, à rappeler (attente {})",
                duration_fr(waiting)
            ),
            format!(
                "Appel entrant le {when}{queue}{number}, {how}. Attente : {}.",
                duration_fr(waiting)
            ),
        )
    } else {
        let by = if c.answered_by.is_empty() {
            String::new()
        } else {
            format!(", répondu par {}", c.answered_by)
        };
        (
            format!(
                "reçu{number}, attente {}, conversation {}{by}",
                duration_fr(waiting),
                duration_fr(talk)
            ),
            format!(
                "Appel entrant le {when}{queue}{by}. Attente : {}, conversation : {}.",
                duration_fr(waiting),
                duration_fr(talk)
            ),
        )
    };
    IntakeEvent {
        id: event_id.to_owned(),
        channel: Channel::Telephony as i32,
        received_at: Some(timestamp(c.started_at)),
        citizen: c.citizen_phone.as_ref().map(|p| CitizenHint {
            phones: vec![p.clone()],
            ..Default::default()
        }),
        subject,
        body,
        attachments: vec![],
        quoted_reference: String::new(),
        details: Some(intake_event::Details::Telephony(TelephonyDetails {
            call_id: c.call_id.clone(),
            direction: c.direction.clone(),
            queue: c.queue.clone(),
            ivr_choice: c.queue.clone(),
            waiting_seconds: u32::try_from(waiting).unwrap_or(0),
            talk_seconds: u32::try_from(talk).unwrap_or(0),
            missed: c.missed,
            callback_requested: c.callback_requested,
            answered_by: c.answered_by.clone(),
            cause: c.cause.clone(),
            anonymous: c.anonymous,
            source: c.source.clone(),
            voicemail: c.voicemail,
        })),
    }
}

/// The `call_ended` domain event of a call (for indicators; no numbers).
fn call_ended(outbox: &Outbox, c: &call::Model) -> Staged {
    let secs = |v: Option<i32>| v.and_then(|s| u32::try_from(s).ok()).unwrap_or(0);
    let mut staged = outbox.domain_event(
        "telephony",
        "call_ended",
        format!("calls/{}", c.call_id),
        &guichet_proto::events::v1::CallEnded {
            call_id: c.call_id.clone(),
            direction: c.direction.clone(),
            queue: c.queue.clone(),
            cause: c.cause.clone(),
            waiting_seconds: secs(c.waiting_seconds),
            talk_seconds: secs(c.talk_seconds),
            missed: c.missed,
            voicemail: c.voicemail,
            anonymous: c.anonymous,
            blocked: c.blocked,
            callback_requested: c.callback_requested,
            source: c.source.clone(),
            started_at: Some(timestamp(c.started_at)),
            ended_at: c.ended_at.map(timestamp),
            intake_event_id: c.intake_event_id.clone().unwrap_or_default(),
        },
    );
    if let Some(t) = c.ended_at {
        staged.event.time = t;
    }
    staged
}

fn count_call(c: &call::Model) {
    let outcome = if c.blocked {
        "blocked"
    } else if c.missed {
        "missed"
    } else if c.answered_at.is_some() {
        "answered"
    } else {
        "unanswered"
    };
    metrics::counter!(
        "guichet_telephony_calls_total",
        "direction" => c.direction.clone(),
        "outcome" => outcome,
        "anonymous" => if c.anonymous { "true" } else { "false" },
        "source" => c.source.clone(),
    )
    .increment(1);
    if let Some(w) = c.waiting_seconds {
        metrics::histogram!("guichet_telephony_waiting_seconds", "direction" => c.direction.clone())
            .record(f64::from(w));
    }
    if let Some(t) = c.talk_seconds.filter(|_| c.answered_at.is_some()) {
        metrics::histogram!("guichet_telephony_talk_seconds", "direction" => c.direction.clone())
            .record(f64::from(t));
    }
}

impl TelephonyApi {
    fn staged(&self, event: &IntakeEvent, subject: String, time: DateTime<Utc>) -> Staged {
        Staged {
            nats_subject: self.outbox.bus().subject("intake.telephony"),
            event: OutgoingEvent {
                id: event.id.clone(),
                ty: "guichet.intake.v1.intake_event".into(),
                subject,
                time,
                body: Bytes::from(event.encode_to_vec()),
            },
        }
    }

    /// Publish a committed event now; if JetStream is away the outbox
    /// relay publishes it when it is back (the write is already durable).
    async fn publish(&self, staged: &Staged) {
        if let Err(error) = self.outbox.publish_now(staged).await {
            tracing::warn!(%error, event_id = %staged.event.id, "event left to the outbox relay");
            self.outbox.notify();
        }
    }

    async fn find_call(&self, call_id: &str) -> Result<Option<call::Model>, sea_orm::DbErr> {
        call::Entity::find_by_id(call_id.to_owned())
            .one(&self.db)
            .await
    }

    fn is_voicemail(&self, p: &CtiParams) -> bool {
        self.config.voicemail_users.iter().any(|v| {
            p.users.iter().any(|u| u.eq_ignore_ascii_case(v))
                || p.answering_number.eq_ignore_ascii_case(v)
        })
    }

    #[tracing::instrument(skip_all, fields(call_id = %p.call_id, event = ?p.event))]
    async fn handle_cti(&self, p: CtiParams) -> Result<CtiReply, CtiError> {
        match p.event {
            CtiEvent::NewCall => self.new_call(p).await,
            CtiEvent::Answer => self.answer(p).await,
            CtiEvent::Hangup => self.hangup(p).await,
        }
    }

    async fn new_call(&self, p: CtiParams) -> Result<CtiReply, CtiError> {
        let now = self.clock.now();
        let direction = p.direction.unwrap_or(Direction::In);
        let raw = match direction {
            Direction::In => &p.from,
            Direction::Out => &p.to,
        };
        let (phone, anonymous) = citizen_number(raw);
        let blocked =
            direction == Direction::In && phone.as_ref().is_some_and(|n| self.blocked.contains(n));
        if self
            .find_call(&p.call_id)
            .await
            .map_err(internal_cti)?
            .is_some()
        {
            return Err(CtiError::Invalid(format!(
                "call `{}` already exists (duplicate newCall)",
                p.call_id
            )));
        }
        let row = call::ActiveModel {
            call_id: Set(p.call_id.clone()),
            direction: Set(direction.as_str().to_owned()),
            citizen_phone: Set(phone),
            anonymous: Set(anonymous),
            blocked: Set(blocked),
            queue: Set(p.queue.clone()),
            state: Set(if blocked { "ended" } else { "ringing" }.to_owned()),
            answered_by: Set(String::new()),
            cause: Set(if blocked {
                "blocked".to_owned()
            } else {
                String::new()
            }),
            voicemail: Set(false),
            missed: Set(false),
            callback_requested: Set(false),
            waiting_seconds: Set(blocked.then_some(0)),
            talk_seconds: Set(blocked.then_some(0)),
            source: Set("cti".to_owned()),
            intake_event_id: Set(None),
            started_at: Set(now),
            answered_at: Set(None),
            ended_at: Set(blocked.then_some(now)),
        };
        let txn = self.db.begin().await.map_err(internal_cti)?;
        let inserted = match row.insert(&txn).await {
            Ok(c) => {
                let ended = blocked.then(|| call_ended(&self.outbox, &c));
                if let Some(e) = &ended {
                    self.outbox.stage(&txn, e).await.map_err(internal_cti)?;
                }
                txn.commit().await.map_err(internal_cti)?;
                if let Some(e) = ended {
                    self.publish(&e).await;
                }
                Ok(c)
            }
            Err(e) => Err(e),
        };
        match inserted {
            Ok(c) => {
                if blocked {
                    count_call(&c);
                    tracing::info!(call_id = %c.call_id, "blocked caller rejected");
                    return Ok(CtiReply::Reject);
                }
                tracing::info!(call_id = %c.call_id, direction = %c.direction, anonymous, "call started");
                Ok(CtiReply::Accepted)
            }
            Err(e) if is_unique_violation(&e) => Err(CtiError::Invalid(format!(
                "call `{}` already exists (duplicate newCall)",
                p.call_id
            ))),
            Err(e) => Err(internal_cti(e)),
        }
    }

    async fn answer(&self, p: CtiParams) -> Result<CtiReply, CtiError> {
        let now = self.clock.now();
        let Some(c) = self.find_call(&p.call_id).await.map_err(internal_cti)? else {
            return Err(CtiError::Invalid(format!(
                "unknown call `{}` (answer without newCall)",
                p.call_id
            )));
        };
        if c.state != "ringing" {
            // An answer after the hangup (events crossed), or a repeat.
            tracing::info!(call_id = %c.call_id, state = %c.state, "answer ignored");
            return Ok(CtiReply::Ignored);
        }
        let answered_by = if p.users.is_empty() {
            p.answering_number.clone()
        } else {
            p.users.join(", ")
        };
        let res = call::Entity::update_many()
            .col_expr(call::Column::State, Expr::value("answered"))
            .col_expr(call::Column::AnsweredAt, Expr::value(now))
            .col_expr(
                call::Column::AnsweredBy,
                Expr::value(answered_by.chars().take(200).collect::<String>()),
            )
            .col_expr(call::Column::Voicemail, Expr::value(self.is_voicemail(&p)))
            .filter(call::Column::CallId.eq(c.call_id.as_str()))
            .filter(call::Column::State.eq("ringing"))
            .exec(&self.db)
            .await
            .map_err(internal_cti)?;
        if res.rows_affected == 0 {
            return Ok(CtiReply::Ignored);
        }
        tracing::info!(call_id = %c.call_id, "call answered");
        Ok(CtiReply::Accepted)
    }

    async fn hangup(&self, p: CtiParams) -> Result<CtiReply, CtiError> {
        let now = self.clock.now();
        let Some(c) = self.find_call(&p.call_id).await.map_err(internal_cti)? else {
            return Err(CtiError::Invalid(format!(
                "unknown call `{}` (hangup without newCall)",
                p.call_id
            )));
        };
        if c.state == "ended" {
            tracing::info!(call_id = %c.call_id, "repeated hangup ignored");
            return Ok(CtiReply::Ignored);
        }
        let inbound = c.direction == "in";
        let waiting = seconds_between(c.started_at, c.answered_at.unwrap_or(now));
        let talk = c.answered_at.map_or(0, |a| seconds_between(a, now));
        let missed = inbound && (c.answered_at.is_none() || c.voicemail);
        let queue = if p.queue.is_empty() {
            c.queue.clone()
        } else {
            p.queue.clone()
        };
        let callback_requested = inbound && self.config.callback_queues.contains(&queue);
        let event_id = inbound.then(new_event_id);
        let ended = call::Model {
            state: "ended".into(),
            cause: p.cause.clone(),
            queue,
            missed,
            callback_requested,
            waiting_seconds: Some(waiting),
            talk_seconds: Some(talk),
            intake_event_id: event_id.clone(),
            ended_at: Some(now),
            ..c
        };
        let txn = self.db.begin().await.map_err(internal_cti)?;
        let res = call::Entity::update_many()
            .col_expr(call::Column::State, Expr::value("ended"))
            .col_expr(call::Column::Cause, Expr::value(ended.cause.clone()))
            .col_expr(call::Column::Queue, Expr::value(ended.queue.clone()))
            .col_expr(call::Column::Missed, Expr::value(missed))
            .col_expr(
                call::Column::CallbackRequested,
                Expr::value(callback_requested),
            )
            .col_expr(call::Column::WaitingSeconds, Expr::value(waiting))
            .col_expr(call::Column::TalkSeconds, Expr::value(talk))
            .col_expr(call::Column::IntakeEventId, Expr::value(event_id.clone()))
            .col_expr(call::Column::EndedAt, Expr::value(now))
            .filter(call::Column::CallId.eq(ended.call_id.as_str()))
            .filter(call::Column::State.ne("ended"))
            .exec(&txn)
            .await
            .map_err(internal_cti)?;
        if res.rows_affected == 0 {
            return Ok(CtiReply::Ignored);
        }
        let staged = event_id.as_deref().map(|id| {
            let event = call_event(&ended, id);
            self.staged(&event, format!("calls/{}", ended.call_id), now)
        });
        if let Some(s) = &staged {
            self.outbox.stage(&txn, s).await.map_err(internal_cti)?;
        }
        let ended_event = call_ended(&self.outbox, &ended);
        self.outbox
            .stage(&txn, &ended_event)
            .await
            .map_err(internal_cti)?;
        txn.commit().await.map_err(internal_cti)?;
        count_call(&ended);
        tracing::info!(
            call_id = %ended.call_id,
            missed,
            callback_requested,
            waiting_seconds = waiting,
            talk_seconds = talk,
            "call ended"
        );
        // The call is durable: the PBX may go on. Publish now; if JetStream
        // is away the relay publishes it when it is back.
        if let Some(s) = staged {
            self.publish(&s).await;
        }
        self.publish(&ended_event).await;
        Ok(CtiReply::Accepted)
    }

    /// Import a Master.csv file: each new record is a call (and, inbound,
    /// an intake event); records already known by uniqueid are duplicates.
    async fn import_cdr_bytes(&self, bytes: &[u8]) -> Result<pb::ImportCdrResponse, Status> {
        if bytes.len() > self.config.max_cdr_bytes {
            return Err(invalid_argument(
                "csv",
                format!("must be at most {} bytes", self.config.max_cdr_bytes),
            ));
        }
        let (records, errors) = cdr::parse(bytes, self.config.cdr_local_time);
        let mut imported = 0u32;
        let mut duplicates = 0u32;
        for r in records {
            let outbound = self.config.cdr_outbound_contexts.contains(&r.dcontext);
            let direction = if outbound { "out" } else { "in" };
            let (phone, anonymous) = citizen_number(if outbound { &r.dst } else { &r.src });
            let answered = r.disposition == "ANSWERED" && r.billsec > 0;
            let waiting = i32::try_from(r.duration - r.billsec).unwrap_or(0);
            let talk = i32::try_from(r.billsec).unwrap_or(0);
            let event_id = (!outbound).then(new_event_id);
            let model = call::Model {
                call_id: r.uniqueid.clone(),
                direction: direction.into(),
                citizen_phone: phone,
                anonymous,
                blocked: false,
                queue: String::new(),
                state: "ended".into(),
                answered_by: String::new(),
                cause: r.disposition.clone(),
                voicemail: false,
                missed: !outbound && !answered,
                callback_requested: false,
                waiting_seconds: Some(waiting),
                talk_seconds: Some(talk),
                source: "cdr".into(),
                intake_event_id: event_id.clone(),
                started_at: r.start,
                answered_at: if answered { r.answer } else { None },
                ended_at: Some(r.end),
            };
            if self
                .find_call(&model.call_id)
                .await
                .map_err(internal_err("import cdr"))?
                .is_some()
            {
                duplicates += 1;
                continue;
            }
            let txn = self.db.begin().await.map_err(internal_err("import cdr"))?;
            let active: call::ActiveModel = model.clone().into();
            match call::Entity::insert(active).exec(&txn).await {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    duplicates += 1;
                    continue;
                }
                Err(e) => return Err(internal("import cdr", e)),
            }
            if let Some(id) = event_id.as_deref() {
                let event = call_event(&model, id);
                let staged =
                    self.staged(&event, format!("calls/{}", model.call_id), self.clock.now());
                self.outbox
                    .stage(&txn, &staged)
                    .await
                    .map_err(internal_err("import cdr"))?;
            }
            self.outbox
                .stage(&txn, &call_ended(&self.outbox, &model))
                .await
                .map_err(internal_err("import cdr"))?;
            txn.commit().await.map_err(internal_err("import cdr"))?;
            count_call(&model);
            imported += 1;
        }
        // Answer once JetStream has every event of this import.
        self.outbox
            .flush()
            .await
            .map_err(|e| unavailable("publish intake events", e))?;
        metrics::counter!("guichet_telephony_cdr_records_total", "outcome" => "imported")
            .increment(u64::from(imported));
        metrics::counter!("guichet_telephony_cdr_records_total", "outcome" => "duplicate")
            .increment(u64::from(duplicates));
        metrics::counter!("guichet_telephony_cdr_records_total", "outcome" => "malformed")
            .increment(errors.len() as u64);
        tracing::info!(
            imported,
            duplicates,
            malformed = errors.len(),
            "cdr file imported"
        );
        Ok(pb::ImportCdrResponse {
            imported,
            duplicates,
            errors,
        })
    }

    async fn callback_by_request(&self, rid: &str) -> Result<Option<callback::Model>, Status> {
        callback::Entity::find()
            .filter(callback::Column::RequestId.eq(rid))
            .one(&self.db)
            .await
            .map_err(internal_err("find callback"))
    }
}

fn callback_pb(c: callback::Model) -> pb::Callback {
    pb::Callback {
        id: c.id,
        intake_event_id: c.intake_event_id,
        request_time: Some(timestamp(c.requested_at)),
    }
}

fn call_pb(c: call::Model) -> pb::Call {
    pb::Call {
        call_id: c.call_id,
        direction: c.direction,
        state: c.state,
        queue: c.queue,
        answered_by: c.answered_by,
        cause: c.cause,
        waiting_seconds: c
            .waiting_seconds
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(0),
        talk_seconds: c
            .talk_seconds
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(0),
        missed: c.missed,
        voicemail: c.voicemail,
        anonymous: c.anonymous,
        blocked: c.blocked,
        callback_requested: c.callback_requested,
        source: c.source,
        intake_event_id: c.intake_event_id.unwrap_or_default(),
        started_at: Some(timestamp(c.started_at)),
        answered_at: c.answered_at.map(timestamp),
        ended_at: c.ended_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl pb::telephony_service_server::TelephonyService for TelephonyApi {
    #[tracing::instrument(skip_all, fields(callback_id = tracing::field::Empty))]
    async fn request_callback(
        &self,
        request: Request<pb::RequestCallbackRequest>,
    ) -> Result<GrpcResponse<pb::Callback>, Status> {
        let caller = require(&request, CALLBACK_REQUESTERS)?;
        let req = request.into_inner();
        let phone = Phone::parse(&req.phone).map_err(|e| invalid_argument("phone", e))?;
        let reason = req.reason.trim();
        if reason.chars().count() > 2000 {
            return Err(invalid_argument(
                "reason",
                "must be at most 2000 characters",
            ));
        }
        let request_id = req.request_id.trim();
        if request_id.len() > 128 {
            return Err(invalid_argument(
                "request_id",
                "must be at most 128 characters",
            ));
        }
        let call_id = req.call_id.trim();
        if call_id.len() > 200 {
            return Err(invalid_argument(
                "call_id",
                "must be at most 200 characters",
            ));
        }
        let ivr_choice = req.ivr_choice.trim();
        if ivr_choice.len() > 100 {
            return Err(invalid_argument(
                "ivr_choice",
                "must be at most 100 characters",
            ));
        }
        let request_id = (!request_id.is_empty()).then(|| request_id.to_owned());
        if let Some(rid) = &request_id
            && let Some(c) = self.callback_by_request(rid).await?
        {
            self.outbox
                .flush()
                .await
                .map_err(|e| unavailable("publish intake event", e))?;
            return Ok(GrpcResponse::new(callback_pb(c)));
        }
        let now = self.clock.now();
        let id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("callback_id", id.as_str());
        let event_id = new_event_id();
        let local = guichet_platform::calendar::to_paris(now).format("%d/%m/%Y à %H:%M");
        let body = if reason.is_empty() {
            format!("Demande de rappel le {local}.")
        } else {
            format!("Demande de rappel le {local} : {reason}")
        };
        let event = IntakeEvent {
            id: event_id.clone(),
            channel: Channel::Telephony as i32,
            received_at: Some(timestamp(now)),
            citizen: Some(CitizenHint {
                phones: vec![phone.as_str().to_owned()],
                ..Default::default()
            }),
            subject: "demande de rappel".into(),
            body,
            attachments: vec![],
            quoted_reference: String::new(),
            details: Some(intake_event::Details::Telephony(TelephonyDetails {
                call_id: call_id.to_owned(),
                direction: "in".into(),
                ivr_choice: ivr_choice.to_owned(),
                callback_requested: true,
                source: "request".into(),
                ..Default::default()
            })),
        };
        let txn = self
            .db
            .begin()
            .await
            .map_err(internal_err("request callback"))?;
        let res = callback::ActiveModel {
            id: Set(id.clone()),
            request_id: Set(request_id.clone()),
            phone: Set(phone.as_str().to_owned()),
            call_id: Set(call_id.to_owned()),
            requested_by: Set(caller.subject.clone()),
            intake_event_id: Set(event_id.clone()),
            requested_at: Set(now),
        }
        .insert(&txn)
        .await;
        let c = match res {
            Ok(c) => c,
            Err(e) if is_unique_violation(&e) && request_id.is_some() => {
                drop(txn);
                let c = self
                    .callback_by_request(request_id.as_deref().unwrap_or_default())
                    .await?
                    .ok_or_else(|| internal("request callback", e))?;
                return Ok(GrpcResponse::new(callback_pb(c)));
            }
            Err(e) => return Err(internal("request callback", e)),
        };
        let staged = self.staged(&event, format!("callbacks/{id}"), now);
        self.outbox
            .stage(&txn, &staged)
            .await
            .map_err(internal_err("request callback"))?;
        txn.commit()
            .await
            .map_err(internal_err("request callback"))?;
        self.outbox
            .publish_now(&staged)
            .await
            .map_err(|e| unavailable("publish intake event", e))?;
        metrics::counter!("guichet_telephony_callback_requests_total").increment(1);
        tracing::info!(callback_id = %c.id, "callback requested");
        Ok(GrpcResponse::new(callback_pb(c)))
    }

    async fn import_cdr(
        &self,
        request: Request<pb::ImportCdrRequest>,
    ) -> Result<GrpcResponse<pb::ImportCdrResponse>, Status> {
        require(&request, IMPORTERS)?;
        let req = request.into_inner();
        Ok(GrpcResponse::new(self.import_cdr_bytes(&req.csv).await?))
    }

    async fn get_call(
        &self,
        request: Request<pb::GetCallRequest>,
    ) -> Result<GrpcResponse<pb::Call>, Status> {
        require(&request, READERS)?;
        let id = request.into_inner().call_id;
        let c = self
            .find_call(id.trim())
            .await
            .map_err(internal_err("get call"))?
            .ok_or_else(|| not_found("call", &id))?;
        Ok(GrpcResponse::new(call_pb(c)))
    }
}
