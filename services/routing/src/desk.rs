//! The counter desks: a walk-in's request in the unified queue follows its
//! ticket. When a desk calls the ticket, the request goes to the agent who
//! called it (nobody else takes it from the queue meanwhile, and the desk
//! opens its fiche); when the visit ends, the request is completed, unless
//! the agent already completed it with her own words. Idempotent: a
//! redelivered event changes nothing.

use guichet_platform::bus::{HandlerError, IncomingEvent};
use guichet_proto::convert::datetime;
use guichet_proto::events::v1::{TicketCalled, VisitEnded};
use prost::Message;

use crate::queue::{Queue, QueueError};

/// The durable consumer of the counter's events.
pub const CONSUMER: &str = "routing-counter-desks";

pub async fn handle(queue: &Queue, event: IncomingEvent) -> Result<(), HandlerError> {
    if event.nats_subject.ends_with(".ticket_called") {
        let e = TicketCalled::decode(event.body.as_ref())
            .map_err(|e| HandlerError::Permanent(format!("ticket_called body: {e}")))?;
        if e.intake_event_id.is_empty() || e.agent_id.is_empty() {
            return Ok(());
        }
        let item = item_of(queue, &e.intake_event_id).await?;
        match queue
            .desk_called(
                &item.id,
                &e.agent_id,
                e.call_time.as_ref().and_then(datetime),
            )
            .await
        {
            Ok(Some(_)) => {
                metrics::counter!("guichet_routing_desk_total", "step" => "called").increment(1);
                tracing::info!(work_item_id = %item.id, ticket_id = %e.ticket_id, "walk-in request handed to its desk");
                Ok(())
            }
            Ok(None) | Err(QueueError::Conflict(_)) => Ok(()),
            Err(e) => Err(transient(e)),
        }
    } else if event.nats_subject.ends_with(".visit_ended") {
        let e = VisitEnded::decode(event.body.as_ref())
            .map_err(|e| HandlerError::Permanent(format!("visit_ended body: {e}")))?;
        if e.intake_event_id.is_empty() {
            return Ok(());
        }
        let item = item_of(queue, &e.intake_event_id).await?;
        let outcome = match e.outcome.as_str() {
            "no_show" => format!(
                "Ticket {} : absent après {} rappel(s)",
                e.ticket_number, e.recalls
            ),
            _ => format!("Ticket {} : reçu au guichet {}", e.ticket_number, e.desk),
        };
        match queue
            .desk_ended(
                &item.id,
                &e.agent_id,
                &outcome,
                e.end_time.as_ref().and_then(datetime),
            )
            .await
        {
            Ok(Some(_)) => {
                metrics::counter!("guichet_routing_desk_total", "step" => "ended").increment(1);
                tracing::info!(work_item_id = %item.id, ticket_id = %e.ticket_id, "walk-in request completed with its visit");
                Ok(())
            }
            Ok(None) | Err(QueueError::Conflict(_)) => Ok(()),
            Err(e) => Err(transient(e)),
        }
    } else {
        Ok(())
    }
}

/// The ticket's request; not routed yet is retried (the intake consumer
/// is about to create it).
async fn item_of(
    queue: &Queue,
    intake_event_id: &str,
) -> Result<crate::db::entities::work_item::Model, HandlerError> {
    queue
        .by_intake_event(intake_event_id)
        .await
        .map_err(|e| HandlerError::Transient(format!("find work item: {e}")))?
        .ok_or_else(|| {
            HandlerError::Transient(format!(
                "no work item yet for intake event {intake_event_id}"
            ))
        })
}

fn transient(e: QueueError) -> HandlerError {
    HandlerError::Transient(format!("desk step: {e}"))
}
