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

    /// A slot freed up: offer it to waiting citizens who want an earlier
    /// one, at most one message a day and `waitlist_max_messages` in all.
    pub(super) async fn job_waitlist(&self, j: &durable::Job) -> Result<(), Failure> {
        let now = self.now();
        let today = to_paris(now).date().format("%Y-%m-%d").to_string();
        let waiters = waiter::Entity::find()
            .filter(waiter::Column::Active.eq(true))
            .filter(waiter::Column::BeforeAt.gt(now))
            .filter(waiter::Column::MessagesSent.lt(self.config.waitlist_max_messages as i32))
            .filter(waiter::Column::LastMessageDay.ne(today.as_str()))
            .all(&self.db)
            .await
            .map_err(Failure::transient)?;
        // Find offers before the transaction: SQLite has one connection.
        let mut offers = Vec::new();
        for w in waiters {
            let sites: Vec<String> = w
                .site_ids
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let slots = match self
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
            {
                Ok(s) => s,
                Err(_) => continue,
            };
            if let Some(slot) = slots.into_iter().next() {
                offers.push((w, slot));
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
        for (w, slot) in offers {
            let slot = &slot;
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
                "{}/rendez-vous/nouveau?type={}&site={}&debut={}",
                self.config.public_base_url.trim_end_matches('/'),
                w.type_id,
                slot.site,
                slot.start.format("%Y-%m-%dT%H:%M:%SZ")
            );
            // Worded by the template appointment-waitlist-offer.
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
                .col_expr(waiter::Column::LastMessageDay, Expr::value(today.clone()))
                .filter(waiter::Column::Id.eq(w.id.as_str()))
                .filter(waiter::Column::MessagesSent.eq(w.messages_sent))
                .filter(waiter::Column::LastMessageDay.ne(today.as_str()))
                .exec(&txn)
                .await
                .map_err(Failure::transient)?;
            if claimed.rows_affected != 1 {
                continue;
            }
            let target = w
                .phone
                .clone()
                .map(notification_request::Target::Phone)
                .or_else(|| w.email.clone().map(notification_request::Target::Email));
            if let Some(target) = target {
                let id = format!("waitlist-{}-{}", w.id, sent);
                self.stage_notification(
                    &txn,
                    &id,
                    target,
                    "appointment-waitlist-offer",
                    &w.id,
                    "",
                    variables,
                )
                .await
                .map_err(Failure::transient)?;
            }
            tracing::info!(waiter_id = %w.id, sent, "waiting list offer staged");
        }
        txn.commit().await.map_err(Failure::transient)?;
        Ok(())
    }
}
