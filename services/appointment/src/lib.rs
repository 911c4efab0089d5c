//! The appointment role: sites, desks, opening schedules, availability,
//! bookings without double booking, reminders, the waiting list, iCalendar
//! exports and the ANTS editor API.
//!
//! The town's model (sites, desks with weekly ranges in Paris time,
//! closures, extra openings, absences, appointment types) is configuration
//! ([`config`]), compiled into a [`schedule::Model`]. Bookings live in the
//! role's own database, where one claim row per occupied schedule unit,
//! unique on (desk, unit), makes a double booking impossible whatever the
//! concurrency. Every change stages its domain event
//! (`guichet.events.appointment.*`) and citizen messages (`guichet.notify.
//! appointment`) in the outbox, and its calls to other systems (dossier
//! LinkDossier, the national anti-duplicate API) and timers (J-2 reminders,
//! waiting-list offers) in the job table, all in the change's transaction.

pub mod ants;
pub mod config;
pub mod coordination;
pub mod core;
pub mod db;
pub mod dossier;
pub mod grpc;
pub mod ics;
pub mod schedule;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use guichet_platform::auth::{AuthInterceptor, Authenticator, ServiceCredentials};
use guichet_platform::bus::StreamKind;
use guichet_platform::clock::SharedClock;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::outbox::Outbox;
use guichet_proto::appointment::v1::appointment_service_server::AppointmentServiceServer;
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use guichet_platform::Deps;

pub struct Service {
    core: core::Core,
    auth: Arc<Authenticator>,
    http: Option<tokio::net::TcpListener>,
    http_addr: Option<SocketAddr>,
}

/// What a caller may replace (tests: a manual clock, stand-ins).
pub struct Overrides {
    pub clock: SharedClock,
    pub coordination: Option<Arc<dyn coordination::Coordination>>,
    pub dossier: Option<Arc<dyn dossier::DossierLinker>>,
}

impl Default for Overrides {
    fn default() -> Self {
        Overrides {
            clock: guichet_platform::clock::system(),
            coordination: None,
            dossier: None,
        }
    }
}

pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    build_with(config, deps, Overrides::default()).await
}

pub async fn build_with(config: Config, deps: Deps, o: Overrides) -> anyhow::Result<Service> {
    config.validate()?;
    let db = deps
        .database::<db::Migrator>("appointment", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Events).await?;
    deps.bus.ensure_stream(StreamKind::Notify).await?;
    let coordination: Arc<dyn coordination::Coordination> = match o.coordination {
        Some(c) => c,
        None if config.ants.coordination_url.is_empty() => Arc::new(coordination::Disabled),
        None => Arc::new(coordination::Http::new(
            &config.ants.coordination_url,
            config.ants.coordination_token.clone(),
        )),
    };
    let dossier: Arc<dyn dossier::DossierLinker> = match o.dossier {
        Some(d) => d,
        None => {
            let channel = guichet_platform::grpc::lazy_channel(
                "appointment.dossier_url",
                &config.dossier_url,
            )?;
            Arc::new(dossier::Grpc {
                client: DossierServiceClient::with_interceptor(
                    channel,
                    ServiceCredentials::new(deps.auth.clone(), "guichet-appointment"),
                ),
            })
        }
    };
    let (http, http_addr) =
        guichet_platform::grpc::bind_optional("appointment.http_addr", &config.http_addr).await?;
    let model = Arc::new(schedule::Model::new(&config));
    Ok(Service {
        core: core::Core {
            outbox: Outbox::new(db.clone(), deps.bus.clone()),
            db,
            model,
            config: Arc::new(config),
            clock: o.clock,
            coordination,
            dossier,
        },
        auth: deps.auth,
        http,
        http_addr,
    })
}

impl Service {
    pub fn register(&self, server: &mut GrpcServer) {
        server.add(AppointmentServiceServer::with_interceptor(
            grpc::AppointmentApi {
                core: self.core.clone(),
            },
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// The engine, for in-process callers (tests, benchmarks).
    pub fn core(&self) -> core::Core {
        self.core.clone()
    }

    /// Where the HTTP endpoints (ANTS, agenda feeds) listen, when served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Relay the outbox, run due jobs and the purge, and serve the HTTP
    /// endpoints until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.core.outbox.clone().run(shutdown.clone()));
        if let Some(listener) = self.http {
            let app = ants::router(self.core.clone(), self.auth.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(error) = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
                {
                    tracing::error!(%error, "appointment http endpoints stopped");
                }
            });
        }
        let core = self.core.clone();
        let every = Duration::from_secs(core.config.job_interval_secs);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                if let Err(error) = core.run_due_jobs().await {
                    tracing::warn!(%error, "appointment jobs failed, will retry");
                }
                if let Err(error) = core.purge_expired().await {
                    tracing::warn!(%error, "appointment purge failed, will retry");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}
