//! The `[notification]` configuration section, validated at start-up with
//! errors that name the key. Secrets (provider key, SMTP password, webhook
//! token) are `SecretString`s: never printed, never logged.

use std::path::PathBuf;

use guichet_platform::config::{ConfigError, validate_database_url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Empty: a SQLite file notification.db under data_dir.
    pub database_url: String,
    /// Where dossier answers GetDossier/GetCitizen (reminders); ignored when
    /// dossier runs in the same process.
    pub dossier_url: String,
    /// The town's identity (`[town]`, given by the process, not this
    /// section): `{{town}}` and the other town variables of every message.
    #[serde(skip)]
    pub town: guichet_platform::town::Town,
    /// Durable consumer name on stream NOTIFY (`<name>-reminders` and
    /// `<name>-bounces` on EVENTS).
    pub consumer: String,
    /// Requests handled at once by the consumers.
    pub concurrency: usize,
    /// Extra or overriding templates (`<id>.toml`); empty: the built-in
    /// templates only.
    pub templates_dir: PathBuf,
    /// HTTP listener of the SMS delivery-report webhook; empty: none.
    pub http_addr: String,
    /// How often the delivery worker looks for due messages (it is also
    /// woken by every new request).
    pub worker_interval_ms: u64,
    /// Messages claimed per pass.
    pub batch_size: u64,
    /// A replica holds a claimed message this long; a crashed replica's
    /// claims are taken over after it.
    pub claim_lease_secs: u64,
    /// Failed attempts before a message is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with ±25 % jitter…
    pub backoff_base_ms: u64,
    /// …up to this.
    pub backoff_max_secs: u64,
    /// A `reminder_due` event older than this is acknowledged without a
    /// message: a role deployed on an installation with a history must not
    /// send every past reminder (the EVENTS stream replays from its start).
    pub reminder_max_age_hours: u32,
    /// Terminal messages (sent, delivered, expired…) and their payloads are
    /// deleted this many days after their last change (0: kept).
    pub retention_days: u32,
    /// "sink" (development: one JSON line per SMS in sms_sink_dir/sms.jsonl)
    /// or "http" (the provider of [notification.sms_http]).
    pub sms_provider: String,
    /// Empty: <data_dir>/sms-sink.
    pub sms_sink_dir: PathBuf,
    /// At most this many SMS per phone number per hour; more are deferred,
    /// not dropped (0: no limit). No SMS storm if a loop slips through.
    pub sms_max_per_hour: u32,
    pub sms_http: SmsHttpConfig,
    pub email: EmailConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsHttpConfig {
    /// The provider's send endpoint (JSON POST).
    pub url: String,
    /// Sent as `Authorization: Bearer <api_key>`.
    pub api_key: SecretString,
    /// Alphanumeric sender id (11 characters at most) or a number.
    pub sender: String,
    pub timeout_ms: u64,
    /// Secret part of the delivery-report URL
    /// `POST <http_addr>/sms/delivery-report/<report_token>`; empty: reports
    /// are refused.
    pub report_token: SecretString,
    /// Public base URL of the webhook given to the provider with each
    /// message (`status_callback`); empty: not sent.
    pub report_base_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// "smtp", or "sink" (development: each message written as
    /// <sink_dir>/<notification id>.eml).
    pub transport: String,
    /// Empty: <data_dir>/email-sink.
    pub sink_dir: PathBuf,
    pub smtp_host: String,
    pub smtp_port: u16,
    /// "none" (a local relay), "starttls" or "tls" (implicit TLS, port 465).
    pub smtp_tls: String,
    pub smtp_username: String,
    pub smtp_password: SecretString,
    pub timeout_secs: u64,
    /// `Mairie de Villeneuve <mairie@villeneuve.fr>`.
    pub from: String,
    /// Where answers go (the email channel's mailbox); empty: none.
    pub reply_to: String,
    /// Right-hand side of generated Message-IDs; empty: the From domain.
    pub message_id_domain: String,
    /// At most this many messages per recipient address per hour; more are
    /// deferred, not dropped (0: no limit).
    pub max_per_hour: u32,
    /// List-Unsubscribe of "information" messages (mailto: or https: URL);
    /// empty: none.
    pub list_unsubscribe: String,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("notification.database_url", &self.database_url)?;
        if !self.dossier_url.starts_with("http://") && !self.dossier_url.starts_with("https://") {
            return Err(ConfigError::invalid(
                "notification.dossier_url",
                "must be an http(s) URL",
            ));
        }
        if self.consumer.is_empty()
            || !self
                .consumer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                "notification.consumer",
                "must be letters, digits, - or _",
            ));
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err(ConfigError::invalid(
                "notification.concurrency",
                "must be between 1 and 256",
            ));
        }
        if !self.http_addr.is_empty() && self.http_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "notification.http_addr",
                "must be host:port",
            ));
        }
        for (key, v) in [
            ("notification.worker_interval_ms", self.worker_interval_ms),
            ("notification.batch_size", self.batch_size),
            ("notification.claim_lease_secs", self.claim_lease_secs),
            ("notification.backoff_base_ms", self.backoff_base_ms),
            ("notification.backoff_max_secs", self.backoff_max_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.reminder_max_age_hours == 0 {
            return Err(ConfigError::invalid(
                "notification.reminder_max_age_hours",
                "must be at least 1",
            ));
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(ConfigError::invalid(
                "notification.max_attempts",
                "must be between 1 and 100",
            ));
        }
        match self.sms_provider.as_str() {
            "sink" => {}
            "http" => {
                let h = &self.sms_http;
                if !h.url.starts_with("http://") && !h.url.starts_with("https://") {
                    return Err(ConfigError::invalid(
                        "notification.sms_http.url",
                        "must be an http(s) URL when sms_provider is http",
                    ));
                }
                if h.sender.is_empty() || h.sender.chars().count() > 16 {
                    return Err(ConfigError::invalid(
                        "notification.sms_http.sender",
                        "must be 1 to 16 characters",
                    ));
                }
                if h.timeout_ms == 0 {
                    return Err(ConfigError::invalid(
                        "notification.sms_http.timeout_ms",
                        "must be at least 1",
                    ));
                }
            }
            _ => {
                return Err(ConfigError::invalid(
                    "notification.sms_provider",
                    "must be sink or http",
                ));
            }
        }
        let token = self.sms_http.report_token.expose_secret();
        if !token.is_empty()
            && (token.len() < 16
                || !token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(ConfigError::invalid(
                "notification.sms_http.report_token",
                "must be at least 16 letters, digits, - or _",
            ));
        }
        let e = &self.email;
        match e.transport.as_str() {
            "sink" => {}
            "smtp" => {
                if e.smtp_host.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        "notification.email.smtp_host",
                        "must be set when transport is smtp",
                    ));
                }
                if e.smtp_port == 0 {
                    return Err(ConfigError::invalid(
                        "notification.email.smtp_port",
                        "must be a port number",
                    ));
                }
            }
            _ => {
                return Err(ConfigError::invalid(
                    "notification.email.transport",
                    "must be smtp or sink",
                ));
            }
        }
        if !["none", "starttls", "tls"].contains(&e.smtp_tls.as_str()) {
            return Err(ConfigError::invalid(
                "notification.email.smtp_tls",
                "must be none, starttls or tls",
            ));
        }
        if e.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::invalid(
                "notification.email.from",
                "must be an address, e.g. \"Mairie de Villeneuve <mairie@villeneuve.fr>\"",
            ));
        }
        if !e.reply_to.is_empty() && e.reply_to.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::invalid(
                "notification.email.reply_to",
                "must be an address or empty",
            ));
        }
        if !e.list_unsubscribe.is_empty()
            && !e.list_unsubscribe.starts_with("mailto:")
            && !e.list_unsubscribe.starts_with("https://")
        {
            return Err(ConfigError::invalid(
                "notification.email.list_unsubscribe",
                "must be a mailto: or https: URL, or empty",
            ));
        }
        if e.timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "notification.email.timeout_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The domain of generated Message-IDs.
    pub fn message_id_domain(&self) -> String {
        if !self.email.message_id_domain.is_empty() {
            return self.email.message_id_domain.clone();
        }
        self.email
            .from
            .parse::<lettre::message::Mailbox>()
            .map(|m| m.email.domain().to_owned())
            .unwrap_or_else(|_| "guichet.invalid".into())
    }
}
