//! `guichet bench-indicators`: a year of a town of 50,000 — about 150,000
//! requests (with their dossiers), 60,000 calls, 12,000 passport visits and
//! appointments, 3,000 signatures and hourly availability samples — is
//! generated as the roles would publish it, onto this run's own EVENTS
//! stream. The indicators' consumer then ingests the whole stream on SQLite
//! and on PostgreSQL (events/s through JetStream, batches and commits), and
//! every indicator is queried for the year by month, cut by procedure where
//! it can be (p50/p99 over repeated queries). Figures are printed, never
//! asserted; the run removes its streams and databases.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc, Weekday};
use guichet_platform::bus::Bus;
use guichet_proto::convert::timestamp;
use guichet_proto::events::v1 as ev;
use prost::Message;
use sea_orm::{ConnectionTrait, Database};
use tokio_util::sync::CancellationToken;

use crate::GuichetConfig;
use crate::bench::{percentile, pg_url_for};

pub struct IndicatorsBenchOptions {
    /// 1.0: a town of 50,000 for a year.
    pub scale: f64,
    pub backends: Vec<String>,
    pub pg_url: String,
    pub nats_url: String,
    pub repeats: usize,
}

/// A small deterministic generator (xorshift), so every run has the same year.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const PROCEDURES: [(&str, &str); 12] = [
    ("passeport", "titres-identite"),
    ("carte-identite", "titres-identite"),
    ("acte-etat-civil", "etat-civil"),
    ("mariage", "etat-civil"),
    ("pacs", "etat-civil"),
    ("inscription-scolaire", "education"),
    ("creche-inscription", "petite-enfance"),
    ("inscription-listes-electorales", "citoyennete"),
    ("signalement-voirie", "voirie"),
    ("declaration-travaux-information", "urbanisme"),
    ("aide-sociale-ccas", "social"),
    ("demande-information", "affaires-generales"),
];

/// A working moment of 2025 (Monday–Saturday, 08:30–17:30 Paris).
fn moment(rng: &mut Rng) -> DateTime<Utc> {
    loop {
        let day = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default()
            + chrono::Duration::days(rng.below(365) as i64);
        if day.weekday() == Weekday::Sun {
            continue;
        }
        let minutes = 8 * 60 + 30 + rng.below(9 * 60) as i64;
        let local =
            day.and_hms_opt(0, 0, 0).unwrap_or_default() + chrono::Duration::minutes(minutes);
        return guichet_platform::calendar::from_paris(local);
    }
}

struct Publisher {
    js: async_nats::jetstream::Context,
    bus: Bus,
    pending: Vec<async_nats::jetstream::context::PublishAckFuture>,
    sent: usize,
}

impl Publisher {
    async fn event<M: Message>(
        &mut self,
        service: &str,
        ty: &str,
        at: DateTime<Utc>,
        m: &M,
    ) -> anyhow::Result<()> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("ce-specversion", "1.0");
        headers.insert("ce-id", id.as_str());
        headers.insert("ce-type", format!("guichet.{service}.v1.{ty}").as_str());
        headers.insert("ce-source", "guichet/bench-indicators");
        headers.insert("ce-time", at.to_rfc3339().as_str());
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        let ack = self
            .js
            .publish_with_headers(
                self.bus.event_subject(service, ty),
                headers,
                m.encode_to_vec().into(),
            )
            .await?;
        self.pending.push(ack);
        self.sent += 1;
        if self.pending.len() >= 2_000 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        for ack in self.pending.drain(..) {
            ack.await?;
        }
        Ok(())
    }
}

/// Publish the year; returns how many events.
async fn publish_year(p: &mut Publisher, scale: f64) -> anyhow::Result<usize> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = |x: f64| (x * scale).round() as usize;
    let secs = |s: u64| chrono::Duration::seconds(s as i64);
    // Requests and their dossiers.
    for i in 0..n(150_000.0) {
        let received = moment(&mut rng);
        let (process, domain) = PROCEDURES[rng.below(PROCEDURES.len() as u64) as usize];
        let channel = match rng.below(10) {
            0..=3 => "telephony",
            4..=6 => "email",
            7..=8 => "counter",
            _ => "scan",
        };
        let dossier = if rng.chance(70) {
            let id = format!("d{i}");
            p.event(
                "dossier",
                "dossier_opened",
                received,
                &ev::DossierOpened {
                    dossier_id: id.clone(),
                    reference: format!("VIN-2025-{i:06}"),
                    process_id: process.into(),
                    process_version: 1 + rng.below(2) as u32,
                    state: "depot".into(),
                    domain: domain.into(),
                    opened_time: Some(timestamp(received)),
                    ..Default::default()
                },
            )
            .await?;
            if rng.chance(85) {
                let closed = received + secs(3_600 + rng.below(20 * 86_400));
                p.event(
                    "dossier",
                    "dossier_state_changed",
                    closed,
                    &ev::DossierStateChanged {
                        dossier_id: id.clone(),
                        process_id: process.into(),
                        process_version: 1,
                        from_state: "depot".into(),
                        to_state: "clos".into(),
                        cause: "transition".into(),
                        closed: true,
                        occur_time: Some(timestamp(closed)),
                        ..Default::default()
                    },
                )
                .await?;
            }
            id
        } else {
            String::new()
        };
        let item = |step: &str,
                    status: &str,
                    assigned: Option<DateTime<Utc>>,
                    completed: Option<DateTime<Utc>>,
                    changed: DateTime<Utc>| ev::WorkItemChanged {
            work_item_id: format!("w{i}"),
            intake_event_id: format!("i{i}"),
            dossier_id: dossier.clone(),
            status: status.into(),
            agent_id: format!("agent-{}", i % 20),
            channel: channel.into(),
            entered_at: Some(timestamp(received)),
            changed_at: Some(timestamp(changed)),
            queue_id: "accueil".into(),
            process_id: process.into(),
            sla_due_at: Some(timestamp(received + chrono::Duration::hours(48))),
            assigned_at: assigned.map(timestamp),
            completed_at: completed.map(timestamp),
            step: step.into(),
            ..Default::default()
        };
        p.event(
            "routing",
            "work_item_enqueued",
            received,
            &item("enqueued", "pending", None, None, received),
        )
        .await?;
        let assigned = received + secs(60 + rng.below(6 * 3_600));
        p.event(
            "routing",
            "work_item_assigned",
            assigned,
            &item("assigned", "assigned", Some(assigned), None, assigned),
        )
        .await?;
        let completed = assigned + secs(120 + rng.below(3_600));
        p.event(
            "routing",
            "work_item_completed",
            completed,
            &item(
                "completed",
                "completed",
                Some(assigned),
                Some(completed),
                completed,
            ),
        )
        .await?;
    }
    // Calls.
    for i in 0..n(60_000.0) {
        let started = moment(&mut rng);
        let missed = rng.chance(10);
        let waiting = if missed {
            rng.below(180)
        } else {
            rng.below(90)
        } as u32;
        p.event(
            "telephony",
            "call_ended",
            started,
            &ev::CallEnded {
                call_id: format!("c{i}"),
                direction: "in".into(),
                queue: if rng.chance(30) {
                    "etat-civil"
                } else {
                    "accueil"
                }
                .into(),
                waiting_seconds: waiting,
                talk_seconds: if missed {
                    0
                } else {
                    60 + rng.below(400) as u32
                },
                missed,
                callback_requested: missed,
                source: "cti".into(),
                started_at: Some(timestamp(started)),
                ended_at: Some(timestamp(started + secs(u64::from(waiting) + 300))),
                intake_event_id: format!("i{i}"),
                ..Default::default()
            },
        )
        .await?;
    }
    // Passport appointments and their visits.
    for i in 0..n(12_000.0) {
        let slot = moment(&mut rng);
        let booked = slot - secs(86_400 * (1 + rng.below(40)));
        let change = |status: &str, at: DateTime<Utc>| ev::AppointmentChanged {
            booking_id: format!("b{i}"),
            reference: format!("RDV-{i:06}"),
            status: status.into(),
            appointment_type: "passeport-depot".into(),
            site_id: if rng_site(i) { "mairie" } else { "annexe" }.into(),
            start_time: Some(timestamp(slot)),
            end_time: Some(timestamp(slot + secs(900))),
            people: 1,
            occurred_time: Some(timestamp(at)),
            ..Default::default()
        };
        p.event(
            "appointment",
            "appointment_booked",
            booked,
            &change("booked", booked),
        )
        .await?;
        if rng.chance(8) {
            p.event(
                "appointment",
                "appointment_no_show",
                slot + secs(1_800),
                &change("no_show", slot + secs(1_800)),
            )
            .await?;
            continue;
        }
        let arrived = slot - secs(300) + secs(rng.below(600));
        p.event(
            "appointment",
            "appointment_checked_in",
            arrived,
            &change("checked_in", arrived),
        )
        .await?;
        let wait = rng.below(900) as u32;
        let service = 600 + rng.below(600) as u32;
        p.event(
            "counter",
            "ticket_called",
            arrived + secs(u64::from(wait)),
            &ev::TicketCalled {
                ticket_id: format!("t{i}"),
                ticket_number: format!("R{:03}", i % 1000),
                service: "titres".into(),
                site: "mairie".into(),
                desk: format!("guichet-{}", i % 4),
                call_time: Some(timestamp(arrived + secs(u64::from(wait)))),
                recall: 0,
                ..Default::default()
            },
        )
        .await?;
        let end = arrived + secs(u64::from(wait + service));
        p.event(
            "counter",
            "visit_ended",
            end,
            &ev::VisitEnded {
                ticket_id: format!("t{i}"),
                ticket_number: format!("R{:03}", i % 1000),
                service: "titres".into(),
                site: "mairie".into(),
                desk: format!("guichet-{}", i % 4),
                outcome: "done".into(),
                waiting_seconds: wait,
                service_seconds: service,
                issued_at: Some(timestamp(arrived)),
                end_time: Some(timestamp(end)),
                ..Default::default()
            },
        )
        .await?;
        p.event("appointment", "appointment_seen", end, &change("seen", end))
            .await?;
    }
    // Signatures.
    for i in 0..n(3_000.0) {
        let at = moment(&mut rng);
        let sig = |status: &str, t: DateTime<Utc>| ev::SignatureChanged {
            signature_request_id: format!("s{i}"),
            dossier_id: format!("d{i}"),
            status: status.into(),
            process_template: "avenant-creche".into(),
            occurred_time: Some(timestamp(t)),
            ..Default::default()
        };
        p.event("signature", "request_created", at, &sig("pending", at))
            .await?;
        let done = at + secs(300 + rng.below(3 * 86_400));
        let status = if rng.chance(90) { "signed" } else { "declined" };
        let ty = if status == "signed" {
            "completed"
        } else {
            "declined"
        };
        p.event("signature", ty, done, &sig(status, done)).await?;
    }
    // Hourly availability samples, two sites.
    let start = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    for h in 0..n(8_760.0) {
        let at = start + chrono::Duration::hours(h as i64);
        for site in ["mairie", "annexe"] {
            let day = guichet_platform::calendar::to_paris(at).date();
            p.event(
                "appointment",
                "appointment_availability_sampled",
                at,
                &ev::AvailabilitySampled {
                    appointment_type: "passeport-depot".into(),
                    site_id: site.into(),
                    sampled_time: Some(timestamp(at)),
                    next_free_time: Some(timestamp(at + secs(86_400 * (2 + rng.below(30))))),
                    day: day.format("%Y-%m-%d").to_string(),
                    open_units: 52,
                    taken_units: 30 + rng.below(22) as u32,
                },
            )
            .await?;
        }
    }
    p.flush().await?;
    Ok(p.sent)
}

fn rng_site(i: usize) -> bool {
    !i.is_multiple_of(3)
}

pub async fn run(opts: IndicatorsBenchOptions) -> anyhow::Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let dir = std::env::temp_dir().join(format!("guichet-bench-ind-{id}"));
    std::fs::create_dir_all(&dir)?;
    let env: Vec<(String, String)> = [
        ("GUICHET__DATA_DIR", dir.display().to_string()),
        ("GUICHET__BUS__URL", opts.nats_url.clone()),
        ("GUICHET__BUS__SUBJECT_PREFIX", format!("bench{id}")),
        (
            "GUICHET__BUS__STREAM_PREFIX",
            format!("BENCH{}_", id.to_uppercase()),
        ),
        ("GUICHET__AUTH__SIGNING_KEY", "00".repeat(32)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = GuichetConfig::load(None, env)?;
    let bus = Bus::connect(&config.bus, "guichet/bench-indicators").await?;
    bus.ensure_stream(guichet_platform::bus::StreamKind::Events)
        .await?;
    let mut publisher = Publisher {
        js: bus.jetstream().clone(),
        bus: bus.clone(),
        pending: Vec::new(),
        sent: 0,
    };
    let t = Instant::now();
    let events = publish_year(&mut publisher, opts.scale).await?;
    let published = t.elapsed();
    println!(
        "\nguichet bench-indicators: a year of a town of 50,000 × {}: {events} events published in {:.1} s ({:.0}/s)",
        opts.scale,
        published.as_secs_f64(),
        events as f64 / published.as_secs_f64()
    );
    let mut pg_dbs = Vec::new();
    let result = async {
        for backend in &opts.backends {
            let url = match backend.as_str() {
                "sqlite" => format!("sqlite://{}/indicators.db?mode=rwc", dir.display()),
                "postgres" => {
                    let admin = Database::connect(&opts.pg_url)
                        .await
                        .with_context(|| format!("cannot connect PostgreSQL at {}", opts.pg_url))?;
                    let name = format!("guichet_bench_{id}_indicators");
                    admin
                        .execute_unprepared(&format!("CREATE DATABASE {name}"))
                        .await?;
                    pg_dbs.push(name.clone());
                    pg_url_for(&opts.pg_url, &name)
                }
                other => anyhow::bail!("unknown backend `{other}` (sqlite, postgres)"),
            };
            bench_backend(&config, &bus, backend, &url, events, opts.repeats).await?;
        }
        anyhow::Ok(())
    }
    .await;
    // Clean up whatever happened.
    let _ = bus
        .jetstream()
        .delete_stream(bus.stream_name(guichet_platform::bus::StreamKind::Events))
        .await;
    if !pg_dbs.is_empty()
        && let Ok(admin) = Database::connect(&opts.pg_url).await
    {
        for name in pg_dbs {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn bench_backend(
    config: &GuichetConfig,
    bus: &Bus,
    backend: &str,
    url: &str,
    events: usize,
    repeats: usize,
) -> anyhow::Result<()> {
    let db = guichet_platform::db::connect_and_migrate::<guichet_indicators::db::Migrator>(
        url,
        &config.database,
    )
    .await?;
    let mut cfg = config.indicators.clone();
    cfg.consumer = format!("bench-{backend}");
    let (ingest, engine, consumer) = guichet_indicators::parts(&cfg, db)?;
    let t = Instant::now();
    ingest
        .run(bus, &consumer, true, CancellationToken::new())
        .await?;
    let took = t.elapsed();
    println!(
        "{backend:<9} ingest: {events} events in {:.1} s = {:.0} events/s (batches of {}, one transaction each)",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64(),
        cfg.batch_size
    );
    let year = guichet_indicators::query::Query {
        start: Utc
            .with_ymd_and_hms(2024, 12, 31, 23, 0, 0)
            .single()
            .unwrap_or_default(),
        end: Utc
            .with_ymd_and_hms(2025, 12, 31, 23, 0, 0)
            .single()
            .unwrap_or_default(),
        granularity: guichet_indicators::query::Granularity::Month,
        cut: String::new(),
        indicators: vec![],
        filters: vec![],
    };
    let mut all = Vec::new();
    let mut worst: (Duration, &str) = (Duration::ZERO, "");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{backend:<9} each indicator for the year by month, cut by procedure where it can be ({repeats} queries each):"
    );
    for i in engine.indicators.iter() {
        let cut = if i.cuts.iter().any(|(k, _)| *k == "procedure") {
            "procedure"
        } else {
            ""
        };
        let q = guichet_indicators::query::Query {
            cut: cut.into(),
            indicators: vec![i.key.into()],
            ..year.clone()
        };
        let mut times = Vec::new();
        for _ in 0..repeats {
            let t = Instant::now();
            let (figures, _) = engine.figures(&q).await?;
            std::hint::black_box(figures);
            times.push(t.elapsed());
        }
        times.sort();
        let p99 = percentile(&times, 0.99);
        println!(
            "{backend:<9}   {:<38} {:<10} p50 {:>7.1} ms, p99 {:>7.1} ms",
            i.key,
            if cut.is_empty() { "(no cut)" } else { cut },
            ms(percentile(&times, 0.5)),
            ms(p99),
        );
        if p99 > worst.0 {
            worst = (p99, i.key);
        }
        all.extend(times);
    }
    all.sort();
    let mut dash = Vec::new();
    for _ in 0..repeats.min(10) {
        let t = Instant::now();
        std::hint::black_box(engine.figures(&year).await?);
        dash.push(t.elapsed());
    }
    dash.sort();
    println!(
        "{backend:<9} one indicator for the year by month, cut by procedure where it can be: p50 {:.1} ms, p99 {:.1} ms over {} queries (slowest: {} p99 {:.1} ms); the whole dashboard (every indicator, no cut): p50 {:.0} ms, p99 {:.0} ms",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        all.len(),
        worst.1,
        ms(worst.0),
        ms(percentile(&dash, 0.5)),
        ms(percentile(&dash, 0.99)),
    );
    Ok(())
}
