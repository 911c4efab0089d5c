//! The email ingress: citizens' mail becomes requests, and agents answer it.
//!
//! Mail arrives over SMTP or LMTP (a city mail server relays to guichet,
//! [`smtp`]) or is fetched from a mailbox over IMAP ([`imap`]). Each message
//! is parsed ([`mime`]), its original and documents go to the object store,
//! its thread is followed (a reference in the subject, then In-Reply-To /
//! References of a message guichet sent or received, then a reference in
//! the body), automatic mail is recognised, and one IntakeEvent is staged in
//! the same transaction as the message's record (the outbox). The source is
//! answered (SMTP 250, IMAP move) only once JetStream holds the event; the
//! same message delivered twice (Message-ID, else content hash) is recorded
//! once.
//!
//! [`acks`] listens to routing's `work_item_enqueued` events: a message
//! that opened a new dossier gets one automatic acknowledgement (a
//! NotificationRequest for the notification role), never automatic mail.
//! `EmailService.SendReply` answers a dossier's thread.
//!
//! Logs and spans carry ids, sizes and reasons: never an address, a name
//! or the text.

pub mod acks;
pub mod config;
pub mod db;
pub mod grpc;
pub mod imap;
pub mod mime;
pub mod sender;
pub mod smtp;
pub mod text;

use std::sync::Arc;

use chrono::Utc;
use guichet_platform::auth::{AuthInterceptor, Authenticator};
use guichet_platform::bus::{StreamKind, new_event_id};
use guichet_platform::config::ConfigError;
use guichet_platform::contact::Email;
use guichet_platform::db::is_unique_violation;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::objects::{ObjectStore, sha256_hex};
use guichet_platform::outbox::{Outbox, Staged};
use guichet_platform::role::{BoxFuture, Handles, Listener, Local, RoleService, RoleSpec};
use guichet_proto::convert::timestamp;
use guichet_proto::email::v1::email_service_server::EmailServiceServer;
use guichet_proto::intake::v1::{
    AttachmentRef, Channel, CitizenHint, EmailDetails, IntakeEvent, RejectedPart, intake_event,
};
use guichet_proto::notification::v1::AddressUndeliverable;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::db::entities::{blocked_address, email_message};
use crate::mime::Parsed;

pub use config::Config;
pub use guichet_platform::Deps;

/// The text carried in an intake event is cut beyond this (an event must
/// fit a NATS message); the full original stays in the object store.
const MAX_BODY_BYTES: usize = 256 * 1024;

pub struct Service {
    api: EmailApi,
    auth: Arc<Authenticator>,
    smtp: Vec<smtp::Listener>,
}

/// The email ingress's core, shared by the listeners, the IMAP poller, the
/// acknowledgement consumer and the gRPC API.
#[derive(Clone)]
pub struct EmailApi {
    pub(crate) db: DatabaseConnection,
    pub(crate) outbox: Outbox,
    pub(crate) objects: ObjectStore,
    pub(crate) config: Arc<Config>,
    /// "Now" of every stored message (the process's clock).
    pub(crate) clock: guichet_platform::clock::SharedClock,
    /// The dossier role, called with the caller's own token.
    pub(crate) dossier: guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient<
        tonic::transport::Channel,
    >,
    /// Messages per sender, to tell a burst.
    pub(crate) bursts: Arc<sender::Bursts>,
}

/// The ingress-email role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "ingress-email";
    const SECTION: &'static str = "email";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    /// The role calls dossier on the local port when both run here.
    fn wire(config: &mut Config, local: &Local) {
        if let Some(url) = local.url_of("dossier") {
            config.dossier_url = url.to_owned();
        }
    }

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let db = deps
        .database::<db::Migrator>("email", &config.database_url)
        .await?;
    for kind in [StreamKind::Intake, StreamKind::Events, StreamKind::Notify] {
        deps.bus.ensure_stream(kind).await?;
    }
    let tls = smtp::tls_acceptor(&config)?;
    let mut listeners = Vec::new();
    for (addrs, lmtp) in [(&config.smtp_addrs, false), (&config.lmtp_addrs, true)] {
        for a in addrs {
            let l = tokio::net::TcpListener::bind(a).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on email.{}_addrs {a}: {e}",
                    if lmtp { "lmtp" } else { "smtp" }
                )
            })?;
            listeners.push(smtp::Listener {
                listener: Arc::new(l),
                lmtp,
                tls: tls.clone(),
            });
        }
    }
    let channel = guichet_platform::grpc::lazy_channel("email.dossier_url", &config.dossier_url)?;
    Ok(Service {
        api: EmailApi {
            dossier: guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient::new(
                channel,
            ),
            outbox: Outbox::new(db.clone(), deps.bus),
            db,
            objects: deps.objects,
            config: Arc::new(config),
            clock: deps.clock.clone(),
            bursts: Arc::default(),
        },
        auth: deps.auth,
        smtp: listeners,
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(EmailServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// The SMTP listeners (port 0 in tests), then the LMTP ones.
    fn listeners(&self) -> Vec<Listener> {
        self.smtp_addrs()
            .into_iter()
            .map(|(lmtp, addr)| Listener {
                name: if lmtp { "lmtp" } else { "smtp" },
                addr,
            })
            .collect()
    }

    fn handles(&self, handles: &mut Handles) {
        handles.insert(self.api.clone());
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(Service::run(*self, shutdown))
    }
}

impl Service {
    /// The SMTP listeners' addresses (port 0 in tests), then the LMTP ones.
    pub fn smtp_addrs(&self) -> Vec<(bool, std::net::SocketAddr)> {
        self.smtp
            .iter()
            .filter_map(|l| Some((l.lmtp, l.listener.local_addr().ok()?)))
            .collect()
    }

    pub fn api(&self) -> &EmailApi {
        &self.api
    }

    /// Listen, poll, relay and acknowledge until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn({
            let outbox = self.api.outbox.clone();
            let s = shutdown.clone();
            async move {
                outbox.run(s).await;
                Ok(())
            }
        });
        for l in self.smtp {
            tasks.spawn(smtp::serve(self.api.clone(), l, shutdown.clone()));
        }
        if !self.api.config.imap.host.trim().is_empty() {
            tasks.spawn(imap::run(self.api.clone(), shutdown.clone()));
        }
        tasks.spawn(acks::run(self.api.clone(), shutdown.clone()));
        let mut result = Ok(());
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "email task failed");
                    shutdown.cancel();
                    result = Err(e);
                }
                Err(e) => {
                    shutdown.cancel();
                    result = Err(e.into());
                }
            }
        }
        result
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Smtp,
    Lmtp,
    Imap,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Smtp => "smtp",
            Source::Lmtp => "lmtp",
            Source::Imap => "imap",
        }
    }
}

/// A stored part, as kept in `email_messages.parts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPart {
    pub filename: String,
    pub media_type: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub rejected: String,
    #[serde(default)]
    pub inline: bool,
}

/// What happened to a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Published,
    Duplicate,
}

/// Why a message could not be taken now (the sender retries: SMTP 451,
/// IMAP leaves it in the mailbox).
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("object store: {0}")]
    Objects(#[from] guichet_platform::objects::ObjectError),
    #[error("publish: {0}")]
    Publish(String),
}

/// How a dossier reference was found.
struct Threading {
    reference: String,
    source: &'static str,
    dossier_id: String,
    found: Vec<String>,
}

impl EmailApi {
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Take one raw message: returns once its intake event is held by
    /// JetStream (or it was already known). `mailbox` is the recipient (or
    /// IMAP folder) it was delivered to.
    #[tracing::instrument(skip_all, fields(email_message = tracing::field::Empty, source = source.as_str(), size = raw.len()))]
    pub async fn accept(
        &self,
        raw: &[u8],
        source: Source,
        mailbox: &str,
    ) -> Result<(Outcome, String), AcceptError> {
        let parsed = mime::parse(raw, &self.config).unwrap_or_else(|| Parsed {
            text: String::from_utf8_lossy(raw).into_owned(),
            ..Default::default()
        });
        let raw_sha = sha256_hex(raw);
        let key = if parsed.message_id.is_empty() {
            format!("sha256:{raw_sha}")
        } else {
            parsed.message_id.chars().take(250).collect()
        };
        if let Some(known) = self.by_key(&key).await? {
            tracing::Span::current().record("email_message", known.id.as_str());
            // Recorded by a process that may have died before publishing.
            self.outbox.flush().await.map_err(AcceptError::Publish)?;
            metrics::counter!("guichet_email_messages_total", "outcome" => "duplicate")
                .increment(1);
            tracing::info!(email_message = %known.id, "message already received, not published again");
            return Ok((Outcome::Duplicate, known.id));
        }
        // Original and documents to the object store first: a crash after
        // this leaves unreferenced objects, never a reference to nothing.
        self.objects.put(raw).await?;
        let mut parts = Vec::new();
        for p in &parsed.parts {
            let sha = if p.rejected.is_none() {
                self.objects.put(&p.content).await?
            } else {
                String::new()
            };
            parts.push(StoredPart {
                filename: p.filename.clone(),
                media_type: p.media_type.clone(),
                size_bytes: if p.rejected.is_none() {
                    p.content.len() as u64
                } else {
                    0
                },
                sha256: sha,
                rejected: p.rejected.unwrap_or_default().to_owned(),
                inline: p.inline,
            });
        }
        let cleaned = text::clean(&parsed.text);
        let threading = self.thread(&parsed, &cleaned).await?;
        let now = self.clock.now();
        let id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("email_message", id.as_str());
        let event_id = new_event_id();
        let row = email_message::ActiveModel {
            id: Set(id.clone()),
            direction: Set("in".into()),
            message_key: Set(key.clone()),
            message_id: Set(parsed.message_id.clone()),
            in_reply_to: Set(parsed.in_reply_to.clone()),
            references: Set(parsed.references.join(" ")),
            subject: Set(parsed.subject.clone()),
            from_address: Set(parsed.from_address.clone()),
            to_address: Set(if mailbox.is_empty() {
                parsed.to_address.clone()
            } else {
                mailbox.to_lowercase()
            }),
            text_clean: Set(cleaned.clone()),
            text_full: Set(parsed.text.clone()),
            raw_sha256: Set(raw_sha.clone()),
            size_bytes: Set(raw.len() as i64),
            source: Set(source.as_str().into()),
            intake_event_id: Set(Some(event_id.clone())),
            dossier_id: Set(threading.dossier_id.clone()),
            dossier_reference: Set(threading.reference.clone()),
            auto_submitted: Set(parsed.auto_submitted()),
            auto_reason: Set(parsed.auto_reason.unwrap_or_default().into()),
            bounce: Set(parsed.bounce.is_some()),
            parts: Set(serde_json::to_string(&parts).unwrap_or_else(|_| "[]".into())),
            notification_id: Set(String::new()),
            request_id: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let txn = self.db.begin().await?;
        let model = match row.insert(&txn).await {
            Ok(m) => m,
            Err(e) if is_unique_violation(&e) => {
                // The same message raced us (an SMTP retry on another
                // connection, two replicas polling): the first record wins.
                drop(txn);
                let known = self.by_key(&key).await?.ok_or(AcceptError::Db(e))?;
                self.outbox.flush().await.map_err(AcceptError::Publish)?;
                return Ok((Outcome::Duplicate, known.id));
            }
            Err(e) => return Err(e.into()),
        };
        let intake = self.intake_event(
            &model, &parsed, &parts, &threading, &event_id, mailbox, source,
        );
        let mut staged = vec![intake];
        staged.extend(self.address_events(&txn, &parsed, now).await?);
        for s in &staged {
            self.outbox.stage(&txn, s).await?;
        }
        txn.commit().await?;
        for s in &staged {
            self.outbox
                .publish_now(s)
                .await
                .map_err(|e| AcceptError::Publish(e.to_string()))?;
        }
        let outcome = if parsed.bounce.is_some() {
            "bounce"
        } else if parsed.auto_submitted() {
            "automatic"
        } else {
            "published"
        };
        metrics::counter!("guichet_email_messages_total", "outcome" => outcome).increment(1);
        if let Some(reason) = parsed.auto_reason {
            metrics::counter!("guichet_email_loops_detected_total", "reason" => reason)
                .increment(1);
        }
        for p in parts.iter().filter(|p| !p.rejected.is_empty()) {
            metrics::counter!("guichet_email_rejected_parts_total", "reason" => p.rejected.clone())
                .increment(1);
        }
        tracing::info!(
            email_message = %model.id,
            intake_event_id = %event_id,
            parts = parts.len(),
            rejected = parts.iter().filter(|p| !p.rejected.is_empty()).count(),
            auto_reason = parsed.auto_reason.unwrap_or_default(),
            reference_source = threading.source,
            "email published"
        );
        Ok((Outcome::Published, model.id))
    }

    async fn by_key(&self, key: &str) -> Result<Option<email_message::Model>, sea_orm::DbErr> {
        email_message::Entity::find()
            .filter(email_message::Column::MessageKey.eq(key))
            .one(&self.db)
            .await
    }

    /// The dossier reference: subject, then the thread, then the body.
    async fn thread(&self, p: &Parsed, cleaned: &str) -> Result<Threading, sea_orm::DbErr> {
        let prefix = &self.config.reference_prefix;
        let in_subject = text::references(&p.subject, prefix);
        let in_body = text::references(cleaned, prefix);
        let mut found = in_subject.clone();
        for r in &in_body {
            if !found.contains(r) {
                found.push(r.clone());
            }
        }
        if let Some(r) = in_subject.first() {
            return Ok(Threading {
                reference: r.clone(),
                source: "subject",
                dossier_id: String::new(),
                found,
            });
        }
        let mut ids: Vec<&str> = Vec::new();
        if !p.in_reply_to.is_empty() {
            ids.push(&p.in_reply_to);
        }
        ids.extend(p.references.iter().rev().map(String::as_str));
        // A bounce threads to the message that bounced.
        if let Some(b) = &p.bounce
            && !b.original_message_id.is_empty()
        {
            ids.push(&b.original_message_id);
        }
        for id in ids {
            if let Some(m) = self.by_key(id).await?
                && !m.dossier_reference.is_empty()
            {
                return Ok(Threading {
                    reference: m.dossier_reference,
                    source: "thread",
                    dossier_id: m.dossier_id,
                    found,
                });
            }
        }
        if let Some(r) = in_body.first() {
            return Ok(Threading {
                reference: r.clone(),
                source: "body",
                dossier_id: String::new(),
                found,
            });
        }
        Ok(Threading {
            reference: String::new(),
            source: "",
            dossier_id: String::new(),
            found,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn intake_event(
        &self,
        model: &email_message::Model,
        p: &Parsed,
        parts: &[StoredPart],
        threading: &Threading,
        event_id: &str,
        mailbox: &str,
        source: Source,
    ) -> Staged {
        let trust = sender::check(
            &p.from_address,
            &p.auth_results,
            &self.config.trusted_authserv_ids,
            &self.config.accepted_domains,
        );
        let burst = p.bounce.is_none()
            && !p.auto_submitted()
            && self.bursts.record(
                &p.from_address,
                model.created_at,
                self.config.sender_burst_max,
                chrono::Duration::seconds(
                    i64::try_from(self.config.sender_burst_window_secs).unwrap_or(i64::MAX),
                ),
            );
        if trust.claims_town {
            metrics::counter!("guichet_email_claims_town_total").increment(1);
            tracing::warn!(email_message = %model.id, results = %trust.results, "mail claims the town's own domain from outside; its sender is matched to no citizen");
        }
        if burst {
            metrics::counter!("guichet_email_bursts_total").increment(1);
        }
        metrics::counter!("guichet_email_senders_total", "verified" => if trust.verified { "true" } else { "false" })
            .increment(1);
        // Mail claiming to be the town's, from outside, is nobody's file.
        let citizen = Email::parse(&p.from_address)
            .ok()
            .filter(|_| p.bounce.is_none() && !trust.claims_town)
            .map(|e| {
                let name = guichet_platform::names::split_name(&p.from_name);
                // The phone of the signature is kept on the citizen (as a
                // scanned letter's is); unreadable numbers are dropped.
                let phones = crate::text::sender_phones(&p.text)
                    .into_iter()
                    .filter_map(|n| guichet_platform::contact::Phone::parse(&n).ok())
                    .map(|n| n.as_str().to_owned())
                    .take(3)
                    .collect();
                CitizenHint {
                    given_name: name.given,
                    family_name: name.family,
                    emails: vec![e.as_str().to_owned()],
                    phones,
                    ..Default::default()
                }
            });
        let body = if model.text_clean.trim().is_empty() {
            String::new()
        } else {
            bounded(model.text_clean.clone(), MAX_BODY_BYTES)
        };
        let bounce = p.bounce.clone().unwrap_or_default();
        let event = IntakeEvent {
            id: event_id.to_owned(),
            channel: Channel::Email as i32,
            received_at: Some(timestamp(model.created_at)),
            citizen,
            subject: if p.subject.is_empty() {
                "(sans objet)".into()
            } else {
                p.subject.chars().take(500).collect()
            },
            body,
            attachments: parts
                .iter()
                .filter(|x| x.rejected.is_empty())
                .map(|x| AttachmentRef {
                    sha256: x.sha256.clone(),
                    media_type: x.media_type.clone(),
                    size_bytes: x.size_bytes,
                    filename: x.filename.clone(),
                })
                .collect(),
            quoted_reference: threading.reference.clone(),
            details: Some(intake_event::Details::Email(EmailDetails {
                message_id: p.message_id.clone(),
                in_reply_to: p.in_reply_to.clone(),
                references: p.references.clone(),
                mailbox: mailbox.to_lowercase(),
                email_message: format!("emailMessages/{}", model.id),
                source: source.as_str().into(),
                auto_submitted: p.auto_submitted(),
                auto_reason: p.auto_reason.unwrap_or_default().into(),
                bounce: p.bounce.is_some(),
                bounced_recipient: bounce.recipient.clone(),
                bounce_status: bounce.status.clone(),
                reference_source: threading.source.into(),
                references_found: threading.found.clone(),
                raw_sha256: model.raw_sha256.clone(),
                rejected_parts: parts
                    .iter()
                    .filter(|x| !x.rejected.is_empty())
                    .map(|x| RejectedPart {
                        filename: x.filename.clone(),
                        media_type: x.media_type.clone(),
                        size_bytes: x.size_bytes,
                        reason: x.rejected.clone(),
                    })
                    .collect(),
                tnef: p.tnef,
                forwarded_subjects: p.forwarded_subjects.clone(),
                sender_verified: trust.verified,
                sender_auth: trust.results.clone(),
                claims_town_domain: trust.claims_town,
                burst,
            })),
        };
        self.outbox.intake_event(
            &event,
            format!("emailMessages/{}", model.id),
            model.created_at,
        )
    }

    /// A bounce blocks the failed address (`address_undeliverable`); a
    /// person's new message from a blocked address lifts the block
    /// (`address_deliverable`, cleared).
    async fn address_events(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        p: &Parsed,
        now: chrono::DateTime<Utc>,
    ) -> Result<Vec<Staged>, sea_orm::DbErr> {
        let mut out = Vec::new();
        if let Some(b) = &p.bounce {
            metrics::counter!("guichet_email_bounces_total", "permanent" => b.permanent.to_string())
                .increment(1);
            if b.recipient.is_empty() || !b.permanent {
                return Ok(out);
            }
            let reason = format!("{} {}", b.status, b.diagnostic)
                .trim()
                .chars()
                .take(200)
                .collect::<String>();
            blocked_address::Entity::delete_by_id(b.recipient.clone())
                .exec(txn)
                .await?;
            blocked_address::ActiveModel {
                address: Set(b.recipient.clone()),
                reason: Set(reason.clone()),
                bounce_message_id: Set(p.message_id.clone()),
                blocked_at: Set(now),
            }
            .insert(txn)
            .await?;
            let msg = AddressUndeliverable {
                address: b.recipient.clone(),
                reason,
                bounce_message_id: p.message_id.clone(),
                original_message_id: b.original_message_id.clone(),
                permanent: true,
                observed_at: Some(timestamp(now)),
                cleared: false,
            };
            out.push(self.outbox.domain_event(
                "email",
                "address_undeliverable",
                "emailAddresses/undeliverable".into(),
                &msg,
            ));
            return Ok(out);
        }
        if p.auto_submitted() || p.from_address.is_empty() {
            return Ok(out);
        }
        let blocked = blocked_address::Entity::find_by_id(p.from_address.clone())
            .one(txn)
            .await?;
        if blocked.is_some() {
            blocked_address::Entity::delete_by_id(p.from_address.clone())
                .exec(txn)
                .await?;
            let msg = AddressUndeliverable {
                address: p.from_address.clone(),
                reason: "nouveau message reçu de cette adresse".into(),
                bounce_message_id: String::new(),
                original_message_id: p.message_id.clone(),
                permanent: false,
                observed_at: Some(timestamp(now)),
                cleared: true,
            };
            out.push(self.outbox.domain_event(
                "email",
                "address_deliverable",
                "emailAddresses/deliverable".into(),
                &msg,
            ));
        }
        Ok(out)
    }

    /// The dossier's most recent message (the thread a reply continues).
    pub(crate) async fn last_of_dossier(
        &self,
        dossier_id: &str,
    ) -> Result<Option<email_message::Model>, sea_orm::DbErr> {
        email_message::Entity::find()
            .filter(email_message::Column::DossierId.eq(dossier_id))
            .order_by_desc(email_message::Column::CreatedAt)
            .order_by_desc(email_message::Column::Id)
            .one(&self.db)
            .await
    }

    /// A Message-ID for mail guichet sends (without brackets).
    pub(crate) fn new_message_id(&self) -> String {
        format!("{}@{}", uuid::Uuid::now_v7().simple(), self.config.hostname)
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub(crate) fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(8);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("\n[…]");
    text
}
