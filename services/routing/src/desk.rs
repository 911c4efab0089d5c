//! The counter desks: a walk-in's request in the unified queue follows its
//! ticket. When a desk calls the ticket, the request goes to the agent who
//! called it (nobody else takes it from the queue meanwhile, and the desk
//! opens its fiche); when the visit ends, the request is completed, unless
//! the agent already completed it with her own words. The counter's events
//! and the ticket's intake event travel on two streams: a step that comes
//! before its request is kept (`desk_steps`) and applied when the request
//! is enqueued. Idempotent: a redelivered event changes nothing.

use chrono::{DateTime, Utc};
use guichet_platform::bus::{HandlerError, IncomingEvent};
use guichet_proto::convert::datetime;
use guichet_proto::events::v1::{TicketCalled, VisitEnded};
use prost::Message;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::db::entities::desk_step;
use crate::queue::{Queue, QueueError};

/// The durable consumer of the counter's events.
pub const CONSUMER: &str = "routing-counter-desks";

/// One desk step of a ticket's request.
struct Step {
    event_id: String,
    intake_event_id: String,
    called: bool,
    agent_id: String,
    outcome: String,
    at: Option<DateTime<Utc>>,
}

pub async fn handle(queue: &Queue, event: IncomingEvent) -> Result<(), HandlerError> {
    let step = if event.nats_subject.ends_with(".ticket_called") {
        let e = TicketCalled::decode(event.body.as_ref())
            .map_err(|e| HandlerError::Permanent(format!("ticket_called body: {e}")))?;
        if e.agent_id.is_empty() {
            return Ok(());
        }
        Step {
            event_id: event.id.clone(),
            intake_event_id: e.intake_event_id,
            called: true,
            agent_id: e.agent_id,
            outcome: String::new(),
            at: e.call_time.as_ref().and_then(datetime),
        }
    } else if event.nats_subject.ends_with(".visit_ended") {
        let e = VisitEnded::decode(event.body.as_ref())
            .map_err(|e| HandlerError::Permanent(format!("visit_ended body: {e}")))?;
        let outcome = match e.outcome.as_str() {
            "no_show" => format!(
                "Ticket {} : absent après {} rappel(s)",
                e.ticket_number, e.recalls
            ),
            _ => format!("Ticket {} : reçu au guichet {}", e.ticket_number, e.desk),
        };
        Step {
            event_id: event.id.clone(),
            intake_event_id: e.intake_event_id,
            called: false,
            agent_id: e.agent_id,
            outcome,
            at: e.end_time.as_ref().and_then(datetime),
        }
    } else {
        return Ok(());
    };
    if step.intake_event_id.is_empty() {
        return Ok(());
    }
    match item_of(queue, &step.intake_event_id).await? {
        Some(item) => apply(queue, &item.id, &step).await,
        None => {
            // Not routed yet: kept, then applied by whichever side comes
            // second (the intake handler applies the kept steps after
            // enqueueing; looking again here closes the race).
            keep(queue, &step).await?;
            apply_kept(queue, &step.intake_event_id).await
        }
    }
}

async fn item_of(
    queue: &Queue,
    intake_event_id: &str,
) -> Result<Option<crate::db::entities::work_item::Model>, HandlerError> {
    queue
        .by_intake_event(intake_event_id)
        .await
        .map_err(|e| HandlerError::Transient(format!("find work item: {e}")))
}

async fn keep(queue: &Queue, s: &Step) -> Result<(), HandlerError> {
    desk_step::Entity::insert(desk_step::ActiveModel {
        event_id: Set(s.event_id.clone()),
        intake_event_id: Set(s.intake_event_id.clone()),
        kind: Set(if s.called { "called" } else { "ended" }.to_owned()),
        agent_id: Set(s.agent_id.clone()),
        outcome: Set(s.outcome.clone()),
        at: Set(s.at.unwrap_or_else(|| queue.now())),
    })
    .on_conflict(
        OnConflict::column(desk_step::Column::EventId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(queue.db())
    .await
    .map(|_| ())
    .map_err(|e| HandlerError::Transient(format!("keep desk step: {e}")))
}

/// Apply, in their order, the desk steps kept for the request of
/// `intake_event_id`, once it is enqueued; each is then forgotten.
pub async fn apply_kept(queue: &Queue, intake_event_id: &str) -> Result<(), HandlerError> {
    let Some(item) = item_of(queue, intake_event_id).await? else {
        return Ok(());
    };
    let kept = desk_step::Entity::find()
        .filter(desk_step::Column::IntakeEventId.eq(intake_event_id))
        .order_by_asc(desk_step::Column::At)
        .order_by_asc(desk_step::Column::Kind)
        .all(queue.db())
        .await
        .map_err(|e| HandlerError::Transient(format!("read desk steps: {e}")))?;
    for k in kept {
        let step = Step {
            called: k.kind == "called",
            at: Some(k.at),
            event_id: k.event_id,
            intake_event_id: k.intake_event_id,
            agent_id: k.agent_id,
            outcome: k.outcome,
        };
        apply(queue, &item.id, &step).await?;
        desk_step::Entity::delete_by_id(step.event_id.clone())
            .exec(queue.db())
            .await
            .map_err(|e| HandlerError::Transient(format!("forget desk step: {e}")))?;
    }
    Ok(())
}

async fn apply(queue: &Queue, item_id: &str, s: &Step) -> Result<(), HandlerError> {
    let res = if s.called {
        queue.desk_called(item_id, &s.agent_id, s.at).await
    } else {
        queue
            .desk_ended(item_id, &s.agent_id, &s.outcome, s.at)
            .await
    };
    match res {
        Ok(Some(_)) => {
            let step = if s.called { "called" } else { "ended" };
            metrics::counter!("guichet_routing_desk_total", "step" => step).increment(1);
            tracing::info!(work_item_id = %item_id, step, "walk-in request follows its desk");
            Ok(())
        }
        Ok(None) | Err(QueueError::Conflict(_)) => Ok(()),
        Err(e) => Err(HandlerError::Transient(format!("desk step: {e}"))),
    }
}
