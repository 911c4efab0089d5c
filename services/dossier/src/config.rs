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
    /// Directory of `*.toml` process definitions.
    pub processes_dir: PathBuf,
    /// Process of dossiers opened before anyone qualified the request.
    pub default_process: String,
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
        if self.default_process.is_empty() {
            return Err(ConfigError::invalid(
                "dossier.default_process",
                "must not be empty",
            ));
        }
        Ok(())
    }
}
