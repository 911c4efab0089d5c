//! The town hall's business calendar: opening days and hours in Paris
//! time, French public holidays (Easter-based ones computed), and extra
//! closures. SLA targets in working hours or working days are computed on it.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// Opening days: mon, tue, wed, thu, fri, sat, sun.
    pub open_days: Vec<String>,
    /// Opening hours each open day, "HH:MM-HH:MM", in Paris time.
    pub opening_hours: Vec<String>,
    /// Extra closure dates (YYYY-MM-DD), e.g. bridge days.
    #[serde(default)]
    pub closures: Vec<String>,
    /// Also close on French public holidays.
    #[serde(default = "yes")]
    pub french_holidays: bool,
}

fn yes() -> bool {
    true
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            open_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            opening_hours: vec!["08:30-12:00".into(), "13:30-17:30".into()],
            closures: vec![],
            french_holidays: true,
        }
    }
}

/// A calendar configured per weekday (a Saturday morning), as routing's
/// SLAs and the indicators' business hours count it:
/// `hours.mon = ["08:30-12:00", "13:30-17:30"]`, closures as dates or
/// ranges (`2026-12-24`, `2026-08-10..2026-08-14`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeekCalendarConfig {
    /// Good Friday and 26 December are holidays too.
    pub alsace_moselle: bool,
    /// Exceptional closures: `2026-12-24` or `2026-08-10..2026-08-14`.
    #[serde(default)]
    pub closures: Vec<String>,
    /// Opening hours per weekday in Paris time, e.g. `["08:30-12:00", "13:30-17:30"]`.
    pub hours: std::collections::BTreeMap<String, Vec<String>>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl WeekCalendarConfig {
    /// The calendar; errors name `<section>.hours.<day>` or `<section>`.
    pub fn build(&self, section: &str) -> Result<BusinessCalendar, ConfigError> {
        for k in self.hours.keys() {
            if !DAYS.contains(&k.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{section}.hours.{k}"),
                    "days are mon, tue, wed, thu, fri, sat, sun",
                ));
            }
        }
        let empty = Vec::new();
        let day = |d: &str| self.hours.get(d).unwrap_or(&empty).as_slice();
        BusinessCalendar::parse(DAYS.map(day), &self.closures, self.alsace_moselle)
            .map_err(|e| ConfigError::invalid(section, e))
    }
}

fn parse_hm(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| format!("`{s}` is not a time HH:MM"))
}

/// `08:30-12:00`.
pub fn parse_interval(s: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not an interval HH:MM-HH:MM"))?;
    let (a, b) = (parse_hm(a)?, parse_hm(b)?);
    if a >= b {
        return Err(format!("`{s}` ends before it starts"));
    }
    Ok((a, b))
}

fn parse_day(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("`{s}` is not a date YYYY-MM-DD"))
}

/// Opening intervals of each weekday, Monday first (empty: closed).
pub type Week = [Vec<(NaiveTime, NaiveTime)>; 7];

#[derive(Debug, Clone)]
pub struct BusinessCalendar {
    hours: Week,
    /// Closed date ranges, both ends included.
    closures: Vec<(NaiveDate, NaiveDate)>,
    french_holidays: bool,
    /// Alsace-Moselle also closes on Good Friday and 26 December.
    alsace_moselle: bool,
}

impl Default for BusinessCalendar {
    fn default() -> Self {
        BusinessCalendar::new(&CalendarConfig::default(), "calendar")
            .unwrap_or_else(|_| BusinessCalendar::from_week(Default::default(), vec![], false))
    }
}

/// Easter Sunday (Gregorian, anonymous algorithm).
pub fn easter(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).unwrap_or_default()
}

/// The eleven French public holidays of a year (metropolitan France).
pub fn french_holidays(year: i32) -> Vec<NaiveDate> {
    let d = |m, day| NaiveDate::from_ymd_opt(year, m, day).unwrap_or_default();
    let e = easter(year);
    vec![
        d(1, 1),
        e + Duration::days(1), // lundi de Pâques
        d(5, 1),
        d(5, 8),
        e + Duration::days(39), // Ascension
        e + Duration::days(50), // lundi de Pentecôte
        d(7, 14),
        d(8, 15),
        d(11, 1),
        d(11, 11),
        d(12, 25),
    ]
}

/// Last Sunday of a month.
fn last_sunday(year: i32, month: u32) -> NaiveDate {
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .unwrap_or_default();
    let mut d = next - Duration::days(1);
    while d.weekday() != Weekday::Sun {
        d -= Duration::days(1);
    }
    d
}

/// Paris's UTC offset at an instant (CET, CEST from the last Sunday of
/// March 01:00 UTC to the last Sunday of October 01:00 UTC).
pub fn paris_offset(t: DateTime<Utc>) -> chrono::FixedOffset {
    let y = t.year();
    let start = last_sunday(y, 3)
        .and_hms_opt(1, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let end = last_sunday(y, 10)
        .and_hms_opt(1, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let hours = if t >= start && t < end { 2 } else { 1 };
    chrono::FixedOffset::east_opt(hours * 3600)
        .unwrap_or(chrono::FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()))
}

/// Paris local time of an instant.
pub fn to_paris(t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&paris_offset(t)).naive_local()
}

/// The instant of a Paris local time (the earlier one when ambiguous).
pub fn from_paris(local: NaiveDateTime) -> DateTime<Utc> {
    // Guess with the offset at the same wall time read as UTC, then fix.
    let guess = Utc.from_utc_datetime(&local);
    let off = paris_offset(guess - Duration::hours(1));
    let t = local - Duration::seconds(off.local_minus_utc() as i64);
    let off2 = paris_offset(Utc.from_utc_datetime(&t));
    Utc.from_utc_datetime(&(local - Duration::seconds(off2.local_minus_utc() as i64)))
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

impl BusinessCalendar {
    /// Build from configuration; errors name `<section>.<key>`.
    pub fn new(cfg: &CalendarConfig, section: &str) -> Result<BusinessCalendar, ConfigError> {
        let mut open_days = Vec::new();
        for d in &cfg.open_days {
            open_days.push(weekday(d).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{section}.open_days"),
                    format!("`{d}` is not one of mon, tue, wed, thu, fri, sat, sun"),
                )
            })?);
        }
        let mut hours = Vec::new();
        for h in &cfg.opening_hours {
            let parsed = h.split_once('-').and_then(|(a, b)| {
                Some((
                    NaiveTime::parse_from_str(a.trim(), "%H:%M").ok()?,
                    NaiveTime::parse_from_str(b.trim(), "%H:%M").ok()?,
                ))
            });
            match parsed {
                Some((a, b)) if a < b && hours.last().is_none_or(|&(_, e)| e <= a) => {
                    hours.push((a, b))
                }
                _ => {
                    return Err(ConfigError::invalid(
                        format!("{section}.opening_hours"),
                        format!("`{h}` must be HH:MM-HH:MM, in order, not overlapping"),
                    ));
                }
            }
        }
        if open_days.is_empty() || hours.is_empty() {
            return Err(ConfigError::invalid(
                format!("{section}.open_days"),
                "the town hall must open at least one day, with opening hours",
            ));
        }
        let mut closures = Vec::new();
        for c in &cfg.closures {
            let d = NaiveDate::parse_from_str(c, "%Y-%m-%d").map_err(|_| {
                ConfigError::invalid(
                    format!("{section}.closures"),
                    format!("`{c}` is not a YYYY-MM-DD date"),
                )
            })?;
            closures.push((d, d));
        }
        let mut week: Week = Default::default();
        for d in open_days {
            week[d.num_days_from_monday() as usize] = hours.clone();
        }
        let mut cal = BusinessCalendar::from_week(week, closures, false);
        cal.french_holidays = cfg.french_holidays;
        Ok(cal)
    }

    /// From opening intervals per weekday (Monday first) and closures
    /// (dates or `a..b` ranges); errors name the offending value.
    pub fn parse(
        week: [&[String]; 7],
        closures: &[String],
        alsace_moselle: bool,
    ) -> Result<BusinessCalendar, String> {
        let mut hours: Week = Default::default();
        for (i, day) in week.iter().enumerate() {
            for s in day.iter() {
                hours[i].push(parse_interval(s)?);
            }
            hours[i].sort();
            if hours[i].windows(2).any(|w| w[0].1 > w[1].0) {
                return Err(format!("opening intervals overlap: {:?}", day));
            }
        }
        let mut cl = Vec::new();
        for c in closures {
            let (a, b) = match c.split_once("..") {
                Some((a, b)) => (parse_day(a)?, parse_day(b)?),
                None => (parse_day(c)?, parse_day(c)?),
            };
            if a > b {
                return Err(format!("closure `{c}` ends before it starts"));
            }
            cl.push((a, b));
        }
        if hours.iter().all(|h| h.is_empty()) {
            return Err("no opening hours on any day".into());
        }
        Ok(BusinessCalendar::from_week(hours, cl, alsace_moselle))
    }

    /// A calendar from already validated parts (French holidays closed).
    pub fn from_week(
        hours: Week,
        closures: Vec<(NaiveDate, NaiveDate)>,
        alsace_moselle: bool,
    ) -> BusinessCalendar {
        BusinessCalendar {
            hours,
            closures,
            french_holidays: true,
            alsace_moselle,
        }
    }

    pub fn is_public_holiday(&self, d: NaiveDate) -> bool {
        (self.french_holidays && french_holidays(d.year()).contains(&d))
            || (self.alsace_moselle
                && ((d.month() == 12 && d.day() == 26)
                    || d == easter(d.year()) - Duration::days(2)))
    }

    /// Opening intervals of a date (empty on holidays and closures).
    pub fn open_intervals(&self, d: NaiveDate) -> &[(NaiveTime, NaiveTime)] {
        if self.is_public_holiday(d) || self.closures.iter().any(|(a, b)| *a <= d && d <= *b) {
            return &[];
        }
        &self.hours[d.weekday().num_days_from_monday() as usize]
    }

    pub fn is_working_day(&self, day: NaiveDate) -> bool {
        !self.open_intervals(day).is_empty()
    }

    /// `n` working days after `from` (same local time of day; a start on a
    /// closed day counts from the next working day).
    pub fn add_working_days(&self, from: DateTime<Utc>, n: u32) -> DateTime<Utc> {
        let local = to_paris(from);
        let mut day = local.date();
        let mut left = n;
        while left > 0 {
            day += Duration::days(1);
            if self.is_working_day(day) {
                left -= 1;
            }
        }
        from_paris(day.and_time(local.time()))
    }

    /// The instant `hours` of opening time after `from`.
    pub fn add_working_hours(&self, from: DateTime<Utc>, hours: u32) -> DateTime<Utc> {
        self.add_working_minutes(from, i64::from(hours) * 60)
    }

    /// The instant `minutes` of opening time after `from` (lunch breaks,
    /// nights, closed days skipped).
    pub fn add_working_minutes(&self, from: DateTime<Utc>, minutes: i64) -> DateTime<Utc> {
        let mut left = Duration::minutes(minutes);
        let local = to_paris(from);
        let mut day = local.date();
        let mut cursor = local.time();
        // Bounded: ten years of days.
        for _ in 0..3660 {
            for &(open, close) in self.open_intervals(day) {
                let start = cursor.max(open);
                if start >= close {
                    continue;
                }
                let span = close - start;
                if span >= left {
                    return from_paris(day.and_time(start) + left);
                }
                left -= span;
            }
            day += Duration::days(1);
            cursor = NaiveTime::MIN;
        }
        from + Duration::minutes(minutes)
    }

    /// Opening time between two instants (zero when `to <= from`).
    pub fn working_time_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        if to <= from {
            return Duration::zero();
        }
        let (a, b) = (to_paris(from), to_paris(to));
        let mut total = Duration::zero();
        let mut day = a.date();
        while day <= b.date() {
            for &(open, close) in self.open_intervals(day) {
                let s = if day == a.date() {
                    open.max(a.time())
                } else {
                    open
                };
                let e = if day == b.date() {
                    close.min(b.time())
                } else {
                    close
                };
                if e > s {
                    total += e - s;
                }
            }
            day += Duration::days(1);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        from_paris(
            NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_hms_opt(h, min, 0)
                .unwrap(),
        )
    }

    #[test]
    fn easter_and_its_holidays_are_computed() {
        assert_eq!(easter(2026), NaiveDate::from_ymd_opt(2026, 4, 5).unwrap());
        assert_eq!(easter(2027), NaiveDate::from_ymd_opt(2027, 3, 28).unwrap());
        let h = french_holidays(2026);
        assert!(h.contains(&NaiveDate::from_ymd_opt(2026, 4, 6).unwrap())); // Pâques
        assert!(h.contains(&NaiveDate::from_ymd_opt(2026, 5, 14).unwrap())); // Ascension
        assert!(h.contains(&NaiveDate::from_ymd_opt(2026, 5, 25).unwrap())); // Pentecôte
        assert_eq!(h.len(), 11);
    }

    #[test]
    fn paris_time_follows_daylight_saving() {
        let winter = paris(2026, 1, 15, 9, 0);
        assert_eq!(winter.to_rfc3339(), "2026-01-15T08:00:00+00:00");
        let summer = paris(2026, 7, 15, 9, 0);
        assert_eq!(summer.to_rfc3339(), "2026-07-15T07:00:00+00:00");
    }

    #[test]
    fn working_hours_skip_lunch_nights_weekends_and_holidays() {
        let cal = BusinessCalendar::default();
        // Friday 16:30 + 2 h → Monday 09:30 (Friday 1 h, Monday 1 h).
        let fri = paris(2026, 11, 27, 16, 30);
        assert_eq!(cal.add_working_hours(fri, 2), paris(2026, 11, 30, 9, 30));
        // 11:30 + 1 h → 14:00 (lunch break 12:00-13:30).
        assert_eq!(
            cal.add_working_hours(paris(2026, 12, 1, 11, 30), 1),
            paris(2026, 12, 1, 14, 0)
        );
        // Thursday 24 Dec 17:00 + 1 h: Christmas Friday closed → Monday 28 09:00.
        assert_eq!(
            cal.add_working_hours(paris(2026, 12, 24, 17, 0), 1),
            paris(2026, 12, 28, 9, 0)
        );
        assert_eq!(
            cal.working_time_between(paris(2026, 11, 27, 16, 30), paris(2026, 11, 30, 9, 30)),
            Duration::hours(2)
        );
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        let cal = BusinessCalendar::default();
        // Thursday 30 April 2026 + 2 working days: Fri 1 May is closed,
        // so Monday 4 May then Tuesday 5 May.
        assert_eq!(
            cal.add_working_days(paris(2026, 4, 30, 10, 0), 2),
            paris(2026, 5, 5, 10, 0)
        );
    }

    #[test]
    fn bad_opening_hours_name_the_key() {
        let cfg = CalendarConfig {
            opening_hours: vec!["17:00-08:00".into()],
            ..CalendarConfig::default()
        };
        let e = BusinessCalendar::new(&cfg, "calendar")
            .unwrap_err()
            .to_string();
        assert!(e.contains("calendar.opening_hours"), "{e}");
    }
}
