//! The scanned-mail ingress: paper letters become requests.
//!
//! Scans arrive in a watched folder (`<watch_dir>/inbox`, written by network
//! scanners; see [`watch`]) or through `UploadScan` (scanning stations that
//! push). Each file is identified by the SHA-256 of its content: a file
//! already seen is never read twice, across restarts too. A new file is read
//! ([`pipeline`]: PDF text layer or French OCR), the sender, references,
//! date and subject are extracted ([`extract`]), the original goes to the
//! object store, and one IntakeEvent is staged in the same transaction as
//! the file's record (the outbox) and published on `guichet.intake.scan`.
//! A folder file is moved to `done/` only once JetStream holds its event. A
//! file that cannot be read is recorded as quarantined with a reason (and
//! moved to `quarantine/`); the API lists and releases it.
//!
//! Logs and spans carry ids, sizes and reasons: never a name, an address or
//! the letter's text.

pub mod config;
pub mod db;
pub mod detect;
pub mod extract;
pub mod ocr;
pub mod pipeline;
pub mod quarantine;
pub mod watch;

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use guichet_platform::auth::{AuthInterceptor, Authenticator, Role, require};
use guichet_platform::bus::{OutgoingEvent, StreamKind, new_event_id};
use guichet_platform::config::ConfigError;
use guichet_platform::contact::{Email, Phone, clean_name};
use guichet_platform::db::is_unique_violation;
use guichet_platform::grpc::{
    GrpcServer, failed_precondition, internal, internal_err, invalid_argument, not_found,
    page_size, unavailable,
};
use guichet_platform::objects::{ObjectStore, sha256_hex};
use guichet_platform::outbox::{Outbox, Staged};
use guichet_platform::role::{BoxFuture, Handles, RoleService, RoleSpec};
use guichet_proto::convert::timestamp;
use guichet_proto::intake::v1::{
    AttachmentRef, Channel, CitizenHint, IntakeEvent, PostalAddress, ScanDetails, intake_event,
};
use guichet_proto::scan::v1 as pb;
use guichet_proto::scan::v1::scan_service_server::ScanServiceServer;
use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::db::entities::scan_file;
use crate::pipeline::Reading;
use crate::quarantine::{ReadError, Reason};

pub use config::Config;
pub use guichet_platform::Deps;

/// Who may push scans: scanning stations (service) and mail-room agents.
const UPLOADERS: &[Role] = &[Role::Service, Role::Agent, Role::Supervisor, Role::Admin];
/// Who may look at scans and the quarantine.
const READERS: &[Role] = &[Role::Agent, Role::Supervisor, Role::Admin, Role::Service];
/// Who may release a quarantined file (after fixing what stopped it).
const RELEASERS: &[Role] = &[Role::Supervisor, Role::Admin];

/// The recognised text carried in an intake event is cut beyond this, so
/// that an event always fits a NATS message (1 MiB by default) and can never
/// block the outbox; the full original stays in the object store.
const MAX_BODY_BYTES: usize = 256 * 1024;

pub const STATE_PUBLISHED: &str = "published";
pub const STATE_QUARANTINED: &str = "quarantined";

pub struct Service {
    api: ScanApi,
    auth: Arc<Authenticator>,
    watch_dir: std::path::PathBuf,
}

/// The scan ingress's core, shared by the folder watcher and the gRPC API.
#[derive(Clone)]
pub struct ScanApi {
    db: DatabaseConnection,
    outbox: Outbox,
    objects: ObjectStore,
    config: Arc<Config>,
    tools: Arc<ocr::Tools>,
    /// Bounds the files read at once (each OCR is a process).
    permits: Arc<Semaphore>,
}

/// The ingress-scan role's contract with the process that runs it.
pub struct Spec;

impl RoleSpec for Spec {
    const NAME: &'static str = "ingress-scan";
    const SECTION: &'static str = "scan";
    type Config = Config;
    type Migrator = db::Migrator;

    fn validate(config: &Config) -> Result<(), ConfigError> {
        config.validate()
    }

    fn database_url(config: &mut Config) -> &mut String {
        &mut config.database_url
    }

    async fn build(config: Config, deps: Deps) -> anyhow::Result<Box<dyn RoleService>> {
        Ok(Box::new(build(config, deps).await?))
    }
}

pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Service> {
    let db = deps
        .database::<db::Migrator>("scan", &config.database_url)
        .await?;
    deps.bus.ensure_stream(StreamKind::Intake).await?;
    let tools = Arc::new(ocr::Tools::new(&config));
    // Readiness includes the OCR tools: a pod without them must not take
    // scans (they would wait in the inbox, never lost, but never read).
    let probe = tools.clone();
    let status = Arc::new(tokio::sync::Mutex::new(None::<Result<(), String>>));
    deps.readiness.add_check("scan ocr tools", move || {
        let probe = probe.clone();
        let status = status.clone();
        async move {
            let mut s = status.lock().await;
            if !matches!(*s, Some(Ok(()))) {
                *s = Some(probe.check().await);
            }
            s.clone().unwrap_or(Ok(()))
        }
    });
    let watch_dir = config.watch_dir.clone();
    Ok(Service {
        api: ScanApi {
            outbox: Outbox::new(db.clone(), deps.bus),
            db,
            objects: deps.objects,
            permits: Arc::new(Semaphore::new(config.concurrency)),
            config: Arc::new(config),
            tools,
        },
        auth: deps.auth,
        watch_dir,
    })
}

impl RoleService for Service {
    fn register(&self, server: &mut GrpcServer) {
        server.add(ScanServiceServer::with_interceptor(
            self.api.clone(),
            AuthInterceptor::new(self.auth.clone()),
        ));
    }

    fn handles(&self, handles: &mut Handles) {
        handles.insert(self.api.clone());
    }

    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        guichet_platform::role::boxed(Service::run(*self, shutdown))
    }
}

impl Service {
    /// Watch the folder and relay staged intake events, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let relay = tokio::spawn(self.api.outbox.clone().run(shutdown.clone()));
        let watched = watch::run(self.api.clone(), self.watch_dir, shutdown).await;
        let _ = relay.await;
        watched
    }

    pub fn api(&self) -> &ScanApi {
        &self.api
    }
}

/// Where a file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Folder,
    Upload,
}

impl Source {
    fn as_str(self) -> &'static str {
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
    fn status(&self, context: &str) -> Status {
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
        Staged {
            nats_subject: self.outbox.bus().subject("intake.scan"),
            event: OutgoingEvent {
                id: event_id.to_owned(),
                ty: "guichet.intake.v1.intake_event".into(),
                subject: format!("scanFiles/{}", model.id),
                time: now,
                body: Bytes::from(event.encode_to_vec()),
            },
        }
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
    pub async fn release(&self, id: &str, without_text: bool) -> Result<scan_file::Model, Status> {
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
            .map_err(|e| e.status("publish intake event"))?;
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
fn bounded(mut text: String, max: usize) -> String {
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
fn clean_filename(raw: &str) -> String {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = name.chars().filter(|c| !c.is_control()).take(255).collect();
    if name.is_empty() { "scan".into() } else { name }
}

fn scan_file_pb(m: &scan_file::Model) -> pb::ScanFile {
    let state = match m.state.as_str() {
        STATE_PUBLISHED => pb::ScanState::Published,
        STATE_QUARANTINED => pb::ScanState::Quarantined,
        _ => pb::ScanState::Unspecified,
    };
    pb::ScanFile {
        name: format!("scanFiles/{}", m.id),
        filename: m.filename.clone(),
        media_type: m.media_type.clone(),
        size_bytes: m.size_bytes as u64,
        sha256: m.sha256.clone(),
        source: match m.source.as_str() {
            "folder" => pb::ScanSource::Folder,
            "upload" => pb::ScanSource::Upload,
            _ => pb::ScanSource::Unspecified,
        } as i32,
        batch_id: m.batch_id.clone(),
        state: state as i32,
        quarantine_reason: m
            .reason
            .as_deref()
            .and_then(Reason::parse)
            .map(|r| r.to_proto() as i32)
            .unwrap_or(0),
        quarantine_detail: m.detail.clone(),
        intake_event_id: m.intake_event_id.clone().unwrap_or_default(),
        page_count: m.page_count.max(0) as u32,
        ocr_confidence: m.ocr_confidence as f32,
        received_at: Some(timestamp(m.received_at)),
        update_time: Some(timestamp(m.updated_at)),
        release_count: m.release_count.max(0) as u32,
    }
}

fn parse_name(name: &str) -> Result<&str, Status> {
    name.strip_prefix("scanFiles/")
        .filter(|id| !id.is_empty() && id.len() <= 64 && !id.contains('/'))
        .ok_or_else(|| invalid_argument("name", "must be `scanFiles/{id}`"))
}

/// `state = QUARANTINED AND reason = OCR_TIMEOUT`.
fn parse_filter(filter: &str) -> Result<(Option<&'static str>, Option<Reason>), Status> {
    let (mut state, mut reason) = (None, None);
    if filter.trim().is_empty() {
        return Ok((state, reason));
    }
    for clause in filter.split(" AND ").flat_map(|c| c.split(" and ")) {
        let (key, value) = clause
            .split_once('=')
            .ok_or_else(|| invalid_argument("filter", "clauses are `key = VALUE` joined by AND"))?;
        let value = value.trim().trim_matches('"');
        match key.trim() {
            "state" => {
                state = Some(match value.trim_start_matches("SCAN_STATE_") {
                    "PUBLISHED" => STATE_PUBLISHED,
                    "QUARANTINED" => STATE_QUARANTINED,
                    _ => {
                        return Err(invalid_argument(
                            "filter",
                            "state is PUBLISHED or QUARANTINED",
                        ));
                    }
                })
            }
            "reason" => {
                reason = Some(Reason::parse(value).ok_or_else(|| {
                    invalid_argument("filter", format!("`{value}` is not a quarantine reason"))
                })?)
            }
            other => {
                return Err(invalid_argument(
                    "filter",
                    format!("`{other}` cannot be filtered on (state, reason)"),
                ));
            }
        }
    }
    Ok((state, reason))
}

type UploadStream = Streaming<pb::UploadScanRequest>;

#[tonic::async_trait]
impl pb::scan_service_server::ScanService for ScanApi {
    #[tracing::instrument(skip_all)]
    async fn upload_scan(
        &self,
        request: Request<UploadStream>,
    ) -> Result<Response<pb::ScanFile>, Status> {
        require(&request, UPLOADERS)?;
        let mut stream: Pin<Box<UploadStream>> = Box::pin(request.into_inner());
        let first = stream.next().await.ok_or_else(|| {
            invalid_argument("metadata", "the first message carries the metadata")
        })??;
        let Some(pb::upload_scan_request::Part::Metadata(meta)) = first.part else {
            return Err(invalid_argument(
                "metadata",
                "the first message carries the metadata",
            ));
        };
        if meta.batch_id.len() > 128 {
            return Err(invalid_argument(
                "metadata.batch_id",
                "must be at most 128 characters",
            ));
        }
        let mut bytes = Vec::new();
        while let Some(msg) = stream.next().await {
            match msg?.part {
                Some(pb::upload_scan_request::Part::Chunk(c)) => {
                    if (bytes.len() + c.len()) as u64 > self.config.max_file_bytes {
                        return Err(invalid_argument(
                            "chunk",
                            format!(
                                "the file is larger than the limit of {} bytes (scan.max_file_bytes)",
                                self.config.max_file_bytes
                            ),
                        ));
                    }
                    bytes.extend_from_slice(&c);
                }
                _ => {
                    return Err(invalid_argument(
                        "metadata",
                        "only the first message carries the metadata",
                    ));
                }
            }
        }
        let model = self
            .accept(Incoming {
                filename: meta.filename,
                bytes,
                source: Source::Upload,
                batch_id: meta.batch_id,
            })
            .await
            .map_err(|e| e.status("accept scan"))?;
        Ok(Response::new(scan_file_pb(&model)))
    }

    async fn get_scan_file(
        &self,
        request: Request<pb::GetScanFileRequest>,
    ) -> Result<Response<pb::ScanFile>, Status> {
        require(&request, READERS)?;
        let req = request.into_inner();
        let id = parse_name(&req.name)?;
        let m = scan_file::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(internal_err("get scan file"))?
            .ok_or_else(|| not_found("scanFiles", &req.name))?;
        Ok(Response::new(scan_file_pb(&m)))
    }

    async fn list_scan_files(
        &self,
        request: Request<pb::ListScanFilesRequest>,
    ) -> Result<Response<pb::ListScanFilesResponse>, Status> {
        require(&request, READERS)?;
        let req = request.into_inner();
        let limit = page_size(req.page_size, 50, 500)?;
        let (state, reason) = parse_filter(&req.filter)?;
        let mut q = scan_file::Entity::find();
        if let Some(s) = state {
            q = q.filter(scan_file::Column::State.eq(s));
        }
        if let Some(r) = reason {
            q = q.filter(scan_file::Column::Reason.eq(r.as_str()));
        }
        if !req.page_token.is_empty() {
            if req.page_token.len() > 64 {
                return Err(invalid_argument(
                    "page_token",
                    "is not a token this API issued",
                ));
            }
            q = q.filter(scan_file::Column::Id.lt(req.page_token.as_str()));
        }
        let rows = q
            .order_by_desc(scan_file::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(internal_err("list scan files"))?;
        let next_page_token = if rows.len() as u64 == limit {
            rows.last().map(|m| m.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListScanFilesResponse {
            scan_files: rows.iter().map(scan_file_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn release_scan_file(
        &self,
        request: Request<pb::ReleaseScanFileRequest>,
    ) -> Result<Response<pb::ScanFile>, Status> {
        let caller = require(&request, RELEASERS)?;
        let req = request.into_inner();
        let id = parse_name(&req.name)?;
        tracing::info!(scan_file = id, by = %caller.subject, without_text = req.without_text, "release requested");
        let m = self.release(id, req.without_text).await?;
        Ok(Response::new(scan_file_pb(&m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quarantine::Quarantine;

    #[test]
    fn scan_filters_parse_state_and_reason() {
        assert_eq!(
            parse_filter("state = QUARANTINED AND reason = OCR_TIMEOUT").unwrap(),
            (Some(STATE_QUARANTINED), Some(Reason::OcrTimeout))
        );
        assert!(parse_filter("colour = red").is_err());
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        let long = "é".repeat(1000);
        let cut = bounded(long.clone(), 101);
        assert!(cut.len() <= 101 && cut.ends_with("[…]"), "{cut}");
        assert_eq!(bounded("court".into(), 101), "court");
    }

    #[test]
    fn scan_quarantine_is_reported_without_content() {
        let q = Quarantine::new(Reason::NoText, "no text was recognised");
        assert_eq!(Reason::parse(q.reason.as_str()), Some(Reason::NoText));
    }
}
