//! Who is on the other end of an HTTP request: the peer, or the client a
//! trusted reverse proxy forwarded (the signing pages' evidence, the
//! citizens' pages' per-address limits).

use std::net::IpAddr;

use http::HeaderMap;

/// The client address: the peer, or — when the peer is a trusted proxy —
/// the right-most X-Forwarded-For entry that is not a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut ip = peer;
    for h in headers.get_all("x-forwarded-for") {
        let Ok(v) = h.to_str() else { continue };
        for part in v.split(',').rev() {
            match part.trim().parse::<IpAddr>() {
                Ok(p) if trusted.contains(&p) => continue,
                Ok(p) => return p,
                Err(_) => return ip,
            }
        }
    }
    // Only proxies in the chain: keep the last one seen.
    if let Some(first) = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|p| p.trim().parse().ok())
    {
        ip = first;
    }
    ip
}

/// Bounds of every HTTP listener of guichet (pages, webhooks, feeds, the
/// admin port): a client must send its request headers within
/// `header_read_timeout` (a half-sent request, or a connection opened and
/// left silent, is closed), and a listener holds at most `max_connections`
/// connections, `max_per_address` of them from one client address; a
/// connection beyond is closed at once. Counted in
/// `guichet_http_connections_refused_total{listener, reason}`.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_read_timeout: std::time::Duration,
    pub max_connections: usize,
    pub max_per_address: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: std::time::Duration::from_secs(10),
            max_connections: 4096,
            // A reverse proxy or the town hall's NAT is one address for many
            // people (and each open page holds a live-update connection).
            max_per_address: 1024,
        }
    }
}

/// Open connections of one listener, in total and by client address.
#[derive(Default)]
struct Connections {
    total: usize,
    by_address: std::collections::HashMap<IpAddr, usize>,
}

/// The connections (or sessions) a listener holds, within a bound in total
/// and per client address: HTTP listeners and the SMTP/LMTP listener.
#[derive(Clone)]
pub struct ConnectionTable {
    held: std::sync::Arc<std::sync::Mutex<Connections>>,
    max_total: usize,
    max_per_address: usize,
}

impl ConnectionTable {
    pub fn new(max_total: usize, max_per_address: usize) -> ConnectionTable {
        ConnectionTable {
            held: Default::default(),
            max_total,
            max_per_address,
        }
    }

    /// Hold one connection from `ip`, or say which bound refuses it
    /// (`listener_full`, `address_full`).
    pub fn hold(&self, ip: IpAddr) -> Result<Held, &'static str> {
        let mut t = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if t.total >= self.max_total {
            return Err("listener_full");
        }
        let from = t.by_address.entry(ip).or_insert(0);
        if *from >= self.max_per_address {
            return Err("address_full");
        }
        *from += 1;
        t.total += 1;
        Ok(Held {
            table: self.held.clone(),
            ip,
        })
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One held connection; released on drop.
pub struct Held {
    table: std::sync::Arc<std::sync::Mutex<Connections>>,
    ip: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.by_address.remove(&self.ip);
            }
        }
    }
}

/// Serve `app` on `listener` until `shutdown`, within `limits`, then let
/// in-flight requests finish. Handlers can read the peer with
/// `ConnectInfo<SocketAddr>`. `name` labels the metrics (`portal`…).
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
    name: &'static str,
    limits: HttpLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    let table = ConnectionTable::new(limits.max_connections, limits.max_per_address);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    // Refusals are counted from the start (a series that exists at zero).
    for reason in ["listener_full", "address_full"] {
        metrics::counter!("guichet_http_connections_refused_total", "listener" => name, "reason" => reason)
            .increment(0);
    }
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, listener = name, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let held = match table.hold(peer.ip()) {
            Ok(held) => held,
            Err(reason) => {
                metrics::counter!("guichet_http_connections_refused_total", "listener" => name, "reason" => reason)
                    .increment(1);
                drop(stream);
                continue;
            }
        };
        metrics::gauge!("guichet_http_connections", "listener" => name).set(table.len() as f64);
        let _ = stream.set_nodelay(true);
        let svc = tower::ServiceExt::map_request(
            app.clone(),
            move |mut r: http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                r
            },
        );
        let conn = builder
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(svc),
            )
            .into_owned();
        let conn = graceful.watch(conn);
        let table = table.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, listener = name, "http connection ended");
            }
            drop(held);
            metrics::gauge!("guichet_http_connections", "listener" => name).set(table.len() as f64);
        });
    }
    drop(listener);
    // In-flight requests finish; live streams end with the roles' shutdown.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            tracing::warn!(listener = name, "http connections still open after 10 s of shutdown");
        }
    }
    Ok(())
}

/// The live streams (Server-Sent Events) one HTTP listener holds at once;
/// beyond, a new stream is answered 503 with `Retry-After` (a page's
/// EventSource tries again) and counted in
/// `guichet_http_live_refused_total{listener}`.
#[derive(Clone)]
pub struct LiveSlots {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    name: &'static str,
}

impl LiveSlots {
    /// Default bound of a listener's live streams.
    pub const DEFAULT: usize = 2048;

    pub fn new(name: &'static str, max: usize) -> LiveSlots {
        metrics::counter!("guichet_http_live_refused_total", "listener" => name).increment(0);
        metrics::gauge!("guichet_http_live_streams", "listener" => name).set(0.0);
        LiveSlots {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(max)),
            name,
        }
    }

    /// Put the bound on every live stream `router` answers.
    pub fn layer<S: Clone + Send + Sync + 'static>(
        self,
        router: axum::Router<S>,
    ) -> axum::Router<S> {
        router.layer(axum::middleware::from_fn(move |req, next| {
            let slots = self.clone();
            async move { slots.hold(req, next).await }
        }))
    }

    async fn hold(
        &self,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        use futures::StreamExt;
        let res = next.run(req).await;
        let live = res
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !live {
            return res;
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            metrics::counter!("guichet_http_live_refused_total", "listener" => self.name)
                .increment(1);
            return (
                http::StatusCode::SERVICE_UNAVAILABLE,
                [(http::header::RETRY_AFTER, "10")],
                "Trop de connexions en direct pour le moment ; la page réessaie dans quelques secondes.\n",
            )
                .into_response();
        };
        let guard = LiveGuard {
            _permit: permit,
            name: self.name,
        };
        guard.count();
        let (parts, body) = res.into_parts();
        let body = body.into_data_stream().map(move |chunk| {
            let _held = &guard;
            chunk
        });
        axum::response::Response::from_parts(parts, axum::body::Body::from_stream(body))
    }
}

struct LiveGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
    name: &'static str,
}

impl LiveGuard {
    fn count(&self) {
        metrics::gauge!("guichet_http_live_streams", "listener" => self.name).increment(1.0);
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        metrics::gauge!("guichet_http_live_streams", "listener" => self.name).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn live_router() -> axum::Router {
        use axum::response::sse::{Event, Sse};
        axum::Router::new()
            .route(
                "/events",
                axum::routing::get(|| async {
                    Sse::new(futures::stream::pending::<
                        Result<Event, std::convert::Infallible>,
                    >())
                }),
            )
            .route("/page", axum::routing::get(|| async { "page" }))
    }

    fn get(path: &str) -> http::Request<axum::body::Body> {
        http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn live_streams_beyond_the_bound_are_told_to_retry_and_pages_are_not_counted() {
        let app = LiveSlots::new("test", 1).layer(live_router());
        let first = app.clone().oneshot(get("/events")).await.unwrap();
        assert_eq!(first.status(), http::StatusCode::OK);
        let second = app.clone().oneshot(get("/events")).await.unwrap();
        assert_eq!(second.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()["retry-after"], "10");
        // Ordinary pages are not live streams.
        let page = app.clone().oneshot(get("/page")).await.unwrap();
        assert_eq!(page.status(), http::StatusCode::OK);
        // The slot comes back when the first stream ends.
        drop(first);
        let again = app.clone().oneshot(get("/events")).await.unwrap();
        assert_eq!(again.status(), http::StatusCode::OK);
    }

    #[tokio::test]
    async fn a_listener_closes_silent_connections_and_bounds_one_address() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let limits = HttpLimits {
            header_read_timeout: std::time::Duration::from_millis(300),
            max_connections: 100,
            max_per_address: 2,
        };
        let server = tokio::spawn(serve_http(
            listener,
            live_router(),
            stop.clone(),
            "test",
            limits,
        ));
        // A half-sent request is closed after the header timeout.
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /page HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            half.read_to_end(&mut buf),
        )
        .await
        .expect("closed within 5 s")
        .unwrap();
        // Two connections from one address are held; a third is closed at once.
        let a = tokio::net::TcpStream::connect(addr).await.unwrap();
        let b = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut one = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_millis(200), c.read(&mut one))
            .await
            .expect("the third connection is closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
        drop((a, b));
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
