//! Dossier's persistence: every write idempotent on a caller's key, so a
//! redelivered intake event finds what its first delivery created.

use chrono::{DateTime, Datelike, Utc};
use guichet_platform::db::{is_unique_violation, next_counter_value};
use guichet_platform::outbox::Outbox;
use guichet_proto::events::v1 as ev;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

use crate::db::entities::{citizen, contact, contact_claim, dossier, timeline};
pub use guichet_platform::contact::CitizenInput;
use guichet_platform::contact::name_key;

use crate::catalog::CatalogHandle;
use crate::domain::Reference;
use guichet_platform::calendar::BusinessCalendar;
use guichet_platform::clock::SharedClock;
use guichet_platform::objects::ObjectStore;

/// The database or a transaction of it: a write given a transaction nests
/// in it (a savepoint) and commits with it.
pub trait Conn:
    ConnectionTrait + TransactionTrait<Transaction = sea_orm::DatabaseTransaction> + Sync
{
}

impl<T> Conn for T where
    T: ConnectionTrait + TransactionTrait<Transaction = sea_orm::DatabaseTransaction> + Sync
{
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Known,
    Created,
    Maybe,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub citizen: CitizenView,
    pub confidence: f32,
    pub why: String,
}

#[derive(Debug, Clone)]
pub struct Resolution {
    pub citizen: Option<CitizenView>,
    pub matched: Match,
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Clone)]
pub struct CitizenView {
    pub citizen: citizen::Model,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NewEntry {
    pub citizen_id: String,
    pub dossier_id: Option<String>,
    pub kind: String,
    pub channel: String,
    pub occurred_at: DateTime<Utc>,
    pub summary: String,
    pub actor: String,
    pub source_event_id: Option<String>,
}

/// Filters of a dossier list (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct DossierFilter {
    pub citizen_id: Option<String>,
    pub process_id: Option<String>,
    pub open_only: bool,
    pub updated_after: Option<DateTime<Utc>>,
    pub holder_agent: Option<String>,
    pub holder_department: Option<String>,
    /// The caller's groups: restricted dossiers of other groups are hidden.
    pub groups: Vec<String>,
    /// Service and admin callers see every dossier.
    pub visible_groups_all: bool,
}

/// Filters of a timeline (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct TimelineFilter {
    /// Channel slugs.
    pub channels: Vec<String>,
    /// Entry kind slugs.
    pub kinds: Vec<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// Dossiers the caller may not read: their entries are left out.
    pub restricted_dossiers: Vec<String>,
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    reference_prefix: String,
    /// Domain events are staged in the transaction of the change they announce.
    outbox: Outbox,
    clock: SharedClock,
    calendar: BusinessCalendar,
    catalog: CatalogHandle,
    objects: ObjectStore,
    /// Confidence from which a request attaches to a candidate by itself.
    identity_auto_link: f32,
    /// Wakes the state-action runner when a state entry planned actions.
    actions_due: std::sync::Arc<tokio::sync::Notify>,
    /// PostgreSQL: a small pool of its own for the reference counters, so a
    /// dossier opened inside a long transaction (an intake's) takes its
    /// number at once and holds no lock on the counter row until it commits
    /// (references may have gaps, never duplicates). SQLite: none, the
    /// counter is taken in the transaction (one writer anyway).
    counters: Option<DatabaseConnection>,
}

/// What a [`Store`] is built from.
pub struct StoreParts {
    pub db: DatabaseConnection,
    pub reference_prefix: String,
    pub outbox: Outbox,
    pub clock: SharedClock,
    pub calendar: BusinessCalendar,
    pub catalog: CatalogHandle,
    pub objects: ObjectStore,
}

/// Keyset position in a newest-first timeline: (occurred_at, id).
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineCursor {
    pub occurred_at: DateTime<Utc>,
    pub id: String,
}

impl TimelineCursor {
    pub fn encode(&self) -> String {
        format!("{}|{}", self.occurred_at.timestamp_micros(), self.id)
    }

    pub fn decode(token: &str) -> Option<TimelineCursor> {
        let (micros, id) = token.split_once('|')?;
        let occurred_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        if id.is_empty() {
            return None;
        }
        Some(TimelineCursor {
            occurred_at,
            id: id.to_owned(),
        })
    }
}

impl Store {
    pub fn new(p: StoreParts) -> Store {
        Store {
            db: p.db,
            reference_prefix: p.reference_prefix,
            outbox: p.outbox,
            clock: p.clock,
            calendar: p.calendar,
            catalog: p.catalog,
            objects: p.objects,
            identity_auto_link: 0.9,
            actions_due: std::sync::Arc::new(tokio::sync::Notify::new()),
            counters: None,
        }
    }

    /// Take reference numbers on `pool` (PostgreSQL), outside the
    /// transactions that open dossiers.
    pub fn with_counters(mut self, pool: DatabaseConnection) -> Store {
        self.counters = Some(pool);
        self
    }

    /// Notified after a commit that planned state actions.
    pub fn actions_due(&self) -> &tokio::sync::Notify {
        &self.actions_due
    }

    /// Attach requests by themselves to candidates scoring at least
    /// `threshold` (`dossier.identity_auto_link`; 1.0: never).
    pub fn with_identity_auto_link(mut self, threshold: f32) -> Store {
        self.identity_auto_link = threshold;
        self
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn calendar(&self) -> &BusinessCalendar {
        &self.calendar
    }

    /// The running catalog (a snapshot: reloads replace it as a whole).
    pub fn catalog(&self) -> std::sync::Arc<crate::catalog::Catalog> {
        self.catalog.current()
    }

    pub fn catalog_handle(&self) -> &CatalogHandle {
        &self.catalog
    }

    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// Find the citizen a channel's hint designates. Exact phone or email
    /// matches are "known"; otherwise citizens with the same name (accents
    /// and case ignored), better with the same address, are candidates for
    /// the agent to confirm ("maybe"); a new citizen is created unless
    /// `candidates_only`. Idempotent on `request_id`.
    ///
    /// Race-free: creating a citizen claims each contact point nobody holds,
    /// in the creating transaction; the loser of two concurrent creations for
    /// one new number or address resolves again and finds the winner.
    pub async fn resolve_citizen(
        &self,
        input: &CitizenInput,
        request_id: Option<&str>,
        candidates_only: bool,
    ) -> Result<Resolution, DbErr> {
        self.resolve_citizen_in(&self.db, input, request_id, candidates_only)
            .await
    }

    /// [`Store::resolve_citizen`] inside the caller's transaction.
    pub async fn resolve_citizen_in(
        &self,
        conn: &impl Conn,
        input: &CitizenInput,
        request_id: Option<&str>,
        candidates_only: bool,
    ) -> Result<Resolution, DbErr> {
        // Each lost claim means another creation committed in between, so a
        // second pass finds it; more passes only happen when that citizen was
        // erased or merged away meanwhile.
        const PASSES: usize = 5;
        for _ in 0..PASSES {
            if let Some(resolution) = self
                .resolve_once(conn, input, request_id, candidates_only)
                .await?
            {
                return Ok(resolution);
            }
        }
        Err(DbErr::Custom(format!(
            "citizen resolution lost its contact claim {PASSES} times"
        )))
    }

    /// One resolution pass; `None` when a contact claim was lost to a
    /// concurrent creation (resolve again).
    async fn resolve_once(
        &self,
        conn: &impl Conn,
        input: &CitizenInput,
        request_id: Option<&str>,
        candidates_only: bool,
    ) -> Result<Option<Resolution>, DbErr> {
        if let Some(rid) = request_id
            && let Some(c) = citizen::Entity::find()
                .filter(citizen::Column::SourceRequestId.eq(rid))
                .one(conn)
                .await?
        {
            let candidates = self.name_candidates(conn, input, Some(&c.id)).await?;
            let matched = if candidates.is_empty() {
                Match::Created
            } else {
                Match::Maybe
            };
            return Ok(Some(Resolution {
                citizen: Some(self.view_in(conn, c).await?),
                matched,
                candidates,
            }));
        }
        let key = name_key(&input.given_name, &input.family_name);
        // Exact contact matches: phone numbers, then email addresses.
        let mut ids: Vec<String> = Vec::new();
        // Points nobody holds: a new citizen claims them.
        let mut fresh: Vec<(&'static str, String)> = Vec::new();
        for (kind, value) in contact_points(input) {
            let found: Vec<String> = contact::Entity::find()
                .filter(contact::Column::Kind.eq(kind))
                .filter(contact::Column::Value.eq(value.clone()))
                .all(conn)
                .await?
                .into_iter()
                .map(|c| c.citizen_id)
                .collect();
            if found.is_empty() {
                fresh.push((kind, value));
            }
            for id in found {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        if !ids.is_empty() {
            let found = citizen::Entity::find()
                .filter(citizen::Column::Id.is_in(ids.clone()))
                .filter(citizen::Column::MergedInto.is_null())
                .filter(citizen::Column::ErasedAt.is_null())
                .order_by_asc(citizen::Column::CreatedAt)
                .all(conn)
                .await?;
            // A shared landline: several citizens share a number. The name
            // tells them apart; without a name, only a single holder is
            // certain — several are candidates for the agent.
            let chosen = if key.is_empty() {
                (found.len() == 1).then(|| found[0].clone())
            } else {
                found
                    .iter()
                    .find(|c| c.name_key == key || c.name_key.is_empty())
                    .cloned()
            };
            if let Some(c) = chosen {
                self.add_contacts_in(conn, &c.id, input).await?;
                let c = self.fill_identity(conn, c, input, &key).await?;
                return Ok(Some(Resolution {
                    citizen: Some(self.view_in(conn, c).await?),
                    matched: Match::Known,
                    candidates: vec![],
                }));
            }
            if key.is_empty() && found.len() > 1 {
                // Attach to the earliest record (a request needs someone),
                // flagged "maybe" with every holder for the agent to choose;
                // or nothing when only candidates were asked for.
                let first = found[0].clone();
                let mut candidates = Vec::new();
                for c in found {
                    candidates.push(Candidate {
                        citizen: self.view_in(conn, c).await?,
                        confidence: 0.5,
                        why: "même numéro de téléphone ou même adresse électronique, partagé"
                            .into(),
                    });
                }
                let citizen = if candidates_only {
                    None
                } else {
                    Some(self.view_in(conn, first).await?)
                };
                return Ok(Some(Resolution {
                    citizen,
                    matched: Match::Maybe,
                    candidates,
                }));
            }
        }
        let candidates = self.name_candidates(conn, input, None).await?;
        // Strong evidence (same name and same address, or the same name
        // with an address one misread letter away): the same person, linked
        // by itself and recorded with its evidence on the timeline.
        if !candidates_only
            && self.identity_auto_link < 1.0
            && let Some(best) = candidates.first()
            && best.confidence >= self.identity_auto_link
        {
            let best = best.clone();
            let id = best.citizen.citizen.id.clone();
            self.add_contacts_in(conn, &id, input).await?;
            let c = self
                .fill_identity(conn, best.citizen.citizen.clone(), input, &key)
                .await?;
            self.record_in(
                conn,
                NewEntry {
                    citizen_id: id.clone(),
                    dossier_id: None,
                    kind: "identity_link".into(),
                    channel: String::new(),
                    occurred_at: self.now(),
                    summary: format!(
                        "Demande rattachée automatiquement : {} (confiance {:.2})",
                        best.why, best.confidence
                    )
                    .replace('.', ","),
                    actor: "system".into(),
                    source_event_id: request_id.map(|r| format!("identity:{r}")),
                },
            )
            .await?;
            return Ok(Some(Resolution {
                citizen: Some(self.view_in(conn, c).await?),
                matched: Match::Known,
                candidates: vec![best],
            }));
        }
        if candidates_only && !candidates.is_empty() {
            return Ok(Some(Resolution {
                citizen: None,
                matched: Match::Maybe,
                candidates,
            }));
        }
        let Some(view) = self
            .create_citizen(conn, input, &key, request_id, &fresh)
            .await?
        else {
            return Ok(None);
        };
        let matched = if candidates.is_empty() {
            Match::Created
        } else {
            Match::Maybe
        };
        Ok(Some(Resolution {
            citizen: Some(view),
            matched,
            candidates,
        }))
    }

    /// Citizens with the same name (and possibly address), best first.
    async fn name_candidates(
        &self,
        conn: &impl Conn,
        input: &CitizenInput,
        except: Option<&str>,
    ) -> Result<Vec<Candidate>, DbErr> {
        let key = name_key(&input.given_name, &input.family_name);
        let address_key = input.address.as_ref().map(|a| a.key()).unwrap_or_default();
        let family = name_key("", &input.family_name);
        let mut found: Vec<(citizen::Model, f32, &str)> = Vec::new();
        if !input.given_name.is_empty() && !input.family_name.is_empty() {
            for c in citizen::Entity::find()
                .filter(citizen::Column::NameKey.eq(key.clone()))
                .filter(citizen::Column::MergedInto.is_null())
                .filter(citizen::Column::ErasedAt.is_null())
                .limit(50)
                .all(conn)
                .await?
            {
                if !address_key.is_empty() && c.address_key == address_key {
                    found.push((c, 0.95, "même nom et même adresse"));
                } else {
                    found.push((c, 0.6, "même nom"));
                }
            }
        }
        // Same family name at the same address: a relative, or a typo in the
        // given name.
        if !address_key.is_empty() && !family.is_empty() {
            for c in citizen::Entity::find()
                .filter(citizen::Column::AddressKey.eq(address_key.clone()))
                .filter(citizen::Column::MergedInto.is_null())
                .filter(citizen::Column::ErasedAt.is_null())
                .limit(50)
                .all(conn)
                .await?
            {
                if c.name_key == key {
                    continue;
                }
                // One misread or mistyped letter in a name long enough not to
                // be another person's by chance (a scanned letter's "Dupomt"):
                // most likely the same person, for the agent to confirm.
                if !key.is_empty()
                    && key.chars().count() >= 8
                    && strsim::osa_distance(&c.name_key, &key) <= 1
                {
                    found.push((
                        c,
                        0.85,
                        "même adresse et nom presque identique (erreur de lecture ou de saisie ?)",
                    ));
                } else if c.name_key.split(' ').next() == family.split(' ').next() {
                    found.push((c, 0.4, "même nom de famille et même adresse"));
                }
            }
        }
        // An email one letter away from a known one (an OCR misread, a
        // typo) under the same name: the same person, most likely. Only the
        // same-name citizens' addresses are compared (an indexed lookup by
        // name, not a scan of every address of the domain).
        let near: Vec<(&str, &str)> = input
            .emails
            .iter()
            .filter_map(|e| e.as_str().split_once('@'))
            .filter(|(local, _)| local.len() >= 4)
            .collect();
        if !key.is_empty() && !near.is_empty() {
            let namesakes: Vec<citizen::Model> = citizen::Entity::find()
                .filter(citizen::Column::NameKey.eq(key.clone()))
                .filter(citizen::Column::MergedInto.is_null())
                .filter(citizen::Column::ErasedAt.is_null())
                .limit(50)
                .all(conn)
                .await?;
            let emails = contact::Entity::find()
                .filter(contact::Column::Kind.eq("email"))
                .filter(
                    contact::Column::CitizenId
                        .is_in(namesakes.iter().map(|c| c.id.clone()).collect::<Vec<_>>()),
                )
                .all(conn)
                .await?;
            for c in namesakes {
                let close = emails.iter().filter(|e| e.citizen_id == c.id).any(|e| {
                    let (other, other_domain) = e.value.split_once('@').unwrap_or_default();
                    near.iter().any(|(local, domain)| {
                        other_domain == *domain
                            && other != *local
                            && strsim::osa_distance(other, local) <= 1
                    })
                });
                if close {
                    found.push((c, 0.9, "même nom et adresse électronique presque identique"));
                }
            }
        }
        found.retain(|(c, _, _)| Some(c.id.as_str()) != except);
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        // One entry per citizen: its strongest evidence.
        let mut seen = std::collections::HashSet::new();
        found.retain(|(c, _, _)| seen.insert(c.id.clone()));
        let mut out = Vec::new();
        for (c, confidence, why) in found.into_iter().take(10) {
            out.push(Candidate {
                citizen: self.view_in(conn, c).await?,
                confidence,
                why: why.to_owned(),
            });
        }
        Ok(out)
    }

    /// Create a citizen with its contact points, claiming the `fresh` ones
    /// (held by nobody when resolution looked). `None` when a claim was taken
    /// meanwhile by a concurrent creation: nothing is written, resolve again.
    async fn create_citizen(
        &self,
        conn: &impl Conn,
        input: &CitizenInput,
        key: &str,
        request_id: Option<&str>,
        fresh: &[(&'static str, String)],
    ) -> Result<Option<CitizenView>, DbErr> {
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let txn = conn.begin().await?;
        let address = input.address.clone().unwrap_or_default();
        let model = citizen::ActiveModel {
            id: Set(id.clone()),
            given_name: Set(input.given_name.clone()),
            family_name: Set(input.family_name.clone()),
            name_key: Set(key.to_owned()),
            source_request_id: Set(request_id.map(str::to_owned)),
            created_at: Set(now),
            updated_at: Set(now),
            address_key: Set(address.key()),
            address_lines: Set(
                serde_json::to_string(&address.lines).unwrap_or_else(|_| "[]".into())
            ),
            postal_code: Set(address.postal_code),
            city: Set(address.city),
            country: Set(address.country),
            preferred_channel: Set(String::new()),
            language: Set("fr".into()),
            merged_into: Set(None),
            erased_at: Set(None),
        };
        match model.insert(&txn).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                // The same request resolved concurrently: return its result.
                drop(txn);
                let c = citizen::Entity::find()
                    .filter(citizen::Column::SourceRequestId.eq(request_id.unwrap_or_default()))
                    .one(conn)
                    .await?
                    .ok_or(e)?;
                return Ok(Some(self.view_in(conn, c).await?));
            }
            Err(e) => return Err(e),
        }
        for (kind, value) in fresh {
            let claim = contact_claim::ActiveModel {
                kind: Set((*kind).to_owned()),
                value: Set(value.clone()),
                citizen_id: Set(id.clone()),
                created_at: Set(now),
            };
            match contact_claim::Entity::insert(claim)
                .exec_without_returning(&txn)
                .await
            {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    drop(txn);
                    self.release_stale_claim(conn, kind, value).await?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        for (kind, value) in contact_points(input) {
            contact::ActiveModel {
                citizen_id: Set(id.clone()),
                kind: Set(kind.to_owned()),
                value: Set(value),
                created_at: Set(now),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
        }
        let event = self.outbox.domain_event(
            "dossier",
            "citizen_created",
            format!("citizens/{id}"),
            &ev::CitizenCreated {
                citizen_id: id.clone(),
                source_event_id: request_id.unwrap_or_default().to_owned(),
            },
        );
        self.outbox.stage(&txn, &event).await?;
        txn.commit().await?;
        self.outbox.notify();
        let c = citizen::Entity::find_by_id(id)
            .one(conn)
            .await?
            .ok_or(DbErr::RecordNotFound("citizen".into()))?;
        Ok(Some(self.view_in(conn, c).await?))
    }

    /// Drop a claim on a point no citizen holds any more (its holder was
    /// erased), so the next creation can take it. A claim and its holder's
    /// contact rows commit together, so a claim without contact rows that is
    /// visible here is stale, never one in flight.
    async fn release_stale_claim(
        &self,
        conn: &impl Conn,
        kind: &str,
        value: &str,
    ) -> Result<(), DbErr> {
        use sea_orm::ExprTrait;
        use sea_orm::sea_query::{Expr, Query};
        // One statement, so a claim taken meanwhile with its contact rows is
        // never the one dropped.
        let holders = Query::select()
            .expr(Expr::val(1))
            .from(contact::Entity)
            .and_where(Expr::col((contact::Entity, contact::Column::Kind)).eq(kind))
            .and_where(Expr::col((contact::Entity, contact::Column::Value)).eq(value))
            .to_owned();
        contact_claim::Entity::delete_many()
            .filter(contact_claim::Column::Kind.eq(kind))
            .filter(contact_claim::Column::Value.eq(value))
            .filter(Expr::exists(holders).not())
            .exec(conn)
            .await?;
        Ok(())
    }

    /// A record known only by a number or an address gets the name (and
    /// the postal address) a later request gives: the caller who phoned is
    /// named when they walk in. Names already known are never overwritten.
    async fn fill_identity(
        &self,
        conn: &impl Conn,
        c: citizen::Model,
        input: &CitizenInput,
        key: &str,
    ) -> Result<citizen::Model, DbErr> {
        let name = c.name_key.is_empty() && !key.is_empty();
        let address =
            c.address_key.is_empty() && input.address.as_ref().is_some_and(|a| !a.key().is_empty());
        if !name && !address {
            return Ok(c);
        }
        let mut m: citizen::ActiveModel = c.into();
        if name {
            m.given_name = Set(input.given_name.clone());
            m.family_name = Set(input.family_name.clone());
            m.name_key = Set(key.to_owned());
        }
        if address && let Some(a) = &input.address {
            m.address_key = Set(a.key());
            m.address_lines = Set(serde_json::to_string(&a.lines).unwrap_or_else(|_| "[]".into()));
            m.postal_code = Set(a.postal_code.clone());
            m.city = Set(a.city.clone());
            m.country = Set(a.country.clone());
        }
        m.updated_at = Set(self.now());
        m.update(conn).await
    }

    pub(crate) async fn add_contacts(
        &self,
        citizen_id: &str,
        input: &CitizenInput,
    ) -> Result<(), DbErr> {
        self.add_contacts_in(&self.db, citizen_id, input).await
    }

    pub(crate) async fn add_contacts_in(
        &self,
        conn: &impl Conn,
        citizen_id: &str,
        input: &CitizenInput,
    ) -> Result<(), DbErr> {
        let known: Vec<(String, String)> = contact::Entity::find()
            .filter(contact::Column::CitizenId.eq(citizen_id))
            .all(conn)
            .await?
            .into_iter()
            .map(|c| (c.kind, c.value))
            .collect();
        for (kind, value) in contact_points(input) {
            if known.iter().any(|(k, v)| k == kind && *v == value) {
                continue;
            }
            // In a savepoint: a concurrent request adding the same point
            // must not abort the caller's transaction (PostgreSQL).
            let point = conn.begin().await?;
            let res = contact::ActiveModel {
                citizen_id: Set(citizen_id.to_owned()),
                kind: Set(kind.to_owned()),
                value: Set(value.clone()),
                created_at: Set(self.now()),
                ..Default::default()
            }
            .insert(&point)
            .await;
            match res {
                Ok(_) => point.commit().await?,
                Err(e) if is_unique_violation(&e) => {
                    point.rollback().await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            // A point this citizen is the first to hold is claimed, so a
            // concurrent request from it alone does not create a stranger.
            let claim = contact_claim::ActiveModel {
                kind: Set(kind.to_owned()),
                value: Set(value.clone()),
                citizen_id: Set(citizen_id.to_owned()),
                created_at: Set(self.now()),
            };
            contact_claim::Entity::insert(claim)
                .on_conflict(
                    sea_orm::sea_query::OnConflict::columns([
                        contact_claim::Column::Kind,
                        contact_claim::Column::Value,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(conn)
                .await?;
        }
        Ok(())
    }

    pub async fn get_citizen(&self, id: &str) -> Result<Option<CitizenView>, DbErr> {
        match citizen::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        {
            Some(c) => Ok(Some(self.view(c).await?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn view(&self, c: citizen::Model) -> Result<CitizenView, DbErr> {
        self.view_in(&self.db, c).await
    }

    pub(crate) async fn view_in(
        &self,
        conn: &impl ConnectionTrait,
        c: citizen::Model,
    ) -> Result<CitizenView, DbErr> {
        let contacts = contact::Entity::find()
            .filter(contact::Column::CitizenId.eq(c.id.clone()))
            .order_by_asc(contact::Column::Id)
            .all(conn)
            .await?;
        let pick = |kind: &str| {
            contacts
                .iter()
                .filter(|x| x.kind == kind)
                .map(|x| x.value.clone())
                .collect()
        };
        Ok(CitizenView {
            phones: pick("phone"),
            emails: pick("email"),
            citizen: c,
        })
    }

    /// Open a dossier (idempotent on `request_id`) with its "opened" entry.
    pub async fn open_dossier(
        &self,
        citizen_id: &str,
        def: &crate::catalog::ProcessDefinition,
        opened_summary: &str,
        actor: &str,
        request_id: Option<&str>,
    ) -> Result<(dossier::Model, bool), DbErr> {
        self.open_dossier_in(&self.db, citizen_id, def, opened_summary, actor, request_id)
            .await
    }

    /// [`Store::open_dossier`] inside the caller's transaction.
    pub async fn open_dossier_in(
        &self,
        conn: &impl Conn,
        citizen_id: &str,
        def: &crate::catalog::ProcessDefinition,
        opened_summary: &str,
        actor: &str,
        request_id: Option<&str>,
    ) -> Result<(dossier::Model, bool), DbErr> {
        if let Some(rid) = request_id
            && let Some(d) = self.dossier_by_request(conn, rid).await?
        {
            return Ok((d, false));
        }
        let (process_id, process_version, initial_state) =
            (def.id.as_str(), def.version, def.initial_state.as_str());
        let now = self.now();
        let key = format!("{}-{}", self.reference_prefix, now.year());
        let seq = match &self.counters {
            Some(pool) => Some(next_counter_value(pool, "reference_counters", &key).await?),
            None => None,
        };
        let txn = conn.begin().await?;
        let seq = match seq {
            Some(seq) => seq,
            None => next_counter_value(&txn, "reference_counters", &key).await?,
        };
        let reference = Reference::new(&self.reference_prefix, now.year(), seq);
        let id = uuid::Uuid::now_v7().to_string();
        let res = dossier::ActiveModel {
            id: Set(id.clone()),
            reference: Set(reference.as_str().to_owned()),
            citizen_id: Set(citizen_id.to_owned()),
            process_id: Set(process_id.to_owned()),
            process_version: Set(process_version as i32),
            state: Set(initial_state.to_owned()),
            opened_request_id: Set(request_id.map(str::to_owned)),
            created_at: Set(now),
            updated_at: Set(now),
            holder_agent: Set(String::new()),
            holder_department: Set(String::new()),
            revision: Set(1),
            state_entered_at: Set(Some(now)),
            closed_at: Set(None),
            legal_hold: Set(false),
            legal_hold_reason: Set(String::new()),
            restricted_group: Set(def.restricted_group.clone().unwrap_or_default()),
        }
        .insert(&txn)
        .await;
        let model = match res {
            Ok(m) => m,
            Err(e) if is_unique_violation(&e) && request_id.is_some() => {
                drop(txn);
                let d = self
                    .dossier_by_request(conn, request_id.unwrap_or_default())
                    .await?
                    .ok_or(e)?;
                return Ok((d, false));
            }
            Err(e) => return Err(e),
        };
        insert_entry(
            &txn,
            NewEntry {
                citizen_id: citizen_id.to_owned(),
                dossier_id: Some(id.clone()),
                kind: "dossier_opened".into(),
                channel: "unspecified".into(),
                occurred_at: now,
                summary: opened_summary.to_owned(),
                actor: "system".into(),
                source_event_id: None,
            },
            "",
        )
        .await?;
        let event = self.outbox.domain_event(
            "dossier",
            "dossier_opened",
            format!("dossiers/{id}"),
            &ev::DossierOpened {
                dossier_id: id.clone(),
                reference: model.reference.clone(),
                citizen_id: model.citizen_id.clone(),
                process_id: model.process_id.clone(),
                process_version,
                state: model.state.clone(),
                domain: def.domain.clone(),
                opened_time: Some(guichet_proto::convert::timestamp(now)),
            },
        );
        self.outbox.stage(&txn, &event).await?;
        self.arm_timers(&txn, &id, def, initial_state, 1, now)
            .await?;
        self.plan_actions(&txn, &id, def, initial_state, 1, now)
            .await?;
        self.audit_in(
            &txn,
            actor,
            "dossier.open",
            &format!("dossiers/{id}"),
            process_id,
        )
        .await?;
        txn.commit().await?;
        self.outbox.notify();
        self.actions_due.notify_one();
        Ok((model, true))
    }

    async fn dossier_by_request(
        &self,
        conn: &impl ConnectionTrait,
        rid: &str,
    ) -> Result<Option<dossier::Model>, DbErr> {
        dossier::Entity::find()
            .filter(dossier::Column::OpenedRequestId.eq(rid))
            .one(conn)
            .await
    }

    /// A dossier by id or by reference.
    pub async fn get_dossier(
        &self,
        id_or_reference: &str,
    ) -> Result<Option<dossier::Model>, DbErr> {
        self.get_dossier_in(&self.db, id_or_reference).await
    }

    /// [`Store::get_dossier`] inside the caller's transaction.
    pub async fn get_dossier_in(
        &self,
        conn: &impl ConnectionTrait,
        id_or_reference: &str,
    ) -> Result<Option<dossier::Model>, DbErr> {
        if let Some(r) = Reference::parse(id_or_reference) {
            return dossier::Entity::find()
                .filter(dossier::Column::Reference.eq(r.as_str()))
                .one(conn)
                .await;
        }
        dossier::Entity::find_by_id(id_or_reference.to_owned())
            .one(conn)
            .await
    }

    /// Dossiers newest first; the cursor is the last id seen (UUID v7 ids
    /// sort by creation time).
    pub async fn list_dossiers(
        &self,
        f: &DossierFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<dossier::Model>, DbErr> {
        let mut q = dossier::Entity::find()
            .order_by_desc(dossier::Column::Id)
            .limit(limit);
        if let Some(c) = &f.citizen_id {
            // As the citizen, or as another citizen concerned.
            let also: Vec<String> = crate::db::entities::party::Entity::find()
                .filter(crate::db::entities::party::Column::CitizenId.eq(c.as_str()))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|p| p.dossier_id)
                .collect();
            q = q.filter(
                sea_orm::Condition::any()
                    .add(dossier::Column::CitizenId.eq(c.as_str()))
                    .add(dossier::Column::Id.is_in(also)),
            );
        }
        if let Some(p) = &f.process_id {
            q = q.filter(dossier::Column::ProcessId.eq(p.as_str()));
        }
        if f.open_only {
            q = q.filter(dossier::Column::ClosedAt.is_null());
        }
        if let Some(t) = f.updated_after {
            q = q.filter(dossier::Column::UpdatedAt.gte(t));
        }
        if let Some(a) = &f.holder_agent {
            q = q.filter(dossier::Column::HolderAgent.eq(a.as_str()));
        }
        if let Some(d) = &f.holder_department {
            q = q.filter(dossier::Column::HolderDepartment.eq(d.as_str()));
        }
        if !f.visible_groups_all {
            // Restricted dossiers only for members of their group.
            let mut groups = vec![String::new()];
            groups.extend(f.groups.iter().cloned());
            q = q.filter(dossier::Column::RestrictedGroup.is_in(groups));
        }
        if let Some(a) = after {
            q = q.filter(dossier::Column::Id.lt(a));
        }
        q.all(&self.db).await
    }

    /// The citizen's restricted dossiers that members of `groups` may not
    /// read (their entries are left out of the citizen's timeline).
    pub async fn dossiers_hidden_from(
        &self,
        citizen_id: &str,
        groups: &[String],
    ) -> Result<Vec<String>, DbErr> {
        Ok(dossier::Entity::find()
            .filter(dossier::Column::CitizenId.eq(citizen_id))
            .filter(dossier::Column::RestrictedGroup.ne(""))
            .filter(dossier::Column::RestrictedGroup.is_not_in(groups.to_vec()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect())
    }

    /// Record an entry; idempotent on `source_event_id`. Returns the entry
    /// and whether it is new.
    pub async fn record(&self, entry: NewEntry) -> Result<(timeline::Model, bool), DbErr> {
        self.record_in(&self.db, entry).await
    }

    /// [`Store::record`] inside the caller's transaction.
    pub async fn record_in(
        &self,
        conn: &impl Conn,
        entry: NewEntry,
    ) -> Result<(timeline::Model, bool), DbErr> {
        if let Some(src) = &entry.source_event_id
            && let Some(e) = self.entry_by_source(conn, src).await?
        {
            return Ok((e, false));
        }
        let source = entry.source_event_id.clone();
        let txn = conn.begin().await?;
        let m = match insert_entry(&txn, entry, "").await {
            Ok(m) => m,
            Err(e) if is_unique_violation(&e) && source.is_some() => {
                drop(txn);
                let m = self
                    .entry_by_source(conn, source.as_deref().unwrap_or_default())
                    .await?
                    .ok_or(e)?;
                return Ok((m, false));
            }
            Err(e) => return Err(e),
        };
        let event = self.outbox.domain_event(
            "dossier",
            "timeline_entry_recorded",
            format!("dossiers/{}", m.dossier_id.clone().unwrap_or_default()),
            &ev::TimelineEntryRecorded {
                entry_id: m.id.clone(),
                dossier_id: m.dossier_id.clone().unwrap_or_default(),
                citizen_id: m.citizen_id.clone(),
                kind: m.kind.clone(),
                channel: m.channel.clone(),
                source_event_id: m.source_event_id.clone().unwrap_or_default(),
                occur_time: Some(guichet_proto::convert::timestamp(m.occurred_at)),
            },
        );
        self.outbox.stage(&txn, &event).await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok((m, true))
    }

    async fn entry_by_source(
        &self,
        conn: &impl ConnectionTrait,
        src: &str,
    ) -> Result<Option<timeline::Model>, DbErr> {
        timeline::Entity::find()
            .filter(timeline::Column::SourceEventId.eq(src))
            .one(conn)
            .await
    }

    /// Timeline newest first, for a dossier or a citizen, after a cursor.
    pub async fn timeline(
        &self,
        dossier_id: Option<&str>,
        citizen_id: Option<&str>,
        filter: &TimelineFilter,
        after: Option<&TimelineCursor>,
        limit: u64,
    ) -> Result<Vec<timeline::Model>, DbErr> {
        use sea_orm::Condition;
        let mut q = timeline::Entity::find()
            .order_by_desc(timeline::Column::OccurredAt)
            .order_by_desc(timeline::Column::Id)
            .limit(limit);
        if !filter.channels.is_empty() {
            q = q.filter(timeline::Column::Channel.is_in(filter.channels.clone()));
        }
        if !filter.kinds.is_empty() {
            q = q.filter(timeline::Column::Kind.is_in(filter.kinds.clone()));
        }
        if let Some(t) = filter.start {
            q = q.filter(timeline::Column::OccurredAt.gte(t));
        }
        if let Some(t) = filter.end {
            q = q.filter(timeline::Column::OccurredAt.lt(t));
        }
        if !filter.restricted_dossiers.is_empty() {
            q = q.filter(
                Condition::any()
                    .add(timeline::Column::DossierId.is_null())
                    .add(timeline::Column::DossierId.is_not_in(filter.restricted_dossiers.clone())),
            );
        }
        if let Some(d) = dossier_id {
            q = q.filter(timeline::Column::DossierId.eq(d));
        }
        if let Some(c) = citizen_id {
            q = q.filter(timeline::Column::CitizenId.eq(c));
        }
        if let Some(cur) = after {
            q = q.filter(
                Condition::any()
                    .add(timeline::Column::OccurredAt.lt(cur.occurred_at))
                    .add(
                        Condition::all()
                            .add(timeline::Column::OccurredAt.eq(cur.occurred_at))
                            .add(timeline::Column::Id.lt(cur.id.clone())),
                    ),
            );
        }
        q.all(&self.db).await
    }
}

fn contact_points(input: &CitizenInput) -> Vec<(&'static str, String)> {
    input
        .phones
        .iter()
        .map(|p| ("phone", p.as_str().to_owned()))
        .chain(
            input
                .emails
                .iter()
                .map(|e| ("email", e.as_str().to_owned())),
        )
        .collect()
}

pub(crate) async fn insert_entry(
    conn: &impl ConnectionTrait,
    e: NewEntry,
    visibility: &str,
) -> Result<timeline::Model, DbErr> {
    timeline::ActiveModel {
        visibility: Set(visibility.to_owned()),
        id: Set(uuid::Uuid::now_v7().to_string()),
        citizen_id: Set(e.citizen_id),
        dossier_id: Set(e.dossier_id),
        kind: Set(e.kind),
        channel: Set(e.channel),
        occurred_at: Set(e.occurred_at),
        summary: Set(e.summary),
        actor: Set(e.actor),
        source_event_id: Set(e.source_event_id),
        created_at: Set(Utc::now()),
    }
    .insert(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_cursors_round_trip() {
        let c = TimelineCursor {
            occurred_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
            id: "0190-abc".into(),
        };
        assert_eq!(TimelineCursor::decode(&c.encode()), Some(c));
        assert!(TimelineCursor::decode("garbage").is_none());
    }
}
