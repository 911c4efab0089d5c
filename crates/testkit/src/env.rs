//! One isolated test environment: prefixes, a database per role on the test's backend, tokens, streams, in-process roles.

use crate::*;

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
            // Availability is sampled by the tests that measure it, at
            // times they choose (core.sample_availability()).
            (
                "GUICHET__APPOINTMENT__AVAILABILITY_SAMPLE_MINUTES".into(),
                "0".into(),
            ),
            // The signature role: its pages on a random port, test secrets.
            ("GUICHET__SIGNATURE__HTTP_ADDR".into(), "127.0.0.1:0".into()),
            // The portal on a random port.
            ("GUICHET__PORTAL__HTTP_ADDR".into(), "127.0.0.1:0".into()),
            // The citizens' pages too; forms may come back at once.
            (
                "GUICHET__PORTAL__PUBLIC__HTTP_ADDR".into(),
                "127.0.0.1:0".into(),
            ),
            ("GUICHET__PORTAL__PUBLIC__MIN_FORM_SECS".into(), "0".into()),
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
    /// This test's bus settings only (its subject and stream prefixes…), for
    /// a process that should otherwise run on the shipped defaults.
    pub fn bus_env(&self) -> Vec<(String, String)> {
        self.overrides
            .iter()
            .filter(|(k, _)| k.starts_with("GUICHET__BUS__"))
            .cloned()
            .collect()
    }

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

    /// guichet's role `from`'s service token for the API package `to`, as
    /// that role mints it (`routing` calling `dossier`).
    pub fn service_token(&self, from: &str, to: &str) -> String {
        Authenticator::new(&self.config().auth)
            .expect("authenticator")
            .service_token(from, to)
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
