//! Figures from the fact tables: one SQL read per indicator (the items of
//! the period, with their bucket time, cut value, value and flag), then the
//! statistic per bucket and cut value in Rust, so both backends give the
//! very same figures (percentiles included).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use guichet_platform::calendar::{BusinessCalendar, from_paris, to_paris};
use guichet_platform::db::Sql;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, QueryResult};

use crate::catalog::{DIMENSIONS, Indicator, Stat};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Whole,
    Hour,
    Day,
    Week,
    Month,
}

/// At most this many buckets per figure (8,760 hours in a year is too many
/// for a page: choose days).
pub const MAX_BUCKETS: usize = 1_000;

/// A request for figures, already checked.
#[derive(Debug, Clone)]
pub struct Query {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub granularity: Granularity,
    /// Empty: no cut.
    pub cut: String,
    /// Empty: every indicator.
    pub indicators: Vec<String>,
    pub filters: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub indicator: &'static str,
    pub cut_value: String,
    pub bucket: DateTime<Utc>,
    pub value: f64,
    pub count: u64,
    pub empty: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub kind: &'static str,
    pub id: String,
    pub dossier_id: String,
    pub dossier_reference: String,
    pub at: DateTime<Utc>,
    pub value: f64,
    pub counted: bool,
    pub cut_value: String,
}

/// Why a query was refused: the field and the reason (InvalidArgument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub field: String,
    pub reason: String,
}

fn refused(field: &str, reason: impl Into<String>) -> Refused {
    Refused {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// One item as read.
struct Row {
    t: i64,
    c: String,
    v: f64,
    f: i64,
    item: Option<(String, String, String)>,
}

#[derive(Clone)]
pub struct Engine {
    pub db: DatabaseConnection,
    pub indicators: Arc<Vec<Indicator>>,
    pub calendar: Arc<BusinessCalendar>,
    pub per_agent: bool,
}

fn paris_midnight(d: NaiveDate) -> DateTime<Utc> {
    from_paris(d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

impl Granularity {
    /// The start of the bucket holding `t` (Paris calendar).
    pub fn floor(self, t: DateTime<Utc>, period_start: DateTime<Utc>) -> DateTime<Utc> {
        let local = to_paris(t);
        match self {
            Granularity::Whole => period_start,
            Granularity::Hour => from_paris(
                local
                    .date()
                    .and_hms_opt(local.hour(), 0, 0)
                    .unwrap_or_default(),
            ),
            Granularity::Day => paris_midnight(local.date()),
            Granularity::Week => paris_midnight(
                local.date() - Duration::days(i64::from(local.weekday().num_days_from_monday())),
            ),
            Granularity::Month => paris_midnight(local.date().with_day(1).unwrap_or(local.date())),
        }
    }

    /// The start of the bucket after the one starting at `b`.
    pub fn next(self, b: DateTime<Utc>, period_end: DateTime<Utc>) -> DateTime<Utc> {
        let local = to_paris(b).date();
        match self {
            Granularity::Whole => period_end,
            // Hours are UTC-stable (a DST day has 23 or 25 of them).
            Granularity::Hour => b + Duration::hours(1),
            Granularity::Day => paris_midnight(local + Duration::days(1)),
            Granularity::Week => paris_midnight(local + Duration::days(7)),
            Granularity::Month => {
                let (y, m) = if local.month() == 12 {
                    (local.year() + 1, 1)
                } else {
                    (local.year(), local.month() + 1)
                };
                paris_midnight(NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(local))
            }
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: u32) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((f64::from(p) / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn age_bucket(age: i64) -> &'static str {
    if age < 7 * 86_400 {
        "moins de 7 jours"
    } else if age < 30 * 86_400 {
        "7 à 30 jours"
    } else {
        "plus de 30 jours"
    }
}

impl Engine {
    pub fn indicator(&self, key: &str) -> Option<&Indicator> {
        self.indicators.iter().find(|i| i.key == key)
    }

    /// Check a query: the period, the cut, the filters, the indicators.
    pub fn check(&self, q: &Query) -> Result<(), Refused> {
        if q.start >= q.end {
            return Err(refused("period", "the period must end after it starts"));
        }
        if !q.cut.is_empty() && !DIMENSIONS.contains(&q.cut.as_str()) {
            return Err(refused(
                "cut",
                format!("`{}` is not one of {}", q.cut, DIMENSIONS.join(", ")),
            ));
        }
        for (i, (dim, _)) in q.filters.iter().enumerate() {
            if !DIMENSIONS.contains(&dim.as_str()) || dim == "age" {
                return Err(refused(
                    &format!("filters[{i}].dimension"),
                    format!("`{dim}` is not a dimension one can filter by"),
                ));
            }
        }
        let agent = q.cut == "agent" || q.filters.iter().any(|(d, _)| d == "agent");
        if agent && !self.per_agent {
            return Err(refused(
                if q.cut == "agent" { "cut" } else { "filters" },
                "figures per agent are not enabled in this town (indicators.per_agent_figures)",
            ));
        }
        for (i, key) in q.indicators.iter().enumerate() {
            if self.indicator(key).is_none() {
                return Err(refused(
                    &format!("indicators[{i}]"),
                    format!("`{key}` is not an indicator"),
                ));
            }
        }
        let mut n = 0;
        let mut b = q.granularity.floor(q.start, q.start);
        while b < q.end {
            n += 1;
            if n > MAX_BUCKETS {
                return Err(refused(
                    "granularity",
                    format!("more than {MAX_BUCKETS} buckets: choose a coarser granularity"),
                ));
            }
            b = q.granularity.next(b, q.end);
        }
        Ok(())
    }

    /// The bucket starts of the period.
    pub fn buckets(&self, q: &Query) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut b = q.granularity.floor(q.start, q.start);
        while b < q.end {
            out.push(b);
            b = q.granularity.next(b, q.end);
        }
        out
    }

    /// The indicators a query asks for, and those left out because they
    /// cannot take its cut or one of its filters.
    pub fn selected(&self, q: &Query) -> (Vec<&Indicator>, Vec<&'static str>) {
        let mut keep = Vec::new();
        let mut not_cut = Vec::new();
        for i in self.indicators.iter() {
            if !q.indicators.is_empty() && !q.indicators.iter().any(|k| k == i.key) {
                continue;
            }
            let has = |d: &str| i.cuts.iter().any(|(k, _)| *k == d);
            let ok = (q.cut.is_empty() || has(&q.cut)) && q.filters.iter().all(|(d, _)| has(d));
            if ok {
                keep.push(i)
            } else {
                not_cut.push(i.key)
            }
        }
        (keep, not_cut)
    }

    fn cut_expr(i: &Indicator, dim: &str) -> Option<&'static str> {
        i.cuts.iter().find(|(k, _)| *k == dim).map(|(_, e)| *e)
    }

    async fn rows(
        &self,
        i: &Indicator,
        q: &Query,
        cut_value: Option<&str>,
        items: bool,
    ) -> Result<Vec<Row>, DbErr> {
        let backend = self.db.get_database_backend();
        let mut sql = Sql::new(backend);
        let cut = match Self::cut_expr(i, &q.cut) {
            Some(e) if !e.is_empty() => format!("COALESCE(CAST({e} AS TEXT), '')"),
            _ => "''".into(),
        };
        let value = if i.stat == Stat::OpenAtEnd {
            format!("COALESCE({}, -1)", i.closed)
        } else {
            i.value.clone()
        };
        sql.push(&format!(
            "SELECT CAST({} AS BIGINT) AS t, {cut} AS c, CAST({value} AS DOUBLE PRECISION) AS v, \
             CAST({} AS BIGINT) AS f",
            i.time, i.flag
        ));
        if items {
            let (_, id, dossier, reference) = i.item;
            sql.push(&format!(
                ", CAST({id} AS TEXT) AS id, COALESCE(CAST({dossier} AS TEXT), '') AS dossier, \
                 COALESCE(CAST({reference} AS TEXT), '') AS reference"
            ));
        }
        sql.push(&format!(" FROM {} WHERE ", i.from));
        if i.stat == Stat::OpenAtEnd {
            sql.push(&format!("{} < ", i.time))
                .bind(q.end.timestamp())
                .push(&format!(" AND ({} IS NULL OR {} >= ", i.closed, i.closed))
                .bind(q.start.timestamp())
                .push(")");
        } else {
            sql.push(&format!("{} >= ", i.time))
                .bind(q.start.timestamp())
                .push(&format!(" AND {} < ", i.time))
                .bind(q.end.timestamp());
        }
        sql.push(&format!(" AND ({})", i.filter));
        for (dim, value) in &q.filters {
            if let Some(e) = Self::cut_expr(i, dim) {
                sql.push(&format!(" AND COALESCE(CAST({e} AS TEXT), '') = "))
                    .bind(value.as_str());
            }
        }
        if let (Some(v), false) = (cut_value, q.cut.is_empty() || q.cut == "age")
            && let Some(e) = Self::cut_expr(i, &q.cut)
        {
            sql.push(&format!(" AND COALESCE(CAST({e} AS TEXT), '') = "))
                .bind(v);
        }
        let rows = self.db.query_all_raw(sql.build()).await?;
        rows.iter().map(|r| read_row(r, items)).collect()
    }

    /// The figures of a query (checked first), and the indicators left out.
    pub async fn figures(&self, q: &Query) -> Result<(Vec<Figure>, Vec<&'static str>), DbErr> {
        let buckets = self.buckets(q);
        let (selected, not_cut) = self.selected(q);
        let mut out = Vec::new();
        for i in selected {
            let rows = self.rows(i, q, None, false).await?;
            out.extend(self.compute(i, q, &buckets, &rows));
        }
        Ok((out, not_cut))
    }

    fn compute(
        &self,
        i: &Indicator,
        q: &Query,
        buckets: &[DateTime<Utc>],
        rows: &[Row],
    ) -> Vec<Figure> {
        // (cut value, bucket index) → items.
        let mut groups: BTreeMap<(String, usize), Vec<&Row>> = BTreeMap::new();
        let mut cuts: BTreeSet<String> = BTreeSet::new();
        let end_of = |k: usize| buckets.get(k + 1).copied().unwrap_or(q.end).min(q.end);
        if i.stat == Stat::OpenAtEnd {
            for (k, _) in buckets.iter().enumerate() {
                let e = end_of(k).timestamp();
                for r in rows
                    .iter()
                    .filter(|r| r.t < e && (r.v < 0.0 || r.v as i64 >= e))
                {
                    let c = if q.cut == "age" {
                        age_bucket(e - r.t).to_owned()
                    } else {
                        r.c.clone()
                    };
                    cuts.insert(c.clone());
                    groups.entry((c, k)).or_default().push(r);
                }
            }
        } else {
            for r in rows {
                let Some(t) = DateTime::from_timestamp(r.t, 0) else {
                    continue;
                };
                let b = q.granularity.floor(t, q.start);
                let Ok(k) = buckets.binary_search(&b) else {
                    continue;
                };
                cuts.insert(r.c.clone());
                groups.entry((r.c.clone(), k)).or_default().push(r);
            }
        }
        if cuts.is_empty() {
            cuts.insert(String::new());
        }
        let mut out = Vec::new();
        for c in &cuts {
            for (k, b) in buckets.iter().enumerate() {
                let items = groups
                    .get(&(c.clone(), k))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let n = items.len();
                let value = match i.stat {
                    _ if n == 0 => 0.0,
                    Stat::Count | Stat::OpenAtEnd => n as f64,
                    Stat::Mean => items.iter().map(|r| r.v).sum::<f64>() / n as f64,
                    Stat::Percentile(p) => {
                        let mut v: Vec<f64> = items.iter().map(|r| r.v).collect();
                        v.sort_by(f64::total_cmp);
                        percentile(&v, p)
                    }
                    Stat::Ratio => items.iter().filter(|r| r.f != 0).count() as f64 / n as f64,
                    Stat::RatioOfSums => {
                        let den: f64 = items.iter().map(|r| r.v).sum();
                        let num: i64 = items.iter().map(|r| r.f).sum();
                        if den > 0.0 { num as f64 / den } else { 0.0 }
                    }
                    Stat::PerOpenHour => {
                        let from = (*b).max(q.start);
                        let hours = self
                            .calendar
                            .working_time_between(from, end_of(k))
                            .num_seconds() as f64
                            / 3600.0;
                        if hours > 0.0 { n as f64 / hours } else { 0.0 }
                    }
                };
                out.push(Figure {
                    indicator: i.key,
                    cut_value: c.clone(),
                    bucket: *b,
                    value,
                    count: n as u64,
                    empty: n == 0,
                });
            }
        }
        out
    }

    /// The items behind one figure (cut value, whole period), in time order.
    pub async fn items(
        &self,
        i: &Indicator,
        q: &Query,
        cut_value: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Item>, usize), DbErr> {
        let rows = self.rows(i, q, Some(cut_value), true).await?;
        let end = q.end.timestamp();
        let mut kept: Vec<Item> = rows
            .into_iter()
            .filter_map(|r| {
                let c = if i.stat == Stat::OpenAtEnd {
                    if !(r.t < end && (r.v < 0.0 || r.v as i64 >= end)) {
                        return None;
                    }
                    if q.cut == "age" {
                        age_bucket(end - r.t).to_owned()
                    } else {
                        r.c
                    }
                } else {
                    r.c
                };
                if !q.cut.is_empty() && c != cut_value {
                    return None;
                }
                let (id, dossier_id, dossier_reference) = r.item.unwrap_or_default();
                Some(Item {
                    kind: i.item.0,
                    id,
                    dossier_id,
                    dossier_reference,
                    at: DateTime::from_timestamp(r.t, 0).unwrap_or_default(),
                    value: if i.stat == Stat::OpenAtEnd {
                        (end - r.t) as f64
                    } else {
                        r.v
                    },
                    counted: r.f != 0,
                    cut_value: c,
                })
            })
            .collect();
        kept.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        let total = kept.len();
        let page = kept.into_iter().skip(offset).take(limit).collect();
        Ok((page, total))
    }
}

fn read_row(r: &QueryResult, items: bool) -> Result<Row, DbErr> {
    let item = if items {
        Some((
            r.try_get::<String>("", "id")?,
            r.try_get::<String>("", "dossier")?,
            r.try_get::<String>("", "reference")?,
        ))
    } else {
        None
    };
    Ok(Row {
        t: r.try_get::<i64>("", "t")?,
        c: r.try_get::<String>("", "c")?,
        v: r.try_get::<Option<f64>>("", "v")?.unwrap_or(0.0),
        f: r.try_get::<Option<i64>>("", "f")?.unwrap_or(0),
        item,
    })
}

/// The queue now, from the facts: waiting requests by channel (count,
/// oldest entry) and agents by presence.
pub async fn queue_now(
    db: &DatabaseConnection,
) -> Result<(Vec<(String, u32, i64)>, Vec<(String, u32)>), DbErr> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT channel, CAST(COUNT(*) AS BIGINT) AS n, CAST(MIN(received_s) AS BIGINT) AS oldest \
             FROM request_fact WHERE status IN ('pending', 'offered') GROUP BY channel ORDER BY channel",
        ))
        .await?;
    let mut channels = Vec::new();
    for r in rows {
        channels.push((
            r.try_get::<String>("", "channel")?,
            r.try_get::<i64>("", "n")? as u32,
            r.try_get::<i64>("", "oldest")?,
        ));
    }
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT presence, CAST(COUNT(*) AS BIGINT) AS n FROM agent_presence GROUP BY presence ORDER BY presence",
        ))
        .await?;
    let mut agents = Vec::new();
    for r in rows {
        agents.push((
            r.try_get::<String>("", "presence")?,
            r.try_get::<i64>("", "n")? as u32,
        ));
    }
    Ok((channels, agents))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 50), 5.0);
        assert_eq!(percentile(&v, 90), 9.0);
        assert_eq!(percentile(&[7.0], 90), 7.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50), 2.0);
        assert_eq!(percentile(&[], 50), 0.0);
    }

    #[test]
    fn buckets_follow_paris_calendar() {
        let t = DateTime::parse_from_rfc3339("2026-03-29T10:30:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        // Sunday 29 March 2026 (summer time starts): the week starts Monday 23.
        let w = Granularity::Week.floor(t, t);
        assert_eq!(w.to_rfc3339(), "2026-03-22T23:00:00+00:00");
        let m = Granularity::Month.floor(t, t);
        assert_eq!(m.to_rfc3339(), "2026-02-28T23:00:00+00:00");
        assert_eq!(
            Granularity::Month.next(m, t).to_rfc3339(),
            "2026-03-31T22:00:00+00:00"
        );
    }
}
