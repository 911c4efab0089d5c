//! The `[email]` configuration section.

use std::path::PathBuf;

use guichet_platform::config::{ConfigError, parse_addr, validate_database_url};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    /// SMTP listeners (a city mail server relays to them). Empty: none.
    #[serde(default, deserialize_with = "list")]
    pub smtp_addrs: Vec<String>,
    /// LMTP listeners (a mail server delivering to guichet as a mailbox).
    #[serde(default, deserialize_with = "list")]
    pub lmtp_addrs: Vec<String>,
    /// The name this listener greets with (EHLO/LHLO answer) and the domain of
    /// the Message-IDs it generates.
    pub hostname: String,
    /// Recipient domains accepted (e.g. `ville.fr`); others get 550 at RCPT.
    #[serde(deserialize_with = "list")]
    pub accepted_domains: Vec<String>,
    /// Messages larger than this are refused (SIZE extension, 552).
    pub max_message_bytes: u64,
    /// A part larger than this is not stored: recorded as rejected (`too_large`).
    pub max_attachment_bytes: u64,
    /// At most this many parts are stored per message; the rest are rejected.
    pub max_attachments: usize,
    /// Media types stored as documents (exact, or `type/*`); others are
    /// recorded as rejected (`forbidden_type`).
    #[serde(deserialize_with = "list")]
    pub allowed_media_types: Vec<String>,
    /// STARTTLS: PEM certificate chain and private key. Both empty: no STARTTLS.
    #[serde(default)]
    pub tls_cert_file: PathBuf,
    #[serde(default)]
    pub tls_key_file: PathBuf,
    /// Dossier reference prefix (the dossier role's `reference_prefix`).
    pub reference_prefix: String,
    /// At most one automatic acknowledgement per dossier in this period.
    pub ack_period_secs: u64,
    /// At most this many acknowledgements to one address in that period
    /// (a robot writing new requests without loop headers gets no storm).
    pub ack_max_per_address: u32,
    /// Sender local parts never acknowledged (besides mailer-daemon and postmaster).
    #[serde(deserialize_with = "list")]
    pub no_ack_local_parts: Vec<String>,
    /// Idle SMTP/LMTP sessions are closed after this long.
    pub session_timeout_secs: u64,
    /// Sessions served at once per listener; beyond, new connections get 421.
    pub max_sessions: usize,
    /// Sessions one client address may hold at once (the town's relay
    /// opens a few in parallel); beyond, 421, so one client cannot lock
    /// the others out.
    pub max_sessions_per_address: usize,
    /// The authserv-ids of the town's relays (`mx.ville.fr`): only their
    /// `Authentication-Results` headers say whether a sender is verified.
    /// Empty: no sender is verified (see `sender`).
    #[serde(default, deserialize_with = "list")]
    pub trusted_authserv_ids: Vec<String>,
    /// More messages than this from one sender within
    /// `sender_burst_window_secs` are a burst: accepted, recorded on the
    /// sender's dossier, and added to its waiting work item instead of
    /// queueing one each (counted per process).
    pub sender_burst_max: u32,
    pub sender_burst_window_secs: u64,
    /// The dossier role: who may read a dossier's mail is its decision
    /// (restricted processes, audited reads), asked with the caller's token.
    pub dossier_url: String,
    pub imap: ImapConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// Empty: no IMAP polling.
    #[serde(default)]
    pub host: String,
    pub port: u16,
    /// "tls" (implicit TLS, port 993), or "plain" (local servers only).
    pub security: String,
    #[serde(default)]
    pub username: String,
    /// Set GUICHET__EMAIL__IMAP__PASSWORD; never logged.
    #[serde(default)]
    pub password: secrecy::SecretString,
    pub mailbox: String,
    /// Where processed messages are moved (created when missing).
    pub processed_mailbox: String,
    /// Polling interval when the server has no IDLE, and the longest IDLE wait.
    pub poll_interval_ms: u64,
    /// Use IDLE when the server offers it.
    pub idle: bool,
    /// Additional PEM CA certificate (a city's own CA); empty: web PKI roots.
    #[serde(default)]
    pub ca_file: PathBuf,
}

/// A list given as a TOML array, or as one comma-separated string (what an
/// environment variable such as `GUICHET__EMAIL__SMTP_ADDRS` can carry).
fn list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("email.database_url", &self.database_url)?;
        for a in &self.smtp_addrs {
            parse_addr("email.smtp_addrs", a)?;
        }
        for a in &self.lmtp_addrs {
            parse_addr("email.lmtp_addrs", a)?;
        }
        if self.hostname.trim().is_empty() || self.hostname.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "email.hostname",
                "must be a host name such as guichet.ville.fr",
            ));
        }
        if self.accepted_domains.is_empty()
            || self
                .accepted_domains
                .iter()
                .any(|d| d.trim().is_empty() || d.contains('@') || d.contains(char::is_whitespace))
        {
            return Err(ConfigError::invalid(
                "email.accepted_domains",
                "must list at least one domain such as ville.fr (no @)",
            ));
        }
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::invalid(format!("email.{key}"), "must be > 0"))
            } else {
                Ok(())
            }
        };
        positive("max_message_bytes", self.max_message_bytes)?;
        positive("max_attachment_bytes", self.max_attachment_bytes)?;
        positive("max_attachments", self.max_attachments as u64)?;
        positive("session_timeout_secs", self.session_timeout_secs)?;
        positive("max_sessions", self.max_sessions as u64)?;
        positive(
            "max_sessions_per_address",
            self.max_sessions_per_address as u64,
        )?;
        positive("sender_burst_max", u64::from(self.sender_burst_max))?;
        positive("sender_burst_window_secs", self.sender_burst_window_secs)?;
        if !(self.dossier_url.starts_with("http://") || self.dossier_url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "email.dossier_url",
                "must be an http:// or https:// URL of the dossier role",
            ));
        }
        positive("ack_max_per_address", u64::from(self.ack_max_per_address))?;
        if self
            .allowed_media_types
            .iter()
            .any(|m| !m.contains('/') || m.contains(char::is_whitespace))
        {
            return Err(ConfigError::invalid(
                "email.allowed_media_types",
                "entries are media types such as application/pdf or image/*",
            ));
        }
        match (
            self.tls_cert_file.as_os_str().is_empty(),
            self.tls_key_file.as_os_str().is_empty(),
        ) {
            (true, true) => {}
            (false, false) => {
                for (key, p) in [
                    ("email.tls_cert_file", &self.tls_cert_file),
                    ("email.tls_key_file", &self.tls_key_file),
                ] {
                    if !p.is_file() {
                        return Err(ConfigError::invalid(
                            key,
                            format!("{} is not a readable file", p.display()),
                        ));
                    }
                }
            }
            (true, false) => {
                return Err(ConfigError::invalid(
                    "email.tls_cert_file",
                    "is empty while email.tls_key_file is set",
                ));
            }
            (false, true) => {
                return Err(ConfigError::invalid(
                    "email.tls_key_file",
                    "is empty while email.tls_cert_file is set",
                ));
            }
        }
        if self.reference_prefix.is_empty()
            || self.reference_prefix.len() > 8
            || !self
                .reference_prefix
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(ConfigError::invalid(
                "email.reference_prefix",
                "must be 1 to 8 upper-case letters or digits",
            ));
        }
        let imap = &self.imap;
        if !imap.host.trim().is_empty() {
            if !matches!(imap.security.as_str(), "tls" | "plain") {
                return Err(ConfigError::invalid(
                    "email.imap.security",
                    "must be `tls` or `plain`",
                ));
            }
            if imap.port == 0 {
                return Err(ConfigError::invalid("email.imap.port", "must be > 0"));
            }
            if imap.username.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "email.imap.username",
                    "is empty while email.imap.host is set",
                ));
            }
            if imap.mailbox.trim().is_empty() {
                return Err(ConfigError::invalid("email.imap.mailbox", "is empty"));
            }
            if imap.processed_mailbox.trim().is_empty() || imap.processed_mailbox == imap.mailbox {
                return Err(ConfigError::invalid(
                    "email.imap.processed_mailbox",
                    "must be a folder other than email.imap.mailbox",
                ));
            }
            if imap.poll_interval_ms == 0 {
                return Err(ConfigError::invalid(
                    "email.imap.poll_interval_ms",
                    "must be > 0",
                ));
            }
        }
        Ok(())
    }

    /// A fixed valid configuration for the fuzz target.
    pub fn fuzzing() -> Config {
        Config {
            database_url: "sqlite::memory:".into(),
            smtp_addrs: vec![],
            lmtp_addrs: vec![],
            hostname: "guichet.localhost".into(),
            accepted_domains: vec!["ville.fr".into()],
            max_message_bytes: 1 << 26,
            max_attachment_bytes: 1 << 20,
            max_attachments: 30,
            allowed_media_types: vec![
                "application/pdf".into(),
                "image/*".into(),
                "message/rfc822".into(),
            ],
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            reference_prefix: "VIN".into(),
            ack_period_secs: 3600,
            ack_max_per_address: 3,
            no_ack_local_parts: vec![],
            session_timeout_secs: 60,
            max_sessions: 256,
            max_sessions_per_address: 20,
            trusted_authserv_ids: vec![],
            sender_burst_max: 5,
            sender_burst_window_secs: 600,
            dossier_url: "http://127.0.0.1:50051".into(),
            imap: ImapConfig {
                host: String::new(),
                port: 993,
                security: "tls".into(),
                username: String::new(),
                password: secrecy::SecretString::from(""),
                mailbox: "INBOX".into(),
                processed_mailbox: "guichet-traites".into(),
                poll_interval_ms: 30000,
                idle: true,
                ca_file: PathBuf::new(),
            },
        }
    }

    /// Whether a recipient's domain is one this listener accepts.
    pub fn accepts(&self, address: &str) -> bool {
        let Some((_, domain)) = address.trim().rsplit_once('@') else {
            return false;
        };
        self.accepted_domains
            .iter()
            .any(|d| d.trim().eq_ignore_ascii_case(domain.trim_end_matches('.')))
    }

    /// Whether a part of this media type may be stored.
    pub fn allows(&self, media_type: &str) -> bool {
        let m = media_type.to_ascii_lowercase();
        self.allowed_media_types.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            match a.strip_suffix("/*") {
                Some(t) => m.split('/').next() == Some(t),
                None => a == m,
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn valid() -> Config {
        Config {
            database_url: "sqlite::memory:".into(),
            smtp_addrs: vec!["127.0.0.1:2525".into()],
            lmtp_addrs: vec![],
            hostname: "guichet.ville.fr".into(),
            accepted_domains: vec!["ville.fr".into()],
            max_message_bytes: 1 << 20,
            max_attachment_bytes: 1 << 19,
            max_attachments: 20,
            allowed_media_types: vec!["application/pdf".into(), "image/*".into()],
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            reference_prefix: "VIN".into(),
            ack_period_secs: 3600,
            ack_max_per_address: 3,
            no_ack_local_parts: vec!["noreply".into()],
            session_timeout_secs: 300,
            max_sessions: 256,
            max_sessions_per_address: 20,
            trusted_authserv_ids: vec![],
            sender_burst_max: 5,
            sender_burst_window_secs: 600,
            dossier_url: "http://127.0.0.1:50051".into(),
            imap: ImapConfig {
                host: String::new(),
                port: 993,
                security: "tls".into(),
                username: String::new(),
                password: secrecy::SecretString::from(""),
                mailbox: "INBOX".into(),
                processed_mailbox: "Traites".into(),
                poll_interval_ms: 30000,
                idle: true,
                ca_file: PathBuf::new(),
            },
        }
    }

    type Breaker = fn(&mut Config);

    #[test]
    fn email_config_errors_name_the_key() {
        assert!(valid().validate().is_ok());
        let cases: [(&str, Breaker); 7] = [
            ("email.smtp_addrs", |c| {
                c.smtp_addrs = vec!["nowhere".into()]
            }),
            ("email.accepted_domains", |c| c.accepted_domains.clear()),
            ("email.max_message_bytes", |c| c.max_message_bytes = 0),
            ("email.tls_key_file", |c| {
                c.tls_cert_file = "/etc/hostname".into()
            }),
            ("email.reference_prefix", |c| {
                c.reference_prefix = "vin".into()
            }),
            ("email.imap.security", |c| {
                c.imap.host = "imap.ville.fr".into();
                c.imap.username = "guichet".into();
                c.imap.security = "starttls-maybe".into()
            }),
            ("email.allowed_media_types", |c| {
                c.allowed_media_types = vec!["pdf".into()]
            }),
        ];
        for (key, break_it) in cases {
            let mut c = valid();
            break_it(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn email_recipient_domains_and_media_types() {
        let c = valid();
        assert!(c.accepts("contact@ville.fr"));
        assert!(c.accepts("Contact@VILLE.FR"));
        assert!(!c.accepts("contact@ailleurs.fr"));
        assert!(c.allows("image/png"));
        assert!(c.allows("application/PDF"));
        assert!(!c.allows("application/x-msdownload"));
    }
}
