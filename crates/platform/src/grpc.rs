//! gRPC serving shared by every role, and the error vocabulary of its APIs.
//!
//! All gRPC services of a process share one port. Health checking
//! (`grpc.health.v1`) and reflection are always mounted, without auth.
//! Every request gets a server span (`rpc.*` attributes) whose parent comes
//! from the caller's `traceparent`, and request counts and latencies go to
//! Prometheus.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::{Code, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::admin::Readiness;
use tonic_types::{ErrorDetails, StatusExt};

/// Collects the gRPC services of the roles a process runs.
pub struct GrpcServer {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
}

impl Default for GrpcServer {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServer {
    pub fn new() -> Self {
        GrpcServer {
            routes: RoutesBuilder::default(),
            names: Vec::new(),
        }
    }

    /// Mount a service (usually wrapped in the auth interceptor).
    pub fn add<S>(&mut self, svc: S) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// Serve until `shutdown`, then let in-flight calls finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        readiness: Readiness,
    ) -> anyhow::Result<()> {
        // gRPC health mirrors readiness (started, bus connected, databases
        // answering), so Kubernetes' native gRPC probes and load balancers
        // see what `/readyz` sees.
        let (reporter, health) = tonic_health::server::health_reporter();
        let initial = health_status(&readiness).await;
        set_all(&reporter, &self.names, initial).await;
        let mirror_reporter = reporter.clone();
        let mirror_names = self.names.clone();
        let mirror_stop = shutdown.clone();
        tokio::spawn(async move {
            let mut last = initial;
            loop {
                tokio::select! {
                    _ = mirror_stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                }
                let now = health_status(&readiness).await;
                if now != last {
                    tracing::info!(
                        serving = now == ServingStatus::Serving,
                        "grpc health changed"
                    );
                    set_all(&mirror_reporter, &mirror_names, now).await;
                    last = now;
                }
            }
        });
        // Reflection lists only what this process serves (the descriptor set
        // also holds the contracts of roles it does not run).
        let reflection = || {
            let mut b = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(guichet_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health");
            for name in &self.names {
                b = b.with_service_name(*name);
            }
            b
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let mut routes = self.routes;
        routes
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let names = self.names.clone();
        let drain = shutdown.clone();
        let signal = async move {
            drain.cancelled().await;
            // Tell load balancers first, then stop accepting.
            set_all(&reporter, &names, ServingStatus::NotServing).await;
        };
        // No Nagle: small unary replies must not wait for a delayed ACK
        // (measured ~40 ms on loopback without it).
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .trace_fn(server_span)
            .layer(tower::layer::layer_fn(|inner| GrpcMetrics { inner }))
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, signal)
            .await?;
        Ok(())
    }
}

async fn health_status(readiness: &Readiness) -> ServingStatus {
    if readiness.check().await.is_ok() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

async fn set_all(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
    reporter.set_service_status("", status).await;
}

/// Probes and tools (health checks, reflection) are not traced: a trace
/// per probe every few seconds would drown the requests.
fn untraced(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

fn server_span(req: &http::Request<()>) -> tracing::Span {
    let path = req.uri().path();
    if untraced(path) {
        return tracing::Span::none();
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    // The status fields are recorded when the answer is known (see
    // `GrpcMetrics`).
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    crate::telemetry::extract_http(req.headers(), &span);
    span
}

/// Counts requests and measures latency per method and status code, and
/// tells the auth interceptor which method is called.
#[derive(Clone)]
struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        // The auth interceptor checks the access table by this path.
        req.extensions_mut()
            .insert(crate::access::CalledMethod(method.clone()));
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            // Tonic sends errors as trailers-only responses (status in the
            // headers); success carries its status in trailers.
            let code = match &res {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                Err(_) => "transport".to_owned(),
            };
            // The server span (entered around this call) says how it ended:
            // `rpc.grpc.status_code`, and an error status for any code but OK.
            let span = tracing::Span::current();
            if let Ok(n) = code.parse::<i32>() {
                span.record("rpc.grpc.status_code", n);
                if n != 0 {
                    span.record("otel.status_code", "error");
                    span.record(
                        "otel.status_description",
                        format!("{:?}", Code::from_i32(n)).as_str(),
                    );
                }
            } else {
                span.record("otel.status_code", "error");
                span.record("otel.status_description", "transport error");
            }
            metrics::counter!("guichet_grpc_server_requests_total", "rpc_method" => method.clone(), "grpc_code" => code)
                .increment(1);
            metrics::histogram!("guichet_grpc_server_duration_seconds", "rpc_method" => method)
                .record(start.elapsed().as_secs_f64());
            res
        })
    }
}

/// A channel to another role (or municipal system) at `url`, named by its
/// configuration `key` in errors: connected on first use, 3 s to connect,
/// 15 s per call.
pub fn lazy_channel(key: &str, url: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| anyhow::anyhow!("{key} `{url}`: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(15))
        .connect_lazy())
}

/// Bind a role's optional HTTP listener (`key` names the setting in
/// errors); an empty address: no listener.
pub async fn bind_optional(
    key: &str,
    addr: &str,
) -> anyhow::Result<(Option<TcpListener>, Option<std::net::SocketAddr>)> {
    if addr.is_empty() {
        return Ok((None, None));
    }
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {key} {addr}: {e}"))?;
    let local = l.local_addr()?;
    Ok((Some(l), Some(local)))
}

/// `InvalidArgument` naming the field, with a `google.rpc.BadRequest` detail.
pub fn invalid_argument(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(field, description.clone());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid {field}: {description}"),
        details,
    )
}

/// `NotFound` with a `google.rpc.ResourceInfo` detail.
pub fn not_found(resource_type: &str, name: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.set_resource_info(resource_type, name, "", "not found");
    Status::with_error_details(
        Code::NotFound,
        format!("{resource_type} `{name}` not found"),
        details,
    )
}

/// `FailedPrecondition` with a `google.rpc.PreconditionFailure` detail.
pub fn failed_precondition(kind: &str, subject: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let mut details = ErrorDetails::new();
    details.add_precondition_failure_violation(kind, subject, description.clone());
    Status::with_error_details(Code::FailedPrecondition, description, details)
}

/// Log an internal error with its context and return it without internals.
pub fn internal(context: &str, err: impl std::fmt::Display) -> Status {
    tracing::error!(error = %err, context, "internal error");
    Status::internal(format!("internal error ({context})"))
}

/// [`internal`] as a `map_err` argument: `.map_err(internal_err("get dossier"))`.
pub fn internal_err<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Status + '_ {
    move |e| internal(context, e)
}

/// `Unavailable`: a dependency (database, bus, another role) is down; the
/// caller may retry.
pub fn unavailable(context: &str, err: impl std::fmt::Display) -> Status {
    tracing::warn!(error = %err, context, "dependency unavailable");
    Status::unavailable(format!("temporarily unavailable ({context}), retry later"))
}

/// AIP-158 page size: 0 → `default`, capped at `max`, negative refused.
pub fn page_size(requested: i32, default: u64, max: u64) -> Result<u64, Status> {
    match requested {
        n if n < 0 => Err(invalid_argument("page_size", "must not be negative")),
        0 => Ok(default),
        n => Ok((n as u64).min(max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_a_field_violation() {
        let status = invalid_argument("citizen.phones[0]", "not a phone number");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request detail");
        assert_eq!(bad.field_violations[0].field, "citizen.phones[0]");
    }

    #[test]
    fn page_size_defaults_caps_and_refuses_negatives() {
        assert_eq!(page_size(0, 50, 500).unwrap(), 50);
        assert_eq!(page_size(10_000, 50, 500).unwrap(), 500);
        assert_eq!(
            page_size(-1, 50, 500).unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}
