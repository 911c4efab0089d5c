//! The indicators role: lifecycle facts built from the EVENTS stream, and
//! the decision indicators computed from them.
//!
//! Every role publishes its changes on EVENTS; this role consumes the whole
//! stream (durably, in batches, idempotent on event ids) into its own
//! tables of facts — one row per request, dossier, call, counter visit,
//! appointment and signature request — and reads nothing else: it can be
//! rebuilt by replaying the stream (`guichet indicators rebuild`). The gRPC
//! `IndicatorService` gives figures for a period and a granularity, cut by
//! channel, procedure (and version), site, department, service or agent,
//! compares two periods, lists the items behind a figure and exports any
//! table as CSV; each indicator has a published definition
//! ([`catalog`]). Live gauges of the queue are on `/metrics`.

pub mod batch;
pub mod catalog;
pub mod config;
pub mod csv;
pub mod db;
pub mod grpc;
pub mod ingest;
pub mod query;

use std::sync::Arc;
use std::time::Duration;

use guichet_platform::auth::AuthInterceptor;
use guichet_platform::bus::Bus;
use guichet_platform::config::ConfigError;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::role::{BoxFuture, Handles, Local, RoleService, RoleSpec};
use guichet_proto::indicators::v1::indicator_service_server::IndicatorServiceServer;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use guichet_platform::Deps;

/// The indicators role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "indicators";
    const SECTION: &'static str = "indicators";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    fn wire(_config: &mut Config, _local: &Local) {}

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

/// What tests and tools reach the role through.
#[derive(Clone)]
pub struct IndicatorsHandle {
    pub api: grpc::IndicatorApi,
    pub ingest: ingest::Ingest,
    pub bus: Bus,
    pub consumer: ingest::ConsumerOptions,
}

impl IndicatorsHandle {
    /// Empty the facts and replay the stream (see [`ingest::rebuild`]).
    pub async fn rebuild(&self) -> anyhow::Result<u64> {
        ingest::rebuild(&self.ingest, &self.bus, &self.consumer).await
    }
}

pub struct Service {
    handle: IndicatorsHandle,
    auth: Arc<guichet_platform::auth::Authenticator>,
    gauge_every: Duration,
}

/// The parts both the role and `guichet indicators rebuild` use.
pub fn parts(
    config: &Config,
    db: sea_orm::DatabaseConnection,
) -> anyhow::Result<(ingest::Ingest, query::Engine, ingest::ConsumerOptions)> {
    let calendar = Arc::new(config.calendar.build("indicators.calendar")?);
    let ingest = ingest::Ingest {
        db: db.clone(),
        calendar: calendar.clone(),
        stats: Arc::default(),
    };
    let engine = query::Engine {
        db,
        indicators: Arc::new(catalog::indicators(config)),
        calendar,
        per_agent: config.per_agent_figures,
    };
    let consumer = ingest::ConsumerOptions {
        durable: config.consumer.clone(),
        batch_size: config.batch_size,
        batch_wait: Duration::from_millis(200),
    };
    Ok((ingest, engine, consumer))
}

pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let db = deps
        .database::<db::Migrator>("indicators", &config.database_url)
        .await?;
    let (ingest, engine, consumer) = parts(&config, db)?;
    let api = grpc::IndicatorApi {
        engine,
        clock: deps.clock.clone(),
        stats: ingest.stats.clone(),
    };
    Ok(Service {
        handle: IndicatorsHandle {
            api,
            ingest,
            bus: deps.bus.clone(),
            consumer,
        },
        auth: deps.auth.clone(),
        gauge_every: Duration::from_secs(config.gauge_interval_secs),
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(IndicatorServiceServer::with_interceptor(
            self.handle.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    fn handles(&self, handles: &mut Handles) {
        handles.insert(self.handle.clone());
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(async move {
            let h = self.handle.clone();
            let consume = {
                let shutdown = shutdown.clone();
                async move {
                    // A consumer that fails (NATS down at start) tries again.
                    while !shutdown.is_cancelled() {
                        match h
                            .ingest
                            .run(&h.bus, &h.consumer, false, shutdown.clone())
                            .await
                        {
                            Ok(()) => break,
                            Err(error) => {
                                tracing::warn!(%error, "indicators consumer stopped, restarting");
                                tokio::select! {
                                    _ = shutdown.cancelled() => break,
                                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                                }
                            }
                        }
                    }
                }
            };
            let api = self.handle.api.clone();
            let every = self.gauge_every;
            let gauges = {
                let shutdown = shutdown.clone();
                async move {
                    loop {
                        if let Err(error) = gauges(&api).await {
                            tracing::warn!(%error, "indicator gauges not refreshed");
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(every) => {}
                        }
                    }
                }
            };
            tokio::join!(consume, gauges);
            Ok(())
        })
    }
}

/// The live gauges on /metrics: waiting requests and the oldest wait by
/// channel, agents by presence.
async fn gauges(api: &grpc::IndicatorApi) -> Result<(), tonic::Status> {
    let now = api.queue_now().await?;
    for c in &now.channels {
        metrics::gauge!("guichet_indicators_waiting", "channel" => c.channel.clone())
            .set(f64::from(c.waiting));
        metrics::gauge!("guichet_indicators_oldest_wait_seconds", "channel" => c.channel.clone())
            .set(f64::from(c.oldest_wait_seconds));
    }
    for a in &now.agents {
        metrics::gauge!("guichet_indicators_agents", "presence" => a.presence.clone())
            .set(f64::from(a.agents));
    }
    Ok(())
}
