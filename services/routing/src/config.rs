//! The `[routing]` configuration section.

use std::collections::BTreeMap;

use guichet_platform::config::{ConfigError, validate_database_url};
use serde::Deserialize;

use crate::calendar::{Calendar, SlaTarget};

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
    /// Classification rules (TOML), reloaded when it changes. Empty: the
    /// shipped rules (`config/routing-rules.toml`, embedded).
    #[serde(default)]
    pub rules_file: String,
    /// How often the rules file (and the database's newest rule set
    /// published in the studio) is checked for changes.
    pub rules_reload_ms: u64,
    /// Where the rules studio publishes: `database` (routing's database;
    /// every replica puts the newest publication in force, over the file or
    /// the shipped rules) or `file` (the deployment keeps files as the
    /// source of truth: the studio writes `rules_file`, which must be set).
    #[serde(default = "default_studio_writes")]
    pub studio_writes: String,
    /// The town's labelled requests (TOML, as
    /// `tests/fixtures/classification/corpus.toml`) the studio measures
    /// rules on. Empty: the corpus shipped with guichet.
    #[serde(default)]
    pub corpus_file: String,
    /// Days a request's classification input (`intake_inputs`, for trying
    /// rules on past requests) is kept; 0: kept as long as routing runs.
    #[serde(default = "default_trial_days")]
    pub trial_inputs_days: u32,
    /// The process of requests no rule classifies ("à qualifier").
    pub triage_process: String,
    /// The unified queue every request enters unless a rule says otherwise.
    pub default_queue: String,
    /// How often offers, SLA escalation and ageing are looked after.
    pub maintenance_interval_ms: u64,
    /// How long an offered item stays reserved for one agent.
    pub offer_timeout_secs: u64,
    /// Offers in a row an agent may let time out before being set away.
    pub max_missed_offers: i32,
    /// Callbacks without an answer after which a missed call's request is
    /// closed with that reason (the town's procedure).
    pub callback_attempts: i32,
    /// An open dossier of the same citizen and process updated within this
    /// window receives a new request instead of a new dossier.
    pub correlation_window_hours: u32,
    /// Share of the SLA target elapsed when an item is "near" its target.
    pub sla_near_ratio: f64,
    /// Priority points added when an item is near / past its SLA target.
    pub sla_near_bump: i32,
    pub sla_breach_bump: i32,
    /// SLA target per channel (`30m`, `2h`, `2d`: working time).
    pub sla: BTreeMap<String, String>,
    /// SLA target per process, overriding the channel's.
    #[serde(default)]
    pub sla_process: BTreeMap<String, String>,
    /// Items of each channel one agent may hold at once, unless set per agent.
    pub capacity: BTreeMap<String, i32>,
    pub calendar: CalendarConfig,
    pub queues: BTreeMap<String, QueueConfig>,
}

/// Routing's business calendar (`[routing.calendar]`).
pub type CalendarConfig = guichet_platform::calendar::WeekCalendarConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// French name shown to agents.
    pub display_name: String,
    /// Priority points gained per `ageing_interval_secs` waited (0: none),
    /// up to `ageing_max`: low priorities cannot starve.
    #[serde(default)]
    pub ageing_step: i32,
    #[serde(default = "default_ageing_interval")]
    pub ageing_interval_secs: u64,
    #[serde(default)]
    pub ageing_max: i32,
}

fn default_trial_days() -> u32 {
    90
}

fn default_studio_writes() -> String {
    "database".into()
}

fn default_ageing_interval() -> u64 {
    1800
}

pub const CHANNELS: [&str; 4] = ["telephony", "email", "scan", "counter"];

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
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
        if !is_slug(&self.triage_process) {
            return Err(ConfigError::invalid(
                "routing.triage_process",
                "must be a process id (lower-case letters, digits, '-')",
            ));
        }
        if !self.queues.contains_key(&self.default_queue) {
            return Err(ConfigError::invalid(
                "routing.default_queue",
                "must name a queue of routing.queues",
            ));
        }
        for (id, q) in &self.queues {
            let key = |k: &str| format!("routing.queues.{id}.{k}");
            if !is_slug(id) {
                return Err(ConfigError::invalid(
                    format!("routing.queues.{id}"),
                    "queue ids are lower-case letters, digits and '-'",
                ));
            }
            if q.display_name.trim().is_empty() {
                return Err(ConfigError::invalid(key("display_name"), "is required"));
            }
            if q.ageing_step < 0 || q.ageing_max < 0 {
                return Err(ConfigError::invalid(
                    key("ageing_step"),
                    "must not be negative",
                ));
            }
            if q.ageing_interval_secs == 0 {
                return Err(ConfigError::invalid(
                    key("ageing_interval_secs"),
                    "must be positive",
                ));
            }
        }
        for (k, v) in [
            ("routing.rules_reload_ms", self.rules_reload_ms),
            (
                "routing.maintenance_interval_ms",
                self.maintenance_interval_ms,
            ),
            ("routing.offer_timeout_secs", self.offer_timeout_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(k, "must be positive"));
            }
        }
        match self.studio_writes.as_str() {
            "database" => {}
            "file" if !self.rules_file.trim().is_empty() => {}
            "file" => {
                return Err(ConfigError::invalid(
                    "routing.studio_writes",
                    "`file` needs routing.rules_file: the file the studio writes",
                ));
            }
            _ => {
                return Err(ConfigError::invalid(
                    "routing.studio_writes",
                    "must be `database` or `file`",
                ));
            }
        }
        if !(1..=10).contains(&self.callback_attempts) {
            return Err(ConfigError::invalid(
                "routing.callback_attempts",
                "must be 1 to 10",
            ));
        }
        if self.max_missed_offers < 1 {
            return Err(ConfigError::invalid(
                "routing.max_missed_offers",
                "must be at least 1",
            ));
        }
        if !(0.0..1.0).contains(&self.sla_near_ratio) {
            return Err(ConfigError::invalid(
                "routing.sla_near_ratio",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        for (ch, v) in &self.sla {
            if !CHANNELS.contains(&ch.as_str()) {
                return Err(ConfigError::invalid(
                    format!("routing.sla.{ch}"),
                    "unknown channel",
                ));
            }
            SlaTarget::parse(v)
                .map_err(|e| ConfigError::invalid(format!("routing.sla.{ch}"), e))?;
        }
        for (p, v) in &self.sla_process {
            SlaTarget::parse(v)
                .map_err(|e| ConfigError::invalid(format!("routing.sla_process.{p}"), e))?;
        }
        for (ch, v) in &self.capacity {
            if !CHANNELS.contains(&ch.as_str()) {
                return Err(ConfigError::invalid(
                    format!("routing.capacity.{ch}"),
                    "unknown channel",
                ));
            }
            if !(0..=100).contains(v) {
                return Err(ConfigError::invalid(
                    format!("routing.capacity.{ch}"),
                    "must be between 0 and 100",
                ));
            }
        }
        self.calendar()?;
        Ok(())
    }

    pub fn calendar(&self) -> Result<Calendar, ConfigError> {
        Ok(Calendar::from_business(
            self.calendar.build("routing.calendar")?,
        ))
    }
}
