//! The routing role: consumes intake events from every channel, attaches each
//! to its citizen and dossier, and keeps the unified queue agents work from.

pub mod config;
pub mod db;
pub mod grpc;
pub mod intake;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use guichet_platform::auth::{AuthInterceptor, Authenticator, ServiceCredentials};
use guichet_platform::bus::StreamKind;
use guichet_platform::grpc::GrpcServer;
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use guichet_proto::routing::v1::queue_service_server::QueueServiceServer;
use tokio_util::sync::CancellationToken;

pub use config::Config;

pub use guichet_platform::Deps;

pub struct Service {
    config: Config,
    router: Arc<intake::Router>,
    api: grpc::QueueApi,
    auth: Arc<Authenticator>,
}

/// Connect the database (migrating it), the dossier client and the streams.
pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let db = deps
        .database::<db::Migrator>("routing", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Intake).await?;
    deps.bus.ensure_stream(StreamKind::Events).await?;
    deps.bus.ensure_stream(StreamKind::DeadLetter).await?;
    let channel = tonic::transport::Endpoint::from_shared(config.dossier_url.clone())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(15))
        .connect_lazy();
    let dossier = DossierServiceClient::with_interceptor(
        channel,
        ServiceCredentials::new(deps.auth.clone(), "guichet-routing"),
    );
    let outbox = guichet_platform::outbox::Outbox::new(db.clone(), deps.bus.clone());
    let queue = queue::Queue::new(db, outbox);
    let router = Arc::new(intake::Router {
        queue: queue.clone(),
        dossier: dossier.clone(),
        default_priority: config.default_priority,
    });
    let api = grpc::QueueApi { queue, dossier };
    Ok(Service {
        config,
        router,
        api,
        auth: deps.auth,
    })
}

impl Service {
    pub fn register(&self, server: &mut GrpcServer) {
        server.add(QueueServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    /// Consume INTAKE until shutdown; in-flight events finish first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let bus = self.api.queue.outbox().bus().clone();
        tokio::spawn(self.api.queue.outbox().clone().run(shutdown.clone()));
        let filter = bus.subject("intake.>");
        let router = self.router.clone();
        let gauge_queue = self.api.queue.clone();
        let gauge_stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = gauge_stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Ok(n) = gauge_queue.pending_count().await {
                            metrics::gauge!("guichet_routing_pending_items").set(n as f64);
                        }
                    }
                }
            }
        });
        bus.consume(
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
        .await?;
        Ok(())
    }
}
