//! The admin HTTP server every process runs: `/healthz` (the process is
//! alive), `/readyz` (it can do its work: started, bus connected, databases
//! answering; false while draining) and `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Readiness: a started flag plus named checks contributed by each role.
#[derive(Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    checks: Arc<std::sync::Mutex<Vec<(String, CheckFn)>>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a named check; it runs on every `/readyz` request.
    pub fn add_check<F, Fut>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let f: CheckFn = Arc::new(move || Box::pin(check()));
        if let Ok(mut checks) = self.checks.lock() {
            checks.push((name.into(), f));
        }
    }

    /// Mark the process ready (all roles started) or not (draining).
    pub fn set_started(&self, started: bool) {
        self.started.store(started, Ordering::SeqCst);
    }

    /// Run every check; `Err` lists what failed.
    pub async fn check(&self) -> Result<(), Vec<String>> {
        let mut failures = Vec::new();
        if !self.started.load(Ordering::SeqCst) {
            failures.push("not started or draining".to_owned());
        }
        let checks: Vec<(String, CheckFn)> =
            self.checks.lock().map(|c| c.clone()).unwrap_or_default();
        for (name, check) in checks {
            if let Err(reason) = check().await {
                failures.push(format!("{name}: {reason}"));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }
}

static PROMETHEUS: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "prometheus recorder not installed");
                None
            }
        })
        .clone()
}

/// Serve the admin endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let handle = prometheus();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    match handle {
                        Some(h) => (
                            StatusCode::OK,
                            [("content-type", "text/plain; version=0.0.4")],
                            h.render(),
                        )
                            .into_response(),
                        None => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "metrics recorder unavailable\n",
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .with_state(readiness);
    crate::net::serve_http(listener, app, shutdown, "admin", Default::default()).await
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    match readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(failures) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", failures.join("\n")),
        ),
    }
}
