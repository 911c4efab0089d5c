//! The `[indicators]` configuration section.

use guichet_platform::calendar::WeekCalendarConfig;
use guichet_platform::config::{ConfigError, validate_database_url};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Empty: a SQLite file `indicators.db` under data_dir.
    pub database_url: String,
    /// The durable consumer of the EVENTS stream.
    pub consumer: String,
    /// Events applied per database transaction (the consumer's batch).
    pub batch_size: usize,
    /// Callers who hang up within this many seconds of waiting are not
    /// counted as offered calls (wrong numbers, misdials).
    pub short_abandon_secs: u32,
    /// The telephone service level: the share of calls answered within
    /// this many seconds…
    pub service_level_secs: u32,
    /// …against this target share (shown beside the figure), in percent.
    pub service_level_target_percent: u32,
    /// A completed request is resolved at first contact when no other
    /// request on the same dossier arrives within this many days.
    pub first_contact_days: u32,
    /// Figures cut by agent (the town's choice, with its staff
    /// representatives); off: the `agent` cut is refused.
    pub per_agent_figures: bool,
    /// How often the live gauges on /metrics are refreshed.
    pub gauge_interval_secs: u64,
    /// The town's opening hours, as `[routing.calendar]` (time to first
    /// touch and to resolution are counted in these business hours, as
    /// SLAs are).
    pub calendar: WeekCalendarConfig,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("indicators.database_url", &self.database_url)?;
        if self.consumer.is_empty()
            || !self
                .consumer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                "indicators.consumer",
                "must be a non-empty name of letters, digits, - and _",
            ));
        }
        if !(1..=5000).contains(&self.batch_size) {
            return Err(ConfigError::invalid(
                "indicators.batch_size",
                "must be between 1 and 5000",
            ));
        }
        if self.service_level_target_percent > 100 {
            return Err(ConfigError::invalid(
                "indicators.service_level_target_percent",
                "must be at most 100",
            ));
        }
        if self.first_contact_days == 0 || self.first_contact_days > 90 {
            return Err(ConfigError::invalid(
                "indicators.first_contact_days",
                "must be between 1 and 90",
            ));
        }
        if self.gauge_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "indicators.gauge_interval_secs",
                "must be at least 1",
            ));
        }
        self.calendar.build("indicators.calendar")?;
        Ok(())
    }
}
