//! The dossier role: citizens, their dossiers, the cross-channel timeline and
//! the process catalog that guides agents.
//!
//! Every other role asks dossier over gRPC; nothing reads its tables. Every
//! write is idempotent on a caller-supplied key (the intake event id), so a
//! redelivered intake event never creates a second citizen, dossier or
//! timeline entry.

pub mod catalog;
pub mod config;
pub mod db;
pub mod domain;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use guichet_platform::auth::{AuthInterceptor, Authenticator};
use guichet_platform::grpc::GrpcServer;
use guichet_proto::dossier::v1::dossier_service_server::DossierServiceServer;
use tokio_util::sync::CancellationToken;

pub use config::Config;

pub use guichet_platform::Deps;

/// A built dossier role, ready to mount and run.
pub struct Service {
    api: grpc::DossierApi,
    auth: Arc<Authenticator>,
}

/// Connect the database (migrating it), load the process catalog and declare
/// the EVENTS stream.
pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let db = deps
        .database::<db::Migrator>("dossier", &config.database_url)
        .await?;
    let catalog = catalog::Catalog::load_dir(&config.processes_dir)?;
    if catalog.get_latest(&config.default_process).is_none() {
        anyhow::bail!(
            "configuration error: invalid value for key `dossier.default_process`: process `{}` is not in {}",
            config.default_process,
            config.processes_dir.display()
        );
    }
    deps.bus
        .ensure_stream(guichet_platform::bus::StreamKind::Events)
        .await?;
    let outbox = guichet_platform::outbox::Outbox::new(db.clone(), deps.bus.clone());
    let store = store::Store::new(db, config.reference_prefix.clone(), outbox);
    let api = grpc::DossierApi::new(store, Arc::new(catalog), config);
    Ok(Service {
        api,
        auth: deps.auth,
    })
}

impl Service {
    /// Mount the gRPC API (behind the bearer-token interceptor).
    pub fn register(&self, server: &mut GrpcServer) {
        server.add(DossierServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// Relay staged domain events to JetStream until shutdown (timers come
    /// with the process engine).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.api.store().outbox().clone().run(shutdown).await;
        Ok(())
    }
}
