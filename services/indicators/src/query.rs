//! Figures from the fact tables: one SQL read per indicator that groups
//! the period's items by bucket and cut value in the database (a CASE over
//! the bucket ends, which follow the Paris calendar, places each item) and
//! returns per group what its statistic needs: the count, sums of values
//! and flags, or, for a percentile, the group's values. Values are whole
//! numbers (seconds, units), so the sums are exact and the nearest-rank
//! percentile is picked in Rust the same way on both backends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use guichet_platform::calendar::{BusinessCalendar, from_paris, to_paris};
use guichet_platform::db::Sql;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, QueryResult, TransactionTrait,
};

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

/// One item as read (drill-down).
struct Row {
    t: i64,
    c: String,
    v: f64,
    f: i64,
    item: (String, String, String),
}

/// The items of one bucket and cut value, as the database sums them up.
#[derive(Default)]
struct Agg {
    n: u64,
    /// Sum of the values.
    sum: f64,
    /// Items whose flag is not 0.
    flagged: u64,
    /// Sum of the flags.
    flags: i64,
    /// The values themselves (percentiles), unsorted.
    values: Vec<i64>,
}

/// (cut value, bucket index) → its items summed up.
type Groups = BTreeMap<(String, usize), Agg>;

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

/// The rank (1-based) of the nearest-rank percentile `p` of `n` values.
fn nearest_rank(n: usize, p: u32) -> usize {
    let rank = ((f64::from(p) / 100.0) * n as f64).ceil() as usize;
    rank.clamp(1, n.max(1))
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: u32) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[nearest_rank(sorted.len(), p) - 1]
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

/// The backlog's age classes: the label and the age (seconds) it starts at.
const AGES: [(&str, i64); 3] = [
    ("moins de 7 jours", 0),
    ("7 à 30 jours", 7 * 86_400),
    ("plus de 30 jours", 30 * 86_400),
];

/// SQL for the number of `ends` (ascending Unix seconds) at or before the
/// integer `x`: for a time, the index of its bucket (bucket k ends at
/// `ends[k]`). A balanced CASE, so a row costs log2(buckets) comparisons.
fn bucket_index(x: &str, ends: &[i64]) -> String {
    fn tree(x: &str, ends: &[i64], lo: usize, hi: usize, out: &mut String) {
        if lo == hi {
            out.push_str(&lo.to_string());
            return;
        }
        let mid = (lo + hi) / 2;
        out.push_str(&format!("CASE WHEN {x} < {} THEN ", ends[mid]));
        tree(x, ends, lo, mid, out);
        out.push_str(" ELSE ");
        tree(x, ends, mid + 1, hi, out);
        out.push_str(" END");
    }
    let mut out = String::from("CAST(");
    tree(x, ends, 0, ends.len(), &mut out);
    out.push_str(" AS BIGINT)");
    out
}

impl Engine {
    pub fn indicator(&self, key: &str) -> Option<&Indicator> {
        self.indicators.iter().find(|i| i.key == key)
    }

    /// Check a query: the period, the cut, the filters, the indicators, and
    /// how many buckets it makes.
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
        if bucket_starts(q).nth(MAX_BUCKETS).is_some() {
            return Err(refused(
                "granularity",
                format!("more than {MAX_BUCKETS} buckets: choose a coarser granularity"),
            ));
        }
        Ok(())
    }

    /// The bucket starts of the period.
    pub fn buckets(&self, q: &Query) -> Vec<DateTime<Utc>> {
        bucket_starts(q).collect()
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

    /// The SQL of the query's cut value for `i` ('' without a cut).
    fn cut_sql(i: &Indicator, q: &Query) -> String {
        match Self::cut_expr(i, &q.cut) {
            Some(e) if !e.is_empty() => format!("COALESCE(CAST({e} AS TEXT), '')"),
            _ => "''".into(),
        }
    }

    /// ` FROM … WHERE …`: the items of `i` in the period (for a backlog:
    /// opened before its end, not closed before its start), with the
    /// query's filters and, for a drill-down, the chosen cut value.
    fn push_from_where(sql: &mut Sql, i: &Indicator, q: &Query, cut_value: Option<&str>) {
        // The dossier join only when the cut or a filter reads the dossier.
        let uses_dossier = Self::cut_expr(i, &q.cut).is_some_and(|e| e.contains("d."))
            || q.filters
                .iter()
                .filter_map(|(d, _)| Self::cut_expr(i, d))
                .any(|e| e.contains("d."));
        let from = match i.from.split_once(" LEFT JOIN dossier_fact d ") {
            Some((lean, _)) if !uses_dossier => lean,
            _ => i.from,
        };
        sql.push(&format!(" FROM {from} WHERE "));
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
    }

    /// The items behind a figure, one row each (drill-down).
    async fn rows(&self, i: &Indicator, q: &Query, cut_value: &str) -> Result<Vec<Row>, DbErr> {
        let mut sql = Sql::new(self.db.get_database_backend());
        let value = if i.stat == Stat::OpenAtEnd {
            format!("COALESCE({}, -1)", i.closed)
        } else {
            i.value.clone()
        };
        let (_, id, dossier, reference) = i.item;
        sql.push(&format!(
            "SELECT CAST({} AS BIGINT) AS t, {} AS c, CAST({value} AS DOUBLE PRECISION) AS v, \
             CAST({} AS BIGINT) AS f, CAST({id} AS TEXT) AS id, \
             COALESCE(CAST({dossier} AS TEXT), '') AS dossier, \
             COALESCE(CAST({reference} AS TEXT), '') AS reference",
            i.time,
            Self::cut_sql(i, q),
            i.flag
        ));
        Self::push_from_where(&mut sql, i, q, Some(cut_value));
        let rows = self.db.query_all_raw(sql.build()).await?;
        rows.iter().map(read_row).collect()
    }

    /// The figures of a query (checked first), and the indicators left out.
    ///
    /// On PostgreSQL they are read in one transaction without JIT: a
    /// year's GROUP BY runs in tens of milliseconds, compiling it took
    /// longer than that.
    pub async fn figures(&self, q: &Query) -> Result<(Vec<Figure>, Vec<&'static str>), DbErr> {
        if self.db.get_database_backend() != DatabaseBackend::Postgres {
            return self.figures_on(&self.db, q).await;
        }
        let txn = self.db.begin().await?;
        txn.execute_unprepared("SET LOCAL jit = off").await?;
        let figures = self.figures_on(&txn, q).await?;
        txn.commit().await?;
        Ok(figures)
    }

    async fn figures_on(
        &self,
        conn: &impl ConnectionTrait,
        q: &Query,
    ) -> Result<(Vec<Figure>, Vec<&'static str>), DbErr> {
        let buckets = self.buckets(q);
        // Bucket k ends where k + 1 starts; the last one with the period.
        let ends: Vec<DateTime<Utc>> = (0..buckets.len())
            .map(|k| buckets.get(k + 1).copied().unwrap_or(q.end).min(q.end))
            .collect();
        let ends_s: Vec<i64> = ends.iter().map(DateTime::timestamp).collect();
        let (selected, not_cut) = self.selected(q);
        let mut out = Vec::new();
        for i in selected {
            let groups = if i.stat == Stat::OpenAtEnd {
                self.open_at_end(conn, i, q, &ends_s).await?
            } else {
                self.aggregates(conn, i, q, &ends_s).await?
            };
            out.extend(self.compute(i, q, &buckets, &ends, groups));
        }
        Ok((out, not_cut))
    }

    /// Per (cut value, bucket), the sums a statistic needs, summed up by
    /// the database: each item is placed in its bucket by a CASE over the
    /// bucket ends, so only the groups travel (and, for a percentile, each
    /// group's values as one text).
    async fn aggregates(
        &self,
        conn: &impl ConnectionTrait,
        i: &Indicator,
        q: &Query,
        ends: &[i64],
    ) -> Result<Groups, DbErr> {
        let backend = conn.get_database_backend();
        let mut sql = Sql::new(backend);
        // Items are in the period: before its end, the last bucket's end.
        let bucket = bucket_index(i.time, &ends[..ends.len().saturating_sub(1)]);
        let value = format!("CAST(COALESCE({}, 0) AS BIGINT)", i.value);
        let flag = format!("COALESCE(CAST({} AS BIGINT), 0)", i.flag);
        let mut select = format!(
            "SELECT {bucket} AS b, {} AS c, CAST(COUNT(*) AS BIGINT) AS n",
            Self::cut_sql(i, q)
        );
        match i.stat {
            Stat::Mean => select += &format!(", CAST(SUM({value}) AS DOUBLE PRECISION) AS sv"),
            Stat::RatioOfSums => {
                select += &format!(", CAST(SUM({value}) AS DOUBLE PRECISION) AS sv");
                select += &format!(", CAST(SUM({flag}) AS BIGINT) AS sf");
            }
            Stat::Ratio => {
                select +=
                    &format!(", CAST(SUM(CASE WHEN {flag} <> 0 THEN 1 ELSE 0 END) AS BIGINT) AS nf")
            }
            Stat::Percentile(_) => {
                let concat = if backend == DatabaseBackend::Postgres {
                    "STRING_AGG"
                } else {
                    "GROUP_CONCAT"
                };
                select += &format!(", {concat}(CAST({value} AS TEXT), ',') AS vs");
            }
            Stat::Count | Stat::PerOpenHour | Stat::OpenAtEnd => {}
        }
        sql.push(&select);
        Self::push_from_where(&mut sql, i, q, None);
        sql.push(" GROUP BY 1, 2");
        let mut groups = BTreeMap::new();
        for r in conn.query_all_raw(sql.build()).await? {
            let mut agg = Agg {
                n: r.try_get::<i64>("", "n")? as u64,
                ..Agg::default()
            };
            match i.stat {
                Stat::Mean => agg.sum = r.try_get::<Option<f64>>("", "sv")?.unwrap_or(0.0),
                Stat::RatioOfSums => {
                    agg.sum = r.try_get::<Option<f64>>("", "sv")?.unwrap_or(0.0);
                    agg.flags = r.try_get::<Option<i64>>("", "sf")?.unwrap_or(0);
                }
                Stat::Ratio => {
                    agg.flagged = r.try_get::<Option<i64>>("", "nf")?.unwrap_or(0) as u64
                }
                Stat::Percentile(_) => {
                    agg.values = r
                        .try_get::<String>("", "vs")?
                        .split(',')
                        .map(|v| {
                            v.parse::<i64>()
                                .map_err(|e| DbErr::Custom(format!("{}: value `{v}`: {e}", i.key)))
                        })
                        .collect::<Result<_, _>>()?;
                }
                Stat::Count | Stat::PerOpenHour | Stat::OpenAtEnd => {}
            }
            let k = r.try_get::<i64>("", "b")? as usize;
            groups.insert((r.try_get::<String>("", "c")?, k), agg);
        }
        Ok(groups)
    }

    /// Per (cut value, bucket), the items open at the bucket's end. The
    /// database groups the items by the first bucket whose end they are
    /// open at and the first they are no longer (and, cut by age, where
    /// they turn 7 and 30 days old); an item counts at the ends of the
    /// buckets in between.
    async fn open_at_end(
        &self,
        conn: &impl ConnectionTrait,
        i: &Indicator,
        q: &Query,
        ends: &[i64],
    ) -> Result<Groups, DbErr> {
        let n = ends.len();
        let by_age = q.cut == "age";
        // Open at the end e of bucket k: opened before it (k ≥ a), not
        // closed before it (k < z); younger than `age` there: e < t + age,
        // that is e ≤ t + age − 1 (whole seconds).
        let mut select = format!(
            "SELECT {} AS c, {} AS a, CAST(CASE WHEN {closed} IS NULL THEN {n} ELSE {} END AS BIGINT) AS z",
            Self::cut_sql(i, q),
            bucket_index(i.time, ends),
            bucket_index(i.closed, ends),
            closed = i.closed,
        );
        let mut group = String::from(" GROUP BY 1, 2, 3");
        if by_age {
            for (k, (_, age)) in AGES.iter().enumerate().skip(1) {
                let older = format!("({} + {})", i.time, age - 1);
                select += &format!(", {} AS g{k}", bucket_index(&older, ends));
                group += &format!(", {}", k + 3);
            }
        }
        select += ", CAST(COUNT(*) AS BIGINT) AS n";
        let mut sql = Sql::new(conn.get_database_backend());
        sql.push(&select);
        Self::push_from_where(&mut sql, i, q, None);
        sql.push(&group);
        // Per cut value (or age class): +n where items start counting, −n
        // where they stop.
        let mut steps: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut add = |c: &str, lo: usize, hi: usize, count: i64| {
            if lo < hi {
                let s = steps.entry(c.to_owned()).or_insert_with(|| vec![0; n + 1]);
                s[lo] += count;
                s[hi] -= count;
            }
        };
        for r in conn.query_all_raw(sql.build()).await? {
            let at = |col: &str| {
                r.try_get::<i64>("", col)
                    .map(|v| (v.max(0) as usize).min(n))
            };
            let (a, z) = (at("a")?, at("z")?);
            let count = r.try_get::<i64>("", "n")?;
            if by_age {
                let bounds = [0, at("g1")?, at("g2")?, n];
                for (k, (label, _)) in AGES.iter().enumerate() {
                    add(label, a.max(bounds[k]), z.min(bounds[k + 1]), count);
                }
            } else {
                add(&r.try_get::<String>("", "c")?, a, z, count);
            }
        }
        let mut groups = BTreeMap::new();
        for (c, s) in steps {
            let mut open = 0;
            for (k, step) in s.iter().take(n).enumerate() {
                open += step;
                if open > 0 {
                    let agg = Agg {
                        n: open as u64,
                        ..Agg::default()
                    };
                    groups.insert((c.clone(), k), agg);
                }
            }
        }
        Ok(groups)
    }

    /// The figures of `i` for every cut value and bucket, from the groups
    /// (a cut value without any item gives no figures; no item at all, one
    /// row of zeros per bucket).
    fn compute(
        &self,
        i: &Indicator,
        q: &Query,
        buckets: &[DateTime<Utc>],
        ends: &[DateTime<Utc>],
        mut groups: Groups,
    ) -> Vec<Figure> {
        let mut cuts: BTreeSet<String> = groups.keys().map(|(c, _)| c.clone()).collect();
        if cuts.is_empty() {
            cuts.insert(String::new());
        }
        let mut out = Vec::new();
        for c in &cuts {
            for (k, b) in buckets.iter().enumerate() {
                let mut g = groups.remove(&(c.clone(), k)).unwrap_or_default();
                let n = g.n;
                let value = match i.stat {
                    _ if n == 0 => 0.0,
                    Stat::Count | Stat::OpenAtEnd => n as f64,
                    Stat::Mean => g.sum / n as f64 / i.per,
                    Stat::Percentile(p) => {
                        g.values.sort_unstable();
                        match g.values.get(nearest_rank(g.values.len(), p) - 1) {
                            Some(v) => *v as f64 / i.per,
                            None => 0.0,
                        }
                    }
                    Stat::Ratio => g.flagged as f64 / n as f64,
                    Stat::RatioOfSums => {
                        if g.sum > 0.0 {
                            g.flags as f64 / g.sum
                        } else {
                            0.0
                        }
                    }
                    Stat::PerOpenHour => {
                        let from = (*b).max(q.start);
                        let hours = self
                            .calendar
                            .working_time_between(from, ends[k])
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
                    count: n,
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
        let rows = self.rows(i, q, cut_value).await?;
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
                let (id, dossier_id, dossier_reference) = r.item;
                Some(Item {
                    kind: i.item.0,
                    id,
                    dossier_id,
                    dossier_reference,
                    at: DateTime::from_timestamp(r.t, 0).unwrap_or_default(),
                    value: if i.stat == Stat::OpenAtEnd {
                        (end - r.t) as f64
                    } else {
                        r.v / i.per
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

/// The bucket starts of a query's period (Paris calendar).
fn bucket_starts(q: &Query) -> impl Iterator<Item = DateTime<Utc>> + '_ {
    std::iter::successors(Some(q.granularity.floor(q.start, q.start)), |b| {
        Some(q.granularity.next(*b, q.end))
    })
    .take_while(|b| *b < q.end)
}

fn read_row(r: &QueryResult) -> Result<Row, DbErr> {
    Ok(Row {
        t: r.try_get::<i64>("", "t")?,
        c: r.try_get::<String>("", "c")?,
        v: r.try_get::<Option<f64>>("", "v")?.unwrap_or(0.0),
        f: r.try_get::<Option<i64>>("", "f")?.unwrap_or(0),
        item: (
            r.try_get::<String>("", "id")?,
            r.try_get::<String>("", "dossier")?,
            r.try_get::<String>("", "reference")?,
        ),
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

    /// The SQL that places an item puts it in the bucket the Paris
    /// calendar gives it, for every granularity over a year with both DST
    /// changes (hours aside: the repeated autumn hour is its own bucket).
    #[tokio::test]
    async fn sql_bucket_index_matches_the_calendar() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .unwrap()
        };
        for granularity in [Granularity::Week, Granularity::Month, Granularity::Day] {
            let q = Query {
                start: at("2025-01-01T10:00:00Z"),
                end: at("2026-01-01T00:00:00Z"),
                granularity,
                cut: String::new(),
                indicators: vec![],
                filters: vec![],
            };
            let buckets: Vec<DateTime<Utc>> = bucket_starts(&q).collect();
            let ends: Vec<i64> = buckets[1..].iter().map(DateTime::timestamp).collect();
            let times: Vec<i64> = (0..500)
                .map(|k| q.start.timestamp() + k * 63_113 + (k * k) % 3_600)
                .filter(|t| *t < q.end.timestamp())
                .collect();
            let list = times
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "WITH x(t) AS (VALUES ({})) SELECT t, {} AS k FROM x",
                list.replace(", ", "), ("),
                bucket_index("t", &ends)
            );
            let rows = db
                .query_all_raw(sea_orm::Statement::from_string(
                    sea_orm::DatabaseBackend::Sqlite,
                    sql,
                ))
                .await
                .unwrap();
            assert_eq!(rows.len(), times.len());
            for r in rows {
                let t: i64 = r.try_get("", "t").unwrap();
                let k: i64 = r.try_get("", "k").unwrap();
                let time = DateTime::from_timestamp(t, 0).unwrap();
                let expected = buckets.binary_search(&granularity.floor(time, q.start));
                assert_eq!(Ok(k as usize), expected, "{granularity:?} {time}");
            }
        }
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
