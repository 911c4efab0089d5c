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
pub mod error;
pub mod grpc;
pub mod ics;
pub mod schedule;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use guichet_platform::auth::{AuthInterceptor, Authenticator, ServiceCredentials};
use guichet_platform::bus::StreamKind;
use guichet_platform::config::ConfigError;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::outbox::Outbox;
use guichet_platform::role::{BoxFuture, Handles, Listener, Local, RoleService, RoleSpec};
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
/// The appointment role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "appointment";
    const SECTION: &'static str = "appointment";
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

/// Connect the database, the dossier link and the ANTS coordination; test
/// doubles of both may come as seams in `deps` (`Arc<dyn Coordination>`,
/// `Arc<dyn DossierLinker>`).
pub async fn build(mut config: Config, deps: Deps) -> anyhow::Result<Service> {
    config.validate()?;
    config.town = deps.town.clone();
    let db = deps
        .database::<db::Migrator>("appointment", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Events).await?;
    deps.bus.ensure_stream(StreamKind::Notify).await?;
    let coordination: Arc<dyn coordination::Coordination> =
        match deps.seam::<Arc<dyn coordination::Coordination>>() {
            Some(c) => c,
            None if config.ants.coordination_url.is_empty() => Arc::new(coordination::Disabled),
            None => Arc::new(coordination::Http::new(
                &config.ants.coordination_url,
                config.ants.coordination_token.clone(),
            )),
        };
    let dossier: Arc<dyn dossier::DossierLinker> =
        match deps.seam::<Arc<dyn dossier::DossierLinker>>() {
            Some(d) => d,
            None => {
                let channel = guichet_platform::grpc::lazy_channel(
                    "appointment.dossier_url",
                    &config.dossier_url,
                )?;
                Arc::new(dossier::Grpc {
                    client: DossierServiceClient::with_interceptor(
                        channel,
                        ServiceCredentials::new(deps.auth.clone(), "appointment", "dossier"),
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
            clock: deps.clock.clone(),
            coordination,
            dossier,
            index: Default::default(),
        },
        auth: deps.auth,
        http,
        http_addr,
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(AppointmentServiceServer::with_interceptor(
            grpc::AppointmentApi {
                core: self.core.clone(),
                auth: self.auth.clone(),
            },
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// The ANTS editor API and the agenda feed, when configured.
    fn listeners(&self) -> Vec<Listener> {
        self.http_addr.map(Listener::http).into_iter().collect()
    }

    fn handles(&self, handles: &mut Handles) {
        handles.insert(self.core.clone());
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(Service::run(*self, shutdown))
    }
}

impl Service {
    /// The engine, for in-process callers (tests, benchmarks).
    pub fn core(&self) -> core::Core {
        self.core.clone()
    }

    /// Where the HTTP endpoints (ANTS, agenda feeds) listen, when served.
    /// Relay the outbox, run due jobs and the purge, and serve the HTTP
    /// endpoints until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.core.outbox.clone().run(shutdown.clone()));
        if let Some(listener) = self.http {
            let app = ants::router(self.core.clone(), self.auth.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(error) = guichet_platform::net::serve_http(
                    listener,
                    app,
                    stop,
                    "appointment",
                    guichet_platform::net::HttpLimits::default(),
                )
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
            let sample_every =
                Duration::from_secs(u64::from(core.config.availability_sample_minutes) * 60);
            let mut last_sample: Option<chrono::DateTime<chrono::Utc>> = None;
            loop {
                let now = core.now();
                if !sample_every.is_zero()
                    && last_sample.is_none_or(|t| {
                        now - t >= chrono::Duration::from_std(sample_every).unwrap_or_default()
                    })
                {
                    match core.sample_availability().await {
                        Ok(_) => last_sample = Some(now),
                        Err(error) => {
                            tracing::warn!(%error, "availability sample failed, will retry")
                        }
                    }
                }
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
