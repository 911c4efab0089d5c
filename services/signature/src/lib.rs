//! The signature role: simple electronic signatures (eIDAS SES) by SMS
//! one-time code, with a sealed, verifiable evidence record.
//!
//! An agent or a municipal system creates a request for a PDF (from the
//! object store or uploaded) and its signers ([`grpc`]); each signer opens
//! their own link (`/s/<token>`, [`http`]), receives a 6-digit code by SMS
//! (a `NotificationRequest` on `guichet.notify.sms`, staged in the outbox)
//! and enters it. Codes are stored as keyed hashes, attempts and codes are
//! limited, every step is an append-only event row ([`core`]). When all
//! have signed, the role appends a French signature page to the PDF
//! ([`pdf`]), seals the evidence with its Ed25519 key ([`seal`]), stores
//! both in the object store, and carries the result to the dossier
//! (link status, signed document, process transition) from its job table
//! ([`dossier`]). [`verify`] checks a PDF and/or an evidence record.

pub mod config;
pub mod core;
pub mod db;
pub mod dossier;
pub mod error;
pub mod grpc;
pub mod http;
pub mod otp;
pub mod pdf;
pub mod seal;
pub mod tsa;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use guichet_platform::auth::{AuthInterceptor, Authenticator, ServiceCredentials};
use guichet_platform::bus::{HandlerError, StreamKind};
use guichet_platform::config::ConfigError;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::outbox::Outbox;
use guichet_platform::role::{BoxFuture, Handles, Listener, Local, RoleService, RoleSpec};
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use guichet_proto::notification::v1::NotificationStatusChanged;
use guichet_proto::signature::v1::signature_service_server::SignatureServiceServer;
use prost::Message;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use guichet_platform::Deps;

pub struct Service {
    core: core::Core,
    auth: Arc<Authenticator>,
    http: Option<tokio::net::TcpListener>,
    http_addr: Option<SocketAddr>,
}

/// What a caller may replace (tests: a manual clock, a dossier stand-in).
/// The signature role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "signature";
    const SECTION: &'static str = "signature";
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

/// Load the seal keys, connect the database and the dossier role; a test
/// double of the latter may come as a seam in `deps` (`Arc<dyn DossierPort>`).
pub async fn build(mut config: Config, deps: Deps) -> anyhow::Result<Service> {
    config.validate()?;
    config.town = deps.town.clone();
    let keys = Arc::new(seal::Keys::from_config(&config.seal)?);
    let db = deps
        .database::<db::Migrator>("signature", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Events).await?;
    deps.bus.ensure_stream(StreamKind::Notify).await?;
    let dossier: Arc<dyn dossier::DossierPort> = match deps.seam::<Arc<dyn dossier::DossierPort>>()
    {
        Some(d) => d,
        None => {
            let channel =
                guichet_platform::grpc::lazy_channel("signature.dossier_url", &config.dossier_url)?;
            Arc::new(dossier::Grpc {
                client: DossierServiceClient::with_interceptor(
                    channel,
                    ServiceCredentials::new(deps.auth.clone(), "signature", "dossier"),
                ),
            })
        }
    };
    let (http, http_addr) =
        guichet_platform::grpc::bind_optional("signature.http_addr", &config.http_addr).await?;
    tracing::info!(key_id = %keys.key_id, public_key = %keys.public_key_base64(), "signature seal key loaded");
    let tsa_timeout = config.tsa_timeout_secs.max(1);
    Ok(Service {
        core: core::Core {
            outbox: Outbox::new(db.clone(), deps.bus.clone()),
            db,
            config: Arc::new(config),
            keys,
            clock: deps.clock.clone(),
            objects: deps.objects.clone(),
            dossier,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(tsa_timeout))
                .build()?,
        },
        auth: deps.auth,
        http,
        http_addr,
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(SignatureServiceServer::with_interceptor(
            grpc::SignatureApi {
                core: self.core.clone(),
            },
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// The citizens' signing pages, when configured.
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
    /// The engine, for in-process callers (tests).
    pub fn core(&self) -> core::Core {
        self.core.clone()
    }

    /// Where the citizen signing pages listen, when served.
    /// Relay the outbox, run expiry and dossier jobs, and serve the
    /// signing pages until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.core.outbox.clone().run(shutdown.clone()));
        if let Some(listener) = self.http {
            let app = http::router(self.core.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(error) = guichet_platform::net::serve_http(
                    listener,
                    app,
                    stop,
                    "signature",
                    guichet_platform::net::HttpLimits::default(),
                )
                .await
                {
                    tracing::error!(%error, "signature pages stopped");
                }
            });
        }
        let core = self.core.clone();
        let every = Duration::from_secs(core.config.job_interval_secs);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                match core.expire_due().await {
                    Ok(n) if n > 0 => tracing::info!(expired = n, "signature requests expired"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "signature expiry failed, will retry"),
                }
                if let Err(error) = core.run_due_jobs().await {
                    tracing::warn!(%error, "signature jobs failed, will retry");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        // Delivery reports of the code SMS go into the request's trail.
        let core = self.core.clone();
        let bus = core.outbox.bus().clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let filter = bus.event_subject("notification", "*");
            let res = bus
                .consume(
                    StreamKind::Events,
                    "signature-sms-status",
                    filter,
                    2,
                    stop,
                    move |event| {
                        let core = core.clone();
                        async move {
                            let msg = NotificationStatusChanged::decode(event.body.clone())
                                .map_err(|e| HandlerError::Permanent(e.to_string()))?;
                            core.record_sms_status(&event.id, &msg)
                                .await
                                .map(|_| ())
                                .map_err(|e| HandlerError::Transient(e.to_string()))
                        }
                    },
                )
                .await;
            if let Err(error) = res {
                tracing::error!(%error, "signature sms status consumer stopped");
            }
        });
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}
