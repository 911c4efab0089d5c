//! What a change carries out of the booking row: its domain event, the jobs, the reminders and the notifications staged with it.

use super::*;

impl Core {
    /// The event, and the dossier link job when the booking has a dossier.
    pub(super) async fn after_change(
        &self,
        txn: &DatabaseTransaction,
        b: &booking::Model,
        ty: &str,
        actor: &str,
        previous: Option<DateTime<Utc>>,
    ) -> Result<(), sea_orm::DbErr> {
        let ev = AppointmentChanged {
            booking_id: b.id.clone(),
            reference: b.reference.clone(),
            status: b.status.as_str().to_owned(),
            appointment_type: b.type_id.clone(),
            site_id: b.site_id.clone(),
            desk_id: b.desk_id.clone(),
            start_time: Some(timestamp(b.start_at)),
            end_time: Some(timestamp(b.end_at)),
            citizen_id: b.citizen_id.clone(),
            dossier_id: b.dossier_id.clone(),
            people: b.people as u32,
            actor: actor.to_owned(),
            version: b.version as u32,
            previous_start_time: previous.map(timestamp),
            occurred_time: Some(timestamp(self.now())),
        };
        let staged = self
            .outbox
            .domain_event("appointment", ty, format!("bookings/{}", b.id), &ev);
        self.outbox.stage(txn, &staged).await?;
        if !b.dossier_id.is_empty() {
            let status = match b.status {
                SEEN => "done",
                CANCELLED_BY_CITIZEN | CANCELLED_BY_TOWN => "cancelled",
                // Moved to another slot: the dossier's timeline says so.
                BOOKED if previous.is_some() => "rescheduled",
                s => s.as_str(),
            };
            self.add_job(
                txn,
                "dossier_link",
                &b.id,
                json!({"dossier_id": b.dossier_id, "status": status, "at": b.updated_at.to_rfc3339()}),
                self.now(),
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn add_job(
        &self,
        txn: &impl ConnectionTrait,
        kind: &str,
        booking_id: &str,
        payload: serde_json::Value,
        due: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        durable::add(
            txn,
            durable::NewJob {
                kind,
                subject: booking_id,
                payload: payload.to_string(),
                run_at: due,
            },
        )
        .await
    }

    pub(super) async fn schedule_reminder(
        &self,
        txn: &DatabaseTransaction,
        b: &booking::Model,
    ) -> Result<(), sea_orm::DbErr> {
        if self.config.reminder_hours_before == 0 {
            return Ok(());
        }
        let due = b.start_at - Duration::hours(i64::from(self.config.reminder_hours_before));
        if due <= self.now() {
            // Booked inside the reminder window: the confirmation is enough.
            return Ok(());
        }
        self.add_job(
            txn,
            "reminder",
            &b.id,
            json!({"version": b.version, "start": b.start_at.to_rfc3339()}),
            due,
        )
        .await
    }

    pub(super) async fn cancel_reminders(
        &self,
        txn: &DatabaseTransaction,
        booking_id: &str,
    ) -> Result<(), sea_orm::DbErr> {
        durable::cancel(txn, "reminder", booking_id).await?;
        Ok(())
    }

    /// Stage one NotificationRequest per configured channel the booking has
    /// a contact for. Ids are stable per booking version: a replay is
    /// dropped by JetStream and by the notification role. The wording is
    /// the notification role's template (`templates/<template>.toml`); this
    /// role sends only the booking's variables.
    pub(super) async fn stage_notifications(
        &self,
        txn: &DatabaseTransaction,
        b: &booking::Model,
        template: &str,
    ) -> Result<(), sea_orm::DbErr> {
        // A cancellation by the town has its own wording (an apology).
        let wording = if template == CANCELLATION && b.status == CANCELLED_BY_TOWN {
            CANCELLATION_BY_TOWN
        } else {
            template
        };
        for channel in &self.config.notify_channels {
            let target = match channel.as_str() {
                "sms" => b.phone.clone().map(notification_request::Target::Phone),
                _ => b.email.clone().map(notification_request::Target::Email),
            };
            let Some(target) = target else { continue };
            let mut variables = self.message_variables(b);
            // Emails carry the appointment as an .ics attachment
            // (text/calendar, rendez-vous.ics).
            if channel == "email" {
                variables.insert("ics".to_owned(), self.booking_ics(b));
            }
            let id = format!(
                "appointment-{}-{}-v{}-{}",
                b.id, template, b.version, channel
            );
            self.stage_notification(txn, &id, target, wording, &b.id, &b.dossier_id, variables)
                .await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn stage_notification(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        target: notification_request::Target,
        template: &str,
        subject_id: &str,
        dossier_id: &str,
        variables: HashMap<String, String>,
    ) -> Result<(), sea_orm::DbErr> {
        let req = NotificationRequest {
            id: id.to_owned(),
            target: Some(target),
            template: template.to_owned(),
            variables,
            dossier_id: dossier_id.to_owned(),
            requested_by: "appointment".to_owned(),
            ..Default::default()
        };
        let staged = self.outbox.notification_request(
            "appointment",
            &req,
            format!("bookings/{subject_id}"),
            self.now(),
        );
        self.outbox.stage(txn, &staged).await
    }

    /// The variables of a booking message (the templates
    /// `appointment-confirmation`, `-reminder`, `-cancellation` and
    /// `-cancellation-by-town` use them).
    pub fn message_variables(&self, b: &booking::Model) -> HashMap<String, String> {
        let t = self
            .model
            .kind(&b.type_id)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let (site, address) = self
            .model
            .site(&b.site_id)
            .map(|s| {
                (
                    s.name.clone(),
                    format!("{}, {} {}", s.address, s.zip_code, s.city),
                )
            })
            .unwrap_or_default();
        let (day, hour) = french_date_time(b.start_at);
        HashMap::from([
            ("town_name".to_owned(), self.config.town.hall()),
            ("appointment_type".to_owned(), t),
            ("day".to_owned(), day),
            ("hour".to_owned(), hour),
            ("site".to_owned(), site),
            ("address".to_owned(), address),
            ("reference".to_owned(), b.reference.clone()),
            ("link".to_owned(), self.manage_url(b)),
        ])
    }
}

/// The template of a cancellation message.
pub(super) const CANCELLATION: &str = "appointment-cancellation";
/// The template of a cancellation the town made.
pub(super) const CANCELLATION_BY_TOWN: &str = "appointment-cancellation-by-town";

impl Core {
    /// Sample availability for the indicators (`appointment_availability_sampled`):
    /// for every public type and every site that offers it, the next free
    /// slot of the public booking window, and the site's schedule units open
    /// and claimed this Paris day. Run every `availability_sample_minutes`
    /// by the job loop; returns how many samples were staged.
    pub async fn sample_availability(&self) -> Result<usize, Error> {
        use guichet_platform::calendar::from_paris;
        use guichet_proto::events::v1::AvailabilitySampled;
        let now = self.now();
        let today = to_paris(now).date();
        let day_start = from_paris(today.and_hms_opt(0, 0, 0).unwrap_or_default());
        let day_end = from_paris(
            (today + Duration::days(1))
                .and_hms_opt(0, 0, 0)
                .unwrap_or_default(),
        );
        let mut samples = Vec::new();
        for site in &self.model.sites {
            let desks: Vec<_> = self
                .model
                .desks
                .iter()
                .filter(|d| d.site == site.id)
                .collect();
            let ids: Vec<&str> = desks.iter().map(|d| d.id.as_str()).collect();
            let (taken, ex) = tokio::try_join!(
                self.taken(&self.db, &ids, day_start, day_end),
                self.exceptions(&ids, day_start, day_end)
            )?;
            let (mut open_units, mut taken_units) = (0u32, 0u32);
            for d in &desks {
                let mut open = self.model.open_units(d, day_start, day_end);
                self.apply_exceptions(&d.id, &mut open, &ex, day_start, day_end);
                open_units += open.len() as u32;
                if let Some(t) = taken.get(&d.id) {
                    taken_units += t.intersection(&open).count() as u32;
                }
            }
            for t in self.model.types.iter().filter(|t| t.public) {
                if self.model.desks_for(&site.id, t).next().is_none() {
                    continue;
                }
                let (from, to) = self.window(t, false);
                let next = self
                    .availability(
                        &t.id,
                        std::slice::from_ref(&site.id),
                        1,
                        from,
                        to,
                        1,
                        false,
                        false,
                    )
                    .await?;
                samples.push(AvailabilitySampled {
                    appointment_type: t.id.clone(),
                    site_id: site.id.clone(),
                    sampled_time: Some(timestamp(now)),
                    next_free_time: next.first().map(|s| timestamp(s.start)),
                    day: today.format("%Y-%m-%d").to_string(),
                    open_units,
                    taken_units,
                });
            }
        }
        if samples.is_empty() {
            return Ok(0);
        }
        let txn = self
            .db
            .begin()
            .await
            .map_err(internal_err("sample availability"))?;
        for s in &samples {
            let staged = self.outbox.domain_event(
                "appointment",
                "appointment_availability_sampled",
                format!("sites/{}", s.site_id),
                s,
            );
            self.outbox
                .stage(&txn, &staged)
                .await
                .map_err(internal_err("sample availability"))?;
        }
        txn.commit()
            .await
            .map_err(internal_err("sample availability"))?;
        self.outbox.notify();
        Ok(samples.len())
    }
}
