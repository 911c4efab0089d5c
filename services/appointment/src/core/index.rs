//! The availability index: each desk's open units, claimed units and free
//! starts kept in memory, so an availability query (the national
//! aggregator's polling, the citizen pages) costs one small read of the
//! desks' version counters instead of reading claims and exceptions and
//! recomputing a month of schedule units.
//!
//! Exactness. Every transaction that takes or frees a unit of a desk (book,
//! reschedule, cancel) or changes the desk's run-time exceptions raises the
//! desk's row in `slot_versions`, in that same transaction, just before it
//! commits. A query reads the counters of the desks it covers first (one
//! indexed read) and uses a desk's entry only when the entry was built
//! under the very version it reads now. An entry is built from claims and
//! exceptions read *after* reading its version, so it holds at least every
//! commit up to that version; if the counter still reads the same, nothing
//! committed since. A booking's RPC returns after its commit, so the next
//! query, on any replica sharing the database, sees the raised counter and
//! rebuilds: a slot gone is never offered, and a freed one is offered again.
//!
//! Why a counter in the database and not invalidation over NATS: a message
//! arrives after the commit, so another replica would answer from a stale
//! entry in between (and a lost or late message would leave it stale
//! longer). The counter read is a primary-key lookup on a row per desk,
//! cheap beside a month of recomputation; bookings of different desks do
//! not contend on it. The booking path itself stays guarded by the unique
//! claim key: the index serves reads only.
//!
//! The answer is the one `open_units` / `apply_exceptions` / `free_starts`
//! give for the query's range: an entry covers a wider range [lo, hi) and
//! a free start `s` of the entry is one of the query when `from <= s` and
//! `s + span <= to`, since every unit such a start needs lies in the
//! query's range, where both computations see the same units open and
//! claimed (the entry reads exceptions and claims with a day of margin).
//! Bookings purged by retention end a year in the past, before any entry's
//! range, so the purge raises no counter.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, ExprTrait, TryGetable};

use super::{Core, a};
use crate::db::entities::exception;
use crate::error::{Error, internal, internal_err};

/// How far ahead an entry is built beyond the query that builds it (the
/// public windows are 60 days in the sample town; a longer query builds a
/// longer entry).
const HORIZON_DAYS: i64 = 100;
/// Margin around an entry's range when reading claims and exceptions.
const MARGIN_DAYS: i64 = 1;

/// The in-memory entries, one per desk.
#[derive(Default)]
pub struct SlotIndex {
    desks: RwLock<HashMap<String, Arc<DeskSlots>>>,
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
    /// The version counters of `desks` (0 for a desk never changed).
    async fn slot_versions(&self, desks: &[&str]) -> Result<HashMap<String, i64>, Error> {
        let q = Query::select()
            .columns([a("desk_id"), a("version")])
            .from(a("slot_versions"))
            .and_where(Expr::col(a("desk_id")).is_in(desks.iter().map(|d| d.to_string())))
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

    /// Raise the version of `desks` in `txn`: call it last before the
    /// commit, so the row lock (bookings of one desk wait on it) is held
    /// for the commit only. Desks go in sorted order so two transactions
    /// raising the same two desks cannot deadlock.
    pub(super) async fn bump_slot_versions(
        &self,
        txn: &DatabaseTransaction,
        desks: &[&str],
    ) -> Result<(), sea_orm::DbErr> {
        let mut desks = desks.to_vec();
        desks.sort_unstable();
        desks.dedup();
        for d in desks {
            let q = Query::insert()
                .into_table(a("slot_versions"))
                .columns([a("desk_id"), a("version")])
                .values_panic([d.into(), 1i64.into()])
                .on_conflict(
                    OnConflict::column(a("desk_id"))
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
        let versions = self.slot_versions(desks).await?;
        let version = |d: &str| versions.get(d).copied().unwrap_or(0);
        let mut out: Vec<Option<Arc<DeskSlots>>> = Vec::with_capacity(desks.len());
        // Stale desks with the range their new entry covers.
        let mut stale: Vec<(usize, DateTime<Utc>, DateTime<Utc>, Option<Arc<DeskSlots>>)> =
            Vec::new();
        for (i, d) in desks.iter().enumerate() {
            let cur = self.index.get(d);
            match cur {
                Some(e) if e.covers(version(d), from, to) => out.push(Some(e)),
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
                    version: version(id),
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

    /// Free starts of a booking `units` long in `e` within [from, to): the
    /// entry's sorted starts and the index range of those in the query.
    pub(super) fn free_in(
        &self,
        e: &DeskSlots,
        units: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> (Arc<Vec<DateTime<Utc>>>, std::ops::Range<usize>) {
        let all = {
            let mut m = e.free.lock().unwrap_or_else(PoisonError::into_inner);
            m.entry(units)
                .or_insert_with(|| {
                    Arc::new(
                        self.model
                            .free_starts(&e.open, &e.taken, units, e.lo, e.hi),
                    )
                })
                .clone()
        };
        let span = self.model.slot * (units as i32);
        // Sorted starts: both conditions hold on a prefix / suffix.
        let first = all.partition_point(|s| *s < from);
        let end = first + all[first..].partition_point(|s| *s + span <= to);
        (all, first..end)
    }
}
