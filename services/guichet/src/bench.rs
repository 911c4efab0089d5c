//! `guichet bench`: intake events routed per second end to end, and the
//! time from publishing an intake event to its work item being enqueued,
//! with dossier and routing running in this process on SQLite and on
//! PostgreSQL. Each run has its own streams, subjects and databases, and
//! removes them afterwards. Figures are printed beside a raw JetStream
//! publish+ack measured in the same run, on the same machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use guichet_platform::bus::{Bus, OutgoingEvent};
use guichet_proto::convert::timestamp;
use guichet_proto::intake::v1 as ipb;
use prost::Message;
use sea_orm::{ConnectionTrait, Database, Statement};
use tokio_util::sync::CancellationToken;

use crate::{GuichetConfig, Role};

pub struct BenchOptions {
    pub events: usize,
    pub in_flight: usize,
    pub backends: Vec<String>,
    pub pg_url: String,
    pub nats_url: String,
}

pub struct BenchResult {
    pub backend: String,
    pub events: usize,
    pub routed_per_sec: f64,
    /// Publish → enqueued with `in_flight` events outstanding (a burst).
    pub p50: Duration,
    pub p99: Duration,
    /// Publish → enqueued one event at a time (an idle system).
    pub idle_p50: Duration,
    pub idle_p99: Duration,
    pub raw_publish_p50: Duration,
}

/// The `p` quantile of sorted durations (nearest rank).
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The URL of database `db` on the server of `admin`.
pub(crate) fn pg_url_for(admin: &str, db: &str) -> String {
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => format!("{admin}/{db}"),
    }
}

fn event(i: usize) -> ipb::IntakeEvent {
    let channel = match i % 3 {
        0 => ipb::Channel::Counter,
        1 => ipb::Channel::Email,
        _ => ipb::Channel::Telephony,
    };
    ipb::IntakeEvent {
        id: uuid::Uuid::now_v7().to_string(),
        channel: channel as i32,
        received_at: Some(timestamp(Utc::now())),
        citizen: Some(ipb::CitizenHint {
            given_name: "Usager".into(),
            family_name: format!("Banc{i}"),
            phones: vec![format!("+336{:08}", 10_000_000 + i)],
            ..Default::default()
        }),
        subject: "Demande de renseignement".into(),
        body: "Bonjour, je souhaite un renseignement.".into(),
        ..Default::default()
    }
}

async fn publish(bus: &Bus, e: &ipb::IntakeEvent) -> anyhow::Result<()> {
    let subject = bus.subject(&format!("intake.{}", e.channel().slug()));
    bus.publish(
        subject,
        &OutgoingEvent {
            id: e.id.clone(),
            ty: "guichet.intake.v1.intake_event".into(),
            subject: format!("intake/{}", e.id),
            time: Utc::now(),
            body: bytes::Bytes::from(e.encode_to_vec()),
        },
    )
    .await?;
    Ok(())
}

/// Run the benchmark on each backend; print and return the figures.
pub async fn run(opts: BenchOptions) -> anyhow::Result<Vec<BenchResult>> {
    let mut results = Vec::new();
    for backend in &opts.backends {
        let r = run_one(&opts, backend)
            .await
            .with_context(|| format!("benchmark on {backend}"))?;
        results.push(r);
    }
    println!(
        "\nguichet bench: {} intake events per backend, {} in flight; intake → routing (dossier gRPC: resolve citizen, open dossier, record contact) → unified queue",
        opts.events, opts.in_flight
    );
    println!(
        "{:<10} {:>9} {:>24} {:>24} {:>14}",
        "backend", "routed/s", "idle p50 / p99 (ms)", "burst p50 / p99 (ms)", "raw JS p50 ms"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for r in &results {
        println!(
            "{:<10} {:>9.0} {:>11.1} / {:>10.1} {:>11.0} / {:>10.0} {:>14.2}",
            r.backend,
            r.routed_per_sec,
            ms(r.idle_p50),
            ms(r.idle_p99),
            ms(r.p50),
            ms(r.p99),
            ms(r.raw_publish_p50)
        );
    }
    println!(
        "idle: one event at a time, publish → work item enqueued; burst: {} events with {} publishes in flight (includes waiting behind earlier events); raw JS: JetStream publish+ack, sequential, same run",
        opts.events, opts.in_flight
    );
    // Each figure beside this machine's raw limit (`guichet bench-limits`,
    // the first step of `make bench`).
    let path = crate::limits::default_path();
    match crate::limits::read(&path) {
        Some(l) => {
            for r in &results {
                let raw = match r.backend.as_str() {
                    "postgres" => l.pull_insert_ack_postgres_per_s,
                    _ => Some(l.pull_insert_ack_sqlite_per_s),
                };
                if let Some(raw) = raw.filter(|x| *x > 0.0) {
                    println!(
                        "{:<10} routed/s ÷ raw JetStream pull → one INSERT → ack ({raw:.0}/s): {:.2}; idle p50 ÷ raw publish+ack p50 ({:.2} ms): {:.0}×",
                        r.backend,
                        r.routed_per_sec / raw,
                        l.jetstream_publish_ack_p50_ms,
                        ms(r.idle_p50) / l.jetstream_publish_ack_p50_ms.max(1e-6)
                    );
                }
            }
        }
        None => println!(
            "no raw limits at {} (run `guichet bench-limits` first): ratios not printed",
            path.display()
        ),
    }
    Ok(results)
}

async fn run_one(opts: &BenchOptions, backend: &str) -> anyhow::Result<BenchResult> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let dir = std::env::temp_dir().join(format!("guichet-bench-{id}"));
    std::fs::create_dir_all(&dir)?;
    let mut pg_dbs = Vec::new();
    let urls: Vec<String> = match backend {
        "sqlite" => ["dossier", "routing", "counter"]
            .iter()
            .map(|r| format!("sqlite://{}/{r}.db?mode=rwc", dir.display()))
            .collect(),
        "postgres" => {
            let admin = Database::connect(&opts.pg_url)
                .await
                .with_context(|| format!("cannot connect PostgreSQL at {}", opts.pg_url))?;
            let mut urls = Vec::new();
            for r in ["dossier", "routing", "counter"] {
                let name = format!("guichet_bench_{id}_{r}");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await?;
                urls.push(pg_url_for(&opts.pg_url, &name));
                pg_dbs.push(name);
            }
            urls
        }
        other => anyhow::bail!("unknown backend `{other}` (sqlite, postgres)"),
    };
    let key: String = (0..32)
        .map(|i| format!("{:02x}", (i * 37 + 11) as u8))
        .collect();
    let env: Vec<(String, String)> = [
        ("GUICHET__DATA_DIR", dir.display().to_string()),
        ("GUICHET__SERVER__GRPC_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__SERVER__ADMIN_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__BUS__URL", opts.nats_url.clone()),
        ("GUICHET__BUS__SUBJECT_PREFIX", format!("bench{id}")),
        (
            "GUICHET__BUS__STREAM_PREFIX",
            format!("BENCH{}_", id.to_uppercase()),
        ),
        ("GUICHET__AUTH__SIGNING_KEY", key),
        ("GUICHET__TELEMETRY__LOG_FILTER", "warn".into()),
        ("GUICHET__DOSSIER__DATABASE_URL", urls[0].clone()),
        ("GUICHET__ROUTING__DATABASE_URL", urls[1].clone()),
        ("GUICHET__COUNTER__DATABASE_URL", urls[2].clone()),
        ("GUICHET__ROUTING__CONCURRENCY", "32".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = GuichetConfig::load(None, env)?;
    let app = crate::start(
        config.clone(),
        &[Role::Dossier, Role::Routing],
        CancellationToken::new(),
    )
    .await?;
    let bus = Bus::connect(&config.bus, "guichet/bench").await?;
    let routing_db = guichet_platform::db::connect(&urls[1], &config.database).await?;
    let count = |db: sea_orm::DatabaseConnection| async move {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM work_items",
            ))
            .await?;
        let n: i64 = row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0);
        anyhow::Ok(n as usize)
    };
    let wait_for = |n: usize, db: sea_orm::DatabaseConnection| async move {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if count(db.clone()).await? >= n {
                return anyhow::Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("timed out waiting for {n} work items");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // Raw JetStream publish + ack, sequential, on this run's EVENTS stream.
    let mut raw = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        bus.publish(
            bus.event_subject("bench", "noop"),
            &OutgoingEvent {
                id: uuid::Uuid::now_v7().to_string(),
                ty: "guichet.bench.v1.noop".into(),
                subject: format!("bench/{i}"),
                time: Utc::now(),
                body: bytes::Bytes::from_static(b"x"),
            },
        )
        .await?;
        raw.push(t.elapsed());
    }
    raw.sort();

    // Warm up (connections, migrations done, caches).
    let warmup = 50;
    for i in 0..warmup {
        publish(&bus, &event(1_000_000 + i)).await?;
    }
    wait_for(warmup, routing_db.clone()).await?;

    // Idle latency: one event at a time.
    let enqueued_at = |db: sea_orm::DatabaseConnection, id: String| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let row = db
                .query_one_raw(Statement::from_sql_and_values(
                    db.get_database_backend(),
                    match db.get_database_backend() {
                        sea_orm::DbBackend::Postgres => {
                            "SELECT updated_at FROM work_items WHERE intake_event_id = $1"
                        }
                        _ => "SELECT updated_at FROM work_items WHERE intake_event_id = ?",
                    },
                    [id.clone().into()],
                ))
                .await?;
            if let Some(r) = row {
                let at: DateTime<Utc> = r.try_get("", "updated_at")?;
                return anyhow::Ok(at);
            }
            if Instant::now() > deadline {
                anyhow::bail!("event {id} not enqueued");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let idle_n = 100;
    let mut idle = Vec::with_capacity(idle_n);
    for i in 0..idle_n {
        let e = event(2_000_000 + i);
        let at = Utc::now();
        publish(&bus, &e).await?;
        let done = enqueued_at(routing_db.clone(), e.id.clone()).await?;
        idle.push((done - at).to_std().unwrap_or(Duration::ZERO));
    }
    idle.sort();
    let warmup = warmup + idle_n;

    // Measure.
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.in_flight));
    let mut sent: Vec<(String, DateTime<Utc>)> = Vec::with_capacity(opts.events);
    let mut tasks = tokio::task::JoinSet::new();
    let start = Utc::now();
    for i in 0..opts.events {
        let e = event(i);
        sent.push((e.id.clone(), Utc::now()));
        let permit = sem.clone().acquire_owned().await?;
        let bus = bus.clone();
        tasks.spawn(async move {
            let r = publish(&bus, &e).await;
            drop(permit);
            r
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    wait_for(warmup + opts.events, routing_db.clone()).await?;

    let rows = routing_db
        .query_all_raw(Statement::from_string(
            routing_db.get_database_backend(),
            "SELECT intake_event_id, updated_at FROM work_items",
        ))
        .await?;
    let mut enqueued = std::collections::HashMap::new();
    for r in rows {
        let id: String = r.try_get("", "intake_event_id")?;
        let at: DateTime<Utc> = r.try_get("", "updated_at")?;
        enqueued.insert(id, at);
    }
    let mut lat = Vec::with_capacity(sent.len());
    let mut last = start;
    for (id, at) in &sent {
        let done = *enqueued
            .get(id)
            .with_context(|| format!("event {id} not enqueued"))?;
        last = last.max(done);
        lat.push((done - *at).to_std().unwrap_or(Duration::ZERO));
    }
    lat.sort();
    let elapsed = (last - start).to_std().unwrap_or(Duration::from_millis(1));
    let result = BenchResult {
        backend: backend.to_owned(),
        events: opts.events,
        routed_per_sec: opts.events as f64 / elapsed.as_secs_f64().max(1e-3),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        idle_p50: percentile(&idle, 0.50),
        idle_p99: percentile(&idle, 0.99),
        raw_publish_p50: percentile(&raw, 0.50),
    };

    // Clean up: process, streams, databases, files.
    app.stop().await?;
    let _ = routing_db.close().await;
    let js = async_nats::jetstream::new(bus.client().clone());
    for base in ["INTAKE", "EVENTS", "NOTIFY", "DEADLETTER"] {
        let _ = js
            .delete_stream(format!("BENCH{}_{base}", id.to_uppercase()))
            .await;
    }
    if !pg_dbs.is_empty()
        && let Ok(admin) = Database::connect(&opts.pg_url).await
    {
        for db in &pg_dbs {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result)
}
