//! The telephony ingress: PBX call events, call-detail records and
//! callback requests, turned into intake events.
//!
//! A PBX already set up for Zammad's generic CTI API posts `newCall`,
//! `answer` and `hangup` to `POST /api/v1/cti/<token>`; PBXs that only
//! export Asterisk `Master.csv` files upload them (gRPC `ImportCdr` or
//! `POST /api/v1/cdr/<token>`). Every call is one row, keyed by the PBX's
//! call id, with its waiting and talk time, who answered, the queue, and
//! whether it was missed. When an inbound call ends, the call row and its
//! IntakeEvent are written in one transaction (the outbox) before the PBX
//! gets its answer; the event is then published on `guichet.intake.telephony`
//! (the relay retries it if JetStream was away). Routing then records the
//! call on the citizen's timeline and, for a missed call or a callback
//! request, queues a callback with the telephony SLA.
//!
//! Phone numbers are stored (they are what a callback needs) but never
//! logged: logs and span fields carry call ids only.

pub mod cdr;
pub mod config;
mod core;
pub mod cti;
pub mod db;
pub mod error;
mod extensions;
pub mod grpc;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use guichet_platform::auth::{AuthInterceptor, Authenticator};
use guichet_platform::bus::StreamKind;
use guichet_platform::config::ConfigError;
use guichet_platform::contact::Phone;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::outbox::Outbox;
use guichet_platform::role::{BoxFuture, Listener, RoleService, RoleSpec};
use guichet_proto::telephony::v1::telephony_service_server::TelephonyServiceServer;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::core::TelephonyApi;
pub use crate::http::router;
pub use config::Config;
pub use guichet_platform::Deps;

pub struct Service {
    api: TelephonyApi,
    auth: Arc<Authenticator>,
    listener: TcpListener,
    http_addr: SocketAddr,
}

/// The telephony role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "ingress-telephony";
    const SECTION: &'static str = "telephony";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

/// Build the role on `deps` (its clock: tests measure waiting and talk time
/// with a manual clock instead of sleeping).
pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let clock = deps.clock.clone();
    let db = deps
        .database::<db::Migrator>("telephony", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Intake).await?;
    deps.bus.ensure_stream(StreamKind::Events).await?;
    let listener = TcpListener::bind(&config.http_addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on telephony.http_addr {}: {e}",
            config.http_addr
        )
    })?;
    let http_addr = listener.local_addr()?;
    if config.webhook_token.expose_secret().is_empty() {
        tracing::warn!("telephony.webhook_token is not set: the CTI webhook refuses every request");
    }
    let blocked = config
        .blocked_numbers
        .iter()
        .filter_map(|n| Phone::parse(n).ok())
        .map(|p| p.as_str().to_owned())
        .collect();
    Ok(Service {
        api: TelephonyApi {
            outbox: Outbox::new(db.clone(), deps.bus),
            db,
            config: Arc::new(config),
            blocked: Arc::new(blocked),
            clock,
        },
        auth: deps.auth,
        listener,
        http_addr,
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(TelephonyServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// Where the CTI webhook listens (known once built: port 0 works).
    fn listeners(&self) -> Vec<Listener> {
        vec![Listener::http(self.http_addr)]
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(Service::run(*self, shutdown))
    }
}

impl Service {
    /// Serve the webhook and relay staged intake events, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let app = router(self.api.clone());
        let http = guichet_platform::net::serve_http(
            self.listener,
            app,
            shutdown.clone(),
            "telephony",
            guichet_platform::net::HttpLimits::default(),
        );
        let relay = self.api.outbox.clone().run(shutdown.clone());
        let api = self.api.clone();
        let every = std::time::Duration::from_secs(self.api.config.stale_sweep_secs);
        let sweep = async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = api.end_stale_calls().await {
                            tracing::warn!(error = ?e, "ending calls without a hangup failed; retried at the next sweep");
                        }
                    }
                }
            }
        };
        let (served, (), ()) = tokio::join!(http, relay, sweep);
        served?;
        Ok(())
    }
}
