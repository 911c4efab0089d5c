//! The delivery worker: claims due messages (a lease per message, so
//! several replicas share the work without sending anything twice),
//! renders them, checks expiry, suppression and the per-recipient rate
//! limit, hands them to the SMS provider or the SMTP relay, and records
//! the outcome (retry with backoff, dead letter after max_attempts).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guichet_platform::objects::ObjectStore;
use guichet_proto::notification::v1::NotificationRequest;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::core::{Core, DEAD_LETTERED, EXPIRED, Outcome, SUPPRESSED};
use crate::db::entities::notification;
use crate::email::{self, Draft, Mailer, Part};
use crate::gsm;
use crate::sms::{OutgoingSms, SmsProvider};

#[derive(Clone)]
pub struct Worker {
    pub core: Core,
    pub sms: Arc<dyn SmsProvider>,
    pub mailer: Arc<dyn Mailer>,
    pub objects: ObjectStore,
}

impl Worker {
    /// Deliver until `shutdown`: on every new request and every
    /// `worker_interval_ms`. A message in flight when shutdown comes is
    /// finished (the caller bounds that with the grace period).
    pub async fn run(self, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.core.config.worker_interval_ms);
        let mut last_purge = Instant::now();
        loop {
            match self.pass().await {
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "notification delivery pass failed, will retry")
                }
            }
            if let Ok(depth) = self.core.queue_depth().await {
                metrics::gauge!("guichet_notification_queue_depth").set(depth as f64);
            }
            if last_purge.elapsed() > Duration::from_secs(3600) {
                last_purge = Instant::now();
                match self.core.purge().await {
                    Ok(n) if n > 0 => tracing::info!(purged = n, "old notifications purged"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "notification purge failed"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.core.wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One pass: claim and deliver what is due; returns how many were handled.
    pub async fn pass(&self) -> anyhow::Result<usize> {
        let mut handled = 0;
        loop {
            let batch = self.core.claim_due(self.core.config.batch_size).await?;
            if batch.is_empty() {
                return Ok(handled);
            }
            let n = batch.len();
            // One task per recipient, its messages in order: the hourly
            // limit counts what was sent before the next one is checked.
            let mut by_recipient: HashMap<String, Vec<notification::Model>> = HashMap::new();
            for m in batch {
                by_recipient.entry(m.recipient.clone()).or_default().push(m);
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (_, group) in by_recipient {
                let w = self.clone();
                tasks.spawn(async move {
                    for m in group {
                        let outcome = w.attempt(&m).await;
                        if let Err(error) = w.core.finish(&m, outcome).await {
                            tracing::error!(notification_id = %m.id, %error, "cannot record a delivery outcome; the lease will expire and it is retried");
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            // Go on until nothing is due: a short batch may only mean
            // another replica won some of the claims.
            handled += n;
        }
    }

    /// Try once to deliver `m`.
    pub async fn attempt(&self, m: &notification::Model) -> Outcome {
        let req = match NotificationRequest::decode(m.request.as_slice()) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Final {
                    status: DEAD_LETTERED,
                    error: format!("stored request unreadable: {e}"),
                    attempted: false,
                };
            }
        };
        let now = self.core.now();
        if m.not_after.is_some_and(|t| now > t) {
            return Outcome::Final {
                status: EXPIRED,
                error: "not delivered before not_after".into(),
                attempted: false,
            };
        }
        let mut vars: HashMap<String, String> = req.variables.clone();
        for (k, v) in self.core.config.town.variables() {
            vars.entry(k.into()).or_insert(v);
        }
        if !req.reference.is_empty() {
            vars.entry("reference".into())
                .or_insert_with(|| req.reference.clone());
        }
        vars.entry("salutation".into())
            .or_insert_with(|| "Bonjour".into());
        let started = Instant::now();
        let (result, channel) = match m.channel.as_str() {
            "sms" => (self.send_sms(m, &req, &vars).await, "sms"),
            "email" => (self.send_email(m, &req, &vars).await, "email"),
            other => (
                Err(Outcome::Final {
                    status: DEAD_LETTERED,
                    error: format!("unknown channel {other}"),
                    attempted: false,
                }),
                "none",
            ),
        };
        let outcome = match result {
            Ok(o) | Err(o) => o,
        };
        let label = match &outcome {
            Outcome::Sent { .. } => "sent",
            Outcome::Retry(_) => "retry",
            Outcome::Final { .. } => "final",
            Outcome::Defer(_) => "deferred",
        };
        if label != "deferred" {
            metrics::counter!("guichet_notification_attempts_total", "channel" => channel, "outcome" => label)
                .increment(1);
            metrics::histogram!("guichet_notification_send_seconds", "channel" => channel)
                .record(started.elapsed().as_secs_f64());
        }
        if let Outcome::Retry(error) = &outcome {
            tracing::warn!(notification_id = %m.id, channel, attempts = m.attempts + 1, %error, "delivery attempt failed");
        }
        outcome
    }

    /// `Defer` to when the recipient's hourly window of `channel` frees a
    /// slot, or `None` to send now.
    async fn over_hourly_limit(
        &self,
        m: &notification::Model,
        channel: &str,
    ) -> Result<Option<Outcome>, Outcome> {
        let at = self
            .core
            .rate_limited_until(&m.recipient, channel)
            .await
            .map_err(|e| Outcome::Retry(e.to_string()))?;
        Ok(at.map(|at| {
            metrics::counter!("guichet_notification_deferred_total", "reason" => "rate_limit", "channel" => channel.to_owned())
                .increment(1);
            tracing::info!(notification_id = %m.id, channel, "recipient over the hourly limit, deferred");
            Outcome::Defer(at)
        }))
    }

    async fn send_sms(
        &self,
        m: &notification::Model,
        req: &NotificationRequest,
        vars: &HashMap<String, String>,
    ) -> Result<Outcome, Outcome> {
        if let Some(deferred) = self.over_hourly_limit(m, "sms").await? {
            return Ok(deferred);
        }
        // Typography that would force UCS-2 (« », ’, –) is fitted to GSM-7,
        // and letters too when the template asks for it.
        let text = self
            .core
            .catalog
            .current()
            .sms_text(&req.template, vars)
            .map_err(|e| Outcome::Final {
                status: DEAD_LETTERED,
                error: e.to_string(),
                attempted: false,
            })?;
        let shape = gsm::shape(&text);
        let sms = OutgoingSms {
            id: m.id.clone(),
            to: m.recipient.clone(),
            text,
            template: m.template.clone(),
            dossier_id: m.dossier_id.clone(),
            shape,
        };
        match self.sms.send(&sms).await {
            Ok(provider_message_id) => Ok(Outcome::Sent {
                provider_message_id,
                segments: shape.segments,
                encoding: shape.encoding.as_str().into(),
            }),
            Err(e) => Err(Outcome::failed(e)),
        }
    }

    async fn send_email(
        &self,
        m: &notification::Model,
        req: &NotificationRequest,
        vars: &HashMap<String, String>,
    ) -> Result<Outcome, Outcome> {
        let retry = |e: anyhow::Error| Outcome::Retry(e.to_string());
        if self.core.is_suppressed(&m.recipient).await.map_err(retry)? {
            return Ok(Outcome::Final {
                status: SUPPRESSED,
                error: "address on the suppression list (bounced)".into(),
                attempted: false,
            });
        }
        if let Some(deferred) = self.over_hourly_limit(m, "email").await? {
            return Ok(deferred);
        }
        let rendered = self
            .core
            .catalog
            .current()
            .render_email(&req.template, vars)
            .map_err(|e| Outcome::Final {
                status: DEAD_LETTERED,
                error: e.to_string(),
                attempted: false,
            })?;
        let mut attachments = Vec::new();
        if let Some(ics) = vars.get("ics").filter(|s| !s.is_empty()) {
            attachments.push(Part {
                filename: "rendez-vous.ics".into(),
                media_type: "text/calendar; charset=utf-8; method=PUBLISH".into(),
                content: ics.as_bytes().to_vec(),
            });
        }
        for (i, a) in req.attachments.iter().enumerate() {
            let content = if !a.content.is_empty() {
                a.content.clone()
            } else if !a.sha256.is_empty() {
                match self.objects.get(&a.sha256).await {
                    Ok(bytes) => bytes,
                    Err(guichet_platform::objects::ObjectError::NotFound(_)) => {
                        return Err(Outcome::Final {
                            status: DEAD_LETTERED,
                            error: format!("attachment {i}: object not found"),
                            attempted: false,
                        });
                    }
                    Err(e) => return Err(Outcome::Retry(format!("attachment {i}: {e}"))),
                }
            } else {
                return Err(Outcome::Final {
                    status: DEAD_LETTERED,
                    error: format!("attachment {i} has neither content nor sha256"),
                    attempted: false,
                });
            };
            attachments.push(Part {
                filename: if a.filename.is_empty() {
                    format!("piece-jointe-{}", i + 1)
                } else {
                    a.filename.clone()
                },
                media_type: if a.media_type.is_empty() {
                    "application/octet-stream".into()
                } else {
                    a.media_type.clone()
                },
                content,
            });
        }
        let draft = Draft {
            notification_id: m.id.clone(),
            to: m.recipient.clone(),
            subject: if req.subject.trim().is_empty() {
                rendered.subject
            } else {
                req.subject.clone()
            },
            body: rendered.body,
            message_id: m.message_id.clone().unwrap_or_default(),
            in_reply_to: req.in_reply_to.clone(),
            references: req.references.clone(),
            auto_submitted: if req.auto_submitted.is_empty() {
                rendered.auto_submitted.unwrap_or_default()
            } else {
                req.auto_submitted.clone()
            },
            reference: req.reference.clone(),
            information: req.category == "information",
            attachments,
        };
        let message =
            email::build(&self.core.config.email, &draft).map_err(|e| Outcome::Final {
                status: DEAD_LETTERED,
                error: e,
                attempted: false,
            })?;
        match self.mailer.send(&m.id, message).await {
            Ok(()) => Ok(Outcome::Sent {
                provider_message_id: String::new(),
                segments: 0,
                encoding: String::new(),
            }),
            Err(e) => Err(Outcome::failed(e)),
        }
    }
}
