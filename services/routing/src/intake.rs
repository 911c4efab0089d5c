//! Routing of intake events: identify the citizen, correlate to a dossier,
//! record the contact on the timeline, enqueue one work item.
//!
//! Each step is idempotent on the intake event id (dossier keys its writes
//! on it; the queue has a unique index on it), so a redelivery after a crash
//! between two steps completes the work without doing any step twice. The
//! bus acknowledges the message only after this returns `Ok`.

use bytes::Bytes;
use guichet_platform::auth::ServiceCredentials;
use guichet_platform::bus::{HandlerError, IncomingEvent};
use guichet_proto::convert::{datetime, timestamp};
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use guichet_proto::intake::v1::{Channel, IntakeEvent, intake_event};
use prost::Message;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel as GrpcChannel;

use crate::queue::{NewItem, Queue};

pub type DossierClient = DossierServiceClient<InterceptedService<GrpcChannel, ServiceCredentials>>;

/// Classify a dossier call's failure: retry what may pass later, dead-letter
/// what never will.
fn classify(step: &str, status: tonic::Status) -> HandlerError {
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated => HandlerError::Permanent(format!("{step}: {}", status.message())),
        _ => HandlerError::Transient(format!("{step}: {:?} {}", status.code(), status.message())),
    }
}

/// The French one-line summary an agent sees in the queue.
pub fn summary(event: &IntakeEvent) -> String {
    let text = if !event.subject.trim().is_empty() {
        event.subject.trim()
    } else {
        event.body.trim()
    };
    let text: String = text.chars().take(200).collect();
    match &event.details {
        Some(intake_event::Details::Counter(c)) => {
            if text.is_empty() {
                format!("Visite à l'accueil, ticket {}", c.ticket_number)
            } else {
                format!("Visite à l'accueil, ticket {} : {text}", c.ticket_number)
            }
        }
        _ => {
            let channel = match event.channel() {
                Channel::Telephony => "Appel",
                Channel::Email => "Courriel",
                Channel::Scan => "Courrier",
                Channel::Counter => "Visite",
                Channel::Unspecified => "Demande",
            };
            if text.is_empty() {
                channel.to_owned()
            } else {
                format!("{channel} : {text}")
            }
        }
    }
}

pub struct Router {
    pub queue: Queue,
    pub dossier: DossierClient,
    pub default_priority: i32,
}

impl Router {
    pub async fn handle(&self, incoming: IncomingEvent) -> Result<(), HandlerError> {
        let event = decode(&incoming.body)?;
        if event.id != incoming.id {
            return Err(HandlerError::Permanent(format!(
                "body id `{}` differs from ce-id `{}`",
                event.id, incoming.id
            )));
        }
        let channel = event.channel();
        if channel == Channel::Unspecified {
            return Err(HandlerError::Permanent("channel is unspecified".into()));
        }
        if self
            .queue
            .by_intake_event(&event.id)
            .await
            .map_err(|e| HandlerError::Transient(format!("queue lookup: {e}")))?
            .is_some()
        {
            tracing::debug!(intake_event_id = %event.id, "already routed");
            return Ok(());
        }
        let received_at = event
            .received_at
            .as_ref()
            .and_then(datetime)
            .ok_or_else(|| {
                HandlerError::Permanent("received_at is missing or out of range".into())
            })?;
        let summary = summary(&event);
        let mut dossier = self.dossier.clone();

        // 1. Identify the citizen.
        let citizen = dossier
            .resolve_citizen(dpb::ResolveCitizenRequest {
                hint: event.citizen.clone(),
                request_id: event.id.clone(),
                candidates_only: false,
            })
            .await
            .map_err(|s| classify("resolve citizen", s))?
            .into_inner()
            .citizen
            .ok_or_else(|| HandlerError::Transient("resolve citizen returned no citizen".into()))?;
        // 2-3. Classify and correlate: for now every request opens (or finds,
        // on redelivery) its dossier in the default triage process.
        let opened = dossier
            .open_dossier(dpb::OpenDossierRequest {
                citizen_id: citizen.id.clone(),
                process_id: String::new(),
                request_id: event.id.clone(),
            })
            .await
            .map_err(|s| classify("open dossier", s))?
            .into_inner();
        // 4. The contact on the timeline.
        dossier
            .record_contact(dpb::RecordContactRequest {
                dossier_id: opened.id.clone(),
                kind: dpb::EntryKind::Contact as i32,
                channel: channel as i32,
                occur_time: Some(timestamp(received_at)),
                summary: summary.clone(),
                actor: "system".into(),
                source_event_id: event.id.clone(),
            })
            .await
            .map_err(|s| classify("record contact", s))?;
        // 5. One work item in the unified queue.
        let (item, created) = self
            .queue
            .enqueue(NewItem {
                intake_event_id: event.id.clone(),
                channel: channel.slug().to_owned(),
                priority: self.default_priority,
                dossier_id: opened.id.clone(),
                dossier_reference: opened.reference.clone(),
                citizen_id: citizen.id.clone(),
                process_id: opened.process_id.clone(),
                summary,
                enter_time: received_at,
            })
            .await
            .map_err(|e| HandlerError::Transient(format!("enqueue: {e}")))?;
        if created {
            metrics::counter!("guichet_routing_enqueued_total", "channel" => channel.slug())
                .increment(1);
            tracing::info!(work_item_id = %item.id, intake_event_id = %event.id, dossier_id = %opened.id, "work item enqueued");
        }
        Ok(())
    }
}

fn decode(body: &Bytes) -> Result<IntakeEvent, HandlerError> {
    let event = IntakeEvent::decode(body.clone())
        .map_err(|e| HandlerError::Permanent(format!("undecodable IntakeEvent body: {e}")))?;
    if event.id.is_empty() {
        return Err(HandlerError::Permanent("IntakeEvent.id is empty".into()));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guichet_proto::intake::v1::CounterDetails;

    #[test]
    fn counter_summaries_name_the_ticket_and_reason() {
        let e = IntakeEvent {
            channel: Channel::Counter as i32,
            body: "renouveler mon passeport".into(),
            details: Some(intake_event::Details::Counter(CounterDetails {
                ticket_number: "G004".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            summary(&e),
            "Visite à l'accueil, ticket G004 : renouveler mon passeport"
        );
    }

    #[test]
    fn an_undecodable_body_is_a_permanent_failure() {
        let err = decode(&Bytes::from_static(b"\xff\xff\xff not protobuf")).unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)));
    }
}
