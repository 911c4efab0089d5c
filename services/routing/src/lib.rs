//! The routing role: consumes intake events from every channel, classifies
//! them (rules), attaches each to its dossier (correlation) and keeps the
//! unified queue agents work from: ordering, SLAs on a business calendar,
//! pull and push distribution, lifecycle events and live statistics.

pub mod calendar;
pub mod classification;
pub mod config;
pub mod db;
pub mod desk;
pub mod grpc;
pub mod intake;
pub mod queue;
pub mod rules;
pub mod studio;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use guichet_platform::auth::{AuthInterceptor, Authenticator, ServiceCredentials};
use guichet_platform::bus::{HandlerError, StreamKind};
use guichet_platform::config::ConfigError;
use guichet_platform::grpc::GrpcServer;
use guichet_platform::role::{BoxFuture, Handles, Local, RoleService, RoleSpec, Tasks};
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use guichet_proto::events::v1 as ev;
use guichet_proto::routing::v1::queue_service_server::QueueServiceServer;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use guichet_platform::clock::{Clock, ManualClock, SharedClock, SystemClock};

pub use guichet_platform::Deps;

pub struct Service {
    config: Config,
    router: Arc<intake::Router>,
    api: grpc::QueueApi,
    auth: Arc<Authenticator>,
}

/// The routing role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "routing";
    const SECTION: &'static str = "routing";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    /// Routing calls dossier on the local port when both run here.
    fn wire(config: &mut Config, local: &Local) {
        if let Some(url) = local.url_of("dossier") {
            config.dossier_url = url.to_owned();
        }
    }

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

/// Connect the database (migrating it), the dossier client and the streams;
/// load the rules. Every time-dependent decision reads the clock of `deps`.
pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let clock = deps.clock.clone();
    let calendar = config.calendar()?;
    let queues: HashSet<String> = config.queues.keys().cloned().collect();
    let rules = rules::Rules::load(&config.rules_file, queues).map_err(|e| {
        anyhow::anyhow!("configuration error: invalid value for key `routing.rules_file`: {e}")
    })?;
    let studio = studio::Studio::new(&config).map_err(|e| {
        anyhow::anyhow!("configuration error: invalid value for key `routing.corpus_file`: {e}")
    })?;
    let db = deps
        .database::<db::Migrator>("routing", &config.database_url)
        .await?;
    // The newest rule set published in the studio is in force from the start.
    if !studio.writes_file
        && let Some(rules::Reload::Refused(e)) = studio::apply_newest(&rules, &db).await?
    {
        tracing::warn!(error = %e, "published classification rules refused, file or shipped rules kept");
    }
    deps.bus.ensure_stream(StreamKind::Intake).await?;
    deps.bus.ensure_stream(StreamKind::Events).await?;
    deps.bus.ensure_stream(StreamKind::DeadLetter).await?;
    let channel = guichet_platform::grpc::lazy_channel("routing.dossier_url", &config.dossier_url)?;
    let dossier = DossierServiceClient::with_interceptor(
        channel,
        ServiceCredentials::new(deps.auth.clone(), "routing", "dossier"),
    );
    let outbox = guichet_platform::outbox::Outbox::new(db.clone(), deps.bus.clone());
    let settings = queue::Settings {
        default_queue: config.default_queue.clone(),
        queues: config.queues.clone(),
        capacity: config.capacity.clone(),
        offer_timeout: chrono::Duration::seconds(config.offer_timeout_secs as i64),
        max_missed_offers: config.max_missed_offers,
        callback_attempts: config.callback_attempts,
        sla_near_bump: config.sla_near_bump,
        sla_breach_bump: config.sla_breach_bump,
    };
    let queue = queue::Queue::new(db, outbox, clock, settings);
    let parse = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .filter_map(|(k, v)| Some((k.clone(), calendar::SlaTarget::parse(v).ok()?)))
            .collect()
    };
    let classifier = Arc::new(intake::Classifier {
        rules: Arc::new(rules),
        calendar,
        triage_process: config.triage_process.clone(),
        default_priority: config.default_priority,
        default_queue: config.default_queue.clone(),
        sla_channel: parse(&config.sla),
        sla_process: parse(&config.sla_process),
        sla_near_ratio: config.sla_near_ratio,
    });
    let router = Arc::new(intake::Router {
        queue: queue.clone(),
        dossier: dossier.clone(),
        classifier: classifier.clone(),
        correlation_window: chrono::Duration::hours(config.correlation_window_hours as i64),
    });
    let api = grpc::QueueApi {
        queue,
        dossier,
        classifier,
        studio: Arc::new(studio),
        streams: CancellationToken::new(),
    };
    Ok(Service {
        config,
        router,
        api,
        auth: deps.auth,
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(QueueServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    fn handles(&self, handles: &mut Handles) {
        handles.insert(self.api.queue.clone());
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(Service::run(*self, shutdown))
    }
}

impl Service {
    pub fn queue(&self) -> queue::Queue {
        self.api.queue.clone()
    }

    /// Consume INTAKE until shutdown; in-flight events finish first.
    /// Maintenance (offer timers, SLA escalation, ageing, push offers), the
    /// outbox relay and the rules reload run beside it, and are joined
    /// before this returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let bus = self.api.queue.outbox().bus().clone();
        let mut tasks = Tasks::new();
        tasks.spawn_infallible(self.api.queue.outbox().clone().run(shutdown.clone()));
        let streams = self.api.streams.clone();
        let stop = shutdown.clone();
        tasks.spawn_infallible(async move {
            stop.cancelled().await;
            streams.cancel();
        });
        let filter = bus.subject("intake.>");
        let router = self.router.clone();

        let queue = self.api.queue.clone();
        let stop = shutdown.clone();
        let every = Duration::from_millis(self.config.maintenance_interval_ms);
        tasks.spawn_infallible(async move {
            // The first pass after one interval, not at once.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(error) = queue.maintain().await {
                    tracing::warn!(%error, "queue maintenance failed, retrying next tick");
                }
                n += 1;
                if n % 10 == 1
                    && let Ok(p) = queue.pending_count().await
                {
                    metrics::gauge!("guichet_routing_pending_items").set(p as f64);
                }
            }
        });

        let api = self.api.clone();
        let stop = shutdown.clone();
        let every = Duration::from_millis(self.config.rules_reload_ms);
        tasks.spawn_infallible(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
                reload_rules(&api).await;
            }
        });

        // The studio's trial inputs are kept `trial_inputs_days`.
        if self.config.trial_inputs_days > 0 {
            let queue = self.api.queue.clone();
            let stop = shutdown.clone();
            let days = i64::from(self.config.trial_inputs_days);
            tasks.spawn_infallible(async move {
                let every = Duration::from_secs(3600);
                loop {
                    let before = queue.now() - chrono::Duration::days(days);
                    match studio::forget_inputs(queue.db(), before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(inputs = n, "old classification inputs forgotten"),
                        Err(error) => {
                            tracing::warn!(%error, "cannot forget old classification inputs")
                        }
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(every) => {}
                    }
                }
            });
        }

        // Citizens merged at the dossier role: items follow the kept record.
        bus.ensure_stream(StreamKind::Events).await?;
        let merges = bus.clone();
        let queue = self.api.queue.clone();
        let stop = shutdown.clone();
        tasks.spawn_infallible(async move {
            let filter = merges.event_subject("dossier", "citizen_merged");
            let res = merges
                .consume(
                    StreamKind::Events,
                    "routing-citizen-merges",
                    filter,
                    1,
                    stop,
                    move |event| {
                        let queue = queue.clone();
                        async move {
                            use prost::Message;
                            let merged = guichet_proto::events::v1::CitizenChanged::decode(
                                event.body.as_ref(),
                            )
                            .map_err(|e| {
                                HandlerError::Permanent(format!("citizen_merged body: {e}"))
                            })?;
                            let moved = queue
                                .reassign_citizen(&merged.other_citizen_id, &merged.citizen_id)
                                .await
                                .map_err(|e| {
                                    HandlerError::Transient(format!("reassign citizen: {e}"))
                                })?;
                            if moved > 0 {
                                tracing::info!(
                                    work_items = moved,
                                    "work items follow a citizen merge"
                                );
                            }
                            Ok(())
                        }
                    },
                )
                .await;
            if let Err(error) = res {
                tracing::error!(%error, "citizen merge consumer stopped");
            }
        });

        // The counter desks: a walk-in's request follows its ticket.
        let desks = bus.clone();
        let queue = self.api.queue.clone();
        let stop = shutdown.clone();
        tasks.spawn_infallible(async move {
            let filter = desks.subject("events.counter.>");
            let res = desks
                .consume(
                    StreamKind::Events,
                    desk::CONSUMER,
                    filter,
                    1,
                    stop,
                    move |event| {
                        let queue = queue.clone();
                        async move { desk::handle(&queue, event).await }
                    },
                )
                .await;
            if let Err(error) = res {
                tracing::error!(%error, "counter desk consumer stopped");
            }
        });

        let consumed = bus
            .consume(
                StreamKind::Intake,
                &self.config.consumer,
                filter,
                self.config.concurrency,
                shutdown,
                move |event| {
                    let router = router.clone();
                    async move { router.handle(event).await }
                },
            )
            .await;
        tasks.join().await;
        consumed?;
        Ok(())
    }
}

async fn reload_rules(api: &grpc::QueueApi) {
    let rules = &api.classifier.rules;
    let outcome = if api.studio.writes_file {
        rules.reload()
    } else {
        // The newest publication, else the file.
        match studio::apply_newest(rules, api.queue.db()).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => rules.reload(),
            Err(error) => {
                tracing::warn!(%error, "cannot read the published rules, retrying next tick");
                return;
            }
        }
    };
    let (version, count, error, ty) = match outcome {
        rules::Reload::Unchanged => return,
        rules::Reload::Loaded(set) => {
            tracing::info!(version = %set.version, rules = set.rules.len(), "classification rules reloaded");
            metrics::gauge!("guichet_routing_rules_valid").set(1.0);
            (
                set.version.clone(),
                set.rules.len() as u32,
                String::new(),
                "rules_reloaded",
            )
        }
        rules::Reload::Refused(error) => {
            tracing::warn!(%error, "classification rules file refused, previous rules kept");
            metrics::gauge!("guichet_routing_rules_valid").set(0.0);
            metrics::counter!("guichet_routing_rules_reload_errors_total").increment(1);
            let current = api.classifier.rules.current();
            (
                current.version.clone(),
                current.rules.len() as u32,
                error,
                "rules_rejected",
            )
        }
    };
    let outbox = api.queue.outbox().clone();
    let staged = outbox.domain_event(
        "routing",
        ty,
        "rules".into(),
        &ev::RulesReloaded {
            version,
            rule_count: count,
            error,
        },
    );
    if let Err(error) = outbox.publish_now(&staged).await {
        tracing::warn!(%error, "rules event not published");
    }
}
