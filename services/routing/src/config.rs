//! The `[routing]` configuration section.

use guichet_platform::config::{ConfigError, validate_database_url};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    /// gRPC URL of the dossier role (the process's own port in `guichet up`).
    pub dossier_url: String,
    /// Durable consumer name on INTAKE, shared by every routing replica.
    pub consumer: String,
    /// Intake events handled at once by one replica.
    pub concurrency: usize,
    /// Priority of items no rule has classified (higher is served first).
    pub default_priority: i32,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("routing.database_url", &self.database_url)?;
        if !self.dossier_url.starts_with("http://") && !self.dossier_url.starts_with("https://") {
            return Err(ConfigError::invalid(
                "routing.dossier_url",
                "expected an http:// or https:// URL",
            ));
        }
        if self.consumer.is_empty()
            || !self
                .consumer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                "routing.consumer",
                "must be ASCII letters, digits, '-' or '_'",
            ));
        }
        if !(1..=1024).contains(&self.concurrency) {
            return Err(ConfigError::invalid(
                "routing.concurrency",
                "must be between 1 and 1024",
            ));
        }
        Ok(())
    }
}
