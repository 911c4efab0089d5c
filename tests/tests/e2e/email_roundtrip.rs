//! The whole email loop across roles, with real peers on both ends: a
//! citizen's mail arrives over SMTP (Python smtplib), routing opens a
//! dossier, the acknowledgement is delivered by the notification role to a
//! real SMTP server (aiosmtpd) with the reference in the subject and the
//! threading headers, and the citizen's answer to that acknowledgement —
//! threaded by In-Reply-To alone — reaches the same dossier without a
//! second acknowledgement.

use std::time::Duration;

use guichet::Role;
use guichet_platform::auth::Role as AuthRole;
use guichet_testkit::email::{fixture, send};
use guichet_testkit::proto::email::v1 as epb;
use guichet_testkit::*;

use crate::email_smtp::{CITY, spawn_email};

#[tokio::test]
async fn email_request_is_acknowledged_over_smtp_and_the_citizens_answer_threads_back() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let outbound = SmtpSink::start(env.dir.path()).await;
    let port = outbound.port.to_string();
    let email = spawn_email(
        &env,
        &[
            Role::Dossier,
            Role::Routing,
            Role::IngressEmail,
            Role::Notification,
        ],
        &[
            ("GUICHET__NOTIFICATION__EMAIL__TRANSPORT", "smtp"),
            ("GUICHET__NOTIFICATION__EMAIL__SMTP_HOST", "127.0.0.1"),
            ("GUICHET__NOTIFICATION__EMAIL__SMTP_PORT", port.as_str()),
            (
                "GUICHET__NOTIFICATION__EMAIL__FROM",
                "Mairie de Villeneuve <contact@ville.fr>",
            ),
        ],
    )
    .await;

    // 1. The citizen writes.
    let sent = send(
        email.smtp,
        false,
        None,
        "helene.lefevre@example.fr",
        &[CITY],
        &[fixture("01-simple-utf8.eml")],
    )
    .await;
    assert_eq!(sent[0].code, 250);

    // 2. The acknowledgement reaches her mail server, threaded.
    let raw = outbound.wait_for(1).await.remove(0);
    let ack = mail_parser::MessageParser::default()
        .parse(&raw)
        .expect("a MIME message");
    let subject = ack.subject().unwrap_or_default().to_owned();
    assert!(subject.contains("[VIN-"), "{subject}");
    let reference = subject
        .split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap()
        .to_owned();
    assert_eq!(ack.in_reply_to().as_text(), Some("c01@example.fr"));
    let auto = ack
        .header_raw("Auto-Submitted")
        .map(str::trim)
        .unwrap_or_default();
    assert_eq!(auto, "auto-replied");
    let to = ack
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(to, "helene.lefevre@example.fr");
    let body = ack.body_text(0).unwrap_or_default().to_string();
    assert!(body.contains(&reference), "{body}");
    let ack_id = ack.message_id().expect("a Message-ID").to_owned();

    // 3. She answers the acknowledgement; her mail client keeps only the
    // threading headers (no reference in the subject or the body).
    let work = tempfile::tempdir().unwrap();
    let answer = work.path().join("answer.eml");
    std::fs::write(
        &answer,
        format!(
            "From: Hélène Lefèvre <helene.lefevre@example.fr>\r\n\
             To: Mairie de Villeneuve <contact@ville.fr>\r\n\
             Subject: Re: votre message\r\n\
             Date: Tue, 04 Nov 2026 09:15:00 +0100\r\n\
             Message-ID: <answer-1@example.fr>\r\n\
             In-Reply-To: <{ack_id}>\r\n\
             References: <c01@example.fr> <{ack_id}>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\
             \r\n\
             Bonjour,\r\n\
             \r\n\
             Voici mon numéro de téléphone : 06 12 34 56 78.\r\n\
             \r\n\
             Hélène Lefèvre\r\n"
        ),
    )
    .unwrap();
    let sent = send(
        email.smtp,
        false,
        None,
        "helene.lefevre@example.fr",
        &[CITY],
        &[answer],
    )
    .await;
    assert_eq!(sent[0].code, 250);

    // 4. It lands in the same dossier.
    let token = env.token("agent-1", &[AuthRole::Agent]);
    let api = epb::email_service_client::EmailServiceClient::with_interceptor(
        channel(email.app.grpc_addr).await,
        Bearer(token),
    );
    let placed = |id: &'static str| {
        let api = api.clone();
        async move {
            eventually(
                &format!("{id} attached to a dossier"),
                Duration::from_secs(30),
                || {
                    let mut api = api.clone();
                    async move {
                        api.list_email_messages(epb::ListEmailMessagesRequest {
                            filter: "direction = IN".into(),
                            ..Default::default()
                        })
                        .await
                        .ok()?
                        .into_inner()
                        .email_messages
                        .into_iter()
                        .find(|m| m.message_id == id && !m.dossier_id.is_empty())
                    }
                },
            )
            .await
        }
    };
    let first = placed("c01@example.fr").await;
    let second = placed("answer-1@example.fr").await;
    assert_eq!(second.dossier_id, first.dossier_id);
    assert_eq!(second.dossier_reference, reference);

    // 5. No second acknowledgement for a follow-up: the queue shows the
    // answer routed, and the outbound server still holds one message.
    let queue = queue_client(
        email.app.grpc_addr,
        &env.token("agent-1", &[AuthRole::Agent]),
    )
    .await;
    eventually(
        "both requests in the queue",
        Duration::from_secs(30),
        || {
            let mut queue = queue.clone();
            async move {
                let items = queue
                    .list_work_items(proto::routing::v1::ListWorkItemsRequest {
                        page_size: 50,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .items;
                (items.len() >= 2).then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(outbound.messages().len(), 1, "one acknowledgement only");

    email.app.stop().await.unwrap();
    env.cleanup().await;
}
