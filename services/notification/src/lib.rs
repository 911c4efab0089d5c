//! The notification role: reliable SMS and email delivery to citizens.
//!
//! Requests arrive on JetStream stream NOTIFY (`guichet.notify.>`, durable
//! consumer, acked only after the request is committed to the role's own
//! outbox table, idempotent on the request id); process reminders arrive
//! as dossier `reminder_due` events; bounces from the email channel feed a
//! suppression list. A delivery worker claims due messages with a lease
//! (safe with several replicas), renders the French templates
//! ([`templates`]), and sends SMS through a provider ([`sms`]: an HTTP
//! adapter with delivery reports, or the development sink) and email over
//! SMTP ([`email`]), with exponential backoff and jitter, a dead letter
//! after `max_attempts`, `not_after` expiry and a per-recipient hourly
//! limit. Every status change is published as `NotificationStatusChanged`
//! on `guichet.events.notification.<status>` through the platform outbox.
//!
//! Bodies, codes, phone numbers and addresses are never logged: ids only.

pub mod config;
pub mod consumer;
pub mod core;
pub mod db;
pub mod delivery;
pub mod email;
pub mod grpc;
pub mod gsm;
pub mod http;
pub mod sms;
pub mod templates;
pub mod wording;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use guichet_platform::auth::{AuthInterceptor, Authenticator, ServiceCredentials};
use guichet_platform::bus::StreamKind;
use guichet_platform::config::ConfigError;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::outbox::Outbox;
use guichet_platform::role::{BoxFuture, Handles, Listener, Local, RoleService, RoleSpec};
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use guichet_proto::notification::v1::notification_service_server::NotificationServiceServer;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use guichet_platform::Deps;

pub struct Service {
    core: core::Core,
    worker: delivery::Worker,
    directory: Arc<dyn consumer::DossierDirectory>,
    bus: guichet_platform::bus::Bus,
    auth: Arc<Authenticator>,
    http: Option<tokio::net::TcpListener>,
    http_addr: Option<SocketAddr>,
}

/// What a caller may replace (tests: a manual clock, another directory).
/// The notification role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "notification";
    const SECTION: &'static str = "notification";
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

/// Load the templates, connect the database, the SMS provider, the mailer
/// and the dossier directory; test doubles of the provider and the directory
/// may come as seams in `deps` (`Arc<dyn SmsProvider>`,
/// `Arc<dyn DossierDirectory>`).
pub async fn build(mut config: Config, deps: Deps) -> anyhow::Result<Service> {
    config.validate()?;
    config.town = deps.town.clone();
    let dir =
        (!config.templates_dir.as_os_str().is_empty()).then_some(config.templates_dir.as_path());
    let catalog = templates::Catalog::load(dir)
        .map_err(|e| anyhow::anyhow!("invalid template (notification.templates_dir): {e}"))?;
    tracing::info!(templates = catalog.len(), "notification templates loaded");
    let db = deps
        .database::<db::Migrator>("notification", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Notify).await?;
    deps.bus.ensure_stream(StreamKind::Events).await?;
    deps.bus.ensure_stream(StreamKind::DeadLetter).await?;

    let sms: Arc<dyn sms::SmsProvider> = match deps.seam::<Arc<dyn sms::SmsProvider>>() {
        Some(s) => s,
        None if config.sms_provider == "http" => {
            let h = &config.sms_http;
            let callback = (!h.report_base_url.is_empty()
                && !h.report_token.expose_secret().is_empty())
            .then(|| {
                format!(
                    "{}/sms/delivery-report/{}",
                    h.report_base_url.trim_end_matches('/'),
                    h.report_token.expose_secret()
                )
            });
            // The town's sender id when it has one (`town.sms_sender`).
            let sender = if config.town.sms_sender.is_empty() {
                h.sender.as_str()
            } else {
                config.town.sms_sender.as_str()
            };
            Arc::new(sms::HttpProvider::new(
                &h.url,
                h.api_key.clone(),
                sender,
                Duration::from_millis(h.timeout_ms),
                callback,
            )?)
        }
        None => Arc::new(sms::SinkProvider::new(non_empty(
            &config.sms_sink_dir,
            "./data/sms-sink",
        ))?),
    };
    let mailer: Arc<dyn email::Mailer> = match config.email.transport.as_str() {
        "smtp" => Arc::new(email::SmtpMailer::new(&config.email)?),
        _ => Arc::new(email::SinkMailer::new(non_empty(
            &config.email.sink_dir,
            "./data/email-sink",
        ))?),
    };
    let directory: Arc<dyn consumer::DossierDirectory> =
        match deps.seam::<Arc<dyn consumer::DossierDirectory>>() {
            Some(d) => d,
            None => {
                let channel = guichet_platform::grpc::lazy_channel(
                    "notification.dossier_url",
                    &config.dossier_url,
                )?;
                Arc::new(consumer::GrpcDirectory {
                    client: DossierServiceClient::with_interceptor(
                        channel,
                        ServiceCredentials::new(deps.auth.clone(), "notification", "dossier"),
                    ),
                })
            }
        };
    let (http, http_addr) =
        guichet_platform::grpc::bind_optional("notification.http_addr", &config.http_addr).await?;
    let core = core::Core {
        outbox: Outbox::new(db.clone(), deps.bus.clone()),
        db,
        config: Arc::new(config),
        catalog: templates::Templates::new(catalog),
        clock: deps.clock.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
        replica: format!("notification-{}", uuid::Uuid::now_v7()),
    };
    // The studio's wordings, before the first message.
    core.reload_wordings().await?;
    let worker = delivery::Worker {
        core: core.clone(),
        sms,
        mailer,
        objects: deps.objects.clone(),
    };
    Ok(Service {
        core,
        worker,
        directory,
        bus: deps.bus.clone(),
        auth: deps.auth,
        http,
        http_addr,
    })
}

fn non_empty(p: &std::path::Path, default: &str) -> PathBuf {
    if p.as_os_str().is_empty() {
        PathBuf::from(default)
    } else {
        p.to_path_buf()
    }
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(NotificationServiceServer::with_interceptor(
            grpc::NotificationApi {
                core: self.core.clone(),
            },
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// The delivery-report webhook, when served.
    fn listeners(&self) -> Vec<Listener> {
        self.http_addr.map(Listener::http).into_iter().collect()
    }

    fn handles(&self, handles: &mut Handles) {
        handles.insert(self.core.clone());
        handles.insert(self.worker.clone());
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

    /// The delivery worker, for in-process callers (tests run passes).
    pub fn worker(&self) -> delivery::Worker {
        self.worker.clone()
    }

    /// Consume requests, reminders and bounces, deliver, relay status
    /// events and serve the webhook until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.core.outbox.clone().run(shutdown.clone()));
        let cfg = self.core.config.clone();
        let prefix = |rest: &str| self.bus.subject(rest);

        let (bus, core, stop) = (self.bus.clone(), self.core.clone(), shutdown.clone());
        let filter = prefix("notify.>");
        let durable = cfg.consumer.clone();
        let concurrency = cfg.concurrency;
        tasks.spawn(async move {
            let handler = move |ev| consumer::on_request(core.clone(), ev);
            if let Err(error) = bus
                .consume(
                    StreamKind::Notify,
                    &durable,
                    filter,
                    concurrency,
                    stop,
                    handler,
                )
                .await
            {
                tracing::error!(%error, "notification request consumer stopped");
            }
        });

        let (bus, core, stop) = (self.bus.clone(), self.core.clone(), shutdown.clone());
        let directory = self.directory.clone();
        let filter = prefix("events.dossier.reminder_due");
        let durable = format!("{}-reminders", cfg.consumer);
        tasks.spawn(async move {
            let handler = move |ev| consumer::on_reminder(core.clone(), directory.clone(), ev);
            if let Err(error) = bus
                .consume(
                    StreamKind::Events,
                    &durable,
                    filter,
                    concurrency,
                    stop,
                    handler,
                )
                .await
            {
                tracing::error!(%error, "reminder consumer stopped");
            }
        });

        let (bus, core, stop) = (self.bus.clone(), self.core.clone(), shutdown.clone());
        let filter = prefix("events.email.>");
        let durable = format!("{}-bounces", cfg.consumer);
        tasks.spawn(async move {
            let handler = move |ev| consumer::on_email_event(core.clone(), ev);
            if let Err(error) = bus
                .consume(
                    StreamKind::Events,
                    &durable,
                    filter,
                    concurrency,
                    stop,
                    handler,
                )
                .await
            {
                tracing::error!(%error, "bounce consumer stopped");
            }
        });

        tasks.spawn(self.worker.clone().run(shutdown.clone()));

        // The wordings other replicas wrote from the studio.
        let (core, stop) = (self.core.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(error) = core.reload_wordings().await {
                            tracing::warn!(%error, "template wordings not reloaded, will retry");
                        }
                    }
                }
            }
        });

        if let Some(listener) = self.http {
            let app = http::router(self.core.clone(), cfg.sms_http.report_token.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(error) = guichet_platform::net::serve_http(
                    listener,
                    app,
                    stop,
                    "notification",
                    guichet_platform::net::HttpLimits::default(),
                )
                .await
                {
                    tracing::error!(%error, "notification http endpoint stopped");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}
