//! The scanned-mail ingress: paper letters become requests.
//!
//! Scans arrive in a watched folder (`<watch_dir>/inbox`, written by network
//! scanners; see [`watch`]) or through `UploadScan` (scanning stations that
//! push). Each file is identified by the SHA-256 of its content: a file
//! already seen is never read twice, across restarts too. A new file is read
//! ([`pipeline`]: PDF text layer or French OCR), the sender, references,
//! date and subject are extracted ([`extract`]), the original goes to the
//! object store, and one IntakeEvent is staged in the same transaction as
//! the file's record (the outbox) and published on `guichet.intake.scan`.
//! A folder file is moved to `done/` only once JetStream holds its event. A
//! file that cannot be read is recorded as quarantined with a reason (and
//! moved to `quarantine/`); the API lists and releases it.
//!
//! Logs and spans carry ids, sizes and reasons: never a name, an address or
//! the letter's text.

pub mod config;
mod core;
pub mod db;
pub mod detect;
pub mod error;
pub mod extract;
pub mod grpc;
pub mod ocr;
pub mod pipeline;
pub mod quarantine;
pub mod watch;

use std::sync::Arc;

use guichet_platform::auth::{AuthInterceptor, Authenticator};
use guichet_platform::bus::StreamKind;
use guichet_platform::config::ConfigError;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::outbox::Outbox;
use guichet_platform::role::{BoxFuture, Handles, Local, RoleService, RoleSpec};
use guichet_proto::scan::v1::scan_service_server::ScanServiceServer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use crate::core::{AcceptError, Incoming, STATE_PUBLISHED, STATE_QUARANTINED, ScanApi, Source};
pub use config::Config;
pub use guichet_platform::Deps;

pub struct Service {
    api: ScanApi,
    auth: Arc<Authenticator>,
    watch_dir: std::path::PathBuf,
}

/// The ingress-scan role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "ingress-scan";
    const SECTION: &'static str = "scan";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    /// The role asks dossier on the local port when both run here.
    fn wire(config: &mut Config, local: &Local) {
        if let Some(url) = local.url_of("dossier") {
            config.dossier_url = url.to_owned();
        }
    }

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let db = deps
        .database::<db::Migrator>("scan", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Intake).await?;
    let tools = Arc::new(ocr::Tools::new(&config));
    // Readiness includes the OCR tools: a pod without them must not take
    // scans (they would wait in the inbox, never lost, but never read).
    let probe = tools.clone();
    let status = Arc::new(tokio::sync::Mutex::new(None::<Result<(), String>>));
    deps.readiness.add_check("scan ocr tools", move || {
        let probe = probe.clone();
        let status = status.clone();
        async move {
            let mut s = status.lock().await;
            if !matches!(*s, Some(Ok(()))) {
                *s = Some(probe.check().await);
            }
            s.clone().unwrap_or(Ok(()))
        }
    });
    let watch_dir = config.watch_dir.clone();
    let channel = guichet_platform::grpc::lazy_channel("scan.dossier_url", &config.dossier_url)?;
    Ok(Service {
        api: ScanApi {
            dossier: guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient::new(
                channel,
            ),
            outbox: Outbox::new(db.clone(), deps.bus),
            db,
            objects: deps.objects,
            permits: Arc::new(Semaphore::new(config.concurrency)),
            config: Arc::new(config),
            tools,
        },
        auth: deps.auth,
        watch_dir,
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(ScanServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    fn handles(&self, handles: &mut Handles) {
        handles.insert(self.api.clone());
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(Service::run(*self, shutdown))
    }
}

impl Service {
    /// Watch the folder and relay staged intake events, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let relay = tokio::spawn(self.api.outbox.clone().run(shutdown.clone()));
        let watched = watch::run(self.api.clone(), self.watch_dir, shutdown).await;
        let _ = relay.await;
        watched
    }

    pub fn api(&self) -> &ScanApi {
        &self.api
    }
}
