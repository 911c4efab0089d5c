//! Test harness for guichet: every test gets its own NATS subject and stream
//! prefix, its own databases (SQLite files in a temporary directory, or
//! fresh PostgreSQL databases), random ports, and tokens.
//!
//! Real components only: NATS with JetStream at `GUICHET_TEST_NATS_URL`
//! (default `nats://127.0.0.1:4222`) and PostgreSQL at `GUICHET_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`). A test needing
//! PostgreSQL where none answers prints a notice and returns, unless
//! `GUICHET_TEST_REQUIRE_PG=1` (CI sets it) makes that a failure. Logs print
//! only when `TEST_LOG` is set.

use std::future::Future;
use std::time::Duration;

use guichet::{GuichetConfig, Role, RunningApp};
use guichet_platform::auth::{Authenticator, Role as AuthRole};
use sea_orm::{ConnectionTrait, Database};
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::transport::Channel;

pub use guichet_proto as proto;

/// The CTI webhook token of every test environment.
pub const CTI_TOKEN: &str = "test-cti-token-0123456789";

pub const SIGNING_KEY: &str = "test-signing-key-0123456789abcdef0123456789";

/// Which database backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One isolated environment: prefixes, databases, temporary directory.
pub struct TestEnv {
    pub id: String,
    pub backend: Backend,
    pub nats_url: String,
    pub dir: tempfile::TempDir,
    pg_databases: Vec<String>,
    /// Environment-style overrides (GUICHET__…) every process of this test gets.
    pub overrides: Vec<(String, String)>,
}

fn pg_admin_url() -> String {
    std::env::var("GUICHET_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn pg_url_for(db: &str) -> String {
    let admin = pg_admin_url();
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => format!("{admin}/{db}"),
    }
}

/// Install a test log subscriber when `TEST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into()))
            .with_test_writer()
            .try_init();
    }
}

impl TestEnv {
    /// A new environment, or `None` (with a printed notice) when the backend
    /// is PostgreSQL and none answers and it is not required.
    pub async fn new(backend: Backend) -> Option<TestEnv> {
        init_logs();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let nats_url = std::env::var("GUICHET_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut env = TestEnv {
            id: id.clone(),
            backend,
            nats_url: nats_url.clone(),
            dir,
            pg_databases: Vec::new(),
            overrides: Vec::new(),
        };
        // Every role gets its own database on the test's backend.
        let mut databases = Vec::new();
        match backend {
            Backend::Sqlite => {
                for role in Role::ALL {
                    let file = env.dir.path().join(format!("{}.db", role.section()));
                    databases.push((*role, format!("sqlite://{}?mode=rwc", file.display())));
                }
            }
            Backend::Postgres => {
                let admin = match Database::connect(pg_admin_url()).await {
                    Ok(a) => a,
                    Err(e) => {
                        if std::env::var("GUICHET_TEST_REQUIRE_PG").is_ok_and(|v| v == "1") {
                            panic!(
                                "PostgreSQL is required (GUICHET_TEST_REQUIRE_PG=1) but not reachable: {e}"
                            );
                        }
                        eprintln!(
                            "NOTICE: PostgreSQL not reachable at {} ({e}): skipping this PostgreSQL variant",
                            pg_admin_url()
                        );
                        return None;
                    }
                };
                for role in Role::ALL {
                    let name = format!("guichet_t_{id}_{}", role.section());
                    admin
                        .execute_unprepared(&format!("CREATE DATABASE {name}"))
                        .await
                        .expect("create test database");
                    env.pg_databases.push(name.clone());
                    databases.push((*role, pg_url_for(&name)));
                }
                let _ = admin.close().await;
            }
        }
        env.overrides = vec![
            (
                "GUICHET__DATA_DIR".into(),
                env.dir.path().display().to_string(),
            ),
            ("GUICHET__SERVER__GRPC_ADDR".into(), "127.0.0.1:0".into()),
            ("GUICHET__SERVER__ADMIN_ADDR".into(), "127.0.0.1:0".into()),
            ("GUICHET__SERVER__SHUTDOWN_GRACE_SECS".into(), "5".into()),
            ("GUICHET__BUS__URL".into(), nats_url),
            ("GUICHET__BUS__SUBJECT_PREFIX".into(), format!("t{id}")),
            (
                "GUICHET__BUS__STREAM_PREFIX".into(),
                format!("T{}_", id.to_uppercase()),
            ),
            ("GUICHET__BUS__MAX_DELIVER".into(), "3".into()),
            ("GUICHET__BUS__RETRY_BASE_MS".into(), "50".into()),
            ("GUICHET__BUS__ACK_WAIT_SECS".into(), "5".into()),
            ("GUICHET__AUTH__SIGNING_KEY".into(), SIGNING_KEY.into()),
            (
                "GUICHET__TELEMETRY__LOG_FILTER".into(),
                std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()),
            ),
            ("GUICHET__DOSSIER__PROCESSES_DIR".into(), processes_dir()),
            // The board feed and the CTI webhook on random ports (RunningApp::http_addrs).
            ("GUICHET__COUNTER__HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ("GUICHET__TELEPHONY__HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ("GUICHET__TELEPHONY__WEBHOOK_TOKEN".into(), CTI_TOKEN.into()),
            // The scan inbox is polled often, and a file is taken once it
            // has been still for a moment (tests write with a rename).
            ("GUICHET__SCAN__POLL_INTERVAL_MS".into(), "100".into()),
            ("GUICHET__SCAN__STABLE_MS".into(), "200".into()),
            // The signature role: its pages on a random port, test secrets.
            ("GUICHET__SIGNATURE__HTTP_ADDR".into(), "127.0.0.1:0".into()),
            (
                "GUICHET__SIGNATURE__CODE_SECRET".into(),
                SIGNATURE_CODE_SECRET.into(),
            ),
            (
                "GUICHET__SIGNATURE__SEAL__KEY_ID".into(),
                SEAL_KEY_A.0.into(),
            ),
            (
                "GUICHET__SIGNATURE__SEAL__PRIVATE_KEY".into(),
                SEAL_KEY_A.1.into(),
            ),
        ];
        for (role, url) in databases {
            env.overrides.push((
                format!("GUICHET__{}__DATABASE_URL", role.section().to_uppercase()),
                url,
            ));
        }
        Some(env)
    }

    /// The configuration every process of this test starts from.
    pub fn config(&self) -> GuichetConfig {
        self.config_with(&[])
    }

    /// The configuration with extra `GUICHET__…` overrides.
    pub fn config_with(&self, extra: &[(&str, &str)]) -> GuichetConfig {
        let mut env = self.overrides.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        GuichetConfig::load(None, env).expect("test configuration")
    }

    /// Start `roles` in this test process.
    pub async fn spawn(&self, roles: &[Role]) -> RunningApp {
        self.spawn_with(roles, self.config()).await
    }

    pub async fn spawn_with(&self, roles: &[Role], config: GuichetConfig) -> RunningApp {
        self.spawn_with_options(roles, config, guichet::StartOptions::default())
            .await
    }

    /// Start `roles` in this test process through the production start
    /// path, with a clock and test seams.
    pub async fn spawn_with_options(
        &self,
        roles: &[Role],
        mut config: GuichetConfig,
        options: guichet::StartOptions,
    ) -> RunningApp {
        self.assert_backend(&mut config);
        guichet::start_with(config, roles, CancellationToken::new(), options)
            .await
            .expect("start guichet roles")
    }

    /// Start `roles` in this test process on `clock`.
    pub async fn spawn_on_clock(
        &self,
        roles: &[Role],
        config: GuichetConfig,
        clock: &ManualClock,
    ) -> RunningApp {
        let options = guichet::StartOptions {
            clock: std::sync::Arc::new(clock.clone()),
            ..Default::default()
        };
        self.spawn_with_options(roles, config, options).await
    }

    /// Every role of a PostgreSQL test runs on PostgreSQL, every role of a
    /// SQLite test on SQLite: a test that names its backend gets it.
    pub fn assert_backend(&self, config: &mut GuichetConfig) {
        let scheme = match self.backend {
            Backend::Sqlite => "sqlite:",
            Backend::Postgres => "postgres:",
        };
        for role in Role::ALL {
            let url = role.database_url(config);
            assert!(
                url.starts_with(scheme),
                "the {} role of a {:?} test got the database URL {url}",
                role.name(),
                self.backend
            );
        }
    }

    /// The database URL of `role` in this test.
    pub fn database_url(&self, role: Role) -> String {
        role.database_url(&mut self.config()).clone()
    }

    /// The dependencies of a role built by hand inside the test (a replica
    /// the test drives), as the production start path builds them.
    pub async fn deps(&self, config: &GuichetConfig, source: &str) -> guichet_platform::Deps {
        guichet::deps(
            config,
            source,
            guichet_platform::admin::Readiness::new(),
            guichet::StartOptions::default(),
        )
        .await
        .expect("role dependencies")
    }

    /// A token for `subject` with `roles`.
    pub fn token(&self, subject: &str, roles: &[AuthRole]) -> String {
        Authenticator::new(&self.config().auth)
            .expect("authenticator")
            .issue(subject, roles, &[], Duration::from_secs(3600))
    }

    /// A token for `subject` with `roles` and membership of `groups`.
    pub fn token_in_groups(&self, subject: &str, roles: &[AuthRole], groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        Authenticator::new(&self.config().auth)
            .expect("authenticator")
            .issue(subject, roles, &groups, Duration::from_secs(3600))
    }

    /// A raw NATS connection (for publishing test messages).
    pub async fn nats(&self) -> async_nats::Client {
        async_nats::connect(&self.nats_url)
            .await
            .expect("connect to NATS")
    }

    /// A subject under this test's prefix.
    pub fn subject(&self, rest: &str) -> String {
        format!("t{}.{rest}", self.id)
    }

    pub fn stream(&self, base: &str) -> String {
        format!("T{}_{base}", self.id.to_uppercase())
    }

    /// The headers of every message on this test's stream `base` (e.g.
    /// `EVENTS`, `DEADLETTER`), once it holds at least `at_least` messages.
    pub async fn stream_headers(&self, base: &str, at_least: usize) -> Vec<async_nats::HeaderMap> {
        let js = async_nats::jetstream::new(self.nats().await);
        let name = self.stream(base);
        eventually(
            &format!("{at_least} messages on {name}"),
            Duration::from_secs(30),
            || {
                let js = js.clone();
                let name = name.clone();
                async move {
                    let mut stream = js.get_stream(name).await.ok()?;
                    let info = stream.info().await.ok()?;
                    if (info.state.messages as usize) < at_least {
                        return None;
                    }
                    let mut out = Vec::new();
                    for seq in info.state.first_sequence..=info.state.last_sequence {
                        if let Ok(m) = stream.get_raw_message(seq).await {
                            out.push(m.headers);
                        }
                    }
                    Some(out)
                }
            },
        )
        .await
    }

    /// Delete this test's streams and PostgreSQL databases (best effort).
    pub async fn cleanup(self) {
        if let Ok(client) = async_nats::connect(&self.nats_url).await {
            let js = async_nats::jetstream::new(client);
            for base in ["INTAKE", "EVENTS", "NOTIFY", "DEADLETTER"] {
                let _ = js.delete_stream(self.stream(base)).await;
            }
        }
        if !self.pg_databases.is_empty()
            && let Ok(admin) = Database::connect(pg_admin_url()).await
        {
            for db in &self.pg_databases {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .await;
            }
        }
    }
}

/// The repository's `processes/` directory.
pub fn processes_dir() -> String {
    format!("{}/../../processes", env!("CARGO_MANIFEST_DIR"))
}

/// Adds a bearer token to every request.
#[derive(Clone)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.0.is_empty() {
            let v = format!("Bearer {}", self.0)
                .parse()
                .map_err(|_| tonic::Status::internal("bad token"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

pub type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// A channel to a running process's gRPC port.
pub async fn channel(app_grpc: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{app_grpc}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect gRPC")
}

pub async fn counter_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::counter::v1::counter_service_client::CounterServiceClient<Authed> {
    proto::counter::v1::counter_service_client::CounterServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

pub async fn dossier_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::dossier::v1::dossier_service_client::DossierServiceClient<Authed> {
    proto::dossier::v1::dossier_service_client::DossierServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

pub async fn queue_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::routing::v1::queue_service_client::QueueServiceClient<Authed> {
    proto::routing::v1::queue_service_client::QueueServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

/// Poll `check` until it returns `Some`, or panic after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A walk-in ticket request for a citizen.
pub fn ticket_request(
    given: &str,
    family: &str,
    phone: &str,
    reason: &str,
) -> proto::counter::v1::IssueTicketRequest {
    proto::counter::v1::IssueTicketRequest {
        citizen: Some(proto::intake::v1::CitizenHint {
            given_name: given.into(),
            family_name: family.into(),
            phones: if phone.is_empty() {
                vec![]
            } else {
                vec![phone.into()]
            },
            ..Default::default()
        }),
        reason: reason.into(),
        ..Default::default()
    }
}

/// A header's value, or empty.
pub fn header(headers: &async_nats::HeaderMap, key: &str) -> String {
    headers
        .get(key)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// The roles of a full installation.
pub fn all_roles() -> Vec<Role> {
    Role::ALL.to_vec()
}

pub use guichet_platform::auth::Role as TokenRole;

/// A minimal HTTP/1.1 GET (admin endpoints); returns status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    read_response(stream).await
}

/// Read a `Connection: close` HTTP/1.1 response to the end: its status
/// and its body.
async fn read_response(mut stream: tokio::net::TcpStream) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The `guichet` binary built next to the test executable.
pub fn guichet_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug/guichet
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("guichet"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo nextest run --workspace`",
        bin.display()
    );
    bin
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `guichet serve …` child process.
pub struct Process {
    pub child: tokio::process::Child,
    pub grpc_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
}

impl Process {
    /// SIGKILL: a crash, nothing drained.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("process stops within 30 s")
            .expect("wait for process")
    }
}

impl TestEnv {
    /// Start `guichet serve <roles>` as a separate process and wait until
    /// it is ready.
    pub async fn spawn_process(&self, roles: &[&str], extra: &[(&str, &str)]) -> Process {
        self.spawn_process_inner(roles, extra, None).await
    }

    /// Like [`TestEnv::spawn_process`], with the process's stderr (its logs)
    /// written to `log`.
    pub async fn spawn_process_logging(
        &self,
        roles: &[&str],
        extra: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Process {
        self.spawn_process_inner(roles, extra, Some(log)).await
    }

    async fn spawn_process_inner(
        &self,
        roles: &[&str],
        extra: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Process {
        let grpc_addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin_addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut cmd = tokio::process::Command::new(guichet_bin());
        cmd.arg("serve").args(roles).kill_on_drop(true);
        for (k, v) in &self.overrides {
            cmd.env(k, v);
        }
        cmd.env("GUICHET__SERVER__GRPC_ADDR", grpc_addr.to_string())
            .env("GUICHET__SERVER__ADMIN_ADDR", admin_addr.to_string());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        if let Some(path) = log {
            let file = std::fs::File::create(path).expect("log file");
            cmd.stdout(std::process::Stdio::null()).stderr(file);
        } else if std::env::var_os("TEST_LOG").is_none() {
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        let child = cmd.spawn().expect("spawn guichet");
        let p = Process {
            child,
            grpc_addr,
            admin_addr,
        };
        eventually(
            &format!("`guichet serve {}` ready", roles.join(" ")),
            Duration::from_secs(60),
            || async {
                match http_get(admin_addr, "/readyz").await {
                    Ok((200, _)) => Some(()),
                    _ => None,
                }
            },
        )
        .await;
        p
    }
}

// ---- routing: a routing role on a controllable clock, intake publishing ----

pub use guichet_routing as routing;
pub use guichet_routing::ManualClock;

/// A routing role running inside the test with a [`ManualClock`]: SLA
/// escalation, ageing and offer timeouts happen when the test moves the
/// clock and runs [`RoutingUnderTest::maintain`], never by sleeping.
pub struct RoutingUnderTest {
    pub grpc_addr: std::net::SocketAddr,
    pub clock: ManualClock,
    pub queue: guichet_routing::queue::Queue,
    role: RunningApp,
}

impl RoutingUnderTest {
    /// One maintenance pass (offer timers, SLA escalation, ageing, offers)
    /// at the clock's current time.
    pub async fn maintain(&self) -> guichet_routing::queue::Maintenance {
        self.queue.maintain().await.expect("maintenance")
    }

    /// Stop serving and consuming (like a crash of this replica: offers in
    /// flight stay in the database).
    pub async fn stop(self) {
        let _ = self.role.stop().await;
    }
}

impl TestEnv {
    /// Start the routing role in this process on `clock`, calling dossier
    /// at `dossier`; `extra` are `GUICHET__…` overrides. The periodic
    /// maintenance is slowed to once an hour so the test decides when it runs.
    pub async fn spawn_routing_with_clock(
        &self,
        clock: ManualClock,
        dossier: std::net::SocketAddr,
        extra: &[(&str, &str)],
    ) -> RoutingUnderTest {
        let dossier_url = format!("http://{dossier}");
        let mut overrides: Vec<(&str, &str)> = vec![
            ("GUICHET__ROUTING__DOSSIER_URL", dossier_url.as_str()),
            ("GUICHET__ROUTING__MAINTENANCE_INTERVAL_MS", "3600000"),
        ];
        overrides.extend_from_slice(extra);
        let config = self.config_with(&overrides);
        let role = self.spawn_on_clock(&[Role::Routing], config, &clock).await;
        let queue = role
            .handle::<guichet_routing::queue::Queue>()
            .expect("routing shares its queue");
        RoutingUnderTest {
            grpc_addr: role.grpc_addr,
            clock,
            queue,
            role,
        }
    }

    /// Publish an intake event as a channel does (CloudEvents headers,
    /// Nats-Msg-Id), on `intake.<channel>`.
    pub async fn publish_intake(&self, event: &proto::intake::v1::IntakeEvent) {
        use prost::Message;
        let js = async_nats::jetstream::new(self.nats().await);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("ce-id", event.id.as_str());
        headers.insert("ce-type", "guichet.intake.v1.intake_event");
        headers.insert("ce-source", "test");
        headers.insert("Nats-Msg-Id", event.id.as_str());
        js.publish_with_headers(
            self.subject(&format!("intake.{}", event.channel().slug())),
            headers,
            event.encode_to_vec().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("jetstream ack");
    }
}

/// A new intake event on `channel` received at `at`.
pub fn intake_at(
    channel: proto::intake::v1::Channel,
    at: chrono::DateTime<chrono::Utc>,
) -> proto::intake::v1::IntakeEvent {
    proto::intake::v1::IntakeEvent {
        id: uuid::Uuid::now_v7().to_string(),
        channel: channel as i32,
        received_at: Some(proto::convert::timestamp(at)),
        ..Default::default()
    }
}

pub use prost_types;
pub async fn scan_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::scan::v1::scan_service_client::ScanServiceClient<Authed> {
    proto::scan::v1::scan_service_client::ScanServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

impl TestEnv {
    /// Headers and bodies of every message on this test's stream `base`,
    /// once it holds at least `at_least` messages.
    pub async fn stream_messages(
        &self,
        base: &str,
        at_least: usize,
    ) -> Vec<(async_nats::HeaderMap, bytes::Bytes)> {
        let js = async_nats::jetstream::new(self.nats().await);
        let name = self.stream(base);
        eventually(
            &format!("{at_least} messages on {name}"),
            Duration::from_secs(90),
            || {
                let js = js.clone();
                let name = name.clone();
                async move {
                    let mut stream = js.get_stream(name).await.ok()?;
                    let info = stream.info().await.ok()?;
                    if (info.state.messages as usize) < at_least {
                        return None;
                    }
                    let mut out = Vec::new();
                    for seq in info.state.first_sequence..=info.state.last_sequence {
                        if let Ok(m) = stream.get_raw_message(seq).await {
                            out.push((m.headers, m.payload));
                        }
                    }
                    Some(out)
                }
            },
        )
        .await
    }

    /// The scan role's watched folder (`<data_dir>/scan` by default).
    pub fn scan_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("scan")
    }
}

/// Scanned-letter fixtures, rendered at test time by
/// `tests/fixtures/scan/render_letter.py` (Pillow, ReportLab and the DejaVu
/// fonts: Debian python3-pil, python3-reportlab, fonts-dejavu-core, which
/// `scripts/ensure-services.sh test` installs).
pub mod scan {
    use std::path::{Path, PathBuf};

    /// One page: `(indent_mm, text)` lines (empty text: a blank line).
    #[derive(Debug, Clone)]
    pub struct PageSpec {
        pub lines: Vec<(f32, String)>,
        pub rotate: i32,
        pub skew: f32,
        pub noise: f32,
    }

    impl PageSpec {
        pub fn new(lines: &[(f32, &str)]) -> PageSpec {
            PageSpec {
                lines: lines.iter().map(|(i, t)| (*i, t.to_string())).collect(),
                rotate: 0,
                skew: 0.0,
                noise: 0.0,
            }
        }

        /// The page's text, lines joined by newlines (blank lines dropped).
        pub fn text(&self) -> String {
            self.lines
                .iter()
                .filter(|(_, t)| !t.is_empty())
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        }
    }

    fn python() -> &'static str {
        // Debian's interpreter carries the apt-installed Pillow and ReportLab
        // even where another python3 comes first on PATH.
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        }
    }

    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/scan/render_letter.py")
    }

    fn escape(s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// Render `pages` to `out` as `format` (png, jpeg, tiff, pdf_image,
    /// pdf_text, pdf_encrypted) at `dpi`.
    pub fn render(out: &Path, format: &str, dpi: u32, pages: &[PageSpec]) {
        let pages_json: Vec<String> = pages
            .iter()
            .map(|p| {
                let lines: Vec<String> = p
                    .lines
                    .iter()
                    .map(|(i, t)| {
                        if t.is_empty() {
                            "[null, null]".to_owned()
                        } else {
                            format!("[{i}, {}]", escape(t))
                        }
                    })
                    .collect();
                format!(
                    "{{\"lines\": [{}], \"rotate\": {}, \"skew\": {}, \"noise\": {}}}",
                    lines.join(", "),
                    p.rotate,
                    p.skew,
                    p.noise
                )
            })
            .collect();
        let spec = format!(
            "{{\"out\": {}, \"format\": {}, \"dpi\": {dpi}, \"pages\": [{}]}}",
            escape(&out.display().to_string()),
            escape(format),
            pages_json.join(", ")
        );
        use std::io::Write;
        let mut child = std::process::Command::new(python())
            .arg(script())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run python3 (install it, with python3-pil and python3-reportlab)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(spec.as_bytes())
            .expect("write the letter spec");
        let out_ = child.wait_with_output().expect("render letter");
        assert!(
            out_.status.success(),
            "render_letter.py failed (needs python3-pil, python3-reportlab, fonts-dejavu-core; \
             `scripts/ensure-services.sh test` installs them): {}",
            String::from_utf8_lossy(&out_.stderr)
        );
    }

    /// Put `src` into the watched inbox as a scanner would: written under a
    /// `.part` name, then renamed.
    pub fn drop_into_inbox(inbox: &Path, src: &Path, name: &str) {
        std::fs::create_dir_all(inbox).expect("inbox");
        let part = inbox.join(format!("{name}.part"));
        std::fs::copy(src, &part).expect("copy into inbox");
        std::fs::rename(&part, inbox.join(name)).expect("rename in inbox");
    }

    /// Character accuracy of `actual` against `expected`: 1 − edit distance
    /// / length, whitespace runs counted as one space.
    pub fn char_accuracy(expected: &str, actual: &str) -> f64 {
        let norm = |s: &str| -> Vec<char> {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .collect()
        };
        let (a, b) = (norm(expected), norm(actual));
        if a.is_empty() {
            return if b.is_empty() { 1.0 } else { 0.0 };
        }
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        let mut cur = vec![0; b.len() + 1];
        for i in 1..=a.len() {
            cur[0] = i;
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            }
            std::mem::swap(&mut prev, &mut cur);
        }
        1.0 - prev[b.len()] as f64 / a.len() as f64
    }
}

// --- Appointment role helpers --------------------------------------------

pub async fn appointment_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::appointment::v1::appointment_service_client::AppointmentServiceClient<Authed> {
    proto::appointment::v1::appointment_service_client::AppointmentServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

/// A minimal HTTP/1.1 GET with extra headers; returns status and body.
pub async fn http_get_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    read_response(stream).await
}

// ---------------------------------------------------------------------------
// Telephony

pub async fn telephony_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::telephony::v1::telephony_service_client::TelephonyServiceClient<Authed> {
    proto::telephony::v1::telephony_service_client::TelephonyServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

/// The CTI webhook address of a process running ingress-telephony.
pub fn cti_addr(app: &RunningApp) -> std::net::SocketAddr {
    app.http_addrs
        .iter()
        .find(|(r, _)| *r == Role::IngressTelephony)
        .map(|(_, a)| *a)
        .expect("ingress-telephony runs in this process")
}

/// A minimal HTTP/1.1 POST; returns status and body.
pub async fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    read_response(stream).await
}

/// Post a CTI event as JSON to `/api/v1/cti/<token>`; returns status and
/// the JSON answer (`null` when the body is not JSON).
pub async fn cti_json(
    addr: std::net::SocketAddr,
    token: &str,
    event: serde_json::Value,
) -> (u16, serde_json::Value) {
    let (status, body) = http_post(
        addr,
        &format!("/api/v1/cti/{token}"),
        "application/json",
        event.to_string().as_bytes(),
    )
    .await
    .expect("post cti event");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// Post a CTI event as a form (`a=b&c=d`) to `/api/v1/cti/<token>`.
pub async fn cti_form(
    addr: std::net::SocketAddr,
    token: &str,
    form: &str,
) -> (u16, serde_json::Value) {
    let (status, body) = http_post(
        addr,
        &format!("/api/v1/cti/{token}"),
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    )
    .await
    .expect("post cti event");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// A channel role (telephony, counter) running inside the test on a
/// [`ManualClock`]: waiting, talk and service times are measured by moving
/// the clock, never by sleeping.
pub struct ChannelUnderTest {
    pub grpc_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub clock: ManualClock,
    role: RunningApp,
}

impl ChannelUnderTest {
    pub async fn stop(self) {
        let _ = self.role.stop().await;
    }
}

pub type TelephonyUnderTest = ChannelUnderTest;
pub type CounterUnderTest = ChannelUnderTest;

impl TestEnv {
    /// Start ingress-telephony in this process on `clock`; `extra` are
    /// `GUICHET__…` overrides.
    pub async fn spawn_telephony_with_clock(
        &self,
        clock: ManualClock,
        extra: &[(&str, &str)],
    ) -> TelephonyUnderTest {
        let config = self.config_with(extra);
        let role = self
            .spawn_on_clock(&[Role::IngressTelephony], config, &clock)
            .await;
        let http_addr = http_addr_of(&role, Role::IngressTelephony);
        ChannelUnderTest {
            grpc_addr: role.grpc_addr,
            http_addr,
            clock,
            role,
        }
    }
}

// ---------------------------------------------------------------------------
// Counter

/// The HTTP address of `role` in a process (board feed, CTI webhook).
pub fn http_addr_of(app: &RunningApp, role: Role) -> std::net::SocketAddr {
    app.http_addrs
        .iter()
        .find(|(r, _)| *r == role)
        .map(|(_, a)| *a)
        .unwrap_or_else(|| panic!("{} has no HTTP listener in this process", role.name()))
}

impl TestEnv {
    /// Start ingress-counter in this process on `clock`.
    pub async fn spawn_counter_with_clock(
        &self,
        clock: ManualClock,
        extra: &[(&str, &str)],
    ) -> CounterUnderTest {
        let config = self.config_with(extra);
        let role = self
            .spawn_on_clock(&[Role::IngressCounter], config, &clock)
            .await;
        let http_addr = http_addr_of(&role, Role::IngressCounter);
        ChannelUnderTest {
            grpc_addr: role.grpc_addr,
            http_addr,
            clock,
            role,
        }
    }
}

/// A Server-Sent Events client: connects, waits for the response headers,
/// then yields each event's `data:` line.
pub struct SseReader {
    stream: tokio::net::TcpStream,
    buf: String,
}

impl SseReader {
    pub async fn connect(addr: std::net::SocketAddr, path: &str) -> SseReader {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect SSE");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("send SSE request");
        let mut buf = String::new();
        let mut chunk = [0u8; 4096];
        while !buf.contains("\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("SSE headers within 10 s")
                .expect("read SSE");
            assert!(n > 0, "SSE connection closed before headers");
            buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        let (head, rest) = buf.split_once("\r\n\r\n").expect("headers");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("text/event-stream"),
            "{head}"
        );
        let rest = rest.to_owned();
        SseReader { stream, buf: rest }
    }

    /// The next event's data (JSON), skipping keep-alive comments.
    pub async fn next_data(&mut self, timeout: Duration) -> serde_json::Value {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Chunked transfer: data lines are found anywhere in the buffer.
            if let Some(pos) = self.buf.find("data: ") {
                let after = &self.buf[pos + 6..];
                if let Some(end) = after.find('\n') {
                    let line = after[..end].trim().to_owned();
                    self.buf = after[end..].to_owned();
                    return serde_json::from_str(&line).expect("SSE data is JSON");
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("SSE event in time")
                .expect("read SSE");
            assert!(n > 0, "SSE connection closed");
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }
}

// --- Signature role helpers ----------------------------------------------

/// HMAC key of stored one-time codes in every test environment.
pub const SIGNATURE_CODE_SECRET: &str = "test-signature-code-secret-0123456789abcdef";

/// Evidence sealing keys (key id, base64 Ed25519 seed): every test
/// environment seals with A; rotation tests move to B.
pub const SEAL_KEY_A: (&str, &str) = ("test-a", "oaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaE=");
pub const SEAL_KEY_B: (&str, &str) = ("test-b", "srKysrKysrKysrKysrKysrKysrKysrKysrKysrKysrI=");

pub async fn signature_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::signature::v1::signature_service_client::SignatureServiceClient<Authed> {
    proto::signature::v1::signature_service_client::SignatureServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

// ---------------------------------------------------------------------------
// Notification: its database, the development SMS sink (the citizen's
// phone of every test), publishing requests and events, a real SMTP server.

impl TestEnv {
    /// The development SMS sink of this test's processes:
    /// `<data_dir>/sms-sink/sms.jsonl` (notification.sms_sink_dir's default).
    pub fn sms_sink_file(&self) -> std::path::PathBuf {
        self.dir.path().join("sms-sink").join("sms.jsonl")
    }

    /// Every SMS the development sink holds, one JSON object each
    /// (`id`, `to`, `text`, `template`, `dossier_id`, `time`).
    pub fn sms_sink(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.sms_sink_file())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    /// Wait for the first SMS to `to` (E.164) matching `pred`, as a citizen
    /// waits for their phone.
    pub async fn wait_for_sms(
        &self,
        to: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(
            &format!("an SMS to {to} in the development sink"),
            Duration::from_secs(30),
            || {
                let found = self
                    .sms_sink()
                    .into_iter()
                    .find(|m| m["to"] == to && pred(m));
                async move { found }
            },
        )
        .await
    }

    /// Publish a delivery request on `notify.<kind>` as a producer role does.
    pub async fn publish_notification(
        &self,
        kind: &str,
        req: &proto::notification::v1::NotificationRequest,
    ) -> u64 {
        use prost::Message;
        self.publish_raw(
            &format!("notify.{kind}"),
            "guichet.notification.v1.notification_request",
            &req.id,
            &req.id,
            req.encode_to_vec(),
        )
        .await
    }

    /// Publish a CloudEvent on `<prefix>.<rest>` with `ce_id` and
    /// `Nats-Msg-Id` = `msg_id` (different ids bypass JetStream's duplicate
    /// window, to test a consumer's own idempotency). Returns the stream
    /// sequence.
    pub async fn publish_raw(
        &self,
        rest: &str,
        ce_type: &str,
        ce_id: &str,
        msg_id: &str,
        body: Vec<u8>,
    ) -> u64 {
        let js = async_nats::jetstream::new(self.nats().await);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("ce-specversion", "1.0");
        headers.insert("ce-id", ce_id);
        headers.insert("ce-type", ce_type);
        headers.insert("ce-source", "test");
        headers.insert("ce-time", chrono::Utc::now().to_rfc3339().as_str());
        headers.insert("Nats-Msg-Id", msg_id);
        js.publish_with_headers(self.subject(rest), headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("jetstream ack")
            .sequence
    }

    /// Wait until the durable consumer `durable` of stream `base` has
    /// acknowledged every message up to stream sequence `seq`.
    pub async fn wait_consumed(&self, base: &str, durable: &str, seq: u64) {
        let js = async_nats::jetstream::new(self.nats().await);
        let name = self.stream(base);
        eventually(
            &format!("{durable} to ack {name} up to {seq}"),
            Duration::from_secs(30),
            || {
                let js = js.clone();
                let name = name.clone();
                async move {
                    let stream = js.get_stream(&name).await.ok()?;
                    let info = stream.consumer_info(durable).await.ok()?;
                    (info.ack_floor.stream_sequence >= seq).then_some(())
                }
            },
        )
        .await
    }
}

pub async fn notification_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::notification::v1::notification_service_client::NotificationServiceClient<Authed> {
    proto::notification::v1::notification_service_client::NotificationServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

/// A real SMTP server for tests: Python's aiosmtpd (package
/// `python3-aiosmtpd`, installed by `scripts/ensure-services.sh test`)
/// storing what it receives in a Maildir. Killed on drop.
pub struct SmtpSink {
    pub port: u16,
    pub maildir: std::path::PathBuf,
    _child: tokio::process::Child,
}

impl SmtpSink {
    /// Start aiosmtpd on a free loopback port; panics (naming the fix) when
    /// no Python with aiosmtpd is found.
    pub async fn start(dir: &std::path::Path) -> SmtpSink {
        let candidates = [
            std::env::var("GUICHET_TEST_PYTHON").unwrap_or_default(),
            "/usr/bin/python3".into(),
            "python3".into(),
        ];
        let python = candidates
            .iter()
            .filter(|p| !p.is_empty())
            .find(|p| {
                std::process::Command::new(p)
                    .args(["-c", "import aiosmtpd"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .cloned()
            .expect("no python3 with aiosmtpd: run scripts/ensure-services.sh test (apt-get install python3-aiosmtpd)");
        let maildir = dir.join("maildir");
        let port = free_port();
        let child = tokio::process::Command::new(python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start aiosmtpd");
        eventually(
            "aiosmtpd to listen",
            Duration::from_secs(20),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        SmtpSink {
            port,
            maildir,
            _child: child,
        }
    }

    /// The raw messages received so far.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in entries.flatten() {
                    if let Ok(b) = std::fs::read(e.path()) {
                        out.push(b);
                    }
                }
            }
        }
        out
    }

    /// Wait until at least `n` messages arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Vec<u8>> {
        eventually(
            &format!("{n} message(s) on the SMTP server"),
            Duration::from_secs(30),
            || {
                let m = self.messages();
                async move { (m.len() >= n).then_some(m) }
            },
        )
        .await
    }
}

// --- Email role helpers ----------------------------------------------------

/// Email channel test peers: a real SMTP/LMTP client (Python's smtplib),
/// a real IMAP server (Dovecot, started on a free port with a generated
/// configuration and a passwd-file user) and the corpus of messages.
pub mod email {
    use std::path::{Path, PathBuf};

    /// `tests/fixtures/email`.
    pub fn fixtures_dir() -> PathBuf {
        PathBuf::from(format!(
            "{}/../../tests/fixtures/email",
            env!("CARGO_MANIFEST_DIR")
        ))
    }

    pub fn fixture(name: &str) -> PathBuf {
        fixtures_dir().join(name)
    }

    /// What the SMTP client saw for one message.
    #[derive(Debug, Clone)]
    pub struct Sent {
        pub code: u16,
        pub refused: std::collections::HashMap<String, u16>,
        pub message: String,
        pub tls: String,
    }

    /// Deliver `files` to `addr` with smtplib (LMTP when `lmtp`; STARTTLS
    /// trusting `ca` when given), one connection per file.
    pub async fn send(
        addr: std::net::SocketAddr,
        lmtp: bool,
        ca: Option<&Path>,
        from: &str,
        to: &[&str],
        files: &[PathBuf],
    ) -> Vec<Sent> {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg(fixtures_dir().join("send.py"))
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string());
        if lmtp {
            cmd.arg("--lmtp");
        }
        if let Some(ca) = ca {
            cmd.arg("--starttls").arg(ca);
        }
        cmd.arg("--from").arg(from);
        for t in to {
            cmd.arg("--to").arg(t);
        }
        cmd.args(files);
        let out = cmd.output().await.expect("run send.py (python3)");
        assert!(
            out.status.success(),
            "send.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("send.py output");
                Sent {
                    code: v["code"].as_u64().unwrap_or(0) as u16,
                    refused: v["refused"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0) as u16))
                                .collect()
                        })
                        .unwrap_or_default(),
                    message: v["message"].as_str().unwrap_or_default().to_owned(),
                    tls: v["tls"].as_str().unwrap_or_default().to_owned(),
                }
            })
            .collect()
    }

    /// A Dovecot IMAP server for one test, with user `guichet`.
    pub struct Dovecot {
        pub port: u16,
        pub dir: tempfile::TempDir,
        child: tokio::process::Child,
    }

    pub const IMAP_USER: &str = "guichet";
    pub const IMAP_PASSWORD: &str = "secret-imap";

    impl Dovecot {
        /// Start Dovecot on a free loopback port (`None` with a notice when
        /// it is not installed: scripts/ensure-services.sh test installs it).
        pub async fn start() -> Option<Dovecot> {
            Self::start_with("").await
        }

        /// Like [`Dovecot::start`], with extra configuration lines (e.g.
        /// `imap_capability = IMAP4rev1 UIDPLUS` for a server without IDLE
        /// nor MOVE).
        pub async fn start_with(extra_conf: &str) -> Option<Dovecot> {
            let bin = ["/usr/sbin/dovecot", "/usr/bin/dovecot"]
                .into_iter()
                .find(|p| Path::new(p).exists())?;
            let dir = tempfile::tempdir().expect("dovecot dir");
            let d = dir.path();
            for sub in ["run", "state", "mail"] {
                std::fs::create_dir_all(d.join(sub)).expect("dovecot dirs");
            }
            std::fs::write(
                d.join("passwd"),
                format!("{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}\n"),
            )
            .expect("passwd");
            let port = super::free_port();
            // As root: mail owned by the `dovecot` system user; otherwise
            // everything runs as the current user (unprivileged mode).
            let root = std::process::Command::new("id")
                .arg("-u")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
                .unwrap_or(false);
            let me = std::process::Command::new("id")
                .arg("-un")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            let (internal, login, mail_user) = if root {
                (
                    "dovecot".to_owned(),
                    "dovenull".to_owned(),
                    "dovecot".to_owned(),
                )
            } else {
                (me.clone(), me.clone(), me.clone())
            };
            if root {
                let _ = std::process::Command::new("chown")
                    .arg("-R")
                    .arg("dovecot:dovecot")
                    .arg(d.join("mail"))
                    .status();
            }
            let p = d.display();
            let conf = format!(
                "base_dir = {p}/run\nstate_dir = {p}/state\nlog_path = {p}/dovecot.log\n\
                 protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n\
                 auth_mechanisms = plain login\nmail_location = maildir:{p}/mail/%u/Maildir\n\
                 first_valid_uid = 1\ndefault_internal_user = {internal}\ndefault_login_user = {login}\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {p}/passwd\n}}\n\
                 userdb {{\n  driver = static\n  args = uid={mail_user} gid={mail_user} home={p}/mail/%u\n}}\n\
                 service imap-login {{\n  chroot =\n  inet_listener imap {{\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
                 service anvil {{\n  chroot =\n}}\n{extra_conf}\n"
            );
            std::fs::write(d.join("dovecot.conf"), conf).expect("dovecot.conf");
            let child = tokio::process::Command::new(bin)
                .arg("-F")
                .arg("-c")
                .arg(d.join("dovecot.conf"))
                .kill_on_drop(true)
                .spawn()
                .expect("start dovecot");
            let addr = format!("127.0.0.1:{port}");
            super::eventually(
                "dovecot listening",
                std::time::Duration::from_secs(20),
                || {
                    let addr = addr.clone();
                    async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) }
                },
            )
            .await;
            Some(Dovecot { port, dir, child })
        }

        async fn client(&self, args: &[&str]) -> serde_json::Value {
            let out = tokio::process::Command::new("python3")
                .arg(fixtures_dir().join("imap.py"))
                .arg("127.0.0.1")
                .arg(self.port.to_string())
                .arg(IMAP_USER)
                .arg(IMAP_PASSWORD)
                .args(args)
                .output()
                .await
                .expect("run imap.py");
            assert!(
                out.status.success(),
                "imap.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).expect("imap.py output")
        }

        /// Put `files` into `folder` (IMAP APPEND).
        pub async fn append(&self, folder: &str, files: &[PathBuf]) {
            let mut args = vec!["append".to_owned(), folder.to_owned()];
            args.extend(files.iter().map(|f| f.display().to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.client(&args).await;
        }

        /// The Message-IDs in `folder` and how many are flagged \Deleted.
        pub async fn list(&self, folder: &str) -> (Vec<String>, u64) {
            let v = self.client(&["list", folder]).await;
            let ids = v["message_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (ids, v["deleted"].as_u64().unwrap_or(0))
        }

        pub async fn stop(mut self) {
            let _ = self.child.kill().await;
        }
    }
}
