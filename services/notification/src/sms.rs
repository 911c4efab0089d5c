//! SMS providers.
//!
//! * [`HttpProvider`]: a generic HTTP provider adapter. Contract (see the
//!   README): `POST <url>` with `Authorization: Bearer <api_key>` and a JSON
//!   body `{"from", "to", "text", "reference", "encoding", "segments",
//!   "status_callback"?}`; a 2xx answer carries `{"id": "<provider message
//!   id>"}` (or `message_id`). A 5xx, 429, timeout or connection error is
//!   retried; any other 4xx is a permanent refusal. Delivery reports come
//!   back on the role's webhook (see [`crate::http`]).
//! * [`SinkProvider`]: development sink, the default of `guichet up`: one
//!   JSON object per line appended to `<sms_sink_dir>/sms.jsonl`
//!   (`{"id","to","text","template","dossier_id","time"}`), which tests and
//!   developers read as a citizen reads their phone. Each line is written
//!   with a single `write` on a file opened in append mode, under a lock,
//!   so concurrent messages never interleave.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::gsm::SmsShape;

/// One SMS ready to go.
#[derive(Debug, Clone)]
pub struct OutgoingSms {
    /// The notification id (the provider's `reference`).
    pub id: String,
    /// E.164.
    pub to: String,
    pub text: String,
    pub template: String,
    pub dossier_id: String,
    pub shape: SmsShape,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (provider down, timeout, 5xx, 429).
    #[error("{0}")]
    Retryable(String),
    /// Trying again cannot help (refused number, bad request, 4xx).
    #[error("{0}")]
    Permanent(String),
}

impl guichet_platform::retry::Classify for SendError {
    fn class(&self) -> guichet_platform::retry::Class {
        use guichet_platform::retry::Class;
        match self {
            SendError::Retryable(_) => Class::Transient,
            SendError::Permanent(_) => Class::Permanent,
        }
    }
}

#[async_trait]
pub trait SmsProvider: Send + Sync {
    /// Hand the message to the provider; returns its message id.
    async fn send(&self, sms: &OutgoingSms) -> Result<String, SendError>;
}

pub struct HttpProvider {
    client: reqwest::Client,
    url: String,
    api_key: SecretString,
    sender: String,
    status_callback: Option<String>,
}

impl HttpProvider {
    pub fn new(
        url: &str,
        api_key: SecretString,
        sender: &str,
        timeout: Duration,
        status_callback: Option<String>,
    ) -> anyhow::Result<HttpProvider> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent("guichet-notification")
            .build()?;
        Ok(HttpProvider {
            client,
            url: url.to_owned(),
            api_key,
            sender: sender.to_owned(),
            status_callback,
        })
    }
}

#[async_trait]
impl SmsProvider for HttpProvider {
    async fn send(&self, sms: &OutgoingSms) -> Result<String, SendError> {
        let mut body = serde_json::json!({
            "from": self.sender,
            "to": sms.to,
            "text": sms.text,
            "reference": sms.id,
            "encoding": sms.shape.encoding.as_str(),
            "segments": sms.shape.segments,
        });
        if let Some(cb) = &self.status_callback {
            body["status_callback"] = serde_json::Value::String(cb.clone());
        }
        let mut req = self.client.post(&self.url).json(&body);
        let key = self.api_key.expose_secret();
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // Never print the error's URL: it may carry credentials.
            Err(e) if e.is_timeout() => {
                return Err(SendError::Retryable("provider timeout".into()));
            }
            Err(e) if e.is_connect() => {
                return Err(SendError::Retryable("provider unreachable".into()));
            }
            Err(_) => return Err(SendError::Retryable("provider request failed".into())),
        };
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(SendError::Retryable(format!("provider answered {status}")));
        }
        if !status.is_success() {
            return Err(SendError::Permanent(format!("provider refused: {status}")));
        }
        let json: serde_json::Value = resp
            .json()
            .await
            .map_err(|_| SendError::Retryable("provider answer is not JSON".into()))?;
        let id = json
            .get("id")
            .or_else(|| json.get("message_id"))
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SendError::Retryable("provider answer has no message id".into()))?;
        Ok(id)
    }
}

pub struct SinkProvider {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl SinkProvider {
    /// A sink writing `<dir>/sms.jsonl` (the directory is created).
    pub fn new(dir: PathBuf) -> anyhow::Result<SinkProvider> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create notification.sms_sink_dir {}: {e}",
                dir.display()
            )
        })?;
        Ok(SinkProvider {
            path: dir.join("sms.jsonl"),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

#[async_trait]
impl SmsProvider for SinkProvider {
    async fn send(&self, sms: &OutgoingSms) -> Result<String, SendError> {
        let line = serde_json::json!({
            "id": sms.id,
            "to": sms.to,
            "text": sms.text,
            "template": sms.template,
            "dossier_id": sms.dossier_id,
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "encoding": sms.shape.encoding.as_str(),
            "segments": sms.shape.segments,
        });
        let mut bytes = serde_json::to_vec(&line)
            .map_err(|e| SendError::Permanent(format!("cannot encode: {e}")))?;
        bytes.push(b'\n');
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        // One write(2) of the whole line on an O_APPEND file.
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.write_all(&bytes)?;
            f.sync_data()
        })
        .await
        .map_err(|e| SendError::Retryable(format!("sms sink: {e}")))?
        .map_err(|e| SendError::Retryable(format!("sms sink: {e}")))?;
        Ok(format!("sink-{}", sms.id))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::gsm;

    fn msg(i: usize) -> OutgoingSms {
        let text = format!("Mairie de Villeneuve : message numéro {i} « test »");
        OutgoingSms {
            id: format!("n-{i}"),
            to: "+33612345678".into(),
            shape: gsm::shape(&text),
            text,
            template: "t".into(),
            dossier_id: "d".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_sink_writes_whole_lines_under_concurrency() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = Arc::new(SinkProvider::new(dir.path().join("sms-sink")).expect("sink"));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let s = sink.clone();
            tasks.spawn(async move { s.send(&msg(i)).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("join").expect("sent");
        }
        let text = std::fs::read_to_string(sink.path()).expect("file");
        let mut ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object a line");
                for k in ["id", "to", "text", "template", "dossier_id", "time"] {
                    assert!(v.get(k).is_some(), "{k} in {l}");
                }
                v["id"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 100);
    }

    #[tokio::test]
    async fn timeouts_and_unreachable_providers_are_retryable() {
        // Accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let p = HttpProvider::new(
            &format!("http://{addr}/send"),
            SecretString::from("k"),
            "MAIRIE",
            Duration::from_millis(200),
            None,
        )
        .expect("provider");
        match p.send(&msg(1)).await {
            Err(SendError::Retryable(e)) => assert_eq!(e, "provider timeout"),
            other => panic!("{other:?}"),
        }
        // Nothing listens on this one.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let p = HttpProvider::new(
            &format!("http://{addr}/send"),
            SecretString::from("k"),
            "MAIRIE",
            Duration::from_millis(500),
            None,
        )
        .expect("provider");
        assert!(matches!(
            p.send(&msg(2)).await,
            Err(SendError::Retryable(_))
        ));
    }
}
