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

pub mod config;
pub mod db;

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use guichet_platform::auth::{AuthInterceptor, Authenticator, Role, require};
use guichet_platform::bus::{OutgoingEvent, StreamKind, new_event_id};
use guichet_platform::contact::parse_hint;
use guichet_platform::db::{is_unique_violation, next_counter_value};
use guichet_platform::grpc::{GrpcServer, internal, internal_err, invalid_argument, unavailable};
use guichet_platform::outbox::{Outbox, Staged};
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

/// Callers allowed to issue tickets: agents at the desk and kiosks (service).
const ISSUERS: &[Role] = &[Role::Agent, Role::Service];

pub use guichet_platform::Deps;

pub struct Service {
    api: CounterApi,
    auth: Arc<Authenticator>,
}

#[derive(Clone)]
pub struct CounterApi {
    db: DatabaseConnection,
    outbox: Outbox,
    config: Arc<Config>,
}

pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let db = deps
        .database::<db::Migrator>("counter", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Intake).await?;
    Ok(Service {
        api: CounterApi {
            outbox: Outbox::new(db.clone(), deps.bus),
            db,
            config: Arc::new(config),
        },
        auth: deps.auth,
    })
}

impl Service {
    pub fn register(&self, server: &mut GrpcServer) {
        server.add(CounterServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// Relay intake events whose immediate publish failed, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.api.outbox.run(shutdown).await;
        Ok(())
    }
}

fn ticket_pb(t: ticket::Model) -> pb::Ticket {
    pb::Ticket {
        issued_at: Some(timestamp(t.issued_at)),
        id: t.id,
        number: t.number,
        service: t.service,
        site: t.site,
        intake_event_id: t.intake_event_id,
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
        let site = if req.site.trim().is_empty() {
            self.config.default_site.as_str()
        } else {
            req.site.trim()
        };
        if site.len() > 64
            || !site
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid_argument(
                "site",
                "must be 1 to 64 ASCII letters, digits, '-' or '_'",
            ));
        }
        let request_id = req.request_id.trim();
        if request_id.len() > 128 {
            return Err(invalid_argument(
                "request_id",
                "must be at most 128 characters",
            ));
        }
        let request_id = (!request_id.is_empty()).then(|| request_id.to_owned());

        // A retry of an accepted request: make sure what is staged is
        // published, and return the same ticket.
        if let Some(rid) = &request_id
            && let Some(t) = self.ticket_by_request(rid).await?
        {
            self.outbox
                .flush()
                .await
                .map_err(|e| unavailable("publish intake event", e))?;
            return Ok(Response::new(ticket_pb(t)));
        }

        let now = Utc::now();
        let day = now.format("%Y-%m-%d").to_string();
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
            citizen: req.citizen.clone(),
            subject: String::new(),
            body: reason.to_owned(),
            attachments: vec![],
            quoted_reference: String::new(),
            details: Some(intake_event::Details::Counter(CounterDetails {
                ticket_id: id.clone(),
                ticket_number: number.clone(),
                service: service.to_owned(),
                issued_by: caller.subject.clone(),
                site: site.to_owned(),
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
                return Ok(Response::new(ticket_pb(t)));
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
        Ok(Response::new(ticket_pb(t)))
    }
}

impl CounterApi {
    async fn ticket_by_request(&self, rid: &str) -> Result<Option<ticket::Model>, Status> {
        ticket::Entity::find()
            .filter(ticket::Column::RequestId.eq(rid))
            .one(&self.db)
            .await
            .map_err(internal_err("find ticket"))
    }
}
