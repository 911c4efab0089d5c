//! The town's identity: one `[town]` section (shipped in `town/town.toml`)
//! that every message and page signs with, instead of one name per role.
//!
//! It travels to the roles in [`crate::Deps`]: the notification role fills
//! the `{{town}}`, `{{town_short}}`, `{{town_address}}` and `{{town_website}}`
//! variables of every template from it and sends SMS under its sender id,
//! the signature and appointment roles put it on their pages, calendars and
//! codes.

use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Town {
    /// The commune's name ("Villeneuve"): "Mairie de Villeneuve" in messages.
    #[serde(default)]
    pub name: String,
    /// A shorter form for SMS, where every character counts (the name when
    /// empty).
    #[serde(default)]
    pub short_name: String,
    /// The town hall's postal address, on one line.
    #[serde(default)]
    pub address: String,
    /// The town's website (https://…).
    #[serde(default)]
    pub website: String,
    /// The logo shown on the citizens' pages (https://…; empty: none).
    #[serde(default)]
    pub logo_url: String,
    /// The SMS sender id (at most 11 letters or digits; empty: the SMS
    /// provider's `notification.sms_http.sender`).
    #[serde(default)]
    pub sms_sender: String,
}

impl Town {
    /// The name SMS carry.
    pub fn sms_name(&self) -> &str {
        if self.short_name.trim().is_empty() {
            self.name.trim()
        } else {
            self.short_name.trim()
        }
    }

    /// "Mairie de Villeneuve" (the short name in SMS).
    pub fn hall(&self) -> String {
        format!("Mairie de {}", self.name.trim())
    }

    /// The template variables every message gets.
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        vec![
            ("town", self.name.trim().to_owned()),
            ("town_short", self.sms_name().to_owned()),
            ("town_address", self.address.trim().to_owned()),
            ("town_website", self.website.trim().to_owned()),
        ]
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                "town.name",
                "must name the town (in town/town.toml or GUICHET__TOWN__NAME)",
            ));
        }
        for (key, url) in [
            ("town.website", &self.website),
            ("town.logo_url", &self.logo_url),
        ] {
            if !url.is_empty() && !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(ConfigError::invalid(key, "must be an http(s) URL"));
            }
        }
        let s = &self.sms_sender;
        if !s.is_empty()
            && (s.chars().count() > 11 || !s.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return Err(ConfigError::invalid(
                "town.sms_sender",
                "must be at most 11 ASCII letters or digits",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_name_falls_back_to_the_name_and_bad_values_name_their_key() {
        let mut t = Town {
            name: "Villeneuve-sur-Lot".into(),
            ..Default::default()
        };
        assert_eq!(t.sms_name(), "Villeneuve-sur-Lot");
        t.short_name = "Villeneuve".into();
        assert_eq!(t.sms_name(), "Villeneuve");
        assert_eq!(t.hall(), "Mairie de Villeneuve-sur-Lot");
        t.validate().unwrap();
        t.sms_sender = "MAIRIE DE VILLENEUVE".into();
        assert!(
            t.validate()
                .unwrap_err()
                .to_string()
                .contains("town.sms_sender")
        );
        t.sms_sender = String::new();
        t.name = " ".into();
        assert!(t.validate().unwrap_err().to_string().contains("town.name"));
    }
}
