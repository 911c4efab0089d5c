//! `guichet bench-portal`: how fast the portal's pages render and how fast
//! a queue change reaches the open pages, on a loaded installation.
//!
//! Runs routing, dossier, counter and the portal in this process on SQLite,
//! with its own streams, subjects and files (removed afterwards); seeds
//! `pending` waiting requests (through the real intake path) and one
//! citizen with `timeline` timeline entries; then, signed in as a local
//! account over HTTP like a browser: the queue page and the fiche, each
//! `requests` times (p50/p99), and `clients` SSE connections receiving
//! `changes` queue changes (publish on NATS → event read by every client,
//! p50/p99 over all deliveries). Figures are printed, never asserted.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::StreamExt;
use guichet_platform::auth::Role as AuthRole;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use guichet_proto::intake::v1 as ipb;
use tokio_util::sync::CancellationToken;

use crate::bench::percentile;
use crate::{GuichetConfig, Role};

pub struct PortalBenchOptions {
    pub pending: usize,
    pub timeline: usize,
    pub requests: usize,
    pub clients: usize,
    pub changes: usize,
    pub nats_url: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `message` with the benchmark's service token.
fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// Log in as `login` over HTTP like a browser; returns the session cookie.
async fn log_in(
    http: &reqwest::Client,
    base: &str,
    login: &str,
    password: &str,
) -> anyhow::Result<String> {
    let form = http.get(format!("{base}/connexion")).send().await?;
    let cookie = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
    };
    let login_cookie = cookie(&form, "guichet_login").context("login cookie")?;
    let page = form.text().await?;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("csrf field")?
        .to_owned();
    let res = http
        .post(format!("{base}/connexion"))
        .header("cookie", format!("guichet_login={login_cookie}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("retour", "/file"),
            ("login", login),
            ("password", password),
        ])
        .send()
        .await?;
    cookie(&res, "guichet_session").context("session cookie (login refused?)")
}

async fn timed_gets(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let res = http
            .get(url)
            .header("cookie", format!("guichet_session={cookie}"))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "GET {url}: {}", res.status());
        let body = res.bytes().await?;
        anyhow::ensure!(!body.is_empty(), "GET {url}: empty page");
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times)
}

pub async fn run(opts: PortalBenchOptions) -> anyhow::Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let dir = std::env::temp_dir().join(format!("guichet-bench-portal-{id}"));
    std::fs::create_dir_all(&dir)?;
    let key: String = (0..32)
        .map(|i| format!("{:02x}", (i * 41 + 7) as u8))
        .collect();
    let env: Vec<(String, String)> = [
        ("GUICHET__DATA_DIR", dir.display().to_string()),
        ("GUICHET__SERVER__GRPC_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__SERVER__ADMIN_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__PORTAL__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__PORTAL__PUBLIC__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__COUNTER__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__BUS__URL", opts.nats_url.clone()),
        ("GUICHET__BUS__SUBJECT_PREFIX", format!("benchp{id}")),
        (
            "GUICHET__BUS__STREAM_PREFIX",
            format!("BENCHP{}_", id.to_uppercase()),
        ),
        ("GUICHET__AUTH__SIGNING_KEY", key),
        ("GUICHET__TELEMETRY__LOG_FILTER", "warn".into()),
        ("GUICHET__ROUTING__CONCURRENCY", "32".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = GuichetConfig::load(None, env)?;
    let app = crate::start(
        config.clone(),
        &[
            Role::Dossier,
            Role::Routing,
            Role::IngressCounter,
            Role::Portal,
        ],
        CancellationToken::new(),
    )
    .await?;
    let portal = app
        .handle::<guichet_portal::PortalHandle>()
        .context("portal handle")?;
    let bus = guichet_platform::bus::Bus::connect(&config.bus, "guichet/bench-portal").await?;
    let auth = guichet_platform::auth::Authenticator::new(&config.auth)?;
    // The queue is read as a supervisor; the long history is written as
    // routing writes contacts, with its service token.
    let service = auth.issue(
        "guichet-bench",
        &[AuthRole::Supervisor],
        &[],
        Duration::from_secs(3600),
    );
    let routing = auth.service_token("routing", "dossier");

    // Seed: pending requests through the intake path.
    println!(
        "seeding {} pending requests and a citizen with {} timeline entries…",
        opts.pending, opts.timeline
    );
    let mut ids = Vec::with_capacity(opts.pending);
    let mut inflight = futures::stream::FuturesUnordered::new();
    for i in 0..opts.pending {
        let e = ipb::IntakeEvent {
            id: uuid::Uuid::now_v7().to_string(),
            channel: if i % 2 == 0 {
                ipb::Channel::Email
            } else {
                ipb::Channel::Counter
            } as i32,
            received_at: Some(guichet_proto::convert::timestamp(Utc::now())),
            citizen: Some(ipb::CitizenHint {
                given_name: "Usager".into(),
                family_name: format!("Banc{i}"),
                phones: vec![format!("+336{:08}", 20_000_000 + i)],
                ..Default::default()
            }),
            subject: "Demande de renseignement".into(),
            body: "Bonjour, je souhaite un renseignement sur les horaires.".into(),
            ..Default::default()
        };
        ids.push(e.id.clone());
        let staged = guichet_platform::outbox::Outbox::new(portal.db.clone(), bus.clone())
            .intake_event(&e, format!("bench/{i}"), Utc::now());
        let bus = bus.clone();
        inflight.push(async move { bus.publish(staged.nats_subject, &staged.event).await });
        if inflight.len() >= 64 {
            inflight.next().await.transpose()?;
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    let mut queue = guichet_proto::routing::v1::queue_service_client::QueueServiceClient::connect(
        format!("http://{}", app.grpc_addr),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut pending = 0;
    while pending < opts.pending {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {pending} requests routed in 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut total = 0;
        let mut token = String::new();
        loop {
            let req = authed(
                guichet_proto::routing::v1::ListWorkItemsRequest {
                    status: guichet_proto::routing::v1::WorkItemStatus::Pending as i32,
                    page_size: 500,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &service,
            );
            let page = queue.list_work_items(req).await?.into_inner();
            total += page.items.len();
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        pending = total;
    }
    // The citizen with a long history: the first request's.
    let channel =
        guichet_platform::grpc::lazy_channel("bench", &format!("http://{}", app.grpc_addr))?;
    let mut dossier = DossierServiceClient::new(channel);
    let req = authed(
        guichet_proto::routing::v1::ListWorkItemsRequest {
            status: guichet_proto::routing::v1::WorkItemStatus::Pending as i32,
            page_size: 1,
            ..Default::default()
        },
        &service,
    );
    let first = queue
        .list_work_items(req)
        .await?
        .into_inner()
        .items
        .remove(0);
    for i in 0..opts.timeline {
        dossier
            .record_contact(authed(
                dpb::RecordContactRequest {
                    dossier_id: first.dossier_id.clone(),
                    kind: dpb::EntryKind::Contact as i32,
                    channel: ipb::Channel::Telephony as i32,
                    occur_time: Some(guichet_proto::convert::timestamp(Utc::now())),
                    summary: format!("Appel n° {i} : question sur le dossier"),
                    actor: "bench".into(),
                    source_event_id: uuid::Uuid::now_v7().to_string(),
                    ..Default::default()
                },
                &routing,
            ))
            .await?;
    }

    // Sign in like a browser.
    let password = "un mot de passe de banc d'essai";
    guichet_portal::accounts::add(
        &portal.db,
        guichet_portal::accounts::NewAccount {
            login: "banc".into(),
            display_name: "Agent de banc d'essai".into(),
            roles: vec![AuthRole::Agent],
            groups: Vec::new(),
            password: password.into(),
        },
    )
    .await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(512)
        .build()?;
    let base = portal.base_url.clone();
    let cookie = log_in(&http, &base, "banc", password).await?;

    // Warm up, then the two pages.
    timed_gets(&http, &format!("{base}/file"), &cookie, 20).await?;
    let queue_times = timed_gets(&http, &format!("{base}/file"), &cookie, opts.requests).await?;
    let fiche_url = format!("{base}/demande/{}", first.id);
    timed_gets(&http, &fiche_url, &cookie, 10).await?;
    let fiche_times = timed_gets(&http, &fiche_url, &cookie, opts.requests).await?;

    // SSE fan-out: `clients` open pages, `changes` queue changes.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut readers = Vec::new();
    for c in 0..opts.clients {
        let res = http
            .get(format!("{base}/evenements"))
            .header("cookie", format!("guichet_session={cookie}"))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "SSE: {}", res.status());
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut body = res.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    if let Some(n) = event
                        .lines()
                        .find_map(|l| l.strip_prefix("data: bench-"))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                    {
                        let _ = tx.send((n, Instant::now()));
                    }
                }
            }
            let _ = c;
        }));
    }
    drop(tx);
    let connected = Instant::now() + Duration::from_secs(10);
    while portal.live.receivers() < opts.clients && Instant::now() < connected {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::ensure!(
        portal.live.receivers() >= opts.clients,
        "only {} of {} SSE clients connected",
        portal.live.receivers(),
        opts.clients
    );
    let mut sent_at = Vec::with_capacity(opts.changes);
    let mut deliveries = Vec::with_capacity(opts.changes * opts.clients);
    let subject = bus.event_subject("routing", "work_item_bench");
    for n in 0..opts.changes {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("ce-subject", format!("work-items/bench-{n}").as_str());
        let t = Instant::now();
        bus.client()
            .publish_with_headers(subject.clone(), headers, bytes::Bytes::new())
            .await?;
        bus.client().flush().await?;
        sent_at.push(t);
        let mut got = 0;
        let wait = tokio::time::Instant::now() + Duration::from_secs(10);
        while got < opts.clients {
            match tokio::time::timeout_at(wait, rx.recv()).await {
                Ok(Some((m, at))) if m == n => {
                    deliveries.push(at - t);
                    got += 1;
                }
                Ok(Some(_)) => {}
                _ => anyhow::bail!("change {n} reached {got} of {} clients", opts.clients),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deliveries.sort();
    for r in readers {
        r.abort();
    }

    println!(
        "\nguichet bench-portal (SQLite; routing, dossier, counter and portal in one process; HTTP like a browser, session cookie)"
    );
    println!(
        "  {} pending requests, a citizen with {} timeline entries",
        opts.pending, opts.timeline
    );
    println!(
        "  queue page  GET /file            p50 {:>6.1} ms   p99 {:>6.1} ms   ({} requests)",
        ms(percentile(&queue_times, 0.5)),
        ms(percentile(&queue_times, 0.99)),
        queue_times.len()
    );
    println!(
        "  fiche       GET /demande/<id>    p50 {:>6.1} ms   p99 {:>6.1} ms   ({} requests)",
        ms(percentile(&fiche_times, 0.5)),
        ms(percentile(&fiche_times, 0.99)),
        fiche_times.len()
    );
    println!(
        "  live        queue change → {} SSE clients   p50 {:>6.1} ms   p99 {:>6.1} ms   ({} deliveries)",
        opts.clients,
        ms(percentile(&deliveries, 0.5)),
        ms(percentile(&deliveries, 0.99)),
        deliveries.len()
    );
    app.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
