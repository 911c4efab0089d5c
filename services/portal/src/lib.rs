//! The agents' portal: the one web page through which every request, from
//! every channel, is taken, traced and handled.
//!
//! Server-rendered French pages (axum + askama, escaping on), usable
//! without JavaScript; vendored htmx swaps fragments and server-sent events
//! keep the queue live. The portal is a client like any municipal system:
//! it holds the session and calls the roles over gRPC with the signed-in
//! agent's own token, so every authorisation stays in the role that owns
//! the data. Its own tables are sessions, local accounts, login flows and
//! preferences.

pub mod accounts;
pub mod catalog;
pub mod clients;
pub mod config;
pub mod db;
pub mod live;
pub mod oidc;
mod pages;
pub mod public;
pub mod session;
pub mod views;
pub mod web;

use std::sync::Arc;

use guichet_platform::bus::StreamKind;
use guichet_platform::config::ConfigError;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::role::{BoxFuture, Handles, Listener, Local, RoleService, RoleSpec};
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use guichet_platform::Deps;

/// The portal role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "portal";
    const SECTION: &'static str = "portal";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    /// The roles running in the same process are called on the local port.
    fn wire(config: &mut Config, local: &Local) {
        for (role, url) in [
            ("routing", &mut config.routing_url),
            ("dossier", &mut config.dossier_url),
            ("ingress-counter", &mut config.counter_url),
            ("appointment", &mut config.appointment_url),
            ("indicators", &mut config.indicators_url),
            ("ingress-telephony", &mut config.telephony_url),
            ("signature", &mut config.signature_url),
            ("ingress-email", &mut config.email_url),
            ("ingress-scan", &mut config.scan_url),
            ("notification", &mut config.notification_url),
        ] {
            if let Some(local) = local.url_of(role) {
                *url = local.to_owned();
            }
        }
    }

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

/// The built portal.
pub struct Service {
    app: web::App,
    listener: tokio::net::TcpListener,
    addr: std::net::SocketAddr,
    /// The citizens' pages' own listener (`portal.public.http_addr`).
    public: Option<(tokio::net::TcpListener, std::net::SocketAddr)>,
}

/// What tests and `guichet up` reach the portal through.
#[derive(Clone)]
pub struct PortalHandle {
    pub db: sea_orm::DatabaseConnection,
    pub base_url: String,
    pub live: live::Live,
    /// Where citizens reach their pages (empty when not served).
    pub public_url: String,
}

pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let db = deps
        .database::<db::Migrator>("portal", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Intake).await?;
    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on portal.http_addr {}: {e}",
                config.http_addr
            )
        })?;
    let addr = listener.local_addr()?;
    let public = if config.public.enabled() {
        let l = tokio::net::TcpListener::bind(&config.public.http_addr)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on portal.public.http_addr {}: {e}",
                    config.public.http_addr
                )
            })?;
        let a = l.local_addr()?;
        Some((l, a))
    } else {
        None
    };
    let base = config.base_url(addr);
    let oidc = if config.oidc.enabled() {
        Some(oidc::Provider::new(config.oidc.clone(), &base)?)
    } else {
        None
    };
    let clients = clients::Clients::new(&config, deps.auth.clone())?;
    let public_url = config.public.base_url(public.as_ref().map(|(_, a)| *a));
    let app = web::App {
        config: Arc::new(config),
        db,
        auth: deps.auth.clone(),
        clients,
        bus: deps.bus.clone(),
        live: live::Live::new(),
        clock: deps.clock.clone(),
        oidc,
        town: deps.town.clone(),
        catalog: catalog::Catalog::default(),
        public_url,
    };
    Ok(Service {
        app,
        listener,
        addr,
        public,
    })
}

impl RoleService for Service {
    fn register(&self, _server: &mut GrpcServer) {}

    fn listeners(&self) -> Vec<Listener> {
        let mut l = vec![Listener::http(self.addr)];
        if let Some((_, addr)) = &self.public {
            l.push(Listener {
                name: "public",
                addr: *addr,
            });
        }
        l
    }

    fn handles(&self, handles: &mut Handles) {
        handles.insert(PortalHandle {
            db: self.app.db.clone(),
            base_url: self.app.config.base_url(self.addr),
            live: self.app.live.clone(),
            public_url: self
                .app
                .config
                .public
                .base_url(self.public.as_ref().map(|(_, a)| *a)),
        });
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(async move {
            let app = self.app.clone();
            let public_listener = self.public;
            let router = guichet_platform::net::LiveSlots::new(
                "portal",
                guichet_platform::net::LiveSlots::DEFAULT,
            )
            .layer(pages::router(app.clone(), shutdown.clone()));
            let follow = app.live.clone().follow(app.bus.clone(), shutdown.clone());
            let purge = purge_loop(app.clone(), shutdown.clone());
            let http = guichet_platform::net::serve_http(
                self.listener,
                router,
                shutdown.clone(),
                "portal",
                guichet_platform::net::HttpLimits::default(),
            );
            tracing::info!(addr = %self.addr, "portal listening");
            let citizens = async {
                let Some((listener, addr)) = public_listener else {
                    return Ok(());
                };
                let router = guichet_platform::net::LiveSlots::new(
                    "citizen_pages",
                    guichet_platform::net::LiveSlots::DEFAULT,
                )
                .layer(public::router(
                    public::Public::new(app.clone()),
                    shutdown.clone(),
                ));
                tracing::info!(%addr, "citizens' pages listening");
                guichet_platform::net::serve_http(
                    listener,
                    router,
                    shutdown.clone(),
                    "citizen_pages",
                    guichet_platform::net::HttpLimits::default(),
                )
                .await
            };
            let (served, public_served, (), ()) = tokio::join!(http, citizens, follow, purge);
            served?;
            public_served?;
            Ok(())
        })
    }
}

/// Delete ended sessions every few minutes.
async fn purge_loop(app: web::App, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = session::purge(&app.db, app.now(), app.idle()).await {
                    tracing::warn!(error = %e, "cannot purge ended sessions");
                }
            }
        }
    }
}
