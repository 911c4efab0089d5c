//! The `[counter]` configuration section.

use std::collections::BTreeMap;

use guichet_platform::config::{ConfigError, validate_database_url};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    /// Service queues and their ticket letters: `general = "G"` → G001.
    /// This and the other town data (default service and site, priorities,
    /// appointment mappings) come from the town layer (`town/counter.toml`,
    /// or the directory `town_dir` names).
    #[serde(default)]
    pub services: BTreeMap<String, String>,
    /// What a citizen reads for each service at the kiosk and on the
    /// board (`passeports = "Passeports et cartes d'identité"`); a service
    /// without one shows its name.
    #[serde(default)]
    pub service_labels: BTreeMap<String, String>,
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
    #[serde(default)]
    pub priorities: BTreeMap<String, u32>,
    /// Recalls a ticket must have had before it may be marked a no-show.
    pub recalls_before_no_show: u32,
    /// The appointment role's gRPC URL; empty: check-in is off.
    pub appointment_url: String,
    /// Check-in opens this long before the appointment.
    pub appointment_early_minutes: u32,
    /// Until this long after the start, the ticket keeps its priority.
    pub appointment_grace_minutes: u32,
    /// Within the window, the ticket ranks as if it had arrived this long
    /// before the appointment time.
    pub appointment_priority_minutes: u32,
    /// Counter service of each appointment type (else `default_service`).
    #[serde(default)]
    pub appointment_services: BTreeMap<String, String>,
    /// Counter site of each appointment site (else the same name).
    #[serde(default)]
    pub appointment_sites: BTreeMap<String, String>,
}

impl Config {
    /// The French label of `service` (its name when none is configured).
    pub fn service_label(&self, service: &str) -> String {
        match self.service_labels.get(service) {
            Some(label) => label.clone(),
            None => {
                let name = service.replace(['-', '_'], " ");
                let mut c = name.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            }
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, label) in &self.service_labels {
            if !self.services.contains_key(name) {
                return Err(ConfigError::invalid(
                    format!("counter.service_labels.{name}"),
                    format!("`{name}` is not one of counter.services"),
                ));
            }
            if label.trim().is_empty() || label.chars().count() > 80 {
                return Err(ConfigError::invalid(
                    format!("counter.service_labels.{name}"),
                    "must be 1 to 80 characters",
                ));
            }
        }
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
        let url = self.appointment_url.as_str();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "counter.appointment_url",
                "must be an http:// or https:// URL, or empty",
            ));
        }
        for (key, value) in [
            ("appointment_early_minutes", self.appointment_early_minutes),
            ("appointment_grace_minutes", self.appointment_grace_minutes),
            (
                "appointment_priority_minutes",
                self.appointment_priority_minutes,
            ),
        ] {
            if value > 24 * 60 {
                return Err(ConfigError::invalid(
                    format!("counter.{key}"),
                    "must be at most 1440 minutes",
                ));
            }
        }
        for (kind, service) in &self.appointment_services {
            if !self.services.contains_key(service) {
                return Err(ConfigError::invalid(
                    format!("counter.appointment_services.{kind}"),
                    format!("`{service}` is not one of counter.services"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            database_url: "sqlite::memory:".into(),
            services: [("passeports", "P"), ("urbanisme", "U"), ("etat-civil", "E")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            service_labels: [(
                "passeports".to_owned(),
                "Passeports et cartes d'identité".to_owned(),
            )]
            .into_iter()
            .collect(),
            default_service: "passeports".into(),
            default_site: "mairie".into(),
            http_addr: "127.0.0.1:0".into(),
            priorities: BTreeMap::new(),
            recalls_before_no_show: 1,
            appointment_url: String::new(),
            appointment_early_minutes: 60,
            appointment_grace_minutes: 15,
            appointment_priority_minutes: 10,
            appointment_services: BTreeMap::new(),
            appointment_sites: BTreeMap::new(),
        }
    }

    #[test]
    fn services_read_as_their_label_or_their_name() {
        let c = config();
        assert_eq!(
            c.service_label("passeports"),
            "Passeports et cartes d'identité"
        );
        assert_eq!(c.service_label("urbanisme"), "Urbanisme");
        assert_eq!(c.service_label("etat-civil"), "Etat civil");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_label_for_an_unknown_service_is_refused() {
        let mut c = config();
        c.service_labels
            .insert("cadastre".into(), "Cadastre".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("counter.service_labels.cadastre"), "{err}");
    }
}
