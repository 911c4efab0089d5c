//! The counter's domain core: issuing a ticket (its number in the day's
//! queue, its visit staged as an IntakeEvent in the same transaction). The
//! desk's steps on a ticket live in [`crate::visits`], appointment check-in
//! in [`crate::checkin`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use guichet_platform::bus::new_event_id;
use guichet_platform::clock::SharedClock;
use guichet_platform::db::{is_unique_violation, next_counter_value};
use guichet_platform::outbox::Outbox;
use guichet_proto::convert::timestamp;
use guichet_proto::intake::v1::{Channel, CounterDetails, IntakeEvent, intake_event};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set,
    TransactionTrait,
};
use tokio_util::sync::CancellationToken;

use crate::checkin;
use crate::config::Config;
use crate::db::entities::ticket;
use crate::error::{Error, internal, internal_err, unavailable};

/// What a ticket is issued from (kiosk, agent or appointment check-in).
pub(crate) struct NewTicket {
    pub citizen: Option<guichet_proto::intake::v1::CitizenHint>,
    pub reason: String,
    pub service: String,
    pub letter: String,
    pub site: String,
    pub request_id: Option<String>,
    pub priority: String,
    /// Minutes the ticket is ranked ahead of its arrival (or, for an
    /// appointment in its window, of the appointment time).
    pub rank_offset_minutes: u32,
    pub issued_by: String,
    pub appointment: Option<checkin::Appointment>,
}

#[derive(Clone)]
pub struct CounterApi {
    pub(crate) db: DatabaseConnection,
    pub(crate) outbox: Outbox,
    pub(crate) config: Arc<Config>,
    pub(crate) clock: SharedClock,
    /// Cancelled at shutdown: ends the open board streams, so draining
    /// does not wait for the screens to disconnect.
    pub(crate) stop: CancellationToken,
    /// The appointment role, for check-in; `None` when not configured.
    pub(crate) appointments: Option<checkin::AppointmentClient>,
}

/// The Paris calendar day of `t` (ticket numbers restart at local midnight).
pub fn paris_day(t: DateTime<Utc>) -> String {
    guichet_platform::calendar::to_paris(t)
        .date()
        .format("%Y-%m-%d")
        .to_string()
}

/// A ticket page's secret: 32 URL-safe random characters (192 bits).
fn public_token() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub(crate) fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
    u32::try_from((to - from).num_seconds().max(0)).unwrap_or(u32::MAX)
}

impl CounterApi {
    /// Record a ticket and stage its visit as an IntakeEvent in the same
    /// transaction; answer once JetStream has the event. Idempotent on
    /// `request_id`.
    pub(crate) async fn issue(&self, n: NewTicket) -> Result<ticket::Model, Error> {
        // A retry of an accepted request: make sure what is staged is
        // published, and return the same ticket.
        if let Some(rid) = &n.request_id
            && let Some(t) = self.ticket_by_request(rid).await?
        {
            self.outbox
                .flush()
                .await
                .map_err(|e| unavailable("publish intake event", e))?;
            return Ok(t);
        }
        let NewTicket {
            citizen,
            reason,
            service,
            letter,
            site,
            request_id,
            priority,
            rank_offset_minutes,
            issued_by,
            appointment,
        } = n;
        let (service, site, priority) = (service.as_str(), site.as_str(), priority.as_str());

        let now = self.clock.now();
        let day = paris_day(now);
        let id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("ticket_id", id.as_str());
        let event_id = new_event_id();
        let txn = self
            .db
            .begin()
            .await
            .map_err(internal_err("issue ticket"))?;
        let seq = next_counter_value(&txn, "ticket_counters", &format!("{site}|{service}|{day}"))
            .await
            .map_err(internal_err("issue ticket"))?;
        let number = format!("{letter}{seq:03}");
        let event = IntakeEvent {
            id: event_id.clone(),
            channel: Channel::Counter as i32,
            received_at: Some(timestamp(now)),
            citizen,
            subject: String::new(),
            body: reason,
            attachments: vec![],
            quoted_reference: String::new(),
            details: Some(intake_event::Details::Counter(CounterDetails {
                ticket_id: id.clone(),
                ticket_number: number.clone(),
                service: service.to_owned(),
                issued_by,
                site: site.to_owned(),
                priority: priority.to_owned(),
                booking_id: appointment
                    .as_ref()
                    .map(|a| a.booking_id.clone())
                    .unwrap_or_default(),
                booking_reference: appointment
                    .as_ref()
                    .map(|a| a.reference.clone())
                    .unwrap_or_default(),
                dossier_id: appointment
                    .as_ref()
                    .map(|a| a.dossier_id.clone())
                    .unwrap_or_default(),
            })),
        };
        let res = ticket::ActiveModel {
            id: Set(id.clone()),
            request_id: Set(request_id.clone()),
            number: Set(number),
            service: Set(service.to_owned()),
            site: Set(site.to_owned()),
            day: Set(day),
            intake_event_id: Set(event_id.clone()),
            issued_at: Set(now),
            priority: Set(priority.to_owned()),
            status: Set("waiting".to_owned()),
            waiting_since: Set(now),
            rank_at: Set(match &appointment {
                Some(a) if !a.late => {
                    a.start - chrono::Duration::minutes(i64::from(rank_offset_minutes))
                }
                _ => now - chrono::Duration::minutes(i64::from(rank_offset_minutes)),
            }),
            desk: Set(None),
            call_time: Set(None),
            start_time: Set(None),
            finish_time: Set(None),
            no_show_time: Set(None),
            recalls: Set(0),
            transferred_from: Set(None),
            booking_id: Set(appointment.as_ref().map(|a| a.booking_id.clone())),
            appointment_at: Set(appointment.as_ref().map(|a| a.start)),
            public_token: Set(Some(public_token())),
            agent_id: Set(None),
        }
        .insert(&txn)
        .await;
        let t = match res {
            Ok(t) => t,
            Err(e) if is_unique_violation(&e) && request_id.is_some() => {
                // The same request raced us: answer with its ticket.
                drop(txn);
                let t = self
                    .ticket_by_request(request_id.as_deref().unwrap_or_default())
                    .await?
                    .ok_or_else(|| internal("issue ticket", e))?;
                return Ok(t);
            }
            Err(e) => return Err(internal("issue ticket", e)),
        };
        let staged = self
            .outbox
            .intake_event(&event, format!("tickets/{}", t.id), now);
        self.outbox
            .stage(&txn, &staged)
            .await
            .map_err(internal_err("issue ticket"))?;
        txn.commit().await.map_err(internal_err("issue ticket"))?;
        // Answer only after JetStream has the event: the visit is accepted.
        self.outbox
            .publish_now(&staged)
            .await
            .map_err(|e| unavailable("publish intake event", e))?;
        metrics::counter!("guichet_counter_tickets_issued_total", "service" => service.to_owned())
            .increment(1);
        tracing::info!(ticket_id = %t.id, service, site, "ticket issued");
        Ok(t)
    }

    pub(crate) async fn ticket_by_request(
        &self,
        rid: &str,
    ) -> Result<Option<ticket::Model>, Error> {
        ticket::Entity::find()
            .filter(ticket::Column::RequestId.eq(rid))
            .one(&self.db)
            .await
            .map_err(internal_err("find ticket"))
    }
}
