//! The `[signature]` configuration section, validated at start-up with
//! errors that name the key. Secrets (the code HMAC key, the seal's private
//! key) are wrapped so they cannot be printed.

use guichet_platform::config::{ConfigError, validate_database_url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    /// Where dossier answers (ignored when it runs in-process).
    pub dossier_url: String,
    /// Citizen signing pages (`/s/<token>`); empty: not served.
    pub http_addr: String,
    /// Public base of the signing pages, as citizens reach them.
    pub public_base_url: String,
    /// The town's identity (`[town]`, given by the process, not this
    /// section): in SMS, on pages and in the evidence.
    #[serde(skip)]
    pub town: guichet_platform::town::Town,
    /// French consent text shown when a request has none of its own.
    pub default_consent_text: String,
    /// Requests expire after this many days unless given an expiry.
    pub default_expiry_days: u32,
    /// A one-time code is valid this long.
    pub code_ttl_minutes: u32,
    /// Wrong attempts allowed per code.
    pub max_attempts_per_code: u32,
    /// Codes a signer may receive before the request locks.
    pub max_codes_per_signer: u32,
    /// Minimum interval between two codes to one signer.
    pub resend_interval_secs: u32,
    /// Uploaded documents larger than this are refused.
    pub max_document_bytes: u64,
    /// Key of the HMAC-SHA256 that stores codes (at least 32 characters).
    pub code_secret: SecretString,
    /// How often the expiry and job worker runs.
    pub job_interval_secs: u64,
    /// Peers whose X-Forwarded-For is believed (IP addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// RFC 3161 time-stamping authority for sealed evidence
    /// (`application/timestamp-query` over HTTP); empty: none.
    #[serde(default)]
    pub tsa_url: String,
    #[serde(default = "default_tsa_timeout")]
    pub tsa_timeout_secs: u64,
    pub seal: SealConfig,
}

fn default_tsa_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    /// Id of the current sealing key, written into every evidence record.
    pub key_id: String,
    /// Ed25519 private key: PKCS#8 PEM, or base64 of the 32-byte seed.
    pub private_key: SecretString,
    /// Or a file holding it (a Kubernetes Secret volume).
    #[serde(default)]
    pub private_key_file: String,
    /// Earlier keys, kept so old evidence stays verifiable.
    #[serde(default)]
    pub previous_keys: Vec<PublicKeyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    pub key_id: String,
    /// SPKI PEM, or base64 of the 32-byte public key.
    pub public_key: String,
}

pub const DEFAULT_CONSENT: &str = "Je reconnais avoir pris connaissance du document et j'accepte de le signer électroniquement. Le code reçu par SMS vaut signature.";

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("signature.database_url", &self.database_url)?;
        if !self.public_base_url.starts_with("http://")
            && !self.public_base_url.starts_with("https://")
        {
            return Err(ConfigError::invalid(
                "signature.public_base_url",
                "must be an http(s) URL",
            ));
        }
        if !self.http_addr.is_empty() && self.http_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "signature.http_addr",
                "must be host:port",
            ));
        }
        let ranges: [(&str, u64, u64, u64); 7] = [
            (
                "signature.default_expiry_days",
                self.default_expiry_days.into(),
                1,
                365,
            ),
            (
                "signature.code_ttl_minutes",
                self.code_ttl_minutes.into(),
                1,
                60,
            ),
            (
                "signature.max_attempts_per_code",
                self.max_attempts_per_code.into(),
                1,
                10,
            ),
            (
                "signature.max_codes_per_signer",
                self.max_codes_per_signer.into(),
                1,
                20,
            ),
            (
                "signature.resend_interval_secs",
                self.resend_interval_secs.into(),
                0,
                3600,
            ),
            (
                "signature.max_document_bytes",
                self.max_document_bytes,
                1024,
                100 << 20,
            ),
            (
                "signature.job_interval_secs",
                self.job_interval_secs,
                1,
                3600,
            ),
        ];
        for (key, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be between {lo} and {hi}"),
                ));
            }
        }
        if self.code_secret.expose_secret().len() < 32 {
            return Err(ConfigError::invalid(
                "signature.code_secret",
                "must be at least 32 characters",
            ));
        }
        if self.default_consent_text.trim().is_empty() {
            return Err(ConfigError::invalid(
                "signature.default_consent_text",
                "must not be empty",
            ));
        }
        for (i, p) in self.trusted_proxies.iter().enumerate() {
            if p.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::invalid(
                    format!("signature.trusted_proxies[{i}]"),
                    "must be an IP address",
                ));
            }
        }
        let tsa = self.tsa_url.as_str();
        if !(tsa.is_empty() || tsa.starts_with("http://") || tsa.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "signature.tsa_url",
                "must be an http:// or https:// URL, or empty",
            ));
        }
        crate::seal::Keys::from_config(&self.seal)?;
        Ok(())
    }

    pub fn consent_or_default(&self, text: &str) -> String {
        if text.trim().is_empty() {
            self.default_consent_text.clone()
        } else {
            text.trim().to_owned()
        }
    }
}
