//! The town's compiled model and the slot arithmetic: which schedule units
//! a desk is open for on a day (weekly ranges in Paris time, French public
//! holidays, closures, extra openings, absences), and which starts can hold
//! a booking of a given length. Pure functions over the model; the database
//! only says which units are already taken.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use guichet_platform::calendar::{french_holidays, from_paris, to_paris};

use crate::config::{Config, Dated, Range, SiteConfig, TypeConfig, parse_dated, parse_weekly};

#[derive(Debug, Clone)]
pub struct Desk {
    pub id: String,
    pub site: String,
    pub name: String,
    pub resources: BTreeSet<String>,
    weekly: BTreeMap<u32, Vec<Range>>,
    closures: Vec<Dated>,
    extra: Vec<Dated>,
    absences: Vec<Dated>,
}

/// Sites, desks and types, checked and indexed.
#[derive(Debug, Clone)]
pub struct Model {
    pub slot: Duration,
    pub closed_on_holidays: bool,
    pub sites: Vec<SiteConfig>,
    pub desks: Vec<Desk>,
    pub types: Vec<TypeConfig>,
}

impl Model {
    /// Compile a validated configuration.
    pub fn new(cfg: &Config) -> Model {
        let desks = cfg
            .desks
            .iter()
            .map(|d| {
                let mut weekly: BTreeMap<u32, Vec<Range>> = BTreeMap::new();
                for (day, r) in d.opening.iter().filter_map(|o| parse_weekly(o)) {
                    weekly
                        .entry(day.num_days_from_monday())
                        .or_default()
                        .push(r);
                }
                let dated = |v: &[String], req: bool| -> Vec<Dated> {
                    v.iter().filter_map(|s| parse_dated(s, req)).collect()
                };
                Desk {
                    id: d.id.clone(),
                    site: d.site.clone(),
                    name: d.name.clone(),
                    resources: d.resources.iter().cloned().collect(),
                    weekly,
                    closures: dated(&d.closures, false),
                    extra: dated(&d.extra_openings, true),
                    absences: dated(&d.absences, false),
                }
            })
            .collect();
        Model {
            slot: Duration::minutes(i64::from(cfg.slot_minutes)),
            closed_on_holidays: cfg.closed_on_holidays,
            sites: cfg.sites.clone(),
            desks,
            types: cfg.types.clone(),
        }
    }

    pub fn site(&self, id: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.id == id)
    }

    pub fn desk(&self, id: &str) -> Option<&Desk> {
        self.desks.iter().find(|d| d.id == id)
    }

    pub fn kind(&self, id: &str) -> Option<&TypeConfig> {
        self.types.iter().find(|t| t.id == id)
    }

    /// Desks of `site` with every resource `t` needs.
    pub fn desks_for<'a>(
        &'a self,
        site: &'a str,
        t: &'a TypeConfig,
    ) -> impl Iterator<Item = &'a Desk> {
        self.desks
            .iter()
            .filter(move |d| d.site == site && t.resources.iter().all(|r| d.resources.contains(r)))
    }

    /// How long a booking of `t` for `people` lasts, in whole units.
    pub fn units_for(&self, t: &TypeConfig, people: u32) -> i64 {
        let minutes = i64::from(t.duration_minutes)
            + i64::from(t.per_person_minutes) * i64::from(people.saturating_sub(1));
        let unit = self.slot.num_minutes().max(1);
        (minutes + unit - 1) / unit
    }

    /// Open local ranges of `desk` on `day`.
    fn ranges(&self, desk: &Desk, day: NaiveDate) -> Vec<Range> {
        let holiday = self.closed_on_holidays && french_holidays(day.year()).contains(&day);
        let mut open: Vec<Range> = if holiday {
            Vec::new()
        } else {
            desk.weekly
                .get(&day.weekday().num_days_from_monday())
                .cloned()
                .unwrap_or_default()
        };
        open.extend(
            desk.extra
                .iter()
                .filter(|e| e.day == day)
                .filter_map(|e| e.range),
        );
        for cut in desk
            .closures
            .iter()
            .chain(&desk.absences)
            .filter(|c| c.day == day)
        {
            match cut.range {
                None => return Vec::new(),
                Some(c) => {
                    open = open
                        .into_iter()
                        .flat_map(|r| {
                            let mut parts = Vec::new();
                            if c.start > r.start {
                                parts.push(Range {
                                    start: r.start,
                                    end: c.start.min(r.end),
                                });
                            }
                            if c.end < r.end {
                                parts.push(Range {
                                    start: c.end.max(r.start),
                                    end: r.end,
                                });
                            }
                            parts.into_iter().filter(|p| p.start < p.end)
                        })
                        .collect();
                }
            }
        }
        open
    }

    /// Unit starts (UTC) `desk` is open for, from `from` (inclusive) to `to`
    /// (exclusive). Local times that do not exist (the spring DST gap) are
    /// skipped; repeated ones (autumn) count once.
    pub fn open_units(
        &self,
        desk: &Desk,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BTreeSet<DateTime<Utc>> {
        let mut out = BTreeSet::new();
        if from >= to {
            return out;
        }
        let mut day = to_paris(from).date() - Duration::days(1);
        let last = to_paris(to).date();
        while day <= last {
            for r in self.ranges(desk, day) {
                let mut local = day.and_time(r.start);
                let end = day.and_time(r.end);
                while local + self.slot <= end {
                    let t = from_paris(local);
                    if to_paris(t) == local && t >= from && t < to {
                        out.insert(t);
                    }
                    local += self.slot;
                }
            }
            day += Duration::days(1);
        }
        out
    }

    /// Starts in `open` where `units` consecutive units are open and not in
    /// `taken`, within [from, to).
    pub fn free_starts(
        &self,
        open: &BTreeSet<DateTime<Utc>>,
        taken: &BTreeSet<DateTime<Utc>>,
        units: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        open.range(from..to)
            .copied()
            .filter(|s| {
                (0..units).all(|k| {
                    let u = *s + self.slot * (k as i32);
                    open.contains(&u) && !taken.contains(&u)
                }) && *s + self.slot * (units as i32) <= to
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn config(opening: &[&str], closures: &[&str], extra: &[&str], absences: &[&str]) -> Config {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut cfg: Config = toml_config();
        cfg.desks[0].opening = s(opening);
        cfg.desks[0].closures = s(closures);
        cfg.desks[0].extra_openings = s(extra);
        cfg.desks[0].absences = s(absences);
        cfg
    }

    fn toml_config() -> Config {
        crate::config::tests_support::sample()
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, mi, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn units_follow_paris_time_across_both_dst_changes() {
        // Sundays of the changes open, to see them; 2027-03-28 and 2027-10-31.
        let cfg = config(&["sun 09:00-10:00", "mon 09:00-10:00"], &[], &[], &[]);
        let m = Model::new(&cfg);
        let d = &m.desks[0];
        // Winter (UTC+1) Sunday before, summer (UTC+2) the change day.
        let spring = m.open_units(d, utc(2027, 3, 21, 0, 0), utc(2027, 3, 30, 0, 0));
        assert!(spring.contains(&utc(2027, 3, 21, 8, 0)));
        assert!(spring.contains(&utc(2027, 3, 28, 7, 0)));
        // 2027-03-29 is Easter Monday: closed.
        assert!(
            !spring.iter().any(|t| t.date_naive()
                == chrono::NaiveDate::from_ymd_opt(2027, 3, 29).unwrap_or_default())
        );
        assert!(!spring.contains(&utc(2027, 3, 28, 8, 0)));
        let autumn = m.open_units(d, utc(2027, 10, 24, 0, 0), utc(2027, 11, 2, 0, 0));
        assert!(autumn.contains(&utc(2027, 10, 24, 7, 0)));
        assert!(autumn.contains(&utc(2027, 10, 31, 8, 0)));
        assert!(!autumn.contains(&utc(2027, 10, 31, 7, 0)));
        assert_eq!(autumn.len(), 4 * 3);
    }

    #[test]
    fn a_night_range_through_the_spring_gap_skips_the_missing_hour() {
        let cfg = config(&["sun 01:00-04:00"], &[], &[], &[]);
        let m = Model::new(&cfg);
        let units = m.open_units(&m.desks[0], utc(2027, 3, 27, 0, 0), utc(2027, 3, 29, 0, 0));
        // 01:00-02:00 and 03:00-04:00 exist (8 units), 02:00-03:00 does not.
        assert_eq!(units.len(), 8);
    }

    #[test]
    fn holidays_closures_absences_and_extra_openings_shape_the_day() {
        let cfg = config(
            &[
                "mon 09:00-12:00",
                "tue 09:00-12:00",
                "wed 09:00-12:00",
                "thu 09:00-12:00",
            ],
            &["2027-05-04"],
            &["2027-05-13 14:00-15:00", "2027-05-17 10:00-11:00"],
            &["2027-05-05 10:00-11:00"],
        );
        let m = Model::new(&cfg);
        let d = &m.desks[0];
        let day = |dd: u32| {
            m.open_units(d, utc(2027, 5, dd, 0, 0), utc(2027, 5, dd + 1, 0, 0))
                .len()
        };
        // Easter Monday 2027-03-29, Ascension 2027-05-06, Whit Monday 2027-05-17.
        assert_eq!(
            m.open_units(d, utc(2027, 3, 29, 0, 0), utc(2027, 3, 30, 0, 0))
                .len(),
            0
        );
        assert_eq!(day(6), 0, "Ascension");
        assert_eq!(day(17), 4, "Whit Monday, but for an extra opening");
        assert_eq!(day(24), 12, "the Monday after");
        assert_eq!(day(3), 12, "an ordinary Monday");
        assert_eq!(day(4), 0, "closed all day");
        assert_eq!(day(5), 8, "absent 10:00-11:00");
        assert_eq!(day(13), 16, "extra opening on a Thursday");
    }

    #[test]
    fn free_starts_need_consecutive_open_untaken_units() {
        let cfg = config(&["mon 09:00-10:00", "mon 11:00-12:00"], &[], &[], &[]);
        let m = Model::new(&cfg);
        let (from, to) = (utc(2027, 1, 4, 0, 0), utc(2027, 1, 5, 0, 0));
        let open = m.open_units(&m.desks[0], from, to);
        let mut taken = BTreeSet::new();
        taken.insert(utc(2027, 1, 4, 8, 15));
        // 30-minute bookings: 09:00 blocked by 09:15, 09:30 ok, 09:45 runs into closed.
        let starts = m.free_starts(&open, &taken, 2, from, to);
        assert_eq!(
            starts,
            vec![
                utc(2027, 1, 4, 8, 30),
                utc(2027, 1, 4, 10, 0),
                utc(2027, 1, 4, 10, 15),
                utc(2027, 1, 4, 10, 30)
            ]
        );
        assert_eq!(m.units_for(&m.types[0], 3), 3);
    }
}
