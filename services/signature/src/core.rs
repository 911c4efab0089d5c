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

use bytes::Bytes;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use guichet_platform::bus::OutgoingEvent;
use guichet_platform::calendar::to_paris;
use guichet_platform::clock::SharedClock;
use guichet_platform::contact::Phone;
use guichet_platform::db::is_unique_violation;
use guichet_platform::grpc::{
    failed_precondition, internal, internal_err, invalid_argument, not_found,
};
use guichet_platform::objects::{ObjectError, ObjectStore};
use guichet_platform::outbox::{Outbox, Staged};
use guichet_proto::convert::timestamp;
use guichet_proto::events::v1::SignatureChanged;
use guichet_proto::notification::v1::{NotificationRequest, notification_request};
use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, ExprTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde_json::{Value, json};
use tonic::{Code, Status};

use crate::config::Config;
use crate::db::entities::{code, event, job, request, signer};
use crate::dossier::DossierPort;
use crate::otp;
use crate::pdf;
use crate::seal::Keys;

pub const PENDING: &str = "pending";
pub const SIGNED: &str = "signed";
pub const DECLINED: &str = "declined";
pub const EXPIRED: &str = "expired";
pub const CANCELLED: &str = "cancelled";
pub const LOCKED: &str = "locked";

const CODE_ACTIVE: &str = "active";

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

fn os_rng_err(e: impl std::fmt::Display) -> Status {
    internal("random generator", e)
}

fn precondition(kind: &str, description: &str) -> Status {
    failed_precondition(kind, "signature_request", description)
}

/// The French refusal for a request that is no longer open.
pub fn closed(status: &str) -> Status {
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
        _ => precondition("STATUS", "Cette demande de signature n'est pas ouverte."),
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

    pub async fn get(&self, id: &str) -> Result<Full, Status> {
        let req = request::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(internal_err("get signature request"))?
            .ok_or_else(|| not_found("signature_request", id))?;
        self.full(req).await
    }

    async fn full(&self, req: request::Model) -> Result<Full, Status> {
        let signers = signer::Entity::find()
            .filter(signer::Column::RequestId.eq(req.id.clone()))
            .order_by_asc(signer::Column::Position)
            .all(&self.db)
            .await
            .map_err(internal_err("get signers"))?;
        Ok(Full { req, signers })
    }

    pub async fn by_token(&self, token: &str) -> Result<(Full, signer::Model), Status> {
        let s = signer::Entity::find()
            .filter(signer::Column::Token.eq(token.to_owned()))
            .one(&self.db)
            .await
            .map_err(internal_err("signer by token"))?
            .ok_or_else(|| not_found("signer", "token"))?;
        let full = self.get(&s.request_id).await?;
        Ok((full, s))
    }

    fn signer_of<'a>(&self, full: &'a Full, signer_id: &str) -> Result<&'a signer::Model, Status> {
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
    ) -> Result<(Vec<Full>, Option<String>), Status> {
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
    ) -> Result<(Vec<event::Model>, Option<i64>), Status> {
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
        status: &str,
        signer_id: &str,
        origin: &Origin,
    ) -> Result<(), sea_orm::DbErr> {
        let msg = SignatureChanged {
            signature_request_id: req.id.clone(),
            dossier_id: req.dossier_id.clone(),
            status: status.to_owned(),
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
        job::ActiveModel {
            id: Set(new_id()),
            kind: Set(kind.to_owned()),
            request_id: Set(request_id.to_owned()),
            payload: Set(String::new()),
            due_at: Set(self.now()),
            attempts: Set(0),
            done: Set(false),
            last_error: Set(None),
        }
        .insert(conn)
        .await?;
        Ok(())
    }

    // --- create ----------------------------------------------------------

    async fn by_request_id(&self, rid: &str) -> Result<Option<Full>, Status> {
        let r = request::Entity::find()
            .filter(request::Column::RequestId.eq(rid.to_owned()))
            .one(&self.db)
            .await
            .map_err(internal_err("signature request by request_id"))?;
        match r {
            Some(r) => Ok(Some(self.full(r).await?)),
            None => Ok(None),
        }
    }

    #[tracing::instrument(name = "signature.create", skip_all, fields(dossier_id = %nr.dossier_id))]
    pub async fn create(&self, origin: &Origin, nr: NewRequest) -> Result<Full, Status> {
        if let Some(rid) = &nr.request_id
            && let Some(f) = self.by_request_id(rid).await?
        {
            return Ok(f);
        }
        let (sha, size) = match &nr.document {
            DocumentSource::Stored(sha) => {
                let bytes = self.objects.get(sha).await.map_err(|e| match e {
                    ObjectError::NotFound(_) => invalid_argument(
                        "document_sha256",
                        "aucun document de ce SHA-256 dans le stockage",
                    ),
                    ObjectError::BadAddress(_) => invalid_argument(
                        "document_sha256",
                        "doit être un SHA-256 hexadécimal en minuscules",
                    ),
                    other => internal("read document", other),
                })?;
                pdf::check(&bytes)
                    .map_err(|e| invalid_argument("document_sha256", e.to_string()))?;
                (sha.clone(), bytes.len() as u64)
            }
            DocumentSource::Uploaded(bytes) => {
                if bytes.len() as u64 > self.config.max_document_bytes {
                    return Err(invalid_argument(
                        "document_content",
                        format!(
                            "le document dépasse la taille maximale de {} octets",
                            self.config.max_document_bytes
                        ),
                    ));
                }
                pdf::check(bytes)
                    .map_err(|e| invalid_argument("document_content", e.to_string()))?;
                let sha = self
                    .objects
                    .put(bytes)
                    .await
                    .map_err(internal_err("store document"))?;
                (sha, bytes.len() as u64)
            }
        };
        let now = self.now();
        let expire_at = nr
            .expire_at
            .unwrap_or(now + Duration::days(self.config.default_expiry_days.into()));
        if expire_at <= now {
            return Err(invalid_argument("expire_time", "doit être dans le futur"));
        }
        let id = new_id();
        let req = request::Model {
            id: id.clone(),
            request_id: nr.request_id.clone(),
            dossier_id: nr.dossier_id.clone(),
            title: nr.title.clone(),
            process_template: nr.process_template.clone(),
            document_sha256: sha,
            document_size: size as i64,
            consent_text: self.config.consent_or_default(&nr.consent_text),
            status: PENDING.into(),
            expire_at,
            created_at: now,
            updated_at: now,
            completed_at: None,
            creator: origin.actor.clone(),
            signed_sha256: None,
            evidence_sha256: None,
            key_id: None,
            decline_reason: None,
        };
        let txn = self.db.begin().await.map_err(internal_err("create"))?;
        let res: Result<(), sea_orm::DbErr> = async {
            req.clone().into_active_model().insert(&txn).await?;
            for (i, s) in nr.signers.iter().enumerate() {
                signer::ActiveModel {
                        id: Set(new_id()),
                        request_id: Set(id.clone()),
                        position: Set(i as i32),
                        name: Set(s.name.clone()),
                        phone: Set(s.phone.as_str().to_owned()),
                        token: Set(
                            otp::new_token().map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
                        ),
                        status: Set(PENDING.into()),
                        signed_at: Set(None),
                        codes_sent: Set(0),
                        last_code_at: Set(None),
                        sign_ip: Set(None),
                        sign_user_agent: Set(None),
                    }
                    .insert(&txn)
                    .await?;
            }
            self.record(
                &txn,
                &id,
                "",
                "created",
                "ok",
                origin,
                &format!(
                    "{} signataire(s), document {}",
                    nr.signers.len(),
                    req.document_sha256
                ),
            )
            .await?;
            self.announce(&txn, "request_created", &req, PENDING, "", origin)
                .await?;
            self.add_job(&txn, "link", &id).await?;
            Ok(())
        }
        .await;
        if let Err(e) = res {
            let _ = txn.rollback().await;
            return Err(internal("create", e));
        }
        match txn.commit().await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => {
                if let Some(rid) = &nr.request_id
                    && let Some(f) = self.by_request_id(rid).await?
                {
                    return Ok(f);
                }
                return Err(internal("create", e));
            }
            Err(e) => return Err(internal("create", e)),
        }
        self.outbox.notify();
        metrics::counter!("guichet_signature_requests_total", "status" => PENDING).increment(1);
        tracing::info!(signature_request_id = %id, dossier_id = %nr.dossier_id, signers = nr.signers.len(), "signature request created");
        let full = self.get(&id).await?;
        if nr.send_codes {
            for s in &full.signers {
                self.send_code(origin, &id, &s.id, false).await?;
            }
        }
        self.get(&id).await
    }

    // --- codes -------------------------------------------------------------

    /// Expire the request now if its time is up; returns its status.
    async fn check_open(&self, full: &Full) -> Result<(), Status> {
        if full.req.status == PENDING && full.req.expire_at <= self.now() {
            self.expire_one(&full.req.id).await?;
            return Err(closed(EXPIRED));
        }
        if full.req.status != PENDING {
            return Err(closed(&full.req.status));
        }
        Ok(())
    }

    #[tracing::instrument(name = "signature.send_code", skip_all, fields(signature_request_id = %request_id, signer_id = %signer_id))]
    pub async fn send_code(
        &self,
        origin: &Origin,
        request_id: &str,
        signer_id: &str,
        resend: bool,
    ) -> Result<Sent, Status> {
        let full = self.get(request_id).await?;
        let s = self.signer_of(&full, signer_id)?.clone();
        self.check_open(&full).await?;
        if s.status != PENDING {
            return Err(precondition("SIGNER_DONE", "Ce signataire a déjà répondu."));
        }
        let now = self.now();
        let interval = Duration::seconds(self.config.resend_interval_secs.into());
        let kind = if resend { "code_resent" } else { "code_sent" };
        if let Some(last) = s.last_code_at
            && last + interval > now
        {
            let wait = Ord::max((last + interval - now).num_seconds(), 1);
            self.record(&self.db, request_id, &s.id, kind, "throttled", origin, "")
                .await
                .map_err(internal_err("record throttle"))?;
            metrics::counter!("guichet_signature_codes_throttled_total").increment(1);
            return Err(Status::resource_exhausted(format!(
                "Un code vient d'être envoyé : patientez {wait} secondes avant d'en demander un nouveau."
            )));
        }
        let max = self.config.max_codes_per_signer as i32;
        if s.codes_sent >= max {
            self.lock(request_id, &s.id, origin, "codes_limit").await?;
            return Err(closed(LOCKED));
        }
        let code = otp::new_code().map_err(os_rng_err)?;
        let code_id = new_id();
        let expire_at = now + Duration::minutes(self.config.code_ttl_minutes.into());
        let txn = self.db.begin().await.map_err(internal_err("send code"))?;
        let res: Result<bool, sea_orm::DbErr> = async {
            // Compare-and-set on the count: two concurrent sends cannot both pass.
            let r = signer::Entity::update_many()
                .col_expr(signer::Column::CodesSent, Expr::value(s.codes_sent + 1))
                .col_expr(signer::Column::LastCodeAt, Expr::value(now))
                .filter(signer::Column::Id.eq(s.id.clone()))
                .filter(signer::Column::CodesSent.eq(s.codes_sent))
                .filter(signer::Column::Status.eq(PENDING))
                .exec(&txn)
                .await?;
            if r.rows_affected != 1 {
                return Ok(false);
            }
            code::Entity::update_many()
                .col_expr(code::Column::Status, Expr::value("superseded"))
                .filter(code::Column::SignerId.eq(s.id.clone()))
                .filter(code::Column::Status.eq(CODE_ACTIVE))
                .exec(&txn)
                .await?;
            code::ActiveModel {
                id: Set(code_id.clone()),
                signer_id: Set(s.id.clone()),
                request_id: Set(request_id.to_owned()),
                hash: Set(otp::hash_code(&self.config.code_secret, &code_id, &code)),
                created_at: Set(now),
                expire_at: Set(expire_at),
                attempts: Set(0),
                status: Set(CODE_ACTIVE.into()),
            }
            .insert(&txn)
            .await?;
            self.record(
                &txn,
                request_id,
                &s.id,
                kind,
                "ok",
                origin,
                &format!(
                    "code {}/{} envoyé par SMS, valable jusqu'à {}",
                    s.codes_sent + 1,
                    max,
                    rfc3339(expire_at)
                ),
            )
            .await?;
            self.stage_sms(&txn, &full.req, &s, &code_id, &code, expire_at)
                .await?;
            self.announce(&txn, "code_sent", &full.req, PENDING, &s.id, origin)
                .await?;
            Ok(true)
        }
        .await;
        match res {
            Ok(true) => txn.commit().await.map_err(internal_err("send code"))?,
            Ok(false) => {
                let _ = txn.rollback().await;
                return Err(Status::aborted(
                    "Un autre envoi de code est en cours : réessayez.",
                ));
            }
            Err(e) => {
                let _ = txn.rollback().await;
                return Err(internal("send code", e));
            }
        }
        self.outbox.notify();
        metrics::counter!("guichet_signature_codes_sent_total").increment(1);
        tracing::info!(signature_request_id = %request_id, signer_id = %s.id, code_id = %code_id, "signature code sent");
        let sent = (s.codes_sent + 1) as u32;
        Ok(Sent {
            code_expire_at: expire_at,
            next_send_at: now + interval,
            codes_sent: sent,
            codes_left: self.config.max_codes_per_signer.saturating_sub(sent),
        })
    }

    async fn stage_sms(
        &self,
        conn: &impl ConnectionTrait,
        req: &request::Model,
        s: &signer::Model,
        code_id: &str,
        code: &str,
        expire_at: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        let minutes = self.config.code_ttl_minutes.to_string();
        let link = self.signing_url(s);
        let town = self.config.town_name.clone();
        let text = format!(
            "{town} : votre code pour signer « {} » est {code}. Il est valable {minutes} minutes. Ne le communiquez à personne, même à un agent. {link}",
            req.title
        );
        let variables: HashMap<String, String> = [
            ("code", code.to_owned()),
            ("document", req.title.clone()),
            ("minutes", minutes),
            ("town", town),
            ("link", link),
            ("text", text),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let id = format!("signature-code-{code_id}");
        let msg = NotificationRequest {
            id: id.clone(),
            target: Some(notification_request::Target::Phone(s.phone.clone())),
            template: "signature-code".into(),
            variables,
            dossier_id: req.dossier_id.clone(),
            requested_by: "signature".into(),
            not_after: Some(timestamp(expire_at)),
            ..Default::default()
        };
        let staged = Staged {
            nats_subject: self.outbox.bus().subject("notify.sms"),
            event: OutgoingEvent {
                id,
                ty: "guichet.notification.v1.notification_request".into(),
                subject: format!("signature-requests/{}", req.id),
                time: self.now(),
                body: Bytes::from(msg.encode_to_vec()),
            },
        };
        self.outbox.stage(conn, &staged).await
    }

    async fn lock(
        &self,
        request_id: &str,
        signer_id: &str,
        origin: &Origin,
        why: &str,
    ) -> Result<(), Status> {
        let txn = self.db.begin().await.map_err(internal_err("lock"))?;
        let locked = match self.lock_in(&txn, request_id, signer_id, origin, why).await {
            Ok(l) => l,
            Err(e) => {
                let _ = txn.rollback().await;
                return Err(internal("lock", e));
            }
        };
        txn.commit().await.map_err(internal_err("lock"))?;
        if locked {
            self.locked(request_id, why);
        }
        Ok(())
    }

    /// Lock a pending request inside `txn`; false when it was not pending.
    async fn lock_in(
        &self,
        txn: &impl ConnectionTrait,
        request_id: &str,
        signer_id: &str,
        origin: &Origin,
        why: &str,
    ) -> Result<bool, sea_orm::DbErr> {
        let r = request::Entity::update_many()
            .col_expr(request::Column::Status, Expr::value(LOCKED))
            .col_expr(request::Column::UpdatedAt, Expr::value(self.now()))
            .filter(request::Column::Id.eq(request_id.to_owned()))
            .filter(request::Column::Status.eq(PENDING))
            .exec(txn)
            .await?;
        if r.rows_affected != 1 {
            return Ok(false);
        }
        let req = request::Entity::find_by_id(request_id.to_owned())
            .one(txn)
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound(request_id.to_owned()))?;
        self.void_codes(txn, request_id).await?;
        self.record(txn, request_id, signer_id, "locked", why, origin, "")
            .await?;
        self.announce(txn, "locked", &req, LOCKED, signer_id, origin)
            .await?;
        self.add_job(txn, "link", request_id).await?;
        Ok(true)
    }

    /// After a lock committed.
    fn locked(&self, request_id: &str, why: &str) {
        self.outbox.notify();
        metrics::counter!("guichet_signature_locks_total", "reason" => why.to_owned()).increment(1);
        tracing::info!(signature_request_id = %request_id, reason = why, "signature request locked");
    }

    async fn void_codes(
        &self,
        conn: &impl ConnectionTrait,
        request_id: &str,
    ) -> Result<(), sea_orm::DbErr> {
        code::Entity::update_many()
            .col_expr(code::Column::Status, Expr::value("void"))
            .filter(code::Column::RequestId.eq(request_id.to_owned()))
            .filter(code::Column::Status.eq(CODE_ACTIVE))
            .exec(conn)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "signature.confirm", skip_all, fields(signature_request_id = %request_id, signer_id = %signer_id))]
    pub async fn confirm(
        &self,
        origin: &Origin,
        request_id: &str,
        signer_id: &str,
        submitted: &str,
    ) -> Result<Confirmed, Status> {
        let submitted = submitted.trim();
        if submitted.len() != 6 || !submitted.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid_argument("code", "le code comporte 6 chiffres"));
        }
        let full = self.get(request_id).await?;
        let s = self.signer_of(&full, signer_id)?.clone();
        self.check_open(&full).await?;
        if s.status != PENDING {
            return Err(precondition(
                "SIGNER_DONE",
                "Vous avez déjà répondu à cette demande.",
            ));
        }
        let max = self.config.max_attempts_per_code as i32;
        let outcome = |o: &'static str| {
            metrics::counter!("guichet_signature_attempts_total", "outcome" => o).increment(1);
        };
        // A few rounds: a lost compare-and-set re-reads the code.
        for _ in 0..5 {
            let c = code::Entity::find()
                .filter(code::Column::SignerId.eq(s.id.clone()))
                .filter(code::Column::Status.eq(CODE_ACTIVE))
                .order_by_desc(code::Column::CreatedAt)
                .one(&self.db)
                .await
                .map_err(internal_err("confirm"))?;
            let Some(c) = c else {
                // Used a moment ago by a concurrent confirmation?
                let used = code::Entity::find()
                    .filter(code::Column::SignerId.eq(s.id.clone()))
                    .filter(code::Column::Status.eq("used"))
                    .count(&self.db)
                    .await
                    .map_err(internal_err("confirm"))?;
                let (o, msg) = if used > 0 {
                    ("already_used", "Ce code a déjà été utilisé.")
                } else {
                    (
                        "no_code",
                        "Demandez d'abord un code : aucun code valide n'a été envoyé.",
                    )
                };
                outcome(o);
                self.record(&self.db, request_id, &s.id, "attempt", o, origin, "")
                    .await
                    .map_err(internal_err("confirm"))?;
                return Err(precondition("NO_CODE", msg));
            };
            let now = self.now();
            if c.expire_at <= now {
                code::Entity::update_many()
                    .col_expr(code::Column::Status, Expr::value("expired"))
                    .filter(code::Column::Id.eq(c.id.clone()))
                    .filter(code::Column::Status.eq(CODE_ACTIVE))
                    .exec(&self.db)
                    .await
                    .map_err(internal_err("confirm"))?;
                outcome("expired_code");
                self.record(
                    &self.db,
                    request_id,
                    &s.id,
                    "attempt",
                    "expired_code",
                    origin,
                    "",
                )
                .await
                .map_err(internal_err("confirm"))?;
                return Err(precondition(
                    "CODE_EXPIRED",
                    "Ce code a expiré : demandez-en un nouveau.",
                ));
            }
            if otp::code_matches(&self.config.code_secret, &c.id, submitted, &c.hash) {
                let txn = self.db.begin().await.map_err(internal_err("confirm"))?;
                let won = code::Entity::update_many()
                    .col_expr(code::Column::Status, Expr::value("used"))
                    .filter(code::Column::Id.eq(c.id.clone()))
                    .filter(code::Column::Status.eq(CODE_ACTIVE))
                    .filter(code::Column::Attempts.lt(max))
                    .exec(&txn)
                    .await
                    .map_err(internal_err("confirm"))?
                    .rows_affected
                    == 1;
                if !won {
                    let _ = txn.rollback().await;
                    continue;
                }
                let res: Result<u64, sea_orm::DbErr> = async {
                    let r = signer::Entity::update_many()
                        .col_expr(signer::Column::Status, Expr::value(SIGNED))
                        .col_expr(signer::Column::SignedAt, Expr::value(now))
                        .col_expr(signer::Column::SignIp, Expr::value(origin.ip.clone()))
                        .col_expr(
                            signer::Column::SignUserAgent,
                            Expr::value(origin.user_agent.chars().take(512).collect::<String>()),
                        )
                        .filter(signer::Column::Id.eq(s.id.clone()))
                        .filter(signer::Column::Status.eq(PENDING))
                        .exec(&txn)
                        .await?;
                    if r.rows_affected != 1 {
                        return Err(sea_orm::DbErr::Custom("signer no longer pending".into()));
                    }
                    self.record(
                        &txn,
                        request_id,
                        &s.id,
                        "attempt",
                        "ok",
                        origin,
                        &format!("code valide (tentative {}/{})", c.attempts + 1, max),
                    )
                    .await?;
                    self.record(
                        &txn,
                        request_id,
                        &s.id,
                        "signed",
                        "ok",
                        origin,
                        "consentement exprimé et code vérifié",
                    )
                    .await?;
                    self.announce(&txn, "signer_signed", &full.req, PENDING, &s.id, origin)
                        .await?;
                    let left = signer::Entity::find()
                        .filter(signer::Column::RequestId.eq(request_id.to_owned()))
                        .filter(signer::Column::Status.ne(SIGNED))
                        .count(&txn)
                        .await?;
                    if left == 0 {
                        // Crash safety: the job runner completes it if we do not.
                        self.add_job(&txn, "finish", request_id).await?;
                    }
                    Ok(left)
                }
                .await;
                if let Err(e) = res {
                    let _ = txn.rollback().await;
                    return Err(internal("confirm", e));
                }
                txn.commit().await.map_err(internal_err("confirm"))?;
                self.outbox.notify();
                outcome("ok");
                tracing::info!(signature_request_id = %request_id, signer_id = %s.id, "signer signed");
                if self.finish_if_complete(request_id).await? {
                    // Carry it to the dossier now; the job runner retries on failure.
                    if let Err(error) = self.run_due_jobs().await {
                        tracing::warn!(%error, "signature jobs failed, will retry");
                    }
                }
                return Ok(Confirmed {
                    signed: true,
                    attempts_left: 0,
                    full: self.get(request_id).await?,
                });
            }
            // Wrong code: count the attempt (compare-and-set on the counter).
            let attempts = c.attempts + 1;
            let txn = self.db.begin().await.map_err(internal_err("confirm"))?;
            let exhausted = attempts >= max;
            let mut upd = code::Entity::update_many()
                .col_expr(code::Column::Attempts, Expr::value(attempts))
                .filter(code::Column::Id.eq(c.id.clone()))
                .filter(code::Column::Status.eq(CODE_ACTIVE))
                .filter(code::Column::Attempts.eq(c.attempts));
            if exhausted {
                upd = upd.col_expr(code::Column::Status, Expr::value("exhausted"));
            }
            let counted = upd
                .exec(&txn)
                .await
                .map_err(internal_err("confirm"))?
                .rows_affected
                == 1;
            if !counted {
                let _ = txn.rollback().await;
                continue;
            }
            // The attempt and, on the last one, the lock: one transaction.
            let res: Result<(), sea_orm::DbErr> = async {
                self.record(
                    &txn,
                    request_id,
                    &s.id,
                    "attempt",
                    "wrong_code",
                    origin,
                    &format!("code erroné (tentative {attempts}/{max})"),
                )
                .await?;
                if exhausted {
                    self.lock_in(&txn, request_id, &s.id, origin, "attempts_limit")
                        .await?;
                }
                Ok(())
            }
            .await;
            if let Err(e) = res {
                let _ = txn.rollback().await;
                return Err(internal("confirm", e));
            }
            txn.commit().await.map_err(internal_err("confirm"))?;
            outcome("wrong_code");
            if exhausted {
                self.locked(request_id, "attempts_limit");
                return Err(closed(LOCKED));
            }
            return Ok(Confirmed {
                signed: false,
                attempts_left: (max - attempts) as u32,
                full: self.get(request_id).await?,
            });
        }
        Err(Status::aborted(
            "Trop de confirmations simultanées : réessayez.",
        ))
    }

    // --- decline, cancel, reissue, expiry ------------------------------------

    #[allow(clippy::too_many_arguments)]
    async fn close(
        &self,
        origin: &Origin,
        request_id: &str,
        signer_id: &str,
        to: &str,
        from: &[&str],
        reason: &str,
        event_type: &str,
    ) -> Result<Full, Status> {
        let now = self.now();
        let txn = self.db.begin().await.map_err(internal_err(event_type))?;
        let mut upd = request::Entity::update_many()
            .col_expr(request::Column::Status, Expr::value(to))
            .col_expr(request::Column::UpdatedAt, Expr::value(now))
            .filter(request::Column::Id.eq(request_id.to_owned()))
            .filter(request::Column::Status.is_in(from.iter().map(|s| s.to_string())));
        if !reason.is_empty() {
            upd = upd.col_expr(
                request::Column::DeclineReason,
                Expr::value(reason.to_owned()),
            );
        }
        let r = upd.exec(&txn).await.map_err(internal_err(event_type))?;
        if r.rows_affected != 1 {
            let _ = txn.rollback().await;
            let cur = self.get(request_id).await?;
            return Err(closed(&cur.req.status));
        }
        let res: Result<(), sea_orm::DbErr> = async {
            if to == DECLINED && !signer_id.is_empty() {
                signer::Entity::update_many()
                    .col_expr(signer::Column::Status, Expr::value(DECLINED))
                    .filter(signer::Column::Id.eq(signer_id.to_owned()))
                    .exec(&txn)
                    .await?;
            }
            self.void_codes(&txn, request_id).await?;
            let req = request::Entity::find_by_id(request_id.to_owned())
                .one(&txn)
                .await?
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound(request_id.to_owned()))?;
            self.record(&txn, request_id, signer_id, to, "ok", origin, reason)
                .await?;
            self.announce(&txn, event_type, &req, to, signer_id, origin)
                .await?;
            self.add_job(&txn, "link", request_id).await
        }
        .await;
        if let Err(e) = res {
            let _ = txn.rollback().await;
            return Err(internal(event_type, e));
        }
        txn.commit().await.map_err(internal_err(event_type))?;
        self.outbox.notify();
        metrics::counter!("guichet_signature_requests_total", "status" => to.to_owned())
            .increment(1);
        tracing::info!(signature_request_id = %request_id, status = to, "signature request closed");
        self.get(request_id).await
    }

    #[tracing::instrument(name = "signature.decline", skip_all, fields(signature_request_id = %request_id))]
    pub async fn decline(
        &self,
        origin: &Origin,
        request_id: &str,
        signer_id: &str,
        reason: &str,
    ) -> Result<Full, Status> {
        let full = self.get(request_id).await?;
        let s = self.signer_of(&full, signer_id)?.clone();
        self.check_open(&full).await?;
        if s.status != PENDING {
            return Err(precondition(
                "SIGNER_DONE",
                "Vous avez déjà répondu à cette demande.",
            ));
        }
        let reason: String = reason.trim().chars().take(1000).collect();
        self.close(
            origin,
            request_id,
            &s.id,
            DECLINED,
            &[PENDING],
            &reason,
            "declined",
        )
        .await
    }

    #[tracing::instrument(name = "signature.cancel", skip_all, fields(signature_request_id = %id))]
    pub async fn cancel(&self, origin: &Origin, id: &str, reason: &str) -> Result<Full, Status> {
        self.get(id).await?;
        self.close(
            origin,
            id,
            "",
            CANCELLED,
            &[PENDING, LOCKED],
            reason.trim(),
            "cancelled",
        )
        .await
    }

    async fn expire_one(&self, id: &str) -> Result<bool, Status> {
        match self
            .close(
                &Origin::system(),
                id,
                "",
                EXPIRED,
                &[PENDING, LOCKED],
                "",
                "expired",
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Code::FailedPrecondition => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Mark every request past its expiry as expired; safe with several
    /// replicas (each request is taken by a compare-and-set). Returns how many.
    pub async fn expire_due(&self) -> Result<usize, Status> {
        let due = request::Entity::find()
            .filter(request::Column::Status.is_in([PENDING, LOCKED]))
            .filter(request::Column::ExpireAt.lte(self.now()))
            .order_by_asc(request::Column::ExpireAt)
            .limit(100)
            .all(&self.db)
            .await
            .map_err(internal_err("expire"))?;
        let mut n = 0;
        for r in due {
            if self.expire_one(&r.id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    #[tracing::instrument(name = "signature.reissue", skip_all, fields(signature_request_id = %id))]
    pub async fn reissue(
        &self,
        origin: &Origin,
        id: &str,
        reason: &str,
        expire_at: Option<DateTime<Utc>>,
    ) -> Result<Full, Status> {
        let full = self.get(id).await?;
        let now = self.now();
        let new_expiry = expire_at.unwrap_or(full.req.expire_at);
        if new_expiry <= now {
            return Err(invalid_argument(
                "expire_time",
                "la demande est échue : donnez une nouvelle date d'expiration future",
            ));
        }
        let txn = self.db.begin().await.map_err(internal_err("reissue"))?;
        let r = request::Entity::update_many()
            .col_expr(request::Column::Status, Expr::value(PENDING))
            .col_expr(request::Column::ExpireAt, Expr::value(new_expiry))
            .col_expr(request::Column::UpdatedAt, Expr::value(now))
            .filter(request::Column::Id.eq(id.to_owned()))
            .filter(request::Column::Status.is_in([LOCKED, EXPIRED]))
            .exec(&txn)
            .await
            .map_err(internal_err("reissue"))?;
        if r.rows_affected != 1 {
            let _ = txn.rollback().await;
            return Err(precondition(
                "NOT_LOCKED",
                "Seule une demande bloquée ou échue peut être débloquée.",
            ));
        }
        let res: Result<(), sea_orm::DbErr> = async {
            signer::Entity::update_many()
                .col_expr(signer::Column::CodesSent, Expr::value(0))
                .col_expr(
                    signer::Column::LastCodeAt,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .filter(signer::Column::RequestId.eq(id.to_owned()))
                .filter(signer::Column::Status.eq(PENDING))
                .exec(&txn)
                .await?;
            self.void_codes(&txn, id).await?;
            let req = request::Entity::find_by_id(id.to_owned())
                .one(&txn)
                .await?
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound(id.to_owned()))?;
            self.record(&txn, id, "", "reissued", "ok", origin, reason.trim())
                .await?;
            self.announce(&txn, "reissued", &req, PENDING, "", origin)
                .await?;
            self.add_job(&txn, "link", id).await
        }
        .await;
        if let Err(e) = res {
            let _ = txn.rollback().await;
            return Err(internal("reissue", e));
        }
        txn.commit().await.map_err(internal_err("reissue"))?;
        self.outbox.notify();
        tracing::info!(signature_request_id = %id, "signature request reissued");
        self.get(id).await
    }

    // --- completion ------------------------------------------------------------

    /// Complete the request when every signer has signed: signed PDF,
    /// sealed evidence, status `signed`. Idempotent; the first caller wins.
    #[tracing::instrument(name = "signature.complete", skip_all, fields(signature_request_id = %id))]
    pub async fn finish_if_complete(&self, id: &str) -> Result<bool, Status> {
        let full = self.get(id).await?;
        if full.req.status != PENDING || full.signers.iter().any(|s| s.status != SIGNED) {
            return Ok(false);
        }
        let original = self
            .objects
            .get(&full.req.document_sha256)
            .await
            .map_err(internal_err("read original"))?;
        let now = self.now();
        let page = pdf::SignaturePage {
            title: full.req.title.clone(),
            town: self.config.town_name.clone(),
            original_sha256: full.req.document_sha256.clone(),
            request_id: full.req.id.clone(),
            signers: full
                .signers
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        otp::mask_phone(&s.phone),
                        s.signed_at.map(paris_text).unwrap_or_default(),
                    )
                })
                .collect(),
            consent_text: full.req.consent_text.clone(),
            key_id: self.keys.key_id.clone(),
        };
        let signed = pdf::append_signature_page(&original, &page)
            .map_err(|e| internal("signature page", e))?;
        let signed_sha = self
            .objects
            .put(&signed)
            .await
            .map_err(internal_err("store signed pdf"))?;
        let (events, _) = self.events(id, 0, 10_000).await?;
        let evidence = self.evidence(&full, &events, &signed_sha, signed.len(), now);
        let sealed = self.keys.seal(evidence);
        let sealed = self.time_stamp(id, sealed).await;
        let evidence_sha = self
            .objects
            .put(&sealed)
            .await
            .map_err(internal_err("store evidence"))?;
        let txn = self.db.begin().await.map_err(internal_err("complete"))?;
        let r = request::Entity::update_many()
            .col_expr(request::Column::Status, Expr::value(SIGNED))
            .col_expr(request::Column::UpdatedAt, Expr::value(now))
            .col_expr(request::Column::CompletedAt, Expr::value(now))
            .col_expr(
                request::Column::SignedSha256,
                Expr::value(signed_sha.clone()),
            )
            .col_expr(
                request::Column::EvidenceSha256,
                Expr::value(evidence_sha.clone()),
            )
            .col_expr(
                request::Column::KeyId,
                Expr::value(self.keys.key_id.clone()),
            )
            .filter(request::Column::Id.eq(id.to_owned()))
            .filter(request::Column::Status.eq(PENDING))
            .exec(&txn)
            .await
            .map_err(internal_err("complete"))?;
        if r.rows_affected != 1 {
            let _ = txn.rollback().await;
            return Ok(false);
        }
        let res: Result<(), sea_orm::DbErr> = async {
            let req = request::Entity::find_by_id(id.to_owned())
                .one(&txn)
                .await?
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound(id.to_owned()))?;
            self.record(
                &txn,
                id,
                "",
                "completed",
                "ok",
                &Origin::system(),
                &format!("PDF signé {signed_sha}, preuve {evidence_sha}"),
            )
            .await?;
            self.announce(&txn, "completed", &req, SIGNED, "", &Origin::system())
                .await?;
            self.add_job(&txn, "completed", id).await
        }
        .await;
        if let Err(e) = res {
            let _ = txn.rollback().await;
            return Err(internal("complete", e));
        }
        txn.commit().await.map_err(internal_err("complete"))?;
        self.outbox.notify();
        metrics::counter!("guichet_signature_requests_total", "status" => SIGNED).increment(1);
        tracing::info!(signature_request_id = %id, "signature request completed");
        Ok(true)
    }

    fn evidence(
        &self,
        full: &Full,
        events: &[event::Model],
        signed_sha: &str,
        signed_size: usize,
        now: DateTime<Utc>,
    ) -> Value {
        let r = &full.req;
        let signers: Vec<Value> = full
            .signers
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "position": s.position,
                    "name": s.name,
                    "phone_masked": otp::mask_phone(&s.phone),
                    "signed_at": s.signed_at.map(rfc3339),
                    "ip": s.sign_ip,
                    "user_agent": s.sign_user_agent,
                    "verification": "code à usage unique vérifié (HMAC-SHA256, comparaison à temps constant)",
                })
            })
            .collect();
        let events: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({
                    "seq": e.id,
                    "at": rfc3339(e.at),
                    "kind": e.kind,
                    "outcome": e.outcome,
                    "signer_id": e.signer_id,
                    "ip": e.ip,
                    "user_agent": e.user_agent,
                    "actor": e.actor,
                    "detail": e.detail,
                })
            })
            .collect();
        json!({
            "format": "guichet-signature-evidence/1",
            "key_id": self.keys.key_id,
            "sealed_at": rfc3339(now),
            "town": self.config.town_name,
            "method": "signature électronique simple (eIDAS) par code à usage unique envoyé par SMS",
            "request": {
                "id": r.id,
                "dossier_id": r.dossier_id,
                "title": r.title,
                "process_template": r.process_template,
                "creator": r.creator,
                "created_at": rfc3339(r.created_at),
                "expire_at": rfc3339(r.expire_at),
                "completed_at": rfc3339(now),
            },
            "document": {
                "original_sha256": r.document_sha256,
                "original_size": r.document_size,
                "signed_sha256": signed_sha,
                "signed_size": signed_size,
                "signature_page": "page de signature ajoutée en dernière page",
            },
            "consent_text": r.consent_text,
            "signers": signers,
            "events": events,
            "code_policy": {
                "digits": 6,
                "ttl_minutes": self.config.code_ttl_minutes,
                "max_attempts_per_code": self.config.max_attempts_per_code,
                "max_codes_per_signer": self.config.max_codes_per_signer,
            },
            "timestamp": Value::Null,
        })
    }

    /// Time-stamp a sealed record with the configured authority (RFC
    /// 3161, over the SHA-256 of the seal's signature). The authority being
    /// away never blocks a signature: the record is kept sealed without a
    /// token, which is logged and counted.
    async fn time_stamp(&self, id: &str, sealed: Vec<u8>) -> Vec<u8> {
        let url = self.config.tsa_url.as_str();
        if url.is_empty() {
            return sealed;
        }
        let Some(signature) = crate::seal::seal_signature(&sealed) else {
            return sealed;
        };
        let hash: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            &signature,
        ))
        .into();
        match crate::tsa::stamp(&self.http, url, &hash).await {
            Ok((token, info)) => {
                let ts = serde_json::json!({
                    "standard": "RFC 3161",
                    "tsa_url": url,
                    "hash_algorithm": "sha256",
                    "covers": "seal.signature",
                    "imprint_sha256": hash.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                    "gen_time": rfc3339(info.gen_time),
                    "serial": info.serial_hex,
                    "token": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &token),
                });
                metrics::counter!("guichet_signature_timestamps_total", "outcome" => "ok")
                    .increment(1);
                tracing::info!(signature_request_id = id, "evidence time-stamped");
                crate::seal::with_timestamp(&sealed, ts).unwrap_or(sealed)
            }
            Err(error) => {
                metrics::counter!("guichet_signature_timestamps_total", "outcome" => "failed")
                    .increment(1);
                tracing::warn!(signature_request_id = id, %error, "evidence not time-stamped");
                sealed
            }
        }
    }

    pub async fn evidence_bytes(&self, id: &str) -> Result<(Full, Vec<u8>), Status> {
        let full = self.get(id).await?;
        let Some(sha) = full.req.evidence_sha256.clone() else {
            return Err(precondition(
                "NOT_SIGNED",
                "La preuve n'existe qu'une fois le document signé par tous.",
            ));
        };
        let bytes = self
            .objects
            .get(&sha)
            .await
            .map_err(internal_err("read evidence"))?;
        Ok((full, bytes))
    }

    /// The request whose original or signed PDF has this hash.
    pub async fn by_document(&self, sha: &str) -> Result<Option<request::Model>, Status> {
        request::Entity::find()
            .filter(
                request::Column::SignedSha256
                    .eq(sha.to_owned())
                    .or(request::Column::DocumentSha256.eq(sha.to_owned())),
            )
            .filter(request::Column::Status.eq(SIGNED))
            .order_by_desc(request::Column::CompletedAt)
            .one(&self.db)
            .await
            .map_err(internal_err("request by document"))
    }

    // --- jobs ----------------------------------------------------------------

    /// Run due jobs (dossier link status, signed document and transition,
    /// unfinished completions). Each job is leased by a compare-and-set on
    /// its due time, so replicas do not run it twice at once.
    pub async fn run_due_jobs(&self) -> Result<usize, sea_orm::DbErr> {
        let now = self.now();
        let due = job::Entity::find()
            .filter(job::Column::Done.eq(false))
            .filter(job::Column::DueAt.lte(now))
            .order_by_asc(job::Column::DueAt)
            .order_by_asc(job::Column::Id)
            .limit(100)
            .all(&self.db)
            .await?;
        let mut handled = 0;
        for j in due {
            let lease = job::Entity::update_many()
                .col_expr(job::Column::DueAt, Expr::value(now + Duration::seconds(60)))
                .filter(job::Column::Id.eq(j.id.clone()))
                .filter(job::Column::Done.eq(false))
                .filter(job::Column::DueAt.eq(j.due_at))
                .exec(&self.db)
                .await?;
            if lease.rows_affected != 1 {
                continue;
            }
            let res = self.run_job(&j).await;
            let mut am = j.clone().into_active_model();
            match res {
                Ok(()) => {
                    handled += 1;
                    am.done = Set(true);
                    am.last_error = Set(None);
                }
                Err(error)
                    if matches!(
                        error.code(),
                        Code::NotFound | Code::InvalidArgument | Code::PermissionDenied
                    ) =>
                {
                    // Retrying cannot help (e.g. an unknown dossier).
                    tracing::error!(job_id = %j.id, kind = %j.kind, %error, "signature job failed for good");
                    am.done = Set(true);
                    am.last_error = Set(Some(error.to_string()));
                }
                Err(error) => {
                    let attempts = j.attempts + 1;
                    let backoff = Duration::seconds(2i64.pow(Ord::min(attempts, 9) as u32));
                    tracing::warn!(job_id = %j.id, kind = %j.kind, attempts, %error, "signature job failed, will retry");
                    am.attempts = Set(attempts);
                    am.due_at = Set(now + backoff);
                    am.last_error = Set(Some(error.to_string()));
                }
            }
            am.update(&self.db).await?;
        }
        Ok(handled)
    }

    #[tracing::instrument(name = "signature.job", skip_all, fields(signature_request_id = %j.request_id, job_kind = %j.kind))]
    async fn run_job(&self, j: &job::Model) -> Result<(), Status> {
        let full = self.get(&j.request_id).await?;
        let r = &full.req;
        match j.kind.as_str() {
            "link" => {
                if r.dossier_id.is_empty() {
                    return Ok(());
                }
                self.dossier.link(&r.dossier_id, &r.id, &r.status).await
            }
            "finish" => self.finish_if_complete(&r.id).await.map(|_| ()),
            "completed" => {
                if r.dossier_id.is_empty() {
                    return Ok(());
                }
                self.dossier.link(&r.dossier_id, &r.id, SIGNED).await?;
                if let Some(sha) = &r.signed_sha256 {
                    let size = self
                        .objects
                        .get(sha)
                        .await
                        .map_err(internal_err("read signed pdf"))?
                        .len() as u64;
                    let name = format!("{}-signe.pdf", slug(&r.title));
                    self.dossier
                        .add_document(&r.dossier_id, &name, sha, size)
                        .await?;
                }
                let moved = self
                    .dossier
                    .advance(&r.dossier_id, &format!("signature-{}-completed", r.id))
                    .await?;
                tracing::info!(signature_request_id = %r.id, dossier_id = %r.dossier_id, to_state = ?moved, "dossier advanced after signature");
                Ok(())
            }
            other => {
                tracing::error!(kind = other, "unknown signature job kind");
                Ok(())
            }
        }
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

impl Core {
    /// A `NotificationStatusChanged` of one of our code SMS (id
    /// `signature-code-<code id>`): recorded in the request's trail as
    /// `sms_<status>` (sent, delivered, failed…), once per event id. Other
    /// notifications are ignored.
    pub async fn record_sms_status(
        &self,
        event_id: &str,
        s: &guichet_proto::notification::v1::NotificationStatusChanged,
    ) -> Result<bool, sea_orm::DbErr> {
        let Some(code_id) = s.notification_id.strip_prefix("signature-code-") else {
            return Ok(false);
        };
        let Some(c) = code::Entity::find_by_id(code_id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(false);
        };
        let kind = format!("sms_{}", s.status);
        let detail = format!(
            "notification {} (événement {event_id}){}{}",
            s.notification_id,
            if s.attempts > 0 {
                format!(", tentative {}", s.attempts)
            } else {
                String::new()
            },
            if s.error.is_empty() {
                String::new()
            } else {
                format!(", erreur : {}", s.error)
            }
        );
        let seen = event::Entity::find()
            .filter(event::Column::RequestId.eq(c.request_id.clone()))
            .filter(event::Column::Kind.eq(kind.clone()))
            .filter(event::Column::Detail.eq(detail.clone()))
            .count(&self.db)
            .await?;
        if seen > 0 {
            return Ok(false);
        }
        let outcome =
            if s.status == "failed" || s.status == "dead_lettered" || s.status == "expired" {
                "failed"
            } else {
                "ok"
            };
        self.record(
            &self.db,
            &c.request_id,
            &c.signer_id,
            &kind,
            outcome,
            &Origin {
                actor: "notification".into(),
                ..Default::default()
            },
            &detail,
        )
        .await?;
        Ok(true)
    }
}
