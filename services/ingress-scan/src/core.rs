//! The scan ingress's domain core: accepting a file (known already, read,
//! recorded published or quarantined, its IntakeEvent staged with its
//! record) and releasing a quarantined one.

use std::sync::Arc;

use chrono::Utc;
use guichet_platform::bus::new_event_id;
use guichet_platform::contact::{Email, Phone, clean_name};
use guichet_platform::db::is_unique_violation;
use guichet_platform::objects::{ObjectStore, sha256_hex};
use guichet_platform::outbox::{Outbox, Staged};
use guichet_proto::convert::timestamp;
use guichet_proto::intake::v1::{
    AttachmentRef, Channel, CitizenHint, IntakeEvent, PostalAddress, ScanDetails, intake_event,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set,
    TransactionTrait,
};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::db::entities::scan_file;
use crate::error::{Error, failed_precondition, internal, internal_err, not_found, unavailable};
use crate::pipeline::Reading;
use crate::quarantine::{ReadError, Reason};
use crate::{detect, extract, ocr, pipeline};

/// The recognised text carried in an intake event is cut beyond this, so
/// that an event always fits a NATS message (1 MiB by default) and can never
/// block the outbox; the full original stays in the object store.
const MAX_BODY_BYTES: usize = 256 * 1024;

pub const STATE_PUBLISHED: &str = "published";
pub const STATE_QUARANTINED: &str = "quarantined";

/// The scan ingress's core, shared by the folder watcher and the gRPC API.
#[derive(Clone)]
pub struct ScanApi {
    pub(crate) db: DatabaseConnection,
    pub(crate) outbox: Outbox,
    pub(crate) objects: ObjectStore,
    pub(crate) config: Arc<Config>,
    pub(crate) tools: Arc<ocr::Tools>,
    /// Bounds the files read at once (each OCR is a process).
    pub(crate) permits: Arc<Semaphore>,
    /// The dossier role, asked with the caller's own token which letters
    /// went to a dossier the caller may not read.
    pub(crate) dossier: guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient<
        tonic::transport::Channel,
    >,
}

/// Where a file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Folder,
    Upload,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Folder => "folder",
            Source::Upload => "upload",
        }
    }
}

/// A file handed to the ingress.
pub struct Incoming {
    pub filename: String,
    pub bytes: Vec<u8>,
    pub source: Source,
    pub batch_id: String,
}

/// Why a file could not be handled now (it is tried again later).
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("cannot read scans now: {0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("object store: {0}")]
    Objects(#[from] guichet_platform::objects::ObjectError),
    #[error("publish: {0}")]
    Publish(String),
}

impl AcceptError {
    /// This failure as the caller sees it, logged with `context`.
    pub(crate) fn error(&self, context: &str) -> Error {
        match self {
            AcceptError::Unavailable(_) | AcceptError::Publish(_) => unavailable(context, self),
            _ => internal(context, self),
        }
    }
}

impl ScanApi {
    /// Handle one file: known already (by SHA-256) → its record, after making
    /// sure its event is published; else read it and record it published or
    /// quarantined. Returns once JetStream holds the event of a published file.
    #[tracing::instrument(skip_all, fields(scan_file = tracing::field::Empty, source = incoming.source.as_str(), size = incoming.bytes.len()))]
    pub async fn accept(&self, incoming: Incoming) -> Result<scan_file::Model, AcceptError> {
        let sha = sha256_hex(&incoming.bytes);
        if let Some(known) = self.by_sha(&sha).await? {
            tracing::Span::current().record("scan_file", known.id.as_str());
            // It may have been recorded by a process that died before
            // publishing: publish what is staged before answering.
            self.outbox.flush().await.map_err(AcceptError::Publish)?;
            metrics::counter!("guichet_scan_files_total", "outcome" => "duplicate").increment(1);
            tracing::info!(scan_file = %known.id, "scan already known, not read again");
            return Ok(known);
        }
        let reading = {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|e| AcceptError::Unavailable(e.to_string()))?;
            pipeline::read(&incoming.bytes, &self.config, &self.tools).await
        };
        let reading = match reading {
            Ok(r) => Ok(r),
            Err(ReadError::Quarantine(q)) => Err(q),
            Err(ReadError::Unavailable(e)) => return Err(AcceptError::Unavailable(e)),
        };
        self.objects.put(&incoming.bytes).await?;
        let now = Utc::now();
        let id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("scan_file", id.as_str());
        let media_type = detect::sniff(&incoming.bytes)
            .map(|k| k.media_type().to_owned())
            .unwrap_or_default();
        let mut row = scan_file::ActiveModel {
            id: Set(id.clone()),
            sha256: Set(sha.clone()),
            filename: Set(clean_filename(&incoming.filename)),
            media_type: Set(media_type),
            size_bytes: Set(incoming.bytes.len() as i64),
            source: Set(incoming.source.as_str().to_owned()),
            batch_id: Set(incoming.batch_id.chars().take(128).collect()),
            state: Set(STATE_QUARANTINED.to_owned()),
            reason: Set(None),
            detail: Set(String::new()),
            intake_event_id: Set(None),
            page_count: Set(0),
            ocr_confidence: Set(0.0),
            release_count: Set(0),
            received_at: Set(now),
            updated_at: Set(now),
        };
        let txn = self.db.begin().await?;
        let staged = match &reading {
            Ok(r) => {
                let event_id = new_event_id();
                row.state = Set(STATE_PUBLISHED.to_owned());
                row.intake_event_id = Set(Some(event_id.clone()));
                row.page_count = Set(r.pages.len() as i32);
                row.ocr_confidence = Set(f64::from(r.confidence()));
                Some(event_id)
            }
            Err(q) => {
                row.reason = Set(Some(q.reason.as_str().to_owned()));
                row.detail = Set(q.detail.clone());
                None
            }
        };
        let model = match row.insert(&txn).await {
            Ok(m) => m,
            Err(e) if is_unique_violation(&e) => {
                // The same content raced us (two replicas on one share, or
                // an upload and the folder): the first record wins, and its
                // event is published before we answer for it.
                drop(txn);
                let known = self.by_sha(&sha).await?.ok_or(AcceptError::Db(e))?;
                self.outbox.flush().await.map_err(AcceptError::Publish)?;
                return Ok(known);
            }
            Err(e) => return Err(e.into()),
        };
        let staged = match (staged, &reading) {
            (Some(event_id), Ok(r)) => {
                let s = self.stage_event(&model, &event_id, Some(r), now);
                self.outbox.stage(&txn, &s).await?;
                Some(s)
            }
            _ => None,
        };
        txn.commit().await?;
        self.finish(&model, staged.as_ref()).await?;
        Ok(model)
    }

    /// After commit: publish (waiting for JetStream), count, log.
    async fn finish(
        &self,
        model: &scan_file::Model,
        staged: Option<&Staged>,
    ) -> Result<(), AcceptError> {
        match staged {
            Some(s) => {
                self.outbox
                    .publish_now(s)
                    .await
                    .map_err(|e| AcceptError::Publish(e.to_string()))?;
                metrics::counter!("guichet_scan_files_total", "outcome" => "published")
                    .increment(1);
                tracing::info!(
                    scan_file = %model.id,
                    intake_event_id = model.intake_event_id.as_deref().unwrap_or_default(),
                    pages = model.page_count,
                    confidence = model.ocr_confidence,
                    "scan published"
                );
            }
            None => {
                let reason = model.reason.clone().unwrap_or_default();
                metrics::counter!("guichet_scan_files_total", "outcome" => "quarantined")
                    .increment(1);
                metrics::counter!("guichet_scan_quarantined_total", "reason" => reason.clone())
                    .increment(1);
                tracing::warn!(scan_file = %model.id, reason, "scan quarantined");
            }
        }
        Ok(())
    }

    /// The IntakeEvent of a read letter (or, released without text, of its image).
    fn stage_event(
        &self,
        model: &scan_file::Model,
        event_id: &str,
        reading: Option<&Reading>,
        now: chrono::DateTime<Utc>,
    ) -> Staged {
        let x = reading
            .map(|r| extract::extract(&r.pages))
            .unwrap_or_default();
        let event = IntakeEvent {
            id: event_id.to_owned(),
            channel: Channel::Scan as i32,
            received_at: Some(timestamp(model.received_at)),
            citizen: citizen_hint(&x),
            subject: if x.subject.is_empty() {
                "Courrier numérisé".to_owned()
            } else {
                x.subject.clone()
            },
            body: reading
                .map(|r| bounded(r.text(), MAX_BODY_BYTES))
                .unwrap_or_default(),
            attachments: vec![AttachmentRef {
                sha256: model.sha256.clone(),
                media_type: model.media_type.clone(),
                size_bytes: model.size_bytes as u64,
                filename: model.filename.clone(),
            }],
            quoted_reference: x.quoted_reference(&self.config.reference_prefix),
            details: Some(intake_event::Details::Scan(ScanDetails {
                batch_id: model.batch_id.clone(),
                page_count: reading.map(|r| r.pages.len() as u32).unwrap_or(0),
                ocr_confidence: reading.map(Reading::confidence).unwrap_or(0.0),
                page_confidences: reading
                    .map(|r| r.pages.iter().map(|p| p.confidence).collect())
                    .unwrap_or_default(),
                scan_file: format!("scanFiles/{}", model.id),
                source: model.source.clone(),
                letter_date: x.date.map(|d| d.to_string()).unwrap_or_default(),
                references: x.references.clone(),
                text_source: reading
                    .map(|r| r.text_source())
                    .unwrap_or("none")
                    .to_owned(),
                sender_lines: x.sender_lines.clone(),
            })),
        };
        self.outbox
            .intake_event(&event, format!("scanFiles/{}", model.id), now)
    }

    /// A folder file above `max_file_bytes`: hashed as a stream (never
    /// loaded, never copied to the object store) and quarantined as
    /// `TOO_LARGE`; it cannot be released, only scanned again in parts.
    pub async fn quarantine_oversized(
        &self,
        path: &std::path::Path,
        filename: &str,
        len: u64,
    ) -> Result<scan_file::Model, AcceptError> {
        use sha2::Digest;
        use tokio::io::AsyncReadExt;
        let io = |e: std::io::Error| AcceptError::Unavailable(format!("read scan file: {e}"));
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let sha = format!("{:x}", hasher.finalize());
        if let Some(known) = self.by_sha(&sha).await? {
            return Ok(known);
        }
        let now = Utc::now();
        let row = scan_file::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            sha256: Set(sha.clone()),
            filename: Set(clean_filename(filename)),
            media_type: Set(String::new()),
            size_bytes: Set(i64::try_from(len).unwrap_or(i64::MAX)),
            source: Set(Source::Folder.as_str().to_owned()),
            batch_id: Set(String::new()),
            state: Set(STATE_QUARANTINED.to_owned()),
            reason: Set(Some(Reason::TooLarge.as_str().to_owned())),
            detail: Set(format!(
                "{len} bytes, more than the limit of {} (not stored: scan it again in parts)",
                self.config.max_file_bytes
            )),
            intake_event_id: Set(None),
            page_count: Set(0),
            ocr_confidence: Set(0.0),
            release_count: Set(0),
            received_at: Set(now),
            updated_at: Set(now),
        };
        let model = match row.insert(&self.db).await {
            Ok(m) => m,
            Err(e) if is_unique_violation(&e) => {
                return self.by_sha(&sha).await?.ok_or(AcceptError::Db(e));
            }
            Err(e) => return Err(e.into()),
        };
        self.finish(&model, None).await?;
        Ok(model)
    }

    async fn by_sha(&self, sha: &str) -> Result<Option<scan_file::Model>, sea_orm::DbErr> {
        scan_file::Entity::find()
            .filter(scan_file::Column::Sha256.eq(sha))
            .one(&self.db)
            .await
    }

    /// Read a quarantined file again from its stored original (or forward
    /// its image alone); it stays quarantined, with the new reason, if it
    /// still cannot be read.
    pub async fn release(&self, id: &str, without_text: bool) -> Result<scan_file::Model, Error> {
        let model = scan_file::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(internal_err("find scan file"))?
            .ok_or_else(|| not_found("scanFiles", &format!("scanFiles/{id}")))?;
        if model.state != STATE_QUARANTINED {
            return Err(failed_precondition(
                "STATE",
                &format!("scanFiles/{id}"),
                "only a quarantined file can be released",
            ));
        }
        let bytes = match self.objects.get(&model.sha256).await {
            Ok(b) => b,
            Err(guichet_platform::objects::ObjectError::NotFound(_)) => {
                return Err(failed_precondition(
                    "ORIGINAL",
                    &format!("scanFiles/{id}"),
                    "the original was too large to be stored: scan it again in parts",
                ));
            }
            Err(e) => return Err(internal("read the stored original", e)),
        };
        let reading = if without_text {
            Ok(None)
        } else {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(internal_err("read scan"))?;
            match pipeline::read(&bytes, &self.config, &self.tools).await {
                Ok(r) => Ok(Some(r)),
                Err(ReadError::Quarantine(q)) => Err(q),
                Err(ReadError::Unavailable(e)) => return Err(unavailable("read scan", e)),
            }
        };
        let now = Utc::now();
        let txn = self
            .db
            .begin()
            .await
            .map_err(internal_err("release scan"))?;
        let mut update = scan_file::Entity::update_many()
            .col_expr(scan_file::Column::UpdatedAt, Expr::value(now))
            .col_expr(
                scan_file::Column::ReleaseCount,
                Expr::value(model.release_count + 1),
            )
            .filter(scan_file::Column::Id.eq(id))
            .filter(scan_file::Column::State.eq(STATE_QUARANTINED))
            .filter(scan_file::Column::ReleaseCount.eq(model.release_count));
        let staged_event = match &reading {
            Ok(r) => {
                let event_id = new_event_id();
                update = update
                    .col_expr(scan_file::Column::State, Expr::value(STATE_PUBLISHED))
                    .col_expr(scan_file::Column::Reason, Expr::value(None::<String>))
                    .col_expr(scan_file::Column::Detail, Expr::value(String::new()))
                    .col_expr(
                        scan_file::Column::IntakeEventId,
                        Expr::value(Some(event_id.clone())),
                    )
                    .col_expr(
                        scan_file::Column::PageCount,
                        Expr::value(r.as_ref().map(|r| r.pages.len() as i32).unwrap_or(0)),
                    )
                    .col_expr(
                        scan_file::Column::OcrConfidence,
                        Expr::value(r.as_ref().map(|r| f64::from(r.confidence())).unwrap_or(0.0)),
                    );
                Some(event_id)
            }
            Err(q) => {
                update = update
                    .col_expr(
                        scan_file::Column::Reason,
                        Expr::value(Some(q.reason.as_str())),
                    )
                    .col_expr(scan_file::Column::Detail, Expr::value(q.detail.clone()));
                None
            }
        };
        let res = update
            .exec(&txn)
            .await
            .map_err(internal_err("release scan"))?;
        if res.rows_affected != 1 {
            return Err(failed_precondition(
                "STATE",
                &format!("scanFiles/{id}"),
                "the file changed while it was being released; get it and try again",
            ));
        }
        let model = scan_file::Entity::find_by_id(id)
            .one(&txn)
            .await
            .map_err(internal_err("release scan"))?
            .ok_or_else(|| not_found("scanFiles", &format!("scanFiles/{id}")))?;
        let staged = match (&staged_event, &reading) {
            (Some(event_id), Ok(r)) => {
                let s = self.stage_event(&model, event_id, r.as_ref(), now);
                self.outbox
                    .stage(&txn, &s)
                    .await
                    .map_err(internal_err("release scan"))?;
                Some(s)
            }
            _ => None,
        };
        txn.commit().await.map_err(internal_err("release scan"))?;
        self.finish(&model, staged.as_ref())
            .await
            .map_err(|e| e.error("publish intake event"))?;
        tracing::info!(scan_file = %model.id, released = staged.is_some(), "scan release");
        Ok(model)
    }
}

/// What the letter says about its sender, in the form routing accepts:
/// parts that do not parse are left out rather than failing the event.
fn citizen_hint(x: &extract::Extraction) -> Option<CitizenHint> {
    let given_name = clean_name(&x.given_name).unwrap_or_default();
    let family_name = clean_name(&x.family_name).unwrap_or_default();
    let phones: Vec<String> = x
        .phones
        .iter()
        .filter(|p| Phone::parse(p).is_ok())
        .cloned()
        .collect();
    let emails: Vec<String> = x
        .emails
        .iter()
        .filter(|e| Email::parse(e).is_ok())
        .cloned()
        .collect();
    if given_name.is_empty() && family_name.is_empty() && phones.is_empty() && emails.is_empty() {
        return None;
    }
    let address =
        (!x.postal_code.is_empty() || !x.address_lines.is_empty()).then(|| PostalAddress {
            lines: x.address_lines.clone(),
            postal_code: x.postal_code.clone(),
            city: x.city.clone(),
            country: "FR".into(),
        });
    Some(CitizenHint {
        given_name,
        family_name,
        phones,
        emails,
        address,
    })
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub(crate) fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(8);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("\n[…]");
    text
}

/// A file name as shown to agents: its last path component, bounded.
pub(crate) fn clean_filename(raw: &str) -> String {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = name.chars().filter(|c| !c.is_control()).take(255).collect();
    if name.is_empty() { "scan".into() } else { name }
}
