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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use guichet_platform::db::is_unique_violation;
use guichet_platform::outbox::Outbox;
use guichet_proto::convert::timestamp;
use guichet_proto::events::v1 as ev;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement, TransactionTrait, Value,
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
    /// Work already done when it reaches routing (a call an agent answered
    /// on the phone): recorded as completed, never offered.
    pub handled: Option<Handled>,
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

/// A raw statement with placeholders in the backend's style.
struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: DbBackend) -> Sql {
        Sql {
            backend,
            text: String::new(),
            values: Vec::new(),
        }
    }

    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    fn bind(&mut self, v: impl Into<Value>) -> &mut Self {
        self.values.push(v.into());
        if self.backend == DbBackend::Postgres {
            let n = self.values.len();
            self.text.push_str(&format!("${n}"));
        } else {
            self.text.push('?');
        }
        self
    }

    fn list(&mut self, items: &[String]) -> &mut Self {
        for (i, v) in items.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v.clone());
        }
        self
    }

    fn build(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
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
        let res = work_item::ActiveModel {
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

    // ---- agents ----

    pub async fn agent(&self, agent_id: &str) -> Result<Option<agent::Model>, DbErr> {
        agent::Entity::find_by_id(agent_id.to_owned())
            .one(&self.db)
            .await
    }

    /// Agents by id after `after`, optionally of one presence.
    pub async fn list_agents(
        &self,
        presence: Option<&str>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<agent::Model>, DbErr> {
        let mut q = agent::Entity::find()
            .order_by_asc(agent::Column::Id)
            .limit(limit);
        if let Some(p) = presence {
            q = q.filter(agent::Column::Presence.eq(p));
        }
        if let Some(a) = after {
            q = q.filter(agent::Column::Id.gt(a));
        }
        q.all(&self.db).await
    }

    fn new_agent(&self, id: &str, presence: &str) -> agent::ActiveModel {
        agent::ActiveModel {
            id: Set(id.to_owned()),
            presence: Set(presence.to_owned()),
            updated_at: Set(self.now()),
            accept_offers: Set(false),
            skills: Set(String::new()),
            queues: Set(String::new()),
            capacities: Set(String::new()),
            missed_offers: Set(0),
            last_assigned_at: Set(None),
        }
    }

    pub async fn set_presence(
        &self,
        agent_id: &str,
        presence: &str,
        accept_offers: bool,
    ) -> Result<agent::Model, DbErr> {
        let mut a = self.new_agent(agent_id, presence);
        a.accept_offers = Set(accept_offers);
        let txn = self.db.begin().await?;
        agent::Entity::insert(a)
            .on_conflict(
                OnConflict::column(agent::Column::Id)
                    .update_columns([
                        agent::Column::Presence,
                        agent::Column::AcceptOffers,
                        agent::Column::UpdatedAt,
                        agent::Column::MissedOffers,
                    ])
                    .to_owned(),
            )
            .exec(&txn)
            .await?;
        self.stage_presence(&txn, agent_id, presence, "agent")
            .await?;
        txn.commit().await?;
        self.changed();
        agent::Entity::find_by_id(agent_id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("agent".into()))
    }

    async fn stage_presence(
        &self,
        conn: &impl ConnectionTrait,
        agent_id: &str,
        presence: &str,
        cause: &str,
    ) -> Result<(), DbErr> {
        let event = self.outbox.domain_event(
            "routing",
            "agent_presence_changed",
            format!("agents/{agent_id}"),
            &ev::AgentPresenceChanged {
                agent_id: agent_id.to_owned(),
                presence: presence.to_owned(),
                cause: cause.to_owned(),
                changed_at: Some(timestamp(self.now())),
            },
        );
        self.outbox.stage(conn, &event).await
    }

    /// Set skills, queues and/or capacities (`None` keeps the current
    /// value), creating the agent, offline, if new.
    pub async fn update_agent(
        &self,
        agent_id: &str,
        skills: Option<&[String]>,
        queues: Option<&[String]>,
        capacities: Option<&BTreeMap<String, i32>>,
    ) -> Result<agent::Model, DbErr> {
        let mut a = self.new_agent(agent_id, "offline");
        let mut cols = vec![agent::Column::UpdatedAt];
        if let Some(s) = skills {
            a.skills = Set(s.join(","));
            cols.push(agent::Column::Skills);
        }
        if let Some(q) = queues {
            a.queues = Set(q.join(","));
            cols.push(agent::Column::Queues);
        }
        if let Some(c) = capacities {
            a.capacities = Set(c
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","));
            cols.push(agent::Column::Capacities);
        }
        agent::Entity::insert(a)
            .on_conflict(
                OnConflict::column(agent::Column::Id)
                    .update_columns(cols)
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        self.changed();
        agent::Entity::find_by_id(agent_id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("agent".into()))
    }

    /// An agent's capacity per channel (defaults, overridden per agent).
    pub fn capacities(&self, a: &agent::Model) -> BTreeMap<String, i32> {
        let mut c = self.settings.capacity.clone();
        c.extend(parse_capacities(&a.capacities));
        c
    }

    /// The queues an agent works.
    pub fn agent_queues(&self, a: &agent::Model) -> Vec<String> {
        let q = split(&a.queues);
        if q.is_empty() {
            vec![self.settings.default_queue.clone()]
        } else {
            q
        }
    }

    /// Items held (offered, assigned, wrapping) per agent and channel.
    pub async fn loads(&self, agent_id: Option<&str>) -> Result<Loads, DbErr> {
        let mut sql = Sql::new(self.db.get_database_backend());
        sql.push("SELECT agent_id, channel, COUNT(*) AS n FROM work_items WHERE status IN (")
            .list(&HELD.map(str::to_owned))
            .push(") AND agent_id IS NOT NULL");
        if let Some(a) = agent_id {
            sql.push(" AND agent_id = ").bind(a.to_owned());
        }
        sql.push(" GROUP BY agent_id, channel");
        let rows = self.db.query_all_raw(sql.build()).await?;
        let mut out: Loads = HashMap::new();
        for r in rows {
            let a: String = r.try_get("", "agent_id")?;
            let ch: String = r.try_get("", "channel")?;
            let n: i64 = r.try_get("", "n")?;
            out.entry(a).or_default().insert(ch, n as i32);
        }
        Ok(out)
    }

    /// Channels where the agent has spare capacity.
    fn spare_channels(&self, a: &agent::Model, loads: &Loads) -> Vec<String> {
        let empty = BTreeMap::new();
        let load = loads.get(&a.id).unwrap_or(&empty);
        self.capacities(a)
            .into_iter()
            .filter(|(ch, cap)| load.get(ch).copied().unwrap_or(0) < *cap)
            .map(|(ch, _)| ch)
            .collect()
    }

    // ---- handing out work ----

    /// Assign the best pending item the agent is eligible for, atomically.
    pub async fn take_next(
        &self,
        a: &agent::Model,
        only_queue: Option<&str>,
    ) -> Result<Option<work_item::Model>, QueueError> {
        let loads = self.loads(Some(&a.id)).await?;
        let channels = self.spare_channels(a, &loads);
        if channels.is_empty() {
            return Err(QueueError::Conflict(
                "vous avez atteint votre capacité sur tous les canaux".into(),
            ));
        }
        let mut queues = self.agent_queues(a);
        if let Some(q) = only_queue {
            if !queues.iter().any(|x| x == q) {
                return Err(QueueError::Conflict(format!(
                    "vous ne travaillez pas la file « {q} »"
                )));
            }
            queues = vec![q.to_owned()];
        }
        let skills = split(&a.skills);
        let now = self.now();
        let backend = self.db.get_database_backend();
        let mut sql = Sql::new(backend);
        sql.push("UPDATE work_items SET status = 'assigned', agent_id = ")
            .bind(a.id.clone())
            .push(", assign_time = ")
            .bind(now)
            .push(", updated_at = ")
            .bind(now)
            .push(" WHERE id = (SELECT w.id FROM work_items w WHERE w.status = 'pending' AND w.queue_id IN (")
            .list(&queues)
            .push(") AND w.channel IN (")
            .list(&channels)
            .push(") AND NOT EXISTS (SELECT 1 FROM work_item_skills s WHERE s.work_item_id = w.id");
        if !skills.is_empty() {
            sql.push(" AND s.skill NOT IN (").list(&skills).push(")");
        }
        sql.push(")");
        // Capacity, checked inside the statement: two calls of one agent
        // at once cannot both take the last free slot.
        self.spare_capacity_clause(&mut sql, a, "w.channel");
        sql.push(" ORDER BY w.priority DESC, w.sla_due ASC, w.enter_time ASC, w.id ASC LIMIT 1");
        if backend == DbBackend::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        sql.push(") AND status = 'pending' RETURNING *");
        let txn = self.db.begin().await?;
        self.lock_agent(&txn, &a.id).await?;
        let Some(row) = txn.query_one_raw(sql.build()).await? else {
            return Ok(None);
        };
        let item = work_item::Model::from_query_result(&row, "")?;
        self.agent_assigned(&txn, &a.id, now).await?;
        self.stage(&txn, &item, "assigned", "", "").await?;
        txn.commit().await?;
        self.changed();
        Ok(Some(item))
    }

    /// ` AND <agent's held items on channel> < <its capacity on channel>`.
    fn spare_capacity_clause(&self, sql: &mut Sql, a: &agent::Model, channel: &str) {
        sql.push(" AND (SELECT COUNT(*) FROM work_items h WHERE h.agent_id = ")
            .bind(a.id.clone())
            .push(&format!(" AND h.channel = {channel} AND h.status IN ('offered', 'assigned', 'wrapping')) < CASE {channel}"));
        for (ch, cap) in self.capacities(a) {
            sql.push(" WHEN ").bind(ch).push(" THEN ").bind(cap);
        }
        sql.push(" ELSE 0 END");
    }

    /// PostgreSQL: serialise one agent's concurrent assignments on its row,
    /// so each statement counts the other's committed items. (SQLite's
    /// single writer does that already.)
    async fn lock_agent(&self, txn: &DatabaseTransaction, agent_id: &str) -> Result<(), DbErr> {
        if txn.get_database_backend() == DbBackend::Postgres {
            let mut sql = Sql::new(DbBackend::Postgres);
            sql.push("SELECT id FROM agents WHERE id = ")
                .bind(agent_id.to_owned())
                .push(" FOR UPDATE");
            txn.query_one_raw(sql.build()).await?;
        }
        Ok(())
    }

    async fn agent_assigned(
        &self,
        txn: &DatabaseTransaction,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        agent::Entity::update_many()
            .col_expr(agent::Column::LastAssignedAt, Expr::value(Some(now)))
            .col_expr(agent::Column::MissedOffers, Expr::value(0))
            .filter(agent::Column::Id.eq(agent_id))
            .exec(txn)
            .await?;
        Ok(())
    }

    /// Why a conditional step did not apply: the item is missing, or not in
    /// a state for it.
    async fn refused(&self, id: &str, what: &str) -> QueueError {
        match self.get(id).await {
            Ok(None) => QueueError::NotFound,
            Ok(Some(m)) => QueueError::Conflict(format!(
                "{what} impossible : l'élément est « {} »{}",
                status_fr(&m.status),
                if m.agent_id.is_some() {
                    " et détenu par un autre agent ou expiré"
                } else {
                    ""
                }
            )),
            Err(e) => QueueError::Db(e),
        }
    }

    /// One conditional lifecycle step: `update` applied where the item is
    /// in `from` (and held by `holder`), the event staged, committed.
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        id: &str,
        from: &[&str],
        holder: Option<&str>,
        extra: Option<Condition>,
        update: Vec<(work_item::Column, sea_orm::sea_query::SimpleExpr)>,
        step: &str,
        from_queue: &str,
        reason: &str,
    ) -> Result<(work_item::Model, DatabaseTransaction), QueueError> {
        let txn = self.db.begin().await?;
        let mut q = work_item::Entity::update_many()
            .filter(work_item::Column::Id.eq(id))
            .filter(work_item::Column::Status.is_in(from.iter().copied()));
        if let Some(h) = holder {
            q = q.filter(work_item::Column::AgentId.eq(h));
        }
        if let Some(c) = extra {
            q = q.filter(c);
        }
        for (col, v) in update {
            q = q.col_expr(col, v);
        }
        let res = q.exec(&txn).await?;
        if res.rows_affected == 0 {
            drop(txn);
            return Err(self.refused(id, step_fr(step)).await);
        }
        let item = work_item::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await?
            .ok_or(QueueError::NotFound)?;
        self.stage(&txn, &item, step, from_queue, reason).await?;
        Ok((item, txn))
    }

    async fn commit(
        &self,
        (item, txn): (work_item::Model, DatabaseTransaction),
    ) -> Result<work_item::Model, QueueError> {
        txn.commit().await?;
        self.changed();
        Ok(item)
    }

    pub async fn accept_offer(
        &self,
        id: &str,
        agent_id: &str,
    ) -> Result<work_item::Model, QueueError> {
        use work_item::Column as C;
        let now = self.now();
        let (item, txn) = self
            .step(
                id,
                &[OFFERED],
                Some(agent_id),
                Some(Condition::all().add(C::OfferExpires.gt(now))),
                vec![
                    (C::Status, Expr::value(ASSIGNED)),
                    (C::AssignTime, Expr::value(Some(now))),
                    (C::UpdatedAt, Expr::value(now)),
                ],
                "assigned",
                "",
                "",
            )
            .await?;
        self.agent_assigned(&txn, agent_id, now).await?;
        self.commit((item, txn)).await
    }

    /// Back to pending, remembering who declined so the next offer goes to
    /// someone else.
    fn release(
        declined_by: &str,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Vec<(work_item::Column, sea_orm::sea_query::SimpleExpr)> {
        use work_item::Column as C;
        let mut declined: Vec<String> = split(declined_by);
        if !declined.iter().any(|a| a == agent_id) {
            declined.push(agent_id.to_owned());
        }
        vec![
            (C::Status, Expr::value(PENDING)),
            (C::AgentId, Expr::value(Option::<String>::None)),
            (C::OfferTime, Expr::value(Option::<DateTime<Utc>>::None)),
            (C::OfferExpires, Expr::value(Option::<DateTime<Utc>>::None)),
            (C::DeclinedBy, Expr::value(declined.join(","))),
            (C::UpdatedAt, Expr::value(now)),
        ]
    }

    pub async fn reject_offer(
        &self,
        id: &str,
        agent_id: &str,
        reason: &str,
    ) -> Result<work_item::Model, QueueError> {
        let now = self.now();
        let current = self.get(id).await?.ok_or(QueueError::NotFound)?;
        let res = self
            .step(
                id,
                &[OFFERED],
                Some(agent_id),
                Some(
                    Condition::all()
                        .add(work_item::Column::DeclinedBy.eq(current.declined_by.clone())),
                ),
                Self::release(&current.declined_by, agent_id, now),
                "offer_rejected",
                "",
                reason,
            )
            .await?;
        self.commit(res).await
    }

    pub async fn wrap_up(&self, id: &str, agent_id: &str) -> Result<work_item::Model, QueueError> {
        use work_item::Column as C;
        let now = self.now();
        let res = self
            .step(
                id,
                &[ASSIGNED],
                Some(agent_id),
                None,
                vec![
                    (C::Status, Expr::value(WRAPPING)),
                    (C::WrapTime, Expr::value(Some(now))),
                    (C::UpdatedAt, Expr::value(now)),
                ],
                "wrapping",
                "",
                "",
            )
            .await?;
        self.commit(res).await
    }

    /// Complete an item held by `agent_id` (assigned or wrapping).
    pub async fn complete(
        &self,
        id: &str,
        agent_id: &str,
        outcome: &str,
    ) -> Result<work_item::Model, QueueError> {
        use work_item::Column as C;
        let now = self.now();
        let res = self
            .step(
                id,
                &[ASSIGNED, WRAPPING],
                Some(agent_id),
                None,
                vec![
                    (C::Status, Expr::value(COMPLETED)),
                    (C::Outcome, Expr::value(Some(outcome.to_owned()))),
                    (C::CompleteTime, Expr::value(Some(now))),
                    (C::UpdatedAt, Expr::value(now)),
                ],
                "completed",
                "",
                "",
            )
            .await?;
        self.commit(res).await
    }

    /// Cancel an open item; `holder` restricts it to the agent holding it.
    pub async fn cancel(
        &self,
        id: &str,
        holder: Option<&str>,
        reason: &str,
    ) -> Result<work_item::Model, QueueError> {
        use work_item::Column as C;
        let now = self.now();
        let res = self
            .step(
                id,
                &OPEN,
                holder,
                None,
                vec![
                    (C::Status, Expr::value(CANCELLED)),
                    (C::CancelTime, Expr::value(Some(now))),
                    (C::Outcome, Expr::value(Some(reason.to_owned()))),
                    (C::UpdatedAt, Expr::value(now)),
                ],
                "cancelled",
                "",
                reason,
            )
            .await?;
        self.commit(res).await
    }

    /// Move an open item to `target` (None: back to the queue it came
    /// from); it waits there as pending, held by nobody.
    pub async fn transfer(
        &self,
        id: &str,
        target: Option<&str>,
        holder: Option<&str>,
        reason: &str,
    ) -> Result<work_item::Model, QueueError> {
        use work_item::Column as C;
        let now = self.now();
        let current = self.get(id).await?.ok_or(QueueError::NotFound)?;
        let target = match target {
            Some(t) => t.to_owned(),
            None => current.previous_queue_id.clone().ok_or_else(|| {
                QueueError::Conflict(
                    "cet élément n'a pas été transféré : pas de file de retour".into(),
                )
            })?,
        };
        if target == current.queue_id {
            return Err(QueueError::Conflict(format!(
                "l'élément est déjà dans la file « {target} »"
            )));
        }
        let res = self
            .step(
                id,
                &OPEN,
                holder,
                Some(Condition::all().add(C::QueueId.eq(current.queue_id.clone()))),
                vec![
                    (C::Status, Expr::value(PENDING)),
                    (C::QueueId, Expr::value(target.clone())),
                    (
                        C::PreviousQueueId,
                        Expr::value(Some(current.queue_id.clone())),
                    ),
                    (C::AgentId, Expr::value(Option::<String>::None)),
                    (C::OfferTime, Expr::value(Option::<DateTime<Utc>>::None)),
                    (C::OfferExpires, Expr::value(Option::<DateTime<Utc>>::None)),
                    (C::DeclinedBy, Expr::value(String::new())),
                    (C::UpdatedAt, Expr::value(now)),
                ],
                "transferred",
                &current.queue_id,
                reason,
            )
            .await?;
        self.commit(res).await
    }

    // ---- maintenance: offer timers, SLA escalation, ageing, push offers ----

    /// One maintenance pass at the clock's now. Safe to run on every replica
    /// at once: each change is conditional on the state it read.
    pub async fn maintain(&self) -> Result<Maintenance, DbErr> {
        let now = self.now();
        let mut m = Maintenance {
            offers_expired: self.expire_offers(now).await?,
            escalated: self.escalate(now).await?,
            aged: self.age(now).await?,
            offered: 0,
        };
        m.offered = self.dispatch(now).await?;
        Ok(m)
    }

    async fn expire_offers(&self, now: DateTime<Utc>) -> Result<usize, DbErr> {
        use work_item::Column as C;
        let expired = work_item::Entity::find()
            .filter(C::Status.eq(OFFERED))
            .filter(C::OfferExpires.lte(now))
            .order_by_asc(C::OfferExpires)
            .limit(500)
            .all(&self.db)
            .await?;
        let mut n = 0;
        for item in expired {
            let Some(agent_id) = item.agent_id.clone() else {
                continue;
            };
            let res = self
                .step(
                    &item.id,
                    &[OFFERED],
                    Some(&agent_id),
                    Some(
                        Condition::all()
                            .add(C::OfferExpires.lte(now))
                            .add(C::DeclinedBy.eq(item.declined_by.clone())),
                    ),
                    Self::release(&item.declined_by, &agent_id, now),
                    "offer_expired",
                    "",
                    "délai de réponse dépassé",
                )
                .await;
            let (_, txn) = match res {
                Ok(ok) => ok,
                Err(QueueError::Db(e)) => return Err(e),
                Err(_) => continue, // accepted, rejected or expired by another replica meanwhile
            };
            agent::Entity::update_many()
                .col_expr(
                    agent::Column::MissedOffers,
                    sea_orm::ExprTrait::add(Expr::col(agent::Column::MissedOffers), 1),
                )
                .filter(agent::Column::Id.eq(agent_id.clone()))
                .exec(&txn)
                .await?;
            let away = agent::Entity::update_many()
                .col_expr(agent::Column::Presence, Expr::value("away"))
                .col_expr(agent::Column::UpdatedAt, Expr::value(now))
                .filter(agent::Column::Id.eq(agent_id.clone()))
                .filter(agent::Column::Presence.eq("available"))
                .filter(agent::Column::MissedOffers.gte(self.settings.max_missed_offers))
                .exec(&txn)
                .await?;
            if away.rows_affected > 0 {
                self.stage_presence(&txn, &agent_id, "away", "offer_timeouts")
                    .await?;
                tracing::info!(agent_id = %agent_id, "agent set away after repeated offer timeouts");
            }
            txn.commit().await?;
            metrics::counter!("guichet_routing_offers_total", "outcome" => "expired").increment(1);
            n += 1;
        }
        if n > 0 {
            self.changed();
        }
        Ok(n)
    }

    async fn escalate(&self, now: DateTime<Utc>) -> Result<usize, DbErr> {
        use work_item::Column as C;
        let due = work_item::Entity::find()
            .filter(C::Status.is_in([PENDING, OFFERED]))
            .filter(C::SlaState.is_in(["ok", "near"]))
            .filter(
                Condition::any()
                    .add(C::SlaWarn.lte(now))
                    .add(C::SlaDue.lte(now)),
            )
            .limit(500)
            .all(&self.db)
            .await?;
        let mut n = 0;
        for item in due {
            let breached = item.sla_due.is_some_and(|d| d <= now);
            let (level, bump) = if breached {
                ("breached", self.settings.sla_breach_bump)
            } else if item.sla_state == "ok" {
                ("near", self.settings.sla_near_bump)
            } else {
                continue;
            };
            let txn = self.db.begin().await?;
            let res = work_item::Entity::update_many()
                .col_expr(C::SlaState, Expr::value(level))
                .col_expr(
                    C::Escalation,
                    sea_orm::ExprTrait::add(Expr::col(C::Escalation), bump),
                )
                .col_expr(
                    C::Priority,
                    sea_orm::ExprTrait::add(Expr::col(C::Priority), bump),
                )
                .col_expr(C::UpdatedAt, Expr::value(now))
                .filter(C::Id.eq(item.id.clone()))
                .filter(C::SlaState.eq(item.sla_state.clone()))
                .exec(&txn)
                .await?;
            if res.rows_affected == 0 {
                continue;
            }
            // No summary here: it may quote the citizen. The id and the
            // dossier reference are enough to open the item.
            let what = if item.dossier_reference.is_empty() {
                format!("l'élément {}", item.id)
            } else {
                format!("la demande du dossier {}", item.dossier_reference)
            };
            let due = item
                .sla_due
                .map(|d| d.format("%d/%m/%Y %H:%M UTC").to_string())
                .unwrap_or_default();
            let message = match level {
                "breached" => format!(
                    "Délai dépassé : {what} (file {}) devait être prise en charge avant le {due}.",
                    item.queue_id
                ),
                _ => format!(
                    "Délai bientôt atteint : {what} (file {}) doit être prise en charge avant le {due}.",
                    item.queue_id
                ),
            };
            let event = self.outbox.domain_event(
                "routing",
                &format!("sla_{level}"),
                format!("work-items/{}", item.id),
                &ev::WorkItemEscalated {
                    work_item_id: item.id.clone(),
                    queue_id: item.queue_id.clone(),
                    level: level.to_owned(),
                    sla_due_at: has_sla(item.sla_due).map(timestamp),
                    priority_before: item.priority,
                    priority_after: item.priority + bump,
                    escalated_at: Some(timestamp(now)),
                    message,
                    channel: item.channel.clone(),
                    process_id: item.process_id.clone(),
                },
            );
            self.outbox.stage(&txn, &event).await?;
            txn.commit().await?;
            metrics::counter!("guichet_routing_sla_escalations_total", "level" => level)
                .increment(1);
            tracing::info!(work_item_id = %item.id, level, "sla escalation");
            n += 1;
        }
        if n > 0 {
            self.changed();
        }
        Ok(n)
    }

    async fn age(&self, now: DateTime<Utc>) -> Result<usize, DbErr> {
        use work_item::Column as C;
        let mut n = 0;
        for (queue_id, q) in &self.settings.queues {
            if q.ageing_step == 0 || q.ageing_max == 0 {
                continue;
            }
            let items = work_item::Entity::find()
                .filter(C::Status.is_in([PENDING, OFFERED]))
                .filter(C::QueueId.eq(queue_id.clone()))
                .all(&self.db)
                .await?;
            for item in items {
                let waited = (now - item.enter_time).num_seconds().max(0) as u64;
                let steps = (waited / q.ageing_interval_secs) as i64;
                let aged = (steps * q.ageing_step as i64).min(q.ageing_max as i64) as i32;
                let want = item.base_priority + item.escalation + aged;
                if want == item.priority {
                    continue;
                }
                let res = work_item::Entity::update_many()
                    .col_expr(C::Priority, Expr::value(want))
                    .filter(C::Id.eq(item.id.clone()))
                    .filter(C::Priority.eq(item.priority))
                    .filter(C::Escalation.eq(item.escalation))
                    .exec(&self.db)
                    .await?;
                n += res.rows_affected as usize;
            }
        }
        if n > 0 {
            self.changed();
        }
        Ok(n)
    }

    /// Push mode: offer pending items, in serving order, to available
    /// agents who accept offers, are eligible and have spare capacity; the
    /// least loaded, then the longest idle, first.
    async fn dispatch(&self, now: DateTime<Utc>) -> Result<usize, DbErr> {
        use work_item::Column as C;
        let agents = agent::Entity::find()
            .filter(agent::Column::Presence.eq("available"))
            .filter(agent::Column::AcceptOffers.eq(true))
            .order_by_asc(agent::Column::Id)
            .all(&self.db)
            .await?;
        if agents.is_empty() {
            return Ok(0);
        }
        let mut loads = self.loads(None).await?;
        let items = work_item::Entity::find()
            .filter(C::Status.eq(PENDING))
            .order_by_desc(C::Priority)
            .order_by_asc(C::SlaDue)
            .order_by_asc(C::EnterTime)
            .order_by_asc(C::Id)
            .limit(200)
            .all(&self.db)
            .await?;
        let expires = now + self.settings.offer_timeout;
        let mut n = 0;
        for item in items {
            let needs: Vec<String> = split(&item.skills);
            let declined: HashSet<String> = split(&item.declined_by).into_iter().collect();
            let mut best: Option<(&agent::Model, i32)> = None;
            for a in &agents {
                if declined.contains(&a.id) || !self.agent_queues(a).contains(&item.queue_id) {
                    continue;
                }
                let has: HashSet<String> = split(&a.skills).into_iter().collect();
                if !needs.iter().all(|s| has.contains(s)) {
                    continue;
                }
                let load = loads.get(&a.id).cloned().unwrap_or_default();
                let cap = self.capacities(a).get(&item.channel).copied().unwrap_or(0);
                if load.get(&item.channel).copied().unwrap_or(0) >= cap {
                    continue;
                }
                let total: i32 = load.values().sum();
                let better = match best {
                    None => true,
                    Some((b, bt)) => (total, a.last_assigned_at) < (bt, b.last_assigned_at),
                };
                if better {
                    best = Some((a, total));
                }
            }
            let Some((a, _)) = best else { continue };
            let txn = self.db.begin().await?;
            self.lock_agent(&txn, &a.id).await?;
            // Still pending, and the agent still has room: another replica
            // may have offered it something meanwhile.
            let mut sql = Sql::new(self.db.get_database_backend());
            sql.push("UPDATE work_items SET status = 'offered', agent_id = ")
                .bind(a.id.clone())
                .push(", offer_time = ")
                .bind(now)
                .push(", offer_expires = ")
                .bind(expires)
                .push(", updated_at = ")
                .bind(now)
                .push(" WHERE id = ")
                .bind(item.id.clone())
                .push(" AND status = 'pending'");
            self.spare_capacity_clause(&mut sql, a, "work_items.channel");
            let res = txn.execute_raw(sql.build()).await?;
            if res.rows_affected() == 0 {
                continue;
            }
            let offered = work_item::Entity::find_by_id(item.id.clone())
                .one(&txn)
                .await?
                .ok_or_else(|| DbErr::RecordNotFound("work item".into()))?;
            self.stage(&txn, &offered, "offered", "", "").await?;
            txn.commit().await?;
            *loads
                .entry(a.id.clone())
                .or_default()
                .entry(item.channel.clone())
                .or_insert(0) += 1;
            metrics::counter!("guichet_routing_offers_total", "outcome" => "offered").increment(1);
            tracing::info!(work_item_id = %item.id, agent_id = %a.id, "work item offered");
            n += 1;
        }
        if n > 0 {
            self.changed();
        }
        Ok(n)
    }

    // ---- statistics ----

    pub async fn stats(&self, queue_id: &str, window: Duration) -> Result<Stats, DbErr> {
        use work_item::Column as C;
        let now = self.now();
        let from = now - window;
        let mut s = Stats::default();
        let open = work_item::Entity::find()
            .filter(C::QueueId.eq(queue_id))
            .filter(C::Status.is_in(OPEN))
            .all(&self.db)
            .await?;
        for st in OPEN {
            s.by_status.insert(st.to_owned(), 0);
        }
        let mut oldest: Option<DateTime<Utc>> = None;
        for i in &open {
            *s.by_status.entry(i.status.clone()).or_default() += 1;
            if i.status == PENDING {
                *s.pending_by_priority.entry(i.priority).or_default() += 1;
                oldest = Some(oldest.map_or(i.enter_time, |o| o.min(i.enter_time)));
            }
        }
        s.longest_wait = oldest.map_or(Duration::zero(), |o| (now - o).max(Duration::zero()));

        let agents = agent::Entity::find()
            .filter(agent::Column::Presence.eq("available"))
            .all(&self.db)
            .await?;
        let loads = self.loads(None).await?;
        for a in agents
            .iter()
            .filter(|a| self.agent_queues(a).iter().any(|q| q == queue_id))
        {
            s.available_agents += 1;
            if !self.spare_channels(a, &loads).is_empty() {
                s.eligible_agents += 1;
            }
        }

        let recent = work_item::Entity::find()
            .filter(C::QueueId.eq(queue_id))
            .filter(
                Condition::any()
                    .add(C::EnterTime.gte(from))
                    .add(C::AssignTime.gte(from))
                    .add(C::CompleteTime.gte(from))
                    .add(C::CancelTime.gte(from))
                    .add(
                        Condition::all()
                            .add(C::SlaDue.gte(from))
                            .add(C::SlaDue.lte(now)),
                    ),
            )
            .all(&self.db)
            .await?;
        let within = |t: Option<DateTime<Utc>>| t.is_some_and(|t| t >= from && t <= now);
        let mut waits = Vec::new();
        for i in &recent {
            if within(Some(i.enter_time)) {
                s.entered += 1;
            }
            if within(i.complete_time) {
                s.completed += 1;
            }
            if within(i.cancel_time) {
                s.cancelled += 1;
            }
            if let Some(at) = i.assign_time.filter(|t| within(Some(*t))) {
                waits.push((at - i.enter_time).max(Duration::zero()));
            }
            if let Some(due) = has_sla(i.sla_due).filter(|d| within(Some(*d))) {
                s.sla_due += 1;
                if i.assign_time.is_none_or(|a| a > due) {
                    s.sla_breached += 1;
                }
            }
        }
        waits.sort();
        s.accepted = waits.len() as i64;
        if !waits.is_empty() {
            let total: i64 = waits.iter().map(|w| w.num_milliseconds()).sum();
            s.average_wait = Duration::milliseconds(total / waits.len() as i64);
            let rank = ((waits.len() as f64) * 0.9).ceil() as usize;
            s.p90_wait = waits[rank.saturating_sub(1).min(waits.len() - 1)];
        }
        Ok(s)
    }

    /// Pending items, for the queue-depth gauge.
    pub async fn pending_count(&self) -> Result<u64, DbErr> {
        use sea_orm::PaginatorTrait;
        work_item::Entity::find()
            .filter(work_item::Column::Status.eq(PENDING))
            .count(&self.db)
            .await
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
