//! Lifecycle facts from the EVENTS stream.
//!
//! A durable pull consumer takes the stream in batches; each batch is
//! applied in one database transaction that also records the id of every
//! event it applied (`applied_event`), then the batch is acknowledged
//! (`AckPolicy::All`: the last message acknowledges the batch). A batch
//! redelivered after a crash, or an event published twice, finds its ids
//! already recorded and changes nothing. An event the role cannot read (no
//! CloudEvents id, a body that does not decode, a type it does not know)
//! is counted as skipped, logged with its id and recorded, and never
//! blocks the consumer.
//!
//! Events of one entity come from one role's outbox, which publishes them
//! in commit order, so within an entity the facts are applied in order;
//! facts from several roles (a request and its dossier) are joined at
//! query time, never at ingest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use guichet_platform::bus::{Bus, IncomingEvent, StreamKind};
use guichet_platform::calendar::BusinessCalendar;
use guichet_platform::db::Sql;
use guichet_proto::convert::datetime;
use guichet_proto::events::v1 as ev;
use prost::Message;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait, TryGetable,
    Value,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Counters of what the consumer did since the role started.
#[derive(Debug, Default)]
pub struct Stats {
    pub applied: AtomicU64,
    pub skipped: AtomicU64,
    pub duplicates: AtomicU64,
    pub ignored: AtomicU64,
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Known, but no indicator needs it (a timeline entry, a notification).
    Ignored,
    Skipped,
    Duplicate,
}

/// One message of a batch: its envelope, or why it has none.
pub type Incoming = Result<IncomingEvent, (u64, String)>;

/// Applies events to the fact tables.
#[derive(Clone)]
pub struct Ingest {
    pub db: DatabaseConnection,
    pub calendar: Arc<BusinessCalendar>,
    pub stats: Arc<Stats>,
}

fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn ts(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref().and_then(datetime).map(secs)
}

fn opt(v: Option<i64>) -> Value {
    Value::BigInt(v)
}

impl Ingest {
    /// Apply a batch in one transaction; returns each event's outcome.
    pub async fn apply_batch(&self, batch: &[Incoming]) -> Result<Vec<Outcome>, DbErr> {
        let txn = self.db.begin().await?;
        let mut out = Vec::with_capacity(batch.len());
        for item in batch {
            out.push(self.apply_one(&txn, item).await?);
        }
        txn.commit().await?;
        for o in &out {
            self.count(*o);
        }
        Ok(out)
    }

    fn count(&self, o: Outcome) {
        let (counter, label) = match o {
            Outcome::Applied => (&self.stats.applied, "applied"),
            Outcome::Ignored => (&self.stats.ignored, "ignored"),
            Outcome::Skipped => (&self.stats.skipped, "skipped"),
            Outcome::Duplicate => (&self.stats.duplicates, "duplicate"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("guichet_indicators_events_total", "result" => label).increment(1);
    }

    /// Apply each event of `batch` in its own transaction, skipping (and
    /// recording) one that keeps failing: the fallback when a whole batch
    /// cannot commit.
    pub async fn apply_each(&self, batch: &[Incoming]) -> Result<(), DbErr> {
        for item in batch {
            match self.apply_batch(std::slice::from_ref(item)).await {
                Ok(_) => {}
                Err(error) => {
                    let (id, seq, ty) = match item {
                        Ok(e) => (e.id.clone(), e.stream_sequence, e.ty.clone()),
                        Err((seq, _)) => (format!("stream-{seq}"), *seq, String::new()),
                    };
                    tracing::error!(event_id = %id, %error, "event cannot be applied, skipped");
                    let txn = self.db.begin().await?;
                    if self.record(&txn, &id, &ty, seq, true).await? {
                        txn.commit().await?;
                        self.count(Outcome::Skipped);
                    }
                }
            }
        }
        Ok(())
    }

    /// Record an event id; false when it was already recorded.
    async fn record(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        ty: &str,
        seq: u64,
        skipped: bool,
    ) -> Result<bool, DbErr> {
        let mut sql = Sql::new(txn.get_database_backend());
        sql.push("INSERT INTO applied_event (id, ce_type, stream_sequence, skipped) VALUES (")
            .bind(id)
            .push(", ")
            .bind(ty)
            .push(", ")
            .bind(seq as i64)
            .push(", ")
            .bind(i32::from(skipped))
            .push(") ON CONFLICT (id) DO NOTHING");
        Ok(txn.execute_raw(sql.build()).await?.rows_affected() == 1)
    }

    async fn apply_one(
        &self,
        txn: &DatabaseTransaction,
        item: &Incoming,
    ) -> Result<Outcome, DbErr> {
        let e = match item {
            Ok(e) => e,
            Err((seq, reason)) => {
                tracing::warn!(stream_sequence = seq, %reason, "unreadable event skipped");
                let id = format!("stream-{seq}");
                return Ok(if self.record(txn, &id, "", *seq, true).await? {
                    Outcome::Skipped
                } else {
                    Outcome::Duplicate
                });
            }
        };
        let Some(kind) = Kind::of(&e.ty) else {
            tracing::warn!(event_id = %e.id, ce_type = %e.ty, "unknown event type skipped");
            return Ok(
                if self
                    .record(txn, &e.id, &e.ty, e.stream_sequence, true)
                    .await?
                {
                    Outcome::Skipped
                } else {
                    Outcome::Duplicate
                },
            );
        };
        if kind == Kind::Other {
            return Ok(Outcome::Ignored);
        }
        let span = tracing::info_span!(
            "apply",
            messaging.message.id = %e.id,
            cloudevents.event_type = %e.ty,
        );
        async {
            if !self.record(txn, &e.id, &e.ty, e.stream_sequence, false).await? {
                return Ok(Outcome::Duplicate);
            }
            let at = e.time.unwrap_or_else(Utc::now);
            match self.apply_kind(txn, kind, e, at).await {
                Ok(()) => Ok(Outcome::Applied),
                Err(Bad::Db(err)) => Err(err),
                Err(Bad::Body(reason)) => {
                    tracing::warn!(event_id = %e.id, ce_type = %e.ty, %reason, "malformed event skipped");
                    let mut sql = Sql::new(txn.get_database_backend());
                    sql.push("UPDATE applied_event SET skipped = 1 WHERE id = ")
                        .bind(e.id.as_str());
                    txn.execute_raw(sql.build()).await?;
                    Ok(Outcome::Skipped)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn apply_kind(
        &self,
        txn: &DatabaseTransaction,
        kind: Kind,
        e: &IncomingEvent,
        at: DateTime<Utc>,
    ) -> Result<(), Bad> {
        fn body<M: Message + Default>(e: &IncomingEvent) -> Result<M, Bad> {
            M::decode(e.body.clone()).map_err(|err| Bad::Body(format!("undecodable body: {err}")))
        }
        match kind {
            Kind::WorkItem => self.work_item(txn, body(e)?, at).await?,
            Kind::SlaBreached => {
                let m: ev::WorkItemEscalated = body(e)?;
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push("UPDATE request_fact SET sla_breached = 1 WHERE id = ")
                    .bind(m.work_item_id);
                txn.execute_raw(sql.build()).await?;
            }
            Kind::Presence => {
                let m: ev::AgentPresenceChanged = body(e)?;
                let changed = ts(&m.changed_at).unwrap_or(secs(at));
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push("INSERT INTO agent_presence (agent_id, presence, changed_s) VALUES (")
                    .bind(m.agent_id)
                    .push(", ")
                    .bind(m.presence)
                    .push(", ")
                    .bind(changed)
                    .push(
                        ") ON CONFLICT (agent_id) DO UPDATE SET presence = excluded.presence, \
                         changed_s = excluded.changed_s WHERE excluded.changed_s >= agent_presence.changed_s",
                    );
                txn.execute_raw(sql.build()).await?;
            }
            Kind::DossierOpened => {
                let m: ev::DossierOpened = body(e)?;
                let opened = ts(&m.opened_time).unwrap_or(secs(at));
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push(
                    "INSERT INTO dossier_fact (id, reference, process_id, process_version, domain, \
                     state, opened_s, closed_s, reopened) VALUES (",
                )
                .bind(m.dossier_id)
                .push(", ")
                .bind(m.reference)
                .push(", ")
                .bind(m.process_id)
                .push(", ")
                .bind(m.process_version as i32)
                .push(", ")
                .bind(m.domain)
                .push(", ")
                .bind(m.state)
                .push(", ")
                .bind(opened)
                .push(", NULL, 0) ON CONFLICT (id) DO NOTHING");
                txn.execute_raw(sql.build()).await?;
            }
            Kind::DossierState => {
                let m: ev::DossierStateChanged = body(e)?;
                let when = ts(&m.occur_time).unwrap_or(secs(at));
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push("UPDATE dossier_fact SET state = ")
                    .bind(m.to_state)
                    .push(", process_version = ")
                    .bind(m.process_version as i32)
                    .push(", closed_s = ")
                    .bind(opt(m.closed.then_some(when)));
                if m.cause == "reopen" {
                    sql.push(", reopened = reopened + 1");
                }
                sql.push(" WHERE id = ").bind(m.dossier_id);
                txn.execute_raw(sql.build()).await?;
            }
            Kind::CallEnded => {
                let m: ev::CallEnded = body(e)?;
                let started = ts(&m.started_at).unwrap_or(secs(at));
                let ended = ts(&m.ended_at).unwrap_or(started);
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push(
                    "INSERT INTO call_fact (id, direction, queue, started_s, ended_s, waiting_s, \
                     talk_s, missed, voicemail, blocked, callback_requested, intake_event_id) VALUES (",
                )
                .bind(m.call_id)
                .push(", ")
                .bind(m.direction)
                .push(", ")
                .bind(m.queue)
                .push(", ")
                .bind(started)
                .push(", ")
                .bind(ended)
                .push(", ")
                .bind(i64::from(m.waiting_seconds))
                .push(", ")
                .bind(i64::from(m.talk_seconds))
                .push(", ")
                .bind(i32::from(m.missed))
                .push(", ")
                .bind(i32::from(m.voicemail))
                .push(", ")
                .bind(i32::from(m.blocked))
                .push(", ")
                .bind(i32::from(m.callback_requested))
                .push(", ")
                .bind(m.intake_event_id)
                .push(
                    ") ON CONFLICT (id) DO UPDATE SET ended_s = excluded.ended_s, \
                     waiting_s = excluded.waiting_s, talk_s = excluded.talk_s, missed = excluded.missed, \
                     voicemail = excluded.voicemail, callback_requested = excluded.callback_requested, \
                     intake_event_id = excluded.intake_event_id",
                );
                txn.execute_raw(sql.build()).await?;
            }
            Kind::TicketCalled => {
                let m: ev::TicketCalled = body(e)?;
                let called = ts(&m.call_time).unwrap_or(secs(at));
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push(
                    "INSERT INTO visit_fact (id, ticket_number, service, site, desk, issued_s, \
                     called_s, ended_s, waiting_s, service_s, outcome) VALUES (",
                )
                .bind(m.ticket_id)
                .push(", ")
                .bind(m.ticket_number)
                .push(", ")
                .bind(m.service)
                .push(", ")
                .bind(m.site)
                .push(", ")
                .bind(m.desk)
                .push(", ")
                .bind(called)
                .push(", ")
                .bind(called)
                .push(
                    ", NULL, 0, 0, 'called') ON CONFLICT (id) DO UPDATE SET \
                     called_s = COALESCE(visit_fact.called_s, excluded.called_s), desk = excluded.desk",
                );
                txn.execute_raw(sql.build()).await?;
            }
            Kind::VisitEnded => {
                let m: ev::VisitEnded = body(e)?;
                let ended = ts(&m.end_time).unwrap_or(secs(at));
                let issued = ts(&m.issued_at).unwrap_or(ended);
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push(
                    "INSERT INTO visit_fact (id, ticket_number, service, site, desk, issued_s, \
                     called_s, ended_s, waiting_s, service_s, outcome) VALUES (",
                )
                .bind(m.ticket_id)
                .push(", ")
                .bind(m.ticket_number)
                .push(", ")
                .bind(m.service)
                .push(", ")
                .bind(m.site)
                .push(", ")
                .bind(m.desk)
                .push(", ")
                .bind(issued)
                .push(", NULL, ")
                .bind(ended)
                .push(", ")
                .bind(i64::from(m.waiting_seconds))
                .push(", ")
                .bind(i64::from(m.service_seconds))
                .push(", ")
                .bind(m.outcome)
                .push(
                    ") ON CONFLICT (id) DO UPDATE SET service = excluded.service, desk = excluded.desk, \
                     issued_s = excluded.issued_s, ended_s = excluded.ended_s, \
                     waiting_s = excluded.waiting_s, service_s = excluded.service_s, \
                     outcome = excluded.outcome",
                );
                txn.execute_raw(sql.build()).await?;
            }
            Kind::Appointment => {
                let m: ev::AppointmentChanged = body(e)?;
                let when = ts(&m.occurred_time).unwrap_or(secs(at));
                let start = ts(&m.start_time).unwrap_or(when);
                let status = m.status.as_str();
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push(
                    "INSERT INTO appointment_fact (id, reference, appointment_type, site, dossier_id, \
                     status, people, booked_s, start_s, checked_in_s, seen_s, cancelled_s) VALUES (",
                )
                .bind(m.booking_id.as_str())
                .push(", ")
                .bind(m.reference.as_str())
                .push(", ")
                .bind(m.appointment_type.as_str())
                .push(", ")
                .bind(m.site_id.as_str())
                .push(", ")
                .bind(m.dossier_id.as_str())
                .push(", ")
                .bind(status)
                .push(", ")
                .bind(m.people as i32)
                .push(", ")
                .bind(when)
                .push(", ")
                .bind(start)
                .push(", ")
                .bind(opt((status == "checked_in").then_some(when)))
                .push(", ")
                .bind(opt((status == "seen").then_some(when)))
                .push(", ")
                .bind(opt(status.starts_with("cancelled").then_some(when)))
                .push(
                    ") ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                     people = excluded.people, start_s = excluded.start_s, site = excluded.site, \
                     dossier_id = excluded.dossier_id, \
                     checked_in_s = COALESCE(appointment_fact.checked_in_s, excluded.checked_in_s), \
                     seen_s = COALESCE(appointment_fact.seen_s, excluded.seen_s), \
                     cancelled_s = excluded.cancelled_s",
                );
                txn.execute_raw(sql.build()).await?;
            }
            Kind::Availability => {
                let m: ev::AvailabilitySampled = body(e)?;
                let sampled = ts(&m.sampled_time).unwrap_or(secs(at));
                let day = chrono::NaiveDate::parse_from_str(&m.day, "%Y-%m-%d")
                    .map_err(|_| Bad::Body(format!("day `{}` is not YYYY-MM-DD", m.day)))?;
                let day_s = secs(guichet_platform::calendar::from_paris(
                    day.and_hms_opt(0, 0, 0).unwrap_or_default(),
                ));
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push(
                    "INSERT INTO appointment_sample (appointment_type, site, sampled_s, next_free_s) VALUES (",
                )
                .bind(m.appointment_type.as_str())
                .push(", ")
                .bind(m.site_id.as_str())
                .push(", ")
                .bind(sampled)
                .push(", ")
                .bind(opt(ts(&m.next_free_time)))
                .push(") ON CONFLICT (appointment_type, site, sampled_s) DO NOTHING");
                txn.execute_raw(sql.build()).await?;
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push(
                    "INSERT INTO appointment_day (site, day, day_s, sampled_s, open_units, taken_units) VALUES (",
                )
                .bind(m.site_id.as_str())
                .push(", ")
                .bind(m.day.as_str())
                .push(", ")
                .bind(day_s)
                .push(", ")
                .bind(sampled)
                .push(", ")
                .bind(m.open_units as i32)
                .push(", ")
                .bind(m.taken_units as i32)
                .push(
                    ") ON CONFLICT (site, day) DO UPDATE SET sampled_s = excluded.sampled_s, \
                     open_units = excluded.open_units, taken_units = excluded.taken_units \
                     WHERE excluded.sampled_s >= appointment_day.sampled_s",
                );
                txn.execute_raw(sql.build()).await?;
            }
            Kind::Signature => {
                let m: ev::SignatureChanged = body(e)?;
                let when = ts(&m.occurred_time).unwrap_or(secs(at));
                let status = m.status.as_str();
                let ended = matches!(status, "declined" | "expired" | "cancelled");
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push(
                    "INSERT INTO signature_fact (id, dossier_id, template, status, requested_s, \
                     completed_s, ended_s) VALUES (",
                )
                .bind(m.signature_request_id.as_str())
                .push(", ")
                .bind(m.dossier_id.as_str())
                .push(", ")
                .bind(m.process_template.as_str())
                .push(", ")
                .bind(status)
                .push(", ")
                .bind(when)
                .push(", ")
                .bind(opt((status == "signed").then_some(when)))
                .push(", ")
                .bind(opt(ended.then_some(when)))
                .push(
                    ") ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                     completed_s = COALESCE(signature_fact.completed_s, excluded.completed_s), \
                     ended_s = COALESCE(excluded.ended_s, signature_fact.ended_s)",
                );
                txn.execute_raw(sql.build()).await?;
            }
            Kind::Other => {}
        }
        Ok(())
    }

    async fn work_item(
        &self,
        txn: &DatabaseTransaction,
        m: ev::WorkItemChanged,
        at: DateTime<Utc>,
    ) -> Result<(), Bad> {
        let received = m
            .entered_at
            .as_ref()
            .and_then(datetime)
            .ok_or_else(|| Bad::Body("entered_at is missing".into()))?;
        let assigned = m.assigned_at.as_ref().and_then(datetime);
        let completed = m.completed_at.as_ref().and_then(datetime);
        let work = |t: Option<DateTime<Utc>>| {
            t.map(|t| {
                self.calendar
                    .working_time_between(received, t)
                    .num_seconds()
            })
        };
        let changed = ts(&m.changed_at).unwrap_or(secs(at));
        let first_agent = if assigned.is_some() {
            m.agent_id.clone()
        } else {
            String::new()
        };
        let completed_agent = if completed.is_some() {
            m.agent_id.clone()
        } else {
            String::new()
        };
        let mut sql = Sql::new(txn.get_database_backend());
        sql.push(
            "INSERT INTO request_fact (id, intake_event_id, channel, process_id, queue_id, \
             dossier_id, dossier_reference, status, received_s, first_touch_s, first_agent, \
             completed_s, completed_agent, outcome, cancelled_s, sla_due_s, sla_breached, \
             touch_work_s, resolve_work_s, changed_s) VALUES (",
        )
        .bind(m.work_item_id)
        .push(", ")
        .bind(m.intake_event_id)
        .push(", ")
        .bind(m.channel)
        .push(", ")
        .bind(m.process_id)
        .push(", ")
        .bind(m.queue_id)
        .push(", ")
        .bind(m.dossier_id)
        .push(", ")
        .bind(m.dossier_reference)
        .push(", ")
        .bind(m.status)
        .push(", ")
        .bind(secs(received))
        .push(", ")
        .bind(opt(assigned.map(secs)))
        .push(", ")
        .bind(first_agent)
        .push(", ")
        .bind(opt(completed.map(secs)))
        .push(", ")
        .bind(completed_agent)
        .push(", ")
        .bind(m.outcome)
        .push(", ")
        .bind(opt(ts(&m.cancelled_at)))
        .push(", ")
        .bind(opt(ts(&m.sla_due_at)))
        .push(", 0, ")
        .bind(opt(work(assigned)))
        .push(", ")
        .bind(opt(work(completed)))
        .push(", ")
        .bind(changed)
        .push(
            ") ON CONFLICT (id) DO UPDATE SET \
             channel = excluded.channel, process_id = excluded.process_id, \
             queue_id = excluded.queue_id, \
             dossier_id = CASE WHEN excluded.dossier_id <> '' THEN excluded.dossier_id ELSE request_fact.dossier_id END, \
             dossier_reference = CASE WHEN excluded.dossier_reference <> '' THEN excluded.dossier_reference ELSE request_fact.dossier_reference END, \
             status = excluded.status, \
             first_touch_s = COALESCE(request_fact.first_touch_s, excluded.first_touch_s), \
             touch_work_s = COALESCE(request_fact.touch_work_s, excluded.touch_work_s), \
             first_agent = CASE WHEN request_fact.first_agent <> '' THEN request_fact.first_agent ELSE excluded.first_agent END, \
             completed_s = excluded.completed_s, completed_agent = excluded.completed_agent, \
             resolve_work_s = excluded.resolve_work_s, \
             outcome = excluded.outcome, cancelled_s = excluded.cancelled_s, \
             sla_due_s = excluded.sla_due_s, changed_s = excluded.changed_s \
             WHERE excluded.changed_s >= request_fact.changed_s",
        );
        txn.execute_raw(sql.build()).await?;
        Ok(())
    }
}

/// Why an event was not applied.
enum Bad {
    Db(DbErr),
    /// The body cannot be read: skipped, never retried.
    Body(String),
}

impl From<DbErr> for Bad {
    fn from(e: DbErr) -> Bad {
        Bad::Db(e)
    }
}

/// The events the indicators read, by CloudEvents type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    WorkItem,
    SlaBreached,
    Presence,
    DossierOpened,
    DossierState,
    CallEnded,
    TicketCalled,
    VisitEnded,
    Appointment,
    Availability,
    Signature,
    /// A guichet event no indicator needs.
    Other,
}

/// The roles whose events are on the stream.
const SERVICES: [&str; 11] = [
    "routing",
    "dossier",
    "telephony",
    "counter",
    "appointment",
    "signature",
    "notification",
    "email",
    "scan",
    "portal",
    "bench",
];

impl Kind {
    /// `guichet.<service>.v1.<type>`; None: not an event guichet publishes.
    fn of(ce_type: &str) -> Option<Kind> {
        let mut parts = ce_type.splitn(4, '.');
        let (Some("guichet"), Some(service), Some("v1"), Some(ty)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if !SERVICES.contains(&service) || ty.is_empty() {
            return None;
        }
        Some(match (service, ty) {
            ("routing", t) if t.starts_with("work_item_") => Kind::WorkItem,
            ("routing", "sla_breached") => Kind::SlaBreached,
            ("routing", "agent_presence_changed") => Kind::Presence,
            ("dossier", "dossier_opened") => Kind::DossierOpened,
            ("dossier", "dossier_state_changed") => Kind::DossierState,
            ("telephony", "call_ended") => Kind::CallEnded,
            ("counter", "ticket_called") => Kind::TicketCalled,
            ("counter", "visit_ended") => Kind::VisitEnded,
            ("appointment", "appointment_availability_sampled") => Kind::Availability,
            ("appointment", t) if t.starts_with("appointment_") => Kind::Appointment,
            ("signature", _) => Kind::Signature,
            _ => Kind::Other,
        })
    }
}

/// How the consumer takes the stream.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub durable: String,
    pub batch_size: usize,
    /// How long a batch waits to fill when the stream is quiet.
    pub batch_wait: Duration,
}

async fn durable_consumer(
    bus: &Bus,
    opts: &ConsumerOptions,
) -> anyhow::Result<consumer::Consumer<consumer::pull::Config>> {
    bus.ensure_stream(StreamKind::Events).await?;
    let stream = bus
        .jetstream()
        .get_stream(bus.stream_name(StreamKind::Events))
        .await?;
    if let Ok(c) = stream
        .get_consumer::<consumer::pull::Config>(&opts.durable)
        .await
    {
        return Ok(c);
    }
    let config = consumer::pull::Config {
        durable_name: Some(opts.durable.clone()),
        ack_policy: AckPolicy::All,
        deliver_policy: DeliverPolicy::All,
        ack_wait: Duration::from_secs(120),
        filter_subject: bus.subject("events.>"),
        max_ack_pending: (opts.batch_size * 4) as i64,
        ..Default::default()
    };
    match stream.create_consumer(config).await {
        Ok(c) => Ok(c),
        // Another replica created it in between.
        Err(e) => stream
            .get_consumer::<consumer::pull::Config>(&opts.durable)
            .await
            .map_err(|_| anyhow::anyhow!("cannot create consumer {}: {e}", opts.durable)),
    }
}

impl Ingest {
    /// Consume the EVENTS stream until `shutdown` (or, with `until_caught_up`,
    /// until nothing is pending: `guichet indicators rebuild`). A batch in
    /// hand when shutdown comes is applied and acknowledged first.
    pub async fn run(
        &self,
        bus: &Bus,
        opts: &ConsumerOptions,
        until_caught_up: bool,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut consumer = durable_consumer(bus, opts).await?;
        tracing::info!(consumer = %opts.durable, "indicators consuming events");
        while !shutdown.is_cancelled() {
            let fetched = consumer
                .batch()
                .max_messages(opts.batch_size)
                .expires(opts.batch_wait)
                .messages()
                .await;
            let mut messages = match fetched {
                Ok(m) => m,
                Err(error) => {
                    tracing::warn!(%error, "cannot pull events, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    if let Ok(c) = durable_consumer(bus, opts).await {
                        consumer = c;
                    }
                    continue;
                }
            };
            let mut batch = Vec::new();
            let mut last = None;
            while let Some(msg) = messages.next().await {
                match msg {
                    Ok(msg) => {
                        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                        batch.push(IncomingEvent::from_message(&msg).map_err(|r| (seq, r)));
                        last = Some(msg);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "pull batch ended");
                        break;
                    }
                }
            }
            if let Some(last) = last {
                self.apply_durably(&batch, &shutdown).await?;
                // AckPolicy::All: the last message acknowledges the batch.
                if let Err(error) = last.ack().await {
                    tracing::warn!(%error, "batch ack failed; it will be redelivered and recognised");
                }
                metrics::histogram!("guichet_indicators_batch_size").record(batch.len() as f64);
            } else if until_caught_up {
                let info = consumer.info().await?;
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Apply a batch, retrying while the database is unavailable; a batch
    /// that keeps failing is applied event by event, so one bad event is
    /// skipped and the others still count.
    async fn apply_durably(
        &self,
        batch: &[Incoming],
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            match self.apply_batch(batch).await {
                Ok(_) => return Ok(()),
                Err(error) => {
                    tracing::warn!(%error, attempt, "indicator batch failed, retrying");
                    if shutdown.is_cancelled() && attempt > 1 {
                        // Not acknowledged: redelivered to the next start.
                        anyhow::bail!("indicator batch not applied at shutdown: {error}");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.apply_each(batch).await?;
        Ok(())
    }
}

/// Empty every fact table and replay the stream from its first event into
/// them with a fresh consumer: the same figures, rebuilt from the events
/// alone. Run with the role stopped (or accept that it pauses while the
/// consumer it shares is recreated).
pub async fn rebuild(ingest: &Ingest, bus: &Bus, opts: &ConsumerOptions) -> anyhow::Result<u64> {
    bus.ensure_stream(StreamKind::Events).await?;
    let stream = bus
        .jetstream()
        .get_stream(bus.stream_name(StreamKind::Events))
        .await?;
    // Empty first, then restart the consumer from the first event: an
    // event a running consumer applies in between is recorded, so the
    // replay recognises it; nothing acknowledged is lost.
    let txn = ingest.db.begin().await?;
    for table in crate::db::FACT_TABLES {
        txn.execute_unprepared(&format!("DELETE FROM {table}"))
            .await?;
    }
    txn.commit().await?;
    // A missing consumer is fine: there is nothing to reset.
    let _ = stream.delete_consumer(&opts.durable).await;
    ingest
        .run(bus, opts, true, CancellationToken::new())
        .await?;
    let row = ingest
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            ingest.db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM applied_event",
        ))
        .await?;
    Ok(row
        .map(|r| i64::try_get(&r, "", "n").unwrap_or(0))
        .unwrap_or(0) as u64)
}
