//! A real IMAP server (Dovecot, started for the test) holds the city's
//! mailbox: guichet fetches new messages, publishes them, and only then
//! moves them to the processed folder. With JetStream refusing the event,
//! the message stays in the inbox; after a crash and restart nothing is
//! published twice, and the logs carry no address, name or text.

use std::time::Duration;

use guichet_testkit::email::{Dovecot, IMAP_PASSWORD, IMAP_USER, fixture};
use guichet_testkit::*;

use crate::email_smtp::{details, email_events};

const PROCESSED: &str = "guichet-traites";

/// `minimal`: a server offering neither IDLE nor MOVE (interval polling,
/// COPY + \\Deleted + UID EXPUNGE).
async fn imap_flow(backend: Backend, minimal: bool) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let extra = if minimal {
        "imap_capability = IMAP4rev1 UIDPLUS"
    } else {
        ""
    };
    let Some(dovecot) = Dovecot::start_with(extra).await else {
        panic!(
            "Dovecot is not installed: run scripts/ensure-services.sh test (Debian package dovecot-imapd)"
        );
    };
    let port = dovecot.port.to_string();
    let imap: Vec<(&str, &str)> = vec![
        ("GUICHET__EMAIL__SMTP_ADDRS", ""),
        ("GUICHET__EMAIL__LMTP_ADDRS", ""),
        ("GUICHET__EMAIL__IMAP__HOST", "127.0.0.1"),
        ("GUICHET__EMAIL__IMAP__PORT", port.as_str()),
        ("GUICHET__EMAIL__IMAP__SECURITY", "plain"),
        ("GUICHET__EMAIL__IMAP__USERNAME", IMAP_USER),
        ("GUICHET__EMAIL__IMAP__PASSWORD", IMAP_PASSWORD),
        ("GUICHET__EMAIL__IMAP__PROCESSED_MAILBOX", PROCESSED),
        ("GUICHET__EMAIL__IMAP__POLL_INTERVAL_MS", "300"),
        ("GUICHET__TELEMETRY__LOG_FILTER", "info"),
    ];
    let work = tempfile::tempdir().unwrap();
    dovecot
        .append(
            "INBOX",
            &[
                fixture("01-simple-utf8.eml"),
                fixture("02-alternative.eml"),
                fixture("07-pdf-attachment.eml"),
            ],
        )
        .await;
    let log1 = work.path().join("first.log");
    let first = env
        .spawn_process_logging(&["ingress-email"], &imap, &log1)
        .await;

    // Fetched, published, then moved.
    let events = email_events(&env, 3).await;
    assert!(events.iter().all(|e| details(e).source == "imap"));
    eventually(
        "the inbox emptied into the processed folder",
        Duration::from_secs(30),
        || async {
            let (inbox, _) = dovecot.list("INBOX").await;
            let (done, _) = dovecot.list(PROCESSED).await;
            (inbox.is_empty() && done.len() == 3).then_some(())
        },
    )
    .await;

    // JetStream cannot take the event: the message stays where it is.
    let js = async_nats::jetstream::new(env.nats().await);
    js.delete_stream(env.stream("INTAKE")).await.unwrap();
    dovecot
        .append("INBOX", &[fixture("03-html-only.eml")])
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (inbox, deleted) = dovecot.list("INBOX").await;
    assert_eq!(
        inbox,
        vec!["<c03@example.fr>"],
        "not moved before publication"
    );
    assert_eq!(deleted, 0, "never flagged for deletion before publication");
    assert_eq!(dovecot.list(PROCESSED).await.0.len(), 3);

    // A crash; the same message delivered again to the mailbox meanwhile.
    first.kill().await;
    dovecot
        .append("INBOX", &[fixture("01-simple-utf8.eml")])
        .await;
    let log2 = work.path().join("second.log");
    let second = env
        .spawn_process_logging(&["ingress-email"], &imap, &log2)
        .await;
    eventually(
        "everything moved after the restart",
        Duration::from_secs(30),
        || async {
            let (inbox, _) = dovecot.list("INBOX").await;
            let (done, _) = dovecot.list(PROCESSED).await;
            (inbox.is_empty() && done.len() == 5).then_some(())
        },
    )
    .await;
    // The new stream holds the waiting message once, and no second copy of
    // the duplicate.
    let events = email_events(&env, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events_after = email_events(&env, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events_after.len(), 1);
    assert_eq!(details(&events[0]).message_id, "c03@example.fr");
    let (status, metrics) = http_get(second.admin_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("guichet_email_messages_total{outcome=\"duplicate\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("guichet_email_imap_moved_total"),
        "{metrics}"
    );
    second.terminate().await;

    // Ids and sizes in the logs, never the people or their words.
    for log in [&log1, &log2] {
        let text = std::fs::read_to_string(log).unwrap().to_lowercase();
        assert!(text.contains("email published") || log == &log2, "{text}");
        for secret in [
            "helene",
            "lefèvre",
            "lefevre",
            "acte de naissance",
            "cantine",
            IMAP_PASSWORD,
        ] {
            assert!(!text.contains(secret), "{secret} in {}", log.display());
        }
    }
    dovecot.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn email_imap_moves_only_after_publication_and_a_restart_publishes_nothing_twice_sqlite() {
    imap_flow(Backend::Sqlite, false).await;
}

#[tokio::test]
async fn email_imap_moves_only_after_publication_and_a_restart_publishes_nothing_twice_postgres() {
    imap_flow(Backend::Postgres, false).await;
}

#[tokio::test]
async fn email_imap_without_idle_nor_move_polls_and_copies_then_expunges() {
    imap_flow(Backend::Sqlite, true).await;
}

#[tokio::test]
async fn email_imap_over_implicit_tls_trusting_the_configured_ca() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    // A city CA and the IMAP server's certificate signed by it.
    let (cert, key, ca) = (
        certs.path().join("cert.pem"),
        certs.path().join("key.pem"),
        certs.path().join("ca.pem"),
    );
    std::fs::write(
        certs.path().join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=Ville-CA -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out req.csr",
        "x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem",
    ] {
        let out = std::process::Command::new("openssl")
            .args(args.split(' '))
            .current_dir(certs.path())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tls_port = free_port();
    let extra = format!(
        "ssl = yes\nssl_cert = <{}\nssl_key = <{}\nservice imap-login {{\n  inet_listener imaps {{\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n",
        cert.display(),
        key.display()
    );
    let Some(dovecot) = Dovecot::start_with(&extra).await else {
        panic!("Dovecot is not installed: run scripts/ensure-services.sh test");
    };
    dovecot
        .append("INBOX", &[fixture("24-encoded-headers.eml")])
        .await;
    let (port, ca) = (tls_port.to_string(), ca.display().to_string());
    let config = env.config_with(&[
        ("GUICHET__EMAIL__IMAP__HOST", "127.0.0.1"),
        ("GUICHET__EMAIL__IMAP__PORT", port.as_str()),
        ("GUICHET__EMAIL__IMAP__SECURITY", "tls"),
        ("GUICHET__EMAIL__IMAP__CA_FILE", ca.as_str()),
        ("GUICHET__EMAIL__IMAP__USERNAME", IMAP_USER),
        ("GUICHET__EMAIL__IMAP__PASSWORD", IMAP_PASSWORD),
        ("GUICHET__EMAIL__IMAP__POLL_INTERVAL_MS", "300"),
    ]);
    let app = env.spawn_with(&[guichet::Role::IngressEmail], config).await;
    let events = email_events(&env, 1).await;
    assert_eq!(
        events[0].subject,
        "État-civil : demande de livret de famille"
    );
    eventually("moved over TLS", Duration::from_secs(30), || async {
        let (done, _) = dovecot.list("guichet-traites").await;
        (done.len() == 1).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(dovecot.dir.path().join("dovecot.log")).unwrap();
    assert!(
        log.contains("method=PLAIN") && log.contains(", TLS,"),
        "{log}"
    );
    app.stop().await.unwrap();
    dovecot.stop().await;
    env.cleanup().await;
}
