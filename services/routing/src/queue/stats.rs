//! Live and cumulative queue statistics.

use super::*;

impl Queue {
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
