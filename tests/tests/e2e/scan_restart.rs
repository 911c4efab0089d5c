//! A crash while letters are being read: after the restart each letter is
//! exactly one request (one intake event), and a letter already read is
//! never read or published again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use guichet_testkit::proto::scan::v1 as spb;
use guichet_testkit::scan::{drop_into_inbox, render};
use guichet_testkit::*;

use crate::scan_letters::{LETTERS, intake_events};

fn count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn a_crash_while_letters_are_read_still_makes_each_letter_exactly_one_request() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let one_at_a_time = [("GUICHET__SCAN__CONCURRENCY", "1")];
    // The dossier role answers which letters the listing may show.
    let process = env
        .spawn_process(&["ingress-scan", "dossier"], &one_at_a_time)
        .await;
    let work = tempfile::tempdir().expect("tempdir");
    let inbox = env.scan_dir().join("inbox");
    let done = env.scan_dir().join("done");
    let mut files = Vec::new();
    for (i, l) in LETTERS.iter().enumerate().take(4) {
        let name = format!("lettre-{i}.png");
        let p = work.path().join(&name);
        render(&p, "png", 300, &[l.page()]);
        files.push((name, p));
    }
    for (name, p) in &files {
        drop_into_inbox(&inbox, p, name);
    }
    // Crash as soon as the first letter is through, the others in flight.
    eventually("a first letter done", Duration::from_secs(60), || async {
        (count(&done) >= 1).then_some(())
    })
    .await;
    process.kill().await;
    let before = count(&done);
    assert!(
        before < 4,
        "letters still in flight at the crash ({before} done)"
    );

    // The restarted process logs at the production level, to a file: no
    // name, address, phone, email or text of a letter may appear in it.
    let log = work.path().join("guichet.log");
    let with_logs = [
        ("GUICHET__SCAN__CONCURRENCY", "1"),
        ("GUICHET__TELEMETRY__LOG_FILTER", "info"),
    ];
    let process = env
        .spawn_process_logging(&["ingress-scan", "dossier"], &with_logs, &log)
        .await;
    eventually("every letter done", Duration::from_secs(90), || async {
        (count(&done) == 4 && count(&inbox) == 0).then_some(())
    })
    .await;
    // A letter read before the crash, scanned again: recognised, moved, not re-published.
    drop_into_inbox(&inbox, &files[0].1, "lettre-0-rescan.png");
    eventually("the rescan set aside", Duration::from_secs(30), || async {
        (count(&done) == 5 && count(&inbox) == 0).then_some(())
    })
    .await;

    let events = intake_events(&env, 4).await;
    let ids: HashSet<&str> = events.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids.len(), 4, "one intake event per letter: {:?}", ids);
    let mut per_letter: HashMap<&str, usize> = HashMap::new();
    for (_, e) in &events {
        *per_letter
            .entry(e.attachments[0].sha256.as_str())
            .or_default() += 1;
        assert_eq!(
            header(
                &events.iter().find(|(_, x)| x.id == e.id).expect("event").0,
                "Nats-Msg-Id"
            ),
            e.id
        );
    }
    assert_eq!(per_letter.len(), 4);
    assert!(per_letter.values().all(|n| *n == 1), "{per_letter:?}");
    let refs: HashSet<&str> = events
        .iter()
        .map(|(_, e)| e.quoted_reference.as_str())
        .collect();
    let expected: HashSet<&str> = LETTERS.iter().take(4).map(|l| l.reference).collect();
    assert_eq!(refs, expected);

    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let list = scan_client(process.grpc_addr, &agent)
        .await
        .list_scan_files(spb::ListScanFilesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.scan_files.len(), 4, "one record per letter");
    assert!(
        list.scan_files
            .iter()
            .all(|f| f.state == spb::ScanState::Published as i32)
    );
    let (_, metrics) = http_get(process.admin_addr, "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics.contains("guichet_scan_files_total{outcome=\"duplicate\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("guichet_scan_ocr_duration_seconds"),
        "{metrics}"
    );
    process.terminate().await;
    let logs = std::fs::read_to_string(&log).expect("logs");
    assert!(logs.contains("scan published"), "{logs}");
    for l in LETTERS.iter().take(4) {
        for personal in [
            l.family, l.given, l.street, l.phone, l.email, l.subject, l.city,
        ] {
            assert!(
                !logs.contains(personal),
                "`{personal}` in the logs:\n{logs}"
            );
        }
    }
    assert!(
        !logs.contains("Madame, Monsieur"),
        "letter text in the logs"
    );
    env.cleanup().await;
}

/// The narrowest crash window: the file's record and its intake event were
/// committed (the outbox) but the process died before publishing and before
/// moving the file. On restart the file is recognised by its SHA-256, the
/// staged event is published (once, with its own id) and only then is the
/// file moved to done/; it is not read again.
#[tokio::test]
async fn a_letter_committed_but_not_published_before_a_crash_is_published_once_then_moved() {
    use guichet_platform::bus::{Bus, OutgoingEvent};
    use guichet_platform::outbox::{Outbox, Staged};
    use guichet_testkit::proto::intake::v1 as ipb;
    use prost::Message;
    use sea_orm::ConnectionTrait;

    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let config = env.config();
    guichet::migrate(&config, &[guichet::Role::IngressScan])
        .await
        .expect("migrate");
    let work = tempfile::tempdir().expect("tempdir");
    let letter = work.path().join("lettre.png");
    render(&letter, "png", 300, &[LETTERS[0].page()]);
    let bytes = std::fs::read(&letter).expect("letter");
    let sha = guichet_platform::objects::sha256_hex(&bytes);

    // What the crashed process had committed: the record and the staged event.
    let db = guichet_platform::db::connect(&config.scan.database_url, &config.database)
        .await
        .expect("scan database");
    let (file_id, event_id) = (
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    );
    let now = chrono::Utc::now().to_rfc3339();
    db.execute_unprepared(&format!(
        "INSERT INTO scan_files (id, sha256, filename, media_type, size_bytes, source, batch_id, \
         state, reason, detail, intake_event_id, page_count, ocr_confidence, release_count, \
         received_at, updated_at) VALUES ('{file_id}', '{sha}', 'lettre.png', 'image/png', {}, \
         'folder', '', 'published', NULL, '', '{event_id}', 1, 0.9, 0, '{now}', '{now}')",
        bytes.len()
    ))
    .await
    .expect("insert the record");
    let bus = Bus::connect(&config.bus, "guichet/test")
        .await
        .expect("bus");
    bus.ensure_stream(guichet_platform::bus::StreamKind::Intake)
        .await
        .expect("stream");
    let outbox = Outbox::new(db.clone(), bus.clone());
    let event = ipb::IntakeEvent {
        id: event_id.clone(),
        channel: ipb::Channel::Scan as i32,
        subject: "staged before the crash".into(),
        ..Default::default()
    };
    outbox
        .stage(
            &db,
            &Staged {
                nats_subject: bus.subject("intake.scan"),
                event: OutgoingEvent {
                    id: event_id.clone(),
                    ty: "guichet.intake.v1.intake_event".into(),
                    subject: format!("scanFiles/{file_id}"),
                    time: chrono::Utc::now(),
                    body: event.encode_to_vec().into(),
                },
            },
        )
        .await
        .expect("stage");
    drop(db);
    drop_into_inbox(&env.scan_dir().join("inbox"), &letter, "lettre.png");

    let app = env.spawn(&[guichet::Role::IngressScan]).await;
    let done = env.scan_dir().join("done").join("lettre.png");
    eventually(
        "the letter moved to done/",
        Duration::from_secs(30),
        || async { done.exists().then_some(()) },
    )
    .await;
    let events = intake_events(&env, 1).await;
    assert_eq!(events.len(), 1, "published once, not read again");
    assert_eq!(events[0].1.id, event_id);
    assert_eq!(events[0].1.subject, "staged before the crash");
    app.stop().await.expect("stop");
    env.cleanup().await;
}

/// Two replicas watching the same share (Kubernetes, PostgreSQL): each
/// letter is still exactly one request.
#[tokio::test]
async fn two_replicas_on_one_share_make_each_letter_one_request_on_postgres() {
    let Some(env) = TestEnv::new(Backend::Postgres).await else {
        return;
    };
    let a = env.spawn_process(&["ingress-scan"], &[]).await;
    let b = env.spawn_process(&["ingress-scan"], &[]).await;
    let work = tempfile::tempdir().expect("tempdir");
    let inbox = env.scan_dir().join("inbox");
    let done = env.scan_dir().join("done");
    for (i, l) in LETTERS.iter().enumerate().take(3) {
        let name = format!("lettre-{i}.pdf");
        let p = work.path().join(&name);
        render(&p, "pdf_text", 300, &[l.page()]);
        drop_into_inbox(&inbox, &p, &name);
    }
    eventually("every letter done", Duration::from_secs(60), || async {
        (count(&done) == 3 && count(&inbox) == 0).then_some(())
    })
    .await;
    let events = intake_events(&env, 3).await;
    let ids: HashSet<&str> = events.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "one intake event per letter");
    let shas: HashSet<&str> = events
        .iter()
        .map(|(_, e)| e.attachments[0].sha256.as_str())
        .collect();
    assert_eq!(shas.len(), 3);
    a.terminate().await;
    b.terminate().await;
    env.cleanup().await;
}
