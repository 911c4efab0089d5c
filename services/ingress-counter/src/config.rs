//! The `[counter]` configuration section.

use std::collections::BTreeMap;

use guichet_platform::config::{ConfigError, validate_database_url};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    /// Service queues and their ticket letters: `general = "G"` → G001.
    pub services: BTreeMap<String, String>,
    /// Service of a ticket issued without one.
    pub default_service: String,
    /// Site of a ticket issued without one.
    pub default_site: String,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("counter.database_url", &self.database_url)?;
        for (name, letter) in &self.services {
            if letter.len() != 1 || !letter.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(ConfigError::invalid(
                    format!("counter.services.{name}"),
                    "must be one upper-case letter",
                ));
            }
        }
        if !self.services.contains_key(&self.default_service) {
            return Err(ConfigError::invalid(
                "counter.default_service",
                format!("`{}` is not one of counter.services", self.default_service),
            ));
        }
        Ok(())
    }
}
