//! The booking engine: availability, book / reschedule / cancel / status
//! changes, the waiting list and the job runner (reminders, dossier links,
//! ANTS coordination, waiting-list offers), all timed by the [`Clock`].
//!
//! Every change commits, in one transaction: the booking row, its slot
//! claims (the unique key that makes double booking impossible), its domain
//! event and notifications (outbox) and the jobs that carry it to other
//! systems (dossier timeline, national anti-duplicate API), retried until
//! they succeed, so nothing is lost between a commit and a call.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use guichet_platform::calendar::to_paris;
use guichet_platform::clock::SharedClock;
use guichet_platform::db::is_unique_violation;
use guichet_platform::french;
use guichet_platform::jobs as durable;
use guichet_platform::outbox::Outbox;
use guichet_platform::retry::{Classify, Failure};
use guichet_proto::convert::timestamp;
use guichet_proto::events::v1::AppointmentChanged;
use guichet_proto::notification::v1::{NotificationRequest, notification_request};
use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    EntityTrait, ExprTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait, TryGetable,
};
use serde_json::json;

use crate::config::{Config, TypeConfig};
use crate::coordination::{AntsAppointment, Coordination};
use crate::db::entities::{booking, exception, waiter};
use crate::dossier::DossierLinker;
use crate::error::{
    Error, failed_precondition, internal, internal_err, invalid_argument, not_found,
};
use crate::schedule::Model;

pub use index::SlotIndex;

mod book;
mod changes;
mod effects;
mod exceptions;
mod index;
mod jobs;
mod retention;
mod waitlist;

pub use crate::db::entities::BookingStatus;

pub const BOOKED: BookingStatus = BookingStatus::Booked;
pub const CHECKED_IN: BookingStatus = BookingStatus::CheckedIn;
pub const SEEN: BookingStatus = BookingStatus::Seen;
pub const NO_SHOW: BookingStatus = BookingStatus::NoShow;
pub const CANCELLED_BY_CITIZEN: BookingStatus = BookingStatus::CancelledByCitizen;
pub const CANCELLED_BY_TOWN: BookingStatus = BookingStatus::CancelledByTown;

/// What the caller may do: agents book any type at any time for anyone;
/// the public (the citizen portal, as `citizen_pages`) is held to the rules.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub agent: bool,
}

/// The answer to a lost race: the slot was taken first.
pub fn slot_gone() -> Error {
    Error::Conflict("Ce créneau n'est plus disponible : choisissez-en un autre.".into())
}

/// A free slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeSlot {
    pub site: String,
    pub desk: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A booking request, checked at the edge.
#[derive(Debug, Clone)]
pub struct NewBooking {
    pub type_id: String,
    pub site_id: String,
    pub desk_id: Option<String>,
    pub start: DateTime<Utc>,
    pub people: u32,
    pub citizen_id: String,
    pub dossier_id: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub application_ids: Vec<String>,
    pub request_id: Option<String>,
}

#[derive(Clone)]
pub struct Core {
    pub db: DatabaseConnection,
    pub outbox: Outbox,
    pub model: Arc<Model>,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub coordination: Arc<dyn Coordination>,
    pub dossier: Arc<dyn DossierLinker>,
    /// Availability answered from memory, checked against the database's
    /// per-desk versions on every query (see `index`).
    pub index: Arc<SlotIndex>,
}

fn a(s: &str) -> Alias {
    Alias::new(s)
}

/// A pre-application number: 10 ASCII letters or digits (upper-cased).
pub fn parse_application_id(raw: &str) -> Option<String> {
    let s = raw.trim().to_ascii_uppercase();
    (s.len() == 10 && s.chars().all(|c| c.is_ascii_alphanumeric())).then_some(s)
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// "mardi 1 décembre 2026" and "09h15", Paris time.
pub fn french_date_time(t: DateTime<Utc>) -> (String, String) {
    (french::day_date(t), french::hour(t))
}

impl Core {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn kind(&self, id: &str, field: &str) -> Result<&TypeConfig, Error> {
        self.model
            .kind(id)
            .ok_or_else(|| invalid_argument(field, format!("`{id}` is not an appointment type")))
    }

    /// Booking window of `t` for this caller.
    fn window(&self, t: &TypeConfig, caller_agent: bool) -> (DateTime<Utc>, DateTime<Utc>) {
        let now = self.now();
        if caller_agent {
            (now, now + Duration::days(366))
        } else {
            (
                now + Duration::hours(i64::from(t.min_delay_hours)),
                now + Duration::days(i64::from(t.max_delay_days)),
            )
        }
    }

    /// Claimed units of `desks` in [from, to).
    async fn taken(
        &self,
        conn: &impl ConnectionTrait,
        desks: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<String, BTreeSet<DateTime<Utc>>>, Error> {
        let mut out: BTreeMap<String, BTreeSet<DateTime<Utc>>> = BTreeMap::new();
        if desks.is_empty() {
            return Ok(out);
        }
        let q = Query::select()
            .columns([a("desk_id"), a("unit_start")])
            .from(a("slot_claims"))
            .and_where(Expr::col(a("desk_id")).is_in(desks.iter().map(|d| d.to_string())))
            .and_where(Expr::col(a("unit_start")).gte(from.timestamp()))
            .and_where(Expr::col(a("unit_start")).lt(to.timestamp()))
            .to_owned();
        let rows = conn
            .query_all(&q)
            .await
            .map_err(internal_err("read slot claims"))?;
        for r in rows {
            let desk = String::try_get(&r, "", "desk_id")
                .map_err(|e| internal("read slot claims", format!("{e:?}")))?;
            let unit = i64::try_get(&r, "", "unit_start")
                .map_err(|e| internal("read slot claims", format!("{e:?}")))?;
            if let Some(t) = DateTime::from_timestamp(unit, 0) {
                out.entry(desk).or_default().insert(t);
            }
        }
        Ok(out)
    }

    /// Free slots of `type_id` for `people` at `sites` (empty: all) within
    /// [from, to), clamped to the booking window.
    #[allow(clippy::too_many_arguments)]
    pub async fn availability(
        &self,
        type_id: &str,
        sites: &[String],
        people: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
        distinct: bool,
        agent: bool,
    ) -> Result<Vec<FreeSlot>, Error> {
        let t = self.kind(type_id, "appointment_type")?;
        if !agent && !t.public {
            return Err(invalid_argument(
                "appointment_type",
                "is booked by an agent only",
            ));
        }
        let (wf, wt) = self.window(t, agent);
        let from = Ord::max(from, wf);
        let to = Ord::min(to, wt);
        if from >= to {
            return Ok(vec![]);
        }
        let units = self.model.units_for(t, Ord::max(people, 1));
        let desks: Vec<_> = self
            .model
            .sites
            .iter()
            .filter(|s| sites.is_empty() || sites.contains(&s.id))
            .flat_map(|s| self.model.desks_for(&s.id, t))
            .collect();
        let ids: Vec<&str> = desks.iter().map(|d| d.id.as_str()).collect();
        let span = self.model.slot * (units as i32);
        // From memory, kept exact by the desks' version counters (index.rs).
        let entries = self.desk_slots(&ids, from, to).await?;
        let desks: Vec<_> = desks
            .into_iter()
            .zip(entries)
            .filter_map(|(d, e)| Some((d, e?)))
            .collect();
        let merged = self.merged_free(&desks, units, distinct);
        let first = merged.slots.partition_point(|s| s.0 < from);
        let n = merged.slots[first..].partition_point(|s| s.0 + span <= to);
        Ok(merged.slots[first..first + n]
            .iter()
            .take(limit)
            .map(|&(s, k)| FreeSlot {
                site: desks[k].0.site.clone(),
                desk: desks[k].0.id.clone(),
                start: s,
                end: s + span,
            })
            .collect())
    }

    pub async fn get(&self, id: &str) -> Result<booking::Model, Error> {
        booking::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(internal_err("get booking"))?
            .ok_or_else(|| not_found("booking", id))
    }

    async fn by_request(&self, rid: &str) -> Result<Option<booking::Model>, Error> {
        booking::Entity::find()
            .filter(booking::Column::RequestId.eq(rid))
            .one(&self.db)
            .await
            .map_err(internal_err("find booking"))
    }

    /// A retried reschedule/cancel: the booking it acted on.
    async fn replay(&self, rid: &Option<String>) -> Result<Option<booking::Model>, Error> {
        let Some(rid) = rid else { return Ok(None) };
        let q = Query::select()
            .column(a("booking_id"))
            .from(a("booking_actions"))
            .and_where(Expr::col(a("request_id")).eq(rid.as_str()))
            .to_owned();
        let row = self
            .db
            .query_one(&q)
            .await
            .map_err(internal_err("find action"))?;
        match row {
            Some(r) => {
                let id = String::try_get(&r, "", "booking_id")
                    .map_err(|e| internal("find action", format!("{e:?}")))?;
                Ok(Some(self.get(&id).await?))
            }
            None => Ok(None),
        }
    }

    async fn record_action(
        &self,
        txn: &DatabaseTransaction,
        rid: &Option<String>,
        booking: &str,
        action: &str,
    ) -> Result<(), sea_orm::DbErr> {
        if let Some(rid) = rid {
            let q = Query::insert()
                .into_table(a("booking_actions"))
                .columns([a("request_id"), a("booking_id"), a("action")])
                .values_panic([rid.as_str().into(), booking.into(), action.into()])
                .to_owned();
            txn.execute(&q).await?;
        }
        Ok(())
    }

    async fn claim(
        &self,
        txn: &DatabaseTransaction,
        desk: &str,
        start: DateTime<Utc>,
        units: i64,
        booking: &str,
    ) -> Result<(), sea_orm::DbErr> {
        let mut q = Query::insert();
        q.into_table(a("slot_claims"))
            .columns([a("desk_id"), a("unit_start"), a("booking_id")]);
        for k in 0..units {
            let u = start + self.model.slot * (k as i32);
            q.values_panic([desk.into(), u.timestamp().into(), booking.into()]);
        }
        txn.execute(&q).await?;
        Ok(())
    }

    /// Whether a unit of `desk` among the `units` from `start` is claimed.
    async fn claimed(&self, desk: &str, start: DateTime<Utc>, units: i64) -> Result<bool, Error> {
        let q = Query::select()
            .column(a("unit_start"))
            .from(a("slot_claims"))
            .and_where(Expr::col(a("desk_id")).eq(desk))
            .and_where(
                Expr::col(a("unit_start"))
                    .is_in((0..units).map(|k| (start + self.model.slot * (k as i32)).timestamp())),
            )
            .limit(1)
            .to_owned();
        let row = self
            .db
            .query_one(&q)
            .await
            .map_err(internal_err("read slot claims"))?;
        Ok(row.is_some())
    }

    async fn release(
        &self,
        txn: &DatabaseTransaction,
        booking: &str,
    ) -> Result<(), sea_orm::DbErr> {
        let q = Query::delete()
            .from_table(a("slot_claims"))
            .and_where(Expr::col(a("booking_id")).eq(booking))
            .to_owned();
        txn.execute(&q).await?;
        Ok(())
    }

    /// Run-time exceptions of `desks` overlapping [from, to).
    pub async fn exceptions(
        &self,
        desks: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<exception::Model>, Error> {
        let mut q = exception::Entity::find()
            .filter(exception::Column::EndAt.gt(from))
            .filter(exception::Column::StartAt.lt(to));
        if !desks.is_empty() {
            q = q.filter(exception::Column::DeskId.is_in(desks.iter().map(|d| d.to_string())));
        }
        q.order_by_asc(exception::Column::StartAt)
            .all(&self.db)
            .await
            .map_err(internal_err("read schedule exceptions"))
    }

    /// Extra openings add units (on the grid of their own start), closures
    /// and absences remove every unit they overlap; removals win.
    fn apply_exceptions(
        &self,
        desk: &str,
        open: &mut BTreeSet<DateTime<Utc>>,
        ex: &[exception::Model],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) {
        let slot = self.model.slot;
        for e in ex
            .iter()
            .filter(|e| e.desk_id == desk && e.kind == "extra_opening")
        {
            let mut u = e.start_at;
            while u + slot <= e.end_at {
                if u >= from && u < to {
                    open.insert(u);
                }
                u += slot;
            }
        }
        for e in ex
            .iter()
            .filter(|e| e.desk_id == desk && e.kind != "extra_opening")
        {
            open.retain(|u| !(*u < e.end_at && *u + slot > e.start_at));
        }
    }

    /// Whether `desk` is open for `units` from `start` (ignoring claims).
    async fn fits(
        &self,
        desk: &crate::schedule::Desk,
        start: DateTime<Utc>,
        units: i64,
    ) -> Result<bool, Error> {
        let end = start + self.model.slot * (units as i32);
        let mut open = self.model.open_units(desk, start, end);
        let ex = self.exceptions(&[desk.id.as_str()], start, end).await?;
        self.apply_exceptions(&desk.id, &mut open, &ex, start, end);
        Ok((0..units).all(|k| open.contains(&(start + self.model.slot * (k as i32)))))
    }

    /// No-shows of this citizen in the policy window.
    async fn recent_no_shows(&self, citizen: &str) -> Result<u64, Error> {
        use sea_orm::PaginatorTrait;
        let since = self.now() - Duration::days(i64::from(self.config.noshow_window_days));
        booking::Entity::find()
            .filter(booking::Column::CitizenId.eq(citizen))
            .filter(booking::Column::Status.eq(NO_SHOW))
            .filter(booking::Column::StartAt.gte(since))
            .count(&self.db)
            .await
            .map_err(internal_err("count no-shows"))
    }

    /// Bookings, soonest first, after the page token's position.
    pub async fn list(
        &self,
        f: &ListFilter,
        size: u64,
        after: Option<(DateTime<Utc>, String)>,
    ) -> Result<Vec<booking::Model>, Error> {
        let mut q = booking::Entity::find();
        if !f.site.is_empty() {
            q = q.filter(booking::Column::SiteId.eq(f.site.as_str()));
        }
        if !f.desk.is_empty() {
            q = q.filter(booking::Column::DeskId.eq(f.desk.as_str()));
        }
        if !f.citizen.is_empty() {
            q = q.filter(booking::Column::CitizenId.eq(f.citizen.as_str()));
        }
        if !f.dossier.is_empty() {
            q = q.filter(booking::Column::DossierId.eq(f.dossier.as_str()));
        }
        if !f.reference.is_empty() {
            q = q.filter(booking::Column::Reference.eq(f.reference.as_str()));
        }
        if !f.phone.is_empty() {
            q = q.filter(booking::Column::Phone.eq(f.phone.as_str()));
        }
        if !f.statuses.is_empty() {
            q = q.filter(booking::Column::Status.is_in(f.statuses.clone()));
        }
        if let Some(s) = f.start {
            q = q.filter(booking::Column::StartAt.gte(s));
        }
        if let Some(e) = f.end {
            q = q.filter(booking::Column::StartAt.lt(e));
        }
        if let Some((t, id)) = after {
            q = q.filter(
                sea_orm::Condition::any()
                    .add(booking::Column::StartAt.gt(t))
                    .add(
                        sea_orm::Condition::all()
                            .add(booking::Column::StartAt.eq(t))
                            .add(booking::Column::Id.gt(id)),
                    ),
            );
        }
        q.order_by_asc(booking::Column::StartAt)
            .order_by_asc(booking::Column::Id)
            .limit(size)
            .all(&self.db)
            .await
            .map_err(internal_err("list bookings"))
    }
}

#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub site: String,
    pub desk: String,
    pub citizen: String,
    pub dossier: String,
    pub statuses: Vec<BookingStatus>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// Upper-case booking reference.
    pub reference: String,
    /// E.164 phone.
    pub phone: String,
}
