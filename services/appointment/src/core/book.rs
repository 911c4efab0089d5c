//! Booking a slot: the checks (delay, opening, citizen limits), the slot claims that make double booking impossible, and the ANTS numbers.

use super::*;

impl Core {
    pub async fn book(&self, caller: &Caller, nb: NewBooking) -> Result<booking::Model, Error> {
        if let Some(rid) = &nb.request_id
            && let Some(b) = self.by_request(rid).await?
        {
            // A retry may overtake the first attempt's settling.
            self.settle_slot_versions(&[b.desk_id.as_str()]).await;
            return Ok(b);
        }
        let t = self.kind(&nb.type_id, "appointment_type")?.clone();
        if nb.people == 0 || nb.people > t.max_people {
            return Err(invalid_argument(
                "people",
                format!("must be between 1 and {}", t.max_people),
            ));
        }
        if self.model.site(&nb.site_id).is_none() {
            return Err(invalid_argument(
                "site_id",
                format!("`{}` is not a site", nb.site_id),
            ));
        }
        if !caller.agent {
            if !t.public {
                return Err(invalid_argument(
                    "appointment_type",
                    "is booked by an agent only",
                ));
            }
            let (wf, wt) = self.window(&t, false);
            if nb.start < wf || nb.start > wt {
                return Err(failed_precondition(
                    "BOOKING_DELAY",
                    "start_time",
                    format!(
                        "Ce rendez-vous se prend entre {} heures et {} jours à l'avance.",
                        t.min_delay_hours, t.max_delay_days
                    ),
                ));
            }
            if self.config.noshow_max > 0
                && !nb.citizen_id.is_empty()
                && self.recent_no_shows(&nb.citizen_id).await? >= u64::from(self.config.noshow_max)
            {
                return Err(failed_precondition(
                    "NO_SHOW_POLICY",
                    "citizen_id",
                    "Après plusieurs rendez-vous manqués, la prise de rendez-vous se fait auprès d'un agent de la mairie.",
                ));
            }
        }
        if !caller.agent {
            // A number already holding an appointment here is told plainly
            // (the national anti-duplicate API catches those of other towns).
            for app in &nb.application_ids {
                if !self.bookings_for_application(app).await?.is_empty() {
                    return Err(failed_precondition(
                        "APPLICATION_BOOKED",
                        "application_ids",
                        format!(
                            "Le numéro de pré-demande {app} a déjà un rendez-vous : gérez-le depuis le lien reçu, ou annulez-le avant d'en prendre un autre."
                        ),
                    ));
                }
            }
        }
        if !t.ants_reason.is_empty() && nb.application_ids.len() > nb.people as usize {
            return Err(invalid_argument(
                "application_ids",
                "at most one pre-application number per person",
            ));
        }
        let units = self.model.units_for(&t, nb.people);
        let candidates: Vec<_> = match &nb.desk_id {
            Some(d) => {
                let desk = self
                    .model
                    .desk(d)
                    .filter(|x| {
                        x.site == nb.site_id && t.resources.iter().all(|r| x.resources.contains(r))
                    })
                    .ok_or_else(|| {
                        invalid_argument(
                            "desk_id",
                            format!("`{d}` is not a desk of the site for this type"),
                        )
                    })?;
                vec![desk]
            }
            None => self.model.desks_for(&nb.site_id, &t).collect(),
        };
        let mut fitting = Vec::new();
        for d in candidates {
            if self.fits(d, nb.start, units).await? {
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
        let now = self.now();
        let end = nb.start + self.model.slot * (units as i32);
        for desk in candidates {
            // In a rush, attempts on one desk-time in this process take
            // turns; once the first committed, one read turns the others
            // away without a transaction that inserts, waits on the
            // winner's claim and rolls back. Both are hints only: the
            // unique claim key below decides, across replicas too.
            let turn = self.index.turn(&desk.id, nb.start).await;
            if self.claimed(&desk.id, nb.start, units).await? {
                continue;
            }
            let id = uuid::Uuid::now_v7().to_string();
            let txn = self.db.begin().await.map_err(internal_err("book"))?;
            let row = booking::ActiveModel {
                id: Set(id.clone()),
                reference: Set(format!(
                    "RDV-{}",
                    random_string(b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789", 8)
                )),
                request_id: Set(nb.request_id.clone()),
                type_id: Set(t.id.clone()),
                site_id: Set(nb.site_id.clone()),
                desk_id: Set(desk.id.clone()),
                start_at: Set(nb.start),
                end_at: Set(end),
                people: Set(nb.people as i32),
                citizen_id: Set(nb.citizen_id.clone()),
                dossier_id: Set(nb.dossier_id.clone()),
                phone: Set(nb.phone.clone()),
                email: Set(nb.email.clone()),
                status: Set(BOOKED),
                cancel_token: Set(random_string(b"abcdefghijkmnopqrstuvwxyz0123456789", 32)),
                version: Set(1),
                created_at: Set(now),
                updated_at: Set(now),
            };
            let inserted = match row.insert(&txn).await {
                Ok(b) => b,
                Err(e) if is_unique_violation(&e) => {
                    drop(txn);
                    if let Some(rid) = &nb.request_id
                        && let Some(b) = self.by_request(rid).await?
                    {
                        self.settle_slot_versions(&[b.desk_id.as_str()]).await;
                        return Ok(b);
                    }
                    return Err(internal("book", e));
                }
                Err(e) => return Err(internal("book", e)),
            };
            match self.claim(&txn, &desk.id, nb.start, units, &id).await {
                Ok(()) => {}
                Err(e) if is_unique_violation(&e) => {
                    drop(txn);
                    continue;
                }
                Err(e) => return Err(internal("book", e)),
            }
            for app in &nb.application_ids {
                let q = Query::insert()
                    .into_table(a("booking_applications"))
                    .columns([a("application_id"), a("booking_id")])
                    .values_panic([app.as_str().into(), id.as_str().into()])
                    .to_owned();
                txn.execute(&q).await.map_err(internal_err("book"))?;
            }
            self.after_change(&txn, &inserted, "appointment_booked", &caller.subject, None)
                .await
                .map_err(internal_err("book"))?;
            self.stage_notifications(&txn, &inserted, "appointment-confirmation")
                .await
                .map_err(internal_err("book"))?;
            self.schedule_reminder(&txn, &inserted)
                .await
                .map_err(internal_err("book"))?;
            for app in &nb.application_ids {
                self.add_job(
                    &txn,
                    "ants_declare",
                    &id,
                    self.ants_payload(&inserted, app),
                    now,
                )
                .await
                .map_err(internal_err("book"))?;
            }
            self.bump_slot_versions(&txn, &[desk.id.as_str()])
                .await
                .map_err(internal_err("book"))?;
            match txn.commit().await {
                Ok(()) => {}
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(internal("book", e)),
            }
            self.outbox.notify();
            drop(turn);
            self.settle_slot_versions(&[desk.id.as_str()]).await;
            metrics::counter!("guichet_appointment_bookings_total", "type" => t.id.clone())
                .increment(1);
            tracing::info!(booking_id = %id, appointment_type = %t.id, site = %nb.site_id, desk = %desk.id, "appointment booked");
            return Ok(inserted);
        }
        metrics::counter!("guichet_appointment_slot_conflicts_total").increment(1);
        Err(slot_gone())
    }

    pub(super) fn ants_payload(&self, b: &booking::Model, app: &str) -> serde_json::Value {
        let site = self.model.site(&b.site_id);
        json!({
            "application_id": app,
            "meeting_point": site.map(|s| s.name.clone()).unwrap_or_default(),
            "meeting_point_id": b.site_id,
            "appointment_date": to_paris(b.start_at).format("%Y-%m-%dT%H:%M:%S").to_string(),
            "management_url": self.manage_url(b),
        })
    }

    pub fn manage_url(&self, b: &booking::Model) -> String {
        format!(
            "{}/rendez-vous/{}?jeton={}",
            self.config.public_base_url.trim_end_matches('/'),
            b.id,
            b.cancel_token
        )
    }
}
