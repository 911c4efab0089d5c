//! The signing engine: requests, one-time codes, confirmations, decline,
//! cancel, reissue, expiry, completion (signed PDF + sealed evidence) and
//! the job runner that carries changes to the dossier role. Time comes
//! from the injectable [`Clock`](guichet_platform::clock::Clock).
//!
//! Every change commits, in one transaction, its rows, its append-only
//! event rows, its domain event and notifications (outbox) and the jobs
//! that call the dossier role. Races are settled by conditional UPDATEs
//! (compare-and-set on status, attempt counters and code counts), which
//! behave the same on PostgreSQL and SQLite.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use guichet_platform::calendar::to_paris;
use guichet_platform::clock::SharedClock;
use guichet_platform::contact::Phone;
use guichet_platform::db::is_unique_violation;
use guichet_platform::jobs as durable;
use guichet_platform::objects::{ObjectError, ObjectStore};
use guichet_platform::outbox::Outbox;
use guichet_proto::convert::timestamp;
use guichet_proto::events::v1::SignatureChanged;
use guichet_proto::notification::v1::{NotificationRequest, notification_request};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, ExprTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde_json::{Value, json};

use crate::config::Config;
use crate::db::entities::{code, event, request, signer};
use crate::dossier::DossierPort;
use crate::error::{Error, internal, internal_err, invalid_argument, not_found, precondition};
use crate::otp;
use crate::pdf;
use crate::seal::Keys;

mod codes;
mod completion;
mod confirm;
mod create;
mod jobs;
mod lifecycle;
mod reports;

pub use crate::db::entities::{CodeStatus, Status};

pub const PENDING: Status = Status::Pending;
pub const SIGNED: Status = Status::Signed;
pub const DECLINED: Status = Status::Declined;
pub const EXPIRED: Status = Status::Expired;
pub const CANCELLED: Status = Status::Cancelled;
pub const LOCKED: Status = Status::Locked;

const CODE_ACTIVE: CodeStatus = CodeStatus::Active;

/// Who acts, and from where (the signing page's IP and user agent).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Token subject of an agent or system; "citizen" on the signing page.
    pub actor: String,
    pub ip: String,
    pub user_agent: String,
}

impl Origin {
    pub fn system() -> Origin {
        Origin {
            actor: "system".into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub enum DocumentSource {
    Stored(String),
    Uploaded(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct NewSigner {
    pub name: String,
    pub phone: Phone,
}

#[derive(Debug, Clone)]
pub struct NewRequest {
    pub dossier_id: String,
    pub document: DocumentSource,
    pub title: String,
    pub process_template: String,
    pub signers: Vec<NewSigner>,
    pub consent_text: String,
    pub expire_at: Option<DateTime<Utc>>,
    pub request_id: Option<String>,
    pub send_codes: bool,
}

/// A request with its signers (in order).
#[derive(Debug, Clone)]
pub struct Full {
    pub req: request::Model,
    pub signers: Vec<signer::Model>,
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub code_expire_at: DateTime<Utc>,
    pub next_send_at: DateTime<Utc>,
    pub codes_sent: u32,
    pub codes_left: u32,
}

#[derive(Debug, Clone)]
pub struct Confirmed {
    pub signed: bool,
    pub attempts_left: u32,
    pub full: Full,
}

#[derive(Clone)]
pub struct Core {
    pub db: DatabaseConnection,
    pub outbox: Outbox,
    pub config: Arc<Config>,
    pub keys: Arc<Keys>,
    pub clock: SharedClock,
    pub objects: ObjectStore,
    pub dossier: Arc<dyn DossierPort>,
    /// Calls to the time-stamping authority (`signature.tsa_url`).
    pub http: reqwest::Client,
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// "01/12/2026 à 10h15" in Paris time.
pub fn paris_text(t: DateTime<Utc>) -> String {
    to_paris(t).format("%d/%m/%Y à %Hh%M").to_string()
}

fn os_rng_err(e: impl std::fmt::Display) -> Error {
    internal("random generator", e)
}

/// The French refusal for a request that is no longer open.
pub fn closed(status: Status) -> Error {
    match status {
        SIGNED => precondition("SIGNED", "Ce document est déjà signé."),
        DECLINED => precondition("DECLINED", "La signature de ce document a été refusée."),
        EXPIRED => precondition(
            "EXPIRED",
            "Le délai de signature est dépassé : contactez la mairie pour recevoir une nouvelle demande.",
        ),
        CANCELLED => precondition(
            "CANCELLED",
            "Cette demande de signature a été annulée par la mairie.",
        ),
        LOCKED => precondition(
            "LOCKED",
            "La signature est bloquée après trop d'essais : un agent de la mairie doit la débloquer.",
        ),
        PENDING => precondition("STATUS", "Cette demande de signature n'est pas ouverte."),
    }
}

impl Core {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn signing_url(&self, s: &signer::Model) -> String {
        format!(
            "{}/s/{}",
            self.config.public_base_url.trim_end_matches('/'),
            s.token
        )
    }

    // --- reads ---------------------------------------------------------

    pub async fn get(&self, id: &str) -> Result<Full, Error> {
        let req = request::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(internal_err("get signature request"))?
            .ok_or_else(|| not_found("signature_request", id))?;
        self.full(req).await
    }

    async fn full(&self, req: request::Model) -> Result<Full, Error> {
        let signers = signer::Entity::find()
            .filter(signer::Column::RequestId.eq(req.id.clone()))
            .order_by_asc(signer::Column::Position)
            .all(&self.db)
            .await
            .map_err(internal_err("get signers"))?;
        Ok(Full { req, signers })
    }

    pub async fn by_token(&self, token: &str) -> Result<(Full, signer::Model), Error> {
        let s = signer::Entity::find()
            .filter(signer::Column::Token.eq(token.to_owned()))
            .one(&self.db)
            .await
            .map_err(internal_err("signer by token"))?
            .ok_or_else(|| not_found("signer", "token"))?;
        let full = self.get(&s.request_id).await?;
        Ok((full, s))
    }

    fn signer_of<'a>(&self, full: &'a Full, signer_id: &str) -> Result<&'a signer::Model, Error> {
        if signer_id.is_empty() && full.signers.len() == 1 {
            return Ok(&full.signers[0]);
        }
        full.signers
            .iter()
            .find(|s| s.id == signer_id)
            .ok_or_else(|| not_found("signer", signer_id))
    }

    pub async fn list(
        &self,
        dossier_id: Option<String>,
        status: Option<String>,
        after: Option<String>,
        limit: u64,
    ) -> Result<(Vec<Full>, Option<String>), Error> {
        let mut q = request::Entity::find().order_by_asc(request::Column::Id);
        if let Some(d) = dossier_id {
            q = q.filter(request::Column::DossierId.eq(d));
        }
        if let Some(s) = status {
            q = q.filter(request::Column::Status.eq(s));
        }
        if let Some(a) = after {
            q = q.filter(request::Column::Id.gt(a));
        }
        let rows = q
            .limit(limit + 1)
            .all(&self.db)
            .await
            .map_err(internal_err("list signature requests"))?;
        let more = rows.len() as u64 > limit;
        let mut out = Vec::new();
        for r in rows.into_iter().take(limit as usize) {
            out.push(self.full(r).await?);
        }
        let next = if more {
            out.last().map(|f| f.req.id.clone())
        } else {
            None
        };
        Ok((out, next))
    }

    pub async fn events(
        &self,
        request_id: &str,
        after: i64,
        limit: u64,
    ) -> Result<(Vec<event::Model>, Option<i64>), Error> {
        let rows = event::Entity::find()
            .filter(event::Column::RequestId.eq(request_id.to_owned()))
            .filter(event::Column::Id.gt(after))
            .order_by_asc(event::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await
            .map_err(internal_err("list signature events"))?;
        let more = rows.len() as u64 > limit;
        let rows: Vec<_> = rows.into_iter().take(limit as usize).collect();
        let next = if more {
            rows.last().map(|e| e.id)
        } else {
            None
        };
        Ok((rows, next))
    }

    // --- staging helpers -------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        conn: &impl ConnectionTrait,
        request_id: &str,
        signer_id: &str,
        kind: &str,
        outcome: &str,
        origin: &Origin,
        detail: &str,
    ) -> Result<(), sea_orm::DbErr> {
        event::ActiveModel {
            request_id: Set(request_id.to_owned()),
            signer_id: Set(signer_id.to_owned()),
            kind: Set(kind.to_owned()),
            outcome: Set(outcome.to_owned()),
            at: Set(self.now()),
            ip: Set(origin.ip.clone()),
            user_agent: Set(origin.user_agent.chars().take(512).collect()),
            actor: Set(origin.actor.clone()),
            detail: Set(detail.to_owned()),
            ..Default::default()
        }
        .insert(conn)
        .await?;
        Ok(())
    }

    async fn announce(
        &self,
        conn: &impl ConnectionTrait,
        ty: &str,
        req: &request::Model,
        status: Status,
        signer_id: &str,
        origin: &Origin,
    ) -> Result<(), sea_orm::DbErr> {
        let msg = SignatureChanged {
            signature_request_id: req.id.clone(),
            dossier_id: req.dossier_id.clone(),
            status: status.as_str().to_owned(),
            signer_id: signer_id.to_owned(),
            process_template: req.process_template.clone(),
            document_sha256: req.document_sha256.clone(),
            signed_document_sha256: req.signed_sha256.clone().unwrap_or_default(),
            evidence_sha256: req.evidence_sha256.clone().unwrap_or_default(),
            occurred_time: Some(timestamp(self.now())),
            actor: origin.actor.clone(),
        };
        let staged = self.outbox.domain_event(
            "signature",
            ty,
            format!("signature-requests/{}", req.id),
            &msg,
        );
        self.outbox.stage(conn, &staged).await
    }

    async fn add_job(
        &self,
        conn: &impl ConnectionTrait,
        kind: &str,
        request_id: &str,
    ) -> Result<(), sea_orm::DbErr> {
        durable::add(
            conn,
            durable::NewJob {
                kind,
                subject: request_id,
                payload: String::new(),
                run_at: self.now(),
            },
        )
        .await
    }
}

/// A file name from a title: ASCII letters and digits, dashes.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = match c {
            'à' | 'â' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' => 'i',
            'ô' | 'ö' => 'o',
            'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            c => c,
        };
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').chars().take(60).collect::<String>();
    if out.is_empty() {
        "document".into()
    } else {
        out
    }
}
