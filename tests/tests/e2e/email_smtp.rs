//! Citizens' mail delivered over SMTP and LMTP by a real client (Python's
//! smtplib, or raw LMTP over TCP) becomes intake events: a corpus of
//! real-world-shaped messages (charsets, HTML-only, attachments, forwarded,
//! TNEF, automatic mail, bounces, replies) checked field by field; the
//! limits (unknown domain, message size) and duplicates.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use guichet::{GuichetConfig, Role, RunningApp};
use guichet_testkit::email::{fixture, fixtures_dir, send};
use guichet_testkit::proto::intake::v1 as ipb;
use guichet_testkit::*;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const CITY: &str = "contact@ville.fr";

/// The email role alone, its SMTP and LMTP listeners on free ports.
pub struct EmailUnderTest {
    pub app: RunningApp,
    pub smtp: std::net::SocketAddr,
    pub lmtp: std::net::SocketAddr,
}

pub fn email_config(
    env: &TestEnv,
    extra: &[(&str, &str)],
) -> (GuichetConfig, std::net::SocketAddr, std::net::SocketAddr) {
    let smtp: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let lmtp: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (s, l) = (smtp.to_string(), lmtp.to_string());
    let mut overrides: Vec<(&str, &str)> = vec![
        ("GUICHET__EMAIL__SMTP_ADDRS", s.as_str()),
        ("GUICHET__EMAIL__LMTP_ADDRS", l.as_str()),
        ("GUICHET__EMAIL__ACCEPTED_DOMAINS", "ville.fr"),
        ("GUICHET__EMAIL__HOSTNAME", "guichet.test"),
    ];
    overrides.extend_from_slice(extra);
    (env.config_with(&overrides), smtp, lmtp)
}

pub async fn spawn_email(env: &TestEnv, roles: &[Role], extra: &[(&str, &str)]) -> EmailUnderTest {
    let (config, smtp, lmtp) = email_config(env, extra);
    let app = env.spawn_with(roles, config).await;
    EmailUnderTest { app, smtp, lmtp }
}

/// The email intake events on this test's INTAKE stream, once there are `n`.
pub async fn email_events(env: &TestEnv, n: usize) -> Vec<ipb::IntakeEvent> {
    env.stream_messages("INTAKE", n)
        .await
        .into_iter()
        .map(|(_, body)| ipb::IntakeEvent::decode(body).expect("intake event"))
        .filter(|e| e.channel() == ipb::Channel::Email)
        .collect()
}

pub fn details(e: &ipb::IntakeEvent) -> &ipb::EmailDetails {
    match &e.details {
        Some(ipb::intake_event::Details::Email(d)) => d,
        other => panic!("not an email event: {other:?}"),
    }
}

/// The corpus files (`NN-name.eml`), sorted.
pub fn corpus() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files
}

/// A message with a 30 MB PDF attachment (above the part limit, below the
/// message limit) and a small PNG that must still be kept.
fn oversized_attachment(dir: &std::path::Path) -> PathBuf {
    let big = vec![b'%'; 30 * 1000 * 1000];
    let b64 = |data: &[u8]| {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::with_capacity(data.len() * 4 / 3 + data.len() / 57 * 2 + 4);
        for (i, c) in data.chunks(3).enumerate() {
            if i > 0 && i % 19 == 0 {
                out.push_str("\r\n");
            }
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..4 {
                if k <= c.len() {
                    out.push(T[((n >> (18 - 6 * k)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    let msg = format!(
        "From: Hélène Lefèvre <helene.lefevre@example.fr>\r\nTo: {CITY}\r\nSubject: Plans du permis de construire (30 Mo)\r\n\
         Message-ID: <c14-oversized@example.fr>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"big\"\r\n\r\n\
         --big\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nVoici les plans (fichier volumineux) et une photo.\r\n\
         --big\r\nContent-Type: application/pdf; name=\"plans.pdf\"\r\nContent-Disposition: attachment; filename=\"plans.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --big\r\nContent-Type: image/png; name=\"facade.png\"\r\nContent-Disposition: attachment; filename=\"facade.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--big--\r\n",
        b64(&big),
        b64(b"\x89PNG\r\n\x1a\nnot-really-but-small"),
    );
    let p = dir.join("14-oversized-attachment.eml");
    std::fs::write(&p, msg).unwrap();
    p
}

#[tokio::test]
async fn email_corpus_over_smtp_becomes_intake_events_field_by_field() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let email = spawn_email(
        &env,
        &[Role::IngressEmail],
        &[("GUICHET__EMAIL__MAX_MESSAGE_BYTES", "50000000")],
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let mut files = corpus();
    files.push(oversized_attachment(work.path()));
    assert!(files.len() >= 28, "corpus of {} messages", files.len());

    let sent = send(
        email.smtp,
        false,
        None,
        "sender@example.org",
        &[CITY],
        &files,
    )
    .await;
    for (f, s) in files.iter().zip(&sent) {
        assert_eq!(s.code, 250, "{}: {s:?}", f.display());
    }
    let events = email_events(&env, files.len()).await;
    assert_eq!(events.len(), files.len(), "one intake event per message");
    let by_subject: HashMap<String, &ipb::IntakeEvent> =
        events.iter().map(|e| (e.subject.clone(), e)).collect();
    let get = |s: &str| -> &ipb::IntakeEvent {
        by_subject
            .get(s)
            .unwrap_or_else(|| panic!("no event with subject {s:?}; have {:?}", by_subject.keys()))
    };

    // Plain UTF-8, with the sender as citizen hint.
    let e = get("Demande d'acte de naissance");
    assert!(
        e.body.contains("copie intégrale de mon acte de naissance"),
        "{}",
        e.body
    );
    let hint = e.citizen.as_ref().unwrap();
    assert_eq!(hint.emails, vec!["helene.lefevre@example.fr"]);
    assert_eq!(
        (hint.given_name.as_str(), hint.family_name.as_str()),
        ("Hélène", "Lefèvre")
    );
    let d = details(e);
    assert_eq!(d.message_id, "c01@example.fr");
    assert_eq!(d.source, "smtp");
    assert_eq!(d.mailbox, CITY);
    assert!(!d.auto_submitted);
    assert_eq!(d.raw_sha256.len(), 64);
    assert!(d.email_message.starts_with("emailMessages/"));

    // multipart/alternative: the text part, QP decoded.
    let e = get("Inscription à la cantine");
    assert!(
        e.body
            .contains("inscrire ma fille à la cantine scolaire à partir du 1er décembre"),
        "{}",
        e.body
    );
    assert!(!e.body.contains("<p>"));
    // HTML only: readable text, no tags, no style.
    let e = get("Lampadaire en panne");
    assert!(
        e.body.contains("rue des Écoles") && e.body.contains("est en panne"),
        "{}",
        e.body
    );
    assert!(
        !e.body.contains('<') && !e.body.contains("color:red"),
        "{}",
        e.body
    );
    // Charsets and encoded headers.
    let e = get("Problème de poubelles");
    assert!(e.body.contains("n'ont pas été ramassées"), "{}", e.body);
    assert_eq!(e.citizen.as_ref().unwrap().given_name, "François");
    let e = get("Tarif de la salle des fetes");
    assert!(e.body.contains("150 € la journée"), "{}", e.body);
    let e = get("Demande de rendez-vous");
    assert!(
        e.body
            .contains("J’aimerais un rendez-vous pour mon passeport – c’est urgent, mon œuvre"),
        "{}",
        e.body
    );
    let e = get("État-civil : demande de livret de famille");
    assert!(
        e.body.contains("duplicata du livret de famille"),
        "{}",
        e.body
    );
    assert_eq!(e.citizen.as_ref().unwrap().given_name, "Anaïs");

    // Attachments to the object store, addressed by SHA-256.
    let objects = env.dir.path().join("objects");
    let stored = |a: &ipb::AttachmentRef| {
        let found = walk(&objects)
            .into_iter()
            .any(|p| p.to_string_lossy().contains(&a.sha256));
        assert!(found, "{} not in the object store", a.filename);
    };
    for (subject, filename, media_type) in [
        (
            "Justificatif de domicile",
            "facture-edf.pdf",
            "application/pdf",
        ),
        ("Photo du nid-de-poule", "photo.png", "image/png"),
        (
            "Attestation employeur",
            "attestation.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("Tag sur le mur de l'école", "image001.png", "image/png"),
    ] {
        let e = get(subject);
        assert_eq!(e.attachments.len(), 1, "{subject}: {:?}", e.attachments);
        let a = &e.attachments[0];
        assert_eq!(
            (a.filename.as_str(), a.media_type.as_str()),
            (filename, media_type),
            "{subject}"
        );
        assert!(a.size_bytes > 0);
        stored(a);
    }
    // Forwarded message: kept as .eml, its text readable, its subject reported.
    let e = get("Fwd: Avis de passage");
    assert_eq!(details(e).forwarded_subjects, vec!["Avis de passage"]);
    assert!(
        e.body.contains("Votre titre est disponible en mairie"),
        "{}",
        e.body
    );
    assert_eq!(e.attachments[0].media_type, "message/rfc822");
    // TNEF recognised and reported.
    let e = get("Dossier de permis de construire");
    assert!(details(e).tnef);
    assert_eq!(e.attachments[0].filename, "winmail.dat");
    // A forbidden part is rejected with its reason; the rest is accepted.
    let e = get("Formulaire rempli");
    assert_eq!(e.attachments.len(), 1);
    assert_eq!(e.attachments[0].filename, "formulaire.pdf");
    let r = &details(e).rejected_parts;
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].filename.as_str(), r[0].reason.as_str()),
        ("programme.exe", "forbidden_type")
    );
    // 30 MB attachment: rejected as too large, the small one kept.
    let e = get("Plans du permis de construire (30 Mo)");
    let r = &details(e).rejected_parts;
    assert_eq!(
        (r[0].filename.as_str(), r[0].reason.as_str()),
        ("plans.pdf", "too_large")
    );
    assert_eq!(e.attachments.len(), 1);
    assert_eq!(e.attachments[0].filename, "facade.png");

    // Automatic mail: recorded, flagged, with the reason.
    for (subject, reason) in [
        ("Réponse automatique : Absence du bureau", "auto-submitted"),
        ("[Lettre d'info] Novembre 2026", "list"),
        ("Re: Accusé de réception", "x-loop"),
        ("Promotion exceptionnelle", "precedence-bulk"),
        ("Undelivered Mail Returned to Sender", "bounce"),
    ] {
        let d = details(get(subject));
        assert!(d.auto_submitted, "{subject}");
        assert_eq!(d.auto_reason, reason, "{subject}");
    }
    let dsn = details(get("Undelivered Mail Returned to Sender"));
    assert!(dsn.bounce);
    assert_eq!(dsn.bounced_recipient, "inconnu@example.org");
    assert_eq!(dsn.bounce_status, "5.1.1");
    assert!(get("Undelivered Mail Returned to Sender").citizen.is_none());
    // A noreply sender is a person's mail for the timeline (only never acknowledged).
    assert!(!details(get("Votre colis")).auto_submitted);

    // References: subject first, then body.
    let e = get("Re: Votre demande [VIN-2026-000123]");
    assert_eq!(e.quoted_reference, "VIN-2026-000123");
    assert_eq!(details(e).reference_source, "subject");
    assert_eq!(details(e).in_reply_to, "unknown-c18@guichet.localhost");
    // In-Reply-To a message received but not yet placed in a dossier
    // (routing is not running here): no reference yet, the header kept
    // for routing's own thread correlation.
    let e = get("Complément à ma demande");
    assert_eq!(e.quoted_reference, "");
    assert_eq!(details(e).in_reply_to, "c01@example.fr");
    let e = get("Suite de mon dossier");
    assert_eq!(e.quoted_reference, "VIN-2026-000456");
    assert_eq!(details(e).reference_source, "body");

    // Replies: quoted history and signature stripped from what agents read.
    let e = get("Re: Pièce manquante");
    assert_eq!(
        e.body,
        "Bonjour,\n\nMa réponse : je passerai mardi en mairie."
    );
    // The signature's phone is kept on the citizen hint (issue 14).
    assert_eq!(e.citizen.as_ref().unwrap().phones, vec!["+33612345678"]);
    let e = get("RE: Demande de subvention");
    assert_eq!(
        e.body,
        "Bonjour, je confirme la demande pour l'association."
    );

    // Malformed headers, an empty body, no Message-ID: still one request each.
    let broken = events
        .iter()
        .find(|e| e.body.contains("Texte avec des en-têtes cassés"))
        .expect("malformed message");
    assert!(details(broken).message_id.is_empty());
    let e = get("Sans texte");
    assert!(e.body.is_empty());
    assert!(
        details(get("Message sans identifiant"))
            .message_id
            .is_empty()
    );

    email.app.stop().await.unwrap();
    env.cleanup().await;
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn duplicates_publish_one_event(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let email = spawn_email(&env, &[Role::IngressEmail], &[]).await;
    let with_id = fixture("01-simple-utf8.eml");
    let without_id = fixture("29-no-message-id.eml");
    // An SMTP retry, and a second relay, of the same two messages.
    for _ in 0..2 {
        let sent = send(
            email.smtp,
            false,
            None,
            "sender@example.org",
            &[CITY],
            &[with_id.clone(), without_id.clone()],
        )
        .await;
        assert!(sent.iter().all(|s| s.code == 250), "{sent:?}");
    }
    let sent = send(
        email.lmtp,
        true,
        None,
        "sender@example.org",
        &[CITY],
        std::slice::from_ref(&with_id),
    )
    .await;
    assert_eq!(sent[0].code, 250);
    let events = email_events(&env, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events_after = email_events(&env, 2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events_after.len(), 2);
    email.app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn email_duplicate_deliveries_publish_one_intake_event_sqlite() {
    duplicates_publish_one_event(Backend::Sqlite).await;
}

#[tokio::test]
async fn email_duplicate_deliveries_publish_one_intake_event_postgres() {
    duplicates_publish_one_event(Backend::Postgres).await;
}

#[tokio::test]
async fn email_unknown_domains_are_refused_at_rcpt_and_big_messages_with_552() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let email = spawn_email(
        &env,
        &[Role::IngressEmail],
        &[("GUICHET__EMAIL__MAX_MESSAGE_BYTES", "20000")],
    )
    .await;
    let msg = fixture("01-simple-utf8.eml");
    // Only a foreign domain: refused, nothing published.
    let sent = send(
        email.smtp,
        false,
        None,
        "a@example.org",
        &["someone@ailleurs.fr"],
        std::slice::from_ref(&msg),
    )
    .await;
    assert_eq!(sent[0].code, 550, "{sent:?}");
    assert_eq!(sent[0].refused.get("someone@ailleurs.fr"), Some(&550));
    // Several recipients, one foreign: the message is taken for the others.
    let sent = send(
        email.smtp,
        false,
        None,
        "a@example.org",
        &[CITY, "etat-civil@ville.fr", "x@ailleurs.fr"],
        std::slice::from_ref(&msg),
    )
    .await;
    assert_eq!(sent[0].code, 250, "{sent:?}");
    assert_eq!(sent[0].refused.len(), 1);
    assert_eq!(sent[0].refused.get("x@ailleurs.fr"), Some(&550));
    // Too big: 552 after DATA.
    let big = tempfile::tempdir().unwrap();
    let p = big.path().join("big.eml");
    std::fs::write(&p, format!("From: a@example.org\r\nTo: {CITY}\r\nSubject: gros\r\nMessage-ID: <big@example.org>\r\n\r\n{}\r\n", "x".repeat(60) .repeat(600).chars().collect::<Vec<_>>().chunks(60).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("\r\n"))).unwrap();
    let sent = send(email.smtp, false, None, "a@example.org", &[CITY], &[p]).await;
    assert_eq!(sent[0].code, 552, "{sent:?}");
    // The listener advertises its limit (SIZE) and refuses a declared size above it.
    let mut s = tokio::net::TcpStream::connect(email.smtp).await.unwrap();
    let (r, mut w) = s.split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220 "), "{line}");
    w.write_all(b"EHLO client.example.org\r\n").await.unwrap();
    let mut ehlo = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        ehlo.push(line.trim().to_owned());
        if line.starts_with("250 ") {
            break;
        }
    }
    assert!(ehlo.iter().any(|l| l.ends_with("SIZE 20000")), "{ehlo:?}");
    w.write_all(b"MAIL FROM:<a@example.org> SIZE=999999\r\n")
        .await
        .unwrap();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("552 "), "{line}");
    w.write_all(b"QUIT\r\n").await.unwrap();

    let events = email_events(&env, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        email_events(&env, 1).await.len(),
        1,
        "only the accepted message is published"
    );
    assert_eq!(details(&events[0]).mailbox, CITY);
    email.app.stop().await.unwrap();
    env.cleanup().await;
}

/// Read one reply (possibly multi-line) from an SMTP/LMTP server.
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] == b' ' {
            return all;
        }
    }
}

#[tokio::test]
async fn email_lmtp_answers_the_end_of_data_once_per_accepted_recipient() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let email = spawn_email(&env, &[Role::IngressEmail], &[]).await;
    let s = tokio::net::TcpStream::connect(email.lmtp).await.unwrap();
    let (r, mut w) = tokio::io::split(s);
    let mut r = BufReader::new(r);
    assert!(reply(&mut r).await.starts_with("220 "));
    w.write_all(b"EHLO mx.ville.fr\r\n").await.unwrap();
    assert!(reply(&mut r).await.starts_with("500 "), "LMTP wants LHLO");
    w.write_all(b"LHLO mx.ville.fr\r\n").await.unwrap();
    assert!(reply(&mut r).await.contains("250"));
    for (cmd, expect) in [
        ("MAIL FROM:<helene.lefevre@example.fr>\r\n", "250 "),
        ("RCPT TO:<contact@ville.fr>\r\n", "250 "),
        ("RCPT TO:<nobody@ailleurs.fr>\r\n", "550 "),
        ("RCPT TO:<etat-civil@ville.fr>\r\n", "250 "),
        ("DATA\r\n", "354 "),
    ] {
        w.write_all(cmd.as_bytes()).await.unwrap();
        let got = reply(&mut r).await;
        assert!(got.starts_with(expect), "{cmd}: {got}");
    }
    let raw = std::fs::read(fixture("02-alternative.eml")).unwrap();
    w.write_all(&raw).await.unwrap();
    w.write_all(b".\r\n").await.unwrap();
    // One reply per accepted recipient.
    let first = reply(&mut r).await;
    let second = reply(&mut r).await;
    assert!(
        first.starts_with("250 ") && second.starts_with("250 "),
        "{first}{second}"
    );
    w.write_all(b"QUIT\r\n").await.unwrap();
    assert!(reply(&mut r).await.starts_with("221 "));
    let events = email_events(&env, 1).await;
    assert_eq!(details(&events[0]).source, "lmtp");
    assert_eq!(details(&events[0]).mailbox, "contact@ville.fr");
    email.app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn email_starttls_with_the_configured_certificate() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let email = spawn_email(
        &env,
        &[Role::IngressEmail],
        &[
            ("GUICHET__EMAIL__TLS_CERT_FILE", c.as_str()),
            ("GUICHET__EMAIL__TLS_KEY_FILE", k.as_str()),
        ],
    )
    .await;
    let sent = send(
        email.smtp,
        false,
        Some(&cert),
        "a@example.org",
        &[CITY],
        &[fixture("07-pdf-attachment.eml")],
    )
    .await;
    assert_eq!(sent[0].code, 250, "{sent:?}");
    assert!(sent[0].tls.starts_with("TLSv1."), "{sent:?}");
    let events = email_events(&env, 1).await;
    assert_eq!(events[0].attachments.len(), 1);
    email.app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn email_smtp_answers_451_until_jetstream_holds_the_event_and_the_retry_publishes_once() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let (config, smtp, _) = email_config(&env, &[]);
    let app = env.spawn_with(&[Role::IngressEmail], config.clone()).await;
    // JetStream refuses the event: the relay must keep the message (451).
    let js = async_nats::jetstream::new(env.nats().await);
    js.delete_stream(env.stream("INTAKE")).await.unwrap();
    let msg = fixture("08-png-attachment.eml");
    let sent = send(
        smtp,
        false,
        None,
        "a@example.org",
        &[CITY],
        std::slice::from_ref(&msg),
    )
    .await;
    assert_eq!(sent[0].code, 451, "{sent:?}");
    app.stop().await.unwrap();
    // The role starts again (declaring its stream); the relay retries.
    let app = env.spawn_with(&[Role::IngressEmail], config).await;
    let sent = send(
        smtp,
        false,
        None,
        "a@example.org",
        &[CITY],
        std::slice::from_ref(&msg),
    )
    .await;
    assert_eq!(sent[0].code, 250, "{sent:?}");
    let events = email_events(&env, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        email_events(&env, 1).await.len(),
        1,
        "published exactly once"
    );
    assert_eq!(details(&events[0]).message_id, "c08@example.fr");
    app.stop().await.unwrap();
    env.cleanup().await;
}
