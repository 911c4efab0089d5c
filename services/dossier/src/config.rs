//! The `[dossier]` configuration section.

use std::path::PathBuf;

use guichet_platform::config::{ConfigError, validate_database_url};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    /// Prefix of human dossier references: `VIN` → `VIN-2026-000123`.
    pub reference_prefix: String,
    /// Directory of `*.toml` process definitions; empty: the shipped ones.
    pub processes_dir: PathBuf,
    /// Process of dossiers opened before anyone qualified the request.
    pub default_process: String,
    /// Re-read `processes_dir` this often (0: never).
    pub catalog_reload_secs: u64,
    /// How often due process timers fire.
    pub timer_interval_secs: u64,
    /// How often the retention purge runs.
    pub purge_interval_secs: u64,
    /// Largest document accepted.
    pub max_document_bytes: u64,
    /// Media types accepted for documents.
    pub document_media_types: Vec<String>,
    /// Opening days and hours for SLA targets in working hours/days.
    #[serde(default)]
    pub calendar: guichet_platform::calendar::CalendarConfig,
    /// A request attaches by itself to a known citizen whose evidence scores
    /// at least this (same name and same address: 0.95); below, the
    /// candidates go to the agent. 1.0: never automatically.
    #[serde(default = "default_identity_auto_link")]
    pub identity_auto_link: f32,
    /// The signature role, for `request_signature` state actions (set
    /// automatically when it runs in the same process; empty: none).
    #[serde(default)]
    pub signature_url: String,
    /// The appointment role, for `book_appointment` state actions (set
    /// automatically when it runs in the same process; empty: none).
    #[serde(default)]
    pub appointment_url: String,
    /// How often due state actions are retried (they also run at once after
    /// the state change that planned them).
    #[serde(default = "default_action_interval")]
    pub action_interval_secs: u64,
    /// Where the process studio publishes a new version: `database` (every
    /// replica reads it from there), or `directory` (a file
    /// `<id>.v<version>.toml` in `processes_dir`, for towns that keep their
    /// processes as reviewed files).
    #[serde(default = "default_studio_writes")]
    pub studio_writes: String,
}

fn default_studio_writes() -> String {
    crate::catalog::DATABASE.into()
}

fn default_action_interval() -> u64 {
    2
}

fn default_identity_auto_link() -> f32 {
    0.9
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("dossier.database_url", &self.database_url)?;
        let p = &self.reference_prefix;
        if p.is_empty()
            || p.len() > 8
            || !p
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(ConfigError::invalid(
                "dossier.reference_prefix",
                "must be 1 to 8 upper-case ASCII letters or digits",
            ));
        }
        if self.timer_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "dossier.timer_interval_secs",
                "must be at least 1",
            ));
        }
        if self.purge_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "dossier.purge_interval_secs",
                "must be at least 1",
            ));
        }
        if self.max_document_bytes == 0 {
            return Err(ConfigError::invalid(
                "dossier.max_document_bytes",
                "must be at least 1",
            ));
        }
        if self.document_media_types.iter().any(|m| !m.contains('/')) {
            return Err(ConfigError::invalid(
                "dossier.document_media_types",
                "every entry must be a media type such as application/pdf",
            ));
        }
        guichet_platform::calendar::BusinessCalendar::new(&self.calendar, "dossier.calendar")?;
        if !(0.5..=1.0).contains(&self.identity_auto_link) {
            return Err(ConfigError::invalid(
                "dossier.identity_auto_link",
                "must be between 0.5 and 1.0 (1.0: never link automatically)",
            ));
        }
        match self.studio_writes.as_str() {
            "database" => {}
            "directory" if !self.processes_dir.as_os_str().is_empty() => {}
            "directory" => {
                return Err(ConfigError::invalid(
                    "dossier.studio_writes",
                    "`directory` needs dossier.processes_dir",
                ));
            }
            _ => {
                return Err(ConfigError::invalid(
                    "dossier.studio_writes",
                    "must be `database` or `directory`",
                ));
            }
        }
        if self.default_process.is_empty() {
            return Err(ConfigError::invalid(
                "dossier.default_process",
                "must not be empty",
            ));
        }
        Ok(())
    }
}
