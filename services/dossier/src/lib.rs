//! The dossier role: citizens, their dossiers, the cross-channel timeline and
//! the process catalog that guides agents.
//!
//! Every other role asks dossier over gRPC; nothing reads its tables. Every
//! write is idempotent on a caller-supplied key (the intake event id), so a
//! redelivered intake event never creates a second citizen, dossier or
//! timeline entry.

pub mod actions;
pub mod catalog;
pub mod citizens;
pub mod config;
pub mod db;
pub mod domain;
pub mod engine;
pub mod follow;
pub mod grpc;
pub mod intake;
pub mod privacy;
pub mod records;
pub mod store;
pub mod studio;

use std::sync::Arc;

use guichet_platform::auth::{AuthInterceptor, Authenticator, ServiceCredentials};
use guichet_platform::config::ConfigError;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::role::{BoxFuture, RoleService, RoleSpec};
use guichet_proto::appointment::v1::appointment_service_client::AppointmentServiceClient;
use guichet_proto::dossier::v1::dossier_service_server::DossierServiceServer;
use guichet_proto::dossier::v1::process_studio_service_server::ProcessStudioServiceServer;
use guichet_proto::signature::v1::signature_service_client::SignatureServiceClient;
use tokio_util::sync::CancellationToken;

pub use config::Config;

pub use guichet_platform::Deps;

/// The dossier role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "dossier";
    const SECTION: &'static str = "dossier";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    fn wire(config: &mut Config, local: &guichet_platform::role::Local) {
        if let Some(url) = local.url_of("signature") {
            config.signature_url = url.to_owned();
        }
        if let Some(url) = local.url_of("appointment") {
            config.appointment_url = url.to_owned();
        }
    }

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

/// A built dossier role, ready to mount and run.
pub struct Service {
    api: grpc::DossierApi,
    auth: Arc<Authenticator>,
    config: Config,
    actions: actions::ActionRunner,
}

/// Connect the database (migrating it), load the process catalog and declare
/// the EVENTS stream.
pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let db = deps
        .database::<db::Migrator>("dossier", &config.database_url)
        .await?;
    let catalog = catalog::CatalogHandle::load(&config.processes_dir)?;
    if catalog
        .current()
        .get_latest(&config.default_process)
        .is_none()
    {
        anyhow::bail!(
            "configuration error: invalid value for key `dossier.default_process`: process `{}` is not in {}",
            config.default_process,
            catalog.source()
        );
    }
    deps.bus
        .ensure_stream(guichet_platform::bus::StreamKind::Events)
        .await?;
    // State actions send messages through NOTIFY (`guichet.notify.dossier`).
    deps.bus
        .ensure_stream(guichet_platform::bus::StreamKind::Notify)
        .await?;
    let outbox = guichet_platform::outbox::Outbox::new(db.clone(), deps.bus.clone());
    let store = store::Store::new(store::StoreParts {
        db,
        reference_prefix: config.reference_prefix.clone(),
        outbox,
        clock: deps.clock.clone(),
        calendar: guichet_platform::calendar::BusinessCalendar::new(
            &config.calendar,
            "dossier.calendar",
        )?,
        catalog,
        objects: deps.objects.clone(),
    })
    .with_identity_auto_link(config.identity_auto_link);
    let store = if store.db().get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        let pool = guichet_platform::db::connect(
            &config.database_url,
            &guichet_platform::config::DatabaseConfig {
                migrate_on_start: false,
                max_connections: 2,
            },
        )
        .await?;
        store.with_counters(pool)
    } else {
        store
    };
    // The versions published from the studio, before the first call.
    store.reload_catalog().await?;
    let credentials = |to| ServiceCredentials::new(deps.auth.clone(), "dossier", to);
    let signature = if config.signature_url.is_empty() {
        None
    } else {
        let channel =
            guichet_platform::grpc::lazy_channel("dossier.signature_url", &config.signature_url)?;
        Some(SignatureServiceClient::with_interceptor(
            channel,
            credentials("signature"),
        ))
    };
    let appointment = if config.appointment_url.is_empty() {
        None
    } else {
        let channel = guichet_platform::grpc::lazy_channel(
            "dossier.appointment_url",
            &config.appointment_url,
        )?;
        Some(AppointmentServiceClient::with_interceptor(
            channel,
            credentials("appointment"),
        ))
    };
    let actions = actions::ActionRunner::new(
        store.clone(),
        guichet_platform::jobs::Policy::default(),
        signature,
        appointment,
    );
    let run_config = config.clone();
    let api = grpc::DossierApi::new(store, config);
    Ok(Service {
        api,
        auth: deps.auth,
        config: run_config,
        actions,
    })
}

impl RoleService for Service {
    /// Mount the gRPC API (behind the bearer-token interceptor).
    fn register(&self, server: &mut GrpcServer) {
        server.add(DossierServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
        server.add(ProcessStudioServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    fn handles(&self, handles: &mut guichet_platform::role::Handles) {
        handles.insert(self.api.store().clone());
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(Service::run(*self, shutdown))
    }
}

impl Service {
    /// Until shutdown: relay staged domain events to JetStream, fire due
    /// process timers, purge dossiers past retention, and pick up new
    /// process definitions.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let store = self.api.store().clone();
        let cfg = self.config.clone();
        let outbox = tokio::spawn(store.outbox().clone().run(shutdown.clone()));
        let actions = tokio::spawn(run_actions(
            self.actions.clone(),
            store.clone(),
            cfg.action_interval_secs.max(1),
            shutdown.clone(),
        ));
        let mut timers =
            tokio::time::interval(std::time::Duration::from_secs(cfg.timer_interval_secs));
        let mut purge =
            tokio::time::interval(std::time::Duration::from_secs(cfg.purge_interval_secs));
        let mut reload = tokio::time::interval(std::time::Duration::from_secs(
            cfg.catalog_reload_secs.max(1),
        ));
        for t in [&mut timers, &mut purge, &mut reload] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = timers.tick() => {
                    // Drain in batches so a backlog does not wait for the next tick.
                    loop {
                        match store.fire_due_timers(100).await {
                            Ok(100) => continue,
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "timer scan failed, will retry");
                                break;
                            }
                        }
                    }
                }
                _ = purge.tick() => {
                    if let Err(e) = store.purge_expired(false, "system").await {
                        tracing::warn!(error = %e, "retention purge failed, will retry");
                    }
                }
                _ = reload.tick(), if cfg.catalog_reload_secs > 0 => {
                    match store.reload_catalog().await {
                        Ok(true) => {
                            metrics::counter!("guichet_dossier_catalog_reloads_total", "result" => "changed").increment(1);
                            tracing::info!(definitions = store.catalog().len(), "process catalog reloaded");
                        }
                        Ok(false) => {}
                        Err(e) => {
                            metrics::counter!("guichet_dossier_catalog_reloads_total", "result" => "refused").increment(1);
                            tracing::error!(error = %e, "process catalog not reloaded; the running catalog stays");
                        }
                    }
                }
            }
        }
        let _ = outbox.await;
        let _ = actions.await;
        Ok(())
    }
}

/// Until shutdown: carry out due state actions, at once when a state change
/// planned some and every `interval_secs` for retries.
async fn run_actions(
    runner: actions::ActionRunner,
    store: store::Store,
    interval_secs: u64,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = store.actions_due().notified() => {}
        }
        // Drain: a full batch may hide more due work.
        loop {
            match runner.run_due().await {
                Ok(n) if n >= 100 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "state action scan failed, will retry");
                    break;
                }
            }
        }
    }
}
