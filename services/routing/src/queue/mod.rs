//! The unified queue's persistence and lifecycle: enqueue once per intake
//! event; hand an item to exactly one agent, pulled (`take_next`) or pushed
//! (offers reserved for one agent until they expire); wrap up, complete,
//! cancel, transfer between queues; escalate SLAs, age priorities, expire
//! offers; live and cumulative statistics.
//!
//! Every state change is one conditional `UPDATE … WHERE status = <expected>`
//! (plus the holder for agent actions) in a transaction that also stages the
//! lifecycle event in the outbox: two agents, two replicas or a replica and
//! its own timer can race on an item and exactly one wins. Taking the next
//! item is a single `UPDATE … WHERE id = (SELECT … LIMIT 1)`; on PostgreSQL
//! the sub-select takes `FOR UPDATE SKIP LOCKED`, so concurrent agents skip
//! each other's rows instead of waiting; SQLite's single writer serialises
//! it. Offer timers live in the database (`offer_expires`), so an offer in
//! flight survives a restart: whichever replica runs maintenance next
//! expires it and offers the item to the next agent.
//!
//! Serving order: effective priority (rule priority + SLA escalation +
//! ageing), then SLA due time, then age.

mod agents;
mod lifecycle;
pub use lifecycle::Attempted;
mod maintenance;
mod stats;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use guichet_platform::db::{Sql, is_unique_violation};
use guichet_platform::outbox::Outbox;
use guichet_proto::convert::timestamp;
use guichet_proto::events::v1 as ev;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};
use tokio::sync::watch;

use crate::config::QueueConfig;
use crate::db::entities::{agent, work_item};
use guichet_platform::clock::SharedClock;

pub const PENDING: &str = "pending";
pub const OFFERED: &str = "offered";
pub const ASSIGNED: &str = "assigned";
pub const WRAPPING: &str = "wrapping";
pub const COMPLETED: &str = "completed";
pub const CANCELLED: &str = "cancelled";
/// Statuses of items not yet finished.
pub const OPEN: [&str; 4] = [PENDING, OFFERED, ASSIGNED, WRAPPING];
/// Statuses that count against an agent's capacity.
pub const HELD: [&str; 3] = [OFFERED, ASSIGNED, WRAPPING];

/// The due time of items without an SLA: after every real one, so one
/// `ORDER BY sla_due` works on both backends.
pub fn no_sla() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub fn has_sla(due: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    due.filter(|d| *d < no_sla())
}

/// Database times keep microseconds (PostgreSQL's precision), so keyset
/// cursors compare equal after a round trip.
pub fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::microseconds(1)).unwrap_or(t)
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub default_queue: String,
    pub queues: BTreeMap<String, QueueConfig>,
    /// Default per-channel capacity of an agent.
    pub capacity: BTreeMap<String, i32>,
    pub offer_timeout: Duration,
    pub max_missed_offers: i32,
    pub sla_near_bump: i32,
    pub sla_breach_bump: i32,
    /// Callbacks without an answer after which a request closes.
    pub callback_attempts: i32,
}

#[derive(Debug, Clone)]
pub struct NewItem {
    pub intake_event_id: String,
    pub channel: String,
    pub priority: i32,
    pub dossier_id: String,
    pub dossier_reference: String,
    pub citizen_id: String,
    pub process_id: String,
    pub summary: String,
    pub enter_time: DateTime<Utc>,
    pub queue_id: String,
    pub skills: Vec<String>,
    pub sla_due: Option<DateTime<Utc>>,
    pub sla_warn: Option<DateTime<Utc>>,
    pub rule_id: String,
    pub correlation: String,
    /// Citizens the request may belong to, best first.
    pub candidates: Vec<CandidateRef>,
    /// Work already done when it reaches routing (a call an agent answered
    /// on the phone): recorded as completed, never offered.
    pub handled: Option<Handled>,
    /// The request as classification read it (protobuf), kept with the
    /// item in the same transaction to try other rules on it later.
    pub kept_input: Option<Vec<u8>>,
    /// What the agent must know before trusting the request (French).
    pub warnings: Vec<String>,
}

/// A citizen a request may belong to, as the work item keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CandidateRef {
    pub citizen_id: String,
    pub confidence: f32,
    pub why: String,
}

/// The warnings a work item keeps.
pub fn warnings_of(m: &work_item::Model) -> Vec<String> {
    serde_json::from_str(&m.warnings).unwrap_or_default()
}

/// The candidates a work item keeps.
pub fn candidates_of(m: &work_item::Model) -> Vec<CandidateRef> {
    serde_json::from_str(&m.candidates).unwrap_or_default()
}

/// Who handled a request before routing saw it, and when.
#[derive(Debug, Clone)]
pub struct Handled {
    /// The agent as the source names them (e.g. the PBX user).
    pub agent: String,
    pub assign_time: DateTime<Utc>,
    pub complete_time: DateTime<Utc>,
    pub outcome: String,
}

/// Why a queue operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("work item not found")]
    NotFound,
    /// The item is not in a state (or not held by the caller) for this step;
    /// the text is French, for the agent.
    #[error("{0}")]
    Conflict(String),
}

#[derive(Clone)]
pub struct Queue {
    db: DatabaseConnection,
    /// Every lifecycle step is announced by an event staged in its transaction.
    outbox: Outbox,
    clock: SharedClock,
    settings: Arc<Settings>,
    /// Bumped on every change this replica makes (WatchQueue wakes on it).
    changes: Arc<watch::Sender<u64>>,
}

/// The event form of a work item, for `guichet.events.routing.work_item_*`.
pub fn item_event(
    item: &work_item::Model,
    step: &str,
    from_queue: &str,
    reason: &str,
) -> ev::WorkItemChanged {
    ev::WorkItemChanged {
        work_item_id: item.id.clone(),
        intake_event_id: item.intake_event_id.clone(),
        dossier_id: item.dossier_id.clone(),
        status: item.status.clone(),
        agent_id: item.agent_id.clone().unwrap_or_default(),
        channel: item.channel.clone(),
        entered_at: Some(timestamp(item.enter_time)),
        changed_at: Some(timestamp(item.updated_at)),
        outcome: item.outcome.clone().unwrap_or_default(),
        queue_id: item.queue_id.clone(),
        priority: item.priority,
        process_id: item.process_id.clone(),
        sla_due_at: has_sla(item.sla_due).map(timestamp),
        offered_at: item.offer_time.map(timestamp),
        offer_expires_at: item.offer_expires.map(timestamp),
        assigned_at: item.assign_time.map(timestamp),
        wrapping_at: item.wrap_time.map(timestamp),
        completed_at: item.complete_time.map(timestamp),
        cancelled_at: item.cancel_time.map(timestamp),
        step: step.to_owned(),
        from_queue_id: from_queue.to_owned(),
        reason: reason.to_owned(),
        dossier_reference: item.dossier_reference.clone(),
        correlation: item.correlation.clone(),
    }
}

pub fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_capacities(s: &str) -> BTreeMap<String, i32> {
    split(s)
        .iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Loads per agent and channel.
pub type Loads = HashMap<String, BTreeMap<String, i32>>;

#[derive(Debug, Clone, Default)]
pub struct Maintenance {
    pub offers_expired: usize,
    pub escalated: usize,
    pub aged: usize,
    pub offered: usize,
}

/// Live and cumulative statistics of one queue (see the proto).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub by_status: BTreeMap<String, i64>,
    pub pending_by_priority: BTreeMap<i32, i64>,
    pub longest_wait: Duration,
    pub available_agents: i64,
    pub eligible_agents: i64,
    pub entered: i64,
    pub completed: i64,
    pub cancelled: i64,
    pub accepted: i64,
    pub average_wait: Duration,
    pub p90_wait: Duration,
    pub sla_due: i64,
    pub sla_breached: i64,
}

/// Keyset cursor in serving order.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub priority: i32,
    pub sla_due: DateTime<Utc>,
    pub enter_time: DateTime<Utc>,
    pub id: String,
}

impl Cursor {
    pub fn of(m: &work_item::Model) -> Cursor {
        Cursor {
            priority: m.priority,
            sla_due: m.sla_due.unwrap_or_else(no_sla),
            enter_time: m.enter_time,
            id: m.id.clone(),
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "k1|{}|{}|{}|{}",
            self.priority,
            self.sla_due.timestamp_micros(),
            self.enter_time.timestamp_micros(),
            self.id
        )
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let mut parts = s.splitn(5, '|');
        if parts.next()? != "k1" {
            return None;
        }
        let priority = parts.next()?.parse().ok()?;
        let sla_due = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?;
        let enter_time = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?;
        let id = parts.next()?.to_owned();
        Some(Cursor {
            priority,
            sla_due,
            enter_time,
            id,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<String>,
    pub queue_id: Option<String>,
    pub agent_id: Option<String>,
    pub channel: Option<String>,
    pub process_id: Option<String>,
    /// `ok`, `near`, `breached` (kept up to date by the SLA sweep).
    pub sla_state: Option<String>,
}
impl Queue {
    pub fn new(
        db: DatabaseConnection,
        outbox: Outbox,
        clock: SharedClock,
        settings: Settings,
    ) -> Queue {
        let (tx, _) = watch::channel(0);
        Queue {
            db,
            outbox,
            clock,
            settings: Arc::new(settings),
            changes: Arc::new(tx),
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Now, per the injected clock, at the database's precision.
    pub fn now(&self) -> DateTime<Utc> {
        micros(self.clock.now())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.outbox.notify();
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn stage(
        &self,
        conn: &impl ConnectionTrait,
        item: &work_item::Model,
        step: &str,
        from_queue: &str,
        reason: &str,
    ) -> Result<(), DbErr> {
        let event = self.outbox.domain_event(
            "routing",
            &format!("work_item_{step}"),
            format!("work-items/{}", item.id),
            &item_event(item, step, from_queue, reason),
        );
        self.outbox.stage(conn, &event).await
    }

    /// The latest item of `channel` on `dossier_id` still waiting for an
    /// agent (pending or offered).
    pub async fn waiting_on_dossier(
        &self,
        dossier_id: &str,
        channel: &str,
    ) -> Result<Option<work_item::Model>, DbErr> {
        work_item::Entity::find()
            .filter(work_item::Column::DossierId.eq(dossier_id))
            .filter(work_item::Column::Channel.eq(channel))
            .filter(work_item::Column::Status.is_in([PENDING, OFFERED]))
            .order_by_desc(work_item::Column::EnterTime)
            .one(&self.db)
            .await
    }

    /// Add `warning` to the item's warnings, once.
    pub async fn add_warning(&self, id: &str, warning: &str) -> Result<(), DbErr> {
        let Some(item) = work_item::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(());
        };
        let mut warnings = warnings_of(&item);
        if warnings.iter().any(|w| w == warning) {
            return Ok(());
        }
        warnings.push(warning.to_owned());
        work_item::Entity::update_many()
            .col_expr(
                work_item::Column::Warnings,
                Expr::value(serde_json::to_string(&warnings).unwrap_or_else(|_| "[]".into())),
            )
            .filter(work_item::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn by_intake_event(&self, event_id: &str) -> Result<Option<work_item::Model>, DbErr> {
        work_item::Entity::find()
            .filter(work_item::Column::IntakeEventId.eq(event_id))
            .one(&self.db)
            .await
    }

    /// Enqueue; returns the item and whether this call created it.
    pub async fn enqueue(&self, item: NewItem) -> Result<(work_item::Model, bool), DbErr> {
        let now = self.now();
        let event_id = item.intake_event_id.clone();
        let id = uuid::Uuid::now_v7().to_string();
        let mut skills = item.skills.clone();
        skills.sort();
        skills.dedup();
        let txn = self.db.begin().await?;
        let res =
            work_item::ActiveModel {
                id: Set(id.clone()),
                intake_event_id: Set(item.intake_event_id),
                channel: Set(item.channel),
                status: Set(if item.handled.is_some() {
                    COMPLETED
                } else {
                    PENDING
                }
                .to_owned()),
                priority: Set(item.priority),
                dossier_id: Set(item.dossier_id),
                dossier_reference: Set(item.dossier_reference),
                citizen_id: Set(item.citizen_id),
                process_id: Set(item.process_id),
                summary: Set(item.summary),
                agent_id: Set(item.handled.as_ref().map(|h| h.agent.clone())),
                outcome: Set(item.handled.as_ref().map(|h| h.outcome.clone())),
                enter_time: Set(micros(item.enter_time)),
                assign_time: Set(item.handled.as_ref().map(|h| micros(h.assign_time))),
                complete_time: Set(item.handled.as_ref().map(|h| micros(h.complete_time))),
                updated_at: Set(now),
                queue_id: Set(item.queue_id),
                previous_queue_id: Set(None),
                base_priority: Set(item.priority),
                escalation: Set(0),
                skills: Set(skills.join(",")),
                sla_due: Set(Some(micros(item.sla_due.unwrap_or_else(no_sla)))),
                sla_warn: Set(item.sla_warn.map(micros)),
                sla_state: Set(if item.sla_due.is_some() { "ok" } else { "none" }.to_owned()),
                rule_id: Set(item.rule_id),
                correlation: Set(item.correlation),
                offer_time: Set(None),
                offer_expires: Set(None),
                declined_by: Set(String::new()),
                wrap_time: Set(None),
                cancel_time: Set(None),
                candidates: Set(
                    serde_json::to_string(&item.candidates).unwrap_or_else(|_| "[]".into())
                ),
                callback_attempts: Set(0),
                callback_unanswered: Set(0),
                warnings: Set(
                    serde_json::to_string(&item.warnings).unwrap_or_else(|_| "[]".into())
                ),
            }
            .insert(&txn)
            .await;
        match res {
            Ok(m) => {
                for s in &skills {
                    let mut sql = Sql::new(txn.get_database_backend());
                    sql.push("INSERT INTO work_item_skills (work_item_id, skill) VALUES (")
                        .bind(id.clone())
                        .push(", ")
                        .bind(s.clone())
                        .push(")");
                    txn.execute_raw(sql.build()).await?;
                }
                let step = if m.status == COMPLETED {
                    "completed"
                } else {
                    "enqueued"
                };
                if let Some(input) = item.kept_input {
                    use crate::db::entities::intake_input;
                    intake_input::Entity::insert(intake_input::ActiveModel {
                        intake_event_id: Set(event_id.clone()),
                        event: Set(input),
                        received_at: Set(item.enter_time),
                    })
                    .on_conflict(
                        sea_orm::sea_query::OnConflict::column(intake_input::Column::IntakeEventId)
                            .do_nothing()
                            .to_owned(),
                    )
                    .exec_without_returning(&txn)
                    .await?;
                }
                self.stage(&txn, &m, step, "", "").await?;
                txn.commit().await?;
                self.changed();
                Ok((m, true))
            }
            Err(e) if is_unique_violation(&e) => {
                drop(txn);
                let m = self.by_intake_event(&event_id).await?.ok_or(e)?;
                Ok((m, false))
            }
            Err(e) => Err(e),
        }
    }

    /// The agent settled a candidate of item `id`: confirmed (the item's
    /// citizen was merged into the candidate: every item of the merged
    /// citizen now names the candidate, and the item keeps no candidates), or
    /// rejected (that candidate leaves the item).
    pub async fn settle_candidate(
        &self,
        id: &str,
        citizen_id: &str,
        confirmed: bool,
    ) -> Result<work_item::Model, QueueError> {
        let item = self.get(id).await?.ok_or(QueueError::NotFound)?;
        let now = micros(self.now());
        let txn = self.db.begin().await?;
        let mut left = candidates_of(&item);
        left.retain(|c| c.citizen_id != citizen_id);
        if confirmed {
            left.clear();
            if !item.citizen_id.is_empty() {
                work_item::Entity::update_many()
                    .col_expr(work_item::Column::CitizenId, Expr::value(citizen_id))
                    .col_expr(work_item::Column::UpdatedAt, Expr::value(now))
                    .filter(work_item::Column::CitizenId.eq(item.citizen_id.clone()))
                    .exec(&txn)
                    .await?;
            }
        }
        let mut m: work_item::ActiveModel = self
            .get_in(&txn, id)
            .await?
            .ok_or(QueueError::NotFound)?
            .into();
        if confirmed {
            m.citizen_id = Set(citizen_id.to_owned());
        }
        m.candidates = Set(serde_json::to_string(&left).unwrap_or_else(|_| "[]".into()));
        m.updated_at = Set(now);
        let m = m.update(&txn).await?;
        txn.commit().await?;
        Ok(m)
    }

    /// A citizen was merged into another (at the dossier role): the work
    /// items that named the merged record name the kept one. Idempotent.
    pub async fn reassign_citizen(&self, from: &str, to: &str) -> Result<u64, DbErr> {
        if from.is_empty() || to.is_empty() || from == to {
            return Ok(0);
        }
        let res = work_item::Entity::update_many()
            .col_expr(work_item::Column::CitizenId, Expr::value(to))
            .col_expr(
                work_item::Column::UpdatedAt,
                Expr::value(micros(self.now())),
            )
            .filter(work_item::Column::CitizenId.eq(from))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }

    async fn get_in(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        id: &str,
    ) -> Result<Option<work_item::Model>, DbErr> {
        work_item::Entity::find_by_id(id.to_owned()).one(conn).await
    }

    pub async fn get(&self, id: &str) -> Result<Option<work_item::Model>, DbErr> {
        work_item::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
    }

    /// Items in serving order after `after`, filtered.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&Cursor>,
        limit: u64,
    ) -> Result<Vec<work_item::Model>, DbErr> {
        use work_item::Column as C;
        let mut q = work_item::Entity::find()
            .order_by_desc(C::Priority)
            .order_by_asc(C::SlaDue)
            .order_by_asc(C::EnterTime)
            .order_by_asc(C::Id)
            .limit(limit);
        if let Some(s) = &filter.status {
            q = q.filter(C::Status.eq(s.clone()));
        }
        if let Some(s) = &filter.queue_id {
            q = q.filter(C::QueueId.eq(s.clone()));
        }
        if let Some(s) = &filter.agent_id {
            q = q.filter(C::AgentId.eq(s.clone()));
        }
        if let Some(s) = &filter.channel {
            q = q.filter(C::Channel.eq(s.clone()));
        }
        if let Some(s) = &filter.process_id {
            q = q.filter(C::ProcessId.eq(s.clone()));
        }
        if let Some(s) = &filter.sla_state {
            q = q.filter(C::SlaState.eq(s.clone()));
        }
        if let Some(c) = after {
            q = q.filter(
                Condition::any().add(C::Priority.lt(c.priority)).add(
                    Condition::all().add(C::Priority.eq(c.priority)).add(
                        Condition::any().add(C::SlaDue.gt(c.sla_due)).add(
                            Condition::all().add(C::SlaDue.eq(c.sla_due)).add(
                                Condition::any().add(C::EnterTime.gt(c.enter_time)).add(
                                    Condition::all()
                                        .add(C::EnterTime.eq(c.enter_time))
                                        .add(C::Id.gt(c.id.clone())),
                                ),
                            ),
                        ),
                    ),
                ),
            );
        }
        q.all(&self.db).await
    }
}

pub fn status_fr(s: &str) -> &'static str {
    match s {
        PENDING => "en attente",
        OFFERED => "proposé",
        ASSIGNED => "attribué",
        WRAPPING => "en clôture",
        COMPLETED => "terminé",
        CANCELLED => "annulé",
        _ => "inconnu",
    }
}

fn step_fr(step: &str) -> &'static str {
    match step {
        "assigned" => "Acceptation",
        "offer_rejected" => "Refus",
        "offer_expired" => "Expiration",
        "wrapping" => "Passage en clôture",
        "completed" => "Clôture",
        "cancelled" => "Annulation",
        "transferred" => "Transfert",
        _ => "Opération",
    }
}
