//! The process engine: transitions (by role, with guards and reasons),
//! timers (reminders and automatic transitions), reopening, version
//! migration, and what the agent should do next (guidance).
//!
//! Every state change goes through [`Store::apply_transition`]: a
//! compare-and-swap on the dossier's revision, so of two concurrent
//! transitions exactly one wins, and the loser learns it (ABORTED).

use chrono::{DateTime, Duration, Utc};
use guichet_proto::events::v1 as ev;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, ExprTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

use crate::catalog::{Facts, ProcessDefinition, StateDefinition, TransitionDefinition};
use crate::db::entities::{citizen, document, dossier, link, timeline, timer, transition};
use crate::store::{Conn, NewEntry, Store, insert_entry};

/// Why a state change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// Another change won the race (the revision moved).
    #[error("the dossier changed concurrently; read it again and retry")]
    Conflict,
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// One state change to apply.
pub struct Change<'a> {
    pub dossier: &'a dossier::Model,
    /// The definition the dossier ends up on (a new version when migrating).
    pub def: &'a ProcessDefinition,
    pub to_state: &'a str,
    /// `transition`, `timer`, `reopen`, `migration`.
    pub cause: &'a str,
    pub actor: &'a str,
    pub reason: &'a str,
    pub request_id: Option<&'a str>,
}

/// SLA position of a dossier in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sla {
    None,
    OnTime(DateTime<Utc>),
    AtRisk(DateTime<Utc>),
    Breached(DateTime<Utc>),
}

impl Store {
    /// The transition already applied for `request_id`, if any.
    pub async fn transition_by_request(
        &self,
        request_id: &str,
    ) -> Result<Option<transition::Model>, DbErr> {
        transition::Entity::find()
            .filter(transition::Column::RequestId.eq(request_id))
            .one(self.db())
            .await
    }

    /// Apply one state change atomically: the dossier row (compare-and-swap
    /// on its revision), the transition record, the timeline entry, timers
    /// cancelled and armed, the event and the audit entry.
    pub async fn apply_transition(&self, c: Change<'_>) -> Result<dossier::Model, TransitionError> {
        self.apply_transition_in(self.db(), c).await
    }

    /// [`Store::apply_transition`] inside the caller's transaction.
    pub async fn apply_transition_in(
        &self,
        conn: &impl Conn,
        c: Change<'_>,
    ) -> Result<dossier::Model, TransitionError> {
        let txn = conn.begin().await?;
        let updated = self.apply_in(&txn, &c).await?;
        txn.commit().await?;
        self.outbox().notify();
        self.actions_due().notify_one();
        Ok(updated)
    }

    pub(crate) async fn apply_in(
        &self,
        txn: &impl ConnectionTrait,
        c: &Change<'_>,
    ) -> Result<dossier::Model, TransitionError> {
        let now = self.now();
        let d = c.dossier;
        let closing = c.def.is_terminal(c.to_state);
        let res = dossier::Entity::update_many()
            .col_expr(dossier::Column::State, Expr::value(c.to_state))
            .col_expr(
                dossier::Column::ProcessVersion,
                Expr::value(c.def.version as i32),
            )
            .col_expr(
                dossier::Column::Revision,
                Expr::col(dossier::Column::Revision).add(1),
            )
            .col_expr(dossier::Column::StateEnteredAt, Expr::value(Some(now)))
            .col_expr(
                dossier::Column::ClosedAt,
                Expr::value(if closing {
                    d.closed_at
                        .filter(|_| c.def.is_terminal(&d.state))
                        .or(Some(now))
                } else {
                    None
                }),
            )
            .col_expr(dossier::Column::UpdatedAt, Expr::value(now))
            .filter(dossier::Column::Id.eq(d.id.clone()))
            .filter(dossier::Column::Revision.eq(d.revision))
            .exec(txn)
            .await?;
        if res.rows_affected == 0 {
            return Err(TransitionError::Conflict);
        }
        transition::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            dossier_id: Set(d.id.clone()),
            from_state: Set(d.state.clone()),
            to_state: Set(c.to_state.to_owned()),
            cause: Set(c.cause.to_owned()),
            actor: Set(c.actor.to_owned()),
            reason: Set(c.reason.to_owned()),
            request_id: Set(c.request_id.map(str::to_owned)),
            created_at: Set(now),
        }
        .insert(txn)
        .await?;
        let from_title = self
            .catalog()
            .get(&d.process_id, d.process_version as u32)
            .and_then(|p| p.state(&d.state).map(|s| s.title.clone()))
            .unwrap_or_else(|| d.state.clone());
        let to_title = c
            .def
            .state(c.to_state)
            .map(|s| s.title.clone())
            .unwrap_or_else(|| c.to_state.to_owned());
        let mut summary = match c.cause {
            "timer" => format!("Changement automatique : {from_title} → {to_title}"),
            "reopen" => format!("Dossier rouvert : {from_title} → {to_title}"),
            "migration" => format!(
                "Dossier passé à la version {} de la démarche : {from_title} → {to_title}",
                c.def.version
            ),
            _ => format!("{from_title} → {to_title}"),
        };
        if !c.reason.trim().is_empty() {
            summary.push_str(&format!(" (motif : {})", c.reason.trim()));
        }
        insert_entry(
            txn,
            NewEntry {
                citizen_id: d.citizen_id.clone(),
                dossier_id: Some(d.id.clone()),
                kind: "state_change".into(),
                channel: "unspecified".into(),
                occurred_at: now,
                summary,
                actor: c.actor.to_owned(),
                source_event_id: None,
            },
            "",
        )
        .await?;
        // Timers belong to a state entry: leaving cancels them, entering arms.
        timer::Entity::update_many()
            .col_expr(timer::Column::CancelledAt, Expr::value(Some(now)))
            .filter(timer::Column::DossierId.eq(d.id.clone()))
            .filter(timer::Column::FiredAt.is_null())
            .filter(timer::Column::CancelledAt.is_null())
            .exec(txn)
            .await?;
        self.arm_timers(txn, &d.id, c.def, c.to_state, d.revision + 1, now)
            .await?;
        // A migration maps the dossier onto a new version without entering
        // the state again: its actions ran when it was entered.
        if c.cause != "migration" {
            self.plan_actions(txn, &d.id, c.def, c.to_state, d.revision + 1, now)
                .await?;
        }
        let event = self.outbox().domain_event(
            "dossier",
            "dossier_state_changed",
            format!("dossiers/{}", d.id),
            &ev::DossierStateChanged {
                dossier_id: d.id.clone(),
                reference: d.reference.clone(),
                process_id: d.process_id.clone(),
                process_version: c.def.version,
                from_state: d.state.clone(),
                to_state: c.to_state.to_owned(),
                actor: c.actor.to_owned(),
                cause: c.cause.to_owned(),
                closed: closing,
                occur_time: Some(guichet_proto::convert::timestamp(now)),
            },
        );
        self.outbox().stage(txn, &event).await?;
        self.audit_in(
            txn,
            c.actor,
            &format!("dossier.{}", c.cause),
            &format!("dossiers/{}", d.id),
            &format!("{} -> {}", d.state, c.to_state),
        )
        .await?;
        dossier::Entity::find_by_id(d.id.clone())
            .one(txn)
            .await?
            .ok_or_else(|| TransitionError::Db(DbErr::RecordNotFound("dossier".into())))
    }

    /// Arm the timers of `state` for the state entry at `revision`.
    pub(crate) async fn arm_timers(
        &self,
        conn: &impl ConnectionTrait,
        dossier_id: &str,
        def: &ProcessDefinition,
        state: &str,
        revision: i64,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        for (index, t) in def.timers_for(state) {
            let due = match (t.after_days, t.after_working_days) {
                (Some(days), _) => now + Duration::days(days as i64),
                (None, Some(days)) => self.calendar().add_working_days(now, days),
                (None, None) => continue,
            };
            timer::ActiveModel {
                id: Set(uuid::Uuid::now_v7().to_string()),
                dossier_id: Set(dossier_id.to_owned()),
                state: Set(state.to_owned()),
                revision: Set(revision),
                timer_index: Set(index as i32),
                kind: Set(t.kind.clone()),
                due_at: Set(due),
                fired_at: Set(None),
                cancelled_at: Set(None),
            }
            .insert(conn)
            .await?;
        }
        Ok(())
    }

    /// Guards of `t` that do not hold for `d`, as French reasons. Reads
    /// only what `t`'s guards look at.
    pub async fn guard_failures(
        &self,
        d: &dossier::Model,
        def: &ProcessDefinition,
        t: &TransitionDefinition,
    ) -> Result<Vec<String>, DbErr> {
        let needs = |g: &str| t.guards.iter().any(|x| x == g);
        let mut facts = Facts::default();
        if needs("checklist_complete") {
            facts.provided_documents = self.provided_document_types(&d.id).await?;
        }
        if needs("citizen_identified") {
            let c = citizen::Entity::find_by_id(d.citizen_id.clone())
                .one(self.db())
                .await?;
            facts.citizen_identified = match &c {
                Some(c) => {
                    !c.family_name.is_empty()
                        && (!c.address_key.is_empty() || self.has_contact_point(&c.id).await?)
                }
                None => false,
            };
        }
        if needs("appointment_booked") {
            facts.appointment_booked = self
                .has_link(&d.id, "appointment", &["cancelled", "no_show"], None)
                .await?;
        }
        if needs("signature_completed") {
            facts.signature_completed = self
                .has_link(&d.id, "signature", &[], Some("signed"))
                .await?;
        }
        if needs("note_present") {
            facts.note_present = timeline::Entity::find()
                .filter(timeline::Column::DossierId.eq(d.id.clone()))
                .filter(timeline::Column::Kind.eq("note"))
                .count(self.db())
                .await?
                > 0;
        }
        Ok(def.guard_failures(&d.state, t, &facts))
    }

    /// Titles of the required checklist documents of the current state not
    /// yet provided.
    pub async fn missing_documents(
        &self,
        d: &dossier::Model,
        def: &ProcessDefinition,
    ) -> Result<Vec<String>, DbErr> {
        let provided = self.provided_document_types(&d.id).await?;
        Ok(def.missing_documents(&d.state, &provided))
    }

    pub async fn provided_document_types(&self, dossier_id: &str) -> Result<Vec<String>, DbErr> {
        Ok(document::Entity::find()
            .filter(document::Column::DossierId.eq(dossier_id))
            .all(self.db())
            .await?
            .into_iter()
            .map(|d| d.document_type)
            .filter(|t| !t.is_empty())
            .collect())
    }

    async fn has_contact_point(&self, citizen_id: &str) -> Result<bool, DbErr> {
        use crate::db::entities::contact;
        Ok(contact::Entity::find()
            .filter(contact::Column::CitizenId.eq(citizen_id))
            .count(self.db())
            .await?
            > 0)
    }

    async fn has_link(
        &self,
        dossier_id: &str,
        kind: &str,
        excluded: &[&str],
        required: Option<&str>,
    ) -> Result<bool, DbErr> {
        let links = link::Entity::find()
            .filter(link::Column::DossierId.eq(dossier_id))
            .filter(link::Column::Kind.eq(kind))
            .all(self.db())
            .await?;
        Ok(links.iter().any(|l| {
            !excluded.contains(&l.status.as_str()) && required.is_none_or(|r| l.status == r)
        }))
    }

    /// Where the dossier stands against its current state's target.
    pub fn sla(&self, d: &dossier::Model, state: Option<&StateDefinition>) -> Sla {
        let Some(state) = state else {
            return Sla::None;
        };
        if state.terminal {
            return Sla::None;
        }
        let entered = d.state_entered_at.unwrap_or(d.updated_at);
        let due = match (state.sla_days, state.sla_working_hours) {
            (Some(days), _) => entered + Duration::days(days as i64),
            (None, Some(h)) => self.calendar().add_working_hours(entered, h),
            (None, None) => return Sla::None,
        };
        let now = self.now();
        if now > due {
            return Sla::Breached(due);
        }
        let total = Ord::max((due - entered).num_seconds(), 1);
        let left = (due - now).num_seconds();
        if left * 5 < total {
            Sla::AtRisk(due)
        } else {
            Sla::OnTime(due)
        }
    }

    /// Fire the timers due at `now` (the store's clock): reminders publish
    /// a `reminder_due` event and a timeline entry; automatic transitions
    /// change the state. Safe with several replicas: a timer is claimed by
    /// an update that only one of them wins. Returns how many fired.
    pub async fn fire_due_timers(&self, limit: u64) -> Result<usize, DbErr> {
        let now = self.now();
        let due = timer::Entity::find()
            .filter(timer::Column::FiredAt.is_null())
            .filter(timer::Column::CancelledAt.is_null())
            .filter(timer::Column::DueAt.lte(now))
            .order_by_asc(timer::Column::DueAt)
            .limit(limit)
            .all(self.db())
            .await?;
        let mut fired = 0;
        for t in due {
            match self.fire_timer(&t, now).await {
                Ok(true) => fired += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(timer_id = %t.id, dossier_id = %t.dossier_id, error = %e, "timer not fired, will retry");
                }
            }
        }
        if fired > 0 {
            metrics::counter!("guichet_dossier_timers_fired_total").increment(fired as u64);
        }
        Ok(fired)
    }

    async fn fire_timer(
        &self,
        t: &timer::Model,
        now: DateTime<Utc>,
    ) -> Result<bool, TransitionError> {
        let txn = self.db().begin().await?;
        // Claim it: only one replica wins.
        let claimed = timer::Entity::update_many()
            .col_expr(timer::Column::FiredAt, Expr::value(Some(now)))
            .filter(timer::Column::Id.eq(t.id.clone()))
            .filter(timer::Column::FiredAt.is_null())
            .filter(timer::Column::CancelledAt.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected == 0 {
            return Ok(false);
        }
        let Some(d) = dossier::Entity::find_by_id(t.dossier_id.clone())
            .one(&txn)
            .await?
        else {
            txn.commit().await?;
            return Ok(false);
        };
        let catalog = self.catalog();
        let def = catalog.get(&d.process_id, d.process_version as u32);
        let timer_def = def.and_then(|p| p.timers.get(t.timer_index as usize));
        let (Some(def), Some(timer_def)) = (def, timer_def) else {
            tracing::warn!(dossier_id = %d.id, "timer of an unknown process version dropped");
            txn.commit().await?;
            return Ok(false);
        };
        // Stale: the dossier left the state the timer was armed for (leaving
        // cancels timers; this guards against a race with that).
        if d.state != t.state {
            txn.commit().await?;
            return Ok(false);
        }
        match timer_def.kind.as_str() {
            "transition" => {
                let to = timer_def.to.clone().unwrap_or_default();
                let reason = timer_def.reason.clone().unwrap_or_default();
                self.apply_in(
                    &txn,
                    &Change {
                        dossier: &d,
                        def,
                        to_state: &to,
                        cause: "timer",
                        actor: "system",
                        reason: &reason,
                        request_id: None,
                    },
                )
                .await?;
            }
            _ => {
                let template = timer_def.template.clone().unwrap_or_default();
                insert_entry(
                    &txn,
                    NewEntry {
                        citizen_id: d.citizen_id.clone(),
                        dossier_id: Some(d.id.clone()),
                        kind: "message_sent".into(),
                        channel: "unspecified".into(),
                        occurred_at: now,
                        summary: format!("Relance automatique de l'usager (modèle « {template} »)"),
                        actor: "system".into(),
                        source_event_id: Some(format!("timer:{}", t.id)),
                    },
                    "",
                )
                .await?;
                let event = self.outbox().domain_event(
                    "dossier",
                    "reminder_due",
                    format!("dossiers/{}", d.id),
                    &ev::ReminderDue {
                        dossier_id: d.id.clone(),
                        citizen_id: d.citizen_id.clone(),
                        template,
                        due_time: Some(guichet_proto::convert::timestamp(t.due_at)),
                    },
                );
                self.outbox().stage(&txn, &event).await?;
            }
        }
        txn.commit().await?;
        self.outbox().notify();
        self.actions_due().notify_one();
        Ok(true)
    }

    /// Open dossiers of one process version, by state.
    pub async fn open_dossiers_of(
        &self,
        process_id: &str,
        version: u32,
    ) -> Result<Vec<dossier::Model>, DbErr> {
        dossier::Entity::find()
            .filter(dossier::Column::ProcessId.eq(process_id))
            .filter(dossier::Column::ProcessVersion.eq(version as i32))
            .filter(dossier::Column::ClosedAt.is_null())
            .order_by_asc(dossier::Column::Id)
            .all(self.db())
            .await
    }

    /// Pending timers of a dossier (for tests and support).
    pub async fn pending_timers(&self, dossier_id: &str) -> Result<Vec<timer::Model>, DbErr> {
        timer::Entity::find()
            .filter(timer::Column::DossierId.eq(dossier_id))
            .filter(timer::Column::FiredAt.is_null())
            .filter(timer::Column::CancelledAt.is_null())
            .order_by_asc(timer::Column::DueAt)
            .all(self.db())
            .await
    }

    /// Record who did what (no personal data in `detail`), with its event.
    pub async fn audit_in(
        &self,
        conn: &impl ConnectionTrait,
        actor: &str,
        action: &str,
        resource: &str,
        detail: &str,
    ) -> Result<(), DbErr> {
        use crate::db::entities::audit;
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        audit::ActiveModel {
            id: Set(id.clone()),
            actor: Set(actor.to_owned()),
            action: Set(action.to_owned()),
            resource: Set(resource.to_owned()),
            detail: Set(detail.to_owned()),
            created_at: Set(now),
        }
        .insert(conn)
        .await?;
        let event = self.outbox().domain_event(
            "dossier",
            "audit_recorded",
            resource.to_owned(),
            &ev::AuditRecorded {
                entry_id: id,
                actor: actor.to_owned(),
                action: action.to_owned(),
                resource: resource.to_owned(),
                occur_time: Some(guichet_proto::convert::timestamp(now)),
            },
        );
        self.outbox().stage(conn, &event).await
    }

    /// Audit outside any other change (e.g. a read of a restricted dossier).
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        resource: &str,
        detail: &str,
    ) -> Result<(), DbErr> {
        let txn = self.db().begin().await?;
        self.audit_in(&txn, actor, action, resource, detail).await?;
        txn.commit().await?;
        self.outbox().notify();
        Ok(())
    }
}
