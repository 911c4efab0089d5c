//! Delivery reports of the code SMS, recorded in the request's trail.

use super::*;

impl Core {
    /// A `NotificationStatusChanged` of one of our code SMS (id
    /// `signature-code-<code id>`): recorded in the request's trail as
    /// `sms_<status>` (sent, delivered, failed…), once per event id. Other
    /// notifications are ignored.
    pub async fn record_sms_status(
        &self,
        event_id: &str,
        s: &guichet_proto::notification::v1::NotificationStatusChanged,
    ) -> Result<bool, sea_orm::DbErr> {
        let Some(code_id) = s.notification_id.strip_prefix("signature-code-") else {
            return Ok(false);
        };
        let Some(c) = code::Entity::find_by_id(code_id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(false);
        };
        let kind = format!("sms_{}", s.status);
        let detail = format!(
            "notification {} (événement {event_id}){}{}",
            s.notification_id,
            if s.attempts > 0 {
                format!(", tentative {}", s.attempts)
            } else {
                String::new()
            },
            if s.error.is_empty() {
                String::new()
            } else {
                format!(", erreur : {}", s.error)
            }
        );
        let seen = event::Entity::find()
            .filter(event::Column::RequestId.eq(c.request_id.clone()))
            .filter(event::Column::Kind.eq(kind.clone()))
            .filter(event::Column::Detail.eq(detail.clone()))
            .count(&self.db)
            .await?;
        if seen > 0 {
            return Ok(false);
        }
        let outcome =
            if s.status == "failed" || s.status == "dead_lettered" || s.status == "expired" {
                "failed"
            } else {
                "ok"
            };
        self.record(
            &self.db,
            &c.request_id,
            &c.signer_id,
            &kind,
            outcome,
            &Origin {
                actor: "notification".into(),
                ..Default::default()
            },
            &detail,
        )
        .await?;
        Ok(true)
    }
}
