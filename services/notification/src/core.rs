//! The delivery outbox: every accepted request is one row with its status,
//! attempts and next attempt; every status change stages a
//! `NotificationStatusChanged` event (`guichet.events.notification.<status>`)
//! in the same transaction.
//!
//! Statuses: `queued` (waiting for its first attempt, or deferred by the
//! rate limit), `failed` (an attempt failed: retried at `next_attempt_at`;
//! or the provider reported a failed delivery: final), `sent` (accepted by
//! the provider or the SMTP relay), `delivered` (delivery report),
//! `expired` (past `not_after`), `suppressed` (address on the suppression
//! list) and `dead_lettered` (given up: too many failures, a permanent
//! refusal or a template error).

use guichet_platform::retry::{Class, Classify};
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use guichet_platform::clock::SharedClock;
use guichet_platform::contact::{Email, Phone};
use guichet_platform::db::is_unique_violation;
use guichet_platform::outbox::{Outbox, Staged};
use guichet_proto::convert::{datetime, timestamp};
use guichet_proto::notification::v1::{
    NotificationRequest, NotificationStatusChanged, notification_request,
};
use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use tokio::sync::Notify;

use crate::config::Config;
use crate::db::entities::{notification, suppression};
use crate::templates::Templates;

pub const QUEUED: &str = "queued";
pub const SENT: &str = "sent";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";
pub const EXPIRED: &str = "expired";
pub const SUPPRESSED: &str = "suppressed";
pub const DEAD_LETTERED: &str = "dead_lettered";

pub const STATUSES: [&str; 7] = [
    QUEUED,
    SENT,
    DELIVERED,
    FAILED,
    EXPIRED,
    SUPPRESSED,
    DEAD_LETTERED,
];

/// Statuses the worker picks up (when `next_attempt_at` is due).
const PENDING: [&str; 2] = [QUEUED, FAILED];

#[derive(Clone)]
pub struct Core {
    pub db: DatabaseConnection,
    pub outbox: Outbox,
    pub config: Arc<Config>,
    /// The running message templates (the studio's wordings on top).
    pub catalog: Templates,
    pub clock: SharedClock,
    /// Wakes the delivery worker when a request is queued.
    pub wake: Arc<Notify>,
    /// This replica's lease owner id.
    pub replica: String,
}

/// What became of a request handed to [`Core::accept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    Queued,
    /// Already known (a redelivery): nothing done.
    Duplicate,
    /// Recorded but refused (invalid recipient): dead-lettered at once.
    Refused(String),
}

/// How one delivery attempt ended, as the worker reports it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        provider_message_id: String,
        segments: u32,
        encoding: String,
    },
    /// May succeed later: retried with backoff until max_attempts.
    Retry(String),
    /// Final: `status` is expired, suppressed or dead_lettered;
    /// `attempted` when the provider or relay was reached (and refused).
    Final {
        status: &'static str,
        error: String,
        attempted: bool,
    },
    /// Not attempted (rate limit): try again at this instant.
    Defer(DateTime<Utc>),
}

impl Outcome {
    /// A failed attempt, retried or dead-lettered by its class (the
    /// platform's one retry taxonomy).
    pub fn failed<E: Classify + std::fmt::Display>(e: E) -> Outcome {
        match e.class() {
            Class::Transient => Outcome::Retry(e.to_string()),
            Class::Permanent => Outcome::Final {
                status: DEAD_LETTERED,
                error: e.to_string(),
                attempted: true,
            },
        }
    }
}

fn db_err(e: sea_orm::DbErr) -> anyhow::Error {
    anyhow::anyhow!("notification database: {e}")
}

impl Core {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The status event of `m` (no recipient, no body).
    pub fn status_event(&self, m: &notification::Model) -> Staged {
        let msg = NotificationStatusChanged {
            notification_id: m.id.clone(),
            status: m.status.clone(),
            channel: m.channel.clone(),
            attempts: Ord::max(m.attempts, 0) as u32,
            error: m.last_error.clone().unwrap_or_default(),
            provider_message_id: m.provider_message_id.clone().unwrap_or_default(),
            dossier_id: m.dossier_id.clone(),
            template: m.template.clone(),
            changed_at: Some(timestamp(m.updated_at)),
            segments: Ord::max(m.segments, 0) as u32,
            encoding: m.encoding.clone(),
        };
        self.outbox.domain_event(
            "notification",
            &m.status,
            format!("notifications/{}", m.id),
            &msg,
        )
    }

    /// Record a request durably (idempotent on its id). The caller acks the
    /// NATS message only after this returned `Ok`.
    pub async fn accept(&self, req: NotificationRequest) -> anyhow::Result<Accepted> {
        if req.id.trim().is_empty() {
            anyhow::bail!("request without an id");
        }
        if notification::Entity::find_by_id(req.id.clone())
            .one(&self.db)
            .await
            .map_err(db_err)?
            .is_some()
        {
            return Ok(Accepted::Duplicate);
        }
        let now = self.now();
        let (channel, recipient, refusal) = match &req.target {
            Some(notification_request::Target::Phone(p)) => match Phone::parse(p) {
                Ok(p) => ("sms", p.as_str().to_owned(), None),
                Err(e) => ("sms", String::new(), Some(format!("phone number {e}"))),
            },
            Some(notification_request::Target::Email(e)) => match Email::parse(e) {
                Ok(e) => ("email", e.as_str().to_owned(), None),
                Err(e) => ("email", String::new(), Some(format!("email address {e}"))),
            },
            None => (
                "none",
                String::new(),
                Some("no phone or email target".into()),
            ),
        };
        let message_id = (channel == "email").then(|| {
            let given = req.message_id.trim().trim_matches(['<', '>']);
            if given.is_empty() {
                format!(
                    "{}@{}",
                    uuid::Uuid::now_v7(),
                    self.config.message_id_domain()
                )
            } else {
                given.to_owned()
            }
        });
        let status = if refusal.is_some() {
            DEAD_LETTERED
        } else {
            QUEUED
        };
        let model = notification::Model {
            id: req.id.clone(),
            channel: channel.into(),
            recipient,
            template: req.template.clone(),
            dossier_id: req.dossier_id.clone(),
            requested_by: req.requested_by.clone(),
            request: req.encode_to_vec(),
            status: status.into(),
            attempts: 0,
            next_attempt_at: refusal.is_none().then_some(now),
            not_after: req.not_after.as_ref().and_then(datetime),
            last_error: refusal.clone(),
            provider_message_id: None,
            message_id,
            segments: 0,
            encoding: String::new(),
            lease_owner: None,
            lease_until: None,
            created_at: now,
            updated_at: now,
            sent_at: None,
        };
        let txn = self.db.begin().await.map_err(db_err)?;
        let event = self.status_event(&model);
        if let Err(e) = notification::Entity::insert(model.clone().into_active_model())
            .exec_without_returning(&txn)
            .await
        {
            if is_unique_violation(&e) {
                return Ok(Accepted::Duplicate);
            }
            return Err(db_err(e));
        }
        self.outbox.stage(&txn, &event).await.map_err(db_err)?;
        match txn.commit().await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => return Ok(Accepted::Duplicate),
            Err(e) => return Err(db_err(e)),
        }
        self.outbox.notify();
        metrics::counter!("guichet_notification_messages_total", "channel" => channel, "status" => status)
            .increment(1);
        match refusal {
            Some(reason) => {
                tracing::warn!(notification_id = %model.id, channel, %reason, "notification refused");
                Ok(Accepted::Refused(reason))
            }
            None => {
                self.wake.notify_one();
                tracing::info!(notification_id = %model.id, channel, template = %model.template, "notification queued");
                Ok(Accepted::Queued)
            }
        }
    }

    /// Claim up to `limit` due messages for this replica (a lease other
    /// replicas respect until it runs out).
    pub async fn claim_due(&self, limit: u64) -> anyhow::Result<Vec<notification::Model>> {
        let now = self.now();
        let free = Condition::any()
            .add(notification::Column::LeaseUntil.is_null())
            .add(notification::Column::LeaseUntil.lt(now));
        let due = || {
            Condition::all()
                .add(notification::Column::Status.is_in(PENDING))
                .add(notification::Column::NextAttemptAt.lte(now))
                .add(free.clone())
        };
        let candidates: Vec<String> = notification::Entity::find()
            .select_only()
            .column(notification::Column::Id)
            .filter(due())
            .order_by_asc(notification::Column::NextAttemptAt)
            .order_by_asc(notification::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_err)?;
        let until = now + Duration::seconds(self.config.claim_lease_secs as i64);
        let mut claimed = Vec::new();
        for id in candidates {
            let r = notification::Entity::update_many()
                .col_expr(
                    notification::Column::LeaseOwner,
                    Expr::value(self.replica.clone()),
                )
                .col_expr(notification::Column::LeaseUntil, Expr::value(until))
                .filter(notification::Column::Id.eq(id.clone()))
                .filter(due())
                .exec(&self.db)
                .await
                .map_err(db_err)?;
            if r.rows_affected == 1
                && let Some(m) = notification::Entity::find_by_id(id)
                    .one(&self.db)
                    .await
                    .map_err(db_err)?
            {
                claimed.push(m);
            }
        }
        Ok(claimed)
    }

    /// Retry delay after `attempts` failures: base × 2^(attempts-1), capped
    /// (backon's exponential backoff), with ±25 % jitter so a provider
    /// outage does not end in a burst.
    pub fn backoff(&self, attempts: i32) -> Duration {
        use backon::BackoffBuilder;
        use rand::Rng;
        let n = attempts.clamp(1, 31) as usize;
        let max = std::time::Duration::from_secs(self.config.backoff_max_secs);
        let exp = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(
                self.config.backoff_base_ms,
            ))
            .with_max_delay(max)
            .with_factor(2.0)
            .with_max_times(n)
            .build()
            .nth(n - 1)
            .unwrap_or(max)
            .min(max);
        let jitter: f64 = rand::rng().random_range(0.75..=1.25);
        Duration::milliseconds((exp.as_millis() as f64 * jitter).max(1.0) as i64)
    }

    /// Record how an attempt on a claimed message ended; false when this
    /// replica lost its lease meanwhile (another one owns the message).
    pub async fn finish(&self, m: &notification::Model, outcome: Outcome) -> anyhow::Result<bool> {
        let now = self.now();
        let mut next = m.clone();
        next.lease_owner = None;
        next.lease_until = None;
        next.updated_at = now;
        match outcome {
            Outcome::Sent {
                provider_message_id,
                segments,
                encoding,
            } => {
                next.status = SENT.into();
                next.attempts += 1;
                next.next_attempt_at = None;
                next.sent_at = Some(now);
                next.last_error = None;
                next.provider_message_id =
                    (!provider_message_id.is_empty()).then_some(provider_message_id);
                next.segments = segments as i32;
                next.encoding = encoding;
            }
            Outcome::Retry(error) => {
                next.attempts += 1;
                next.last_error = Some(error);
                if next.attempts >= self.config.max_attempts as i32 {
                    next.status = DEAD_LETTERED.into();
                    next.next_attempt_at = None;
                } else {
                    next.status = FAILED.into();
                    next.next_attempt_at = Some(now + self.backoff(next.attempts));
                }
            }
            Outcome::Final {
                status,
                error,
                attempted,
            } => {
                if attempted {
                    next.attempts += 1;
                }
                next.status = status.into();
                next.next_attempt_at = None;
                next.last_error = Some(error);
            }
            Outcome::Defer(at) => {
                next.next_attempt_at = Some(at);
            }
        }
        let changed = next.status != m.status || next.attempts != m.attempts;
        let txn = self.db.begin().await.map_err(db_err)?;
        let r = notification::Entity::update_many()
            .col_expr(
                notification::Column::Status,
                Expr::value(next.status.clone()),
            )
            .col_expr(notification::Column::Attempts, Expr::value(next.attempts))
            .col_expr(
                notification::Column::NextAttemptAt,
                Expr::value(next.next_attempt_at),
            )
            .col_expr(
                notification::Column::LastError,
                Expr::value(next.last_error.clone()),
            )
            .col_expr(
                notification::Column::ProviderMessageId,
                Expr::value(next.provider_message_id.clone()),
            )
            .col_expr(notification::Column::Segments, Expr::value(next.segments))
            .col_expr(
                notification::Column::Encoding,
                Expr::value(next.encoding.clone()),
            )
            .col_expr(notification::Column::SentAt, Expr::value(next.sent_at))
            .col_expr(
                notification::Column::LeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                notification::Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(notification::Column::UpdatedAt, Expr::value(now))
            .filter(notification::Column::Id.eq(m.id.clone()))
            .filter(notification::Column::LeaseOwner.eq(self.replica.clone()))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if r.rows_affected != 1 {
            return Ok(false);
        }
        if changed {
            self.outbox
                .stage(&txn, &self.status_event(&next))
                .await
                .map_err(db_err)?;
        }
        txn.commit().await.map_err(db_err)?;
        if changed {
            self.outbox.notify();
            metrics::counter!("guichet_notification_messages_total", "channel" => next.channel.clone(), "status" => next.status.clone())
                .increment(1);
            tracing::info!(notification_id = %m.id, channel = %m.channel, status = %next.status, attempts = next.attempts, "notification status changed");
        }
        Ok(true)
    }

    /// A provider's delivery report: `sent` → `delivered` or `failed`.
    /// Returns the notification id, or None when the provider id is unknown.
    pub async fn delivery_report(
        &self,
        provider_message_id: &str,
        delivered: bool,
        error: &str,
    ) -> anyhow::Result<Option<String>> {
        let Some(m) = notification::Entity::find()
            .filter(notification::Column::ProviderMessageId.eq(provider_message_id))
            .one(&self.db)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let status = if delivered { DELIVERED } else { FAILED };
        if m.status != SENT {
            // A repeated or late report: already settled.
            return Ok(Some(m.id));
        }
        let now = self.now();
        let txn = self.db.begin().await.map_err(db_err)?;
        let r = notification::Entity::update_many()
            .col_expr(notification::Column::Status, Expr::value(status))
            .col_expr(
                notification::Column::LastError,
                Expr::value((!delivered).then(|| error.chars().take(200).collect::<String>())),
            )
            .col_expr(notification::Column::UpdatedAt, Expr::value(now))
            .filter(notification::Column::Id.eq(m.id.clone()))
            .filter(notification::Column::Status.eq(SENT))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if r.rows_affected == 1 {
            let mut next = m.clone();
            next.status = status.into();
            next.updated_at = now;
            if !delivered {
                next.last_error = Some(error.chars().take(200).collect());
            }
            self.outbox
                .stage(&txn, &self.status_event(&next))
                .await
                .map_err(db_err)?;
        }
        txn.commit().await.map_err(db_err)?;
        self.outbox.notify();
        metrics::counter!("guichet_notification_messages_total", "channel" => m.channel.clone(), "status" => status)
            .increment(1);
        tracing::info!(notification_id = %m.id, status, "delivery report");
        Ok(Some(m.id))
    }

    /// Supervisor: queue a failed, dead-lettered or suppressed message again.
    pub async fn retry(&self, id: &str) -> anyhow::Result<Result<notification::Model, String>> {
        let Some(m) = self.get(id).await? else {
            return Ok(Err("not found".into()));
        };
        if ![FAILED, DEAD_LETTERED, SUPPRESSED].contains(&m.status.as_str()) {
            return Ok(Err(format!(
                "a {} notification cannot be retried (only failed, dead_lettered or suppressed)",
                m.status
            )));
        }
        if m.recipient.is_empty() {
            return Ok(Err("the notification has no valid recipient".into()));
        }
        let now = self.now();
        let mut next = m.clone();
        next.status = QUEUED.into();
        next.attempts = 0;
        next.next_attempt_at = Some(now);
        next.lease_owner = None;
        next.lease_until = None;
        next.updated_at = now;
        let txn = self.db.begin().await.map_err(db_err)?;
        let r = notification::Entity::update_many()
            .col_expr(notification::Column::Status, Expr::value(QUEUED))
            .col_expr(notification::Column::Attempts, Expr::value(0))
            .col_expr(notification::Column::NextAttemptAt, Expr::value(now))
            .col_expr(
                notification::Column::LeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                notification::Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(notification::Column::UpdatedAt, Expr::value(now))
            .filter(notification::Column::Id.eq(id))
            .filter(notification::Column::Status.eq(m.status.clone()))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if r.rows_affected != 1 {
            return Ok(Err("the notification changed meanwhile, try again".into()));
        }
        self.outbox
            .stage(&txn, &self.status_event(&next))
            .await
            .map_err(db_err)?;
        txn.commit().await.map_err(db_err)?;
        self.outbox.notify();
        self.wake.notify_one();
        tracing::info!(notification_id = %id, "notification queued again by a supervisor");
        Ok(Ok(next))
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<notification::Model>> {
        notification::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_err)
    }

    /// A page of notifications, newest first, after the `after` cursor
    /// (created_at, id) of the previous page.
    pub async fn list(
        &self,
        filter: &HashMap<String, String>,
        after: Option<(DateTime<Utc>, String)>,
        limit: u64,
    ) -> anyhow::Result<Vec<notification::Model>> {
        let mut q = notification::Entity::find();
        for (k, v) in filter {
            q = match k.as_str() {
                "status" => q.filter(notification::Column::Status.eq(v.clone())),
                "channel" => q.filter(notification::Column::Channel.eq(v.clone())),
                "dossier_id" => q.filter(notification::Column::DossierId.eq(v.clone())),
                "template" => q.filter(notification::Column::Template.eq(v.clone())),
                _ => q,
            };
        }
        if let Some((t, id)) = after {
            q = q.filter(
                Condition::any()
                    .add(notification::Column::CreatedAt.lt(t))
                    .add(
                        Condition::all()
                            .add(notification::Column::CreatedAt.eq(t))
                            .add(notification::Column::Id.lt(id)),
                    ),
            );
        }
        q.order_by_desc(notification::Column::CreatedAt)
            .order_by_desc(notification::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err)
    }

    // ---- suppression list --------------------------------------------

    pub async fn is_suppressed(&self, address: &str) -> anyhow::Result<bool> {
        Ok(suppression::Entity::find_by_id(address.to_owned())
            .one(&self.db)
            .await
            .map_err(db_err)?
            .is_some())
    }

    /// Stop sending to `address` (idempotent).
    pub async fn suppress(
        &self,
        address: &str,
        reason: &str,
        bounce_message_id: &str,
    ) -> anyhow::Result<()> {
        let row = suppression::ActiveModel {
            address: Set(address.to_owned()),
            reason: Set(reason.chars().take(200).collect()),
            bounce_message_id: Set(bounce_message_id.to_owned()),
            created_at: Set(self.now()),
        };
        match suppression::Entity::insert(row)
            .exec_without_returning(&self.db)
            .await
        {
            Ok(_) => {
                metrics::counter!("guichet_notification_suppressions_total").increment(1);
                tracing::info!(bounce_message_id, "address suppressed after a bounce");
                Ok(())
            }
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(db_err(e)),
        }
    }

    /// Lift the block on `address`; false when it was not suppressed.
    pub async fn clear_suppression(&self, address: &str) -> anyhow::Result<bool> {
        let r = suppression::Entity::delete_many()
            .filter(suppression::Column::Address.eq(address))
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected > 0)
    }

    // ---- rate limit --------------------------------------------------

    /// When `recipient` may receive one more message of `channel` ("sms"
    /// or "email") under its per-hour limit: None now, or the instant the
    /// oldest message of the window leaves it.
    pub async fn rate_limited_until(
        &self,
        recipient: &str,
        channel: &str,
    ) -> anyhow::Result<Option<DateTime<Utc>>> {
        let max = if channel == "sms" {
            self.config.sms_max_per_hour
        } else {
            self.config.email.max_per_hour
        };
        if max == 0 {
            return Ok(None);
        }
        let now = self.now();
        let since = now - Duration::hours(1);
        let sent: Vec<Option<DateTime<Utc>>> = notification::Entity::find()
            .select_only()
            .column(notification::Column::SentAt)
            .filter(notification::Column::Recipient.eq(recipient))
            .filter(notification::Column::Channel.eq(channel))
            .filter(notification::Column::SentAt.gt(since))
            .order_by_desc(notification::Column::SentAt)
            .limit(max as u64)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_err)?;
        if (sent.len() as u32) < max {
            return Ok(None);
        }
        // The max-th most recent leaves the window one hour after it was sent.
        let oldest = sent.last().copied().flatten().unwrap_or(now);
        Ok(Some(oldest + Duration::hours(1) + Duration::seconds(1)))
    }

    // ---- housekeeping ------------------------------------------------

    /// Messages waiting for an attempt (for the queue-depth gauge).
    pub async fn queue_depth(&self) -> anyhow::Result<u64> {
        notification::Entity::find()
            .filter(notification::Column::Status.is_in(PENDING))
            .filter(notification::Column::NextAttemptAt.is_not_null())
            .count(&self.db)
            .await
            .map_err(db_err)
    }

    /// Delete terminal messages (and the contact details they hold) older
    /// than the retention period.
    pub async fn purge(&self) -> anyhow::Result<u64> {
        if self.config.retention_days == 0 {
            return Ok(0);
        }
        let before = self.now() - Duration::days(i64::from(self.config.retention_days));
        let r = notification::Entity::delete_many()
            .filter(notification::Column::Status.is_not_in(PENDING))
            .filter(notification::Column::UpdatedAt.lt(before))
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected)
    }
}

/// `+33612345678` → `+336•••••78`; `jeanne@exemple.fr` → `j•••@exemple.fr`.
pub fn mask(recipient: &str) -> String {
    if let Some((local, domain)) = recipient.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}•••@{domain}");
    }
    let chars: Vec<char> = recipient.chars().collect();
    if chars.len() < 6 {
        return "•".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "•".repeat(chars.len() - 6))
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn recipients_are_masked() {
        assert_eq!(mask("+33612345678"), "+336••••••78");
        assert_eq!(mask("jeanne@exemple.fr"), "j•••@exemple.fr");
        assert_eq!(mask(""), "");
    }
}
