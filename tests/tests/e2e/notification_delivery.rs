//! The notification role against real peers: an HTTP SMS provider served
//! by the test (failing, then accepting, then reporting delivery), a real
//! SMTP server (Python aiosmtpd), the development SMS sink read back as a
//! citizen reads their phone, the dossier role for reminders, and real
//! NATS JetStream and databases (SQLite and PostgreSQL for the store-level
//! behaviours). Retries use millisecond backoffs so nothing waits on
//! wall-clock time; no test asserts a duration.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guichet::Role;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::events::v1::ReminderDue;
use guichet_proto::intake::v1::CitizenHint;
use guichet_proto::notification::v1::{
    AddressUndeliverable, Attachment, ClearSuppressionRequest, GetNotificationRequest,
    ListNotificationsRequest, NotificationRequest, RetryNotificationRequest,
    notification_request::Target,
};
use guichet_testkit::{
    Backend, SmtpSink, TestEnv, TokenRole, dossier_client, eventually, header, http_addr_of,
    http_post, notification_client,
};
use mail_parser::MimeHeaders;
use prost::Message;
use tonic::Code;

const REPORT_TOKEN: &str = "report-token-0123456789";

async fn env_for(backend: Backend) -> Option<TestEnv> {
    let env = TestEnv::new(backend).await?;
    Some(env)
}

/// Fast retries and a known town; `extra` on top.
fn overrides<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("GUICHET__NOTIFICATION__WORKER_INTERVAL_MS", "50"),
        ("GUICHET__NOTIFICATION__BACKOFF_BASE_MS", "20"),
        ("GUICHET__NOTIFICATION__BACKOFF_MAX_SECS", "1"),
        ("GUICHET__NOTIFICATION__MAX_ATTEMPTS", "3"),
        ("GUICHET__TOWN__NAME", "Villeneuve"),
        ("GUICHET__NOTIFICATION__HTTP_ADDR", "127.0.0.1:0"),
        (
            "GUICHET__NOTIFICATION__SMS_HTTP__REPORT_TOKEN",
            REPORT_TOKEN,
        ),
    ];
    v.extend_from_slice(extra);
    v
}

fn sms(id: &str, phone: &str, template: &str, vars: &[(&str, &str)]) -> NotificationRequest {
    NotificationRequest {
        id: id.into(),
        target: Some(Target::Phone(phone.into())),
        template: template.into(),
        variables: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        dossier_id: "dossier-1".into(),
        requested_by: "test".into(),
        ..Default::default()
    }
}

fn code_sms(id: &str, phone: &str) -> NotificationRequest {
    sms(
        id,
        phone,
        "signature-code",
        &[
            ("code", "482915"),
            ("document", "Avenant au contrat de crèche"),
            ("minutes", "10"),
            ("link", "https://signature.villeneuve.example.fr/s/abc"),
        ],
    )
}

fn email(id: &str, to: &str) -> NotificationRequest {
    NotificationRequest {
        id: id.into(),
        target: Some(Target::Email(to.into())),
        template: "email-reponse-agent".into(),
        variables: [(
            "text".to_string(),
            "Bonjour Madame Lefèvre,\n\nVotre acte de naissance vous a été envoyé ce matin.\n\nCordialement,\nLe service État civil".to_string(),
        )]
        .into(),
        dossier_id: "dossier-2".into(),
        requested_by: "agent-1".into(),
        ..Default::default()
    }
}

type Client =
    guichet_proto::notification::v1::notification_service_client::NotificationServiceClient<
        guichet_testkit::Authed,
    >;

async fn status_of(
    c: &mut Client,
    id: &str,
) -> Option<guichet_proto::notification::v1::Notification> {
    c.get_notification(GetNotificationRequest { id: id.into() })
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn wait_status(
    c: &Client,
    id: &str,
    status: &str,
) -> guichet_proto::notification::v1::Notification {
    eventually(
        &format!("notification {id} to be {status}"),
        Duration::from_secs(30),
        || {
            let mut c = c.clone();
            let id = id.to_owned();
            let status = status.to_owned();
            async move { status_of(&mut c, &id).await.filter(|n| n.status == status) }
        },
    )
    .await
}

// ---- an HTTP SMS provider served by the test ---------------------------

#[derive(Clone, Default)]
struct Provider {
    /// (Authorization header, JSON body) of every call.
    calls: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    /// HTTP statuses to answer, in order; 200 once empty.
    plan: Arc<Mutex<VecDeque<u16>>>,
    /// Answer this status to every call (overrides the plan).
    always: Option<u16>,
}

impl Provider {
    async fn start(self) -> (SocketAddr, Provider) {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        async fn send(
            State(p): State<Provider>,
            headers: HeaderMap,
            axum::Json(body): axum::Json<serde_json::Value>,
        ) -> (StatusCode, axum::Json<serde_json::Value>) {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let n = {
                let mut calls = p.calls.lock().unwrap();
                calls.push((auth, body));
                calls.len()
            };
            let code = p
                .always
                .or_else(|| p.plan.lock().unwrap().pop_front())
                .unwrap_or(200);
            let status = StatusCode::from_u16(code).unwrap();
            if status.is_success() {
                (
                    status,
                    axum::Json(serde_json::json!({"id": format!("prov-{n}")})),
                )
            } else {
                (
                    status,
                    axum::Json(serde_json::json!({"error": "provider says no"})),
                )
            }
        }
        let app = axum::Router::new()
            .route("/send", axum::routing::post(send))
            .with_state(self.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        (addr, self)
    }

    fn calls(&self) -> Vec<(String, serde_json::Value)> {
        self.calls.lock().unwrap().clone()
    }
}

fn http_provider_overrides(url: &str) -> Vec<(String, String)> {
    vec![
        ("GUICHET__NOTIFICATION__SMS_PROVIDER".into(), "http".into()),
        ("GUICHET__NOTIFICATION__SMS_HTTP__URL".into(), url.into()),
        (
            "GUICHET__NOTIFICATION__SMS_HTTP__API_KEY".into(),
            "provider-secret-key".into(),
        ),
        (
            "GUICHET__NOTIFICATION__SMS_HTTP__SENDER".into(),
            "VILLENEUVE".into(),
        ),
    ]
}

fn borrowed(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

// ---- tests --------------------------------------------------------------

async fn sms_is_retried_until_the_provider_accepts_then_reported_delivered(backend: Backend) {
    let Some(env) = env_for(backend).await else {
        return;
    };
    let (addr, provider) = Provider {
        plan: Arc::new(Mutex::new(VecDeque::from([500, 503]))),
        ..Default::default()
    }
    .start()
    .await;
    let extra = http_provider_overrides(&format!("http://{addr}/send"));
    let config = env.config_with(&overrides(&borrowed(&extra)));
    let app = env.spawn_with(&[Role::Notification], config).await;
    let token = env.token("supervisor-1", &[TokenRole::Supervisor]);
    let client = notification_client(app.grpc_addr, &token).await;

    env.publish_notification("sms", &code_sms("otp-1", "06 12 34 56 78"))
        .await;

    let sent = wait_status(&client, "otp-1", "sent").await;
    assert_eq!(sent.attempts, 3, "two failures, then accepted");
    assert_eq!(sent.provider_message_id, "prov-3");
    assert_eq!(sent.channel, "sms");
    // « » are not GSM-7: fitted to straight quotes, two GSM-7 segments
    // (the text and the signing link) instead of four UCS-2 ones; the
    // letters of GSM-7 (è, à) are kept.
    assert_eq!(sent.encoding, "gsm7");
    assert_eq!(sent.segments, 2);
    assert_eq!(sent.recipient_masked, "+336••••••78");
    let calls = provider.calls();
    assert_eq!(calls.len(), 3);
    let (auth, body) = &calls[2];
    assert_eq!(auth, "Bearer provider-secret-key");
    assert_eq!(body["to"], "+33612345678");
    assert_eq!(body["from"], "VILLENEUVE");
    assert_eq!(body["reference"], "otp-1");
    assert_eq!(
        body["text"],
        "Mairie de Villeneuve : votre code pour signer \"Avenant au contrat de crèche\" est 482915 (valable 10 min). Ne le donnez à personne. Signez ici : https://signature.villeneuve.example.fr/s/abc"
    );

    // The provider reports delivery on the webhook.
    let webhook = http_addr_of(&app, Role::Notification);
    let (code, _) = http_post(
        webhook,
        "/sms/delivery-report/wrong-token-0123456789",
        "application/json",
        br#"{"id":"prov-3","status":"delivered"}"#,
    )
    .await
    .unwrap();
    assert_eq!(code, 401);
    let (code, _) = http_post(
        webhook,
        &format!("/sms/delivery-report/{REPORT_TOKEN}"),
        "application/json",
        br#"{"id":"prov-unknown","status":"delivered"}"#,
    )
    .await
    .unwrap();
    assert_eq!(code, 404);
    let (code, body) = http_post(
        webhook,
        &format!("/sms/delivery-report/{REPORT_TOKEN}"),
        "application/json",
        br#"{"id":"prov-3","status":"delivered"}"#,
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    wait_status(&client, "otp-1", "delivered").await;

    // A failed delivery report is final: failed, with the provider's reason.
    env.publish_notification("sms", &code_sms("otp-2", "06 12 34 56 78"))
        .await;
    let sent = wait_status(&client, "otp-2", "sent").await;
    let report = serde_json::json!({
        "id": sent.provider_message_id,
        "status": "undelivered",
        "error": "absent subscriber",
    });
    let (code, _) = http_post(
        webhook,
        &format!("/sms/delivery-report/{REPORT_TOKEN}"),
        "application/json",
        report.to_string().as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let failed = wait_status(&client, "otp-2", "failed").await;
    assert_eq!(failed.last_error, "absent subscriber");
    assert!(
        failed.next_attempt_time.is_none(),
        "no retry after a report"
    );

    // Every status change is an event: queued, failed ×2, sent, delivered,
    // then queued, sent, failed.
    let headers = env.stream_headers("EVENTS", 8).await;
    let types: Vec<String> = headers.iter().map(|h| header(h, "ce-type")).collect();
    for status in ["queued", "failed", "sent", "delivered"] {
        assert!(
            types.contains(&format!("guichet.notification.v1.{status}")),
            "{status} in {types:?}"
        );
    }
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn notification_sms_is_retried_until_the_provider_accepts_then_reported_delivered_sqlite() {
    sms_is_retried_until_the_provider_accepts_then_reported_delivered(Backend::Sqlite).await;
}

#[tokio::test]
async fn notification_sms_is_retried_until_the_provider_accepts_then_reported_delivered_postgres() {
    sms_is_retried_until_the_provider_accepts_then_reported_delivered(Backend::Postgres).await;
}

async fn dead_letter_after_max_attempts_and_at_once_on_refusal(backend: Backend) {
    let Some(env) = env_for(backend).await else {
        return;
    };
    let (down_addr, down) = Provider {
        always: Some(502),
        ..Default::default()
    }
    .start()
    .await;
    let extra = http_provider_overrides(&format!("http://{down_addr}/send"));
    let config = env.config_with(&overrides(&borrowed(&extra)));
    let app = env.spawn_with(&[Role::Notification], config).await;
    let client =
        notification_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;

    env.publish_notification("sms", &code_sms("otp-down", "+33612345679"))
        .await;
    let dead = wait_status(&client, "otp-down", "dead_lettered").await;
    assert_eq!(dead.attempts, 3, "max_attempts = 3");
    assert!(dead.last_error.contains("502"), "{}", dead.last_error);
    assert_eq!(down.calls().len(), 3, "no attempt after the dead letter");
    app.stop().await.unwrap();

    // A provider refusing the message (4xx) is not retried.
    let (refusing_addr, refusing) = Provider {
        always: Some(422),
        ..Default::default()
    }
    .start()
    .await;
    let extra = http_provider_overrides(&format!("http://{refusing_addr}/send"));
    let config = env.config_with(&overrides(&borrowed(&extra)));
    let app = env.spawn_with(&[Role::Notification], config).await;
    let client =
        notification_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;
    env.publish_notification("sms", &code_sms("otp-refused", "+33612345670"))
        .await;
    let dead = wait_status(&client, "otp-refused", "dead_lettered").await;
    assert_eq!(dead.attempts, 1, "a permanent refusal is not retried");
    assert!(dead.last_error.contains("422"), "{}", dead.last_error);
    assert_eq!(refusing.calls().len(), 1);

    // An agent may read but not retry.
    let mut agent = client.clone();
    let err = agent
        .retry_notification(RetryNotificationRequest {
            id: "otp-down".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let page = agent
        .list_notifications(ListNotificationsRequest {
            filter: "status=dead_lettered channel=sms".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = page.notifications.iter().map(|n| n.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["otp-down", "otp-refused"]);
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn notification_dead_letters_after_max_attempts_and_at_once_on_refusal_sqlite() {
    dead_letter_after_max_attempts_and_at_once_on_refusal(Backend::Sqlite).await;
}

#[tokio::test]
async fn notification_dead_letters_after_max_attempts_and_at_once_on_refusal_postgres() {
    dead_letter_after_max_attempts_and_at_once_on_refusal(Backend::Postgres).await;
}

async fn redelivered_request_is_sent_once_and_expired_one_never(backend: Backend) {
    let Some(env) = env_for(backend).await else {
        return;
    };
    let config = env.config_with(&overrides(&[]));
    let app = env.spawn_with(&[Role::Notification], config).await;
    let client =
        notification_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;

    // The same request twice, past JetStream's duplicate window (other
    // Nats-Msg-Id): the role itself must recognise it.
    let req = code_sms("otp-twice", "+33612345671").encode_to_vec();
    let ty = "guichet.notification.v1.notification_request";
    env.publish_raw("notify.sms", ty, "otp-twice", "copy-1", req.clone())
        .await;
    let seq = env
        .publish_raw("notify.sms", ty, "otp-twice", "copy-2", req)
        .await;

    // Past its not_after: expired, never sent.
    let mut late = code_sms("otp-late", "+33612345672");
    late.not_after = Some(guichet_proto::convert::timestamp(
        chrono::Utc::now() - chrono::Duration::minutes(1),
    ));
    let seq_late = env.publish_notification("sms", &late).await;
    env.wait_consumed("NOTIFY", "notification", seq.max(seq_late))
        .await;

    env.wait_for_sms("+33612345671", |_| true).await;
    let expired = wait_status(&client, "otp-late", "expired").await;
    assert_eq!(expired.attempts, 0);
    wait_status(&client, "otp-twice", "sent").await;
    let sink = env.sms_sink();
    assert_eq!(
        sink.iter().filter(|m| m["id"] == "otp-twice").count(),
        1,
        "one SMS for one request id"
    );
    assert!(sink.iter().all(|m| m["id"] != "otp-late"));
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn notification_redelivered_request_is_sent_once_and_an_expired_one_never_sqlite() {
    redelivered_request_is_sent_once_and_expired_one_never(Backend::Sqlite).await;
}

#[tokio::test]
async fn notification_redelivered_request_is_sent_once_and_an_expired_one_never_postgres() {
    redelivered_request_is_sent_once_and_expired_one_never(Backend::Postgres).await;
}

#[tokio::test]
async fn notification_sms_over_the_hourly_limit_per_phone_wait_instead_of_storming() {
    let Some(env) = env_for(Backend::Sqlite).await else {
        return;
    };
    let config = env.config_with(&overrides(&[(
        "GUICHET__NOTIFICATION__SMS_MAX_PER_HOUR",
        "2",
    )]));
    let app = env.spawn_with(&[Role::Notification], config).await;
    let client = notification_client(
        app.grpc_addr,
        &env.token("supervisor-1", &[TokenRole::Supervisor]),
    )
    .await;
    let ids = ["storm-1", "storm-2", "storm-3"];
    for id in ids {
        env.publish_notification("sms", &code_sms(id, "06 11 22 33 44"))
            .await;
    }
    // Another phone is not held back by the first one's limit.
    env.publish_notification("sms", &code_sms("other-1", "06 55 66 77 88"))
        .await;
    let statuses = eventually(
        "two of the three sent, the third put off",
        Duration::from_secs(30),
        || {
            let mut c = client.clone();
            async move {
                let mut v = Vec::new();
                for id in ids {
                    v.push(status_of(&mut c, id).await?);
                }
                let later = chrono::Utc::now().timestamp() + 50 * 60;
                let deferred = v.iter().any(|n| {
                    n.status == "queued"
                        && n.next_attempt_time
                            .as_ref()
                            .is_some_and(|t| t.seconds > later)
                });
                (v.iter().filter(|n| n.status == "sent").count() == 2 && deferred).then_some(v)
            }
        },
    )
    .await;
    let deferred = statuses.iter().find(|n| n.status != "sent").unwrap();
    assert_eq!(deferred.attempts, 0, "not attempted, not dropped");
    wait_status(&client, "other-1", "sent").await;
    let sink = env.sms_sink();
    assert_eq!(sink.iter().filter(|m| m["to"] == "+33611223344").count(), 2);
    assert_eq!(sink.iter().filter(|m| m["to"] == "+33655667788").count(), 1);
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn notification_dev_sink_holds_one_json_line_per_sms_with_the_contract_fields() {
    let Some(env) = env_for(Backend::Sqlite).await else {
        return;
    };
    let config = env.config_with(&overrides(&[]));
    let app = env.spawn_with(&[Role::Notification], config).await;
    let client =
        notification_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;

    let mut req = sms(
        "n-pieces",
        "06 98 76 54 32",
        "relance-pieces",
        &[
            ("reference", "VIN-2026-000042"),
            ("process", "Carte d'identité"),
        ],
    );
    req.dossier_id = "d-42".into();
    env.publish_notification("sms", &req).await;
    env.publish_notification("sms", &sms("n-bad", "12", "relance-pieces", &[]))
        .await;

    let line = env.wait_for_sms("+33698765432", |_| true).await;
    assert_eq!(line["id"], "n-pieces");
    assert_eq!(line["template"], "relance-pieces");
    assert_eq!(line["dossier_id"], "d-42");
    assert_eq!(
        line["text"],
        "Mairie de Villeneuve : rappel, nous attendons toujours des pièces pour votre dossier VIN-2026-000042 (Carte d'identité). Sans elles, il sera classé sans suite."
    );
    let time = line["time"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339 time");
    let sent = wait_status(&client, "n-pieces", "sent").await;
    assert_eq!((sent.encoding.as_str(), sent.segments), ("gsm7", 1));

    // A number that is not one is refused, recorded, never sent.
    let bad = wait_status(&client, "n-bad", "dead_lettered").await;
    assert!(
        bad.last_error.contains("phone number"),
        "{}",
        bad.last_error
    );

    // A template missing a variable is dead-lettered with its name.
    env.publish_notification(
        "sms",
        &sms(
            "n-missing",
            "+33698765433",
            "signature-code",
            &[("code", "1")],
        ),
    )
    .await;
    let missing = wait_status(&client, "n-missing", "dead_lettered").await;
    assert!(
        missing.last_error.contains("document") && missing.last_error.contains("minutes"),
        "{}",
        missing.last_error
    );
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn notification_email_reaches_a_real_smtp_server_threaded_with_reference_and_ics() {
    let Some(env) = env_for(Backend::Sqlite).await else {
        return;
    };
    let smtp = SmtpSink::start(env.dir.path()).await;
    let port = smtp.port.to_string();
    let config = env.config_with(&overrides(&[
        ("GUICHET__NOTIFICATION__EMAIL__TRANSPORT", "smtp"),
        ("GUICHET__NOTIFICATION__EMAIL__SMTP_HOST", "127.0.0.1"),
        ("GUICHET__NOTIFICATION__EMAIL__SMTP_PORT", port.as_str()),
        (
            "GUICHET__NOTIFICATION__EMAIL__FROM",
            "Mairie de Villeneuve <mairie@villeneuve.example.fr>",
        ),
        (
            "GUICHET__NOTIFICATION__EMAIL__REPLY_TO",
            "accueil@villeneuve.example.fr",
        ),
    ]));
    let objects = guichet_platform::objects::ObjectStore::local(&config.objects.dir);
    let pdf = b"%PDF-1.4\n% acte de naissance\n".to_vec();
    let sha = objects.put(&pdf).await.unwrap();
    let app = env.spawn_with(&[Role::Notification], config).await;
    let client =
        notification_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;

    let mut req = email("mail-1", "Jeanne.Lefevre@Exemple.fr");
    req.in_reply_to = "question-2@exemple.fr".into();
    req.references = vec![
        "question-1@exemple.fr".into(),
        "question-2@exemple.fr".into(),
    ];
    req.subject = "Re: Demande d'acte de naissance".into();
    req.reference = "VIN-2026-000123".into();
    req.variables.insert(
        "ics".into(),
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//guichet//FR\r\nEND:VCALENDAR\r\n".into(),
    );
    req.attachments.push(Attachment {
        filename: "acte-naissance.pdf".into(),
        media_type: "application/pdf".into(),
        sha256: sha,
        content: vec![],
    });
    env.publish_notification("email", &req).await;

    let raw = smtp.wait_for(1).await.remove(0);
    let msg = mail_parser::MessageParser::default()
        .parse(&raw)
        .expect("a MIME message");
    let sent = wait_status(&client, "mail-1", "sent").await;
    assert_eq!(msg.message_id(), Some(sent.message_id.as_str()));
    assert!(sent.message_id.ends_with("@villeneuve.example.fr"));
    assert_eq!(msg.in_reply_to().as_text(), Some("question-2@exemple.fr"));
    let refs: Vec<String> = msg
        .references()
        .as_text_list()
        .map(|l| l.iter().map(|r| r.to_string()).collect())
        .unwrap_or_default();
    assert_eq!(refs, ["question-1@exemple.fr", "question-2@exemple.fr"]);
    assert_eq!(
        msg.subject(),
        Some("Re: Demande d'acte de naissance [VIN-2026-000123]")
    );
    assert_eq!(
        msg.header("Auto-Submitted").and_then(|h| h.as_text()),
        Some("no"),
        "an agent's answer is not automatic"
    );
    assert!(msg.header("List-Unsubscribe").is_none());
    assert_eq!(
        msg.to().and_then(|a| a.first()).and_then(|a| a.address()),
        Some("jeanne.lefevre@exemple.fr")
    );
    assert_eq!(
        msg.reply_to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("accueil@villeneuve.example.fr")
    );
    let body = msg.body_text(0).expect("text body");
    assert!(
        body.contains("Votre acte de naissance vous a été envoyé ce matin."),
        "{body}"
    );
    assert!(body.contains("Le service État civil"));
    let names: Vec<String> = msg
        .attachments()
        .map(|a| a.attachment_name().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["rendez-vous.ics", "acte-naissance.pdf"]);
    let ics = msg.attachments().next().unwrap();
    assert!(
        ics.content_type()
            .is_some_and(|c| c.ctype() == "text" && c.subtype() == Some("calendar"))
    );
    assert!(String::from_utf8_lossy(ics.contents()).contains("BEGIN:VCALENDAR"));
    assert_eq!(msg.attachments().nth(1).unwrap().contents(), pdf.as_slice());

    // Redelivery of the same request: still one email.
    let seq = env
        .publish_raw(
            "notify.email",
            "guichet.notification.v1.notification_request",
            "mail-1",
            "mail-1-again",
            req.encode_to_vec(),
        )
        .await;
    env.wait_consumed("NOTIFY", "notification", seq).await;
    assert_eq!(smtp.messages().len(), 1);
    app.stop().await.unwrap();
    env.cleanup().await;
}

fn eml_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .count()
        })
        .unwrap_or(0)
}

async fn bounced_address_is_suppressed_and_hourly_limit_defers(backend: Backend) {
    let Some(env) = env_for(backend).await else {
        return;
    };
    let config = env.config_with(&overrides(&[(
        "GUICHET__NOTIFICATION__EMAIL__MAX_PER_HOUR",
        "2",
    )]));
    let sink_dir = config.notification.email.sink_dir.clone();
    let app = env.spawn_with(&[Role::Notification], config).await;
    let supervisor = env.token("supervisor-1", &[TokenRole::Supervisor]);
    let client = notification_client(app.grpc_addr, &supervisor).await;

    // The email channel saw a permanent bounce for this address.
    let bounce = AddressUndeliverable {
        address: "Parti@Exemple.fr".into(),
        reason: "5.1.1 user unknown".into(),
        bounce_message_id: "dsn-1@mx.exemple.fr".into(),
        original_message_id: "x@villeneuve".into(),
        permanent: true,
        ..Default::default()
    };
    let seq = env
        .publish_raw(
            "events.email.address_undeliverable",
            "guichet.email.v1.address_undeliverable",
            "bounce-1",
            "bounce-1",
            bounce.encode_to_vec(),
        )
        .await;
    env.wait_consumed("EVENTS", "notification-bounces", seq)
        .await;
    env.publish_notification("email", &email("to-bounced", "parti@exemple.fr"))
        .await;
    let s = wait_status(&client, "to-bounced", "suppressed").await;
    assert_eq!(s.attempts, 0);
    assert_eq!(eml_count(&sink_dir), 0);

    // A supervisor lifts the block and sends it again.
    let cleared = client
        .clone()
        .clear_suppression(ClearSuppressionRequest {
            address: "parti@exemple.fr".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.cleared);
    client
        .clone()
        .retry_notification(RetryNotificationRequest {
            id: "to-bounced".into(),
        })
        .await
        .unwrap();
    wait_status(&client, "to-bounced", "sent").await;
    assert_eq!(eml_count(&sink_dir), 1);

    // Per-recipient limit of 2 an hour: the third is deferred, not dropped.
    for id in ["burst-1", "burst-2", "burst-3"] {
        env.publish_notification("email", &email(id, "voisin@exemple.fr"))
            .await;
    }
    let statuses = eventually(
        "two of the burst sent, one deferred",
        Duration::from_secs(30),
        || {
            let mut c = client.clone();
            async move {
                let mut v = Vec::new();
                for id in ["burst-1", "burst-2", "burst-3"] {
                    v.push(status_of(&mut c, id).await?);
                }
                // Two sent, and the third looked at and put off.
                let later = chrono::Utc::now().timestamp() + 50 * 60;
                let deferred = v.iter().any(|n| {
                    n.status == "queued"
                        && n.next_attempt_time
                            .as_ref()
                            .is_some_and(|t| t.seconds > later)
                });
                (v.iter().filter(|n| n.status == "sent").count() == 2 && deferred).then_some(v)
            }
        },
    )
    .await;
    let deferred = statuses.iter().find(|n| n.status != "sent").unwrap();
    assert_eq!(deferred.status, "queued");
    assert_eq!(deferred.attempts, 0);
    let next = deferred.next_attempt_time.as_ref().unwrap();
    assert!(
        next.seconds > chrono::Utc::now().timestamp() + 50 * 60,
        "deferred to when the hour window frees a slot"
    );
    assert_eq!(eml_count(&sink_dir), 3);
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn notification_bounced_address_is_suppressed_and_the_hourly_limit_defers_sqlite() {
    bounced_address_is_suppressed_and_hourly_limit_defers(Backend::Sqlite).await;
}

#[tokio::test]
async fn notification_bounced_address_is_suppressed_and_the_hourly_limit_defers_postgres() {
    bounced_address_is_suppressed_and_hourly_limit_defers(Backend::Postgres).await;
}

#[tokio::test]
async fn notification_turns_a_dossier_reminder_into_an_sms_to_the_citizen() {
    let Some(env) = env_for(Backend::Sqlite).await else {
        return;
    };
    let config = env.config_with(&overrides(&[]));
    let app = env
        .spawn_with(&[Role::Dossier, Role::Notification], config)
        .await;
    let token = env.token("agent-1", &[TokenRole::Agent]);
    let mut dossier = dossier_client(app.grpc_addr, &token).await;
    let citizen = dossier
        .resolve_citizen(dpb::ResolveCitizenRequest {
            hint: Some(CitizenHint {
                given_name: "Hélène".into(),
                family_name: "Martin".into(),
                phones: vec!["06 45 67 89 01".into()],
                ..Default::default()
            }),
            request_id: String::new(),
            candidates_only: false,
        })
        .await
        .unwrap()
        .into_inner()
        .citizen
        .unwrap();
    let d = dossier
        .open_dossier(dpb::OpenDossierRequest {
            citizen_id: citizen.id.clone(),
            process_id: "carte-identite".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    // What the dossier role's timer publishes.
    let reminder = ReminderDue {
        dossier_id: d.id.clone(),
        citizen_id: citizen.id.clone(),
        template: "relance-pieces".into(),
        due_time: Some(guichet_proto::convert::timestamp(chrono::Utc::now())),
    };
    env.publish_raw(
        "events.dossier.reminder_due",
        "guichet.dossier.v1.reminder_due",
        "timer-event-1",
        "timer-event-1",
        reminder.encode_to_vec(),
    )
    .await;

    // A reminder from long ago (an installation's history replayed to a
    // new consumer) is not sent.
    let old = ReminderDue {
        due_time: Some(guichet_proto::convert::timestamp(
            chrono::Utc::now() - chrono::Duration::days(30),
        )),
        ..reminder.clone()
    };
    let seq = env
        .publish_raw(
            "events.dossier.reminder_due",
            "guichet.dossier.v1.reminder_due",
            "timer-event-old",
            "timer-event-old",
            old.encode_to_vec(),
        )
        .await;
    env.wait_consumed("EVENTS", "notification-reminders", seq)
        .await;

    let line = env.wait_for_sms("+33645678901", |_| true).await;
    assert_eq!(line["template"], "relance-pieces");
    assert_eq!(line["dossier_id"], d.id.as_str());
    let text = line["text"].as_str().unwrap();
    assert!(text.starts_with("Mairie de Villeneuve : rappel"), "{text}");
    assert!(text.contains(&d.reference), "{text}");
    assert!(text.contains(&d.process_title), "{text}");
    let client = notification_client(app.grpc_addr, &token).await;
    let n = wait_status(&client, "reminder-timer-event-1", "sent").await;
    assert_eq!(n.dossier_id, d.id);
    assert!(
        status_of(&mut client.clone(), "reminder-timer-event-old")
            .await
            .is_none()
    );
    assert_eq!(env.sms_sink().len(), 1);
    app.stop().await.unwrap();
    env.cleanup().await;
}

/// A replica of the role built in this process on `config` (not running:
/// the test drives its worker).
async fn replica(
    env: &TestEnv,
    config: &guichet::GuichetConfig,
    name: &str,
) -> guichet_notification::Service {
    let deps = env.deps(config, name).await;
    guichet_notification::build(config.notification.clone(), deps)
        .await
        .unwrap()
}

async fn two_replicas_share_the_work_without_sending_twice(backend: Backend) {
    let Some(env) = env_for(backend).await else {
        return;
    };
    let config = env.config_with(&overrides(&[("GUICHET__NOTIFICATION__BATCH_SIZE", "7")]));
    let a = replica(&env, &config, "guichet/notification-a").await;
    let b = replica(&env, &config, "guichet/notification-b").await;
    for i in 0..40 {
        let accepted = a
            .core()
            .accept(sms(
                &format!("bulk-{i}"),
                &format!("+336123450{i:02}"),
                "relance-pieces",
                &[("reference", "VIN-2026-000007"), ("process", "Passeport")],
            ))
            .await
            .unwrap();
        assert_eq!(accepted, guichet_notification::core::Accepted::Queued);
    }
    // Accepting again is a no-op.
    let again = b
        .core()
        .accept(sms("bulk-0", "+33612345000", "relance-pieces", &[]))
        .await
        .unwrap();
    assert_eq!(again, guichet_notification::core::Accepted::Duplicate);

    let (wa, wb) = (a.worker(), b.worker());
    let (ra, rb) = tokio::join!(wa.pass(), wb.pass());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra + rb, 40, "every message handled once ({ra} + {rb})");
    let sink = env.sms_sink();
    let mut ids: Vec<&str> = sink.iter().map(|m| m["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((sink.len(), ids.len()), (40, 40), "one SMS per message");
    assert_eq!(a.core().queue_depth().await.unwrap(), 0);

    // Listed page by page, newest first, each exactly once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let filter = std::collections::HashMap::from([("status".to_owned(), "sent".to_owned())]);
        let after = (!token.is_empty()).then(|| token.clone());
        let page = a
            .core()
            .list(
                &filter,
                after.map(|t: String| {
                    let (ts, id) = t.split_once('|').unwrap();
                    (
                        chrono::DateTime::from_timestamp_micros(ts.parse().unwrap()).unwrap(),
                        id.to_owned(),
                    )
                }),
                7,
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        token = format!("{}|{}", last.created_at.timestamp_micros(), last.id);
        seen.extend(page.into_iter().map(|m| m.id));
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (40, 40));
    env.cleanup().await;
}

#[tokio::test]
async fn notification_two_replicas_share_the_work_without_sending_twice_sqlite() {
    two_replicas_share_the_work_without_sending_twice(Backend::Sqlite).await;
}

#[tokio::test]
async fn notification_two_replicas_share_the_work_without_sending_twice_postgres() {
    two_replicas_share_the_work_without_sending_twice(Backend::Postgres).await;
}

#[tokio::test]
async fn notification_settings_are_validated_with_errors_naming_the_key() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let check = |extra: &[(&str, &str)]| {
        env.config_with(extra)
            .validate(&[Role::Notification])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(check(&[]), "", "the defaults are valid");
    let e = check(&[("GUICHET__NOTIFICATION__SMS_PROVIDER", "pigeon")]);
    assert!(e.contains("notification.sms_provider"), "{e}");
    let e = check(&[("GUICHET__NOTIFICATION__SMS_PROVIDER", "http")]);
    assert!(e.contains("notification.sms_http.url"), "{e}");
    let e = check(&[("GUICHET__NOTIFICATION__EMAIL__FROM", "pas une adresse")]);
    assert!(e.contains("notification.email.from"), "{e}");
    let e = check(&[("GUICHET__NOTIFICATION__SMS_HTTP__REPORT_TOKEN", "court")]);
    assert!(e.contains("notification.sms_http.report_token"), "{e}");
    assert!(!e.contains("court"), "a secret is never printed: {e}");
    let e = check(&[("GUICHET__NOTIFICATION__MAX_ATTEMPTS", "0")]);
    assert!(e.contains("notification.max_attempts"), "{e}");
    // The development sinks live under data_dir unless configured.
    let config = env.config();
    assert_eq!(
        config.notification.sms_sink_dir,
        env.dir.path().join("sms-sink")
    );
    assert_eq!(
        env.sms_sink_file(),
        env.dir.path().join("sms-sink/sms.jsonl")
    );
    env.cleanup().await;
}

/// `guichet serve notification` as its own process: ready, metrics by
/// channel and status, and debug-level JSON logs that never carry a code,
/// a number, an address or a body.
#[tokio::test]
async fn notification_served_alone_logs_no_personal_data_and_exports_metrics() {
    let Some(env) = env_for(Backend::Sqlite).await else {
        return;
    };
    let log = env.dir.path().join("notification.log");
    let mut extra = overrides(&[]);
    extra.push(("GUICHET__TELEMETRY__LOG_FORMAT", "json"));
    extra.push(("GUICHET__TELEMETRY__LOG_FILTER", "debug"));
    let p = env
        .spawn_process_logging(&["notification"], &extra, &log)
        .await;
    let client = notification_client(p.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;
    env.publish_notification("sms", &code_sms("otp-log", "06 12 34 56 78"))
        .await;
    let mut mail = email("mail-log", "jeanne.lefevre@exemple.fr");
    mail.reference = "VIN-2026-000999".into();
    env.publish_notification("email", &mail).await;
    env.wait_for_sms("+33612345678", |m| m["id"] == "otp-log")
        .await;
    wait_status(&client, "mail-log", "sent").await;

    let (code, metrics) = guichet_testkit::http_get(p.admin_addr, "/metrics")
        .await
        .unwrap();
    assert_eq!(code, 200);
    for series in [
        "guichet_notification_messages_total",
        "guichet_notification_attempts_total",
        "guichet_notification_send_seconds",
        "guichet_notification_queue_depth",
    ] {
        assert!(metrics.contains(series), "{series} exported");
    }
    assert!(
        metrics.contains(r#"channel="sms",status="sent""#),
        "{metrics}"
    );
    assert!(p.terminate().await.success());

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("notification queued"), "the flow is logged");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for personal in [
            "482915",
            "612345678",
            "06 12 34 56 78",
            "jeanne",
            "lefevre",
            "Lefèvre",
            "acte de naissance",
            "Avenant",
        ] {
            assert!(
                !line.contains(personal),
                "personal data `{personal}` in a log line: {line}"
            );
        }
    }
    env.cleanup().await;
}

/// Appointment and notification together: a booking's confirmation
/// reaches the citizen's phone and mailbox, the email with the booking as
/// `rendez-vous.ics`.
#[tokio::test]
async fn notification_delivers_an_appointment_confirmation_by_sms_and_email_with_its_ics() {
    use guichet_proto::appointment::v1 as apb;
    let Some(env) = env_for(Backend::Sqlite).await else {
        return;
    };
    let config = env.config_with(&overrides(&[]));
    let email_sink = config.notification.email.sink_dir.clone();
    let app = env
        .spawn_with(&[Role::Appointment, Role::Notification], config)
        .await;
    let token = env.token("agent-1", &[TokenRole::Agent]);
    let mut appointments = guichet_testkit::appointment_client(app.grpc_addr, &token).await;
    let now = chrono::Utc::now();
    let slot = appointments
        .search_availability(apb::SearchAvailabilityRequest {
            appointment_type: "passeport-depot".into(),
            people: 1,
            start_time: Some(guichet_proto::convert::timestamp(now)),
            end_time: Some(guichet_proto::convert::timestamp(
                now + chrono::Duration::days(30),
            )),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .slots
        .remove(0);
    let booking = appointments
        .book_appointment(apb::BookAppointmentRequest {
            appointment_type: "passeport-depot".into(),
            site_id: slot.site_id.clone(),
            start_time: slot.start_time,
            people: 1,
            citizen_id: "citoyen-1".into(),
            contact: Some(apb::Contact {
                phone: "06 23 45 67 89".into(),
                email: "camille@exemple.fr".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let sms = env
        .wait_for_sms("+33623456789", |m| {
            m["template"] == "appointment-confirmation"
        })
        .await;
    let text = sms["text"].as_str().unwrap();
    assert!(text.contains(&booking.reference), "{text}");
    assert!(text.contains("confirmé"), "{text}");

    let eml = eventually("the confirmation email", Duration::from_secs(30), || {
        let dir = email_sink.clone();
        async move {
            std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .and_then(|e| std::fs::read(e.path()).ok())
        }
    })
    .await;
    let msg = mail_parser::MessageParser::default().parse(&eml).unwrap();
    assert_eq!(msg.subject(), Some("Confirmation de votre rendez-vous"));
    assert_eq!(
        msg.header("Auto-Submitted").and_then(|h| h.as_text()),
        Some("auto-generated")
    );
    assert!(msg.body_text(0).unwrap().contains(&booking.reference));
    let ics = msg
        .attachments()
        .find(|a| a.attachment_name() == Some("rendez-vous.ics"))
        .expect("rendez-vous.ics attached");
    let ics = String::from_utf8_lossy(ics.contents());
    assert!(ics.contains("BEGIN:VEVENT"), "{ics}");
    app.stop().await.unwrap();
    env.cleanup().await;
}
