//! The job runner: reminders, dossier links, ANTS coordination and waiting-list offers, retried until they succeed.

use super::*;

/// Appointment's jobs: delays from 2 s doubling up to 256 s, given up after
/// 100 failed runs (about 7 hours), 200 taken per pass.
fn job_policy() -> durable::Policy {
    durable::Policy {
        batch: 200,
        ..durable::Policy::default()
    }
}

impl Core {
    /// Run every job due now; returns how many were handled. Called by the
    /// role's loop, and by tests after moving a manual clock.
    pub async fn run_due_jobs(&self) -> Result<usize, sea_orm::DbErr> {
        let runner = durable::Runner::new(self.db.clone(), "appointment", job_policy());
        let handled = runner
            .run_due(self.now(), |j| async move {
                match j.kind.as_str() {
                    "reminder" => self.job_reminder(&j).await,
                    "waitlist" => self.job_waitlist(&j).await,
                    "waitlist_join" => self.job_waitlist_join(&j).await,
                    "dossier_link" => self.job_dossier(&j).await,
                    "ants_declare" | "ants_delete" => self.job_ants(&j).await,
                    other => Err(Failure::permanent(format!("unknown job kind {other}"))),
                }
            })
            .await?;
        if handled > 0 {
            self.outbox.notify();
        }
        Ok(handled)
    }

    /// Mark a job done inside `txn`; false when another runner did it first.
    pub(super) async fn take_job(
        &self,
        txn: &impl ConnectionTrait,
        id: &str,
    ) -> Result<bool, sea_orm::DbErr> {
        durable::complete(txn, id).await
    }

    pub(super) async fn job_reminder(&self, j: &durable::Job) -> Result<(), Failure> {
        let b = self.get(&j.subject).await.map_err(Failure::transient)?;
        let txn = self.db.begin().await.map_err(Failure::transient)?;
        if !self
            .take_job(&txn, &j.id)
            .await
            .map_err(Failure::transient)?
        {
            return Ok(());
        }
        if b.status == BOOKED && b.start_at > self.now() {
            self.stage_notifications(&txn, &b, "appointment-reminder")
                .await
                .map_err(Failure::transient)?;
        }
        txn.commit().await.map_err(Failure::transient)?;
        tracing::info!(booking_id = %b.id, "reminder staged");
        Ok(())
    }

    pub(super) async fn job_dossier(&self, j: &durable::Job) -> Result<(), Failure> {
        let p: serde_json::Value =
            serde_json::from_str(&j.payload).map_err(|e| Failure::permanent(e.to_string()))?;
        let dossier_id = p["dossier_id"].as_str().unwrap_or_default();
        let status = p["status"].as_str().unwrap_or_default();
        // Jobs written before `at` existed: the time of the call.
        let at = p["at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| self.now());
        match self
            .dossier
            .link_at(dossier_id, &j.subject, status, at)
            .await
        {
            Ok(()) => {}
            Err(s) if !s.is_transient() => {
                return Err(Failure::permanent(format!(
                    "dossier refused the link: {}",
                    s.message()
                )));
            }
            Err(s) => return Err(Failure::transient(s.message())),
        }
        self.take_job(&self.db, &j.id)
            .await
            .map_err(Failure::transient)?;
        Ok(())
    }

    pub(super) async fn job_ants(&self, j: &durable::Job) -> Result<(), Failure> {
        let a: AntsAppointment =
            serde_json::from_str(&j.payload).map_err(|e| Failure::permanent(e.to_string()))?;
        let res = if j.kind == "ants_declare" {
            self.coordination.declare(&a).await
        } else {
            self.coordination.delete(&a).await
        };
        res.map_err(Failure::transient)?;
        self.take_job(&self.db, &j.id)
            .await
            .map_err(Failure::transient)?;
        Ok(())
    }

    /// A slot freed up (a booking cancelled or moved; the job's subject):
    /// offer that very slot, while it is still free, to the best-placed
    /// waiting citizen — same appointment type, the slot's site among
    /// theirs, the slot before the date they want it before, in the order
    /// they joined, within the daily and total message quota. Nobody else
    /// hears of it during `waitlist_hold_minutes`; then, if the slot is
    /// still free, it goes to the next one (the job again, the citizens
    /// already offered it skipped).
    pub(super) async fn job_waitlist(&self, j: &durable::Job) -> Result<(), Failure> {
        #[derive(serde::Deserialize)]
        struct Freed {
            site: String,
            start: DateTime<Utc>,
            #[serde(default)]
            skip: Vec<String>,
        }
        let freed: Freed =
            serde_json::from_str(&j.payload).map_err(|e| Failure::permanent(e.to_string()))?;
        let now = self.now();
        let booking = booking::Entity::find_by_id(j.subject.clone())
            .one(&self.db)
            .await
            .map_err(Failure::transient)?;
        let Some(type_id) = booking.map(|b| b.type_id) else {
            return self.finish_job(&j.id).await;
        };
        if freed.start <= now {
            return self.finish_job(&j.id).await;
        }
        let today = to_paris(now).date().format("%Y-%m-%d").to_string();
        let waiters = waiter::Entity::find()
            .filter(waiter::Column::Active.eq(true))
            .filter(waiter::Column::TypeId.eq(type_id.as_str()))
            .filter(waiter::Column::BeforeAt.gt(freed.start))
            .filter(waiter::Column::MessagesSent.lt(self.config.waitlist_max_messages as i32))
            .filter(waiter::Column::LastMessageDay.ne(today.as_str()))
            .order_by_asc(waiter::Column::CreatedAt)
            .order_by_asc(waiter::Column::Id)
            .all(&self.db)
            .await
            .map_err(Failure::transient)?;
        // Find the offer before the transaction: SQLite has one connection.
        let mut offer = None;
        for w in waiters {
            if freed.skip.contains(&w.id) {
                continue;
            }
            let sites: Vec<&str> = w.site_ids.split(',').filter(|s| !s.is_empty()).collect();
            if !sites.is_empty() && !sites.contains(&freed.site.as_str()) {
                continue;
            }
            // Still free, for as many people as this citizen comes with.
            let slots = self
                .availability(
                    &type_id,
                    std::slice::from_ref(&freed.site),
                    w.people as u32,
                    freed.start,
                    // A slot must end within the range: the day is enough.
                    freed.start + Duration::days(1),
                    50,
                    true,
                    false,
                )
                .await
                .unwrap_or_default();
            if let Some(slot) = slots.into_iter().find(|s| s.start == freed.start) {
                offer = Some((w, slot));
                break;
            }
        }
        let txn = self.db.begin().await.map_err(Failure::transient)?;
        if !self
            .take_job(&txn, &j.id)
            .await
            .map_err(Failure::transient)?
        {
            return Ok(());
        }
        if let Some((w, slot)) = offer {
            let mut skip = freed.skip.clone();
            skip.push(w.id.clone());
            self.offer_slot(&txn, &w, &slot, &today)
                .await
                .map_err(Failure::transient)?;
            // The next one, after the hold, if nobody took it.
            self.add_job(
                &txn,
                "waitlist",
                &j.subject,
                json!({"site": freed.site, "start": freed.start.to_rfc3339(), "skip": skip}),
                now + Duration::minutes(i64::from(self.config.waitlist_hold_minutes)),
            )
            .await
            .map_err(Failure::transient)?;
        }
        txn.commit().await.map_err(Failure::transient)?;
        Ok(())
    }

    /// A citizen joined the waiting list (the job's subject): offer them
    /// the earliest free slot in their window at once, if there is one.
    pub(super) async fn job_waitlist_join(&self, j: &durable::Job) -> Result<(), Failure> {
        let now = self.now();
        let today = to_paris(now).date().format("%Y-%m-%d").to_string();
        let Some(w) = waiter::Entity::find_by_id(j.subject.clone())
            .filter(waiter::Column::Active.eq(true))
            .filter(waiter::Column::BeforeAt.gt(now))
            .filter(waiter::Column::MessagesSent.lt(self.config.waitlist_max_messages as i32))
            .filter(waiter::Column::LastMessageDay.ne(today.as_str()))
            .one(&self.db)
            .await
            .map_err(Failure::transient)?
        else {
            return self.finish_job(&j.id).await;
        };
        let sites: Vec<String> = w
            .site_ids
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let slot = self
            .availability(
                &w.type_id,
                &sites,
                w.people as u32,
                now,
                w.before_at,
                1,
                true,
                false,
            )
            .await
            .unwrap_or_default()
            .into_iter()
            .next();
        let txn = self.db.begin().await.map_err(Failure::transient)?;
        if !self
            .take_job(&txn, &j.id)
            .await
            .map_err(Failure::transient)?
        {
            return Ok(());
        }
        if let Some(slot) = slot {
            self.offer_slot(&txn, &w, &slot, &today)
                .await
                .map_err(Failure::transient)?;
        }
        txn.commit().await.map_err(Failure::transient)?;
        Ok(())
    }

    async fn finish_job(&self, id: &str) -> Result<(), Failure> {
        self.take_job(&self.db, id)
            .await
            .map_err(Failure::transient)?;
        Ok(())
    }

    /// Stage the offer of `slot` to `w` (worded by the template
    /// appointment-waitlist-offer), counted in their quota; nothing when a
    /// concurrent runner already sent them one today.
    async fn offer_slot(
        &self,
        txn: &DatabaseTransaction,
        w: &waiter::Model,
        slot: &FreeSlot,
        today: &str,
    ) -> Result<(), sea_orm::DbErr> {
        let sent = w.messages_sent + 1;
        let t = self
            .model
            .kind(&w.type_id)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let site = self
            .model
            .site(&slot.site)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let (day, hour) = french_date_time(slot.start);
        let link = format!(
            "{}/rendez-vous/nouveau?type={}&site={}&debut={}&personnes={}",
            self.config.public_base_url.trim_end_matches('/'),
            w.type_id,
            slot.site,
            slot.start.format("%Y-%m-%dT%H:%M:%SZ"),
            Ord::max(w.people, 1)
        );
        let variables = HashMap::from([
            ("town_name".to_owned(), self.config.town.hall()),
            ("appointment_type".to_owned(), t),
            ("day".to_owned(), day),
            ("hour".to_owned(), hour),
            ("site".to_owned(), site),
            ("link".to_owned(), link),
            ("sent".to_owned(), sent.to_string()),
            (
                "max".to_owned(),
                self.config.waitlist_max_messages.to_string(),
            ),
        ]);
        // Conditional: a concurrent runner cannot make it two today.
        let claimed = waiter::Entity::update_many()
            .col_expr(waiter::Column::MessagesSent, Expr::value(sent))
            .col_expr(
                waiter::Column::LastMessageDay,
                Expr::value(today.to_owned()),
            )
            .filter(waiter::Column::Id.eq(w.id.as_str()))
            .filter(waiter::Column::MessagesSent.eq(w.messages_sent))
            .filter(waiter::Column::LastMessageDay.ne(today))
            .exec(txn)
            .await?;
        if claimed.rows_affected != 1 {
            return Ok(());
        }
        let target = w
            .phone
            .clone()
            .map(notification_request::Target::Phone)
            .or_else(|| w.email.clone().map(notification_request::Target::Email));
        if let Some(target) = target {
            let id = format!("waitlist-{}-{}", w.id, sent);
            self.stage_notification(
                txn,
                &id,
                target,
                "appointment-waitlist-offer",
                &w.id,
                "",
                variables,
            )
            .await?;
        }
        tracing::info!(waiter_id = %w.id, sent, "waiting list offer staged");
        Ok(())
    }
}
