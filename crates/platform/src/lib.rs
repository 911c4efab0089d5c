//! The shared mechanics of every guichet role.
//!
//! A role crate (dossier, routing, ingress-counter…) holds only its domain;
//! everything that is the same in every role lives here, once: layered
//! configuration, telemetry and trace propagation, the NATS/JetStream bus
//! with its CloudEvents envelope, database connections and migrations, JWT
//! authentication, graceful shutdown, the admin HTTP server and gRPC serving.

pub mod access;
pub mod admin;
pub mod auth;
pub mod bus;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod contact;
pub mod db;
pub mod domain_error;
pub mod french;
pub mod grpc;
pub mod jobs;
pub mod migration;
pub mod names;
pub mod net;
pub mod objects;
pub mod outbox;
pub mod placement;
pub mod reference;
pub mod retry;
pub mod role;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod town;

pub use tokio_util::sync::CancellationToken;

/// What every role gets from the process that runs it: one NATS connection,
/// one authenticator, the shared database settings, the readiness probe
/// its checks join, the clock and the test seams.
#[derive(Clone)]
pub struct Deps {
    pub bus: bus::Bus,
    pub auth: std::sync::Arc<auth::Authenticator>,
    pub database: config::DatabaseConfig,
    pub readiness: admin::Readiness,
    /// Content-addressed document storage shared by every role.
    pub objects: objects::ObjectStore,
    /// "Now" for every deadline, timer and timestamp (a manual clock in
    /// tests, so they move time instead of sleeping).
    pub clock: clock::SharedClock,
    /// The town's identity (`[town]`), for every message and page.
    pub town: town::Town,
    /// Test seams keyed by type (see [`role::Overrides`]); empty in
    /// production.
    pub overrides: role::Overrides,
}

impl Deps {
    /// A seam of type `T` the process was given, if any.
    pub fn seam<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.overrides.get::<T>().cloned()
    }

    /// Connect a role's own database (migrating it when configured) and add
    /// it to the readiness checks as `<role> database`.
    pub async fn database<M: sea_orm_migration::MigratorTrait>(
        &self,
        role: &str,
        url: &str,
    ) -> Result<sea_orm::DatabaseConnection, sea_orm::DbErr> {
        let db = db::connect_and_migrate::<M>(url, &self.database).await?;
        let check = db.clone();
        self.readiness
            .add_check(format!("{role} database"), move || {
                let db = check.clone();
                async move { db.ping().await.map_err(|e| e.to_string()) }
            });
        Ok(db)
    }
}
