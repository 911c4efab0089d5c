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
    /// The waiting-room board feed (Server-Sent Events): GET /board/<site>/events.
    pub http_addr: String,
    /// Priority categories and their weight in minutes: a ticket of the
    /// category is called as if it had arrived that much earlier. Priority
    /// tickets are served sooner, and a normal ticket that has waited longer
    /// than the weight still goes first (fairness).
    pub priorities: BTreeMap<String, u32>,
    /// Recalls a ticket must have had before it may be marked a no-show.
    pub recalls_before_no_show: u32,
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
        guichet_platform::config::parse_addr("counter.http_addr", &self.http_addr)?;
        for (name, weight) in &self.priorities {
            if *weight > 24 * 60 {
                return Err(ConfigError::invalid(
                    format!("counter.priorities.{name}"),
                    "must be at most 1440 minutes",
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
