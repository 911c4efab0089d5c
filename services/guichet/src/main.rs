//! `guichet`: one front desk for every citizen request.
//!
//! Thin: parse arguments, load configuration, start telemetry, call the
//! library.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use guichet::{GuichetConfig, Role};
use guichet_platform::auth::{Authenticator, Role as AuthRole};

#[derive(Parser)]
#[command(
    name = "guichet",
    version,
    about = "One front desk for every citizen request"
)]
struct Cli {
    /// Configuration file (TOML), layered over the embedded defaults and
    /// under GUICHET__SECTION__KEY environment variables.
    #[arg(long, global = true, env = "GUICHET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every served role in one process (laptop, small town). Starts a
    /// local nats-server when none answers and one is installed.
    Up,
    /// Run the chosen roles (one Kubernetes Deployment per role), or every
    /// role with `--all` (the image's default): production mode, no tokens
    /// minted or printed, no development keys created, the development
    /// sinks refused unless `development = true`.
    Serve {
        /// Every served role in this process.
        #[arg(long, conflicts_with = "roles")]
        all: bool,
        #[arg(value_enum, required_unless_present = "all")]
        roles: Vec<Role>,
    },
    /// Run database migrations of the stateful roles, then exit.
    Migrate {
        /// Roles to migrate; all served stateful roles when omitted.
        #[arg(value_enum)]
        roles: Vec<Role>,
    },
    /// Print who may call which gRPC method (the README's access table).
    Access,
    /// Issue a development token signed with the configured key.
    Token {
        /// agent, supervisor, admin, process_owner (people), kiosk,
        /// citizen_pages or partner (devices and systems); repeatable.
        #[arg(long = "role", default_value = "agent")]
        roles: Vec<String>,
        /// Token subject: the agent or system id.
        #[arg(long, default_value = "agent-dev")]
        subject: String,
        /// Groups opening restricted processes (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long, default_value_t = 12)]
        ttl_hours: u64,
    },
    /// List the roles this version serves, one per line.
    Roles,
    /// Manage the portal's local accounts (towns without an identity
    /// provider): add, disable, enable, reset a password, list.
    Account {
        #[command(subcommand)]
        action: AccountAction,
    },
    /// The decision indicators' facts: `rebuild` empties them and replays
    /// the EVENTS stream from its first event (same figures, rebuilt from
    /// the events alone; stop the indicators role first).
    Indicators {
        #[command(subcommand)]
        action: IndicatorsAction,
    },
    /// Measure the routing rules on a labelled corpus of French requests:
    /// accuracy, per-procedure recall, the confusion table and every error.
    Classify {
        /// A corpus file (TOML `[[request]]` with channel, subject, body,
        /// expected); default: the corpus shipped with the sources.
        #[arg(long)]
        corpus: Option<std::path::PathBuf>,
    },
    /// Benchmark routing end to end (intake events routed per second,
    /// p50/p99 publish → enqueued) on SQLite and PostgreSQL, with dossier
    /// and routing in this process. Needs NATS at bus.url.
    Bench {
        #[arg(long, default_value_t = 2000)]
        events: usize,
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
        backends: Vec<String>,
        /// Log filter while benchmarking (logs go to stderr).
        #[arg(long, default_value = "warn")]
        log_filter: String,
        /// PostgreSQL server where the benchmark creates (and drops) its databases.
        #[arg(
            long,
            env = "GUICHET_BENCH_PG_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        pg_url: String,
    },
    /// Benchmark the portal: the queue page and the fiche (p50/p99) with
    /// `pending` waiting requests and a citizen with `timeline` entries, and
    /// one queue change reaching `clients` open pages over SSE. Needs NATS
    /// at bus.url; runs on SQLite in a temporary directory.
    BenchPortal {
        #[arg(long, default_value_t = 2000)]
        pending: usize,
        #[arg(long, default_value_t = 500)]
        timeline: usize,
        #[arg(long, default_value_t = 300)]
        requests: usize,
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value_t = 50)]
        changes: usize,
        /// Log filter while benchmarking (logs go to stderr).
        #[arg(long, default_value = "warn")]
        log_filter: String,
    },
    /// Benchmark the citizens' pages: `citizens` citizens released at once
    /// on `slots` free passport slots through the HTTP pages (booking p50/p99,
    /// attempts/s, exactly one booking per slot), then the same rush on the
    /// engine alone over gRPC in the same run. Needs NATS at bus.url; runs
    /// on SQLite in a temporary directory.
    BenchPublic {
        #[arg(long, default_value_t = 500)]
        citizens: usize,
        #[arg(long, default_value_t = 50)]
        slots: usize,
        /// Log filter while benchmarking (logs go to stderr; the rush makes
        /// sqlx warn of slow pool acquires, which are the measured wait).
        #[arg(long, default_value = "warn,sqlx=error")]
        log_filter: String,
    },
    /// Benchmark the indicators: a generated year of a town of 50,000
    /// ingested from JetStream on SQLite and PostgreSQL (events/s), and
    /// every indicator queried for the year cut by procedure (p50/p99).
    BenchIndicators {
        /// 1.0: 150,000 requests, 60,000 calls, 12,000 passport visits.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
        backends: Vec<String>,
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg_url: String,
        /// Queries per indicator.
        #[arg(long, default_value_t = 20)]
        repeats: usize,
    },
    /// Measure this machine's raw limits (JetStream publish + ack, pull →
    /// INSERT → ack, one-row commits at 16 concurrent, `guichet up`'s
    /// footprint), print them and write them as JSON for the other benches.
    BenchLimits {
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg_url: String,
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        #[arg(long, default_value_t = 8000)]
        commits: usize,
        /// Skip spawning `guichet up` (binary size, start, RSS).
        #[arg(long)]
        no_footprint: bool,
        /// Default: $CARGO_TARGET_DIR/bench-limits.json or target/bench-limits.json.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Validate process definitions offline (CI, before publishing a version).
    Processes {
        #[command(subcommand)]
        action: ProcessesAction,
    },
}

#[derive(Subcommand)]
enum IndicatorsAction {
    /// Empty the fact tables and replay the stream into them.
    Rebuild,
}

#[derive(Subcommand)]
enum AccountAction {
    /// Add an account; prints its generated password once (or reads one
    /// line from standard input with --password-stdin).
    Add {
        /// 2-64 lower-case letters, digits, '.', '-' or '_'.
        login: String,
        /// The name shown in the portal's header.
        #[arg(long)]
        name: String,
        /// agent, supervisor or admin (repeatable).
        #[arg(long = "role", default_value = "agent")]
        roles: Vec<String>,
        /// Groups opening restricted processes, e.g. `social` (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account and end its sessions.
    Disable { login: String },
    /// Enable a disabled account.
    Enable { login: String },
    /// Set a new password (generated and printed, or --password-stdin),
    /// unlock the account and end its sessions.
    Reset {
        login: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the accounts (login, name, roles, groups, state).
    List,
}

#[derive(Subcommand)]
enum ProcessesAction {
    /// Load every `*.toml` of DIR (default: dossier.processes_dir) and report
    /// the first error with its file, definition and line.
    Check { dir: Option<PathBuf> },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = GuichetConfig::load(
        cli.config.as_deref(),
        guichet_platform::config::process_env(),
    )?;
    match cli.command {
        Command::Classify { corpus } => {
            use guichet_routing::classification;
            let text = match &corpus {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
                None => classification::CORPUS.to_owned(),
            };
            let corpus = classification::parse_corpus(&text).map_err(anyhow::Error::msg)?;
            let queues = config.routing.queues.keys().cloned().collect();
            let rules = guichet_routing::rules::Rules::load(&config.routing.rules_file, queues)
                .map_err(|e| anyhow::anyhow!("routing.rules_file: {e}"))?;
            let report =
                classification::evaluate(&rules.current(), &corpus, &config.routing.triage_process);
            println!("{}", report.render());
            Ok(())
        }
        Command::Bench {
            events,
            in_flight,
            backends,
            log_filter,
            pg_url,
        } => {
            config.telemetry.log_filter = log_filter;
            let _telemetry = guichet_platform::telemetry::init(&config.telemetry)?;
            guichet::bench::run(guichet::bench::BenchOptions {
                events,
                in_flight,
                backends,
                pg_url,
                nats_url: config.bus.url.clone(),
            })
            .await?;
            Ok(())
        }
        Command::Processes {
            action: ProcessesAction::Check { dir },
        } => {
            let dir = match dir {
                Some(d) => d,
                None => {
                    GuichetConfig::load(cli.config.as_deref(), std::env::vars())?
                        .dossier
                        .processes_dir
                }
            };
            let catalog = if dir.as_os_str().is_empty() {
                guichet_dossier::catalog::Catalog::shipped()?
            } else {
                guichet_dossier::catalog::Catalog::load_dir(&dir)?
            };
            for p in catalog.all() {
                println!(
                    "ok  {} v{}  {} states, {} transitions, {} timers  ({})",
                    p.id,
                    p.version,
                    p.states.len(),
                    p.transitions.len(),
                    p.timers.len(),
                    p.title
                );
            }
            println!("{} definitions valid in {}", catalog.len(), dir.display());
            Ok(())
        }
        Command::Roles => {
            for r in Role::ALL {
                println!("{}", r.name());
            }
            Ok(())
        }
        Command::Account { action } => account(&config, action).await,
        Command::Indicators {
            action: IndicatorsAction::Rebuild,
        } => {
            let started = std::time::Instant::now();
            let n = guichet::rebuild_indicators(&config).await?;
            println!(
                "indicators rebuilt: {n} events replayed in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::BenchIndicators {
            scale,
            backends,
            pg_url,
            repeats,
        } => {
            let mut telemetry = config.telemetry.clone();
            telemetry.log_filter = "warn".into();
            let _telemetry = guichet_platform::telemetry::init(&telemetry)?;
            guichet::indicators_bench::run(guichet::indicators_bench::IndicatorsBenchOptions {
                scale,
                backends,
                pg_url,
                nats_url: config.bus.url.clone(),
                repeats,
            })
            .await
        }
        Command::BenchPortal {
            pending,
            timeline,
            requests,
            clients,
            changes,
            log_filter,
        } => {
            let mut telemetry = config.telemetry.clone();
            telemetry.log_filter = log_filter;
            let _telemetry = guichet_platform::telemetry::init(&telemetry)?;
            guichet::portal_bench::run(guichet::portal_bench::PortalBenchOptions {
                pending,
                timeline,
                requests,
                clients,
                changes,
                nats_url: config.bus.url.clone(),
            })
            .await
        }
        Command::BenchPublic {
            citizens,
            slots,
            log_filter,
        } => {
            let mut telemetry = config.telemetry.clone();
            telemetry.log_filter = log_filter;
            let _telemetry = guichet_platform::telemetry::init(&telemetry)?;
            guichet::public_bench::run(guichet::public_bench::PublicBenchOptions {
                citizens,
                slots,
                nats_url: config.bus.url.clone(),
            })
            .await
        }
        Command::BenchLimits {
            pg_url,
            messages,
            commits,
            no_footprint,
            out,
        } => {
            let opts = guichet::limits::LimitsOptions {
                nats_url: config.bus.url.clone(),
                pg_url,
                messages,
                commits,
                footprint: !no_footprint,
            };
            let out = out.unwrap_or_else(guichet::limits::default_path);
            guichet::limits::run(opts, &out).await
        }
        Command::Access => {
            print!("{}", guichet_platform::access::markdown());
            Ok(())
        }
        Command::Token {
            roles,
            subject,
            groups,
            ttl_hours,
        } => {
            config.ensure_dev_signing_key(false)?;
            let roles = roles
                .iter()
                .map(|r| r.parse::<AuthRole>().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::ensure!(
                !roles.contains(&AuthRole::Service),
                "`service` tokens are minted by guichet's roles for each other, each scoped to its caller and callee; give a kiosk `kiosk`, the public pages `citizen_pages`, another municipal system `partner` (see `guichet access`)"
            );
            let auth = Authenticator::new(&config.auth)?;
            println!(
                "{}",
                auth.issue(
                    &subject,
                    &roles,
                    &groups,
                    Duration::from_secs(ttl_hours * 3600)
                )
            );
            Ok(())
        }
        Command::Migrate { roles } => {
            let _telemetry = guichet_platform::telemetry::init(&config.telemetry)?;
            let roles = if roles.is_empty() {
                Role::ALL.to_vec()
            } else {
                roles
            };
            guichet::migrate(&config, &roles).await
        }
        Command::Up => {
            config.development = true;
            config.ensure_dev_signing_key(true)?;
            config.ensure_dev_signature_keys()?;
            let cti_token = config.ensure_dev_cti_token()?;
            // The links in appointment messages open the citizens' pages of
            // this machine unless the town set its own address.
            if config.appointment.public_base_url == "https://rendez-vous.mairie.example.fr"
                && config.portal.public.enabled()
            {
                config.appointment.public_base_url = config
                    .portal
                    .public
                    .base_url(config.portal.public.http_addr.parse().ok());
            }
            let _telemetry = guichet_platform::telemetry::init(&config.telemetry)?;
            let nats = guichet::nats::ensure(&config.bus.url, &config.data_dir).await?;
            let shutdown = guichet_platform::shutdown::on_signal();
            let app = guichet::start(config.clone(), Role::ALL, shutdown).await?;
            let accounts = guichet::dev_accounts(&config, &app).await?;
            let auth = Authenticator::new(&config.auth)?;
            let token = auth.issue(
                "agent-dev",
                &[AuthRole::Agent],
                &[],
                Duration::from_secs(12 * 3600),
            );
            let cti = app
                .listener(Role::IngressTelephony, "http")
                .map(|addr| {
                    format!(
                        "  CTI    http://{addr}/api/v1/cti/{cti_token} (the PBX's generic CTI webhook; token under {})\n",
                        config.data_dir.join("dev-cti-token").display()
                    )
                })
                .unwrap_or_default();
            println!(
                "guichet is up: roles {}\n  portal {accounts}\n  gRPC   {} (reflection on; try: grpcurl -plaintext {} list)\n  admin  http://{}/healthz /readyz /metrics\n{cti}\nDevelopment token (agent `agent-dev`, 12 h; calls for supervisors such as ImportCdr need `guichet token --role supervisor --subject NAME`):\n{}\n",
                app.roles
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                app.grpc_addr,
                app.grpc_addr,
                app.admin_addr,
                token
            );
            let res = app.wait().await;
            if let Some(n) = nats {
                n.stop().await;
            }
            res
        }
        Command::Serve { all, roles } => {
            let roles = if all { Role::ALL.to_vec() } else { roles };
            let mut telemetry = config.telemetry.clone();
            telemetry.service_name = guichet::service_name(&telemetry.service_name, &roles);
            let _telemetry = guichet_platform::telemetry::init(&telemetry)?;
            guichet::check_production(&config, &roles)?;
            let shutdown = guichet_platform::shutdown::on_signal();
            let app = guichet::start(config, &roles, shutdown).await?;
            app.wait().await
        }
    }
}

/// Read one password line from standard input, or generate one.
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok((line.trim_end_matches(['\r', '\n']).to_owned(), false))
    } else {
        Ok((guichet::generate_password(), true))
    }
}

async fn account(config: &GuichetConfig, action: AccountAction) -> anyhow::Result<()> {
    use guichet_portal::accounts;
    let db = guichet::portal_database(config).await?;
    match action {
        AccountAction::Add {
            login,
            name,
            roles,
            groups,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin)?;
            let roles = accounts::parse_roles(&roles.join(","))?;
            let account = accounts::add(
                &db,
                accounts::NewAccount {
                    login,
                    display_name: name,
                    roles,
                    groups: accounts::parse_groups(&groups.join(",")),
                    password: password.clone(),
                },
            )
            .await?;
            println!("account `{}` added ({})", account.login, account.roles);
            if generated {
                println!("password (shown once): {password}");
            }
        }
        AccountAction::Disable { login } => {
            accounts::set_disabled(&db, &login, true).await?;
            println!("account `{login}` disabled; its sessions ended");
        }
        AccountAction::Enable { login } => {
            accounts::set_disabled(&db, &login, false).await?;
            println!("account `{login}` enabled");
        }
        AccountAction::Reset {
            login,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin)?;
            accounts::reset_password(&db, &login, &password).await?;
            println!("account `{login}`: new password set, sessions ended");
            if generated {
                println!("password (shown once): {password}");
            }
        }
        AccountAction::List => {
            for a in accounts::list(&db).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    a.login,
                    a.display_name,
                    a.roles,
                    if a.groups.is_empty() { "-" } else { &a.groups },
                    if a.disabled {
                        "disabled"
                    } else if a.failed_logins >= accounts::MAX_FAILED_LOGINS {
                        "locked"
                    } else {
                        "active"
                    }
                );
            }
        }
    }
    Ok(())
}
