//! The `[appointment]` configuration section: the role's settings and the
//! town's model (sites, desks with their weekly opening ranges, exceptions
//! and absences, appointment types). The model is town data reviewed like
//! code, like the process catalog: it comes from the town layer
//! (`town/*.toml`, or the directory `town_dir` names) and is validated at
//! start-up with errors that name the key.

use std::collections::BTreeSet;

use chrono::{NaiveDate, NaiveTime, Weekday};
use guichet_platform::config::{ConfigError, validate_database_url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    /// Where dossier answers LinkDossier (ignored when it runs in-process).
    pub dossier_url: String,
    /// Base of the links sent to citizens (cancel/reschedule, ANTS callbacks).
    pub public_base_url: String,
    /// The town's identity (`[town]`, given by the process, not this
    /// section): in messages and calendars.
    #[serde(skip)]
    pub town: guichet_platform::town::Town,
    /// Granularity of the schedule: every booking occupies whole units.
    pub slot_minutes: u32,
    /// Desks are closed on French public holidays (unless an extra opening).
    pub closed_on_holidays: bool,
    /// How often due jobs (reminders, dossier links, ANTS calls, waiting
    /// list offers) run.
    pub job_interval_secs: u64,
    /// How often availability is sampled for the indicators (next free
    /// slot, units open and taken today); 0: never.
    #[serde(default = "default_sample_minutes")]
    pub availability_sample_minutes: u32,
    /// Reminder this many hours before the appointment (48 = J-2); 0: none.
    pub reminder_hours_before: u32,
    /// Channels of confirmations and reminders: "sms", "email".
    pub notify_channels: Vec<String>,
    /// Waiting list: at most this many offers in all per request.
    pub waitlist_max_messages: u32,
    /// A freed slot is offered to one waiting citizen at a time; after this
    /// long, if still free, to the next.
    pub waitlist_hold_minutes: u32,
    /// Public booking needs an agent after this many no-shows (0: never)…
    pub noshow_max: u32,
    /// …within this many days.
    pub noshow_window_days: u32,
    /// HTTP endpoints (ANTS editor API, desk agenda feeds); empty: none.
    pub http_addr: String,
    /// A citizen's link (the secret of `manage_url`) shows the booking
    /// until this many days after the appointment, then it has expired.
    pub manage_link_days: u32,
    /// Bookings (with the contact details they hold) and waiting-list
    /// entries are deleted this many days after they ended (0: kept).
    pub retention_days: u32,
    pub ants: AntsConfig,
    /// The town's model: from the town layer (`town/*.toml` or `town_dir`).
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
    #[serde(default)]
    pub desks: Vec<DeskConfig>,
    #[serde(default)]
    pub types: Vec<TypeConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AntsConfig {
    /// Expected `X-HUB-RDV-AUTH-TOKEN` of the national search; empty: the
    /// ANTS editor endpoints are not served.
    pub auth_token: SecretString,
    /// Base URL of the national anti-duplicate API; empty: not called.
    pub coordination_url: String,
    pub coordination_token: SecretString,
    pub city_logo: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub id: String,
    pub name: String,
    pub address: String,
    pub zip_code: String,
    pub city: String,
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default)]
    pub website: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskConfig {
    pub id: String,
    pub site: String,
    pub name: String,
    #[serde(default)]
    pub resources: Vec<String>,
    /// Weekly ranges in Paris time: "mon 09:00-12:00".
    pub opening: Vec<String>,
    /// Closures: "2026-12-24" (all day) or "2026-12-24 14:00-17:00".
    #[serde(default)]
    pub closures: Vec<String>,
    /// Extra openings: "2026-12-19 09:00-12:00" (even on a holiday).
    #[serde(default)]
    pub extra_openings: Vec<String>,
    /// Staff absences, same format as closures.
    #[serde(default)]
    pub absences: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeConfig {
    pub id: String,
    pub name: String,
    pub duration_minutes: u32,
    #[serde(default)]
    pub per_person_minutes: u32,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub min_delay_hours: u32,
    pub max_delay_days: u32,
    #[serde(default)]
    pub cancellable_until_hours: u32,
    pub max_people: u32,
    /// CNI, PASSPORT or CNI-PASSPORT: served to the ANTS search.
    #[serde(default)]
    pub ants_reason: String,
}

/// A time range within one day, Paris local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// A dated change to a desk's week: whole day or a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dated {
    pub day: NaiveDate,
    pub range: Option<Range>,
}

pub fn parse_range(s: &str) -> Option<Range> {
    let (a, b) = s.trim().split_once('-')?;
    let start = NaiveTime::parse_from_str(a.trim(), "%H:%M").ok()?;
    let end = NaiveTime::parse_from_str(b.trim(), "%H:%M").ok()?;
    (start < end).then_some(Range { start, end })
}

pub fn parse_weekly(s: &str) -> Option<(Weekday, Range)> {
    let (d, r) = s.trim().split_once(' ')?;
    let day = match d {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    };
    Some((day, parse_range(r)?))
}

pub fn parse_dated(s: &str, range_required: bool) -> Option<Dated> {
    let s = s.trim();
    let (d, r) = match s.split_once(' ') {
        Some((d, r)) => (d, Some(parse_range(r)?)),
        None if range_required => return None,
        None => (s, None),
    };
    Some(Dated {
        day: NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?,
        range: r,
    })
}

fn slug_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("appointment.database_url", &self.database_url)?;
        if !(5..=240).contains(&self.slot_minutes) || 1440 % self.slot_minutes != 0 {
            return Err(ConfigError::invalid(
                "appointment.slot_minutes",
                "must divide a day and be between 5 and 240",
            ));
        }
        if self.retention_days != 0 && self.retention_days < self.noshow_window_days {
            return Err(ConfigError::invalid(
                "appointment.retention_days",
                "must be 0 or at least noshow_window_days (the policy counts past no-shows)",
            ));
        }
        if self.job_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "appointment.job_interval_secs",
                "must be at least 1",
            ));
        }
        for c in &self.notify_channels {
            if c != "sms" && c != "email" {
                return Err(ConfigError::invalid(
                    "appointment.notify_channels",
                    format!("`{c}` is not sms or email"),
                ));
            }
        }
        if !self.public_base_url.starts_with("http://")
            && !self.public_base_url.starts_with("https://")
        {
            return Err(ConfigError::invalid(
                "appointment.public_base_url",
                "must be an http(s) URL",
            ));
        }
        if !(1..=365).contains(&self.manage_link_days) {
            return Err(ConfigError::invalid(
                "appointment.manage_link_days",
                "must be between 1 and 365",
            ));
        }
        if !self.http_addr.is_empty() && self.http_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "appointment.http_addr",
                "must be host:port",
            ));
        }
        let token = self.ants.auth_token.expose_secret();
        if !token.is_empty() && token.len() < 16 {
            return Err(ConfigError::invalid(
                "appointment.ants.auth_token",
                "must be at least 16 characters",
            ));
        }
        if !token.is_empty() && self.http_addr.is_empty() {
            return Err(ConfigError::invalid(
                "appointment.http_addr",
                "must be set to serve the ANTS endpoints (appointment.ants.auth_token is set)",
            ));
        }
        if !self.ants.coordination_url.is_empty()
            && self.ants.coordination_token.expose_secret().is_empty()
        {
            return Err(ConfigError::invalid(
                "appointment.ants.coordination_token",
                "must be set when coordination_url is",
            ));
        }
        let mut sites = BTreeSet::new();
        for (i, s) in self.sites.iter().enumerate() {
            if !slug_ok(&s.id) || !sites.insert(s.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("appointment.sites[{i}].id"),
                    "must be a unique slug",
                ));
            }
        }
        let mut desks = BTreeSet::new();
        for (i, d) in self.desks.iter().enumerate() {
            let key = |k: &str| format!("appointment.desks[{i}].{k}");
            if !slug_ok(&d.id) || !desks.insert(d.id.as_str()) {
                return Err(ConfigError::invalid(key("id"), "must be a unique slug"));
            }
            if !sites.contains(d.site.as_str()) {
                return Err(ConfigError::invalid(
                    key("site"),
                    format!("`{}` is not one of appointment.sites", d.site),
                ));
            }
            for o in &d.opening {
                if parse_weekly(o).is_none() {
                    return Err(ConfigError::invalid(
                        key("opening"),
                        format!("`{o}` is not like \"mon 09:00-12:00\""),
                    ));
                }
            }
            for (field, list, required) in [
                ("closures", &d.closures, false),
                ("absences", &d.absences, false),
                ("extra_openings", &d.extra_openings, true),
            ] {
                for v in list {
                    if parse_dated(v, required).is_none() {
                        return Err(ConfigError::invalid(
                            key(field),
                            format!("`{v}` is not like \"2026-12-24 14:00-17:00\""),
                        ));
                    }
                }
            }
        }
        let mut types = BTreeSet::new();
        for (i, t) in self.types.iter().enumerate() {
            let key = |k: &str| format!("appointment.types[{i}].{k}");
            if !slug_ok(&t.id) || !types.insert(t.id.as_str()) {
                return Err(ConfigError::invalid(key("id"), "must be a unique slug"));
            }
            if t.duration_minutes == 0 || t.duration_minutes > 8 * 60 {
                return Err(ConfigError::invalid(
                    key("duration_minutes"),
                    "must be between 1 and 480",
                ));
            }
            if t.max_people == 0 {
                return Err(ConfigError::invalid(
                    key("max_people"),
                    "must be at least 1",
                ));
            }
            if t.max_delay_days == 0 {
                return Err(ConfigError::invalid(
                    key("max_delay_days"),
                    "must be at least 1",
                ));
            }
            if !["", "CNI", "PASSPORT", "CNI-PASSPORT"].contains(&t.ants_reason.as_str()) {
                return Err(ConfigError::invalid(
                    key("ants_reason"),
                    "must be CNI, PASSPORT, CNI-PASSPORT or empty",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekly_and_dated_ranges_parse() {
        let (d, r) = parse_weekly("tue 09:00-12:30").unwrap_or_else(|| unreachable!());
        assert_eq!(d, Weekday::Tue);
        assert_eq!(
            r.end,
            NaiveTime::from_hms_opt(12, 30, 0).unwrap_or_default()
        );
        assert!(parse_weekly("tue 12:00-09:00").is_none());
        assert!(parse_dated("2026-12-24", false).is_some_and(|d| d.range.is_none()));
        assert!(parse_dated("2026-12-24", true).is_none());
        assert!(parse_dated("2026-12-24 14:00-17:00", true).is_some_and(|d| d.range.is_some()));
    }
}

#[cfg(test)]
pub mod tests_support {
    use super::*;

    /// A one-site, one-desk, one-type model for unit tests.
    pub fn sample() -> Config {
        Config {
            database_url: "sqlite::memory:".into(),
            dossier_url: "http://127.0.0.1:1".into(),
            public_base_url: "https://rdv.example.fr".into(),
            town: guichet_platform::town::Town {
                name: "Villeneuve".into(),
                ..Default::default()
            },
            slot_minutes: 15,
            closed_on_holidays: true,
            job_interval_secs: 5,
            availability_sample_minutes: 60,
            reminder_hours_before: 48,
            notify_channels: vec!["sms".into()],
            waitlist_max_messages: 3,
            waitlist_hold_minutes: 120,
            noshow_max: 2,
            noshow_window_days: 180,
            retention_days: 365,
            http_addr: String::new(),
            manage_link_days: 7,
            ants: AntsConfig {
                auth_token: SecretString::from(""),
                coordination_url: String::new(),
                coordination_token: SecretString::from(""),
                city_logo: String::new(),
            },
            sites: vec![SiteConfig {
                id: "mairie".into(),
                name: "Hôtel de ville".into(),
                address: "1 place de la Mairie".into(),
                zip_code: "00000".into(),
                city: "Villeneuve".into(),
                latitude: 48.8,
                longitude: 2.3,
                website: String::new(),
            }],
            desks: vec![DeskConfig {
                id: "dr1".into(),
                site: "mairie".into(),
                name: "Station 1".into(),
                resources: vec!["DR".into()],
                opening: vec![],
                closures: vec![],
                extra_openings: vec![],
                absences: vec![],
            }],
            types: vec![TypeConfig {
                id: "passeport-depot".into(),
                name: "Dépôt de passeport".into(),
                duration_minutes: 15,
                per_person_minutes: 15,
                resources: vec!["DR".into()],
                public: true,
                min_delay_hours: 2,
                max_delay_days: 60,
                cancellable_until_hours: 24,
                max_people: 5,
                ants_reason: "PASSPORT".into(),
            }],
        }
    }
}

fn default_sample_minutes() -> u32 {
    60
}
