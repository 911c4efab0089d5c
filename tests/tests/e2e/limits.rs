//! What a stranger can send is bounded: SMTP sessions per client address, a
//! burst from one sender, half-sent HTTP requests; and a sender is trusted
//! only as far as the town's relay verified it.

use std::time::Duration;

use guichet::Role;
use guichet_testkit::proto::routing::v1 as rpb;
use guichet_testkit::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::email_smtp::spawn_email;

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The first reply line of an SMTP server.
async fn greeting(stream: &mut TcpStream) -> String {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("a greeting within 5 s")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Deliver one message over SMTP with a minimal client; the final reply code.
pub(crate) async fn deliver(
    addr: std::net::SocketAddr,
    from: &str,
    headers: &str,
    body: String,
) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
        let mut last = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return last;
            }
            let done = line.as_bytes().get(3) == Some(&b' ');
            last = line;
            if done {
                return last;
            }
        }
    }
    reply(&mut r).await;
    for cmd in [
        "EHLO client.exemple.fr\r\n".to_owned(),
        format!("MAIL FROM:<{from}>\r\n"),
        "RCPT TO:<contact@ville.fr>\r\n".to_owned(),
        "DATA\r\n".to_owned(),
    ] {
        w.write_all(cmd.as_bytes()).await.unwrap();
        reply(&mut r).await;
    }
    let id = uuid::Uuid::now_v7();
    let msg = format!(
        "{headers}From: {from}\r\nTo: contact@ville.fr\r\nSubject: Demande d'acte de naissance\r\nMessage-ID: <{id}@exemple.fr>\r\nDate: Mon, 7 Dec 2026 09:00:00 +0100\r\n\r\n{body}\r\n.\r\n"
    );
    w.write_all(msg.as_bytes()).await.unwrap();
    let code = reply(&mut r).await;
    let _ = w.write_all(b"QUIT\r\n").await;
    code
}

#[tokio::test]
async fn three_hundred_idle_smtp_connections_from_one_address_leave_another_client_served() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let email = spawn_email(&env, &[Role::IngressEmail], &[]).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        let mut s = connect_from("127.0.0.1", email.smtp).await;
        let hello = greeting(&mut s).await;
        if hello.starts_with("421") {
            refused += 1;
        } else {
            assert!(hello.starts_with("220"), "{hello}");
        }
        held.push(s);
    }
    // One address holds its share (20 by default), not every session.
    assert_eq!(refused, 280, "{refused} of 300 refused");
    // Another client is served while they sit there.
    let mut other = connect_from("127.0.0.2", email.smtp).await;
    let hello = greeting(&mut other).await;
    assert!(hello.starts_with("220"), "{hello}");
    let metrics = reqwest::get(format!("http://{}/metrics", email.app.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with("guichet_email_sessions_refused_total{reason=\"address_full\"} 280")),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("sessions_refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(held);
    email.app.stop().await.unwrap();
    env.cleanup().await;
}

async fn items_of(grpc: std::net::SocketAddr, token: &str) -> Vec<rpb::WorkItem> {
    queue_client(grpc, token)
        .await
        .list_work_items(rpb::ListWorkItemsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items
}

#[tokio::test]
async fn a_burst_from_one_sender_waits_as_one_work_item() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let email = spawn_email(
        &env,
        &[Role::IngressEmail, Role::Routing, Role::Dossier],
        &[("GUICHET__EMAIL__SENDER_BURST_MAX", "1")],
    )
    .await;
    let grpc = email.app.grpc_addr;
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);
    let code = deliver(
        email.smtp,
        "robot@exemple.fr",
        "",
        "Bonjour, je souhaite un acte de naissance.".into(),
    )
    .await;
    assert!(code.starts_with("250"), "{code}");
    let first = eventually("the first work item", Duration::from_secs(30), || async {
        let items = items_of(grpc, &supervisor).await;
        (items.len() == 1).then(|| items[0].clone())
    })
    .await;
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    // Then 15 more at once: each accepted (nothing is lost), none queued.
    let sends = (0..15).map(|i| {
        deliver(
            email.smtp,
            "robot@exemple.fr",
            "",
            format!("Relance n° {i} : acte de naissance."),
        )
    });
    for code in futures::future::join_all(sends).await {
        assert!(code.starts_with("250"), "{code}");
    }
    let dossier = dossier_client(grpc, &supervisor).await;
    eventually(
        "the burst on the dossier's timeline",
        Duration::from_secs(60),
        || {
            let mut d = dossier.clone();
            let id = first.dossier_id.clone();
            async move {
                let entries = d
                    .list_dossier_timeline(
                        guichet_testkit::proto::dossier::v1::ListDossierTimelineRequest {
                            dossier_id: id,
                            page_size: 100,
                            ..Default::default()
                        },
                    )
                    .await
                    .ok()?
                    .into_inner()
                    .entries;
                let mails = entries
                    .iter()
                    .filter(|e| {
                        e.channel == guichet_testkit::proto::intake::v1::Channel::Email as i32
                    })
                    .count();
                (mails >= 16).then_some(())
            }
        },
    )
    .await;
    let items = items_of(grpc, &supervisor).await;
    assert_eq!(items.len(), 1, "{items:#?}");
    assert!(
        items[0].warnings.iter().any(|w| w.starts_with("Rafale")),
        "{:?}",
        items[0].warnings
    );
    email.app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_sender_is_trusted_only_as_far_as_the_towns_relay_verified_it() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let email = spawn_email(
        &env,
        &[Role::IngressEmail, Role::Routing, Role::Dossier],
        &[("GUICHET__EMAIL__TRUSTED_AUTHSERV_IDS", "mx.ville.fr")],
    )
    .await;
    let grpc = email.app.grpc_addr;
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);
    let pass = "Authentication-Results: mx.ville.fr; spf=pass smtp.mailfrom=exemple.fr;\r\n dkim=pass header.d=exemple.fr; dmarc=pass header.from=exemple.fr\r\n";
    // A header under another name is the sender's own words.
    let forged = "Authentication-Results: mx.exemple.fr; dmarc=pass header.from=exemple.fr\r\n";
    let outside = "Authentication-Results: mx.ville.fr; spf=fail smtp.mailfrom=ville.fr; dmarc=fail header.from=ville.fr\r\n";
    let wait = |n: usize| {
        let token = supervisor.clone();
        async move {
            eventually("work items", Duration::from_secs(30), || async {
                let items = items_of(grpc, &token).await;
                (items.len() == n).then_some(items)
            })
            .await
        }
    };
    // First message, verified: a new citizen, nothing to tell.
    deliver(
        email.smtp,
        "jean.dupont@exemple.fr",
        pass,
        "Premier message.".into(),
    )
    .await;
    let items = wait(1).await;
    assert!(items[0].warnings.is_empty(), "{:?}", items[0].warnings);
    let citizen = items[0].citizen_id.clone();
    // Then one only claiming a verification: matched to Jean's file, and
    // the agent is told the sender is not verified.
    deliver(
        email.smtp,
        "jean.dupont@exemple.fr",
        forged,
        "Second message.".into(),
    )
    .await;
    let items = wait(2).await;
    let second = items
        .iter()
        .find(|i| i.warnings.len() == 1)
        .expect("a warned item");
    assert_eq!(second.citizen_id, citizen);
    assert!(
        second.warnings[0].starts_with("Expéditeur non vérifié"),
        "{:?}",
        second.warnings
    );
    // Mail "from" the town hall, from outside: nobody's file, and said so.
    deliver(
        email.smtp,
        "maire@ville.fr",
        outside,
        "Virement urgent à effectuer.".into(),
    )
    .await;
    let items = wait(3).await;
    let spoof = items
        .iter()
        .find(|i| i.warnings.iter().any(|w| w.contains("possible usurpation")))
        .expect("the spoofed mail, warned");
    assert!(spoof.citizen_id.is_empty(), "{spoof:?}");
    email.app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_half_sent_http_request_is_closed() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&[Role::IngressCounter]).await;
    let addr = http_addr_of(&app, Role::IngressCounter);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /board/mairie/events HTTP/1.1\r\nHost: guichet\r\n")
        .await
        .unwrap();
    // The headers never end: the listener closes the connection (10 s
    // header-read timeout) instead of holding it.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the half-sent request was still held after 30 s"
    );
    // A complete request is served as before.
    let (status, _) = http_get_with(addr, "/nothing-here", &[]).await.unwrap();
    assert_eq!(status, 404);
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn mail_that_went_to_a_restricted_dossier_is_listed_only_for_its_group() {
    use guichet_testkit::proto::email::v1 as epb;
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let email = spawn_email(
        &env,
        &[Role::IngressEmail, Role::Routing, Role::Dossier],
        &[],
    )
    .await;
    let grpc = email.app.grpc_addr;
    let front = env.token("agent-2", &[TokenRole::Agent]);
    let social = env.token_in_groups("as-1", &[TokenRole::Agent], &["social"]);
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);
    let code = deliver(
        email.smtp,
        "marie.martin@exemple.fr",
        "",
        "Bonjour, je n'arrive plus à payer ma facture d'électricité, puis-je avoir une aide alimentaire du CCAS ?".into(),
    )
    .await;
    assert!(code.starts_with("250"), "{code}");
    let item = eventually("the CCAS work item", Duration::from_secs(30), || async {
        items_of(grpc, &supervisor).await.into_iter().next()
    })
    .await;
    assert_eq!(item.process_id, "aide-sociale-ccas", "{item:?}");
    let list = |token: String| async move {
        epb::email_service_client::EmailServiceClient::with_interceptor(
            channel(grpc).await,
            Bearer(token),
        )
        .list_email_messages(epb::ListEmailMessagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .email_messages
    };
    // The front desk does not see the CCAS request's mail, by any call.
    assert!(list(front.clone()).await.is_empty());
    // The social worker sees it (and the acknowledgement sent on it).
    let shown: Vec<_> = list(social.clone())
        .await
        .into_iter()
        .filter(|m| m.direction == epb::Direction::In as i32)
        .collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    let e = epb::email_service_client::EmailServiceClient::with_interceptor(
        channel(grpc).await,
        Bearer(front),
    )
    .get_email_message(epb::GetEmailMessageRequest {
        name: shown[0].name.clone(),
    })
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    email.app.stop().await.unwrap();
    env.cleanup().await;
}
