//! Routing's business calendar configuration: opening hours *per weekday*
//! (a Saturday morning), exceptional closures as dates or ranges, French
//! public holidays (Alsace-Moselle extras on request), and targets in
//! working *minutes* ("30m" for a walk-in, "2h" for a callback) as well as
//! working days. The calendar itself (holidays, Paris time, counting
//! working time) is `guichet_platform::calendar::BusinessCalendar`; "2
//! working hours" skips lunch, nights, weekends, holidays and closures.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use guichet_platform::calendar::{BusinessCalendar, from_paris, to_paris};

/// A service-level target counted in business time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaTarget {
    /// Working minutes (opening hours only).
    Minutes(u32),
    /// Working days: due the Nth next open day at the same time of day.
    Days(u32),
}

impl SlaTarget {
    /// `30m`, `2h`, `5d`.
    pub fn parse(s: &str) -> Result<SlaTarget, String> {
        let s = s.trim();
        let (n, unit) = s.split_at(s.len().saturating_sub(1));
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a duration like 30m, 2h or 5d"))?;
        if n == 0 {
            return Err(format!("`{s}` must be positive"));
        }
        match unit {
            "m" => Ok(SlaTarget::Minutes(n)),
            "h" => Ok(SlaTarget::Minutes(n * 60)),
            "d" => Ok(SlaTarget::Days(n)),
            _ => Err(format!("`{s}` must end in m, h or d")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Calendar {
    calendar: BusinessCalendar,
}

pub use guichet_platform::calendar::parse_interval;

impl Calendar {
    pub fn from_business(calendar: BusinessCalendar) -> Calendar {
        Calendar { calendar }
    }

    /// Build from configuration values; errors name the offending value.
    pub fn new(
        week: [&[String]; 7],
        closures: &[String],
        alsace_moselle: bool,
    ) -> Result<Calendar, String> {
        Ok(Calendar {
            calendar: BusinessCalendar::parse(week, closures, alsace_moselle)?,
        })
    }

    /// Paris local time (metropolitan France, EU summer time).
    pub fn to_local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        to_paris(t)
    }

    pub fn to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        from_paris(local)
    }

    pub fn is_public_holiday(&self, d: NaiveDate) -> bool {
        self.calendar.is_public_holiday(d)
    }

    /// Opening intervals of a date (empty on holidays and closures).
    pub fn open_intervals(&self, d: NaiveDate) -> &[(NaiveTime, NaiveTime)] {
        self.calendar.open_intervals(d)
    }

    /// `start` plus `target` of business time.
    pub fn add(&self, start: DateTime<Utc>, target: SlaTarget) -> DateTime<Utc> {
        match target {
            SlaTarget::Minutes(m) => self.add_minutes(start, m as i64),
            SlaTarget::Days(n) => {
                let first = self.to_local(self.add_minutes(start, 0));
                let tod = first.time();
                let mut d = first.date();
                let mut left = n;
                for _ in 0..3660 {
                    if left == 0 {
                        break;
                    }
                    d += Duration::days(1);
                    if !self.open_intervals(d).is_empty() {
                        left -= 1;
                    }
                }
                let iv = self.open_intervals(d);
                let t = iv
                    .iter()
                    .find_map(|(s, e)| {
                        if tod < *s {
                            Some(*s)
                        } else if tod <= *e {
                            Some(tod)
                        } else {
                            None
                        }
                    })
                    .or_else(|| iv.last().map(|(_, e)| *e))
                    .unwrap_or(tod);
                self.to_utc(d.and_time(t))
            }
        }
    }

    fn add_minutes(&self, start: DateTime<Utc>, minutes: i64) -> DateTime<Utc> {
        self.calendar.add_working_minutes(start, minutes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn paris() -> Calendar {
        let weekday: Vec<String> = vec!["08:30-12:00".into(), "13:30-17:30".into()];
        let sat: Vec<String> = vec!["09:00-12:00".into()];
        let none: Vec<String> = vec![];
        Calendar::new(
            [
                &weekday, &weekday, &weekday, &weekday, &weekday, &sat, &none,
            ],
            &["2026-12-24".into(), "2026-08-10..2026-08-14".into()],
            false,
        )
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn french_public_holidays_include_the_easter_based_ones() {
        let c = paris();
        for h in [
            d(2026, 1, 1),
            d(2026, 4, 6), // lundi de Pâques
            d(2026, 5, 1),
            d(2026, 5, 8),
            d(2026, 5, 14), // Ascension
            d(2026, 5, 25), // lundi de Pentecôte
            d(2026, 7, 14),
            d(2026, 8, 15),
            d(2026, 11, 1),
            d(2026, 11, 11),
            d(2026, 12, 25),
        ] {
            assert!(c.is_public_holiday(h), "{h}");
        }
        assert!(
            !c.is_public_holiday(d(2026, 4, 3)),
            "Good Friday only in Alsace-Moselle"
        );
        assert!(!c.is_public_holiday(d(2026, 12, 26)));
    }

    #[test]
    fn paris_time_follows_eu_summer_time() {
        let c = paris();
        assert_eq!(
            c.to_local(utc("2026-01-15T10:00:00Z")).to_string(),
            "2026-01-15 11:00:00"
        );
        assert_eq!(
            c.to_local(utc("2026-07-15T10:00:00Z")).to_string(),
            "2026-07-15 12:00:00"
        );
        assert_eq!(
            c.to_utc(c.to_local(utc("2026-07-15T10:00:00Z"))),
            utc("2026-07-15T10:00:00Z")
        );
    }

    #[test]
    fn working_hours_skip_lunch_nights_weekends_and_holidays() {
        let c = paris();
        // Thursday 2026-11-26 11:00 Paris (10:00 UTC) + 2 h: 1 h before
        // lunch, 1 h after → 14:30 Paris.
        assert_eq!(
            c.add(utc("2026-11-26T10:00:00Z"), SlaTarget::Minutes(120)),
            utc("2026-11-26T13:30:00Z")
        );
        // Friday 17:00 Paris + 2 h: 30 min Friday, Saturday morning 1 h 30.
        assert_eq!(
            c.add(utc("2026-11-27T16:00:00Z"), SlaTarget::Minutes(120)),
            utc("2026-11-28T09:30:00Z")
        );
        // Tuesday 10 Nov 2026 16:30 Paris + 2 h: 1 h Tuesday, Wednesday
        // 11 Nov is a holiday → Thursday 09:30.
        assert_eq!(
            c.add(utc("2026-11-10T15:30:00Z"), SlaTarget::Minutes(120)),
            utc("2026-11-12T08:30:00Z")
        );
    }

    #[test]
    fn working_days_skip_sundays_holidays_and_closures() {
        let c = paris();
        // Wednesday 23 Dec 2026 10:00 Paris + 2 days: 24 closed, 25 holiday,
        // Saturday 26 (open 09-12) is day 1, Monday 28 day 2 at 10:00.
        assert_eq!(
            c.add(utc("2026-12-23T09:00:00Z"), SlaTarget::Days(2)),
            utc("2026-12-28T09:00:00Z")
        );
        // Sunday evening: starts Monday 08:30, + 1 day → Tuesday 08:30.
        assert_eq!(
            c.add(utc("2026-11-29T19:00:00Z"), SlaTarget::Days(1)),
            utc("2026-12-01T07:30:00Z")
        );
    }

    #[test]
    fn sla_targets_parse() {
        assert_eq!(SlaTarget::parse("2h"), Ok(SlaTarget::Minutes(120)));
        assert_eq!(SlaTarget::parse("5d"), Ok(SlaTarget::Days(5)));
        assert!(SlaTarget::parse("2w").is_err());
        assert!(SlaTarget::parse("0m").is_err());
    }
}
