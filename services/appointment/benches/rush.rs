//! The appointment engine under load, on this machine, against real NATS
//! and real databases (SQLite in a temporary directory; PostgreSQL too when
//! one answers at GUICHET_TEST_PG_URL or postgres://postgres@127.0.0.1:5432):
//!
//! * availability: queries per second for a month of one site's passport
//!   slots (3 desks), as the national aggregator polls them;
//! * the booking rush: 2,000 clients released at once on 400 slots, ten
//!   concurrent per desk-time; throughput of attempts and of bookings, and
//!   p50/p99 latency of an attempt (engine, without the gRPC hop).
//!
//!     make bench        # or: cargo bench -p guichet-appointment --bench rush
//!
//! Figures are printed, never asserted. The rush is printed as a ratio of
//! this machine's one-row commits at 16 concurrent, read from
//! `target/bench-limits.json` (`guichet bench-limits`, the first step of
//! `make bench`) or, when that file is missing, measured here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, TimeZone, Utc};
use guichet_appointment::config::{AntsConfig, Config, DeskConfig, SiteConfig, TypeConfig};
use guichet_appointment::core::{Caller, NewBooking};
use guichet_platform::clock::ManualClock;
use sea_orm::ConnectionTrait;

fn model(database_url: String) -> Config {
    let week: Vec<String> = ["mon", "tue", "wed", "thu", "fri"]
        .iter()
        .flat_map(|d| [format!("{d} 08:30-12:00"), format!("{d} 13:30-17:30")])
        .collect();
    Config {
        database_url,
        dossier_url: "http://127.0.0.1:1".into(),
        public_base_url: "https://rdv.example.fr".into(),
        town: guichet_platform::town::Town {
            name: "Villeneuve".into(),
            ..Default::default()
        },
        slot_minutes: 15,
        closed_on_holidays: true,
        job_interval_secs: 3600,
        availability_sample_minutes: 0,
        reminder_hours_before: 48,
        notify_channels: vec!["sms".into()],
        waitlist_max_messages: 3,
        waitlist_hold_minutes: 120,
        noshow_max: 2,
        noshow_window_days: 180,
        retention_days: 365,
        http_addr: String::new(),
        manage_link_days: 7,
        ants: AntsConfig {
            auth_token: String::new().into(),
            coordination_url: String::new(),
            coordination_token: String::new().into(),
            city_logo: String::new(),
        },
        sites: vec![SiteConfig {
            id: "mairie".into(),
            name: "Hôtel de ville".into(),
            address: "1 place de la Mairie".into(),
            zip_code: "99000".into(),
            city: "Villeneuve".into(),
            latitude: 48.8,
            longitude: 2.3,
            website: String::new(),
        }],
        desks: (1..=3)
            .map(|i| DeskConfig {
                id: format!("dr{i}"),
                site: "mairie".into(),
                name: format!("Station {i}"),
                resources: vec!["DR".into()],
                opening: week.clone(),
                closures: vec![],
                extra_openings: vec![],
                absences: vec![],
            })
            .collect(),
        types: vec![TypeConfig {
            id: "passeport-depot".into(),
            name: "Dépôt de passeport".into(),
            duration_minutes: 15,
            per_person_minutes: 15,
            resources: vec!["DR".into()],
            public: true,
            min_delay_hours: 2,
            max_delay_days: 60,
            cancellable_until_hours: 24,
            max_people: 5,
            ants_reason: "PASSPORT".into(),
        }],
    }
}

fn pct(sorted: &[StdDuration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run(label: &str, database_url: String) {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let nats =
        std::env::var("GUICHET_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let bus_cfg: guichet_platform::bus::BusConfig = serde_json::from_value(serde_json::json!({
        "url": nats, "subject_prefix": format!("b{id}"), "stream_prefix": format!("B{}_", id.to_uppercase()),
        "replicas": 1, "max_deliver": 3, "ack_wait_secs": 5, "retry_base_ms": 50,
        "connect_timeout_secs": 5, "events_max_age_days": 1
    }))
    .unwrap();
    let auth_cfg: guichet_platform::auth::AuthConfig = serde_json::from_value(serde_json::json!({
        "signing_key": "bench-signing-key-0123456789abcdef0123", "issuer": "guichet",
        "audience": "guichet", "service_token_ttl_secs": 300
    }))
    .unwrap();
    // Monday 2027-01-04 07:00 Paris.
    let now = Utc.with_ymd_and_hms(2027, 1, 4, 6, 0, 0).unwrap();
    let clock = ManualClock::new(now);
    let bus = guichet_platform::bus::Bus::connect(&bus_cfg, "guichet/bench")
        .await
        .expect("NATS");
    let deps = guichet_platform::Deps {
        bus: bus.clone(),
        auth: Arc::new(guichet_platform::auth::Authenticator::new(&auth_cfg).unwrap()),
        database: guichet_platform::config::DatabaseConfig {
            migrate_on_start: true,
            max_connections: 16,
        },
        readiness: guichet_platform::admin::Readiness::new(),
        objects: guichet_platform::objects::ObjectStore::local(
            std::env::temp_dir().join(format!("guichet-bench-{id}")),
        ),
        clock: Arc::new(clock),
        town: guichet_platform::town::Town {
            name: "Villeneuve".into(),
            ..Default::default()
        },
        overrides: Default::default(),
    };
    let service = guichet_appointment::build(model(database_url), deps)
        .await
        .unwrap();
    let core = service.core();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(service.run(stop.clone()));

    // Availability: a month ahead, one site, 2 people, distinct times (the
    // first query builds the index; the version check is in every one).
    let n = 3000;
    let t0 = Instant::now();
    let mut slots = 0;
    for _ in 0..n {
        slots = core
            .availability(
                "passeport-depot",
                &["mairie".into()],
                2,
                now,
                now + Duration::days(31),
                5000,
                true,
                false,
            )
            .await
            .unwrap()
            .len();
    }
    let qps = n as f64 / t0.elapsed().as_secs_f64();
    println!(
        "{label:10} availability: {qps:8.0} queries/s ({slots} slot times over 31 days, 3 desks), one at a time"
    );
    // The same, 16 at a time (the aggregator polls many sites at once).
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let core = core.clone();
        set.spawn(async move {
            for _ in 0..n / 16 {
                core.availability(
                    "passeport-depot",
                    &["mairie".into()],
                    2,
                    now,
                    now + Duration::days(31),
                    5000,
                    true,
                    false,
                )
                .await
                .unwrap();
            }
        });
    }
    while set.join_next().await.is_some() {}
    println!(
        "{label:10} availability: {:8.0} queries/s, 16 at a time",
        (n / 16 * 16) as f64 / t0.elapsed().as_secs_f64()
    );

    // The rush: 400 desk-times on 2027-01-05..08 (ten clients each).
    let open = core
        .availability(
            "passeport-depot",
            &["mairie".into()],
            1,
            now,
            now + Duration::days(5),
            5000,
            false,
            true,
        )
        .await
        .unwrap();
    let targets: Vec<_> = open.into_iter().take(400).collect();
    let clients = targets.len() * 5;
    let barrier = Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for i in 0..clients {
        let core = core.clone();
        let slot = targets[i % targets.len()].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let start = Instant::now();
            let res = core
                .book(
                    &Caller {
                        subject: "bench".into(),
                        agent: true,
                    },
                    NewBooking {
                        type_id: "passeport-depot".into(),
                        site_id: slot.site.clone(),
                        desk_id: Some(slot.desk.clone()),
                        start: slot.start,
                        people: 1,
                        citizen_id: format!("c{i}"),
                        dossier_id: String::new(),
                        phone: Some("+33612345678".into()),
                        email: None,
                        application_ids: vec![],
                        request_id: Some(format!("rush-{i}")),
                    },
                )
                .await;
            (start.elapsed(), res.is_ok())
        });
    }
    let mut lat = Vec::with_capacity(clients);
    let mut won = 0;
    while let Some(r) = tasks.join_next().await {
        let (d, ok) = r.unwrap();
        lat.push(d);
        won += usize::from(ok);
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "{label:10} booking rush: {clients} clients on {} slots → {won} bookings in {secs:.2} s: {:.0} attempts/s, {:.0} bookings/s, p50 {:.1} ms, p99 {:.1} ms",
        targets.len(),
        clients as f64 / secs,
        won as f64 / secs,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    assert_eq!(won, targets.len(), "one booking per slot");
    let (limit, source) = commit_limit(label, &core.db).await;
    println!(
        "{label:10} booking rush: {:.2} × one-row commits at 16 concurrent ({limit:.0} commits/s, {source})",
        clients as f64 / secs / limit
    );
    stop.cancel();
    let js = async_nats::jetstream::new(bus.client().clone());
    for s in ["EVENTS", "NOTIFY"] {
        let _ = js
            .delete_stream(format!("B{}_{s}", id.to_uppercase()))
            .await;
    }
}

/// One-row commits at 16 concurrent on this backend: from the file
/// `guichet bench-limits` wrote in this run, else measured on `db` now.
async fn commit_limit(label: &str, db: &sea_orm::DatabaseConnection) -> (f64, &'static str) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let file = std::fs::read_to_string(target.join("bench-limits.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let key = if label == "postgres" {
        "commits_16_postgres_per_s"
    } else {
        "commits_16_sqlite_per_s"
    };
    if let Some(v) = file.as_ref().and_then(|f| f[key].as_f64()) {
        return (v, "target/bench-limits.json");
    }
    db.execute_unprepared("CREATE TABLE limits_rows (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    let n = 4000usize;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (db, next) = (db.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                db.execute_unprepared(&format!("INSERT INTO limits_rows (id) VALUES ({i})"))
                    .await
                    .unwrap();
            }
        });
    }
    while set.join_next().await.is_some() {}
    (
        n as f64 / t0.elapsed().as_secs_f64(),
        "measured here: no bench-limits file",
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("guichet-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    run(
        "sqlite",
        format!("sqlite://{}/appointment.db?mode=rwc", dir.display()),
    )
    .await;
    let admin_url = std::env::var("GUICHET_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    match sea_orm::Database::connect(&admin_url).await {
        Ok(admin) => {
            let name = format!(
                "guichet_bench_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..10]
            );
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            let base = admin_url
                .rsplit_once('/')
                .map(|(b, _)| b.to_owned())
                .unwrap_or(admin_url.clone());
            run("postgres", format!("{base}/{name}")).await;
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
        Err(e) => println!("postgres   skipped: not reachable ({e})"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
