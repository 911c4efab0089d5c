//! Routing tells which dossier each email went to (`work_item_enqueued`,
//! with the dossier reference and how it was found). The message's record
//! learns its dossier (so later replies thread to it), and a message that
//! opened a NEW dossier gets one automatic acknowledgement, unless it is
//! automatic mail, comes from an address that must never be answered, or
//! the dossier had one within `email.ack_period_secs`.

use std::collections::HashMap;

use guichet_platform::bus::{HandlerError, IncomingEvent, StreamKind};
use guichet_platform::db::is_unique_violation;
use guichet_platform::outbox::Staged;
use guichet_proto::events::v1::WorkItemChanged;
use guichet_proto::notification::v1::{NotificationRequest, notification_request};
use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};
use tokio_util::sync::CancellationToken;

use crate::EmailApi;
use crate::db::entities::email_message;

pub const ACK_TEMPLATE: &str = "email-accuse-reception";
pub const REPLY_TEMPLATE: &str = "email-reponse-agent";

pub async fn run(api: EmailApi, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = api.outbox.bus().clone();
    let filter = bus.event_subject("routing", "work_item_enqueued");
    bus.consume(
        StreamKind::Events,
        "ingress-email-acks",
        filter,
        1,
        shutdown,
        move |ev| {
            let api = api.clone();
            async move { api.on_enqueued(ev).await }
        },
    )
    .await?;
    Ok(())
}

/// Senders that never get an automatic answer.
pub fn never_answer(address: &str, extra: &[String]) -> bool {
    let a = address.trim().to_lowercase();
    let Some((local, _)) = a.split_once('@') else {
        return true;
    };
    let local = local.split('+').next().unwrap_or(local);
    [
        "mailer-daemon",
        "postmaster",
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "bounce",
        "bounces",
    ]
    .contains(&local)
        || local.starts_with("noreply")
        || local.starts_with("no-reply")
        || extra.iter().any(|e| e.eq_ignore_ascii_case(local))
}

impl EmailApi {
    pub(crate) async fn on_enqueued(&self, ev: IncomingEvent) -> Result<(), HandlerError> {
        let item = WorkItemChanged::decode(ev.body)
            .map_err(|e| HandlerError::Permanent(format!("undecodable work item event: {e}")))?;
        if item.channel != "email" || item.dossier_id.is_empty() {
            return Ok(());
        }
        let transient = |e: sea_orm::DbErr| HandlerError::Transient(format!("database: {e}"));
        let Some(msg) = email_message::Entity::find()
            .filter(email_message::Column::IntakeEventId.eq(item.intake_event_id.clone()))
            .one(&self.db)
            .await
            .map_err(transient)?
        else {
            // Another email ingress (or a test) published it: not ours.
            return Ok(());
        };
        let txn = self.db.begin().await.map_err(transient)?;
        email_message::Entity::update_many()
            .col_expr(
                email_message::Column::DossierId,
                Expr::value(item.dossier_id.clone()),
            )
            .col_expr(
                email_message::Column::DossierReference,
                Expr::value(item.dossier_reference.clone()),
            )
            .col_expr(
                email_message::Column::UpdatedAt,
                Expr::value(self.clock.now()),
            )
            .filter(email_message::Column::Id.eq(msg.id.clone()))
            .exec(&txn)
            .await
            .map_err(transient)?;
        let mut staged = None;
        if item.correlation == "new" {
            let skip = if msg.auto_submitted || msg.bounce {
                Some("automatic")
            } else if never_answer(&msg.from_address, &self.config.no_ack_local_parts) {
                Some("no_reply_address")
            } else if self.config.accepts(&msg.from_address) {
                // Mail from the city's own domains (a colleague, or our own
                // mail coming back): never answered automatically.
                Some("own_domain")
            } else if self
                .acked_recently(&txn, &item.dossier_id)
                .await
                .map_err(transient)?
            {
                Some("period")
            } else if self
                .acks_to_address(&txn, &msg.from_address)
                .await
                .map_err(transient)?
                >= u64::from(self.config.ack_max_per_address)
            {
                Some("address_limit")
            } else {
                None
            };
            match skip {
                Some(reason) => {
                    metrics::counter!("guichet_email_acks_total", "outcome" => reason).increment(1);
                    tracing::info!(email_message = %msg.id, dossier_id = %item.dossier_id, reason, "no acknowledgement");
                }
                None => match self.stage_ack(&txn, &msg, &item).await {
                    Ok(s) => staged = Some(s),
                    Err(e) if is_unique_violation(&e) => {
                        // Redelivered: the acknowledgement is already staged.
                        drop(txn);
                        return Ok(());
                    }
                    Err(e) => return Err(transient(e)),
                },
            }
        }
        txn.commit().await.map_err(transient)?;
        if let Some(s) = staged {
            metrics::counter!("guichet_email_acks_total", "outcome" => "staged").increment(1);
            if let Err(e) = self.outbox.publish_now(&s).await {
                tracing::warn!(error = %e, "acknowledgement staged, the relay will publish it");
            }
        }
        Ok(())
    }

    async fn acked_recently(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        dossier_id: &str,
    ) -> Result<bool, sea_orm::DbErr> {
        let since =
            self.clock.now() - chrono::Duration::seconds(self.config.ack_period_secs as i64);
        Ok(email_message::Entity::find()
            .filter(email_message::Column::DossierId.eq(dossier_id))
            .filter(email_message::Column::Source.eq("ack"))
            .filter(email_message::Column::CreatedAt.gte(since))
            .one(txn)
            .await?
            .is_some())
    }

    async fn acks_to_address(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        address: &str,
    ) -> Result<u64, sea_orm::DbErr> {
        use sea_orm::PaginatorTrait;
        let since =
            self.clock.now() - chrono::Duration::seconds(self.config.ack_period_secs as i64);
        email_message::Entity::find()
            .filter(email_message::Column::ToAddress.eq(address))
            .filter(email_message::Column::Source.eq("ack"))
            .filter(email_message::Column::CreatedAt.gte(since))
            .count(txn)
            .await
    }

    async fn stage_ack(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        msg: &email_message::Model,
        item: &WorkItemChanged,
    ) -> Result<Staged, sea_orm::DbErr> {
        // A reference the citizen quoted that is not their dossier's is
        // left out: the acknowledgement names the dossier that exists.
        let subject = format!(
            "Accusé de réception : {}",
            guichet_platform::reference::without_other_references(
                &crate::text::base_subject(&msg.subject),
                &item.dossier_reference,
            )
        );
        let mut variables = HashMap::new();
        variables.insert("reference".to_owned(), item.dossier_reference.clone());
        variables.insert("subject".to_owned(), msg.subject.clone());
        variables.insert("process_id".to_owned(), item.process_id.clone());
        self.stage_outbound(
            txn,
            Outbound {
                request_id: format!("ack:{}", item.intake_event_id),
                source: "ack",
                to: msg.from_address.clone(),
                answered: msg,
                subject,
                reference: item.dossier_reference.clone(),
                dossier_id: item.dossier_id.clone(),
                template: ACK_TEMPLATE,
                variables,
                auto_submitted: "auto-replied",
                text: String::new(),
                attachments: Vec::new(),
                requested_by: "ingress-email".into(),
            },
        )
        .await
        .map(|(_, s)| s)
    }

    /// Record an outbound message and stage its NotificationRequest in `txn`.
    pub(crate) async fn stage_outbound(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        o: Outbound<'_>,
    ) -> Result<(email_message::Model, Staged), sea_orm::DbErr> {
        let message_id = self.new_message_id();
        let in_reply_to = o.answered.message_id.clone();
        let mut references: Vec<String> = o
            .answered
            .references
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !in_reply_to.is_empty() && !references.contains(&in_reply_to) {
            references.push(in_reply_to.clone());
        }
        let notification_id = guichet_platform::bus::new_event_id();
        let now = self.clock.now();
        let row = email_message::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            direction: Set("out".into()),
            message_key: Set(message_id.clone()),
            message_id: Set(message_id.clone()),
            in_reply_to: Set(in_reply_to.clone()),
            references: Set(references.join(" ")),
            subject: Set(o.subject.clone()),
            // The town's address: the one the citizen wrote to, or the
            // one the thread's latest (outbound) message came from.
            from_address: Set(if o.answered.direction == "out" {
                o.answered.from_address.clone()
            } else {
                o.answered.to_address.clone()
            }),
            to_address: Set(o.to.clone()),
            text_clean: Set(o.text.clone()),
            text_full: Set(o.text.clone()),
            raw_sha256: Set(String::new()),
            size_bytes: Set(0),
            source: Set(o.source.into()),
            intake_event_id: Set(None),
            dossier_id: Set(o.dossier_id.clone()),
            dossier_reference: Set(o.reference.clone()),
            auto_submitted: Set(o.auto_submitted != "no"),
            auto_reason: Set(String::new()),
            bounce: Set(false),
            parts: Set(serde_json::to_string(
                &o.attachments
                    .iter()
                    .map(|a| crate::StoredPart {
                        filename: a.filename.clone(),
                        media_type: a.media_type.clone(),
                        size_bytes: 0,
                        sha256: a.sha256.clone(),
                        rejected: String::new(),
                        inline: false,
                    })
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_else(|_| "[]".into())),
            notification_id: Set(notification_id.clone()),
            request_id: Set(Some(o.request_id.clone())),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let model = row.insert(txn).await?;
        let req = NotificationRequest {
            id: notification_id.clone(),
            target: Some(notification_request::Target::Email(o.to.clone())),
            template: o.template.into(),
            variables: o.variables,
            dossier_id: o.dossier_id.clone(),
            message_id,
            in_reply_to,
            references,
            auto_submitted: o.auto_submitted.into(),
            subject: o.subject,
            reference: o.reference,
            attachments: o.attachments,
            category: "transactional".into(),
            requested_by: o.requested_by,
            not_after: None,
        };
        let staged = self.outbox.notification_request(
            "email",
            &req,
            format!("emailMessages/{}", model.id),
            now,
        );
        self.outbox.stage(txn, &staged).await?;
        Ok((model, staged))
    }
}

/// An outbound message to record and hand to the notification role.
pub(crate) struct Outbound<'a> {
    pub request_id: String,
    pub source: &'static str,
    pub to: String,
    pub answered: &'a email_message::Model,
    pub subject: String,
    pub reference: String,
    pub dossier_id: String,
    pub template: &'static str,
    pub variables: HashMap<String, String>,
    pub auto_submitted: &'static str,
    pub text: String,
    pub attachments: Vec<guichet_proto::notification::v1::Attachment>,
    pub requested_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_automatic_senders_are_never_answered() {
        for a in [
            "MAILER-DAEMON@mx.example.org",
            "postmaster@example.org",
            "noreply@impots.gouv.fr",
            "no-reply+abc@example.org",
            "noreply-alerts@example.org",
            "pas-de-reponse@example.org",
            "sans-at",
        ] {
            let extra = vec!["pas-de-reponse".to_owned()];
            assert!(never_answer(a, &extra), "{a}");
        }
        assert!(!never_answer("jean.dupont@example.org", &[]));
    }
}
