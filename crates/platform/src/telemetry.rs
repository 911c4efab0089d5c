//! Logs, traces and trace-context propagation.
//!
//! `tracing` everywhere. Logs go to stderr (text for people, JSON for
//! collectors), filtered by `log_filter`. Spans always go through an
//! OpenTelemetry layer with its own level filter — never the log filter, or
//! `RUST_LOG=warn` would blank every trace id — and are exported over OTLP
//! only when an endpoint is configured. W3C trace context crosses NATS
//! headers ([`inject_nats`]/[`extract_nats`]) and gRPC metadata
//! ([`inject_grpc`]/[`extract_http`]), so one citizen request is one trace
//! from ingress to the queue. Span attributes carry ids, never personal data.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// `EnvFilter` directives for logs only, e.g. `info,guichet_routing=debug`.
    pub log_filter: String,
    /// OTLP/gRPC endpoint (e.g. `http://otel-collector:4317`); empty = no export.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// `service.name` resource attribute of exported spans.
    pub service_name: String,
}

impl TelemetryConfig {
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        EnvFilter::try_new(&self.log_filter).map_err(|e| {
            crate::config::ConfigError::invalid("telemetry.log_filter", e.to_string())
        })?;
        if !self.otlp_endpoint.is_empty() && !self.otlp_endpoint.starts_with("http") {
            return Err(crate::config::ConfigError::invalid(
                "telemetry.otlp_endpoint",
                "expected an http:// or https:// URL",
            ));
        }
        Ok(())
    }
}

/// Flushes and shuts the tracer provider down when dropped (bounded).
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let provider = self.provider.clone();
        // The OTLP exporter blocks for its timeout when the collector is gone:
        // never hold the process hostage for it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = provider.shutdown();
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(Duration::from_secs(3));
    }
}

/// Install the global subscriber and propagator from configuration.
pub fn init(cfg: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .build(),
    );
    if !cfg.otlp_endpoint.is_empty() {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.otlp_endpoint.clone())
            .with_timeout(Duration::from_secs(3))
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    init_with_provider(cfg, builder.build())
}

/// Install the global subscriber with a given tracer provider (tests pass one
/// backed by an in-memory exporter).
pub fn init_with_provider(
    cfg: &TelemetryConfig,
    provider: SdkTracerProvider,
) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("guichet");
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(LevelFilter::INFO);
    let filter = EnvFilter::try_new(&cfg.log_filter)?;
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

struct NatsHeaders<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsHeadersRef<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Write the current span's context into NATS headers (`traceparent`).
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut NatsHeaders(headers))
    });
}

/// Make `span` a child of the context carried in NATS headers, if any.
pub fn extract_nats(headers: &async_nats::HeaderMap, span: &tracing::Span) {
    let cx =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&NatsHeadersRef(headers)));
    let _ = span.set_parent(cx);
}

struct HttpHeadersRef<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Make `span` a child of the context carried in HTTP/gRPC headers, if any.
pub fn extract_http(headers: &http::HeaderMap, span: &tracing::Span) {
    let cx =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HttpHeadersRef(headers)));
    let _ = span.set_parent(cx);
}

struct GrpcMetadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for GrpcMetadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Write the current span's context into outgoing gRPC metadata.
pub fn inject_grpc(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut GrpcMetadata(metadata))
    });
}
