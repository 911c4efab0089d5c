//! Changing a booking: citizen cancel and reschedule (behind the link secret), desk-side status changes, and the bookings of an ANTS number.

use super::*;

/// Whether `token` is the booking's link secret (constant time).
fn link_matches(b: &booking::Model, token: &str) -> bool {
    !token.is_empty()
        && token.len() == b.cancel_token.len()
        && guichet_platform::secret::constant_time_eq(token.as_bytes(), b.cancel_token.as_bytes())
}

impl Core {
    /// The booking behind a citizen's link: the secret must match and the
    /// link must not have expired (`manage_link_days` after the
    /// appointment). Any failure is NOT_FOUND, as for an unknown booking,
    /// so the answer tells nothing of which part was wrong.
    pub async fn by_link(&self, id: &str, token: &str) -> Result<booking::Model, Error> {
        let b = booking::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(internal_err("get booking"))?;
        let expired = |b: &booking::Model| {
            self.now() > b.end_at + Duration::days(i64::from(self.config.manage_link_days))
        };
        match b {
            Some(b) if link_matches(&b, token) && !expired(&b) => Ok(b),
            _ => Err(not_found("booking", id)),
        }
    }

    /// Replace the link secret: the old link stops working; the new one
    /// goes to the booking's contacts only (a confirmation message), never
    /// to the caller, so whoever held a leaked link cannot follow it.
    pub async fn revoke_link(
        &self,
        caller: &Caller,
        id: &str,
        token: &str,
        request_id: Option<String>,
    ) -> Result<booking::Model, Error> {
        if let Some(b) = self.replay(&request_id).await? {
            return Ok(b);
        }
        let b = if !token.is_empty() || !caller.agent {
            self.by_link(id, token).await?
        } else {
            self.get(id).await?
        };
        if b.status != BOOKED {
            return Err(failed_precondition(
                "STATUS",
                "booking",
                format!(
                    "the link of a booking in status {} is not renewed",
                    b.status
                ),
            ));
        }
        let txn = self.db.begin().await.map_err(internal_err("revoke link"))?;
        let new_token = random_string(b"abcdefghijkmnopqrstuvwxyz0123456789", 32);
        let res = booking::Entity::update_many()
            .col_expr(booking::Column::CancelToken, Expr::value(new_token.clone()))
            .col_expr(booking::Column::Version, Expr::value(b.version + 1))
            .col_expr(booking::Column::UpdatedAt, Expr::value(self.now()))
            .filter(booking::Column::Id.eq(b.id.as_str()))
            .filter(booking::Column::Version.eq(b.version))
            .exec(&txn)
            .await
            .map_err(internal_err("revoke link"))?;
        if res.rows_affected != 1 {
            return Err(Error::Conflict(
                "the booking changed meanwhile, retry".into(),
            ));
        }
        let mut updated = b.clone();
        updated.cancel_token = new_token;
        updated.version += 1;
        updated.updated_at = self.now();
        self.record_action(&txn, &request_id, &b.id, "revoke_link")
            .await
            .map_err(internal_err("revoke link"))?;
        self.stage_notifications(&txn, &updated, "appointment-confirmation")
            .await
            .map_err(internal_err("revoke link"))?;
        txn.commit().await.map_err(internal_err("revoke link"))?;
        self.outbox.notify();
        tracing::info!(booking_id = %b.id, actor = %caller.subject, "appointment link revoked");
        Ok(updated)
    }

    /// Check the citizen's link secret and the cancellable-until limit.
    pub(super) fn citizen_may_change(&self, b: &booking::Model, token: &str) -> Result<(), Error> {
        if !link_matches(b, token) {
            return Err(Error::Denied("Lien d'annulation invalide.".into()));
        }
        let t = self.kind(&b.type_id, "appointment_type")?;
        if self.now() > b.start_at - Duration::hours(i64::from(t.cancellable_until_hours)) {
            return Err(failed_precondition(
                "CANCELLABLE_UNTIL",
                "booking",
                format!(
                    "Ce rendez-vous ne peut plus être annulé ou déplacé en ligne moins de {} heures avant : contactez la mairie.",
                    t.cancellable_until_hours
                ),
            ));
        }
        Ok(())
    }

    pub async fn cancel(
        &self,
        caller: &Caller,
        id: &str,
        token: &str,
        request_id: Option<String>,
    ) -> Result<booking::Model, Error> {
        if let Some(b) = self.replay(&request_id).await? {
            // A retry may overtake the first attempt's settling.
            self.settle_slot_versions(&[b.desk_id.as_str()]).await;
            return Ok(b);
        }
        let b = self.get(id).await?;
        if b.status == CANCELLED_BY_CITIZEN || b.status == CANCELLED_BY_TOWN {
            self.settle_slot_versions(&[b.desk_id.as_str()]).await;
            return Ok(b);
        }
        if b.status != BOOKED {
            return Err(failed_precondition(
                "STATUS",
                "booking",
                format!("a booking in status {} cannot be cancelled", b.status),
            ));
        }
        let by_citizen = !token.is_empty() || !caller.agent;
        if by_citizen {
            self.citizen_may_change(&b, token)?;
        }
        let status = if by_citizen {
            CANCELLED_BY_CITIZEN
        } else {
            CANCELLED_BY_TOWN
        };
        // Read before the transaction: SQLite has one connection.
        let apps = self.applications(&b.id).await?;
        let txn = self.db.begin().await.map_err(internal_err("cancel"))?;
        let updated = self.set_status(&txn, &b, status).await?;
        self.release(&txn, &b.id)
            .await
            .map_err(internal_err("cancel"))?;
        self.record_action(&txn, &request_id, &b.id, "cancel")
            .await
            .map_err(internal_err("cancel"))?;
        self.after_change(
            &txn,
            &updated,
            "appointment_cancelled",
            &caller.subject,
            None,
        )
        .await
        .map_err(internal_err("cancel"))?;
        self.cancel_reminders(&txn, &b.id)
            .await
            .map_err(internal_err("cancel"))?;
        // The citizen is told, whoever cancelled (a receipt, or the news).
        self.stage_notifications(&txn, &updated, "appointment-cancellation")
            .await
            .map_err(internal_err("cancel"))?;
        let now = self.now();
        for app in &apps {
            self.add_job(&txn, "ants_delete", &b.id, self.ants_payload(&b, app), now)
                .await
                .map_err(internal_err("cancel"))?;
        }
        self.add_job(
            &txn,
            "waitlist",
            &b.id,
            json!({"site": b.site_id, "start": b.start_at.to_rfc3339()}),
            now,
        )
        .await
        .map_err(internal_err("cancel"))?;
        self.bump_slot_versions(&txn, &[b.desk_id.as_str()])
            .await
            .map_err(internal_err("cancel"))?;
        txn.commit()
            .await
            .map_err(|e| self.conflict_or_internal("cancel", e))?;
        self.outbox.notify();
        self.settle_slot_versions(&[b.desk_id.as_str()]).await;
        tracing::info!(booking_id = %b.id, status = status.as_str(), "appointment cancelled");
        Ok(updated)
    }

    pub(super) fn conflict_or_internal(&self, ctx: &str, e: sea_orm::DbErr) -> Error {
        if is_unique_violation(&e) {
            slot_gone()
        } else {
            internal(ctx, e)
        }
    }

    pub async fn reschedule(
        &self,
        caller: &Caller,
        id: &str,
        start: DateTime<Utc>,
        desk_id: Option<String>,
        token: &str,
        request_id: Option<String>,
    ) -> Result<booking::Model, Error> {
        if let Some(b) = self.replay(&request_id).await? {
            // A retry may overtake the first attempt's settling.
            self.settle_slot_versions(&[b.desk_id.as_str()]).await;
            return Ok(b);
        }
        let b = self.get(id).await?;
        if b.status != BOOKED {
            return Err(failed_precondition(
                "STATUS",
                "booking",
                format!("a booking in status {} cannot be moved", b.status),
            ));
        }
        let by_citizen = !token.is_empty() || !caller.agent;
        if by_citizen {
            self.citizen_may_change(&b, token)?;
        }
        let t = self.kind(&b.type_id, "appointment_type")?.clone();
        if by_citizen {
            let (wf, wt) = self.window(&t, false);
            if start < wf || start > wt {
                return Err(failed_precondition(
                    "BOOKING_DELAY",
                    "start_time",
                    format!(
                        "Ce rendez-vous se prend entre {} heures et {} jours à l'avance.",
                        t.min_delay_hours, t.max_delay_days
                    ),
                ));
            }
        }
        if start == b.start_at && desk_id.as_deref().is_none_or(|d| d == b.desk_id) {
            return Ok(b);
        }
        let units = self.model.units_for(&t, b.people as u32);
        let candidates: Vec<_> = match &desk_id {
            Some(d) => self
                .model
                .desk(d)
                .filter(|x| x.site == b.site_id)
                .into_iter()
                .collect(),
            None => {
                // Prefer the same desk.
                let mut v: Vec<_> = self.model.desks_for(&b.site_id, &t).collect();
                v.sort_by_key(|d| d.id != b.desk_id);
                v
            }
        };
        let mut fitting = Vec::new();
        for d in candidates {
            if self.fits(d, start, units).await? {
                fitting.push(d);
            }
        }
        let candidates = fitting;
        if candidates.is_empty() {
            return Err(invalid_argument(
                "start_time",
                "is not an opening slot of this site for this type",
            ));
        }
        let end = start + self.model.slot * (units as i32);
        let apps = self.applications(&b.id).await?;
        for desk in candidates {
            let txn = self.db.begin().await.map_err(internal_err("reschedule"))?;
            self.release(&txn, &b.id)
                .await
                .map_err(internal_err("reschedule"))?;
            match self.claim(&txn, &desk.id, start, units, &b.id).await {
                Ok(()) => {}
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(internal("reschedule", e)),
            }
            let mut am = b.clone().into_active_model();
            am.start_at = Set(start);
            am.end_at = Set(end);
            am.desk_id = Set(desk.id.clone());
            am.version = Set(b.version + 1);
            am.updated_at = Set(self.now());
            let updated = am.update(&txn).await.map_err(internal_err("reschedule"))?;
            self.record_action(&txn, &request_id, &b.id, "reschedule")
                .await
                .map_err(internal_err("reschedule"))?;
            self.after_change(
                &txn,
                &updated,
                "appointment_rescheduled",
                &caller.subject,
                Some(b.start_at),
            )
            .await
            .map_err(internal_err("reschedule"))?;
            self.cancel_reminders(&txn, &b.id)
                .await
                .map_err(internal_err("reschedule"))?;
            self.schedule_reminder(&txn, &updated)
                .await
                .map_err(internal_err("reschedule"))?;
            self.stage_notifications(&txn, &updated, "appointment-confirmation")
                .await
                .map_err(internal_err("reschedule"))?;
            let now = self.now();
            // No update call exists nationally: delete, then declare (jobs
            // run in due time then id order; v7 ids increase in a process).
            for app in &apps {
                self.add_job(&txn, "ants_delete", &b.id, self.ants_payload(&b, app), now)
                    .await
                    .map_err(internal_err("reschedule"))?;
                self.add_job(
                    &txn,
                    "ants_declare",
                    &b.id,
                    self.ants_payload(&updated, app),
                    now,
                )
                .await
                .map_err(internal_err("reschedule"))?;
            }
            self.add_job(
                &txn,
                "waitlist",
                &b.id,
                json!({"site": b.site_id, "start": b.start_at.to_rfc3339()}),
                now,
            )
            .await
            .map_err(internal_err("reschedule"))?;
            self.bump_slot_versions(&txn, &[b.desk_id.as_str(), desk.id.as_str()])
                .await
                .map_err(internal_err("reschedule"))?;
            match txn.commit().await {
                Ok(()) => {}
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(internal("reschedule", e)),
            }
            self.outbox.notify();
            self.settle_slot_versions(&[b.desk_id.as_str(), desk.id.as_str()])
                .await;
            tracing::info!(booking_id = %b.id, "appointment rescheduled");
            return Ok(updated);
        }
        Err(slot_gone())
    }

    /// Desk-side status changes: check-in, seen, no-show.
    pub async fn transition(
        &self,
        caller: &Caller,
        id: &str,
        to: BookingStatus,
    ) -> Result<booking::Model, Error> {
        let b = self.get(id).await?;
        if b.status == to {
            return Ok(b);
        }
        let allowed = match to {
            CHECKED_IN => b.status == BOOKED,
            SEEN => b.status == CHECKED_IN || b.status == BOOKED,
            NO_SHOW => b.status == BOOKED,
            _ => false,
        };
        if !allowed {
            return Err(failed_precondition(
                "STATUS",
                "booking",
                format!("a booking in status {} cannot become {to}", b.status),
            ));
        }
        if to == NO_SHOW && self.now() < b.start_at {
            return Err(failed_precondition(
                "NOT_YET",
                "booking",
                "a booking is a no-show only after its start",
            ));
        }
        let txn = self
            .db
            .begin()
            .await
            .map_err(internal_err("change status"))?;
        let updated = self.set_status(&txn, &b, to).await?;
        self.after_change(
            &txn,
            &updated,
            &format!("appointment_{to}"),
            &caller.subject,
            None,
        )
        .await
        .map_err(internal_err("change status"))?;
        if to == NO_SHOW {
            // The unit stays claimed: the time has passed anyway.
            self.cancel_reminders(&txn, &b.id)
                .await
                .map_err(internal_err("change status"))?;
        }
        txn.commit().await.map_err(internal_err("change status"))?;
        self.outbox.notify();
        tracing::info!(booking_id = %b.id, status = to.as_str(), "appointment status changed");
        Ok(updated)
    }

    pub(super) async fn set_status(
        &self,
        txn: &DatabaseTransaction,
        b: &booking::Model,
        status: BookingStatus,
    ) -> Result<booking::Model, Error> {
        // Optimistic: only from the version we read.
        let res = booking::Entity::update_many()
            .col_expr(booking::Column::Status, Expr::value(status))
            .col_expr(booking::Column::Version, Expr::value(b.version + 1))
            .col_expr(booking::Column::UpdatedAt, Expr::value(self.now()))
            .filter(booking::Column::Id.eq(b.id.as_str()))
            .filter(booking::Column::Version.eq(b.version))
            .exec(txn)
            .await
            .map_err(internal_err("update booking"))?;
        if res.rows_affected != 1 {
            return Err(Error::Conflict(
                "the booking changed meanwhile, retry".into(),
            ));
        }
        let mut m = b.clone();
        m.status = status;
        m.version += 1;
        m.updated_at = self.now();
        Ok(m)
    }

    pub(super) async fn applications(&self, booking_id: &str) -> Result<Vec<String>, Error> {
        let q = Query::select()
            .column(a("application_id"))
            .from(a("booking_applications"))
            .and_where(Expr::col(a("booking_id")).eq(booking_id))
            .to_owned();
        let rows = self
            .db
            .query_all(&q)
            .await
            .map_err(internal_err("read applications"))?;
        Ok(rows
            .iter()
            .filter_map(|r| String::try_get(r, "", "application_id").ok())
            .collect())
    }

    /// Bookings holding one of these pre-application numbers.
    pub async fn bookings_for_application(&self, app: &str) -> Result<Vec<booking::Model>, Error> {
        let q = Query::select()
            .column(a("booking_id"))
            .from(a("booking_applications"))
            .and_where(Expr::col(a("application_id")).eq(app))
            .to_owned();
        let rows = self
            .db
            .query_all(&q)
            .await
            .map_err(internal_err("read applications"))?;
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|r| String::try_get(r, "", "booking_id").ok())
            .collect();
        booking::Entity::find()
            .filter(booking::Column::Id.is_in(ids))
            .filter(booking::Column::Status.eq(BOOKED))
            .order_by_asc(booking::Column::StartAt)
            .all(&self.db)
            .await
            .map_err(internal_err("read bookings"))
    }
}
