//! The counter ingress: walk-in citizens at the front desk.
//!
//! Issuing a ticket records it (with its numbered place in the day's queue
//! of its service) and stages the visit as an IntakeEvent in the same
//! transaction (the outbox), then publishes it on `guichet.intake.counter`.
//! The call answers only once JetStream has stored the event; an event whose
//! publish failed is published by the outbox relay (and by a retry with the
//! same `request_id`), so a visit the desk accepted is never lost. Routing is
//! idempotent on the event id, so a second publish never creates a second
//! work item.
//!
//! Tickets are numbered per service, site and **Paris** calendar day (P001
//! again every morning). Desks then work the waiting room: call next (by
//! rank: arrival time minus the priority category's weight, so priority
//! tickets go first without starving the others), recall, start, finish,
//! no-show after a recall, transfer to another service; each step is a
//! conditional update on the ticket's status, so ten desks calling at once
//! never get the same ticket. Every call is published as a
//! `ticket_called` event (outbox) that the waiting-room boards follow
//! (gRPC `WatchBoard`, SSE `GET /board/<site>/events`).

pub mod board;
pub mod checkin;
pub mod config;
pub mod db;
pub mod visits;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use guichet_platform::auth::{AuthInterceptor, Authenticator, Role, require};
use guichet_platform::bus::{OutgoingEvent, StreamKind, new_event_id};
use guichet_platform::clock::SharedClock;
use guichet_platform::config::ConfigError;
use guichet_platform::contact::parse_hint;
use guichet_platform::db::{is_unique_violation, next_counter_value};
use guichet_platform::grpc::{GrpcServer, internal, internal_err, invalid_argument, unavailable};
use guichet_platform::outbox::{Outbox, Staged};
use guichet_platform::role::{BoxFuture, Listener, Local, RoleService, RoleSpec};
use guichet_proto::convert::timestamp;
use guichet_proto::counter::v1 as pb;
use guichet_proto::counter::v1::counter_service_server::CounterServiceServer;
use guichet_proto::intake::v1::{Channel, CounterDetails, IntakeEvent, intake_event};
use prost::Message;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set,
    TransactionTrait,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::db::entities::ticket;

pub use config::Config;

/// What a ticket is issued from (kiosk, agent or appointment check-in).
pub(crate) struct NewTicket {
    pub citizen: Option<guichet_proto::intake::v1::CitizenHint>,
    pub reason: String,
    pub service: String,
    pub letter: String,
    pub site: String,
    pub request_id: Option<String>,
    pub priority: String,
    /// Minutes the ticket is ranked ahead of its arrival (or, for an
    /// appointment in its window, of the appointment time).
    pub rank_offset_minutes: u32,
    pub issued_by: String,
    pub appointment: Option<checkin::Appointment>,
}

/// Callers allowed to issue tickets: agents at the desk and kiosks (service).
const ISSUERS: &[Role] = &[Role::Agent, Role::Service];
/// Callers working a desk.
const DESKS: &[Role] = &[Role::Agent, Role::Supervisor];
/// Callers that may read tickets and follow the board (screens use a service token).
const READERS: &[Role] = &[Role::Agent, Role::Supervisor, Role::Admin, Role::Service];

pub use guichet_platform::Deps;

pub struct Service {
    api: CounterApi,
    auth: Arc<Authenticator>,
    listener: tokio::net::TcpListener,
    http_addr: std::net::SocketAddr,
}

#[derive(Clone)]
pub struct CounterApi {
    db: DatabaseConnection,
    outbox: Outbox,
    config: Arc<Config>,
    clock: SharedClock,
    /// Cancelled at shutdown: ends the open board streams, so draining
    /// does not wait for the screens to disconnect.
    stop: CancellationToken,
    /// The appointment role, for check-in; `None` when not configured.
    appointments: Option<checkin::AppointmentClient>,
}

/// The counter role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "ingress-counter";
    const SECTION: &'static str = "counter";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    /// The counter checks appointments in on the local port when the
    /// appointment role runs here and no other is configured.
    fn wire(config: &mut Config, local: &Local) {
        if config.appointment_url.is_empty()
            && let Some(url) = local.url_of("appointment")
        {
            config.appointment_url = url.to_owned();
        }
    }

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

/// Build the role on `deps` (its clock: tests cross Paris midnight without
/// waiting).
pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let clock = deps.clock.clone();
    let db = deps
        .database::<db::Migrator>("counter", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Intake).await?;
    deps.bus.ensure_stream(StreamKind::Events).await?;
    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on counter.http_addr {}: {e}",
                config.http_addr
            )
        })?;
    let http_addr = listener.local_addr()?;
    let appointments = checkin::client(&config.appointment_url, &deps.auth)?;
    Ok(Service {
        api: CounterApi {
            outbox: Outbox::new(db.clone(), deps.bus),
            db,
            config: Arc::new(config),
            clock,
            stop: CancellationToken::new(),
            appointments,
        },
        auth: deps.auth,
        listener,
        http_addr,
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(CounterServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// Where the board feed listens (known once built: port 0 works).
    fn listeners(&self) -> Vec<Listener> {
        vec![Listener::http(self.http_addr)]
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(Service::run(*self, shutdown))
    }
}

impl Service {
    /// Serve the board feed and relay staged events, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let app = board::router(self.api.clone());
        let stop = self.api.stop.clone();
        let on_shutdown = shutdown.clone();
        // Open board streams end at shutdown, so draining does not wait for
        // the screens to disconnect.
        let ended = async move {
            on_shutdown.cancelled().await;
            stop.cancel();
        };
        let http = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let relay = self.api.outbox.clone().run(shutdown);
        let (served, (), ()) = tokio::join!(http, relay, ended);
        served?;
        Ok(())
    }
}

/// The Paris calendar day of `t` (ticket numbers restart at local midnight).
pub fn paris_day(t: DateTime<Utc>) -> String {
    guichet_platform::calendar::to_paris(t)
        .date()
        .format("%Y-%m-%d")
        .to_string()
}

pub(crate) fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
    u32::try_from((to - from).num_seconds().max(0)).unwrap_or(u32::MAX)
}

pub(crate) fn ticket_pb(t: ticket::Model) -> pb::Ticket {
    let status = match t.status.as_str() {
        "waiting" => pb::TicketStatus::Waiting,
        "called" => pb::TicketStatus::Called,
        "in_service" => pb::TicketStatus::InService,
        "done" => pb::TicketStatus::Done,
        "no_show" => pb::TicketStatus::NoShow,
        _ => pb::TicketStatus::Unspecified,
    };
    pb::Ticket {
        issued_at: Some(timestamp(t.issued_at)),
        id: t.id,
        number: t.number,
        service: t.service,
        site: t.site,
        intake_event_id: t.intake_event_id,
        priority: t.priority,
        status: status as i32,
        desk: t.desk.unwrap_or_default(),
        call_time: t.call_time.map(timestamp),
        start_time: t.start_time.map(timestamp),
        finish_time: t.finish_time.map(timestamp),
        recalls: u32::try_from(t.recalls).unwrap_or(0),
        waiting_seconds: t.start_time.map_or(0, |s| secs(t.waiting_since, s)),
        service_seconds: match (t.start_time, t.finish_time) {
            (Some(s), Some(f)) => secs(s, f),
            _ => 0,
        },
        no_show_time: t.no_show_time.map(timestamp),
        transferred_from: t.transferred_from.unwrap_or_default(),
        booking_id: t.booking_id.unwrap_or_default(),
        appointment_time: t.appointment_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl pb::counter_service_server::CounterService for CounterApi {
    #[tracing::instrument(skip_all, fields(ticket_id = tracing::field::Empty))]
    async fn issue_ticket(
        &self,
        request: Request<pb::IssueTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = require(&request, ISSUERS)?;
        let req = request.into_inner();
        let citizen = parse_hint(req.citizen.as_ref(), "citizen")?;
        if citizen.given_name.is_empty() && citizen.family_name.is_empty() {
            return Err(invalid_argument(
                "citizen.family_name",
                "a walk-in citizen gives at least a name",
            ));
        }
        let reason = req.reason.trim();
        if reason.chars().count() > 2000 {
            return Err(invalid_argument(
                "reason",
                "must be at most 2000 characters",
            ));
        }
        let service = if req.service.trim().is_empty() {
            self.config.default_service.as_str()
        } else {
            req.service.trim()
        };
        let letter = self.config.services.get(service).ok_or_else(|| {
            invalid_argument(
                "service",
                format!(
                    "`{service}` is not a counter service ({})",
                    self.config
                        .services
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let site = self.checked_site(&req.site)?;
        let request_id = req.request_id.trim();
        if request_id.len() > 128 {
            return Err(invalid_argument(
                "request_id",
                "must be at most 128 characters",
            ));
        }
        let request_id = (!request_id.is_empty()).then(|| request_id.to_owned());
        let priority = req.priority.trim();
        let weight = if priority.is_empty() {
            0
        } else {
            *self.config.priorities.get(priority).ok_or_else(|| {
                invalid_argument(
                    "priority",
                    format!(
                        "`{priority}` is not a priority category ({})",
                        self.config
                            .priorities
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?
        };

        let t = self
            .issue(NewTicket {
                citizen: req.citizen.clone(),
                reason: reason.to_owned(),
                service: service.to_owned(),
                letter: letter.clone(),
                site,
                request_id,
                priority: priority.to_owned(),
                rank_offset_minutes: weight,
                issued_by: caller.subject.clone(),
                appointment: None,
            })
            .await?;
        Ok(Response::new(ticket_pb(t)))
    }

    async fn call_next(
        &self,
        request: Request<pb::CallNextRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        require(&request, DESKS)?;
        self.call_next_ticket(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn recall_ticket(
        &self,
        request: Request<pb::TicketActionRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        require(&request, DESKS)?;
        self.recall(&request.into_inner().ticket_id)
            .await
            .map(Response::new)
    }

    async fn start_service(
        &self,
        request: Request<pb::TicketActionRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        require(&request, DESKS)?;
        self.start(&request.into_inner().ticket_id)
            .await
            .map(Response::new)
    }

    async fn finish_service(
        &self,
        request: Request<pb::TicketActionRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        require(&request, DESKS)?;
        self.finish(&request.into_inner().ticket_id)
            .await
            .map(Response::new)
    }

    async fn mark_no_show(
        &self,
        request: Request<pb::TicketActionRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        require(&request, DESKS)?;
        self.no_show(&request.into_inner().ticket_id)
            .await
            .map(Response::new)
    }

    async fn transfer_ticket(
        &self,
        request: Request<pb::TransferTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        require(&request, DESKS)?;
        let req = request.into_inner();
        self.transfer(&req.ticket_id, &req.service)
            .await
            .map(Response::new)
    }

    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        require(&request, READERS)?;
        let t = self.ticket(&request.into_inner().ticket_id).await?;
        Ok(Response::new(ticket_pb(t)))
    }

    type WatchBoardStream = board::BoardStream;

    async fn watch_board(
        &self,
        request: Request<pb::WatchBoardRequest>,
    ) -> Result<Response<Self::WatchBoardStream>, Status> {
        require(&request, READERS)?;
        let site = request.into_inner().site;
        let site = if site.trim().is_empty() {
            self.config.default_site.clone()
        } else {
            site.trim().to_owned()
        };
        let stream = self.board_stream(site).await?;
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all, fields(ticket_id = tracing::field::Empty, booking_id = tracing::field::Empty))]
    async fn check_in_appointment(
        &self,
        request: Request<pb::CheckInAppointmentRequest>,
    ) -> Result<Response<pb::CheckInAppointmentResponse>, Status> {
        let caller = require(&request, ISSUERS)?;
        self.check_in(&caller.subject, request.into_inner())
            .await
            .map(Response::new)
    }
}

impl CounterApi {
    /// Record a ticket and stage its visit as an IntakeEvent in the same
    /// transaction; answer once JetStream has the event. Idempotent on
    /// `request_id`.
    pub(crate) async fn issue(&self, n: NewTicket) -> Result<ticket::Model, Status> {
        // A retry of an accepted request: make sure what is staged is
        // published, and return the same ticket.
        if let Some(rid) = &n.request_id
            && let Some(t) = self.ticket_by_request(rid).await?
        {
            self.outbox
                .flush()
                .await
                .map_err(|e| unavailable("publish intake event", e))?;
            return Ok(t);
        }
        let NewTicket {
            citizen,
            reason,
            service,
            letter,
            site,
            request_id,
            priority,
            rank_offset_minutes,
            issued_by,
            appointment,
        } = n;
        let (service, site, priority) = (service.as_str(), site.as_str(), priority.as_str());

        let now = self.clock.now();
        let day = paris_day(now);
        let id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("ticket_id", id.as_str());
        let event_id = new_event_id();
        let txn = self
            .db
            .begin()
            .await
            .map_err(internal_err("issue ticket"))?;
        let seq = next_counter_value(&txn, "ticket_counters", &format!("{site}|{service}|{day}"))
            .await
            .map_err(internal_err("issue ticket"))?;
        let number = format!("{letter}{seq:03}");
        let event = IntakeEvent {
            id: event_id.clone(),
            channel: Channel::Counter as i32,
            received_at: Some(timestamp(now)),
            citizen,
            subject: String::new(),
            body: reason,
            attachments: vec![],
            quoted_reference: String::new(),
            details: Some(intake_event::Details::Counter(CounterDetails {
                ticket_id: id.clone(),
                ticket_number: number.clone(),
                service: service.to_owned(),
                issued_by,
                site: site.to_owned(),
                priority: priority.to_owned(),
                booking_id: appointment
                    .as_ref()
                    .map(|a| a.booking_id.clone())
                    .unwrap_or_default(),
                booking_reference: appointment
                    .as_ref()
                    .map(|a| a.reference.clone())
                    .unwrap_or_default(),
                dossier_id: appointment
                    .as_ref()
                    .map(|a| a.dossier_id.clone())
                    .unwrap_or_default(),
            })),
        };
        let res = ticket::ActiveModel {
            id: Set(id.clone()),
            request_id: Set(request_id.clone()),
            number: Set(number),
            service: Set(service.to_owned()),
            site: Set(site.to_owned()),
            day: Set(day),
            intake_event_id: Set(event_id.clone()),
            issued_at: Set(now),
            priority: Set(priority.to_owned()),
            status: Set("waiting".to_owned()),
            waiting_since: Set(now),
            rank_at: Set(match &appointment {
                Some(a) if !a.late => {
                    a.start - chrono::Duration::minutes(i64::from(rank_offset_minutes))
                }
                _ => now - chrono::Duration::minutes(i64::from(rank_offset_minutes)),
            }),
            desk: Set(None),
            call_time: Set(None),
            start_time: Set(None),
            finish_time: Set(None),
            no_show_time: Set(None),
            recalls: Set(0),
            transferred_from: Set(None),
            booking_id: Set(appointment.as_ref().map(|a| a.booking_id.clone())),
            appointment_at: Set(appointment.as_ref().map(|a| a.start)),
        }
        .insert(&txn)
        .await;
        let t = match res {
            Ok(t) => t,
            Err(e) if is_unique_violation(&e) && request_id.is_some() => {
                // The same request raced us: answer with its ticket.
                drop(txn);
                let t = self
                    .ticket_by_request(request_id.as_deref().unwrap_or_default())
                    .await?
                    .ok_or_else(|| internal("issue ticket", e))?;
                return Ok(t);
            }
            Err(e) => return Err(internal("issue ticket", e)),
        };
        let staged = Staged {
            nats_subject: self.outbox.bus().subject("intake.counter"),
            event: OutgoingEvent {
                id: event_id,
                ty: "guichet.intake.v1.intake_event".into(),
                subject: format!("tickets/{}", t.id),
                time: now,
                body: Bytes::from(event.encode_to_vec()),
            },
        };
        self.outbox
            .stage(&txn, &staged)
            .await
            .map_err(internal_err("issue ticket"))?;
        txn.commit().await.map_err(internal_err("issue ticket"))?;
        // Answer only after JetStream has the event: the visit is accepted.
        self.outbox
            .publish_now(&staged)
            .await
            .map_err(|e| unavailable("publish intake event", e))?;
        metrics::counter!("guichet_counter_tickets_issued_total", "service" => service.to_owned())
            .increment(1);
        tracing::info!(ticket_id = %t.id, service, site, "ticket issued");
        Ok(t)
    }

    async fn ticket_by_request(&self, rid: &str) -> Result<Option<ticket::Model>, Status> {
        ticket::Entity::find()
            .filter(ticket::Column::RequestId.eq(rid))
            .one(&self.db)
            .await
            .map_err(internal_err("find ticket"))
    }
}
