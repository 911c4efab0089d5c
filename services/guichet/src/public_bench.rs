//! `guichet bench-public`: a booking rush through the citizens' pages.
//!
//! Runs dossier, appointment and the portal in this process on SQLite in a
//! temporary directory, with its own streams and subjects, in a town whose
//! passport desk has exactly `slots` free slots (extra openings on one
//! day). `citizens` citizens, each with their own address (sent as
//! `X-Forwarded-For` through a trusted proxy, so the per-address limits
//! apply as in production) and their own visitor session, are released at
//! once: each opens the slots page, picks one at random, opens the details
//! form and posts it; a citizen who loses a slot picks another from the
//! page they are sent back to, until they book or are told nothing is
//! free. Measured: the booking POST's p50/p99 and attempts per second over
//! the rush, and the outcome (exactly `slots` bookings, everyone else told
//! plainly). Then, in the same run, the same rush against the engine
//! alone (`BookAppointment` over gRPC, no pages) on another day's `slots`.
//! Figures are printed, never asserted; the outcome is checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{Duration as Days, Utc};
use guichet_platform::auth::Role as AuthRole;
use guichet_proto::appointment::v1 as apb;
use guichet_proto::appointment::v1::appointment_service_client::AppointmentServiceClient;
use rand::seq::IndexedRandom;
use tokio_util::sync::CancellationToken;

use crate::bench::percentile;
use crate::{GuichetConfig, Role};

pub struct PublicBenchOptions {
    pub citizens: usize,
    pub slots: usize,
    pub nats_url: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What one citizen's rush ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Booked,
    /// Told plainly that nothing is free (the waiting list page).
    ToldFull,
    /// Anything else: a refusal or an error (counted, reported).
    Other,
}

/// The radio values of the slots on a page (`site|unix`).
fn slot_values(page: &str) -> Vec<String> {
    page.split("name=\"creneau\" value=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .map(|v| v.replace("&#124;", "|").replace("&#x7c;", "|"))
        .collect()
}

fn hidden(page: &str, name: &str) -> Option<String> {
    page.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(str::to_owned)
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

/// One citizen through the pages; every booking POST's time in `times`.
async fn citizen(
    http: reqwest::Client,
    base: String,
    n: usize,
    times: Arc<tokio::sync::Mutex<Vec<Duration>>>,
) -> anyhow::Result<Outcome> {
    let ip = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
    let choice = "demarche=passeport-depot&personnes=1&lieu=";
    let first = http
        .get(format!("{base}/rendez-vous/creneaux?{choice}"))
        .header("x-forwarded-for", &ip)
        .send()
        .await?;
    let visitor = set_cookie(&first, "guichet_visiteur").context("visitor cookie")?;
    let cookie = format!("guichet_visiteur={visitor}");
    let mut page = first.text().await?;
    for _ in 0..8 {
        let free = slot_values(&page);
        let Some(slot) = free.choose(&mut rand::rng()).cloned() else {
            return Ok(if page.contains("Aucun créneau libre") {
                Outcome::ToldFull
            } else {
                Outcome::Other
            });
        };
        let form = http
            .get(format!(
                "{base}/rendez-vous/coordonnees?{choice}&{}",
                serde_urlencoded::to_string([("creneau", slot.as_str())])?
            ))
            .header("x-forwarded-for", &ip)
            .header("cookie", &cookie)
            .send()
            .await?
            .text()
            .await?;
        let jeton = hidden(&form, "jeton").context("form token")?;
        let demande = hidden(&form, "demande").context("form id")?;
        let ants = format!("{:010}", 3_000_000_000u64 + n as u64);
        let t = Instant::now();
        let res = http
            .post(format!("{base}/rendez-vous/reserver"))
            .header("x-forwarded-for", &ip)
            .header("cookie", &cookie)
            .form(&[
                ("jeton", jeton.as_str()),
                ("demande", demande.as_str()),
                ("demarche", "passeport-depot"),
                ("personnes", "1"),
                ("lieu", ""),
                ("creneau", slot.as_str()),
                ("prenom", "Camille"),
                ("nom", &format!("Rush{n}")),
                ("telephone", &format!("+336{:08}", 30_000_000 + n)),
                ("courriel", ""),
                ("ants1", &ants),
            ])
            .send()
            .await?;
        let status = res.status().as_u16();
        page = res.text().await?;
        times.lock().await.push(t.elapsed());
        match status {
            303 => return Ok(Outcome::Booked),
            // The slot went to someone else: this page shows the others.
            409 => continue,
            _ => return Ok(Outcome::Other),
        }
    }
    Ok(Outcome::Other)
}

/// The passport desk open only on two days: `units` slots of 15 minutes
/// on each, from 08:00 Paris.
fn town_dir(
    dir: &std::path::Path,
    units: usize,
) -> anyhow::Result<(String, chrono::NaiveDate, chrono::NaiveDate)> {
    let town = dir.join("town");
    std::fs::create_dir_all(&town)?;
    for f in crate::town::files(std::path::Path::new(""))? {
        let name = f.origin.rsplit('/').next().unwrap_or_default().to_owned();
        if name != "desks.toml" {
            std::fs::write(town.join(name), f.content)?;
        }
    }
    let today = guichet_platform::calendar::to_paris(Utc::now()).date();
    let (pages_day, engine_day) = (today + Days::days(3), today + Days::days(4));
    let end = chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default()
        + Days::minutes(15 * units as i64);
    let range = format!("08:00-{}", end.format("%H:%M"));
    std::fs::write(
        town.join("desks.toml"),
        format!(
            "[[appointment.desks]]\nid = \"titres\"\nsite = \"mairie\"\nname = \"Titres\"\nresources = [\"DR\"]\nopening = []\nextra_openings = [\"{pages_day} {range}\", \"{engine_day} {range}\"]\n"
        ),
    )?;
    Ok((town.display().to_string(), pages_day, engine_day))
}

pub async fn run(opts: PublicBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=60).contains(&opts.slots),
        "--slots must be between 1 and 60 (one day's openings from 08:00)"
    );
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let dir = std::env::temp_dir().join(format!("guichet-bench-public-{id}"));
    std::fs::create_dir_all(&dir)?;
    let (town, pages_day, engine_day) = town_dir(&dir, opts.slots)?;
    let key: String = (0..32)
        .map(|i| format!("{:02x}", (i * 37 + 11) as u8))
        .collect();
    let env: Vec<(String, String)> = [
        ("GUICHET__DATA_DIR", dir.display().to_string()),
        ("GUICHET__TOWN_DIR", town),
        ("GUICHET__SERVER__GRPC_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__SERVER__ADMIN_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__PORTAL__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__PORTAL__PUBLIC__HTTP_ADDR", "127.0.0.1:0".into()),
        // Bots are not simulated: citizens post at once.
        ("GUICHET__PORTAL__PUBLIC__MIN_FORM_SECS", "0".into()),
        ("GUICHET__BUS__URL", opts.nats_url.clone()),
        ("GUICHET__BUS__SUBJECT_PREFIX", format!("benchpub{id}")),
        (
            "GUICHET__BUS__STREAM_PREFIX",
            format!("BENCHPUB{}_", id.to_uppercase()),
        ),
        ("GUICHET__AUTH__SIGNING_KEY", key),
        ("GUICHET__TELEMETRY__LOG_FILTER", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut config = GuichetConfig::load(None, env)?;
    // Behind the town's proxy: each citizen has their own address.
    config.portal.public.trusted_proxies = vec!["127.0.0.1".into()];
    let app = crate::start(
        config.clone(),
        &[Role::Dossier, Role::Appointment, Role::Portal],
        CancellationToken::new(),
    )
    .await?;
    let portal = app
        .handle::<guichet_portal::PortalHandle>()
        .context("portal handle")?;
    let base = portal.public_url.clone();
    anyhow::ensure!(!base.is_empty(), "the citizens' pages are not served");
    let auth = guichet_platform::auth::Authenticator::new(&config.auth)?;
    // The engine is booked as the citizens' pages book; the bookings are
    // counted as a supervisor lists them.
    let service = auth.issue(
        "guichet-bench",
        &[AuthRole::CitizenPages],
        &[],
        Duration::from_secs(3600),
    );
    let supervisor = auth.issue(
        "guichet-bench",
        &[AuthRole::Supervisor],
        &[],
        Duration::from_secs(3600),
    );
    let authed = |m| {
        let mut r = tonic::Request::new(m);
        if let Ok(v) = format!("Bearer {supervisor}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    };

    let mut appointments =
        AppointmentServiceClient::connect(format!("http://{}", app.grpc_addr)).await?;
    println!(
        "\nguichet bench-public (SQLite; dossier, appointment and the portal in one process): {} citizens on {} slots",
        opts.citizens, opts.slots
    );
    // First the engine alone (same process, same database) on another
    // day, which it fills, so the pages' rush has only its own day.
    let starts: Vec<prost_types::Timestamp> = (0..opts.slots)
        .map(|k| {
            guichet_proto::convert::timestamp(
                guichet_platform::calendar::from_paris(
                    engine_day.and_hms_opt(8, 0, 0).unwrap_or_default(),
                ) + Days::minutes(15 * k as i64),
            )
        })
        .collect();
    let engine_times = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let won = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Barrier::new(opts.citizens + 1));
    let mut tasks = Vec::with_capacity(opts.citizens);
    for n in 0..opts.citizens {
        let (mut c, starts, times, won, gate, service) = (
            appointments.clone(),
            starts.clone(),
            engine_times.clone(),
            won.clone(),
            gate.clone(),
            service.clone(),
        );
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let mut order: Vec<usize> = (0..starts.len()).collect();
            {
                use rand::seq::SliceRandom;
                order.shuffle(&mut rand::rng());
            }
            for k in order.into_iter().take(8) {
                let mut r = tonic::Request::new(apb::BookAppointmentRequest {
                    appointment_type: "passeport-depot".into(),
                    site_id: "mairie".into(),
                    start_time: Some(starts[k]),
                    people: 1,
                    citizen_id: format!("bench-citizen-{n}"),
                    contact: Some(apb::Contact {
                        phone: format!("+336{:08}", 40_000_000 + n),
                        email: String::new(),
                    }),
                    request_id: format!("bench-engine-{n}-{k}"),
                    ..Default::default()
                });
                if let Ok(v) = format!("Bearer {service}").parse() {
                    r.metadata_mut().insert("authorization", v);
                }
                let t = Instant::now();
                let res = c.book_appointment(r).await;
                times.lock().await.push(t.elapsed());
                match res {
                    Ok(_) => {
                        won.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(e) if e.code() == tonic::Code::Aborted => continue,
                    Err(_) => return,
                }
            }
        }));
    }
    gate.wait().await;
    let started = Instant::now();
    for t in tasks {
        t.await?;
    }
    let rush = started.elapsed();
    let mut engine_times = engine_times.lock().await.clone();
    engine_times.sort();
    println!(
        "  engine (BookAppointment over gRPC, no pages): {} booked; {} attempts in {:.2} s: {:.0} attempts/s; p50 {:.0} ms, p99 {:.0} ms",
        won.load(Ordering::Relaxed),
        engine_times.len(),
        rush.as_secs_f64(),
        engine_times.len() as f64 / rush.as_secs_f64().max(1e-9),
        ms(percentile(&engine_times, 0.50)),
        ms(percentile(&engine_times, 0.99)),
    );
    // The rush through the pages.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(opts.citizens)
        .build()?;
    let times = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Barrier::new(opts.citizens + 1));
    let mut tasks = Vec::with_capacity(opts.citizens);
    for n in 0..opts.citizens {
        let (http, base, times, gate) = (http.clone(), base.clone(), times.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            citizen(http, base, n, times).await
        }));
    }
    gate.wait().await;
    let started = Instant::now();
    let (mut booked, mut full, mut other, mut errors) = (0usize, 0usize, 0usize, 0usize);
    for t in tasks {
        match t.await? {
            Ok(Outcome::Booked) => booked += 1,
            Ok(Outcome::ToldFull) => full += 1,
            Ok(Outcome::Other) => other += 1,
            Err(e) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("citizen failed: {e:#}");
                }
            }
        }
    }
    let rush = started.elapsed();
    let mut times = times.lock().await.clone();
    times.sort();
    let held = appointments
        .list_bookings(authed(apb::ListBookingsRequest {
            filter: Some(apb::BookingFilter {
                statuses: vec![apb::BookingStatus::Booked as i32],
                start_time: Some(guichet_proto::convert::timestamp(
                    guichet_platform::calendar::from_paris(
                        pages_day.and_hms_opt(0, 0, 0).unwrap_or_default(),
                    ),
                )),
                end_time: Some(guichet_proto::convert::timestamp(
                    guichet_platform::calendar::from_paris(
                        pages_day.and_hms_opt(23, 59, 0).unwrap_or_default(),
                    ),
                )),
                ..Default::default()
            }),
            page_size: 500,
            page_token: String::new(),
        }))
        .await?
        .into_inner()
        .bookings
        .len();
    println!(
        "  pages: {booked} booked, {full} told « aucun créneau libre », {other} other, {errors} errors; {held} bookings held ({})",
        if held == opts.slots && booked == opts.slots {
            "exactly one per slot"
        } else {
            "NOT one per slot"
        }
    );
    println!(
        "  pages: {} booking POSTs in {:.2} s: {:.0} attempts/s; p50 {:.0} ms, p99 {:.0} ms",
        times.len(),
        rush.as_secs_f64(),
        times.len() as f64 / rush.as_secs_f64().max(1e-9),
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.99)),
    );

    app.stop().await?;
    if let Ok(client) = async_nats::connect(&opts.nats_url).await {
        let js = async_nats::jetstream::new(client);
        for base in ["INTAKE", "EVENTS", "NOTIFY", "DEADLETTER"] {
            let _ = js
                .delete_stream(format!("BENCHPUB{}_{base}", id.to_uppercase()))
                .await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_hidden_fields_are_read_from_the_pages() {
        let page = r#"<input type="radio" id="prochain-1" name="creneau" value="mairie|1800000000"><input type="hidden" name="jeton" value="123.abc">"#;
        assert_eq!(slot_values(page), ["mairie|1800000000"]);
        assert_eq!(hidden(page, "jeton").as_deref(), Some("123.abc"));
    }
}
