//! What the role consumes from the bus:
//!
//! * `guichet.notify.>` (stream NOTIFY, durable `<consumer>`): delivery
//!   requests, recorded in the outbox and acknowledged only after commit.
//! * `guichet.events.dossier.reminder_due` (stream EVENTS, durable
//!   `<consumer>-reminders`): a process timer asks to remind the citizen;
//!   the dossier and the citizen's preferred contact are read from the
//!   dossier role (GetDossier, GetCitizen, with service credentials) and a
//!   request `reminder-<event id>` is queued with the timer's template.
//! * `guichet.events.email.>` (durable `<consumer>-bounces`):
//!   `address_undeliverable` puts an address on the suppression list,
//!   `address_deliverable` (or `cleared`) lifts it.

use std::sync::Arc;

use async_trait::async_trait;
use guichet_platform::auth::ServiceCredentials;
use guichet_platform::bus::{HandlerError, IncomingEvent};
use guichet_platform::contact::Email;
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use guichet_proto::dossier::v1::{GetCitizenRequest, GetDossierRequest};
use guichet_proto::events::v1::ReminderDue;
use guichet_proto::intake::v1::Channel as IntakeChannel;
use guichet_proto::notification::v1::{
    AddressUndeliverable, NotificationRequest, notification_request,
};
use prost::Message;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::core::{Accepted, Core};

/// Who to write to about a dossier, and what the templates may say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DossierContact {
    pub reference: String,
    pub process_id: String,
    pub process_title: String,
    pub state_title: String,
    pub given_name: String,
    pub family_name: String,
    pub target: Option<notification_request::Target>,
}

#[async_trait]
pub trait DossierDirectory: Send + Sync {
    async fn contact(&self, dossier_id: &str, citizen_id: &str) -> Result<DossierContact, Status>;
}

pub struct GrpcDirectory {
    pub client: DossierServiceClient<InterceptedService<Channel, ServiceCredentials>>,
}

#[async_trait]
impl DossierDirectory for GrpcDirectory {
    async fn contact(&self, dossier_id: &str, citizen_id: &str) -> Result<DossierContact, Status> {
        let mut c = self.client.clone();
        let d = c
            .get_dossier(GetDossierRequest {
                id: dossier_id.to_owned(),
            })
            .await?
            .into_inner();
        let mut id = if d.citizen_id.is_empty() {
            citizen_id.to_owned()
        } else {
            d.citizen_id.clone()
        };
        // Follow merges (bounded) to the surviving record.
        let mut citizen = None;
        for _ in 0..5 {
            let p = c
                .get_citizen(GetCitizenRequest { id: id.clone() })
                .await?
                .into_inner();
            if p.merged_into.is_empty() {
                citizen = Some(p);
                break;
            }
            id = p.merged_into.clone();
        }
        let citizen =
            citizen.ok_or_else(|| Status::failed_precondition("citizen merge chain too long"))?;
        let phone = citizen.phones.first().cloned();
        let email = citizen.emails.first().cloned();
        let prefers_email = citizen.preferred_channel() == IntakeChannel::Email;
        let target = match (prefers_email, phone, email) {
            (true, _, Some(e)) => Some(notification_request::Target::Email(e)),
            (_, Some(p), _) => Some(notification_request::Target::Phone(p)),
            (_, None, Some(e)) => Some(notification_request::Target::Email(e)),
            (_, None, None) => None,
        };
        Ok(DossierContact {
            reference: d.reference,
            process_id: d.process_id,
            process_title: d.process_title,
            state_title: d.state_title,
            given_name: citizen.given_name,
            family_name: citizen.family_name,
            target,
        })
    }
}

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

/// A delivery request from NOTIFY.
pub async fn on_request(core: Core, event: IncomingEvent) -> Result<(), HandlerError> {
    let mut req = NotificationRequest::decode(event.body.as_ref())
        .map_err(|e| HandlerError::Permanent(format!("not a NotificationRequest: {e}")))?;
    if req.id.trim().is_empty() {
        req.id = event.id.clone();
    }
    accept(&core, req).await
}

async fn accept(core: &Core, req: NotificationRequest) -> Result<(), HandlerError> {
    match core.accept(req).await.map_err(transient)? {
        Accepted::Queued | Accepted::Duplicate | Accepted::Refused(_) => Ok(()),
    }
}

/// The variables a reminder's template gets (see
/// [`crate::templates::DOSSIER_VARIABLES`]).
pub fn reminder_variables(
    c: &DossierContact,
    town: &str,
) -> std::collections::HashMap<String, String> {
    let name = format!("{} {}", c.given_name.trim(), c.family_name.trim());
    let name = name.trim();
    let salutation = if name.is_empty() {
        "Bonjour".to_owned()
    } else {
        format!("Bonjour {name}")
    };
    [
        ("town", town.to_owned()),
        ("reference", c.reference.clone()),
        ("process", c.process_title.clone()),
        ("process_id", c.process_id.clone()),
        ("state", c.state_title.clone()),
        ("salutation", salutation),
        ("given_name", c.given_name.clone()),
        ("family_name", c.family_name.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A process timer's reminder, turned into a request to the citizen.
pub async fn on_reminder(
    core: Core,
    directory: Arc<dyn DossierDirectory>,
    event: IncomingEvent,
) -> Result<(), HandlerError> {
    if !event.ty.ends_with(".reminder_due") && !event.nats_subject.ends_with(".reminder_due") {
        return Ok(());
    }
    let r = ReminderDue::decode(event.body.as_ref())
        .map_err(|e| HandlerError::Permanent(format!("not a ReminderDue: {e}")))?;
    if r.template.is_empty() {
        return Err(HandlerError::Permanent(
            "reminder without a template".into(),
        ));
    }
    let due = r
        .due_time
        .as_ref()
        .and_then(guichet_proto::convert::datetime)
        .or(event.time);
    let max_age = chrono::Duration::hours(i64::from(core.config.reminder_max_age_hours));
    if due.is_some_and(|t| core.now() - t > max_age) {
        tracing::info!(event_id = %event.id, dossier_id = %r.dossier_id, "stale reminder skipped");
        metrics::counter!("guichet_notification_reminders_stale_total").increment(1);
        return Ok(());
    }
    let id = format!("reminder-{}", event.id);
    // A redelivered event after the request was recorded: nothing to ask dossier.
    if core.get(&id).await.map_err(transient)?.is_some() {
        return Ok(());
    }
    let contact = match directory.contact(&r.dossier_id, &r.citizen_id).await {
        Ok(c) => c,
        Err(s) if s.code() == Code::NotFound => {
            return Err(HandlerError::Permanent(format!(
                "dossier or citizen of reminder not found: {}",
                s.message()
            )));
        }
        Err(s) => return Err(HandlerError::Transient(format!("dossier: {}", s.message()))),
    };
    let Some(target) = contact.target.clone() else {
        tracing::warn!(dossier_id = %r.dossier_id, template = %r.template, "citizen has no phone or email, reminder not sent");
        metrics::counter!("guichet_notification_reminders_without_contact_total").increment(1);
        return Ok(());
    };
    let req = NotificationRequest {
        id,
        target: Some(target),
        template: r.template.clone(),
        variables: reminder_variables(&contact, &core.config.town.name),
        dossier_id: r.dossier_id.clone(),
        auto_submitted: "auto-generated".into(),
        reference: contact.reference.clone(),
        requested_by: "dossier".into(),
        ..Default::default()
    };
    accept(&core, req).await
}

/// A bounce seen by the email channel, or the end of one.
pub async fn on_email_event(core: Core, event: IncomingEvent) -> Result<(), HandlerError> {
    let kind = event
        .nats_subject
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    if kind != "address_undeliverable" && kind != "address_deliverable" {
        return Ok(());
    }
    let a = AddressUndeliverable::decode(event.body.as_ref())
        .map_err(|e| HandlerError::Permanent(format!("not an AddressUndeliverable: {e}")))?;
    let address =
        Email::parse(&a.address).map_err(|e| HandlerError::Permanent(format!("address {e}")))?;
    if kind == "address_deliverable" || a.cleared {
        let cleared = core
            .clear_suppression(address.as_str())
            .await
            .map_err(transient)?;
        if cleared {
            tracing::info!(event_id = %event.id, "address lifted from the suppression list");
        }
        return Ok(());
    }
    if !a.permanent {
        // A temporary failure (mailbox full, greylisting): keep sending.
        tracing::debug!(event_id = %event.id, "transient bounce, address not suppressed");
        return Ok(());
    }
    core.suppress(address.as_str(), &a.reason, &a.bounce_message_id)
        .await
        .map_err(transient)
}
