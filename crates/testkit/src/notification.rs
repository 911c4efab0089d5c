//! Notification: the development SMS sink (the citizen's phone of every test), publishing requests and events, a real SMTP server.

use crate::*;

// ---------------------------------------------------------------------------
// Notification: its database, the development SMS sink (the citizen's
// phone of every test), publishing requests and events, a real SMTP server.

impl TestEnv {
    /// The development SMS sink of this test's processes:
    /// `<data_dir>/sms-sink/sms.jsonl` (notification.sms_sink_dir's default).
    pub fn sms_sink_file(&self) -> std::path::PathBuf {
        self.dir.path().join("sms-sink").join("sms.jsonl")
    }

    /// Every SMS the development sink holds, one JSON object each
    /// (`id`, `to`, `text`, `template`, `dossier_id`, `time`).
    pub fn sms_sink(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.sms_sink_file())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    /// Wait for the first SMS to `to` (E.164) matching `pred`, as a citizen
    /// waits for their phone.
    pub async fn wait_for_sms(
        &self,
        to: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(
            &format!("an SMS to {to} in the development sink"),
            Duration::from_secs(30),
            || {
                let found = self
                    .sms_sink()
                    .into_iter()
                    .find(|m| m["to"] == to && pred(m));
                async move { found }
            },
        )
        .await
    }

    /// Publish a delivery request on `notify.<kind>` as a producer role does.
    pub async fn publish_notification(
        &self,
        kind: &str,
        req: &proto::notification::v1::NotificationRequest,
    ) -> u64 {
        use prost::Message;
        self.publish_raw(
            &format!("notify.{kind}"),
            "guichet.notification.v1.notification_request",
            &req.id,
            &req.id,
            req.encode_to_vec(),
        )
        .await
    }

    /// Publish a CloudEvent on `<prefix>.<rest>` with `ce_id` and
    /// `Nats-Msg-Id` = `msg_id` (different ids bypass JetStream's duplicate
    /// window, to test a consumer's own idempotency). Returns the stream
    /// sequence.
    pub async fn publish_raw(
        &self,
        rest: &str,
        ce_type: &str,
        ce_id: &str,
        msg_id: &str,
        body: Vec<u8>,
    ) -> u64 {
        let js = async_nats::jetstream::new(self.nats().await);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("ce-specversion", "1.0");
        headers.insert("ce-id", ce_id);
        headers.insert("ce-type", ce_type);
        headers.insert("ce-source", "test");
        headers.insert("ce-time", chrono::Utc::now().to_rfc3339().as_str());
        headers.insert("Nats-Msg-Id", msg_id);
        js.publish_with_headers(self.subject(rest), headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("jetstream ack")
            .sequence
    }

    /// Wait until the durable consumer `durable` of stream `base` has
    /// acknowledged every message up to stream sequence `seq`.
    pub async fn wait_consumed(&self, base: &str, durable: &str, seq: u64) {
        let js = async_nats::jetstream::new(self.nats().await);
        let name = self.stream(base);
        eventually(
            &format!("{durable} to ack {name} up to {seq}"),
            Duration::from_secs(30),
            || {
                let js = js.clone();
                let name = name.clone();
                async move {
                    let stream = js.get_stream(&name).await.ok()?;
                    let info = stream.consumer_info(durable).await.ok()?;
                    (info.ack_floor.stream_sequence >= seq).then_some(())
                }
            },
        )
        .await
    }
}

pub async fn notification_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::notification::v1::notification_service_client::NotificationServiceClient<Authed> {
    proto::notification::v1::notification_service_client::NotificationServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

/// A real SMTP server for tests: Python's aiosmtpd (package
/// `python3-aiosmtpd`, installed by `scripts/ensure-services.sh test`)
/// storing what it receives in a Maildir. Killed on drop.
pub struct SmtpSink {
    pub port: u16,
    pub maildir: std::path::PathBuf,
    _child: tokio::process::Child,
}

impl SmtpSink {
    /// Start aiosmtpd on a free loopback port; panics (naming the fix) when
    /// no Python with aiosmtpd is found.
    pub async fn start(dir: &std::path::Path) -> SmtpSink {
        let candidates = [
            std::env::var("GUICHET_TEST_PYTHON").unwrap_or_default(),
            "/usr/bin/python3".into(),
            "python3".into(),
        ];
        let python = candidates
            .iter()
            .filter(|p| !p.is_empty())
            .find(|p| {
                std::process::Command::new(p)
                    .args(["-c", "import aiosmtpd"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .cloned()
            .expect("no python3 with aiosmtpd: run scripts/ensure-services.sh test (apt-get install python3-aiosmtpd)");
        let maildir = dir.join("maildir");
        let port = free_port();
        let child = tokio::process::Command::new(python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start aiosmtpd");
        eventually(
            "aiosmtpd to listen",
            Duration::from_secs(20),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        SmtpSink {
            port,
            maildir,
            _child: child,
        }
    }

    /// The raw messages received so far.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in entries.flatten() {
                    if let Ok(b) = std::fs::read(e.path()) {
                        out.push(b);
                    }
                }
            }
        }
        out
    }

    /// Wait until at least `n` messages arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Vec<u8>> {
        eventually(
            &format!("{n} message(s) on the SMTP server"),
            Duration::from_secs(30),
            || {
                let m = self.messages();
                async move { (m.len() >= n).then_some(m) }
            },
        )
        .await
    }
}
