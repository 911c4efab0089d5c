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
use sea_orm::{EntityTrait, Set, sea_query::OnConflict};

use crate::calendar::{Calendar, SlaTarget};
use crate::db::entities::{intake_input, message_dossier};
use crate::queue::{CandidateRef, Handled, NewItem, Queue};
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
    event.citizen.as_ref().is_some_and(|h| {
        !h.given_name.trim().is_empty()
            || !h.family_name.trim().is_empty()
            || h.phones.iter().any(|p| !p.trim().is_empty())
            || h.emails.iter().any(|e| !e.trim().is_empty())
            || h.address
                .as_ref()
                .is_some_and(|a| a.lines.iter().any(|l| !l.trim().is_empty()))
    })
}

/// Email Message-IDs as keys: trimmed, without angle brackets.
fn message_key(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

pub struct Router {
    pub queue: Queue,
    pub dossier: DossierClient,
    pub classifier: Arc<Classifier>,
    pub correlation_window: Duration,
}

/// The dossier a request goes to, and how it was found.
struct Target {
    dossier: Option<dpb::Dossier>,
    citizen_id: String,
    correlation: &'static str,
    /// Citizens the request may belong to instead (weak evidence).
    candidates: Vec<CandidateRef>,
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

        // Automatic mail (auto-replies, bounces, lists, bulk) is nobody's
        // request: on the timeline of the dossier it answers, if any, and
        // never a citizen, a dossier or a work item of its own.
        if let Some(intake_event::Details::Email(e)) = &event.details
            && e.auto_submitted
        {
            return self.automatic_mail(&event, e, received_at, summary).await;
        }
        // 1. Classify.
        let class = self.classifier.classify(&event);
        // 2. Correlate, else identify the citizen and open a dossier.
        let target = self.correlate(&event, &class, received_at).await?;
        // References quoted that lead nowhere: the citizen believes they
        // have a dossier; the agent is told, on the item and the dossier.
        let unknown: Vec<String> = if target.correlation == "reference" {
            vec![]
        } else {
            quoted_references(&event)
        };
        let summary = if unknown.is_empty() {
            summary
        } else {
            format!(
                "{summary} — référence citée inconnue : {}",
                unknown.join(", ")
            )
        };
        if let Some(d) = &target.dossier
            && !unknown.is_empty()
        {
            metrics::counter!("guichet_routing_unknown_references_total").increment(1);
            let mut dossier = self.dossier.clone();
            dossier
                .record_contact(dpb::RecordContactRequest {
                    dossier_id: d.id.clone(),
                    kind: dpb::EntryKind::Note as i32,
                    channel: channel as i32,
                    occur_time: Some(timestamp(received_at)),
                    summary: format!(
                        "Référence citée inconnue : {} (l'usager pense avoir déjà un dossier)",
                        unknown.join(", ")
                    ),
                    actor: "system".into(),
                    source_event_id: format!("{}:unknown-reference", event.id),
                    citizen_id: String::new(),
                })
                .await
                .map_err(|s| classify("record unknown reference", s))?;
        }
        // 3. The contact on the timeline.
        if let Some(d) = &target.dossier {
            let mut dossier = self.dossier.clone();
            dossier
                .record_contact(dpb::RecordContactRequest {
                    dossier_id: d.id.clone(),
                    kind: dpb::EntryKind::Contact as i32,
                    channel: channel as i32,
                    occur_time: Some(timestamp(received_at)),
                    summary: summary.clone(),
                    actor: "system".into(),
                    source_event_id: event.id.clone(),
                    citizen_id: String::new(),
                })
                .await
                .map_err(|s| classify("record contact", s))?;
            if let Some(intake_event::Details::Email(e)) = &event.details
                && !e.message_id.trim().is_empty()
            {
                message_dossier::Entity::insert(message_dossier::ActiveModel {
                    message_id: Set(message_key(&e.message_id)),
                    dossier_id: Set(d.id.clone()),
                    dossier_reference: Set(d.reference.clone()),
                    created_at: Set(self.queue.now()),
                })
                .on_conflict(
                    OnConflict::column(message_dossier::Column::MessageId)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(self.queue.db())
                .await
                .map_err(|e| HandlerError::Transient(format!("record message id: {e}")))?;
            }
        } else if target.correlation == "timeline_only" {
            let mut dossier = self.dossier.clone();
            dossier
                .record_contact(dpb::RecordContactRequest {
                    citizen_id: target.citizen_id.clone(),
                    kind: dpb::EntryKind::Contact as i32,
                    channel: channel as i32,
                    occur_time: Some(timestamp(received_at)),
                    summary: summary.clone(),
                    actor: "system".into(),
                    source_event_id: event.id.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|s| classify("record contact", s))?;
        }
        // The attachments (email attachments, the scanned letter) join the
        // dossier's documents, once each.
        if let Some(d) = &target.dossier {
            self.attach_documents(&event, d, channel).await?;
        }
        // What classification read, kept to try other rules on it later.
        self.keep_input(&event, received_at).await?;
        // 4. One work item in the unified queue.
        let (dossier_id, reference, process_id) = match &target.dossier {
            Some(d) => (d.id.clone(), d.reference.clone(), d.process_id.clone()),
            None => (String::new(), String::new(), class.process_id.clone()),
        };
        let (item, created) = self
            .queue
            .enqueue(NewItem {
                intake_event_id: event.id.clone(),
                channel: channel.slug().to_owned(),
                priority: class.priority,
                dossier_id,
                dossier_reference: reference,
                citizen_id: target.citizen_id.clone(),
                process_id,
                summary,
                enter_time: received_at,
                queue_id: class.queue_id.clone(),
                skills: class.skills.clone(),
                sla_due: class.sla_due,
                sla_warn: class.sla_warn,
                rule_id: class.rule_id.clone(),
                correlation: target.correlation.to_owned(),
                candidates: target.candidates.clone(),
                handled: answered_call(&event, received_at)
                    .or_else(|| unreachable_missed_call(&event, received_at)),
            })
            .await
            .map_err(|e| HandlerError::Transient(format!("enqueue: {e}")))?;
        if created {
            metrics::counter!("guichet_routing_enqueued_total", "channel" => channel.slug(), "correlation" => target.correlation)
                .increment(1);
            tracing::info!(work_item_id = %item.id, intake_event_id = %event.id, dossier_id = %item.dossier_id, correlation = target.correlation, rule_id = %class.rule_id, "work item enqueued");
        }
        // A counter desk may have called (or ended) the ticket before its
        // request was here.
        if channel == Channel::Counter {
            crate::desk::apply_kept(&self.queue, &event.id).await?;
        }
        Ok(())
    }

    /// Keep the request as classification read it (once per intake event),
    /// without what no rule reads: the citizen's name and address, and the
    /// attachments' addresses and names (their media types stay).
    async fn keep_input(
        &self,
        event: &IntakeEvent,
        received_at: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
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
        intake_input::Entity::insert(intake_input::ActiveModel {
            intake_event_id: Set(event.id.clone()),
            event: Set(kept.encode_to_vec()),
            received_at: Set(received_at),
        })
        .on_conflict(
            OnConflict::column(intake_input::Column::IntakeEventId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(self.queue.db())
        .await
        .map_err(|e| HandlerError::Transient(format!("keep classification input: {e}")))?;
        Ok(())
    }

    /// Add the event's stored attachments to the dossier's documents,
    /// skipping those it already has (a redelivery adds nothing twice). An
    /// attachment the dossier refuses (e.g. a media type it does not keep)
    /// is logged and counted; the request still reaches the queue.
    async fn attach_documents(
        &self,
        event: &IntakeEvent,
        d: &dpb::Dossier,
        channel: Channel,
    ) -> Result<(), HandlerError> {
        let wanted: Vec<_> = event
            .attachments
            .iter()
            .filter(|a| !a.sha256.trim().is_empty())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut dossier = self.dossier.clone();
        let mut have = std::collections::HashSet::new();
        let mut page_token = String::new();
        loop {
            let page = dossier
                .list_documents(dpb::ListDocumentsRequest {
                    dossier_id: d.id.clone(),
                    page_size: 500,
                    page_token,
                })
                .await
                .map_err(|s| classify("list documents", s))?
                .into_inner();
            have.extend(page.documents.into_iter().map(|x| x.sha256));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        for a in wanted {
            if !have.insert(a.sha256.trim().to_ascii_lowercase()) {
                continue;
            }
            let added = dossier
                .add_document(dpb::AddDocumentRequest {
                    dossier_id: d.id.clone(),
                    filename: a.filename.clone(),
                    media_type: a.media_type.clone(),
                    source_channel: channel as i32,
                    stored: Some(a.clone()),
                    ..Default::default()
                })
                .await;
            match added {
                Ok(_) => {
                    metrics::counter!("guichet_routing_attachments_total", "outcome" => "added")
                        .increment(1);
                }
                Err(s) if s.code() == Code::InvalidArgument => {
                    metrics::counter!("guichet_routing_attachments_total", "outcome" => "refused")
                        .increment(1);
                    tracing::warn!(intake_event_id = %event.id, reason = %s.message(), "attachment not added to the dossier");
                }
                Err(s) => return Err(classify("add document", s)),
            }
        }
        Ok(())
    }

    /// A dossier by id or reference; `None` when it does not exist.
    async fn find_dossier(&self, id: &str) -> Result<Option<dpb::Dossier>, HandlerError> {
        let mut dossier = self.dossier.clone();
        match dossier
            .get_dossier(dpb::GetDossierRequest { id: id.to_owned() })
            .await
        {
            Ok(d) => Ok(Some(d.into_inner())),
            Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => Ok(None),
            Err(s) => Err(classify("get dossier", s)),
        }
    }

    /// Automatic mail: recorded on the dossier it threads to or quotes
    /// (`timeline`), else set aside (`set_aside`: the email role keeps it,
    /// listed with `auto_submitted = true`, the "courrier automatique").
    async fn automatic_mail(
        &self,
        event: &IntakeEvent,
        email: &guichet_proto::intake::v1::EmailDetails,
        received_at: DateTime<Utc>,
        summary: String,
    ) -> Result<(), HandlerError> {
        let kind = if email.bounce { "bounce" } else { "auto_reply" };
        let Some((d, how)) = self.known_dossier(event).await? else {
            metrics::counter!("guichet_routing_automatic_mail_total", "kind" => kind, "outcome" => "set_aside")
                .increment(1);
            tracing::info!(intake_event_id = %event.id, reason = %email.auto_reason, "automatic mail set aside: no dossier to record it on");
            return Ok(());
        };
        let what = if email.bounce {
            "Courrier automatique (non-distribution)"
        } else {
            "Courrier automatique"
        };
        let mut dossier = self.dossier.clone();
        dossier
            .record_contact(dpb::RecordContactRequest {
                dossier_id: d.id.clone(),
                kind: dpb::EntryKind::Contact as i32,
                channel: Channel::Email as i32,
                occur_time: Some(timestamp(received_at)),
                summary: format!("{what} : {summary}"),
                actor: "system".into(),
                source_event_id: event.id.clone(),
                citizen_id: String::new(),
            })
            .await
            .map_err(|s| classify("record contact", s))?;
        metrics::counter!("guichet_routing_automatic_mail_total", "kind" => kind, "outcome" => "timeline")
            .increment(1);
        tracing::info!(intake_event_id = %event.id, dossier_id = %d.id, correlation = how, reason = %email.auto_reason, "automatic mail recorded on its dossier's timeline");
        Ok(())
    }

    /// The dossier a request quotes or replies to, if it exists.
    async fn known_dossier(
        &self,
        event: &IntakeEvent,
    ) -> Result<Option<(dpb::Dossier, &'static str)>, HandlerError> {
        for r in quoted_references(event) {
            if let Some(d) = self.find_dossier(&r).await? {
                return Ok(Some((d, "reference")));
            }
        }
        if let Some(intake_event::Details::Email(e)) = &event.details {
            let mut ids: Vec<String> = Vec::new();
            ids.extend(Some(message_key(&e.in_reply_to)).filter(|s| !s.is_empty()));
            ids.extend(
                e.references
                    .iter()
                    .rev()
                    .map(|r| message_key(r))
                    .filter(|s| !s.is_empty()),
            );
            for id in ids {
                let known = message_dossier::Entity::find_by_id(id)
                    .one(self.queue.db())
                    .await
                    .map_err(|e| HandlerError::Transient(format!("message lookup: {e}")))?;
                if let Some(m) = known
                    && let Some(d) = self.find_dossier(&m.dossier_id).await?
                {
                    return Ok(Some((d, "email_thread")));
                }
            }
        }
        Ok(None)
    }

    async fn correlate(
        &self,
        event: &IntakeEvent,
        class: &Classified,
        received_at: DateTime<Utc>,
    ) -> Result<Target, HandlerError> {
        let mut candidates: Vec<CandidateRef> = Vec::new();
        // A quoted reference, or a reply to an email routing has seen.
        if let Some((d, how)) = self.known_dossier(event).await? {
            return self.attach(event, d, how).await;
        }
        // An appointment check-in at the counter: the booking's dossier.
        if let Some(intake_event::Details::Counter(c)) = &event.details
            && !c.dossier_id.is_empty()
            && let Some(d) = self.find_dossier(&c.dossier_id).await?
        {
            return self.attach(event, d, "appointment").await;
        }
        // Nothing identifies the person (e.g. a withheld number): the item
        // waits without a dossier, for an agent to qualify.
        if !has_hint(event) {
            return Ok(Target {
                dossier: None,
                citizen_id: String::new(),
                correlation: "none",
                candidates: candidates.clone(),
            });
        }
        let mut dossier = self.dossier.clone();
        let resolved = dossier
            .resolve_citizen(dpb::ResolveCitizenRequest {
                hint: event.citizen.clone(),
                request_id: event.id.clone(),
                candidates_only: false,
            })
            .await;
        let citizen = match resolved {
            Ok(r) => {
                let r = r.into_inner();
                // Weak evidence only: someone else may be this person.
                if r.r#match == dpb::MatchKind::Maybe as i32 {
                    candidates = r
                        .candidates
                        .iter()
                        .filter_map(|c| {
                            let other = c.citizen.as_ref()?;
                            (Some(other.id.as_str()) != r.citizen.as_ref().map(|x| x.id.as_str()))
                                .then(|| CandidateRef {
                                    citizen_id: other.id.clone(),
                                    confidence: c.confidence,
                                    why: c.why.clone(),
                                })
                        })
                        .collect();
                }
                r.citizen.ok_or_else(|| {
                    HandlerError::Transient("resolve citizen returned no citizen".into())
                })?
            }
            // What the channel captured does not parse (a mistyped number):
            // the request still reaches an agent, who identifies the person.
            // The status names the field only, never its value.
            Err(s) if s.code() == Code::InvalidArgument => {
                tracing::warn!(intake_event_id = %event.id, reason = %s.message(), "citizen hint refused, queued without a citizen");
                return Ok(Target {
                    dossier: None,
                    citizen_id: String::new(),
                    correlation: "unidentified",
                    candidates: candidates.clone(),
                });
            }
            Err(s) => return Err(classify("resolve citizen", s)),
        };
        // A call answered live is already handled: it goes on the citizen's
        // open dossier when there is one, else on their timeline only —
        // never a triage dossier someone would have to close.
        if answered_call(event, received_at).is_some() {
            let open = self.latest_open_dossier(&citizen.id).await?;
            let correlation = if open.is_some() {
                "citizen_open"
            } else {
                "timeline_only"
            };
            return Ok(Target {
                dossier: open,
                citizen_id: citizen.id,
                correlation,
                candidates: candidates.clone(),
            });
        }
        // The same citizen's open dossier of the same process, recently
        // active. Not for triage: two unqualified requests are not known to
        // be the same matter.
        if class.process_id != self.classifier.triage_process
            && let Some(d) = self
                .recent_dossier(&citizen.id, &class.process_id, received_at)
                .await?
        {
            return Ok(Target {
                dossier: Some(d),
                citizen_id: citizen.id,
                correlation: "citizen_window",
                candidates: candidates.clone(),
            });
        }
        let open = |process_id: String| dpb::OpenDossierRequest {
            citizen_id: citizen.id.clone(),
            process_id,
            request_id: event.id.clone(),
        };
        let opened = match dossier.open_dossier(open(class.process_id.clone())).await {
            Ok(d) => d.into_inner(),
            // A rule naming a process the catalog does not have: triage
            // rather than losing the request.
            Err(s)
                if s.code() == Code::InvalidArgument
                    && class.process_id != self.classifier.triage_process =>
            {
                tracing::warn!(process_id = %class.process_id, rule_id = %class.rule_id, "rule names an unknown process, opening a triage dossier");
                dossier
                    .open_dossier(open(self.classifier.triage_process.clone()))
                    .await
                    .map_err(|s| classify("open dossier", s))?
                    .into_inner()
            }
            Err(s) => return Err(classify("open dossier", s)),
        };
        Ok(Target {
            dossier: Some(opened),
            citizen_id: citizen.id,
            correlation: "new",
            candidates: candidates.clone(),
        })
    }
}

impl Router {
    /// The citizen's most recently updated open dossier of `process_id`,
    /// if updated within the correlation window before `at`.
    async fn latest_open_dossier(
        &self,
        citizen_id: &str,
    ) -> Result<Option<dpb::Dossier>, HandlerError> {
        let mine = self
            .dossier
            .clone()
            .list_dossiers(dpb::ListDossiersRequest {
                citizen_id: citizen_id.to_owned(),
                open_only: true,
                page_size: 100,
                ..Default::default()
            })
            .await
            .map_err(|s| classify("list dossiers", s))?
            .into_inner();
        Ok(mine
            .dossiers
            .into_iter()
            .filter(dossier_open)
            .max_by_key(|d| d.update_time.as_ref().map(|t| (t.seconds, t.nanos))))
    }

    async fn recent_dossier(
        &self,
        citizen_id: &str,
        process_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<dpb::Dossier>, HandlerError> {
        let since = at - self.correlation_window;
        let mine = self
            .dossier
            .clone()
            .list_dossiers(dpb::ListDossiersRequest {
                citizen_id: citizen_id.to_owned(),
                process_id: process_id.to_owned(),
                open_only: true,
                updated_after: Some(timestamp(since)),
                page_size: 100,
                ..Default::default()
            })
            .await
            .map_err(|s| classify("list dossiers", s))?
            .into_inner();
        Ok(mine
            .dossiers
            .into_iter()
            .filter(|d| d.process_id == process_id && dossier_open(d))
            .filter(|d| {
                d.update_time
                    .as_ref()
                    .and_then(datetime)
                    .is_some_and(|t| t >= since)
            })
            .max_by_key(|d| d.update_time.as_ref().map(|t| (t.seconds, t.nanos))))
    }
}

/// Whether a dossier still takes new requests.
fn dossier_open(d: &dpb::Dossier) -> bool {
    !d.closed
}

impl Router {
    /// Attach to a dossier the request points at. A closed one is reopened
    /// when its process says so; otherwise the request opens a new dossier
    /// of the same process for the same citizen.
    async fn attach(
        &self,
        event: &IntakeEvent,
        d: dpb::Dossier,
        how: &'static str,
    ) -> Result<Target, HandlerError> {
        let candidates: Vec<CandidateRef> = Vec::new();
        if !d.closed {
            return Ok(Target {
                citizen_id: d.citizen_id.clone(),
                dossier: Some(d),
                correlation: how,
                candidates: candidates.clone(),
            });
        }
        let mut dossier = self.dossier.clone();
        match dossier
            .reopen_dossier(dpb::ReopenDossierRequest {
                id: d.id.clone(),
                reason: "Nouvelle demande de l'usager se rapportant à ce dossier".into(),
                request_id: event.id.clone(),
            })
            .await
        {
            Ok(r) => Ok(Target {
                citizen_id: d.citizen_id.clone(),
                dossier: Some(r.into_inner()),
                correlation: "reopened",
                candidates: candidates.clone(),
            }),
            Err(s) if s.code() == Code::FailedPrecondition => {
                let opened = dossier
                    .open_dossier(dpb::OpenDossierRequest {
                        citizen_id: d.citizen_id.clone(),
                        process_id: d.process_id.clone(),
                        request_id: event.id.clone(),
                    })
                    .await
                    .map_err(|s| classify("open dossier", s))?
                    .into_inner();
                Ok(Target {
                    citizen_id: d.citizen_id.clone(),
                    dossier: Some(opened),
                    correlation: "new_after_closed",
                    candidates: candidates.clone(),
                })
            }
            Err(s) => Err(classify("reopen dossier", s)),
        }
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
