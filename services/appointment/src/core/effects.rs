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
        };
        let staged = self
            .outbox
            .domain_event("appointment", ty, format!("bookings/{}", b.id), &ev);
        self.outbox.stage(txn, &staged).await?;
        if !b.dossier_id.is_empty() {
            let status = match b.status {
                SEEN => "done",
                CANCELLED_BY_CITIZEN | CANCELLED_BY_TOWN => "cancelled",
                s => s.as_str(),
            };
            self.add_job(
                txn,
                "dossier_link",
                &b.id,
                json!({"dossier_id": b.dossier_id, "status": status}),
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
    /// dropped by JetStream and by the notification role.
    pub(super) async fn stage_notifications(
        &self,
        txn: &DatabaseTransaction,
        b: &booking::Model,
        template: &str,
    ) -> Result<(), sea_orm::DbErr> {
        let text = self.render(b, template);
        for channel in &self.config.notify_channels {
            let target = match channel.as_str() {
                "sms" => b.phone.clone().map(notification_request::Target::Phone),
                _ => b.email.clone().map(notification_request::Target::Email),
            };
            let Some(target) = target else { continue };
            // Emails carry the appointment as an .ics attachment.
            let ics = (channel == "email").then(|| self.booking_ics(b));
            let id = format!(
                "appointment-{}-{}-v{}-{}",
                b.id, template, b.version, channel
            );
            self.stage_notification(
                txn,
                &id,
                target,
                template,
                &b.id,
                &b.dossier_id,
                &text,
                &self.manage_url(b),
                ics,
            )
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
        text: &str,
        link: &str,
        ics: Option<String>,
    ) -> Result<(), sea_orm::DbErr> {
        let mut variables = std::collections::HashMap::new();
        variables.insert("text".to_owned(), text.to_owned());
        variables.insert("link".to_owned(), link.to_owned());
        if let Some(ics) = ics {
            // text/calendar attachment (rendez-vous.ics) for email.
            variables.insert("ics".to_owned(), ics);
        }
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

    /// The French text of a booking message.
    pub fn render(&self, b: &booking::Model, template: &str) -> String {
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
        let link = self.manage_url(b);
        match template {
            "appointment-reminder" => format!(
                "{town} – Rappel : rendez-vous « {t} » le {day} à {hour}, {site} ({address}). Référence {r}. Empêché(e) ? Annulez ou déplacez votre rendez-vous : {link}",
                town = self.config.town_name,
                r = b.reference
            ),
            "appointment-cancellation" if b.status == CANCELLED_BY_TOWN => format!(
                "{town} – Nous sommes désolés : votre rendez-vous « {t} » du {day} à {hour}, {site}, est annulé par la mairie. Référence {r}. Reprenez rendez-vous en ligne ou contactez la mairie.",
                town = self.config.town_name,
                r = b.reference
            ),
            "appointment-cancellation" => format!(
                "{town} – Votre rendez-vous « {t} » du {day} à {hour}, {site}, est bien annulé. Référence {r}.",
                town = self.config.town_name,
                r = b.reference
            ),
            _ => format!(
                "{town} – Votre rendez-vous « {t} » est confirmé le {day} à {hour}, {site} ({address}). Référence {r}. Pour annuler ou déplacer : {link}",
                town = self.config.town_name,
                r = b.reference
            ),
        }
    }
}
