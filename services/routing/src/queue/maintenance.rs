//! The periodic pass: expire offers, escalate SLAs, age priorities, push offers to available agents.

use super::*;

impl Queue {
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

    pub(super) async fn expire_offers(&self, now: DateTime<Utc>) -> Result<usize, DbErr> {
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

    pub(super) async fn escalate(&self, now: DateTime<Utc>) -> Result<usize, DbErr> {
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

    pub(super) async fn age(&self, now: DateTime<Utc>) -> Result<usize, DbErr> {
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
    pub(super) async fn dispatch(&self, now: DateTime<Utc>) -> Result<usize, DbErr> {
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
}
