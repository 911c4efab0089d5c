//! The contract every role crate implements, so a process can run any set of
//! roles the same way.
//!
//! A role crate exposes a [`RoleSpec`] (its typed config section, its
//! database migrator, how it is wired to the other roles of the same
//! process, how it is built) and its built service implements
//! [`RoleService`] (mount its gRPC services, name its own listeners, run its
//! background work until cancelled). The `guichet` binary lists the roles in
//! one table; `guichet up`, `guichet serve`, `guichet migrate`, the
//! deployment manifests' test and the test kit all go through it.

use std::future::Future;
use std::net::SocketAddr;

pub use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Deps;
use crate::config::ConfigError;
use crate::grpc::GrpcServer;

/// One of a role's own listeners (HTTP pages, a webhook, SMTP), besides the
/// gRPC port every role of a process shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// What listens: `http` for a role's HTTP endpoints, `smtp`, `lmtp`…
    pub name: &'static str,
    pub addr: SocketAddr,
}

impl Listener {
    pub fn http(addr: SocketAddr) -> Listener {
        Listener { name: "http", addr }
    }
}

/// Typed handles a built role shares with the process that runs it (its
/// core, its queue): tests and tools reach a role's internals through them
/// instead of building the role by hand.
pub type Handles = http::Extensions;

/// Test seams a process gives its roles (a fake partner service, a
/// recording SMS provider), keyed by type. Production leaves it empty.
pub type Overrides = http::Extensions;

/// A built role, ready to serve.
pub trait RoleService: Send + 'static {
    /// Mount the role's gRPC services on the process's shared server.
    fn register(&self, server: &mut GrpcServer);

    /// The role's own listeners, already bound.
    fn listeners(&self) -> Vec<Listener> {
        Vec::new()
    }

    /// Put the handles tests and tools may use into `handles`.
    fn handles(&self, _handles: &mut Handles) {}

    /// Run the role's background work until `shutdown` is cancelled, and
    /// return only once every task it started has finished, so the
    /// process's grace period covers all of it.
    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// Where the other roles of the same process answer.
#[derive(Debug, Clone)]
pub struct Local {
    /// The process's gRPC URL (`http://127.0.0.1:50051`).
    pub grpc_url: String,
    /// The names of the roles running in this process (`dossier`, …).
    pub roles: Vec<&'static str>,
}

impl Local {
    /// The gRPC URL of `role` when it runs in this process.
    pub fn url_of(&self, role: &str) -> Option<&str> {
        self.roles.contains(&role).then_some(self.grpc_url.as_str())
    }
}

/// What a role crate declares about itself.
pub trait RoleSpec: 'static {
    /// The role's name (`ingress-counter`), as in `guichet serve`.
    const NAME: &'static str;
    /// The role's configuration section (`counter`): the key prefix in
    /// `guichet.toml` and `GUICHET__<SECTION>__…`, and the name of its
    /// default SQLite file and test database.
    const SECTION: &'static str;

    type Config: Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static;
    type Migrator: sea_orm_migration::MigratorTrait;

    /// Check the section; errors name the key.
    fn validate(config: &Self::Config) -> Result<(), ConfigError>;

    /// The role's own database URL (empty: a SQLite file under `data_dir`).
    fn database_url(config: &mut Self::Config) -> &mut String;

    /// Point the role at the other roles running in the same process.
    fn wire(_config: &mut Self::Config, _local: &Local) {}

    /// Build the role: connect its database, declare its streams, bind its
    /// listeners. Nothing runs until [`RoleService::run`].
    fn build(
        config: Self::Config,
        deps: Deps,
    ) -> impl Future<Output = anyhow::Result<Box<dyn RoleService>>> + Send;
}

/// The background tasks of one role, joined together: every task a role
/// starts goes here, so none is left detached when the process stops.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<()>,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Run `task`; its error, if any, is logged with `what`.
    pub fn spawn<F, E>(&mut self, what: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.set.spawn(async move {
            if let Err(error) = task.await {
                tracing::error!(task = what, %error, "background task stopped with an error");
            }
        });
    }

    /// Run `task`, which has no error to report.
    pub fn spawn_infallible<F>(&mut self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.set.spawn(task);
    }

    /// Wait for every task (they stop when their shutdown token is
    /// cancelled).
    pub async fn join(mut self) {
        while let Some(res) = self.set.join_next().await {
            if let Err(error) = res
                && error.is_panic()
            {
                tracing::error!(%error, "background task panicked");
            }
        }
    }
}

/// Box a role's `run` future (the object-safe form [`RoleService::run`]
/// returns).
pub fn boxed<F>(f: F) -> BoxFuture<'static, anyhow::Result<()>>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Box::pin(f)
}
