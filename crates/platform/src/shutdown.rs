//! One cancellation token per process, cancelled by SIGTERM or Ctrl-C.
//!
//! Every task takes a child of this token. Intake stops first (listeners and
//! consumers stop pulling), in-flight work finishes within the grace period,
//! and nothing is acknowledged that was not committed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A token cancelled when the process receives SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received, draining");
        t.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM, only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Wait for `fut` to finish, at most `grace` after `token` is cancelled.
/// Returns `None` when the grace period ran out first.
pub async fn drain<F: std::future::Future>(
    token: &CancellationToken,
    grace: Duration,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    tokio::select! {
        out = &mut fut => return Some(out),
        _ = token.cancelled() => {}
    }
    match tokio::time::timeout(grace, fut).await {
        Ok(out) => Some(out),
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "grace period over, stopping with work in flight"
            );
            None
        }
    }
}
