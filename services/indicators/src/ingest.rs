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
//! A batch is written in few statements: one that records its event ids
//! (and returns the new ones), then multi-row upserts per fact table
//! ([`crate::batch`]), the events of one row applied in their order.
//!
//! Events of one entity come from one role's outbox, which publishes them
//! in commit order, so within an entity the facts are applied in order;
//! facts from several roles (a request and its dossier) are joined at
//! query time, never at ingest.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use guichet_platform::bus::{Bus, IncomingEvent, StreamKind};
use guichet_platform::calendar::BusinessCalendar;
use guichet_proto::convert::datetime;
use guichet_proto::events::v1 as ev;
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait, TryGetable, Value};
use tokio_util::sync::CancellationToken;

use crate::batch::{self, Op, Shape, Write};

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

/// What one event of a batch comes to, before anything is written.
struct Plan {
    /// The id recorded in `applied_event`, with its type, stream sequence
    /// and whether it is recorded as skipped; None: an event no indicator
    /// needs, not recorded.
    record: Option<Record>,
    /// The fact rows it writes once applied.
    writes: Vec<Write>,
    /// Why its body cannot be read (then recorded as skipped).
    malformed: Option<String>,
}

type Record = (String, String, u64, bool);

impl Plan {
    fn skipped(id: String, ty: String, seq: u64) -> Plan {
        Plan {
            record: Some((id, ty, seq, true)),
            writes: Vec::new(),
            malformed: None,
        }
    }
}

fn w(op: &'static Op, key: impl Into<String>, values: Vec<Value>) -> Write {
    Write {
        op,
        key: key.into(),
        values,
    }
}

/// A `visit_fact` row: the ticket (id, number, service, site, desk), then
/// issued, called, ended, waiting, service time and outcome.
fn visit(op: &'static Op, ticket: [String; 5], rest: [Value; 6]) -> Write {
    let key = ticket[0].clone();
    let values = ticket.into_iter().map(Value::from).chain(rest).collect();
    w(op, key, values)
}

impl Ingest {
    /// Apply a batch in one transaction; returns each event's outcome.
    ///
    /// The batch's event ids are recorded in one statement that returns
    /// those never recorded before; the facts of these events are then
    /// written together, in event order for each row ([`batch::flush`]).
    pub async fn apply_batch(&self, items: &[Incoming]) -> Result<Vec<Outcome>, DbErr> {
        let plans: Vec<Plan> = items.iter().map(|item| self.plan(item)).collect();
        let txn = self.db.begin().await?;
        let mut fresh = record(&txn, plans.iter().filter_map(|p| p.record.as_ref())).await?;
        let mut out = Vec::with_capacity(plans.len());
        let mut writes = Vec::new();
        for p in plans {
            let outcome = match &p.record {
                None => Outcome::Ignored,
                // An id twice in a batch is new the first time only.
                Some((id, _, _, _)) if !fresh.remove(id) => Outcome::Duplicate,
                Some((id, ty, _, true)) => {
                    if let Some(reason) = &p.malformed {
                        tracing::warn!(event_id = %id, ce_type = %ty, %reason, "malformed event skipped");
                    }
                    Outcome::Skipped
                }
                Some(_) => {
                    writes.extend(p.writes);
                    Outcome::Applied
                }
            };
            out.push(outcome);
        }
        let requests: Vec<String> = writes
            .iter()
            .filter(|w| std::ptr::eq(w.op, &REQUEST))
            .map(|w| w.key.clone())
            .collect();
        let before = dossiers_of(&txn, &requests).await?;
        batch::flush(&txn, writes).await?;
        next_requests(&txn, &requests, before).await?;
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
                    let r = (id, ty, seq, true);
                    if record(&txn, std::iter::once(&r)).await?.contains(&r.0) {
                        txn.commit().await?;
                        self.count(Outcome::Skipped);
                    }
                }
            }
        }
        Ok(())
    }

    /// What an event comes to: its record and its rows (nothing written).
    fn plan(&self, item: &Incoming) -> Plan {
        let e = match item {
            Ok(e) => e,
            Err((seq, reason)) => {
                tracing::warn!(stream_sequence = seq, %reason, "unreadable event skipped");
                return Plan::skipped(format!("stream-{seq}"), String::new(), *seq);
            }
        };
        let Some(kind) = Kind::of(&e.ty) else {
            tracing::warn!(event_id = %e.id, ce_type = %e.ty, "unknown event type skipped");
            return Plan::skipped(e.id.clone(), e.ty.clone(), e.stream_sequence);
        };
        if kind == Kind::Other {
            return Plan {
                record: None,
                writes: Vec::new(),
                malformed: None,
            };
        }
        let at = e.time.unwrap_or_else(Utc::now);
        let (writes, malformed) = match self.writes(kind, e, at) {
            Ok(writes) => (writes, None),
            Err(reason) => (Vec::new(), Some(reason)),
        };
        Plan {
            record: Some((
                e.id.clone(),
                e.ty.clone(),
                e.stream_sequence,
                malformed.is_some(),
            )),
            writes,
            malformed,
        }
    }

    /// The fact rows an event writes; Err: its body cannot be read.
    fn writes(
        &self,
        kind: Kind,
        e: &IncomingEvent,
        at: DateTime<Utc>,
    ) -> Result<Vec<Write>, String> {
        fn body<M: Message + Default>(e: &IncomingEvent) -> Result<M, String> {
            M::decode(e.body.clone()).map_err(|err| format!("undecodable body: {err}"))
        }
        Ok(match kind {
            Kind::WorkItem => vec![self.work_item(body(e)?, at)?],
            Kind::SlaBreached => {
                let m: ev::WorkItemEscalated = body(e)?;
                vec![w(
                    &SLA_BREACHED,
                    m.work_item_id.clone(),
                    vec![m.work_item_id.into()],
                )]
            }
            Kind::Presence => {
                let m: ev::AgentPresenceChanged = body(e)?;
                let changed = ts(&m.changed_at).unwrap_or(secs(at));
                vec![w(
                    &PRESENCE,
                    m.agent_id.clone(),
                    vec![m.agent_id.into(), m.presence.into(), changed.into()],
                )]
            }
            Kind::DossierOpened => {
                let m: ev::DossierOpened = body(e)?;
                let opened = ts(&m.opened_time).unwrap_or(secs(at));
                vec![w(
                    &DOSSIER_OPENED,
                    m.dossier_id.clone(),
                    vec![
                        m.dossier_id.into(),
                        m.reference.into(),
                        m.process_id.into(),
                        (m.process_version as i32).into(),
                        m.domain.into(),
                        m.state.into(),
                        opened.into(),
                        opt(None),
                        0i32.into(),
                    ],
                )]
            }
            Kind::DossierState => {
                let m: ev::DossierStateChanged = body(e)?;
                let when = ts(&m.occur_time).unwrap_or(secs(at));
                vec![w(
                    &DOSSIER_STATE,
                    m.dossier_id.clone(),
                    vec![
                        m.dossier_id.into(),
                        m.to_state.into(),
                        (m.process_version as i32).into(),
                        opt(m.closed.then_some(when)),
                        i32::from(m.cause == "reopen").into(),
                    ],
                )]
            }
            Kind::CallEnded => {
                let m: ev::CallEnded = body(e)?;
                let started = ts(&m.started_at).unwrap_or(secs(at));
                let ended = ts(&m.ended_at).unwrap_or(started);
                vec![w(
                    &CALL,
                    m.call_id.clone(),
                    vec![
                        m.call_id.into(),
                        m.direction.into(),
                        m.queue.into(),
                        started.into(),
                        ended.into(),
                        i64::from(m.waiting_seconds).into(),
                        i64::from(m.talk_seconds).into(),
                        i32::from(m.missed).into(),
                        i32::from(m.voicemail).into(),
                        i32::from(m.blocked).into(),
                        i32::from(m.callback_requested).into(),
                        m.intake_event_id.into(),
                    ],
                )]
            }
            Kind::TicketCalled => {
                let m: ev::TicketCalled = body(e)?;
                let called = ts(&m.call_time).unwrap_or(secs(at));
                let ticket = [m.ticket_id, m.ticket_number, m.service, m.site, m.desk];
                let rest = [
                    called.into(),
                    called.into(),
                    opt(None),
                    0i64.into(),
                    0i64.into(),
                    "called".into(),
                ];
                vec![visit(&TICKET_CALLED, ticket, rest)]
            }
            Kind::VisitEnded => {
                let m: ev::VisitEnded = body(e)?;
                let ended = ts(&m.end_time).unwrap_or(secs(at));
                let issued = ts(&m.issued_at).unwrap_or(ended);
                let ticket = [m.ticket_id, m.ticket_number, m.service, m.site, m.desk];
                let rest = [
                    issued.into(),
                    opt(None),
                    ended.into(),
                    i64::from(m.waiting_seconds).into(),
                    i64::from(m.service_seconds).into(),
                    m.outcome.into(),
                ];
                vec![visit(&VISIT_ENDED, ticket, rest)]
            }
            Kind::Appointment => {
                let m: ev::AppointmentChanged = body(e)?;
                let when = ts(&m.occurred_time).unwrap_or(secs(at));
                let start = ts(&m.start_time).unwrap_or(when);
                let status = m.status.as_str();
                vec![w(
                    &APPOINTMENT,
                    m.booking_id.clone(),
                    vec![
                        m.booking_id.as_str().into(),
                        m.reference.as_str().into(),
                        m.appointment_type.as_str().into(),
                        m.site_id.as_str().into(),
                        m.dossier_id.as_str().into(),
                        status.into(),
                        (m.people as i32).into(),
                        when.into(),
                        start.into(),
                        opt((status == "checked_in").then_some(when)),
                        opt((status == "seen").then_some(when)),
                        opt(status.starts_with("cancelled").then_some(when)),
                    ],
                )]
            }
            Kind::Availability => {
                let m: ev::AvailabilitySampled = body(e)?;
                let sampled = ts(&m.sampled_time).unwrap_or(secs(at));
                let day = chrono::NaiveDate::parse_from_str(&m.day, "%Y-%m-%d")
                    .map_err(|_| format!("day `{}` is not YYYY-MM-DD", m.day))?;
                let day_s = secs(guichet_platform::calendar::from_paris(
                    day.and_hms_opt(0, 0, 0).unwrap_or_default(),
                ));
                vec![
                    w(
                        &SAMPLE,
                        format!("{}\n{}\n{sampled}", m.appointment_type, m.site_id),
                        vec![
                            m.appointment_type.as_str().into(),
                            m.site_id.as_str().into(),
                            sampled.into(),
                            opt(ts(&m.next_free_time)),
                        ],
                    ),
                    w(
                        &DAY,
                        format!("{}\n{}", m.site_id, m.day),
                        vec![
                            m.site_id.as_str().into(),
                            m.day.as_str().into(),
                            day_s.into(),
                            sampled.into(),
                            (m.open_units as i32).into(),
                            (m.taken_units as i32).into(),
                        ],
                    ),
                ]
            }
            Kind::Signature => {
                let m: ev::SignatureChanged = body(e)?;
                let when = ts(&m.occurred_time).unwrap_or(secs(at));
                let status = m.status.as_str();
                let ended = matches!(status, "declined" | "expired" | "cancelled");
                vec![w(
                    &SIGNATURE,
                    m.signature_request_id.clone(),
                    vec![
                        m.signature_request_id.as_str().into(),
                        m.dossier_id.as_str().into(),
                        m.process_template.as_str().into(),
                        status.into(),
                        when.into(),
                        opt((status == "signed").then_some(when)),
                        opt(ended.then_some(when)),
                    ],
                )]
            }
            Kind::Other => Vec::new(),
        })
    }

    fn work_item(&self, m: ev::WorkItemChanged, at: DateTime<Utc>) -> Result<Write, String> {
        let received = m
            .entered_at
            .as_ref()
            .and_then(datetime)
            .ok_or_else(|| "entered_at is missing".to_owned())?;
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
        Ok(w(
            &REQUEST,
            m.work_item_id.clone(),
            vec![
                m.work_item_id.into(),
                m.intake_event_id.into(),
                m.channel.into(),
                m.process_id.into(),
                m.queue_id.into(),
                m.dossier_id.into(),
                m.dossier_reference.into(),
                m.status.into(),
                secs(received).into(),
                opt(assigned.map(secs)),
                first_agent.into(),
                opt(completed.map(secs)),
                completed_agent.into(),
                m.outcome.into(),
                opt(ts(&m.cancelled_at)),
                opt(ts(&m.sla_due_at)),
                0i32.into(),
                opt(work(assigned)),
                opt(work(completed)),
                changed.into(),
            ],
        ))
    }
}

/// The dossiers the requests `ids` are on.
async fn dossiers_of(
    conn: &impl ConnectionTrait,
    ids: &[String],
) -> Result<HashSet<String>, DbErr> {
    let mut out = HashSet::new();
    let backend = conn.get_database_backend();
    for chunk in ids.chunks(500) {
        let mut sql = guichet_platform::db::Sql::new(backend);
        sql.push("SELECT DISTINCT dossier_id FROM request_fact WHERE dossier_id <> '' AND id IN (");
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(id.clone());
        }
        sql.push(")");
        for row in conn.query_all_raw(sql.build()).await? {
            out.insert(row.try_get::<String>("", "dossier_id")?);
        }
    }
    Ok(out)
}

/// Keep `next_received_s` (when the next request on the same dossier
/// arrived) for every request of the dossiers the batch's requests were
/// on before and are on now.
async fn next_requests(
    conn: &impl ConnectionTrait,
    ids: &[String],
    mut dossiers: HashSet<String>,
) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    dossiers.extend(dossiers_of(conn, ids).await?);
    let dossiers: Vec<String> = dossiers.into_iter().collect();
    let backend = conn.get_database_backend();
    for chunk in dossiers.chunks(500) {
        let mut sql = guichet_platform::db::Sql::new(backend);
        sql.push(
            "UPDATE request_fact SET next_received_s = (SELECT MIN(r2.received_s) \
             FROM request_fact r2 WHERE r2.dossier_id = request_fact.dossier_id \
             AND r2.id <> request_fact.id AND r2.received_s > request_fact.received_s) \
             WHERE dossier_id IN (",
        );
        for (i, d) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(d.clone());
        }
        sql.push(")");
        conn.execute_raw(sql.build()).await?;
    }
    Ok(())
}

/// Record event ids (the first of each id); returns those not recorded
/// before.
async fn record<'a>(
    conn: &impl ConnectionTrait,
    records: impl Iterator<Item = &'a Record>,
) -> Result<HashSet<String>, DbErr> {
    let mut once = HashSet::new();
    let rows = records
        .filter(|r| once.insert(r.0.as_str()))
        .map(|(id, ty, seq, skipped)| {
            vec![
                id.as_str().into(),
                ty.as_str().into(),
                (*seq as i64).into(),
                i32::from(*skipped).into(),
            ]
        })
        .collect();
    let mut fresh = HashSet::new();
    for statement in batch::statements(conn.get_database_backend(), &APPLIED, rows, " RETURNING id")
    {
        for row in conn.query_all_raw(statement).await? {
            fresh.insert(row.try_get::<String>("", "id")?);
        }
    }
    Ok(fresh)
}

static APPLIED: Op = Op {
    table: "applied_event",
    columns: &["id", "ce_type", "stream_sequence", "skipped"],
    shape: Shape::Upsert("ON CONFLICT (id) DO NOTHING"),
};

static REQUEST: Op = Op {
    table: "request_fact",
    columns: &[
        "id",
        "intake_event_id",
        "channel",
        "process_id",
        "queue_id",
        "dossier_id",
        "dossier_reference",
        "status",
        "received_s",
        "first_touch_s",
        "first_agent",
        "completed_s",
        "completed_agent",
        "outcome",
        "cancelled_s",
        "sla_due_s",
        "sla_breached",
        "touch_work_s",
        "resolve_work_s",
        "changed_s",
    ],
    shape: Shape::Upsert(
        "ON CONFLICT (id) DO UPDATE SET \
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
    ),
};

static SLA_BREACHED: Op = Op {
    table: "request_fact",
    columns: &["id"],
    shape: Shape::Update("sla_breached = 1"),
};

static PRESENCE: Op = Op {
    table: "agent_presence",
    columns: &["agent_id", "presence", "changed_s"],
    shape: Shape::Upsert(
        "ON CONFLICT (agent_id) DO UPDATE SET presence = excluded.presence, \
         changed_s = excluded.changed_s WHERE excluded.changed_s >= agent_presence.changed_s",
    ),
};

static DOSSIER_OPENED: Op = Op {
    table: "dossier_fact",
    columns: &[
        "id",
        "reference",
        "process_id",
        "process_version",
        "domain",
        "state",
        "opened_s",
        "closed_s",
        "reopened",
    ],
    shape: Shape::Upsert("ON CONFLICT (id) DO NOTHING"),
};

/// A state change; `v.column5` is 1 when the dossier was reopened.
static DOSSIER_STATE: Op = Op {
    table: "dossier_fact",
    columns: &["id", "state", "process_version", "closed_s", "reopened"],
    shape: Shape::Update(
        "state = v.column2, process_version = v.column3, closed_s = v.column4, \
         reopened = reopened + v.column5",
    ),
};

static CALL: Op = Op {
    table: "call_fact",
    columns: &[
        "id",
        "direction",
        "queue",
        "started_s",
        "ended_s",
        "waiting_s",
        "talk_s",
        "missed",
        "voicemail",
        "blocked",
        "callback_requested",
        "intake_event_id",
    ],
    shape: Shape::Upsert(
        "ON CONFLICT (id) DO UPDATE SET ended_s = excluded.ended_s, \
         waiting_s = excluded.waiting_s, talk_s = excluded.talk_s, missed = excluded.missed, \
         voicemail = excluded.voicemail, callback_requested = excluded.callback_requested, \
         intake_event_id = excluded.intake_event_id",
    ),
};

const VISIT_COLUMNS: &[&str] = &[
    "id",
    "ticket_number",
    "service",
    "site",
    "desk",
    "issued_s",
    "called_s",
    "ended_s",
    "waiting_s",
    "service_s",
    "outcome",
];

static TICKET_CALLED: Op = Op {
    table: "visit_fact",
    columns: VISIT_COLUMNS,
    shape: Shape::Upsert(
        "ON CONFLICT (id) DO UPDATE SET \
         called_s = COALESCE(visit_fact.called_s, excluded.called_s), desk = excluded.desk",
    ),
};

static VISIT_ENDED: Op = Op {
    table: "visit_fact",
    columns: VISIT_COLUMNS,
    shape: Shape::Upsert(
        "ON CONFLICT (id) DO UPDATE SET service = excluded.service, desk = excluded.desk, \
         issued_s = excluded.issued_s, ended_s = excluded.ended_s, \
         waiting_s = excluded.waiting_s, service_s = excluded.service_s, \
         outcome = excluded.outcome",
    ),
};

static APPOINTMENT: Op = Op {
    table: "appointment_fact",
    columns: &[
        "id",
        "reference",
        "appointment_type",
        "site",
        "dossier_id",
        "status",
        "people",
        "booked_s",
        "start_s",
        "checked_in_s",
        "seen_s",
        "cancelled_s",
    ],
    shape: Shape::Upsert(
        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
         people = excluded.people, start_s = excluded.start_s, site = excluded.site, \
         dossier_id = excluded.dossier_id, \
         checked_in_s = COALESCE(appointment_fact.checked_in_s, excluded.checked_in_s), \
         seen_s = COALESCE(appointment_fact.seen_s, excluded.seen_s), \
         cancelled_s = excluded.cancelled_s",
    ),
};

static SAMPLE: Op = Op {
    table: "appointment_sample",
    columns: &["appointment_type", "site", "sampled_s", "next_free_s"],
    shape: Shape::Upsert("ON CONFLICT (appointment_type, site, sampled_s) DO NOTHING"),
};

static DAY: Op = Op {
    table: "appointment_day",
    columns: &[
        "site",
        "day",
        "day_s",
        "sampled_s",
        "open_units",
        "taken_units",
    ],
    shape: Shape::Upsert(
        "ON CONFLICT (site, day) DO UPDATE SET sampled_s = excluded.sampled_s, \
         open_units = excluded.open_units, taken_units = excluded.taken_units \
         WHERE excluded.sampled_s >= appointment_day.sampled_s",
    ),
};

static SIGNATURE: Op = Op {
    table: "signature_fact",
    columns: &[
        "id",
        "dossier_id",
        "template",
        "status",
        "requested_s",
        "completed_s",
        "ended_s",
    ],
    shape: Shape::Upsert(
        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
         completed_s = COALESCE(signature_fact.completed_s, excluded.completed_s), \
         ended_s = COALESCE(excluded.ended_s, signature_fact.ended_s)",
    ),
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm_migration::MigratorTrait;

    /// `next_received_s` gives first-contact resolution the answer the
    /// direct definition gives ("no other request on the same dossier from
    /// its arrival until 7 days after its completion"), also after a
    /// request moves to another dossier.
    #[tokio::test]
    async fn the_next_request_on_a_dossier_is_kept_at_ingest() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        crate::db::Migrator::up(&db, None).await.unwrap();
        let day = 86_400;
        // (id, dossier, received, completed)
        let rows: [(&str, &str, i64, Option<i64>); 6] = [
            ("a1", "A", 0, Some(day)),
            ("a2", "A", 3 * day, Some(4 * day)),
            ("a3", "A", 30 * day, Some(31 * day)),
            ("b1", "B", 0, Some(day)),
            ("c1", "C", 0, Some(day)),
            ("c2", "C", 0, None),
        ];
        for (id, dossier, received, completed) in rows {
            db.execute_unprepared(&format!(
                "INSERT INTO request_fact (id, intake_event_id, channel, process_id, queue_id, \
                 dossier_id, dossier_reference, status, received_s, first_agent, completed_s, \
                 completed_agent, outcome, sla_breached, changed_s) VALUES ('{id}', '{id}', \
                 'email', 'p', 'q', '{dossier}', '', 's', {received}, '', {}, '', '', 0, 0)",
                completed.map_or("NULL".to_owned(), |c| c.to_string())
            ))
            .await
            .unwrap();
        }
        let ids: Vec<String> = rows.iter().map(|r| r.0.to_owned()).collect();
        next_requests(&db, &ids, HashSet::new()).await.unwrap();
        let fcr = 7 * day;
        let compare = |db: sea_orm::DatabaseConnection| async move {
            let kept = format!(
                "SELECT id, CASE WHEN next_received_s IS NULL OR next_received_s > completed_s + \
                 {fcr} THEN 1 ELSE 0 END AS f FROM request_fact r WHERE completed_s IS NOT NULL \
                 ORDER BY id"
            );
            let direct = format!(
                "SELECT id, CASE WHEN NOT EXISTS (SELECT 1 FROM request_fact r2 WHERE \
                 r2.dossier_id = r.dossier_id AND r2.id <> r.id AND r2.received_s > r.received_s \
                 AND r2.received_s <= r.completed_s + {fcr}) THEN 1 ELSE 0 END AS f FROM \
                 request_fact r WHERE completed_s IS NOT NULL ORDER BY id"
            );
            let read = |sql: String| {
                let db = db.clone();
                async move {
                    db.query_all_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Sqlite,
                        sql,
                    ))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| {
                        (
                            r.try_get::<String>("", "id").unwrap(),
                            r.try_get::<i32>("", "f").unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
                }
            };
            let (k, d) = (read(kept).await, read(direct).await);
            assert_eq!(k, d);
            k
        };
        let flags = compare(db.clone()).await;
        assert_eq!(
            flags,
            vec![
                ("a1".to_owned(), 0),
                ("a2".to_owned(), 1),
                ("a3".to_owned(), 1),
                ("b1".to_owned(), 1),
                ("c1".to_owned(), 1),
            ],
            "a1's citizen came back 3 days later; same-second requests are not 'later'"
        );
        // a2 moves to dossier B: A and B are both recomputed.
        let before = dossiers_of(&db, &["a2".to_owned()]).await.unwrap();
        db.execute_unprepared("UPDATE request_fact SET dossier_id = 'B' WHERE id = 'a2'")
            .await
            .unwrap();
        next_requests(&db, &["a2".to_owned()], before)
            .await
            .unwrap();
        let flags = compare(db.clone()).await;
        assert_eq!(
            flags[0],
            ("a1".to_owned(), 1),
            "nobody came back on A within 7 days"
        );
        assert_eq!(flags[3], ("b1".to_owned(), 0), "a2 came back on B");
    }
}
