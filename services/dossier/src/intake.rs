//! One intake request to its citizen and dossier, in one transaction
//! (`CorrelateIntake`): the correlation policy lives here, whole, and
//! routing makes one call per event.
//!
//! Order of evidence: the dossier the email thread belongs to (the email
//! role owns threading and passes its reference), then a quoted reference,
//! then the dossier of an appointment checked in at the counter; else the
//! citizen is resolved and their open dossier of the same procedure,
//! recently active, is reused; else a dossier is opened. A closed dossier
//! pointed at is reopened when its process says so, else a new one of the
//! same procedure is opened.
//!
//! Race-free: the resolved citizen's row is locked (PostgreSQL) for the
//! rest of the transaction, so two requests of one person routed at once
//! never both open a dossier; SQLite has one writer. Idempotent: the answer
//! is written with everything else under the request id, and a retry gets
//! it back without writing again.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use crate::catalog::ProcessDefinition;
use crate::db::entities::{citizen, document, dossier, intake_correlation};
use crate::engine::{Change, TransitionError};
use crate::records::NewDocument;
use crate::store::{Candidate, CitizenInput, Conn, Match, NewEntry, Store};

/// What the request asks of the dossier role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A request: it reaches a dossier, found or opened.
    Request,
    /// Done work (a call answered live): the citizen's open dossier, else
    /// their timeline only.
    Done,
    /// Automatic mail: the dossier it threads to or quotes, else nowhere.
    Automatic,
}

/// An attachment checked by the caller (media type, name, stored object).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub sha256: String,
    pub size_bytes: u64,
    pub media_type: String,
    pub filename: String,
}

/// One intake request, validated.
pub struct Intake<'a> {
    pub request_id: &'a str,
    /// Channel slug.
    pub channel: &'a str,
    pub occurred_at: DateTime<Utc>,
    pub mode: Mode,
    /// `None`: nothing identifies the person.
    pub hint: Option<CitizenInput>,
    /// Why the hint was refused (the field, never its value).
    pub hint_refused: Option<String>,
    pub thread_reference: Option<&'a str>,
    pub quoted_references: &'a [String],
    pub appointment_dossier_id: Option<&'a str>,
    /// The classified procedure (the triage one when classification's is
    /// not in the catalog).
    pub process: &'a ProcessDefinition,
    pub triage: bool,
    pub window: Option<Duration>,
    pub summary: &'a str,
    pub attachments: Vec<Attachment>,
    pub actor: &'a str,
}

/// Where the request went.
#[derive(Debug, Clone)]
pub struct Correlated {
    pub dossier: Option<dossier::Model>,
    pub citizen_id: String,
    pub correlation: &'static str,
    pub candidates: Vec<Candidate>,
    pub unknown_references: Vec<String>,
    pub summary: String,
    pub documents_added: u32,
    /// The citizen was created for this request (no record matched).
    pub citizen_created: bool,
}

pub enum Outcome {
    /// Routed now.
    Done(Correlated),
    /// Routed before: the answer then, and the dossier as it is now.
    Replayed {
        response: Vec<u8>,
        dossier: Option<dossier::Model>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Db(#[from] DbErr),
    /// Another change moved the dossier meanwhile: retry.
    #[error("the dossier changed concurrently")]
    Conflict,
    /// The dossier's process is not in the catalog.
    #[error("{0}")]
    Catalog(String),
}

impl From<TransitionError> for IntakeError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::Db(e) => IntakeError::Db(e),
            TransitionError::Conflict => IntakeError::Conflict,
        }
    }
}

impl Store {
    /// Where the intake requests `ids` went: request id, dossier id (empty:
    /// no dossier) and that dossier's restricted group (empty: none).
    pub async fn placements(&self, ids: &[String]) -> Result<Vec<(String, String, String)>, DbErr> {
        let rows = intake_correlation::Entity::find()
            .filter(intake_correlation::Column::RequestId.is_in(ids.iter().cloned()))
            .all(self.db())
            .await?;
        let dossier_ids: Vec<String> = rows
            .iter()
            .map(|r| r.dossier_id.clone())
            .filter(|d| !d.is_empty())
            .collect();
        let groups: std::collections::HashMap<String, String> = if dossier_ids.is_empty() {
            Default::default()
        } else {
            dossier::Entity::find()
                .filter(dossier::Column::Id.is_in(dossier_ids))
                .all(self.db())
                .await?
                .into_iter()
                .map(|d| (d.id, d.restricted_group))
                .collect()
        };
        Ok(rows
            .into_iter()
            .map(|r| {
                let group = groups.get(&r.dossier_id).cloned().unwrap_or_default();
                (r.request_id, r.dossier_id, group)
            })
            .collect())
    }

    /// Route `intake` (see the module documentation). `encode` turns the
    /// answer into the bytes kept for a replay.
    pub async fn correlate_intake(
        &self,
        intake: Intake<'_>,
        encode: impl FnOnce(&Correlated) -> Vec<u8>,
    ) -> Result<Outcome, IntakeError> {
        let txn = self.db().begin().await?;
        // Routed before (a redelivery), or a concurrent delivery of the same
        // request committed first: that answer stands.
        if let Some(done) = intake_correlation::Entity::find_by_id(intake.request_id.to_owned())
            .one(&txn)
            .await?
        {
            drop(txn);
            return Ok(Outcome::Replayed {
                dossier: self.get_dossier_opt(&done.dossier_id).await?,
                response: done.response,
            });
        }
        let mut c = self.route(&txn, &intake).await?;
        self.record_intake(&txn, &intake, &mut c).await?;
        let inserted = intake_correlation::Entity::insert(intake_correlation::ActiveModel {
            request_id: Set(intake.request_id.to_owned()),
            response: Set(encode(&c)),
            dossier_id: Set(c.dossier.as_ref().map(|d| d.id.clone()).unwrap_or_default()),
            created_at: Set(self.now()),
        })
        .exec_without_returning(&txn)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if guichet_platform::db::is_unique_violation(&e) => {
                // The same request routed concurrently (PostgreSQL): the
                // other transaction's answer stands, ours is rolled back.
                drop(txn);
                let done = intake_correlation::Entity::find_by_id(intake.request_id.to_owned())
                    .one(self.db())
                    .await?
                    .ok_or(e)?;
                return Ok(Outcome::Replayed {
                    dossier: self.get_dossier_opt(&done.dossier_id).await?,
                    response: done.response,
                });
            }
            Err(e) => return Err(e.into()),
        }
        txn.commit().await?;
        self.outbox().notify();
        self.actions_due().notify_one();
        // The dossier as the transaction left it (documents touch it).
        if c.documents_added > 0
            && let Some(d) = &c.dossier
        {
            c.dossier = self.get_dossier_opt(&d.id).await?;
        }
        Ok(Outcome::Done(c))
    }

    async fn get_dossier_opt(&self, id: &str) -> Result<Option<dossier::Model>, DbErr> {
        if id.is_empty() {
            return Ok(None);
        }
        dossier::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await
    }

    /// Find, reopen or open the dossier; resolve the citizen.
    async fn route(&self, txn: &impl Conn, intake: &Intake<'_>) -> Result<Correlated, IntakeError> {
        let mut c = Correlated {
            dossier: None,
            citizen_id: String::new(),
            correlation: "none",
            candidates: Vec::new(),
            unknown_references: Vec::new(),
            summary: intake.summary.to_owned(),
            documents_added: 0,
            citizen_created: false,
        };
        // The thread's dossier, then a quoted reference.
        let mut pointed = None;
        let refs = intake
            .thread_reference
            .into_iter()
            .map(|r| (r, "email_thread"))
            .chain(
                intake
                    .quoted_references
                    .iter()
                    .map(|r| (r.as_str(), "reference")),
            );
        for (r, how) in refs {
            if let Some(d) = self.get_dossier_in(txn, r).await? {
                pointed = Some((d, how));
                break;
            }
            let r = r.trim().to_uppercase();
            if !c.unknown_references.contains(&r) {
                c.unknown_references.push(r);
            }
        }
        if pointed.is_some() {
            c.unknown_references.clear();
        }
        if intake.mode == Mode::Automatic {
            match pointed {
                Some((d, how)) => {
                    c.citizen_id = d.citizen_id.clone();
                    c.dossier = Some(d);
                    c.correlation = how;
                }
                None => c.correlation = "set_aside",
            }
            c.unknown_references.clear();
            return Ok(c);
        }
        if pointed.is_none()
            && let Some(id) = intake.appointment_dossier_id
            && let Some(d) = self.get_dossier_in(txn, id).await?
        {
            pointed = Some((d, "appointment"));
        }
        if let Some((d, how)) = pointed {
            self.lock_citizen(txn, &d.citizen_id).await?;
            c.citizen_id = d.citizen_id.clone();
            let (d, how) = self.attach(txn, intake, d, how).await?;
            c.dossier = Some(d);
            c.correlation = how;
            return Ok(c);
        }
        let Some(input) = &intake.hint else {
            c.correlation = if intake.hint_refused.is_some() {
                "unidentified"
            } else {
                "none"
            };
            return Ok(c);
        };
        let r = self
            .resolve_citizen_in(txn, input, Some(intake.request_id), false)
            .await?;
        let Some(citizen) = r.citizen else {
            return Err(DbErr::Custom("citizen resolution returned no citizen".into()).into());
        };
        let citizen_id = citizen.citizen.id.clone();
        c.citizen_created = matches!(r.matched, Match::Created | Match::Maybe);
        if r.matched == Match::Maybe {
            c.candidates = r
                .candidates
                .into_iter()
                .filter(|x| x.citizen.citizen.id != citizen_id)
                .collect();
        }
        self.lock_citizen(txn, &citizen_id).await?;
        c.citizen_id = citizen_id.clone();
        // A call answered live: the citizen's open dossier, else their
        // timeline only — never a triage dossier someone must close.
        if intake.mode == Mode::Done {
            c.dossier = self.latest_open(txn, &citizen_id, None, None).await?;
            c.correlation = if c.dossier.is_some() {
                "citizen_open"
            } else {
                "timeline_only"
            };
            return Ok(c);
        }
        // The same citizen's open dossier of the same procedure, recently
        // active. Not for triage: two unqualified requests are not known to
        // be the same matter.
        if !intake.triage
            && let Some(window) = intake.window
            && let Some(d) = self
                .latest_open(
                    txn,
                    &citizen_id,
                    Some(&intake.process.id),
                    Some(intake.occurred_at - window),
                )
                .await?
        {
            c.dossier = Some(d);
            c.correlation = "citizen_window";
            return Ok(c);
        }
        let (d, _) = self
            .open_dossier_in(
                txn,
                &citizen_id,
                intake.process,
                &format!("Dossier ouvert : {}", intake.process.title),
                intake.actor,
                Some(intake.request_id),
            )
            .await?;
        c.dossier = Some(d);
        c.correlation = "new";
        Ok(c)
    }

    /// Hold the citizen's row until the transaction ends: requests of one
    /// person are correlated one after the other (PostgreSQL; SQLite has a
    /// single writer already).
    async fn lock_citizen(&self, txn: &impl ConnectionTrait, id: &str) -> Result<(), DbErr> {
        citizen::Entity::update_many()
            .col_expr(
                citizen::Column::UpdatedAt,
                Expr::col(citizen::Column::UpdatedAt),
            )
            .filter(citizen::Column::Id.eq(id))
            .exec(txn)
            .await?;
        Ok(())
    }

    /// The citizen's most recently updated open dossier (of `process_id`,
    /// updated since `since`), as the citizen or another citizen concerned.
    async fn latest_open(
        &self,
        txn: &impl ConnectionTrait,
        citizen_id: &str,
        process_id: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<dossier::Model>, DbErr> {
        let also: Vec<String> = crate::db::entities::party::Entity::find()
            .filter(crate::db::entities::party::Column::CitizenId.eq(citizen_id))
            .all(txn)
            .await?
            .into_iter()
            .map(|p| p.dossier_id)
            .collect();
        let mut q = dossier::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(dossier::Column::CitizenId.eq(citizen_id))
                    .add(dossier::Column::Id.is_in(also)),
            )
            .filter(dossier::Column::ClosedAt.is_null())
            .order_by_desc(dossier::Column::UpdatedAt)
            .order_by_desc(dossier::Column::Id);
        if let Some(p) = process_id {
            q = q.filter(dossier::Column::ProcessId.eq(p));
        }
        if let Some(t) = since {
            q = q.filter(dossier::Column::UpdatedAt.gte(t));
        }
        q.limit(1).one(txn).await
    }

    /// The dossier a request points at: itself when open; reopened when
    /// closed and its process says so; else a new one of its procedure.
    async fn attach(
        &self,
        txn: &impl Conn,
        intake: &Intake<'_>,
        d: dossier::Model,
        how: &'static str,
    ) -> Result<(dossier::Model, &'static str), IntakeError> {
        if d.closed_at.is_none() {
            return Ok((d, how));
        }
        let catalog = self.catalog();
        let def = catalog
            .get(&d.process_id, d.process_version as u32)
            .or_else(|| catalog.get_latest(&d.process_id))
            .cloned()
            .ok_or_else(|| {
                IntakeError::Catalog(format!(
                    "process {} version {} is not in the catalog",
                    d.process_id, d.process_version
                ))
            })?;
        if def.reopen_on_reference
            && let Some(target) = def.reopen_state.as_deref()
        {
            let updated = self
                .apply_transition_in(
                    txn,
                    Change {
                        dossier: &d,
                        def: &def,
                        to_state: target,
                        cause: "reopen",
                        actor: intake.actor,
                        reason: "Nouvelle demande de l'usager se rapportant à ce dossier",
                        request_id: Some(intake.request_id),
                    },
                )
                .await?;
            return Ok((updated, "reopened"));
        }
        let latest = catalog.get_latest(&d.process_id).unwrap_or(&def).clone();
        let (opened, _) = self
            .open_dossier_in(
                txn,
                &d.citizen_id,
                &latest,
                &format!("Dossier ouvert : {}", latest.title),
                intake.actor,
                Some(intake.request_id),
            )
            .await?;
        Ok((opened, "new_after_closed"))
    }

    /// The request on the timeline (with an unknown reference noted for the
    /// agent) and its attachments among the dossier's documents.
    async fn record_intake(
        &self,
        txn: &impl Conn,
        intake: &Intake<'_>,
        c: &mut Correlated,
    ) -> Result<(), IntakeError> {
        let rid = intake.request_id;
        if intake.mode == Mode::Automatic {
            if let Some(d) = &c.dossier {
                self.record_in(
                    txn,
                    self.entry(intake, d.citizen_id.clone(), Some(d.id.clone()), "contact")
                        .with(c.summary.clone(), rid.to_owned()),
                )
                .await?;
            }
            return Ok(());
        }
        if !c.unknown_references.is_empty() {
            let list = c.unknown_references.join(", ");
            c.summary = format!("{} — référence citée inconnue : {list}", c.summary);
            if let Some(d) = &c.dossier {
                self.record_in(
                    txn,
                    self.entry(intake, d.citizen_id.clone(), Some(d.id.clone()), "note")
                        .with(
                            format!(
                                "Référence citée inconnue : {list} (l'usager pense avoir déjà un dossier)"
                            ),
                            format!("{rid}:unknown-reference"),
                        ),
                )
                .await?;
            }
        }
        match &c.dossier {
            Some(d) => {
                self.record_in(
                    txn,
                    self.entry(intake, d.citizen_id.clone(), Some(d.id.clone()), "contact")
                        .with(c.summary.clone(), rid.to_owned()),
                )
                .await?;
            }
            None if c.correlation == "timeline_only" => {
                self.record_in(
                    txn,
                    self.entry(intake, c.citizen_id.clone(), None, "contact")
                        .with(c.summary.clone(), rid.to_owned()),
                )
                .await?;
            }
            None => {}
        }
        let Some(d) = c.dossier.clone() else {
            return Ok(());
        };
        if intake.attachments.is_empty() {
            return Ok(());
        }
        let mut have: std::collections::HashSet<String> = document::Entity::find()
            .filter(document::Column::DossierId.eq(d.id.clone()))
            .all(txn)
            .await?
            .into_iter()
            .map(|x| x.sha256)
            .collect();
        for a in &intake.attachments {
            if !have.insert(a.sha256.clone()) {
                continue;
            }
            self.add_document_in(
                txn,
                NewDocument {
                    dossier: d.clone(),
                    sha256: a.sha256.clone(),
                    media_type: a.media_type.clone(),
                    size_bytes: a.size_bytes,
                    filename: a.filename.clone(),
                    document_type: String::new(),
                    source_channel: intake.channel.to_owned(),
                    actor: intake.actor.to_owned(),
                },
            )
            .await?;
            c.documents_added += 1;
        }
        Ok(())
    }

    fn entry(
        &self,
        intake: &Intake<'_>,
        citizen_id: String,
        dossier_id: Option<String>,
        kind: &str,
    ) -> NewEntry {
        NewEntry {
            citizen_id,
            dossier_id,
            kind: kind.to_owned(),
            channel: intake.channel.to_owned(),
            occurred_at: intake.occurred_at,
            summary: String::new(),
            actor: "system".into(),
            source_event_id: None,
        }
    }
}

impl NewEntry {
    fn with(mut self, summary: String, source_event_id: String) -> NewEntry {
        self.summary = summary;
        self.source_event_id = Some(source_event_id);
        self
    }
}
