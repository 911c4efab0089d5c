//! The counter ingress: walk-in citizens at the front desk.
//!
//! Issuing a ticket records it (with its numbered place in the day's queue
//! of its service) and stages the visit as an IntakeEvent in the same
//! transaction (the outbox), then publishes it on `guichet.intake.counter`.
//! The call answers only once JetStream has stored the event; an event whose
//! publish failed is published by the outbox relay (and by a retry with the
//! same `request_id`), so a visit the desk accepted is never lost. Routing is
//! idempotent on the event id, so a second publish never creates a second
//! work item.
//!
//! Tickets are numbered per service, site and **Paris** calendar day (P001
//! again every morning). Desks then work the waiting room: call next (by
//! rank: arrival time minus the priority category's weight, so priority
//! tickets go first without starving the others), recall, start, finish,
//! no-show after a recall, transfer to another service; each step is a
//! conditional update on the ticket's status, so ten desks calling at once
//! never get the same ticket. Every call is published as a
//! `ticket_called` event (outbox) that the waiting-room boards follow
//! (gRPC `WatchBoard`, SSE `GET /board/<site>/events`).

pub mod board;
pub mod checkin;
pub mod config;
mod core;
pub mod db;
pub mod error;
pub mod grpc;
pub mod http;
pub mod visits;
pub mod waits;

use std::sync::Arc;

use guichet_platform::auth::AuthInterceptor;
use guichet_platform::auth::Authenticator;
use guichet_platform::bus::StreamKind;
use guichet_platform::config::ConfigError;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::outbox::Outbox;
use guichet_platform::role::{BoxFuture, Listener, Local, RoleService, RoleSpec};
use guichet_proto::counter::v1::counter_service_server::CounterServiceServer;
use tokio_util::sync::CancellationToken;

pub use crate::core::{CounterApi, paris_day};
pub use config::Config;
pub use guichet_platform::Deps;

pub struct Service {
    api: CounterApi,
    auth: Arc<Authenticator>,
    listener: tokio::net::TcpListener,
    http_addr: std::net::SocketAddr,
}

/// The counter role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "ingress-counter";
    const SECTION: &'static str = "counter";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    /// The counter checks appointments in on the local port when the
    /// appointment role runs here and no other is configured.
    fn wire(config: &mut Config, local: &Local) {
        if config.appointment_url.is_empty()
            && let Some(url) = local.url_of("appointment")
        {
            config.appointment_url = url.to_owned();
        }
    }

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

/// Build the role on `deps` (its clock: tests cross Paris midnight without
/// waiting).
pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let clock = deps.clock.clone();
    let db = deps
        .database::<db::Migrator>("counter", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Intake).await?;
    deps.bus.ensure_stream(StreamKind::Events).await?;
    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on counter.http_addr {}: {e}",
                config.http_addr
            )
        })?;
    let http_addr = listener.local_addr()?;
    let appointments = checkin::client(&config.appointment_url, &deps.auth)?;
    Ok(Service {
        api: CounterApi {
            outbox: Outbox::new(db.clone(), deps.bus),
            db,
            config: Arc::new(config),
            clock,
            stop: CancellationToken::new(),
            appointments,
        },
        auth: deps.auth,
        listener,
        http_addr,
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(CounterServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// Where the board feed listens (known once built: port 0 works).
    fn listeners(&self) -> Vec<Listener> {
        vec![Listener::http(self.http_addr)]
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(Service::run(*self, shutdown))
    }
}

impl Service {
    /// Serve the board feed and relay staged events, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let app = guichet_platform::net::LiveSlots::new(
            "counter",
            guichet_platform::net::LiveSlots::DEFAULT,
        )
        .layer(http::router(self.api.clone()));
        let stop = self.api.stop.clone();
        let on_shutdown = shutdown.clone();
        // Open board streams end at shutdown, so draining does not wait for
        // the screens to disconnect.
        let ended = async move {
            on_shutdown.cancelled().await;
            stop.cancel();
        };
        let http = guichet_platform::net::serve_http(
            self.listener,
            app,
            shutdown.clone(),
            "counter",
            guichet_platform::net::HttpLimits::default(),
        );
        let relay = self.api.outbox.clone().run(shutdown);
        let (served, (), ()) = tokio::join!(http, relay, ended);
        served?;
        Ok(())
    }
}
