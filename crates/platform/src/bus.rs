//! The NATS/JetStream bus and its CloudEvents envelope.
//!
//! * Streams `INTAKE` (work queue), `EVENTS` (replayable domain events),
//!   `NOTIFY` (delivery requests) and `DEADLETTER` (poison messages), each
//!   declared idempotently by the role that owns it.
//! * Every message is a CloudEvent in binary mode: `ce-*` headers, a
//!   protobuf body, `Nats-Msg-Id` = `ce-id` so JetStream drops duplicates of
//!   a retried publish, and `traceparent` so traces cross the bus.
//! * [`Bus::publish`] returns only once JetStream has stored the message:
//!   callers acknowledge their own source after it, never before.
//! * [`Bus::consume`] runs a durable pull consumer with explicit acks,
//!   bounded concurrency and bounded redelivery; a message that fails
//!   permanently, or too often, is copied to the dead-letter stream with the
//!   reason and then acknowledged, so it never blocks the ones behind it.
//!
//! Subjects and stream names take a configurable prefix, which lets several
//! installations (and every test) share one NATS server without meeting.

use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub url: String,
    /// First token of every subject (`guichet` → `guichet.intake.counter`).
    pub subject_prefix: String,
    /// Prepended to stream names (empty → `INTAKE`, `EVENTS`…).
    #[serde(default)]
    pub stream_prefix: String,
    /// Stream replicas: 1 on one server, 3 on a JetStream cluster.
    pub replicas: usize,
    /// Deliveries of one message before it goes to the dead-letter stream.
    pub max_deliver: i64,
    /// How long a consumer may hold a message before it is redelivered.
    pub ack_wait_secs: u64,
    /// First redelivery delay after a transient failure; doubles each time.
    pub retry_base_ms: u64,
    /// How long to keep retrying the first connection.
    pub connect_timeout_secs: u64,
    /// Keep domain events this long (EVENTS is replayable for indicators).
    pub events_max_age_days: u64,
}

impl BusConfig {
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        use crate::config::ConfigError;
        if !self.url.starts_with("nats://") && !self.url.starts_with("tls://") {
            return Err(ConfigError::invalid(
                "bus.url",
                "expected a nats:// or tls:// URL",
            ));
        }
        if self.subject_prefix.is_empty() || self.subject_prefix.contains(['.', '*', '>', ' ']) {
            return Err(ConfigError::invalid(
                "bus.subject_prefix",
                "must be one non-empty subject token (no '.', '*', '>' or spaces)",
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(ConfigError::invalid(
                "bus.replicas",
                "must be between 1 and 5",
            ));
        }
        if self.max_deliver < 1 {
            return Err(ConfigError::invalid(
                "bus.max_deliver",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The streams guichet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Intake,
    Events,
    Notify,
    DeadLetter,
}

impl StreamKind {
    fn base_name(self) -> &'static str {
        match self {
            StreamKind::Intake => "INTAKE",
            StreamKind::Events => "EVENTS",
            StreamKind::Notify => "NOTIFY",
            StreamKind::DeadLetter => "DEADLETTER",
        }
    }
    fn token(self) -> &'static str {
        match self {
            StreamKind::Intake => "intake",
            StreamKind::Events => "events",
            StreamKind::Notify => "notify",
            StreamKind::DeadLetter => "deadletter",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("JetStream error: {0}")]
    JetStream(String),
    #[error("publish was not acknowledged by JetStream: {0}")]
    Publish(String),
}

fn js_err(e: impl std::fmt::Display) -> BusError {
    BusError::JetStream(e.to_string())
}

/// An event to publish: CloudEvents attributes plus a protobuf body.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    /// `ce-id`, also `Nats-Msg-Id`: retrying with the same id is harmless.
    pub id: String,
    /// `ce-type`, e.g. `guichet.intake.v1.intake_event`.
    pub ty: String,
    /// `ce-subject`: the resource the event is about.
    pub subject: String,
    pub time: DateTime<Utc>,
    pub body: Bytes,
}

/// An event as a consumer receives it.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub id: String,
    pub ty: String,
    pub source: String,
    pub subject: String,
    pub time: Option<DateTime<Utc>>,
    pub nats_subject: String,
    pub body: Bytes,
    /// How many times this message has been delivered (1 the first time).
    pub delivered: i64,
    pub stream_sequence: u64,
}

/// What a handler says about a message it could not process.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Retrying cannot help (undecodable body, invalid content): dead-letter now.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// Retrying may help (a peer is down, a database is busy).
    #[error("transient failure: {0}")]
    Transient(String),
}

/// A connected bus.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    cfg: BusConfig,
    /// `ce-source` of what this process publishes, e.g. `guichet/routing`.
    source: String,
}

impl Bus {
    /// Connect, retrying with backoff for `connect_timeout_secs`.
    pub async fn connect(cfg: &BusConfig, source: &str) -> Result<Bus, BusError> {
        use backon::BackoffBuilder;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.connect_timeout_secs);
        // 100 ms doubling up to 2 s, until the deadline.
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_factor(2.0)
            .without_max_times()
            .build();
        loop {
            let attempt = async_nats::ConnectOptions::new()
                .name(source)
                .connection_timeout(Duration::from_secs(2))
                .retry_on_initial_connect()
                .max_reconnects(None)
                .event_callback(|event| async move {
                    tracing::info!(%event, "nats connection event");
                });
            // retry_on_initial_connect makes connect return at once; wait for
            // the connection here so a wrong URL is reported, not hidden.
            let client = attempt.connect(cfg.url.as_str()).await;
            match client {
                Ok(client) => {
                    if wait_connected(&client, deadline).await {
                        let js = jetstream::new(client.clone());
                        return Ok(Bus {
                            client,
                            js,
                            cfg: cfg.clone(),
                            source: source.to_owned(),
                        });
                    }
                    return Err(BusError::Connect {
                        url: cfg.url.clone(),
                        reason: "no answer before bus.connect_timeout_secs".into(),
                    });
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "nats not reachable yet, retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(2))).await;
                }
                Err(e) => {
                    return Err(BusError::Connect {
                        url: cfg.url.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    /// The JetStream context (consumers that manage their own pull loop).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Whether the connection is up (for readiness).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// A full subject: `subject("intake.counter")` → `guichet.intake.counter`.
    pub fn subject(&self, rest: &str) -> String {
        format!("{}.{}", self.cfg.subject_prefix, rest)
    }

    pub fn stream_name(&self, kind: StreamKind) -> String {
        format!("{}{}", self.cfg.stream_prefix, kind.base_name())
    }

    /// Subject of a domain event: `guichet.events.<service>.<type>`.
    pub fn event_subject(&self, service: &str, ty: &str) -> String {
        self.subject(&format!("events.{service}.{ty}"))
    }

    /// Declare a stream, creating or updating it (idempotent).
    pub async fn ensure_stream(&self, kind: StreamKind) -> Result<(), BusError> {
        let name = self.stream_name(kind);
        let subjects = vec![self.subject(&format!("{}.>", kind.token()))];
        let (retention, max_age) = match kind {
            StreamKind::Intake => (stream::RetentionPolicy::WorkQueue, Duration::ZERO),
            StreamKind::Events => (
                stream::RetentionPolicy::Limits,
                Duration::from_secs(self.cfg.events_max_age_days * 86_400),
            ),
            StreamKind::Notify => (stream::RetentionPolicy::WorkQueue, Duration::ZERO),
            StreamKind::DeadLetter => (
                stream::RetentionPolicy::Limits,
                Duration::from_secs(90 * 86_400),
            ),
        };
        let config = stream::Config {
            name: name.clone(),
            subjects,
            retention,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: self.cfg.replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        match self.js.get_stream(&name).await {
            Ok(_) => {
                self.js.update_stream(config).await.map_err(js_err)?;
            }
            Err(_) => {
                if let Err(e) = self.js.create_stream(config.clone()).await {
                    // Another replica may have created it in between.
                    if self.js.get_stream(&name).await.is_err() {
                        return Err(js_err(e));
                    }
                }
            }
        }
        tracing::debug!(stream = %name, "stream declared");
        Ok(())
    }

    /// Publish and wait for JetStream's acknowledgement.
    pub async fn publish(
        &self,
        nats_subject: String,
        event: &OutgoingEvent,
    ) -> Result<(), BusError> {
        let span = tracing::info_span!(
            "publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation = "publish",
            messaging.destination.name = %nats_subject,
            messaging.message.id = %event.id,
            cloudevents.event_type = %event.ty,
        );
        async {
            let mut headers = HeaderMap::new();
            headers.insert("ce-specversion", "1.0");
            headers.insert("ce-id", event.id.as_str());
            headers.insert("ce-type", event.ty.as_str());
            headers.insert("ce-source", self.source.as_str());
            headers.insert("ce-subject", event.subject.as_str());
            headers.insert("ce-time", event.time.to_rfc3339().as_str());
            headers.insert("content-type", "application/protobuf");
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
            crate::telemetry::inject_nats(&mut headers);
            let ack = self
                .js
                .publish_with_headers(nats_subject.clone(), headers, event.body.clone())
                .await
                .map_err(|e| BusError::Publish(e.to_string()))?;
            let ack = ack.await.map_err(|e| BusError::Publish(e.to_string()))?;
            metrics::counter!("guichet_bus_published_total", "stream" => ack.stream.clone())
                .increment(1);
            if ack.duplicate {
                tracing::debug!(event_id = %event.id, "duplicate publish dropped by jetstream");
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Run a durable pull consumer until `shutdown`; returns after in-flight
    /// messages are handled (the caller bounds that with a grace period).
    pub async fn consume<H, Fut>(
        &self,
        kind: StreamKind,
        durable: &str,
        filter: String,
        concurrency: usize,
        shutdown: CancellationToken,
        handler: H,
    ) -> Result<(), BusError>
    where
        H: Fn(IncomingEvent) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send,
    {
        let stream_name = self.stream_name(kind);
        let stream = self.js.get_stream(&stream_name).await.map_err(js_err)?;
        let config = consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(self.cfg.ack_wait_secs),
            max_deliver: self.cfg.max_deliver + 1,
            filter_subject: filter,
            max_ack_pending: (concurrency * 4) as i64,
            ..Default::default()
        };
        let consumer = match stream.get_consumer::<consumer::pull::Config>(durable).await {
            Ok(c) => c,
            Err(_) => stream.create_consumer(config).await.map_err(js_err)?,
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(concurrency.max(1))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(js_err)?;
        tracing::info!(stream = %stream_name, consumer = durable, "consuming");
        let durable = durable.to_owned();
        messages
            .take_until(shutdown.cancelled_owned())
            .for_each_concurrent(concurrency.max(1), |msg| {
                let handler = handler.clone();
                let durable = durable.clone();
                let stream_name = stream_name.clone();
                async move {
                    match msg {
                        Ok(msg) => self.handle(msg, &stream_name, &durable, handler).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "error pulling messages");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
            .await;
        tracing::info!(stream = %self.stream_name(kind), consumer = %durable, "consumer stopped");
        Ok(())
    }

    async fn handle<H, Fut>(
        &self,
        msg: jetstream::Message,
        stream_name: &str,
        durable: &str,
        handler: H,
    ) where
        H: Fn(IncomingEvent) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        let (delivered, stream_sequence) = msg
            .info()
            .map(|i| (i.delivered, i.stream_sequence))
            .unwrap_or((1, 0));
        let headers = msg.headers.clone().unwrap_or_default();
        let span = tracing::info_span!(
            "process",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation = "process",
            messaging.destination.name = %msg.subject,
            messaging.consumer.group.name = durable,
            messaging.message.id = tracing::field::Empty,
            messaging.nats.delivered = delivered,
        );
        crate::telemetry::extract_nats(&headers, &span);
        let outcome = async {
            let event = match decode_envelope(&msg, &headers, delivered, stream_sequence) {
                Ok(e) => e,
                Err(reason) => return Err(HandlerError::Permanent(reason)),
            };
            tracing::Span::current().record("messaging.message.id", event.id.as_str());
            handler(event).await
        }
        .instrument(span.clone())
        .await;
        // Never hold `span.enter()` across an await: a stale entered span
        // makes tracing-subscriber panic on the next `Span::current()`.
        self.settle(
            msg,
            headers,
            durable,
            stream_name,
            stream_sequence,
            delivered,
            outcome,
        )
        .instrument(span)
        .await;
    }

    /// Acknowledge, retry or dead-letter one processed message.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        msg: jetstream::Message,
        headers: HeaderMap,
        durable: &str,
        stream_name: &str,
        stream_sequence: u64,
        delivered: i64,
        outcome: Result<(), HandlerError>,
    ) {
        let labels = [
            ("stream", stream_name.to_owned()),
            ("consumer", durable.to_owned()),
        ];
        match outcome {
            Ok(()) => {
                metrics::counter!("guichet_bus_consumed_total", &labels).increment(1);
                if let Err(e) = msg.double_ack().await {
                    // Not acked: it will be redelivered and the idempotent
                    // handler will recognise it.
                    tracing::warn!(error = %e, "ack failed");
                }
            }
            Err(HandlerError::Transient(reason)) if delivered < self.cfg.max_deliver => {
                let factor = 1u64 << (delivered.clamp(1, 16) - 1);
                let delay = Duration::from_millis((self.cfg.retry_base_ms * factor).min(60_000));
                tracing::warn!(%reason, delivered, delay_ms = delay.as_millis() as u64, "transient failure, will retry");
                metrics::counter!("guichet_bus_retried_total", &labels).increment(1);
                let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(%reason, delivered, "message dead-lettered");
                metrics::counter!("guichet_bus_dead_lettered_total", &labels).increment(1);
                if let Err(e) = self
                    .dead_letter(&msg, headers, durable, &reason, stream_sequence)
                    .await
                {
                    // Keep it: better redelivered than lost.
                    tracing::error!(error = %e, "cannot dead-letter, leaving message for redelivery");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                        .await;
                    return;
                }
                let _ = msg.double_ack().await;
            }
        }
    }

    async fn dead_letter(
        &self,
        msg: &jetstream::Message,
        mut headers: HeaderMap,
        durable: &str,
        reason: &str,
        stream_sequence: u64,
    ) -> Result<(), BusError> {
        let subject = self.subject(&format!("deadletter.{durable}"));
        headers.insert(
            "guichet-dlq-reason",
            reason.replace(['\r', '\n'], " ").as_str(),
        );
        headers.insert("guichet-dlq-subject", msg.subject.as_str());
        headers.insert(
            "guichet-dlq-stream-sequence",
            stream_sequence.to_string().as_str(),
        );
        // A dead-lettered copy is unique per original message.
        let id = format!(
            "dlq-{durable}-{stream_sequence}-{}",
            headers.get("ce-id").map(|v| v.as_str()).unwrap_or("")
        );
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        let ack = self
            .js
            .publish_with_headers(subject, headers, msg.payload.clone())
            .await
            .map_err(|e| BusError::Publish(e.to_string()))?;
        ack.await.map_err(|e| BusError::Publish(e.to_string()))?;
        Ok(())
    }
}

async fn wait_connected(client: &async_nats::Client, deadline: tokio::time::Instant) -> bool {
    loop {
        if client.connection_state() == async_nats::connection::State::Connected {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn decode_envelope(
    msg: &jetstream::Message,
    headers: &HeaderMap,
    delivered: i64,
    stream_sequence: u64,
) -> Result<IncomingEvent, String> {
    let get = |k: &str| headers.get(k).map(|v| v.as_str().to_owned());
    let id = get("ce-id")
        .filter(|s| !s.is_empty())
        .ok_or("missing ce-id header")?;
    let ty = get("ce-type")
        .filter(|s| !s.is_empty())
        .ok_or("missing ce-type header")?;
    let time = match get("ce-time") {
        Some(t) => Some(
            DateTime::parse_from_rfc3339(&t)
                .map_err(|e| format!("invalid ce-time header: {e}"))?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    Ok(IncomingEvent {
        id,
        ty,
        source: get("ce-source").unwrap_or_default(),
        subject: get("ce-subject").unwrap_or_default(),
        time,
        nats_subject: msg.subject.to_string(),
        body: msg.payload.clone(),
        delivered,
        stream_sequence,
    })
}

impl IncomingEvent {
    /// The CloudEvents envelope of a JetStream message, for consumers that
    /// pull and settle messages themselves (the indicators' batches).
    pub fn from_message(msg: &jetstream::Message) -> Result<IncomingEvent, String> {
        let (delivered, stream_sequence) = msg
            .info()
            .map(|i| (i.delivered, i.stream_sequence))
            .unwrap_or((1, 0));
        let headers = msg.headers.clone().unwrap_or_default();
        decode_envelope(msg, &headers, delivered, stream_sequence)
    }
}

/// A new event id: UUID v7, time-ordered.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
