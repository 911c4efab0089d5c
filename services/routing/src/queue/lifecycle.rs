//! An item's life with an agent: taken or offered, accepted or refused, wrapped up, completed, cancelled, transferred. Every step is one conditional update that exactly one caller wins.

use super::*;

impl Queue {
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
    pub(super) fn spare_capacity_clause(&self, sql: &mut Sql, a: &agent::Model, channel: &str) {
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
    pub(super) async fn lock_agent(
        &self,
        txn: &DatabaseTransaction,
        agent_id: &str,
    ) -> Result<(), DbErr> {
        if txn.get_database_backend() == DbBackend::Postgres {
            let mut sql = Sql::new(DbBackend::Postgres);
            sql.push("SELECT id FROM agents WHERE id = ")
                .bind(agent_id.to_owned())
                .push(" FOR UPDATE");
            txn.query_one_raw(sql.build()).await?;
        }
        Ok(())
    }

    pub(super) async fn agent_assigned(
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
    pub(super) async fn refused(&self, id: &str, what: &str) -> QueueError {
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
    pub(super) async fn step(
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

    pub(super) async fn commit(
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
    pub(super) fn release(
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
}

/// The counter desks: a walk-in's request follows its ticket. The counter's
/// events are the truth of who stands at which desk, so these steps apply
/// from any open state and to whoever held the item.
impl Queue {
    /// The ticket was called by `agent_id` at `at`: its request is theirs
    /// (from the queue, an offer, or the desk that transferred the ticket).
    /// `None` when it already was.
    pub async fn desk_called(
        &self,
        id: &str,
        agent_id: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<work_item::Model>, QueueError> {
        use work_item::Column as C;
        let current = self.get(id).await?.ok_or(QueueError::NotFound)?;
        if current.status == ASSIGNED && current.agent_id.as_deref() == Some(agent_id) {
            return Ok(None);
        }
        if !OPEN.contains(&current.status.as_str()) {
            return Ok(None);
        }
        // The desk's time, not this consumer's: a late delivery does not
        // move the first touch.
        let now = micros(at.unwrap_or_else(|| self.now()).max(current.enter_time));
        let (item, txn) = self
            .step(
                id,
                &OPEN,
                None,
                None,
                vec![
                    (C::Status, Expr::value(ASSIGNED)),
                    (C::AgentId, Expr::value(Some(agent_id.to_owned()))),
                    (C::AssignTime, Expr::value(Some(now))),
                    (C::OfferTime, Expr::value(Option::<DateTime<Utc>>::None)),
                    (C::OfferExpires, Expr::value(Option::<DateTime<Utc>>::None)),
                    (C::UpdatedAt, Expr::value(now)),
                ],
                "assigned",
                "",
                "appelé au guichet",
            )
            .await?;
        self.agent_assigned(&txn, agent_id, now).await?;
        self.commit((item, txn)).await.map(Some)
    }

    /// The visit ended at the desk at `at`: the request is completed with
    /// `outcome` unless it already was closed (the agent completed it from
    /// the fiche with her own words). `None` when nothing changed.
    pub async fn desk_ended(
        &self,
        id: &str,
        agent_id: &str,
        outcome: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<work_item::Model>, QueueError> {
        use work_item::Column as C;
        let current = self.get(id).await?.ok_or(QueueError::NotFound)?;
        if !OPEN.contains(&current.status.as_str()) {
            return Ok(None);
        }
        let now = micros(at.unwrap_or_else(|| self.now()).max(current.enter_time));
        let holder = current
            .agent_id
            .clone()
            .or_else(|| (!agent_id.is_empty()).then(|| agent_id.to_owned()));
        let res = self
            .step(
                id,
                &OPEN,
                None,
                None,
                vec![
                    (C::Status, Expr::value(COMPLETED)),
                    (C::AgentId, Expr::value(holder)),
                    (C::Outcome, Expr::value(Some(outcome.to_owned()))),
                    (C::CompleteTime, Expr::value(Some(now))),
                    (C::OfferExpires, Expr::value(Option::<DateTime<Utc>>::None)),
                    (C::UpdatedAt, Expr::value(now)),
                ],
                "completed",
                "",
                "",
            )
            .await?;
        self.commit(res).await.map(Some)
    }
}

/// What a callback attempt did.
pub struct Attempted {
    pub item: work_item::Model,
    pub attempt: i32,
    pub unanswered: i32,
    pub closed: bool,
}

impl Queue {
    /// Count a callback attempt on `id`, held by `agent_id`: the attempt
    /// `n` (its number, known to the caller) applies once; the request is
    /// completed with `closing` when `unanswered` reaches the town's limit.
    pub async fn callback_attempt(
        &self,
        id: &str,
        agent_id: &str,
        n: i32,
        answered: bool,
        closing: &str,
    ) -> Result<Attempted, QueueError> {
        use work_item::Column as C;
        let current = self.get(id).await?.ok_or(QueueError::NotFound)?;
        let unanswered = current.callback_unanswered + i32::from(!answered);
        let close = !answered && unanswered >= self.settings.callback_attempts;
        let now = self.now();
        let mut update = vec![
            (C::CallbackAttempts, Expr::value(n)),
            (C::CallbackUnanswered, Expr::value(unanswered)),
            (C::UpdatedAt, Expr::value(now)),
        ];
        let only_once = Condition::all().add(C::CallbackAttempts.eq(n - 1));
        if close {
            update.extend([
                (C::Status, Expr::value(COMPLETED)),
                (C::Outcome, Expr::value(Some(closing.to_owned()))),
                (C::CompleteTime, Expr::value(Some(now))),
            ]);
            let res = self
                .step(
                    id,
                    &[ASSIGNED, WRAPPING],
                    Some(agent_id),
                    Some(only_once),
                    update,
                    "completed",
                    "",
                    "",
                )
                .await?;
            let item = self.commit(res).await?;
            return Ok(Attempted {
                item,
                attempt: n,
                unanswered,
                closed: true,
            });
        }
        let mut q = work_item::Entity::update_many()
            .filter(C::Id.eq(id))
            .filter(C::Status.is_in([ASSIGNED, WRAPPING]))
            .filter(C::AgentId.eq(agent_id))
            .filter(only_once);
        for (col, v) in update {
            q = q.col_expr(col, v);
        }
        if q.exec(&self.db).await?.rows_affected == 0 {
            return Err(self.refused(id, "Rappel").await);
        }
        self.changed();
        let item = self.get(id).await?.ok_or(QueueError::NotFound)?;
        Ok(Attempted {
            item,
            attempt: n,
            unanswered,
            closed: false,
        })
    }
}
