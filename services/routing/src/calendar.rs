//! The city hall's business calendar: opening hours per weekday, French
//! public holidays (fixed dates and the Easter-based ones, Alsace-Moselle
//! extras on request), exceptional closures, and local time in metropolitan
//! France (UTC+1, EU summer time). SLA targets are counted in this calendar:
//! "2 working hours" skips nights, weekends, holidays and closures.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Utc, Weekday};

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
    /// Opening intervals, Monday first.
    hours: [Vec<(NaiveTime, NaiveTime)>; 7],
    closures: Vec<(NaiveDate, NaiveDate)>,
    standard_offset: Duration,
    eu_summer_time: bool,
    alsace_moselle: bool,
}

fn parse_time(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| format!("`{s}` is not a time HH:MM"))
}

/// `08:30-12:00`.
pub fn parse_interval(s: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not an interval HH:MM-HH:MM"))?;
    let (a, b) = (parse_time(a)?, parse_time(b)?);
    if a >= b {
        return Err(format!("`{s}` ends before it starts"));
    }
    Ok((a, b))
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("`{s}` is not a date YYYY-MM-DD"))
}

/// Easter Sunday (anonymous Gregorian algorithm).
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
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).unwrap_or(NaiveDate::MIN)
}

/// The last Sunday of `month` at 01:00 UTC (EU summer-time switch).
fn last_sunday_1am_utc(year: i32, month: u32) -> NaiveDateTime {
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .unwrap_or(NaiveDate::MIN);
    let mut d = next - Duration::days(1);
    while d.weekday() != Weekday::Sun {
        d -= Duration::days(1);
    }
    d.and_hms_opt(1, 0, 0).unwrap_or_default()
}

impl Calendar {
    /// Build from configuration values; errors name the offending value.
    pub fn new(
        week: [&[String]; 7],
        closures: &[String],
        standard_offset_minutes: i32,
        eu_summer_time: bool,
        alsace_moselle: bool,
    ) -> Result<Calendar, String> {
        let mut hours: [Vec<(NaiveTime, NaiveTime)>; 7] = Default::default();
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
                Some((a, b)) => (parse_date(a)?, parse_date(b)?),
                None => (parse_date(c)?, parse_date(c)?),
            };
            if a > b {
                return Err(format!("closure `{c}` ends before it starts"));
            }
            cl.push((a, b));
        }
        if hours.iter().all(|h| h.is_empty()) {
            return Err("no opening hours on any day".into());
        }
        Ok(Calendar {
            hours,
            closures: cl,
            standard_offset: Duration::minutes(standard_offset_minutes as i64),
            eu_summer_time,
            alsace_moselle,
        })
    }

    fn offset_at(&self, utc: NaiveDateTime) -> Duration {
        if self.eu_summer_time {
            let y = utc.year();
            if utc >= last_sunday_1am_utc(y, 3) && utc < last_sunday_1am_utc(y, 10) {
                return self.standard_offset + Duration::hours(1);
            }
        }
        self.standard_offset
    }

    pub fn to_local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        let n = t.naive_utc();
        n + self.offset_at(n)
    }

    pub fn to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let summer = local - self.standard_offset - Duration::hours(1);
        let utc = if self.eu_summer_time && self.offset_at(summer) > self.standard_offset {
            summer
        } else {
            local - self.standard_offset
        };
        utc.and_utc()
    }

    pub fn is_public_holiday(&self, d: NaiveDate) -> bool {
        let fixed = [
            (1, 1),
            (5, 1),
            (5, 8),
            (7, 14),
            (8, 15),
            (11, 1),
            (11, 11),
            (12, 25),
        ];
        if fixed.contains(&(d.month(), d.day())) {
            return true;
        }
        if self.alsace_moselle && d.month() == 12 && d.day() == 26 {
            return true;
        }
        let e = easter(d.year());
        let mut moving = vec![
            e + Duration::days(1),  // lundi de Pâques
            e + Duration::days(39), // Ascension
            e + Duration::days(50), // lundi de Pentecôte
        ];
        if self.alsace_moselle {
            moving.push(e - Duration::days(2)); // Vendredi saint
        }
        moving.contains(&d)
    }

    /// Opening intervals of a date (empty on holidays and closures).
    pub fn open_intervals(&self, d: NaiveDate) -> &[(NaiveTime, NaiveTime)] {
        if self.is_public_holiday(d) || self.closures.iter().any(|(a, b)| *a <= d && d <= *b) {
            return &[];
        }
        &self.hours[d.weekday().num_days_from_monday() as usize]
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
        let local = self.to_local(start);
        let mut remaining = Duration::minutes(minutes);
        let mut day = local.date();
        let mut cursor = local.time();
        for _ in 0..3660 {
            for (s, e) in self.open_intervals(day) {
                if cursor >= *e {
                    continue;
                }
                let begin = cursor.max(*s);
                let avail = *e - begin;
                if remaining <= avail {
                    return self.to_utc(day.and_time(begin + remaining));
                }
                remaining -= avail;
            }
            day += Duration::days(1);
            cursor = NaiveTime::MIN;
        }
        start + Duration::minutes(minutes)
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
            60,
            true,
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
    fn easter_is_computed_for_known_years() {
        assert_eq!(easter(2024), d(2024, 3, 31));
        assert_eq!(easter(2025), d(2025, 4, 20));
        assert_eq!(easter(2026), d(2026, 4, 5));
        assert_eq!(easter(2027), d(2027, 3, 28));
        assert_eq!(easter(2038), d(2038, 4, 25));
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
