//! The `guichet` binary's library: roles, configuration and process assembly.
//!
//! A role is a variant of [`Role`]. `guichet up` runs every served role in
//! one process; `guichet serve <role>…` runs chosen ones (one Kubernetes
//! Deployment per role); the end-to-end tests start processes with
//! [`start`] from the same enum. All roles of a process share one gRPC port,
//! one admin port, one NATS connection and one shutdown token.

pub mod bench;
pub mod indicators_bench;
pub mod limits;
pub mod nats;
pub mod portal_bench;
pub mod public_bench;
pub mod roles;
pub mod town;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use guichet_platform::Deps;
use guichet_platform::admin::Readiness;
use guichet_platform::auth::Authenticator;
use guichet_platform::bus::Bus;
use guichet_platform::clock::SharedClock;
use guichet_platform::config::{ConfigError, DatabaseConfig};
use guichet_platform::grpc::GrpcServer;
use guichet_platform::role::{Handles, Listener, Local, Overrides, Tasks};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use roles::{GuichetConfig, Role};

/// Embedded defaults: the first configuration layer.
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

impl GuichetConfig {
    /// Defaults, then the town (the shipped one, or `town_dir`'s), then
    /// `file`, then `env` (`GUICHET__SECTION__KEY`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        /// The one key needed to find the town layer.
        #[derive(serde::Deserialize)]
        struct TownDir {
            town_dir: std::path::PathBuf,
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        let TownDir { town_dir } = guichet_platform::config::load(DEFAULTS, file, env.clone())?;
        let layered = town::layer(DEFAULTS, &town::files(&town_dir)?)?;
        let mut config: GuichetConfig = guichet_platform::config::load(&layered, file, env)?;
        // Databases not configured live as SQLite files under data_dir.
        let dir = config.data_dir.display().to_string();
        let dir = dir.trim_end_matches('/');
        for role in Role::ALL {
            let url = role.database_url(&mut config);
            if url.trim().is_empty() {
                *url = format!("sqlite://{dir}/{}.db?mode=rwc", role.section());
            }
        }
        if config.objects.dir.as_os_str().is_empty() {
            config.objects.dir = config.data_dir.join("objects");
        }
        if config.scan.watch_dir.as_os_str().is_empty() {
            config.scan.watch_dir = config.data_dir.join("scan");
        }
        if config.notification.sms_sink_dir.as_os_str().is_empty() {
            config.notification.sms_sink_dir = config.data_dir.join("sms-sink");
        }
        if config.notification.email.sink_dir.as_os_str().is_empty() {
            config.notification.email.sink_dir = config.data_dir.join("email-sink");
        }
        Ok(config)
    }

    /// Validate what the given roles use; errors name the key.
    pub fn validate(&self, roles: &[Role]) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.town.validate()?;
        self.bus.validate()?;
        self.auth.validate()?;
        self.telemetry.validate()?;
        self.objects.validate()?;
        for role in roles {
            role.validate(self)?;
        }
        Ok(())
    }

    /// Use (or create) the development signing key under `data_dir` when
    /// none is configured. Only `guichet up` and `guichet token` do this.
    pub fn ensure_dev_signing_key(&mut self, create: bool) -> anyhow::Result<()> {
        if !self.auth.signing_key.expose_secret().is_empty() {
            return Ok(());
        }
        let path = self.data_dir.join("dev-signing-key");
        let key = match dev_secret(&self.data_dir, "dev-signing-key", create)? {
            Some(key) => {
                if create {
                    tracing::warn!(path = %path.display(), "no auth.signing_key configured: using a development key");
                }
                key
            }
            None => anyhow::bail!(
                "configuration error: invalid value for key `auth.signing_key`: not set, and no development key at {} (run `guichet up` once, or set GUICHET__AUTH__SIGNING_KEY)",
                path.display()
            ),
        };
        self.auth.signing_key = SecretString::from(key);
        Ok(())
    }

    /// Use (or create) a development CTI webhook token under `data_dir` when
    /// none is configured, so the PBX webhook works out of the box with
    /// `guichet up`; returns it.
    pub fn ensure_dev_cti_token(&mut self) -> anyhow::Result<String> {
        let configured = self.telephony.webhook_token.expose_secret().to_owned();
        if !configured.is_empty() {
            return Ok(configured);
        }
        let token = dev_secret(&self.data_dir, "dev-cti-token", true)?
            .unwrap_or_else(|| unreachable!("created when missing"));
        self.telephony.webhook_token = SecretString::from(token.clone());
        Ok(token)
    }
}

/// A development secret kept in `data_dir/name` (64 hex digits), created
/// when `create` and missing; `None` when missing and not created.
fn dev_secret(data_dir: &Path, name: &str, create: bool) -> anyhow::Result<Option<String>> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(k) if k.trim().len() >= 32 => Ok(Some(k.trim().to_owned())),
        _ if create => {
            use rand::Rng;
            let bytes: [u8; 32] = rand::rng().random();
            let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            write_secret(&path, &key)?;
            Ok(Some(key))
        }
        _ => Ok(None),
    }
}

impl GuichetConfig {
    /// Use (or create) development secrets of the signature role (the code
    /// HMAC key and the evidence sealing key) under `data_dir` when none
    /// are configured. Only `guichet up` does this: production configures
    /// them (a Kubernetes Secret).
    pub fn ensure_dev_signature_keys(&mut self) -> anyhow::Result<()> {
        use base64::Engine;
        let seal = &self.signature.seal;
        let need_seal =
            seal.private_key.expose_secret().is_empty() && seal.private_key_file.is_empty();
        let need_code = self.signature.code_secret.expose_secret().is_empty();
        if !need_seal && !need_code {
            return Ok(());
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create {}", self.data_dir.display()))?;
        let dev_secret = |name: &str| -> anyhow::Result<String> {
            let path = self.data_dir.join(name);
            if let Ok(k) = std::fs::read_to_string(&path)
                && k.trim().len() >= 32
            {
                return Ok(k.trim().to_owned());
            }
            use rand::Rng;
            let bytes: [u8; 32] = rand::rng().random();
            let key = base64::engine::general_purpose::STANDARD.encode(bytes);
            write_secret(&path, &key)?;
            tracing::warn!(path = %path.display(), "no signature key configured: created a development key");
            Ok(key)
        };
        if need_code {
            self.signature.code_secret =
                SecretString::from(dev_secret("dev-signature-code-secret")?);
        }
        if need_seal {
            self.signature.seal.private_key =
                SecretString::from(dev_secret("dev-signature-seal-key")?);
        }
        Ok(())
    }
}

/// A process running some roles.
pub struct RunningApp {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The roles' own listeners (board feed, CTI webhook, pages, SMTP).
    pub listeners: Vec<(Role, Listener)>,
    /// HTTP listeners of roles that have one (the `http` listeners above).
    pub http_addrs: Vec<(Role, SocketAddr)>,
    pub roles: Vec<Role>,
    handles: Handles,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    /// Ask the process to stop (like SIGTERM) and wait for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await?
    }

    /// Wait until the process stops on its own (its shutdown token).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.handle.await?
    }

    /// The token that stops this process when cancelled (without waiting).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// A handle a role of this process shares (its core, its queue).
    pub fn handle<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.handles.get::<T>().cloned()
    }

    /// The address of `role`'s listener called `name`.
    pub fn listener(&self, role: Role, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(r, l)| *r == role && l.name == name)
            .map(|(_, l)| l.addr)
    }
}

/// What a process gives its roles besides configuration: the clock and test
/// seams. Production uses the default (the wall clock, no seams).
#[derive(Clone)]
pub struct StartOptions {
    pub clock: SharedClock,
    pub overrides: Overrides,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            clock: guichet_platform::clock::system(),
            overrides: Overrides::new(),
        }
    }
}

/// The dependencies every role of a process shares: one NATS connection,
/// one authenticator, the object store, `readiness`, the clock and seams.
pub async fn deps(
    config: &GuichetConfig,
    source: &str,
    readiness: Readiness,
    options: StartOptions,
) -> anyhow::Result<Deps> {
    let bus = Bus::connect(&config.bus, source).await?;
    Ok(Deps {
        bus,
        auth: Arc::new(Authenticator::new(&config.auth)?),
        database: config.database.clone(),
        readiness,
        objects: guichet_platform::objects::ObjectStore::from_config(&config.objects)
            .map_err(|e| anyhow::anyhow!("objects: {e}"))?,
        clock: options.clock,
        town: config.town.clone(),
        overrides: options.overrides,
    })
}

/// Start `roles` in this process. Returns once every role is built and
/// serving; the process runs until `shutdown` is cancelled.
pub async fn start(
    config: GuichetConfig,
    roles: &[Role],
    shutdown: CancellationToken,
) -> anyhow::Result<RunningApp> {
    start_with(config, roles, shutdown, StartOptions::default()).await
}

/// [`start`] with a clock and test seams.
pub async fn start_with(
    mut config: GuichetConfig,
    roles: &[Role],
    shutdown: CancellationToken,
    options: StartOptions,
) -> anyhow::Result<RunningApp> {
    let mut roles: Vec<Role> = roles.to_vec();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        anyhow::bail!("no role to run");
    }
    config.validate(&roles)?;

    let grpc_listener = TcpListener::bind(&config.server.grpc_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on server.grpc_addr {}",
                config.server.grpc_addr
            )
        })?;
    let admin_listener = TcpListener::bind(&config.server.admin_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on server.admin_addr {}",
                config.server.admin_addr
            )
        })?;
    let grpc_addr = grpc_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    // Admin first: liveness answers while the roles start.
    let readiness = Readiness::new();
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(guichet_platform::admin::serve(
        admin_listener,
        readiness.clone(),
        admin_stop.clone(),
    ));

    let names: Vec<&'static str> = roles.iter().map(|r| r.name()).collect();
    let deps = deps(
        &config,
        &format!("guichet/{}", names.join("+")),
        readiness.clone(),
        options,
    )
    .await?;
    let bus = deps.bus.clone();
    let ready_bus = bus.clone();
    readiness.add_check("nats", move || {
        let connected = ready_bus.is_connected();
        async move {
            if connected {
                Ok(())
            } else {
                Err("not connected".to_owned())
            }
        }
    });
    // With an identity provider: keep its keys fresh; not ready until loaded.
    let mut background = Tasks::new();
    let background_stop = CancellationToken::new();
    if let Some(oidc) = deps.auth.oidc() {
        let ready_oidc = oidc.clone();
        readiness.add_check("oidc jwks", move || {
            let loaded = ready_oidc.has_keys();
            async move {
                if loaded {
                    Ok(())
                } else {
                    Err("no signing keys loaded yet".to_owned())
                }
            }
        });
        background.spawn_infallible(oidc.refresh_loop(background_stop.clone()));
    }

    // Roles of one process call each other on the local port.
    let host = if grpc_addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        grpc_addr.ip().to_string()
    };
    let local = Local {
        grpc_url: format!("http://{host}:{}", grpc_addr.port()),
        roles: names.clone(),
    };
    for role in &roles {
        role.wire(&mut config, &local);
    }

    // Documents must be storable for the process to take work.
    let objects = deps.objects.clone();
    readiness.add_check("objects", move || {
        let objects = objects.clone();
        async move { objects.check().await }
    });
    tracing::info!(backend = %deps.objects.describe(), "object store");
    let mut server = GrpcServer::new();
    let mut built = Vec::new();
    let mut listeners = Vec::new();
    let mut handles = Handles::new();
    for role in &roles {
        let service = role
            .build(&config, deps.clone())
            .await
            .with_context(|| format!("cannot start role {}", role.name()))?;
        service.register(&mut server);
        listeners.extend(service.listeners().into_iter().map(|l| (*role, l)));
        service.handles(&mut handles);
        built.push(service);
    }
    let http_addrs = listeners
        .iter()
        .filter(|(_, l)| l.name == "http")
        .map(|(r, l)| (*r, l.addr))
        .collect();

    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let grpc_stop = CancellationToken::new();
    // Every role is built: ready (unless a dependency check fails).
    readiness.set_started(true);
    let grpc = tokio::spawn(server.serve(grpc_listener, grpc_stop.clone(), readiness.clone()));
    // Not a child of `shutdown`: the supervisor below stops the roles itself,
    // in order, after it has seen the shutdown request.
    let work_stop = CancellationToken::new();
    let mut work = tokio::task::JoinSet::new();
    for service in built {
        work.spawn(service.run(work_stop.clone()));
    }
    tracing::info!(roles = ?names, %grpc_addr, %admin_addr, "guichet started");

    let run_shutdown = shutdown.clone();
    let handle = tokio::spawn(async move {
        // Runs until asked to stop, or until a role fails on its own.
        let mut failure = None;
        tokio::select! {
            _ = run_shutdown.cancelled() => {}
            Some(res) = work.join_next() => {
                failure = Some(match res {
                    Ok(Ok(())) => anyhow::anyhow!("a role stopped unexpectedly"),
                    Ok(Err(e)) => e,
                    Err(e) => e.into(),
                });
            }
        }
        readiness.set_started(false);
        work_stop.cancel();
        // Intake stops first; in-flight work (every role's background
        // tasks) finishes within the grace period.
        let drained = tokio::time::timeout(grace, async {
            while let Some(res) = work.join_next().await {
                match res {
                    Ok(Err(e)) => tracing::error!(error = %e, "role stopped with an error"),
                    Err(e) => tracing::error!(error = %e, "role task failed"),
                    Ok(Ok(())) => {}
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "grace period over, abandoning in-flight work (unacked messages will be redelivered)"
            );
            work.abort_all();
        }
        grpc_stop.cancel();
        let _ = tokio::time::timeout(grace, grpc).await;
        admin_stop.cancel();
        background_stop.cancel();
        let _ = admin.await;
        background.join().await;
        let _ = bus.client().flush().await;
        tracing::info!("guichet stopped");
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    Ok(RunningApp {
        grpc_addr,
        admin_addr,
        listeners,
        http_addrs,
        roles,
        handles,
        shutdown,
        handle,
    })
}

/// Run every stateful role's migrations (ignores `database.migrate_on_start`).
pub async fn migrate(config: &GuichetConfig, roles: &[Role]) -> anyhow::Result<()> {
    let db_cfg = DatabaseConfig {
        migrate_on_start: false,
        ..config.database.clone()
    };
    let mut config = config.clone();
    for role in roles {
        let url = role.database_url(&mut config).clone();
        let db = guichet_platform::db::connect(&url, &db_cfg)
            .await
            .with_context(|| format!("cannot connect the {} database", role.name()))?;
        role.migrate(&db).await?;
        tracing::info!(role = role.name(), "migrated");
    }
    Ok(())
}

/// `guichet indicators rebuild`: empty the indicators' facts and replay
/// the EVENTS stream into them; returns the events replayed.
pub async fn rebuild_indicators(config: &GuichetConfig) -> anyhow::Result<u64> {
    let db = guichet_platform::db::connect_and_migrate::<guichet_indicators::db::Migrator>(
        &config.indicators.database_url,
        &config.database,
    )
    .await
    .context("cannot open the indicators database")?;
    let bus =
        guichet_platform::bus::Bus::connect(&config.bus, "guichet/indicators-rebuild").await?;
    let (ingest, _, consumer) = guichet_indicators::parts(&config.indicators, db)?;
    guichet_indicators::ingest::rebuild(&ingest, &bus, &consumer).await
}

/// The portal's database, migrated (for `guichet account`).
pub async fn portal_database(
    config: &GuichetConfig,
) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = guichet_platform::db::connect_and_migrate::<guichet_portal::db::Migrator>(
        &config.portal.database_url,
        &config.database,
    )
    .await
    .context("cannot open the portal database")?;
    Ok(db)
}

/// A random password of 20 letters and digits (no look-alikes).
pub fn generate_password() -> String {
    use rand::Rng;
    const SET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| SET[rng.random_range(0..SET.len())] as char)
        .collect()
}

/// The `service.name` of a process's traces: the configured one, except that
/// the shipped default (`guichet`) names the role when the process serves
/// one role only (`guichet-dossier`), so ops tell the roles of a split
/// deployment apart without setting anything.
pub fn service_name(configured: &str, roles: &[Role]) -> String {
    match roles {
        [one] if configured == "guichet" => format!("guichet-{}", one.name()),
        _ => configured.to_owned(),
    }
}

/// `guichet serve` is production: the development sinks of notification
/// (SMS codes and citizens' emails written to a folder) are refused, naming
/// the key, unless `development = true`, which is then said loudly.
pub fn check_production(config: &GuichetConfig, roles: &[Role]) -> anyhow::Result<()> {
    if !roles.contains(&Role::Notification) {
        return Ok(());
    }
    let mut sinks = Vec::new();
    if config.notification.sms_provider == "sink" {
        sinks.push((
            "notification.sms_provider",
            "SMS (signature codes included) are written to a folder, not sent",
            "`http` and notification.sms_http",
        ));
    }
    if config.notification.email.transport == "sink" {
        sinks.push((
            "notification.email.transport",
            "citizens' emails are written to a folder, not sent",
            "`smtp` and notification.email.smtp_host",
        ));
    }
    if sinks.is_empty() {
        return Ok(());
    }
    if config.development {
        // In the log, in its configured format (JSON lines stay JSON).
        for (key, what, _) in &sinks {
            tracing::warn!(key, "DEVELOPMENT MODE: {what}; never run a town like this");
        }
        return Ok(());
    }
    let (key, what, fix) = sinks[0];
    anyhow::bail!(
        "configuration error: invalid value for key `{key}`: \"sink\" is the development sink ({what}); set {fix}, or development = true (GUICHET__DEVELOPMENT=true) to run with the development sinks"
    )
}

/// The development accounts `guichet up` creates in the portal (once;
/// their passwords kept under `data_dir/dev-accounts`, owner-only), and
/// the lines that print them.
pub async fn dev_accounts(config: &GuichetConfig, app: &RunningApp) -> anyhow::Result<String> {
    use guichet_platform::auth::Role as AuthRole;
    use guichet_portal::accounts;
    let Some(portal) = app.handle::<guichet_portal::PortalHandle>() else {
        return Ok(String::new());
    };
    let path = config.data_dir.join("dev-accounts");
    let mut known: std::collections::BTreeMap<String, String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(l, p)| (l.to_owned(), p.to_owned()))
        .collect();
    let wanted: [(&str, &str, &[AuthRole], &[&str]); 4] = [
        ("accueil", "Agent d'accueil", &[AuthRole::Agent], &[]),
        ("ccas", "Agent du CCAS", &[AuthRole::Agent], &["social"]),
        (
            "superviseur",
            "Responsable de l'accueil",
            &[AuthRole::Supervisor],
            &[],
        ),
        (
            "procedures",
            "Responsable des procédures",
            &[AuthRole::Agent, AuthRole::ProcessOwner],
            &[],
        ),
    ];
    let mut lines = format!(
        "http://{}",
        app.listener(Role::Portal, "http")
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    if let Some(base) = Some(portal.base_url.clone()).filter(|b| !b.is_empty()) {
        lines = base;
    }
    lines.push_str(" — development accounts (login / password):");
    for (login, name, roles, groups) in wanted {
        let password = match (accounts::find(&portal.db, login).await?, known.get(login)) {
            (Some(_), Some(p)) => p.clone(),
            (Some(_), None) => {
                // Created by an earlier run whose password file is gone.
                let p = generate_password();
                accounts::reset_password(&portal.db, login, &p).await?;
                p
            }
            (None, _) => {
                let p = generate_password();
                accounts::add(
                    &portal.db,
                    accounts::NewAccount {
                        login: login.to_owned(),
                        display_name: name.to_owned(),
                        roles: roles.to_vec(),
                        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                        password: p.clone(),
                    },
                )
                .await?;
                p
            }
        };
        known.insert(login.to_owned(), password.clone());
        lines.push_str(&format!("\n           {login} / {password}  ({name})"));
    }
    if app
        .handle::<guichet_indicators::IndicatorsHandle>()
        .is_some()
    {
        lines.push_str(&format!(
            "\n           the supervisors' indicators: {}/indicateurs (superviseur)",
            portal.base_url.trim_end_matches('/')
        ));
    }
    let content: String = known.iter().map(|(l, p)| format!("{l} {p}\n")).collect();
    write_secret(&path, &content)?;
    if !portal.public_url.is_empty() {
        lines.push_str(&format!(
            "\n  citizens {}/rendez-vous (Prendre rendez-vous; the links of SMS and emails open here)",
            portal.public_url
        ));
    }
    Ok(lines)
}

/// Write a secret file readable by its owner only.
fn write_secret(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_serving_one_role_is_named_after_it_unless_told_otherwise() {
        assert_eq!(service_name("guichet", &[Role::Dossier]), "guichet-dossier");
        assert_eq!(
            service_name("guichet", &[Role::Dossier, Role::Routing]),
            "guichet"
        );
        assert_eq!(
            service_name("mairie-vincennes", &[Role::Dossier]),
            "mairie-vincennes"
        );
    }
}
