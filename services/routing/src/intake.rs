//! Routing of intake events: classify (rules), correlate to a dossier
//! (quoted reference, email thread, same citizen and process recently),
//! else identify the citizen and open a dossier; record the contact on the
//! timeline; enqueue one work item.
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

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::calendar::{Calendar, SlaTarget};
use crate::queue::{CandidateRef, Handled, NewItem, Queue};

/// Told to the agent on a work item (French).
const UNVERIFIED_SENDER: &str = "Expéditeur non vérifié : ce message a été rattaché à une fiche existante par son adresse, sans preuve que l'expéditeur en est le titulaire.";
const CLAIMS_TOWN: &str = "Ce message se présente comme venant de la mairie (domaine de la ville) mais arrive de l'extérieur : possible usurpation ; il n'a été rattaché à aucune fiche.";
const BURST: &str = "Rafale : de nombreux messages de cet expéditeur sont arrivés en peu de temps ; ils sont réunis dans cette demande (voir la chronologie du dossier).";
use crate::rules::{Evaluation, RuleSet, Rules};

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

/// "35 s", "2 min", "1 min 35".
fn seconds_fr(s: u32) -> String {
    match (s / 60, s % 60) {
        (0, sec) => format!("{sec} s"),
        (m, 0) => format!("{m} min"),
        (m, sec) => format!("{m} min {sec:02}"),
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
        Some(intake_event::Details::Telephony(t)) if t.direction != "out" => {
            // What the agent needs before calling back: missed or not, how
            // long the caller waited and talked.
            let what = if t.voicemail {
                format!("Message vocal (attente {})", seconds_fr(t.waiting_seconds))
            } else if t.callback_requested {
                "Demande de rappel".to_owned()
            } else if t.missed {
                format!("Appel manqué (attente {})", seconds_fr(t.waiting_seconds))
            } else {
                format!(
                    "Appel (attente {}, conversation {})",
                    seconds_fr(t.waiting_seconds),
                    seconds_fr(t.talk_seconds)
                )
            };
            if text.is_empty() {
                what
            } else {
                format!("{what} : {text}")
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

/// What classification decided for one request.
#[derive(Debug, Clone)]
pub struct Classified {
    /// Empty: no rule matched, triage.
    pub rule_id: String,
    pub process_id: String,
    pub priority: i32,
    pub skills: Vec<String>,
    pub queue_id: String,
    pub sla_due: Option<DateTime<Utc>>,
    pub sla_warn: Option<DateTime<Utc>>,
    pub evaluations: Vec<Evaluation>,
    pub rules_version: String,
}

/// Rules plus the defaults and SLA targets they fall back on.
pub struct Classifier {
    pub rules: Arc<Rules>,
    pub calendar: Calendar,
    pub triage_process: String,
    pub default_priority: i32,
    pub default_queue: String,
    pub sla_channel: HashMap<String, SlaTarget>,
    pub sla_process: HashMap<String, SlaTarget>,
    pub sla_near_ratio: f64,
}

impl Classifier {
    pub fn classify(&self, event: &IntakeEvent) -> Classified {
        self.classify_with(&self.rules.current(), event)
    }

    /// [`Classifier::classify`] under another rule set (a candidate tried in
    /// the studio), with the same defaults and SLA targets.
    pub fn classify_with(&self, set: &RuleSet, event: &IntakeEvent) -> Classified {
        let (rule, evaluations) = set.classify(event, &self.calendar);
        let (rule_id, process_id, priority, skills, queue_id, rule_sla) = match rule {
            Some(r) => (
                r.id.clone(),
                r.process.clone(),
                r.priority,
                r.skills.clone(),
                r.queue
                    .clone()
                    .unwrap_or_else(|| self.default_queue.clone()),
                r.sla,
            ),
            None => (
                String::new(),
                self.triage_process.clone(),
                self.default_priority,
                Vec::new(),
                self.default_queue.clone(),
                None,
            ),
        };
        let target = rule_sla
            .or_else(|| self.sla_process.get(&process_id).copied())
            .or_else(|| self.sla_channel.get(event.channel().slug()).copied());
        let received = event.received_at.as_ref().and_then(datetime);
        let (sla_due, sla_warn) = match (target, received) {
            (Some(t), Some(at)) => {
                let due = self.calendar.add(at, t);
                let warn = match t {
                    SlaTarget::Minutes(m) => self.calendar.add(
                        at,
                        SlaTarget::Minutes((m as f64 * self.sla_near_ratio) as u32),
                    ),
                    SlaTarget::Days(_) => {
                        let span = (due - at).num_seconds() as f64 * self.sla_near_ratio;
                        at + Duration::seconds(span as i64)
                    }
                };
                (Some(due), Some(warn))
            }
            _ => (None, None),
        };
        Classified {
            rule_id,
            process_id,
            priority,
            skills,
            queue_id,
            sla_due,
            sla_warn,
            evaluations,
            rules_version: set.version.clone(),
        }
    }
}

/// Dossier references quoted in a request: the explicit one first, then any
/// in the subject, body or letter text.
/// An inbound call an agent answered is done work: it reaches the
/// dossier and the timeline, and the queue as completed by the answering
/// agent (its waiting and talk times as the PBX measured them), never as
/// work to offer. Missed calls, voicemail and callback requests are work.
pub fn answered_call(event: &IntakeEvent, received_at: DateTime<Utc>) -> Option<Handled> {
    let Some(intake_event::Details::Telephony(t)) = &event.details else {
        return None;
    };
    if t.missed || t.voicemail || t.callback_requested || t.direction == "out" {
        return None;
    }
    let assign_time = received_at + chrono::Duration::seconds(i64::from(t.waiting_seconds));
    Some(Handled {
        agent: if !t.answered_agent_id.is_empty() {
            t.answered_agent_id.clone()
        } else if t.answered_by.is_empty() {
            "pbx".to_owned()
        } else {
            t.answered_by.clone()
        },
        assign_time,
        complete_time: assign_time + chrono::Duration::seconds(i64::from(t.talk_seconds)),
        outcome: "answered".to_owned(),
    })
}

/// A missed call from a withheld number: nobody can call back, so it is
/// recorded as closed at once ("rappel impossible"), not queued as a
/// callback no agent can make.
pub fn unreachable_missed_call(event: &IntakeEvent, received_at: DateTime<Utc>) -> Option<Handled> {
    let Some(intake_event::Details::Telephony(t)) = &event.details else {
        return None;
    };
    let missed = t.missed || t.voicemail || t.callback_requested;
    if !missed || t.direction == "out" || has_hint(event) {
        return None;
    }
    Some(Handled {
        agent: "pbx".to_owned(),
        assign_time: received_at,
        complete_time: received_at,
        outcome: "Appel manqué d'un numéro masqué : rappel impossible".to_owned(),
    })
}

pub fn quoted_references(event: &IntakeEvent) -> Vec<String> {
    let mut out = Vec::new();
    if !event.quoted_reference.trim().is_empty() {
        out.push(event.quoted_reference.trim().to_uppercase());
    }
    for text in [&event.subject, &event.body] {
        for r in guichet_platform::reference::find_in_text(text, "") {
            let r = r.into_string();
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

/// Whether a channel gave anything to identify the person by.
fn has_hint(event: &IntakeEvent) -> bool {
    guichet_platform::contact::hint_given(event.citizen.as_ref())
}

pub struct Router {
    pub queue: Queue,
    pub dossier: DossierClient,
    pub classifier: Arc<Classifier>,
    pub correlation_window: Duration,
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
        // Automatic mail (auto-replies, bounces, lists, bulk) is nobody's
        // request: on the timeline of the dossier it answers, if any, and
        // never a citizen, a dossier or a work item of its own.
        let automatic = match &event.details {
            Some(intake_event::Details::Email(e)) if e.auto_submitted => Some(e),
            _ => None,
        };
        let answered = answered_call(&event, received_at);
        let done_live = answered.is_some();
        let handled = answered.or_else(|| unreachable_missed_call(&event, received_at));
        // 1. Classify.
        let class = self.classifier.classify(&event);
        // 2. One dossier call: citizen, dossier, timeline and documents.
        let (mode, summary) = match automatic {
            Some(e) => (
                dpb::IntakeMode::Automatic,
                format!(
                    "{} : {}",
                    if e.bounce {
                        "Courrier automatique (non-distribution)"
                    } else {
                        "Courrier automatique"
                    },
                    summary(&event)
                ),
            ),
            None if done_live => (dpb::IntakeMode::Done, summary(&event)),
            None => (dpb::IntakeMode::Request, summary(&event)),
        };
        let (thread_reference, quoted) = references(&event);
        let mut dossier = self.dossier.clone();
        let routed = dossier
            .correlate_intake(dpb::CorrelateIntakeRequest {
                request_id: event.id.clone(),
                channel: channel as i32,
                occur_time: Some(timestamp(received_at)),
                mode: mode as i32,
                hint: event.citizen.clone(),
                thread_reference,
                quoted_references: quoted,
                appointment_dossier_id: match &event.details {
                    Some(intake_event::Details::Counter(c)) => c.dossier_id.clone(),
                    _ => String::new(),
                },
                process_id: class.process_id.clone(),
                triage_process_id: self.classifier.triage_process.clone(),
                correlation_window_seconds: u32::try_from(self.correlation_window.num_seconds())
                    .unwrap_or(u32::MAX),
                summary,
                attachments: event.attachments.clone(),
            })
            .await
            .map_err(|s| classify("correlate intake", s))?
            .into_inner();
        if !routed.refused.is_empty() {
            tracing::warn!(intake_event_id = %event.id, reason = %routed.refused, "citizen hint refused, queued without a citizen");
        }
        for reason in &routed.documents_refused {
            metrics::counter!("guichet_routing_attachments_total", "outcome" => "refused")
                .increment(1);
            tracing::warn!(intake_event_id = %event.id, reason = %reason, "attachment not added to the dossier");
        }
        if routed.documents_added > 0 {
            metrics::counter!("guichet_routing_attachments_total", "outcome" => "added")
                .increment(u64::from(routed.documents_added));
        }
        if let Some(e) = automatic {
            let kind = if e.bounce { "bounce" } else { "auto_reply" };
            match &routed.dossier {
                Some(d) => {
                    metrics::counter!("guichet_routing_automatic_mail_total", "kind" => kind, "outcome" => "timeline")
                        .increment(1);
                    tracing::info!(intake_event_id = %event.id, dossier_id = %d.id, correlation = %routed.correlation, reason = %e.auto_reason, "automatic mail recorded on its dossier's timeline");
                }
                None => {
                    metrics::counter!("guichet_routing_automatic_mail_total", "kind" => kind, "outcome" => "set_aside")
                        .increment(1);
                    tracing::info!(intake_event_id = %event.id, reason = %e.auto_reason, "automatic mail set aside: no dossier to record it on");
                }
            }
            return Ok(());
        }
        if routed.dossier.is_some() && !routed.unknown_references.is_empty() {
            metrics::counter!("guichet_routing_unknown_references_total").increment(1);
        }
        // What the agent must be told before trusting an email.
        let mut warnings = Vec::new();
        if let Some(intake_event::Details::Email(e)) = &event.details {
            if e.claims_town_domain {
                warnings.push(CLAIMS_TOWN.to_owned());
            } else if !e.sender_verified && !routed.citizen_id.is_empty() && !routed.citizen_created
            {
                warnings.push(UNVERIFIED_SENDER.to_owned());
            }
            if e.burst {
                warnings.push(BURST.to_owned());
                // A burst's further messages are on the dossier's timeline;
                // the request already waiting for an agent covers them.
                if let Some(d) = &routed.dossier {
                    let waiting = self
                        .queue
                        .waiting_on_dossier(&d.id, channel.slug())
                        .await
                        .map_err(|e| HandlerError::Transient(format!("burst: {e}")))?;
                    if let Some(w) = waiting {
                        self.queue
                            .add_warning(&w.id, BURST)
                            .await
                            .map_err(|e| HandlerError::Transient(format!("burst: {e}")))?;
                        metrics::counter!("guichet_routing_burst_joined_total").increment(1);
                        tracing::info!(intake_event_id = %event.id, work_item_id = %w.id, dossier_id = %d.id, "message of a burst joined the waiting work item");
                        return Ok(());
                    }
                }
            }
        }
        // 3. One work item in the unified queue.
        let (dossier_id, reference, process_id) = match &routed.dossier {
            Some(d) => (d.id.clone(), d.reference.clone(), d.process_id.clone()),
            None => (String::new(), String::new(), class.process_id.clone()),
        };
        let correlation = correlation_label(&routed.correlation);
        let candidates = routed
            .candidates
            .iter()
            .filter_map(|c| {
                let other = c.citizen.as_ref()?;
                Some(CandidateRef {
                    citizen_id: other.id.clone(),
                    confidence: c.confidence,
                    why: c.why.clone(),
                })
            })
            .collect();
        let (item, created) = self
            .queue
            .enqueue(NewItem {
                intake_event_id: event.id.clone(),
                channel: channel.slug().to_owned(),
                priority: class.priority,
                dossier_id,
                dossier_reference: reference,
                citizen_id: routed.citizen_id.clone(),
                process_id,
                summary: routed.summary,
                enter_time: received_at,
                queue_id: class.queue_id.clone(),
                skills: class.skills.clone(),
                sla_due: class.sla_due,
                sla_warn: class.sla_warn,
                rule_id: class.rule_id.clone(),
                correlation: correlation.to_owned(),
                candidates,
                handled,
                // What classification read, kept to try other rules on it.
                kept_input: Some(kept_input(&event)),
                warnings,
            })
            .await
            .map_err(|e| HandlerError::Transient(format!("enqueue: {e}")))?;
        if created {
            metrics::counter!("guichet_routing_enqueued_total", "channel" => channel.slug(), "correlation" => correlation)
                .increment(1);
            tracing::info!(work_item_id = %item.id, intake_event_id = %event.id, dossier_id = %item.dossier_id, correlation, rule_id = %class.rule_id, "work item enqueued");
        }
        // A counter desk may have called (or ended) the ticket before its
        // request was here.
        if channel == Channel::Counter {
            crate::desk::apply_kept(&self.queue, &event.id).await?;
        }
        Ok(())
    }
}

/// The request as classification read it, without what no rule reads:
/// the citizen's name and address, and the attachments' addresses and
/// names (their media types stay).
fn kept_input(event: &IntakeEvent) -> Vec<u8> {
    let mut kept = event.clone();
    if let Some(c) = kept.citizen.as_mut() {
        c.given_name.clear();
        c.family_name.clear();
        c.address = None;
    }
    for a in &mut kept.attachments {
        a.sha256.clear();
        a.filename.clear();
    }
    kept.encode_to_vec()
}

/// The reference the email thread belongs to (the email role owns
/// threading: it puts the thread's reference in `quoted_reference` with
/// `reference_source = "thread"`), and the other references quoted.
fn references(event: &IntakeEvent) -> (String, Vec<String>) {
    let mut quoted = quoted_references(event);
    let from_thread = matches!(&event.details, Some(intake_event::Details::Email(e)) if e.reference_source == "thread");
    let thread = event.quoted_reference.trim().to_uppercase();
    if from_thread && !thread.is_empty() {
        quoted.retain(|r| *r != thread);
        (thread, quoted)
    } else {
        (String::new(), quoted)
    }
}

/// The dossier role's correlation, as the queue and its metrics name it.
fn correlation_label(c: &str) -> &'static str {
    match c {
        "email_thread" => "email_thread",
        "reference" => "reference",
        "reopened" => "reopened",
        "new_after_closed" => "new_after_closed",
        "appointment" => "appointment",
        "citizen_window" => "citizen_window",
        "citizen_open" => "citizen_open",
        "timeline_only" => "timeline_only",
        "new" => "new",
        "unidentified" => "unidentified",
        _ => "none",
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

    #[test]
    fn call_summaries_say_missed_waiting_and_talk_times() {
        let call = |missed: bool, voicemail: bool, wait: u32, talk: u32| IntakeEvent {
            channel: Channel::Telephony as i32,
            details: Some(intake_event::Details::Telephony(
                guichet_proto::intake::v1::TelephonyDetails {
                    direction: "in".into(),
                    missed,
                    voicemail,
                    waiting_seconds: wait,
                    talk_seconds: talk,
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        assert_eq!(
            summary(&call(true, false, 95, 0)),
            "Appel manqué (attente 1 min 35)"
        );
        assert_eq!(
            summary(&call(false, false, 12, 240)),
            "Appel (attente 12 s, conversation 4 min)"
        );
        assert_eq!(
            summary(&call(true, true, 30, 0)),
            "Message vocal (attente 30 s)"
        );
    }

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
    fn references_are_found_in_any_case_and_deduplicated() {
        let e = IntakeEvent {
            quoted_reference: "vin-2026-000123".into(),
            subject: "Re: dossier VIN-2026-000123".into(),
            body: "voir aussi mai-2025-000042, pas 2026-000001 ni VIN-2026-12345".into(),
            ..Default::default()
        };
        assert_eq!(
            quoted_references(&e),
            vec!["VIN-2026-000123", "MAI-2025-000042"]
        );
    }

    #[test]
    fn an_undecodable_body_is_a_permanent_failure() {
        let err = decode(&Bytes::from_static(b"\xff\xff\xff not protobuf")).unwrap_err();
        assert!(matches!(err, HandlerError::Permanent(_)));
    }
}
