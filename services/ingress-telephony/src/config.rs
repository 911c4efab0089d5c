//! The `[telephony]` configuration section.

use guichet_platform::config::{ConfigError, parse_addr, validate_database_url};
use guichet_platform::contact::Phone;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    /// Where the PBX posts CTI events (`POST /api/v1/cti/<token>`).
    pub http_addr: String,
    /// The secret path segment of the webhook URL, as in Zammad. Empty:
    /// every webhook request is refused (401) until one is configured.
    pub webhook_token: SecretString,
    /// Caller numbers the PBX is told to reject (`{"action":"reject","reason":"busy"}`).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub blocked_numbers: Vec<String>,
    /// PBX queues (IVR branches) that mean "call me back": a call that ends
    /// in one of them is a callback request.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub callback_queues: Vec<String>,
    /// How the PBX names its voicemail in `user` / `answeringNumber`: a call
    /// answered by it is a missed call.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub voicemail_users: Vec<String>,
    /// Asterisk `dcontext` values of outbound calls in CDR files.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub cdr_outbound_contexts: Vec<String>,
    /// CDR times are Paris local time (Asterisk's default) unless false (UTC).
    pub cdr_local_time: bool,
    /// Largest accepted CDR upload.
    pub max_cdr_bytes: usize,
    /// A call still ringing or answered this long after it began never got
    /// its hangup (a PBX restart, a lost webhook): it is ended as lost.
    #[serde(default = "default_stale_call_minutes")]
    pub stale_call_minutes: u64,
    /// How often calls are checked for a missing hangup.
    #[serde(default = "default_stale_sweep_secs")]
    pub stale_sweep_secs: u64,
}

fn default_stale_call_minutes() -> u64 {
    120
}

fn default_stale_sweep_secs() -> u64 {
    60
}

/// A list in TOML, or a comma-separated string (from an environment
/// variable, e.g. `GUICHET__TELEPHONY__BLOCKED_NUMBERS="0699999999,0611111111"`).
fn list_or_comma_separated<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
        // The environment layer parses "0699999999" as a number: the
        // leading 0 is lost, but a French number without it still parses
        // to the same E.164 form.
        Number(i64),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(v) => v,
        ListOrString::String(s) => s
            .split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect(),
        ListOrString::Number(n) => vec![n.to_string()],
    })
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("telephony.database_url", &self.database_url)?;
        parse_addr("telephony.http_addr", &self.http_addr)?;
        if self.stale_call_minutes == 0 {
            return Err(ConfigError::invalid(
                "telephony.stale_call_minutes",
                "must be at least 1",
            ));
        }
        if self.stale_sweep_secs == 0 {
            return Err(ConfigError::invalid(
                "telephony.stale_sweep_secs",
                "must be at least 1",
            ));
        }
        let token = self.webhook_token.expose_secret();
        if !token.is_empty()
            && (token.len() < 16
                || !token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(ConfigError::invalid(
                "telephony.webhook_token",
                "must be at least 16 ASCII letters, digits, '-' or '_'",
            ));
        }
        for (i, n) in self.blocked_numbers.iter().enumerate() {
            Phone::parse(n)
                .map_err(|e| ConfigError::invalid(format!("telephony.blocked_numbers[{i}]"), e))?;
        }
        if self.max_cdr_bytes == 0 {
            return Err(ConfigError::invalid(
                "telephony.max_cdr_bytes",
                "must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DEFAULTS: &str = r#"
database_url = "sqlite://x.db"
http_addr = "127.0.0.1:0"
webhook_token = ""
blocked_numbers = []
callback_queues = ["rappel"]
voicemail_users = ["voicemail"]
cdr_outbound_contexts = ["from-internal"]
cdr_local_time = true
max_cdr_bytes = 1000
"#;

    fn load(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        guichet_platform::config::load::<Config>(
            DEFAULTS,
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn lists_come_from_the_environment_comma_separated() {
        let c = load(&[("GUICHET__BLOCKED_NUMBERS", "06 99 99 99 99, +33123456789")]).unwrap();
        assert_eq!(c.blocked_numbers, vec!["06 99 99 99 99", "+33123456789"]);
        c.validate().unwrap();
        let one = load(&[("GUICHET__BLOCKED_NUMBERS", "0699999999")]).unwrap();
        assert_eq!(
            Phone::parse(&one.blocked_numbers[0]).unwrap().as_str(),
            "+33699999999"
        );
    }

    #[test]
    fn a_short_token_and_a_bad_number_name_their_key() {
        let c = load(&[("GUICHET__WEBHOOK_TOKEN", "short")]).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("telephony.webhook_token")
        );
        let c = load(&[("GUICHET__BLOCKED_NUMBERS", "not a number, x")]).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("telephony.blocked_numbers[0]")
        );
    }
}
