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
    let process = env.spawn_process(&["ingress-scan"], &one_at_a_time).await;
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
        .spawn_process_logging(&["ingress-scan"], &with_logs, &log)
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
