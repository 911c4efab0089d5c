//! The transactional outbox: an event is staged in the same database
//! transaction as the change it announces, then published to JetStream by a
//! relay and deleted once JetStream has acknowledged it.
//!
//! A crash between commit and publish therefore delays an event, never loses
//! it; a crash between publish and delete publishes it again with the same
//! `Nats-Msg-Id`, which JetStream drops inside its duplicate window and
//! consumers ignore outside it (they are idempotent on event ids). The trace
//! context of the staging request is stored with the row, so a relayed
//! event stays in its request's trace.
//!
//! Every role that publishes owns an `outbox` table in its own database
//! ([`create_table`] in its migrations).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::sea_query::{Alias, ColumnDef, Expr, Index, Query, Table, TableCreateStatement};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, ExprTrait, TryGetable};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bus::{Bus, OutgoingEvent, new_event_id};

fn a(s: &str) -> Alias {
    Alias::new(s)
}

/// The columns a relay reads, in the order `stage` writes them.
const COLUMNS: [&str; 7] = [
    "id",
    "nats_subject",
    "ce_type",
    "ce_subject",
    "ce_time",
    "body",
    "traceparent",
];

/// The `outbox` table, for a role's migration.
pub fn create_table() -> TableCreateStatement {
    Table::create()
        .table(a("outbox"))
        .if_not_exists()
        .col(ColumnDef::new(a("id")).string().not_null().primary_key())
        .col(ColumnDef::new(a("nats_subject")).string().not_null())
        .col(ColumnDef::new(a("ce_type")).string().not_null())
        .col(ColumnDef::new(a("ce_subject")).string().not_null())
        .col(
            ColumnDef::new(a("ce_time"))
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(ColumnDef::new(a("body")).binary().not_null())
        .col(ColumnDef::new(a("traceparent")).string().not_null())
        .col(
            ColumnDef::new(a("created_at"))
                .timestamp_with_time_zone()
                .not_null(),
        )
        .to_owned()
}

/// Index to relay in staging order.
pub fn create_index() -> sea_orm::sea_query::IndexCreateStatement {
    Index::create()
        .name("outbox_created_at")
        .table(a("outbox"))
        .col(a("created_at"))
        .if_not_exists()
        .to_owned()
}

/// An event staged in a transaction, to publish once it has committed.
#[derive(Debug, Clone)]
pub struct Staged {
    pub nats_subject: String,
    pub event: OutgoingEvent,
}

/// Stages events and relays them to JetStream.
#[derive(Clone)]
pub struct Outbox {
    db: DatabaseConnection,
    bus: Bus,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(db: DatabaseConnection, bus: Bus) -> Outbox {
        Outbox {
            db,
            bus,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// A domain event on `<prefix>.events.<service>.<ty>`, ce-type
    /// `guichet.<service>.v1.<ty>`.
    pub fn domain_event<M: prost::Message>(
        &self,
        service: &str,
        ty: &str,
        subject: String,
        msg: &M,
    ) -> Staged {
        Staged {
            nats_subject: self.bus.event_subject(service, ty),
            event: OutgoingEvent {
                id: new_event_id(),
                ty: format!("guichet.{service}.v1.{ty}"),
                subject,
                time: Utc::now(),
                body: Bytes::from(msg.encode_to_vec()),
            },
        }
    }

    /// An intake event on `<prefix>.intake.<channel>`, its id the event's
    /// own (routing and JetStream dedupe on it); `subject` names the
    /// channel's record (`tickets/<id>`).
    pub fn intake_event(
        &self,
        event: &guichet_proto::intake::v1::IntakeEvent,
        subject: String,
        time: DateTime<Utc>,
    ) -> Staged {
        Staged {
            nats_subject: self
                .bus
                .subject(&format!("intake.{}", event.channel().slug())),
            event: OutgoingEvent {
                id: event.id.clone(),
                ty: "guichet.intake.v1.intake_event".into(),
                subject,
                time,
                body: Bytes::from(event.encode_to_vec()),
            },
        }
    }

    /// A request to the notification role on `<prefix>.notify.<topic>`
    /// (`sms`, `email`, `appointment`), its id the request's own.
    pub fn notification_request(
        &self,
        topic: &str,
        request: &guichet_proto::notification::v1::NotificationRequest,
        subject: String,
        time: DateTime<Utc>,
    ) -> Staged {
        Staged {
            nats_subject: self.bus.subject(&format!("notify.{topic}")),
            event: OutgoingEvent {
                id: request.id.clone(),
                ty: "guichet.notification.v1.notification_request".into(),
                subject,
                time,
                body: Bytes::from(request.encode_to_vec()),
            },
        }
    }

    /// Write `staged` into the outbox inside the caller's transaction.
    pub async fn stage(&self, conn: &impl ConnectionTrait, staged: &Staged) -> Result<(), DbErr> {
        let mut headers = async_nats::HeaderMap::new();
        crate::telemetry::inject_nats(&mut headers);
        let traceparent = headers
            .get("traceparent")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let e = &staged.event;
        let insert = Query::insert()
            .into_table(a("outbox"))
            .columns(COLUMNS.iter().copied().chain(["created_at"]).map(a))
            .values_panic([
                e.id.clone().into(),
                staged.nats_subject.clone().into(),
                e.ty.clone().into(),
                e.subject.clone().into(),
                e.time.into(),
                e.body.to_vec().into(),
                traceparent.into(),
                Utc::now().into(),
            ])
            .to_owned();
        conn.execute(&insert).await?;
        Ok(())
    }

    /// After the staging transaction committed: publish now (the caller
    /// waits for JetStream) and remove the row. On failure the relay
    /// publishes it later.
    pub async fn publish_now(&self, staged: &Staged) -> Result<(), crate::bus::BusError> {
        self.bus
            .publish(staged.nats_subject.clone(), &staged.event)
            .await?;
        if let Err(error) = self.delete_many(vec![staged.event.id.clone()]).await {
            tracing::warn!(%error, "published event left in the outbox, the relay will retry it");
        }
        Ok(())
    }

    /// After the staging transaction committed: let the relay publish soon.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Remove published rows, a batch in one statement (one commit).
    async fn delete_many(&self, ids: Vec<String>) -> Result<(), DbErr> {
        if ids.is_empty() {
            return Ok(());
        }
        let del = Query::delete()
            .from_table(a("outbox"))
            .and_where(Expr::col(a("id")).is_in(ids))
            .to_owned();
        self.db.execute(&del).await?;
        Ok(())
    }

    /// Publish everything pending, oldest first; returns how many. Rows are
    /// published one after the other (in order) and removed a batch at a
    /// time: a crash in between publishes them again with the same ids,
    /// which JetStream's duplicate window and idempotent consumers absorb.
    pub async fn flush(&self) -> Result<usize, String> {
        let mut published = 0;
        loop {
            let select = Query::select()
                .columns(COLUMNS.map(a))
                .from(a("outbox"))
                .order_by(a("created_at"), sea_orm::Order::Asc)
                .order_by(a("id"), sea_orm::Order::Asc)
                .limit(100)
                .to_owned();
            let rows = self
                .db
                .query_all(&select)
                .await
                .map_err(|e| e.to_string())?;
            if rows.is_empty() {
                return Ok(published);
            }
            let mut done: Vec<String> = Vec::with_capacity(rows.len());
            let outcome = self.publish_rows(&rows, &mut done).await;
            published += done.len();
            self.delete_many(done).await.map_err(|e| e.to_string())?;
            outcome?;
        }
    }

    /// Publish `rows` in order, recording each published id in `done`;
    /// stops at the first failure.
    async fn publish_rows(
        &self,
        rows: &[sea_orm::QueryResult],
        done: &mut Vec<String>,
    ) -> Result<(), String> {
        for row in rows {
            let get = |c: &str| -> Result<String, String> {
                String::try_get(row, "", c).map_err(|e| format!("{e:?}"))
            };
            let id = get("id")?;
            let nats_subject = get("nats_subject")?;
            let traceparent = get("traceparent")?;
            let time =
                DateTime::<Utc>::try_get(row, "", "ce_time").map_err(|e| format!("{e:?}"))?;
            let body = Vec::<u8>::try_get(row, "", "body").map_err(|e| format!("{e:?}"))?;
            let event = OutgoingEvent {
                id: id.clone(),
                ty: get("ce_type")?,
                subject: get("ce_subject")?,
                time,
                body: Bytes::from(body),
            };
            let span = tracing::info_span!("outbox.relay", messaging.message.id = %id);
            if !traceparent.is_empty() {
                let mut h = async_nats::HeaderMap::new();
                h.insert("traceparent", traceparent.as_str());
                crate::telemetry::extract_nats(&h, &span);
            }
            self.bus
                .publish(nats_subject, &event)
                .instrument(span)
                .await
                .map_err(|e| e.to_string())?;
            done.push(id);
        }
        Ok(())
    }

    /// Relay until `shutdown`: on every notification, and every second for
    /// rows staged by a process that died before publishing them.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            match self.flush().await {
                Ok(n) => {
                    failures = 0;
                    if n > 0 {
                        tracing::debug!(published = n, "outbox relayed");
                    }
                }
                Err(error) => {
                    failures += 1;
                    metrics::counter!("guichet_outbox_relay_failures_total").increment(1);
                    tracing::warn!(%error, "outbox relay failed, will retry");
                }
            }
            let pause = Duration::from_secs(u64::from(Ord::clamp(failures, 1, 10)));
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Last chance to publish what is committed.
                    let _ = tokio::time::timeout(Duration::from_secs(2), self.flush()).await;
                    return;
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
