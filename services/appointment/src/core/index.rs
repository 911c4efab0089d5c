//! The availability index: each desk's open units, claimed units and free
//! starts kept in memory, so an availability query (the national
//! aggregator's polling, the citizen pages) costs one small read of the
//! desks' version counters instead of reading claims and exceptions and
//! recomputing a month of schedule units.
//!
//! Exactness. Every transaction that takes or frees a unit of a desk (book,
//! reschedule, cancel) or changes the desk's run-time exceptions raises the
//! desk's version in `slot_versions` (a sum of rows, one raised at random
//! per transaction), in that same transaction, just before it commits. A
//! query reads the versions of the desks it covers (one indexed read) and
//! uses a desk's entry only when the entry was built under the very version
//! it reads now. An entry is built from claims and exceptions read *after*
//! its version was read, so it holds at least every commit up to that
//! version; as a version only grows, one that still reads the same means
//! nothing committed since.
//!
//! The version read is the whole cost of a query answered from memory (a
//! database round trip, about 0.2 ms on a busy 2-core machine), so a
//! replica reuses a version it read for [`LEASE`] (2 ms) from the moment
//! it sent the read, and every change waits [`SETTLE`] (4 ms) after its
//! commit before its RPC returns (so does a retry answered with the first
//! attempt's result, which may overtake it). A query that starts after a change
//! returned therefore uses a version read sent at least 2 ms after that
//! commit, on whichever replica: it sees the raised version and rebuilds.
//! A slot gone is never offered and a freed one is offered again, to any
//! query that starts after the change's answer; the change's replica also
//! forgets its leased versions at once. The argument needs only that the
//! replicas' monotonic clocks run at the same rate within a factor two.
//!
//! Why versions in the database and not invalidation over NATS: a message
//! arrives after the commit, so another replica would answer from a stale
//! entry in between (and a lost or late message would leave it stale
//! longer). The version read is one primary-key range read (a few rows
//! per desk), cheap beside a month of recomputation; bookings mostly raise
//! different rows, so they do not queue on one lock. The booking path
//! itself stays guarded by the unique claim key: the index serves reads
//! only.
//!
//! The answer is the one `open_units` / `apply_exceptions` / `free_starts`
//! give for the query's range: an entry covers a wider range [lo, hi) and
//! a free start `s` of the entry is one of the query when `from <= s` and
//! `s + span <= to`, since every unit such a start needs lies in the
//! query's range, where both computations see the same units open and
//! claimed (the entry reads exceptions and claims with a day of margin).
//! Bookings purged by retention end a year in the past, before any entry's
//! range, so the purge raises no version.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, ExprTrait, TryGetable};

use super::{Core, a};
use crate::db::entities::exception;
use crate::error::{Error, internal, internal_err};
use crate::schedule::Desk;

/// How far ahead an entry is built beyond the query that builds it (the
/// public windows are 60 days in the sample town; a longer query builds a
/// longer entry).
const HORIZON_DAYS: i64 = 100;
/// Margin around an entry's range when reading claims and exceptions.
const MARGIN_DAYS: i64 = 1;
/// Version rows per desk (the connection pool's size: a rush of bookings
/// on one desk seldom queues on one row).
const SHARDS: i32 = 16;

/// How long a replica reuses a version it read, from the moment it sent
/// the read.
const LEASE: std::time::Duration = std::time::Duration::from_millis(2);
/// How long a change waits after its commit before it returns: twice the
/// lease, a margin no clock-rate difference between machines comes near.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(4);

/// Query shapes (desks, length, distinct) whose merged starts are kept.
const MERGED_SHAPES: usize = 64;

/// The in-memory entries, one per desk, and the merged starts of the
/// query shapes last asked.
#[derive(Default)]
pub struct SlotIndex {
    desks: RwLock<HashMap<String, Arc<DeskSlots>>>,
    merged: Mutex<Vec<Arc<Merged>>>,
    /// Each desk's version as last read, with the instant the read was sent.
    versions: Mutex<HashMap<String, (i64, Instant)>>,
    /// Bookings of one desk-time in this process take turns (`turn`).
    turns: Mutex<HashMap<DeskTime, Arc<tokio::sync::Mutex<()>>>>,
}

type DeskTime = (String, DateTime<Utc>);
/// A desk to rebuild: its place in the query, the range its new entry
/// covers, its old entry.
type Rebuild = (usize, DateTime<Utc>, DateTime<Utc>, Option<Arc<DeskSlots>>);

/// One booking attempt's turn on a desk-time; the next waits until it drops.
pub struct Turn<'a> {
    index: &'a SlotIndex,
    key: DeskTime,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut m = self
            .index
            .turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Nobody else holds or waits for it (the map and this turn).
        if Arc::strong_count(&self.lock) == 2 {
            m.remove(&self.key);
        }
    }
}

/// One query shape's free starts over the entries they were merged from.
pub struct Merged {
    units: i64,
    distinct: bool,
    desks: Vec<(String, Arc<DeskSlots>)>,
    /// (start, index of the desk in the query's desks), sorted by (start,
    /// site, desk).
    pub slots: Vec<(DateTime<Utc>, usize)>,
}

/// One desk's units over [lo, hi), as of `version`.
pub struct DeskSlots {
    version: i64,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
    /// The run-time exceptions the open units were computed with (an entry
    /// rebuilt after a booking keeps its open units when these are equal).
    exceptions: Vec<exception::Model>,
    open: Arc<BTreeSet<DateTime<Utc>>>,
    taken: BTreeSet<DateTime<Utc>>,
    /// Free starts by booking length in units, computed on first use.
    free: Mutex<HashMap<i64, Arc<Vec<DateTime<Utc>>>>>,
}

impl DeskSlots {
    fn covers(&self, version: i64, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.version == version && self.lo <= from && to <= self.hi
    }
}

impl SlotIndex {
    /// Wait for this process's earlier attempts on `desk` at `start`.
    pub async fn turn(&self, desk: &str, start: DateTime<Utc>) -> Turn<'_> {
        let key = (desk.to_owned(), start);
        let lock = self
            .turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        Turn {
            index: self,
            key,
            lock,
            guard: Some(guard),
        }
    }

    fn get(&self, desk: &str) -> Option<Arc<DeskSlots>> {
        self.desks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(desk)
            .cloned()
    }

    /// Keep the newest entry: a slow rebuild under an older version must
    /// not replace a newer one (it would only cost a rebuild, never a wrong
    /// answer, since the version is checked on every use).
    fn put(&self, desk: &str, e: Arc<DeskSlots>) {
        let mut m = self.desks.write().unwrap_or_else(PoisonError::into_inner);
        match m.get(desk) {
            Some(old) if old.version > e.version => {}
            _ => {
                m.insert(desk.to_owned(), e);
            }
        }
    }
}

impl Core {
    /// The versions of `desks` (0 for a desk never changed): the sum of
    /// each desk's shard rows, read in one statement.
    async fn slot_versions(&self, desks: &[&str]) -> Result<HashMap<String, i64>, Error> {
        let q = Query::select()
            .column(a("desk_id"))
            .expr_as(Expr::cust("CAST(SUM(version) AS BIGINT)"), a("version"))
            .from(a("slot_versions"))
            .and_where(Expr::col(a("desk_id")).is_in(desks.iter().map(|d| d.to_string())))
            .group_by_col(a("desk_id"))
            .to_owned();
        let rows = self
            .db
            .query_all(&q)
            .await
            .map_err(internal_err("read slot versions"))?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let desk = String::try_get(&r, "", "desk_id")
                .map_err(|e| internal("read slot versions", format!("{e:?}")))?;
            let v = i64::try_get(&r, "", "version")
                .map_err(|e| internal("read slot versions", format!("{e:?}")))?;
            out.insert(desk, v);
        }
        Ok(out)
    }

    /// The versions of `desks`, in their order: read from the database,
    /// or as read less than [`LEASE`] ago (see the module note).
    async fn current_versions(&self, desks: &[&str]) -> Result<Vec<i64>, Error> {
        let now = Instant::now();
        let mut out = vec![None; desks.len()];
        {
            let m = self
                .index
                .versions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (i, d) in desks.iter().enumerate() {
                if let Some((v, at)) = m.get(*d)
                    && now.duration_since(*at) < LEASE
                {
                    out[i] = Some(*v);
                }
            }
        }
        let missing: Vec<&str> = desks
            .iter()
            .zip(&out)
            .filter(|(_, v)| v.is_none())
            .map(|(d, _)| *d)
            .collect();
        if !missing.is_empty() {
            // The lease runs from before the read is sent.
            let at = Instant::now();
            let read = self.slot_versions(&missing).await?;
            let mut m = self
                .index
                .versions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (i, d) in desks.iter().enumerate() {
                if out[i].is_none() {
                    let v = read.get(*d).copied().unwrap_or(0);
                    match m.get(*d) {
                        Some((_, t)) if *t > at => {}
                        _ => {
                            m.insert((*d).to_owned(), (v, at));
                        }
                    }
                    out[i] = Some(v);
                }
            }
        }
        Ok(out.into_iter().map(|v| v.unwrap_or(0)).collect())
    }

    /// After a commit that raised the versions of `desks`: forget them
    /// here, and return only once every replica's leased read predates
    /// nothing of it (see the module note). Call it after the commit,
    /// holding no connection.
    pub(super) async fn settle_slot_versions(&self, desks: &[&str]) {
        {
            let mut m = self
                .index
                .versions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for d in desks {
                m.remove(*d);
            }
        }
        tokio::time::sleep(SETTLE).await;
    }

    /// Raise the version of `desks` in `txn` by one, on a shard row picked
    /// at random: a desk's sum grows with every commit that raises it, and
    /// bookings of one desk mostly lock different rows (one row would
    /// serialise a desk's bookings from this statement to their commit).
    /// Call it last before the commit, so what lock there is lasts the
    /// commit only. Rows go in (desk, shard) order so two transactions
    /// raising the same two desks cannot deadlock.
    pub(super) async fn bump_slot_versions(
        &self,
        txn: &DatabaseTransaction,
        desks: &[&str],
    ) -> Result<(), sea_orm::DbErr> {
        use rand::Rng;
        let mut desks = desks.to_vec();
        desks.sort_unstable();
        desks.dedup();
        for d in desks {
            let shard: i32 = rand::rng().random_range(0..SHARDS);
            let q = Query::insert()
                .into_table(a("slot_versions"))
                .columns([a("desk_id"), a("shard"), a("version")])
                .values_panic([d.into(), shard.into(), 1i64.into()])
                .on_conflict(
                    OnConflict::columns([a("desk_id"), a("shard")])
                        .value(
                            a("version"),
                            Expr::col((a("slot_versions"), a("version"))).add(1i64),
                        )
                        .to_owned(),
                )
                .to_owned();
            txn.execute(&q).await?;
        }
        Ok(())
    }

    /// Each desk's entry for [from, to) (in the order of `desks`; none for
    /// an id the model does not know), rebuilt from the database when its
    /// version moved or its range does not cover the query.
    pub(super) async fn desk_slots(
        &self,
        desks: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Option<Arc<DeskSlots>>>, Error> {
        if desks.is_empty() {
            return Ok(vec![]);
        }
        let versions = self.current_versions(desks).await?;
        let mut out: Vec<Option<Arc<DeskSlots>>> = Vec::with_capacity(desks.len());
        // Stale desks with the range their new entry covers.
        let mut stale: Vec<Rebuild> = Vec::new();
        for (i, d) in desks.iter().enumerate() {
            let cur = self.index.get(d);
            match cur {
                Some(e) if e.covers(versions[i], from, to) => out.push(Some(e)),
                other => {
                    // Same range when it still covers the query (the open
                    // units may then be kept), else from now onwards.
                    let (lo, hi) = match &other {
                        Some(e) if e.lo <= from && to <= e.hi => (e.lo, e.hi),
                        _ => {
                            let lo = Ord::min(from, self.now());
                            (lo, Ord::max(to, lo + Duration::days(HORIZON_DAYS)))
                        }
                    };
                    stale.push((i, lo, hi, other));
                    out.push(None);
                }
            }
        }
        if !stale.is_empty() {
            let margin = Duration::days(MARGIN_DAYS);
            let lo = stale.iter().map(|s| s.1).min().unwrap_or(from) - margin;
            let hi = stale.iter().map(|s| s.2).max().unwrap_or(to) + margin;
            let ids: Vec<&str> = stale.iter().map(|s| desks[s.0]).collect();
            // Versions were read above, before these: see the module note.
            let (taken, ex) = tokio::try_join!(
                self.taken(&self.db, &ids, lo, hi),
                self.exceptions(&ids, lo, hi)
            )?;
            for (i, lo, hi, old) in stale {
                let id = desks[i];
                let Some(desk) = self.model.desk(id) else {
                    continue;
                };
                let exceptions: Vec<exception::Model> = ex
                    .iter()
                    .filter(|e| {
                        e.desk_id == id && e.end_at > lo - margin && e.start_at < hi + margin
                    })
                    .cloned()
                    .collect();
                let open = match old {
                    Some(o) if o.lo == lo && o.hi == hi && o.exceptions == exceptions => {
                        o.open.clone()
                    }
                    _ => {
                        let mut open = self.model.open_units(desk, lo, hi);
                        self.apply_exceptions(id, &mut open, &exceptions, lo, hi);
                        Arc::new(open)
                    }
                };
                let e = Arc::new(DeskSlots {
                    version: versions[i],
                    lo,
                    hi,
                    exceptions,
                    open,
                    taken: taken.get(id).cloned().unwrap_or_default(),
                    free: Mutex::new(HashMap::new()),
                });
                self.index.put(id, e.clone());
                out[i] = Some(e);
            }
        }
        Ok(out)
    }

    /// Every free start of a booking `units` long in `e`, sorted.
    fn free_all(&self, e: &DeskSlots, units: i64) -> Arc<Vec<DateTime<Utc>>> {
        let mut m = e.free.lock().unwrap_or_else(PoisonError::into_inner);
        m.entry(units)
            .or_insert_with(|| {
                Arc::new(self.model.free_starts(&e.open, &e.taken, units, e.lo, e.hi))
            })
            .clone()
    }

    /// The free starts of these desks' entries merged into one list sorted
    /// by (start, site, desk), one per site and start when `distinct`,
    /// remembered until one of the entries is rebuilt. A query keeps the
    /// starts `s` with `from <= s` and `s + span <= to`: a condition on the
    /// start alone, the same for every desk, so merging then filtering
    /// gives what filtering each desk then merging gives.
    pub(super) fn merged_free(
        &self,
        desks: &[(&Desk, Arc<DeskSlots>)],
        units: i64,
        distinct: bool,
    ) -> Arc<Merged> {
        let same = |m: &Merged| {
            m.units == units
                && m.distinct == distinct
                && m.desks.len() == desks.len()
                && m.desks
                    .iter()
                    .zip(desks)
                    .all(|((id, e), (d, f))| *id == d.id && Arc::ptr_eq(e, f))
        };
        if let Some(m) = self
            .index
            .merged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|m| same(m))
        {
            return m.clone();
        }
        let mut all: Vec<(DateTime<Utc>, &str, &str, usize)> = Vec::new();
        for (k, (d, e)) in desks.iter().enumerate() {
            let starts = self.free_all(e, units);
            all.extend(
                starts
                    .iter()
                    .map(|s| (*s, d.site.as_str(), d.id.as_str(), k)),
            );
        }
        // Runs of sorted starts, one per desk: the stable sort merges them.
        all.sort();
        if distinct {
            // Sorted by (start, site, desk): a site's repeats are adjacent.
            all.dedup_by(|x, y| x.0 == y.0 && x.1 == y.1);
        }
        let m = Arc::new(Merged {
            units,
            distinct,
            desks: desks
                .iter()
                .map(|(d, e)| (d.id.clone(), e.clone()))
                .collect(),
            slots: all.into_iter().map(|(s, _, _, k)| (s, k)).collect(),
        });
        let mut list = self
            .index
            .merged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        list.retain(|o| {
            !(o.units == units
                && o.distinct == distinct
                && o.desks
                    .iter()
                    .map(|x| &x.0)
                    .eq(m.desks.iter().map(|x| &x.0)))
        });
        if list.len() >= MERGED_SHAPES {
            list.remove(0);
        }
        list.push(m.clone());
        m
    }
}
