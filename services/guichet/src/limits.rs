//! `guichet bench-limits`: this machine's raw limits, measured in the same
//! run as the benchmarks that report their figures beside them (a figure
//! without its raw neighbour says little on a shared 2-core machine).
//!
//! * JetStream publish + ack: sequential latency p50/p99, and throughput
//!   with 256 publishes in flight (a temporary stream, deleted after);
//! * a JetStream pull consumer doing one INSERT and an ack per message,
//!   32 in flight, on PostgreSQL and on SQLite: events/s;
//! * one-row commits from 16 concurrent tasks: commits/s, on PostgreSQL
//!   and SQLite;
//! * the footprint: release binary size (and stripped), `guichet up`
//!   start to ready and its idle RSS with every role.
//!
//! Databases are opened with `guichet_platform::db::connect`, as the roles
//! open theirs (SQLite in WAL mode behind one writer connection, PostgreSQL
//! with a pool of 16). [`measure`] returns [`Limits`], which [`run`] prints
//! and writes as JSON (`target/bench-limits.json`) for the other
//! benchmarks, such as the appointment rush, to print their ratios.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::{Deserialize, Serialize};

use crate::bench::percentile;

/// The figures, as the file other benchmarks read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Sequential JetStream publish + ack latency.
    pub jetstream_publish_ack_p50_ms: f64,
    pub jetstream_publish_ack_p99_ms: f64,
    /// JetStream publish + ack with 256 in flight, messages/s.
    pub jetstream_publish_per_s: f64,
    /// Pull consumer → one INSERT → ack, 32 in flight, messages/s.
    pub pull_insert_ack_postgres_per_s: Option<f64>,
    pub pull_insert_ack_sqlite_per_s: f64,
    /// One-row commits from 16 concurrent tasks, commits/s.
    pub commits_16_postgres_per_s: Option<f64>,
    pub commits_16_sqlite_per_s: f64,
    pub footprint: Option<Footprint>,
}

/// What `guichet up` costs on this machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Footprint {
    pub binary_bytes: u64,
    pub stripped_bytes: Option<u64>,
    /// Spawn to every readiness check answering (`/readyz` 200).
    pub up_ready_secs: f64,
    /// VmRSS after about 5 s idle with every role.
    pub idle_rss_bytes: u64,
}

pub struct LimitsOptions {
    pub nats_url: String,
    /// PostgreSQL server where temporary databases are created (and
    /// dropped); skipped when it does not answer.
    pub pg_url: String,
    /// Messages for each JetStream figure.
    pub messages: usize,
    /// Commits for each database figure.
    pub commits: usize,
    /// Measure `guichet up` too (spawns this very binary).
    pub footprint: bool,
}

/// The default place of the JSON file: `$CARGO_TARGET_DIR` or `target/`.
pub fn default_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench-limits.json")
}

/// Read a file written by [`run`], if there is one.
pub fn read(path: &Path) -> Option<Limits> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Measure every limit (the footprint when asked).
pub async fn measure(opts: &LimitsOptions) -> anyhow::Result<Limits> {
    let client = async_nats::connect(&opts.nats_url)
        .await
        .with_context(|| format!("NATS at {}", opts.nats_url))?;
    let js = jetstream::new(client);
    let mut limits = Limits::default();
    let (p50, p99, per_s) = publish_ack(&js, opts.messages).await?;
    limits.jetstream_publish_ack_p50_ms = p50;
    limits.jetstream_publish_ack_p99_ms = p99;
    limits.jetstream_publish_per_s = per_s;

    let dir = std::env::temp_dir().join(format!("guichet-limits-{}", unique()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = format!("sqlite://{}/limits.db?mode=rwc", dir.display());
    let db = connect(&sqlite).await?;
    limits.commits_16_sqlite_per_s = commits(&db, 16, opts.commits).await?;
    limits.pull_insert_ack_sqlite_per_s = pull_insert_ack(&js, &db, opts.messages).await?;
    let _ = db.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    if let Some((admin, name, url)) = pg_database(&opts.pg_url).await {
        let res = async {
            let db = connect(&url).await?;
            let c = commits(&db, 16, opts.commits).await?;
            let p = pull_insert_ack(&js, &db, opts.messages).await?;
            let _ = db.close().await;
            anyhow::Ok((c, p))
        }
        .await;
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        let (c, p) = res?;
        limits.commits_16_postgres_per_s = Some(c);
        limits.pull_insert_ack_postgres_per_s = Some(p);
    }
    if opts.footprint {
        limits.footprint = Some(footprint(&opts.nats_url).await?);
    }
    Ok(limits)
}

/// Measure, print, write the JSON file.
pub async fn run(opts: LimitsOptions, out: &Path) -> anyhow::Result<()> {
    let l = measure(&opts).await?;
    print!("{}", render(&l));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&l)?)
        .with_context(|| format!("write {}", out.display()))?;
    println!("limits written to {}", out.display());
    Ok(())
}

/// The figures as the benchmark prints them, with the goals of the
/// footprint beside it.
pub fn render(l: &Limits) -> String {
    let mb = |b: u64| b as f64 / 1_048_576.0;
    let opt = |v: Option<f64>, unit: &str| match v {
        Some(v) => format!("{v:8.0} {unit}"),
        None => "skipped (PostgreSQL not reachable)".to_owned(),
    };
    let mut s = String::new();
    s.push_str("raw limits of this machine (same run)\n");
    s.push_str(&format!(
        "  JetStream publish + ack, sequential      p50 {:.2} ms, p99 {:.2} ms\n",
        l.jetstream_publish_ack_p50_ms, l.jetstream_publish_ack_p99_ms
    ));
    s.push_str(&format!(
        "  JetStream publish + ack, 256 in flight   {:8.0} msg/s\n",
        l.jetstream_publish_per_s
    ));
    s.push_str(&format!(
        "  pull → one INSERT → ack, 32 in flight    PostgreSQL {}, SQLite {:8.0} msg/s\n",
        opt(l.pull_insert_ack_postgres_per_s, "msg/s"),
        l.pull_insert_ack_sqlite_per_s
    ));
    s.push_str(&format!(
        "  one-row commits, 16 concurrent           PostgreSQL {}, SQLite {:8.0} commits/s\n",
        opt(l.commits_16_postgres_per_s, "commits/s"),
        l.commits_16_sqlite_per_s
    ));
    if let Some(f) = &l.footprint {
        let stripped = f
            .stripped_bytes
            .map(|b| format!("{:.1} MB stripped", mb(b)))
            .unwrap_or_else(|| "no strip tool".into());
        s.push_str(&format!(
            "footprint\n  release binary                           {:.1} MB ({stripped}; goal ≤ 40 MB stripped)\n",
            mb(f.binary_bytes)
        ));
        s.push_str(&format!(
            "  guichet up, every role: start to ready   {:.2} s (goal ≤ 2 s)\n  guichet up, idle RSS after 5 s           {:.1} MB (goal ≤ 150 MB)\n",
            f.up_ready_secs,
            mb(f.idle_rss_bytes)
        ));
    }
    s
}

async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    let cfg = guichet_platform::config::DatabaseConfig {
        migrate_on_start: false,
        max_connections: 16,
    };
    let db = guichet_platform::db::connect(url, &cfg)
        .await
        .with_context(|| format!("connect {url}"))?;
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS limits_rows (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)",
    )
    .await?;
    Ok(db)
}

/// A fresh PostgreSQL database: (admin connection, name, its URL).
async fn pg_database(admin_url: &str) -> Option<(DatabaseConnection, String, String)> {
    let admin = sea_orm::Database::connect(admin_url).await.ok()?;
    let name = format!("guichet_limits_{}", unique());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .ok()?;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or_else(|| admin_url.to_owned());
    Some((admin, name.clone(), format!("{base}/{name}")))
}

/// One row per commit from `tasks` concurrent tasks; commits/s.
pub async fn commits(db: &DatabaseConnection, tasks: usize, n: usize) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let base = 1_000_000_000i64;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (db, next) = (db.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                insert(&db, base + i as i64).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

async fn insert(db: &DatabaseConnection, id: i64) -> anyhow::Result<()> {
    let stmt = sea_orm::Statement::from_sql_and_values(
        db.get_database_backend(),
        match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                "INSERT INTO limits_rows (id, payload) VALUES ($1, $2)"
            }
            _ => "INSERT INTO limits_rows (id, payload) VALUES (?, ?)",
        },
        [id.into(), "raw limit".into()],
    );
    db.execute_raw(stmt).await?;
    Ok(())
}

async fn temp_stream(js: &jetstream::Context) -> anyhow::Result<(String, String)> {
    let id = unique();
    let (name, subject) = (
        format!("LIMITS_{}", id.to_uppercase()),
        format!("limits{id}"),
    );
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .context("create the temporary stream")?;
    Ok((name, subject))
}

/// (p50 ms, p99 ms) sequential, and msg/s with 256 in flight.
async fn publish_ack(js: &jetstream::Context, n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let (stream, subject) = temp_stream(js).await?;
    let res = async {
        let payload = bytes::Bytes::from_static(&[b'x'; 256]);
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n.min(5000) {
            let t = Instant::now();
            js.publish(format!("{subject}.seq"), payload.clone())
                .await?
                .await?;
            lat.push(t.elapsed());
        }
        lat.sort();
        let total = n * 5;
        let t0 = Instant::now();
        let mut acks = std::collections::VecDeque::with_capacity(256);
        for _ in 0..total {
            if acks.len() >= 256
                && let Some(a) = acks.pop_front()
            {
                a.await?;
            }
            acks.push_back(
                js.publish(format!("{subject}.par"), payload.clone())
                    .await?,
            );
        }
        for a in acks {
            a.await?;
        }
        let per_s = total as f64 / t0.elapsed().as_secs_f64();
        anyhow::Ok((ms(percentile(&lat, 0.5)), ms(percentile(&lat, 0.99)), per_s))
    }
    .await;
    let _ = js.delete_stream(&stream).await;
    res
}

/// Publish `n` messages, then a pull consumer inserts one row per message
/// and acks it, 32 in flight; msg/s of the consuming part.
async fn pull_insert_ack(
    js: &jetstream::Context,
    db: &DatabaseConnection,
    n: usize,
) -> anyhow::Result<f64> {
    let (stream_name, subject) = temp_stream(js).await?;
    let res = async {
        let mut acks = Vec::with_capacity(n);
        for i in 0..n {
            acks.push(
                js.publish(format!("{subject}.ev"), i.to_string().into())
                    .await?,
            );
        }
        for a in acks {
            a.await?;
        }
        let stream = js.get_stream(&stream_name).await?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("limits".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 1024,
                ..Default::default()
            })
            .await?;
        let done = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let messages = consumer.messages().await?;
        let work = messages.take(n).for_each_concurrent(32, |m| {
            let (db, done) = (db.clone(), done.clone());
            async move {
                let Ok(m) = m else { return };
                let id = std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or_default();
                if insert(&db, id).await.is_ok() && m.ack().await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(300), work)
            .await
            .context("the pull consumer did not finish in 300 s")?;
        let secs = t0.elapsed().as_secs_f64();
        let done = done.load(Ordering::Relaxed);
        anyhow::ensure!(done == n, "{done} of {n} messages inserted and acked");
        anyhow::Ok(n as f64 / secs)
    }
    .await;
    let _ = js.delete_stream(&stream_name).await;
    res
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The stripped size of `bin` (a copy stripped with `strip`, or
/// `objcopy --strip-all`), when either tool is installed.
fn stripped_size(bin: &Path, dir: &Path) -> Option<u64> {
    let copy = dir.join("guichet-stripped");
    std::fs::copy(bin, &copy).ok()?;
    let ok = |cmd: &mut std::process::Command| cmd.status().is_ok_and(|s| s.success());
    let stripped = ok(std::process::Command::new("strip").arg(&copy))
        || ok(std::process::Command::new("objcopy")
            .arg("--strip-all")
            .arg(&copy));
    let size = std::fs::metadata(&copy).ok().map(|m| m.len());
    let _ = std::fs::remove_file(&copy);
    if stripped { size } else { None }
}

/// Run this binary's `guichet up` in an empty directory on free ports with
/// its own bus prefixes: time to ready, idle RSS, then stop it.
pub async fn footprint(nats_url: &str) -> anyhow::Result<Footprint> {
    let bin = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("guichet-up-{}", unique()));
    std::fs::create_dir_all(&dir)?;
    let binary_bytes = std::fs::metadata(&bin)?.len();
    let stripped_bytes = stripped_size(&bin, &std::env::temp_dir());
    let id = unique();
    let stream_prefix = format!("U{}_", id.to_uppercase());
    let admin = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("up")
        .current_dir(&dir)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in [
        ("GUICHET__BUS__URL", nats_url.to_owned()),
        ("GUICHET__BUS__SUBJECT_PREFIX", format!("u{id}")),
        ("GUICHET__BUS__STREAM_PREFIX", stream_prefix.clone()),
        (
            "GUICHET__SERVER__GRPC_ADDR",
            format!("127.0.0.1:{}", free_port()?),
        ),
        ("GUICHET__SERVER__ADMIN_ADDR", admin.clone()),
        ("GUICHET__COUNTER__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__TELEPHONY__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__SIGNATURE__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__PORTAL__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__TELEMETRY__LOG_FILTER", "warn".into()),
    ] {
        cmd.env(k, v);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("spawn guichet up")?;
    let pid = child.id().context("guichet up has no pid")?;
    let res = async {
        let ready = loop {
            if let Ok(r) = http.get(format!("http://{admin}/readyz")).send().await
                && r.status().is_success()
            {
                break t0.elapsed();
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("guichet up exited before ready: {status}");
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "guichet up not ready after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss = vm_rss(pid).context("read VmRSS")?;
        anyhow::Ok((ready, rss))
    }
    .await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    // The streams `up` created under its prefix.
    if let Ok(client) = async_nats::connect(nats_url).await {
        let js = jetstream::new(client);
        let mut names = js.stream_names();
        let mut mine = Vec::new();
        while let Some(Ok(n)) = names.next().await {
            if n.starts_with(&stream_prefix) {
                mine.push(n);
            }
        }
        for n in mine {
            let _ = js.delete_stream(&n).await;
        }
    }
    let (ready, rss) = res?;
    Ok(Footprint {
        binary_bytes,
        stripped_bytes,
        up_ready_secs: ready.as_secs_f64(),
        idle_rss_bytes: rss,
    })
}
