//! The unified queue's persistence: enqueue once per intake event, hand an
//! item to exactly one agent, complete it.
//!
//! Taking the next item is one `UPDATE … WHERE id = (SELECT … LIMIT 1)`
//! statement: on PostgreSQL the sub-select takes `FOR UPDATE SKIP LOCKED`, so
//! concurrent agents (and routing replicas) skip each other's rows instead of
//! waiting; on SQLite the single writer serialises the statement.

use chrono::{DateTime, Utc};
use guichet_platform::db::is_unique_violation;
use guichet_platform::outbox::Outbox;
use guichet_proto::convert::timestamp;
use guichet_proto::events::v1 as ev;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
    TransactionTrait, sea_query::OnConflict,
};

use crate::db::entities::{agent, work_item};

pub const PENDING: &str = "pending";
pub const ASSIGNED: &str = "assigned";
pub const COMPLETED: &str = "completed";

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
}

#[derive(Clone)]
pub struct Queue {
    db: DatabaseConnection,
    /// Every lifecycle step is announced by an event staged in its transaction.
    outbox: Outbox,
}

/// The event form of a work item, for `guichet.events.routing.work_item_*`.
pub fn item_event(item: &work_item::Model) -> ev::WorkItemChanged {
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
    }
}

impl Queue {
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Queue {
        Queue { db, outbox }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    async fn stage(
        &self,
        conn: &impl ConnectionTrait,
        item: &work_item::Model,
        ty: &str,
    ) -> Result<(), DbErr> {
        let event = self.outbox.domain_event(
            "routing",
            ty,
            format!("work-items/{}", item.id),
            &item_event(item),
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
        let now = Utc::now();
        let event_id = item.intake_event_id.clone();
        let txn = self.db.begin().await?;
        let res = work_item::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            intake_event_id: Set(item.intake_event_id),
            channel: Set(item.channel),
            status: Set(PENDING.to_owned()),
            priority: Set(item.priority),
            dossier_id: Set(item.dossier_id),
            dossier_reference: Set(item.dossier_reference),
            citizen_id: Set(item.citizen_id),
            process_id: Set(item.process_id),
            summary: Set(item.summary),
            agent_id: Set(None),
            outcome: Set(None),
            enter_time: Set(item.enter_time),
            assign_time: Set(None),
            complete_time: Set(None),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await;
        match res {
            Ok(m) => {
                self.stage(&txn, &m, "work_item_enqueued").await?;
                txn.commit().await?;
                self.outbox.notify();
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

    /// Items in serving order, optionally of one status.
    pub async fn list(
        &self,
        status: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<work_item::Model>, DbErr> {
        let mut q = work_item::Entity::find()
            .order_by_desc(work_item::Column::Priority)
            .order_by_asc(work_item::Column::EnterTime)
            .order_by_asc(work_item::Column::Id)
            .offset(offset)
            .limit(limit);
        if let Some(s) = status {
            q = q.filter(work_item::Column::Status.eq(s));
        }
        q.all(&self.db).await
    }

    /// Assign the next pending item to `agent_id`, atomically.
    pub async fn take_next(&self, agent_id: &str) -> Result<Option<work_item::Model>, DbErr> {
        let backend = self.db.get_database_backend();
        let now = Utc::now();
        let (sql, values): (&str, Vec<sea_orm::Value>) = match backend {
            DbBackend::Postgres => (
                "UPDATE work_items SET status = 'assigned', agent_id = $1, assign_time = $2, updated_at = $2 \
                 WHERE id = (SELECT id FROM work_items WHERE status = 'pending' \
                             ORDER BY priority DESC, enter_time ASC, id ASC LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 AND status = 'pending' RETURNING *",
                vec![agent_id.into(), now.into()],
            ),
            _ => (
                "UPDATE work_items SET status = 'assigned', agent_id = ?, assign_time = ?, updated_at = ? \
                 WHERE id = (SELECT id FROM work_items WHERE status = 'pending' \
                             ORDER BY priority DESC, enter_time ASC, id ASC LIMIT 1) \
                 AND status = 'pending' RETURNING *",
                vec![agent_id.into(), now.into(), now.into()],
            ),
        };
        let txn = self.db.begin().await?;
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let item = work_item::Model::from_query_result(&row, "")?;
        self.stage(&txn, &item, "work_item_assigned").await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok(Some(item))
    }

    /// Complete an item held by `agent_id`; `None` if it is not (or no
    /// longer) assigned to that agent.
    pub async fn complete(
        &self,
        id: &str,
        agent_id: &str,
        outcome: &str,
    ) -> Result<Option<work_item::Model>, DbErr> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let res = work_item::Entity::update_many()
            .col_expr(work_item::Column::Status, COMPLETED.into())
            .col_expr(work_item::Column::Outcome, Some(outcome.to_owned()).into())
            .col_expr(work_item::Column::CompleteTime, Some(now).into())
            .col_expr(work_item::Column::UpdatedAt, now.into())
            .filter(work_item::Column::Id.eq(id))
            .filter(work_item::Column::Status.eq(ASSIGNED))
            .filter(work_item::Column::AgentId.eq(agent_id))
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            return Ok(None);
        }
        let Some(item) = work_item::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await?
        else {
            return Ok(None);
        };
        self.stage(&txn, &item, "work_item_completed").await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok(Some(item))
    }

    pub async fn set_presence(
        &self,
        agent_id: &str,
        presence: &str,
    ) -> Result<agent::Model, DbErr> {
        let now = Utc::now();
        agent::Entity::insert(agent::ActiveModel {
            id: Set(agent_id.to_owned()),
            presence: Set(presence.to_owned()),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(agent::Column::Id)
                .update_columns([agent::Column::Presence, agent::Column::UpdatedAt])
                .to_owned(),
        )
        .exec(&self.db)
        .await?;
        agent::Entity::find_by_id(agent_id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("agent".into()))
    }

    pub async fn agent(&self, agent_id: &str) -> Result<Option<agent::Model>, DbErr> {
        agent::Entity::find_by_id(agent_id.to_owned())
            .one(&self.db)
            .await
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
