//! `guichet.routing.v1.QueueService`: agents work the unified queue,
//! supervisors steer it. Proto in, domain calls, proto out; errors mapped
//! here, once.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use guichet_platform::auth::{self, Principal, Role};
use guichet_platform::grpc::{
    failed_precondition, internal, internal_err, invalid_argument, not_found, page_size,
    unavailable,
};
use guichet_proto::convert::timestamp;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::Channel;
use guichet_proto::routing::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::db::entities::{agent, work_item};
use crate::intake::{Classifier, DossierClient};
use crate::queue::{self, Cursor, ListFilter, Queue, QueueError, Stats, has_sla, split};

#[derive(Clone)]
pub struct QueueApi {
    pub queue: Queue,
    pub dossier: DossierClient,
    pub classifier: Arc<Classifier>,
    /// The rules studio: where publications go, the labelled corpus.
    pub studio: Arc<crate::studio::Studio>,
    /// Cancelled when the role stops: ends the server streams, so they do
    /// not hold up a graceful shutdown.
    pub streams: tokio_util::sync::CancellationToken,
}

fn status_slug(s: pb::WorkItemStatus) -> Option<&'static str> {
    use pb::WorkItemStatus as S;
    Some(match s {
        S::Pending => queue::PENDING,
        S::Offered => queue::OFFERED,
        S::Assigned => queue::ASSIGNED,
        S::Wrapping => queue::WRAPPING,
        S::Completed => queue::COMPLETED,
        S::Cancelled => queue::CANCELLED,
        S::Unspecified => return None,
    })
}

fn status_pb(s: &str) -> pb::WorkItemStatus {
    use pb::WorkItemStatus as S;
    match s {
        "pending" => S::Pending,
        "offered" => S::Offered,
        "assigned" => S::Assigned,
        "wrapping" => S::Wrapping,
        "completed" => S::Completed,
        "cancelled" => S::Cancelled,
        _ => S::Unspecified,
    }
}

fn presence_slug(p: pb::Presence) -> Option<&'static str> {
    use pb::Presence as P;
    Some(match p {
        P::Available => "available",
        P::Busy => "busy",
        P::Away => "away",
        P::Offline => "offline",
        P::Unspecified => return None,
    })
}

fn duration_pb(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.num_seconds(),
        nanos: (d.subsec_nanos()).max(0),
    }
}

fn queue_err<'a>(context: &'static str, id: &'a str) -> impl Fn(QueueError) -> Status + 'a {
    move |e| match e {
        QueueError::Db(e) => internal(context, e),
        QueueError::NotFound => not_found("work item", id),
        QueueError::Conflict(msg) => failed_precondition("STATE", &format!("work-items/{id}"), msg),
    }
}

fn required_id(id: &str) -> Result<&str, Status> {
    let id = id.trim();
    if id.is_empty() {
        return Err(invalid_argument("id", "is required"));
    }
    Ok(id)
}

impl QueueApi {
    fn agent_pb(&self, a: agent::Model, loads: &queue::Loads) -> pb::Agent {
        use pb::Presence as P;
        let presence = match a.presence.as_str() {
            "available" => P::Available,
            "busy" => P::Busy,
            "away" => P::Away,
            "offline" => P::Offline,
            _ => P::Unspecified,
        };
        let empty = BTreeMap::new();
        let load = loads.get(&a.id).unwrap_or(&empty);
        let capacities = self
            .queue
            .capacities(&a)
            .into_iter()
            .map(|(ch, cap)| pb::ChannelCapacity {
                channel: Channel::from_slug(&ch).unwrap_or(Channel::Unspecified) as i32,
                capacity: cap,
                load: load.get(&ch).copied().unwrap_or(0),
            })
            .collect();
        pb::Agent {
            presence: presence as i32,
            update_time: Some(timestamp(a.updated_at)),
            accept_offers: a.accept_offers,
            skills: split(&a.skills),
            queues: self.queue.agent_queues(&a),
            capacities,
            missed_offers: a.missed_offers,
            id: a.id,
        }
    }

    async fn agent_reply(&self, a: agent::Model) -> Result<Response<pb::Agent>, Status> {
        let loads = self
            .queue
            .loads(Some(&a.id))
            .await
            .map_err(internal_err("agent load"))?;
        Ok(Response::new(self.agent_pb(a, &loads)))
    }

    fn stats_pb(&self, queue_id: &str, window: Duration, s: Stats) -> pb::QueueStatistics {
        pb::QueueStatistics {
            queue_id: queue_id.to_owned(),
            compute_time: Some(timestamp(self.queue.now())),
            by_status: s
                .by_status
                .iter()
                .map(|(st, n)| pb::StatusCount {
                    status: status_pb(st) as i32,
                    count: *n,
                })
                .collect(),
            pending_by_priority: s
                .pending_by_priority
                .iter()
                .rev()
                .map(|(p, n)| pb::PriorityCount {
                    priority: *p,
                    count: *n,
                })
                .collect(),
            longest_wait: Some(duration_pb(s.longest_wait)),
            available_agents: s.available_agents,
            eligible_agents: s.eligible_agents,
            window: Some(duration_pb(window)),
            entered: s.entered,
            completed: s.completed,
            cancelled: s.cancelled,
            average_wait: Some(duration_pb(s.average_wait)),
            p90_wait: Some(duration_pb(s.p90_wait)),
            accepted: s.accepted,
            sla_due: s.sla_due,
            sla_breached: s.sla_breached,
            sla_breach_rate: if s.sla_due > 0 {
                s.sla_breached as f64 / s.sla_due as f64
            } else {
                0.0
            },
        }
    }

    fn queue_arg(&self, field: &str, id: &str) -> Result<String, Status> {
        let id = id.trim();
        if id.is_empty() {
            return Ok(self.queue.settings().default_queue.clone());
        }
        if !self.queue.settings().queues.contains_key(id) {
            return Err(invalid_argument(field, format!("unknown queue `{id}`")));
        }
        Ok(id.to_owned())
    }

    fn window_arg(w: Option<&prost_types::Duration>) -> Result<Duration, Status> {
        match w {
            None => Ok(Duration::hours(24)),
            Some(d) if d.seconds <= 0 || d.seconds > 31 * 86_400 => Err(invalid_argument(
                "window",
                "must be between 1 second and 31 days",
            )),
            Some(d) => Ok(Duration::seconds(d.seconds)),
        }
    }

    /// Supervisors act on any item; an agent only on an item it holds.
    fn holder(caller: &Principal) -> Option<&str> {
        if caller.has(Role::Supervisor) {
            None
        } else {
            Some(caller.subject.as_str())
        }
    }
}

pub fn item_pb(m: work_item::Model) -> pb::WorkItem {
    let warnings = crate::queue::warnings_of(&m);
    let candidates = crate::queue::candidates_of(&m)
        .into_iter()
        .map(|c| pb::CitizenCandidate {
            citizen_id: c.citizen_id,
            confidence: c.confidence,
            why: c.why,
        })
        .collect();
    let sla_state = match m.sla_state.as_str() {
        "ok" => pb::SlaState::Ok,
        "near" => pb::SlaState::Near,
        "breached" => pb::SlaState::Breached,
        _ => pb::SlaState::Unspecified,
    };
    pb::WorkItem {
        channel: Channel::from_slug(&m.channel).unwrap_or(Channel::Unspecified) as i32,
        status: status_pb(&m.status) as i32,
        enter_time: Some(timestamp(m.enter_time)),
        assign_time: m.assign_time.map(timestamp),
        complete_time: m.complete_time.map(timestamp),
        skills: split(&m.skills),
        sla_due_time: has_sla(m.sla_due).map(timestamp),
        sla_state: sla_state as i32,
        offer_time: m.offer_time.map(timestamp),
        offer_expire_time: m.offer_expires.map(timestamp),
        wrap_time: m.wrap_time.map(timestamp),
        cancel_time: m.cancel_time.map(timestamp),
        id: m.id,
        intake_event_id: m.intake_event_id,
        priority: m.priority,
        dossier_id: m.dossier_id,
        dossier_reference: m.dossier_reference,
        citizen_id: m.citizen_id,
        process_id: m.process_id,
        summary: m.summary,
        agent_id: m.agent_id.unwrap_or_default(),
        outcome: m.outcome.unwrap_or_default(),
        queue_id: m.queue_id,
        previous_queue_id: m.previous_queue_id.unwrap_or_default(),
        base_priority: m.base_priority,
        candidates,
        rule_id: m.rule_id,
        correlation: m.correlation,
        callback_attempts: u32::try_from(m.callback_attempts).unwrap_or(0),
        callback_unanswered: u32::try_from(m.callback_unanswered).unwrap_or(0),
        warnings,
    }
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<pb::QueueStatistics, Status>> + Send>>;
type OfferStream = Pin<Box<dyn Stream<Item = Result<pb::WorkItem, Status>> + Send>>;

#[tonic::async_trait]
impl pb::queue_service_server::QueueService for QueueApi {
    #[tracing::instrument(skip_all)]
    async fn set_presence(
        &self,
        request: Request<pb::SetPresenceRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        let presence = pb::Presence::try_from(req.presence)
            .ok()
            .and_then(presence_slug)
            .ok_or_else(|| {
                invalid_argument("presence", "must be AVAILABLE, BUSY, AWAY or OFFLINE")
            })?;
        let a = self
            .queue
            .set_presence(&caller.subject, presence, req.accept_offers)
            .await
            .map_err(internal_err("set presence"))?;
        tracing::info!(agent_id = %caller.subject, presence, "agent presence");
        self.agent_reply(a).await
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let caller = auth::caller(&request)?;
        let id = request.into_inner().id.trim().to_owned();
        let id = if id.is_empty() {
            caller.subject.clone()
        } else {
            id
        };
        if id != caller.subject && !caller.has(Role::Supervisor) {
            return Err(Status::permission_denied(
                "only supervisors read other agents",
            ));
        }
        let a = self
            .queue
            .agent(&id)
            .await
            .map_err(internal_err("get agent"))?
            .ok_or_else(|| not_found("agent", &id))?;
        self.agent_reply(a).await
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.page_size, 50, 500)?;
        let presence = match pb::Presence::try_from(req.presence) {
            Ok(p) => presence_slug(p),
            Err(_) => return Err(invalid_argument("presence", "is not a known presence")),
        };
        let queue_id = if req.queue_id.trim().is_empty() {
            None
        } else {
            Some(self.queue_arg("queue_id", &req.queue_id)?)
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(
                req.page_token
                    .strip_prefix("a|")
                    .ok_or_else(|| {
                        invalid_argument("page_token", "is not a token this API issued")
                    })?
                    .to_owned(),
            )
        };
        // The queue filter applies after the page is read (an agent's queues
        // default from configuration): pages may come back shorter.
        let page = self
            .queue
            .list_agents(presence, after.as_deref(), limit)
            .await
            .map_err(internal_err("list agents"))?;
        let next_page_token = match page.last() {
            Some(last) if page.len() as u64 == limit => format!("a|{}", last.id),
            _ => String::new(),
        };
        let loads = self
            .queue
            .loads(None)
            .await
            .map_err(internal_err("list agents"))?;
        let agents = page
            .into_iter()
            .filter(|a| {
                queue_id
                    .as_ref()
                    .is_none_or(|q| self.queue.agent_queues(a).contains(q))
            })
            .map(|a| self.agent_pb(a, &loads))
            .collect();
        Ok(Response::new(pb::ListAgentsResponse {
            agents,
            next_page_token,
        }))
    }

    async fn update_agent(
        &self,
        request: Request<pb::UpdateAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let req = request.into_inner();
        let id = required_id(&req.id)?.to_owned();
        let slug = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        };
        for (i, s) in req.skills.iter().enumerate() {
            if !slug(s) {
                return Err(invalid_argument(
                    &format!("skills[{i}]"),
                    "lower-case letters, digits and '-'",
                ));
            }
        }
        for (i, q) in req.queues.iter().enumerate() {
            if !self.queue.settings().queues.contains_key(q) {
                return Err(invalid_argument(
                    &format!("queues[{i}]"),
                    format!("unknown queue `{q}`"),
                ));
            }
        }
        let mut caps = BTreeMap::new();
        for (i, c) in req.capacities.iter().enumerate() {
            let ch = Channel::try_from(c.channel).unwrap_or(Channel::Unspecified);
            if ch == Channel::Unspecified {
                return Err(invalid_argument(
                    &format!("capacities[{i}].channel"),
                    "is required",
                ));
            }
            if !(0..=100).contains(&c.capacity) {
                return Err(invalid_argument(
                    &format!("capacities[{i}].capacity"),
                    "must be between 0 and 100",
                ));
            }
            caps.insert(ch.slug().to_owned(), c.capacity);
        }
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if let Some(p) = paths
            .iter()
            .find(|p| !matches!(p.as_str(), "skills" | "queues" | "capacities"))
        {
            return Err(invalid_argument(
                "update_mask",
                format!("`{p}` cannot be updated (skills, queues, capacities)"),
            ));
        }
        let wants = |f: &str| paths.is_empty() || paths.iter().any(|p| p == f);
        let a = self
            .queue
            .update_agent(
                &id,
                wants("skills").then_some(req.skills.as_slice()),
                wants("queues").then_some(req.queues.as_slice()),
                wants("capacities").then_some(&caps),
            )
            .await
            .map_err(internal_err("update agent"))?;
        self.agent_reply(a).await
    }

    #[tracing::instrument(skip_all)]
    async fn take_next(
        &self,
        request: Request<pb::TakeNextRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let caller = auth::caller(&request)?;
        let only = request.into_inner().queue_id;
        let only = if only.trim().is_empty() {
            None
        } else {
            Some(self.queue_arg("queue_id", &only)?)
        };
        let agent = self
            .queue
            .agent(&caller.subject)
            .await
            .map_err(internal_err("take next"))?
            .filter(|a| a.presence == "available")
            .ok_or_else(|| {
                failed_precondition(
                    "PRESENCE",
                    &format!("agents/{}", caller.subject),
                    "passez votre statut à « disponible » avant de prendre une demande",
                )
            })?;
        let item = self
            .queue
            .take_next(&agent, only.as_deref())
            .await
            .map_err(|e| match e {
                QueueError::Conflict(m) => {
                    failed_precondition("CAPACITY", &format!("agents/{}", caller.subject), m)
                }
                e => internal("take next", e),
            })?
            .ok_or_else(|| Status::not_found("aucune demande en attente pour vous"))?;
        metrics::counter!("guichet_routing_assigned_total", "channel" => item.channel.clone())
            .increment(1);
        tracing::info!(work_item_id = %item.id, agent_id = %caller.subject, "work item assigned");
        Ok(Response::new(item_pb(item)))
    }

    type WatchOffersStream = OfferStream;

    async fn watch_offers(
        &self,
        request: Request<pb::WatchOffersRequest>,
    ) -> Result<Response<OfferStream>, Status> {
        let caller = auth::caller(&request)?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let queue = self.queue.clone();
        let mut changes = self.queue.subscribe();
        let stop = self.streams.clone();
        tokio::spawn(async move {
            // (item, offer time) already sent: a re-offer after a timeout
            // elsewhere is a new offer.
            let mut sent = std::collections::HashSet::new();
            let filter = ListFilter {
                status: Some(queue::OFFERED.to_owned()),
                agent_id: Some(caller.subject.clone()),
                ..Default::default()
            };
            loop {
                match queue.list(&filter, None, 100).await {
                    Ok(items) => {
                        for it in items {
                            if sent.insert((it.id.clone(), it.offer_time))
                                && tx.send(Ok(item_pb(it))).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(internal("watch offers", e))).await;
                        return;
                    }
                }
                // Offers made by this replica wake at once, others' within 1 s.
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = stop.cancelled() => return,
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(StdDuration::from_secs(1)) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn accept_offer(
        &self,
        request: Request<pb::AcceptOfferRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        let id = required_id(&req.id)?;
        let item = self
            .queue
            .accept_offer(id, &caller.subject)
            .await
            .map_err(queue_err("accept offer", id))?;
        metrics::counter!("guichet_routing_assigned_total", "channel" => item.channel.clone())
            .increment(1);
        metrics::counter!("guichet_routing_offers_total", "outcome" => "accepted").increment(1);
        tracing::info!(work_item_id = %item.id, agent_id = %caller.subject, "offer accepted");
        Ok(Response::new(item_pb(item)))
    }

    async fn reject_offer(
        &self,
        request: Request<pb::RejectOfferRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        let id = required_id(&req.id)?;
        if req.reason.chars().count() > 500 {
            return Err(invalid_argument("reason", "at most 500 characters"));
        }
        let item = self
            .queue
            .reject_offer(id, &caller.subject, req.reason.trim())
            .await
            .map_err(queue_err("reject offer", id))?;
        metrics::counter!("guichet_routing_offers_total", "outcome" => "rejected").increment(1);
        tracing::info!(work_item_id = %item.id, agent_id = %caller.subject, "offer rejected");
        Ok(Response::new(item_pb(item)))
    }

    async fn wrap_up_work_item(
        &self,
        request: Request<pb::WrapUpWorkItemRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        let id = required_id(&req.id)?;
        let item = self
            .queue
            .wrap_up(id, &caller.subject)
            .await
            .map_err(queue_err("wrap up", id))?;
        Ok(Response::new(item_pb(item)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_work_item(
        &self,
        request: Request<pb::GetWorkItemRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let req = request.into_inner();
        let by_event = req.intake_event_id.trim();
        let item = if req.id.trim().is_empty() && !by_event.is_empty() {
            self.queue
                .by_intake_event(by_event)
                .await
                .map_err(internal_err("get work item"))?
                .ok_or_else(|| not_found("work item of intake event", by_event))?
        } else {
            let id = required_id(&req.id)?;
            self.queue
                .get(id)
                .await
                .map_err(internal_err("get work item"))?
                .ok_or_else(|| not_found("work item", id))?
        };
        Ok(Response::new(item_pb(item)))
    }

    #[tracing::instrument(skip_all)]
    async fn complete_work_item(
        &self,
        request: Request<pb::CompleteWorkItemRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        let id = required_id(&req.id)?;
        let outcome = req.outcome.trim();
        if outcome.is_empty() || outcome.chars().count() > 4000 {
            return Err(invalid_argument("outcome", "must be 1 to 4000 characters"));
        }
        let item = self
            .queue
            .get(id)
            .await
            .map_err(internal_err("complete work item"))?
            .ok_or_else(|| not_found("work item", id))?;
        if !matches!(item.status.as_str(), queue::ASSIGNED | queue::WRAPPING)
            || item.agent_id.as_deref() != Some(caller.subject.as_str())
        {
            return Err(failed_precondition(
                "ASSIGNMENT",
                &format!("work-items/{id}"),
                "cette demande ne vous est pas attribuée",
            ));
        }
        // The outcome goes on the dossier's timeline first (idempotent on a
        // key derived from the item), then the item is closed: a retry after
        // a failure in between records nothing twice. An item without a
        // dossier (nothing identified the citizen) has no timeline.
        if !item.dossier_id.is_empty() {
            let mut dossier = self.dossier.clone();
            dossier
                .record_contact(dpb::RecordContactRequest {
                    dossier_id: item.dossier_id.clone(),
                    kind: dpb::EntryKind::Outcome as i32,
                    channel: Channel::from_slug(&item.channel).unwrap_or(Channel::Unspecified)
                        as i32,
                    occur_time: None,
                    summary: outcome.to_owned(),
                    actor: caller.subject.clone(),
                    source_event_id: format!("work-item-completed:{}", item.id),
                    citizen_id: String::new(),
                })
                .await
                .map_err(|s| unavailable("record outcome on the dossier", s.message()))?;
        }
        let done = self
            .queue
            .complete(id, &caller.subject, outcome)
            .await
            .map_err(queue_err("complete work item", id))?;
        metrics::counter!("guichet_routing_completed_total", "channel" => done.channel.clone())
            .increment(1);
        tracing::info!(work_item_id = %done.id, agent_id = %caller.subject, "work item completed");
        Ok(Response::new(item_pb(done)))
    }

    #[tracing::instrument(skip_all, fields(work_item_id = tracing::field::Empty))]
    async fn record_callback_attempt(
        &self,
        request: Request<pb::RecordCallbackAttemptRequest>,
    ) -> Result<Response<pb::CallbackAttempt>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        let id = required_id(&req.id)?;
        tracing::Span::current().record("work_item_id", id);
        let outcome = match pb::CallbackOutcome::try_from(req.outcome) {
            Ok(pb::CallbackOutcome::Unspecified) | Err(_) => {
                return Err(invalid_argument(
                    "outcome",
                    "must be ANSWERED, NO_ANSWER or VOICEMAIL",
                ));
            }
            Ok(o) => o,
        };
        let note = req.note.trim();
        if note.chars().count() > 2000 {
            return Err(invalid_argument("note", "must be at most 2000 characters"));
        }
        let item = self
            .queue
            .get(id)
            .await
            .map_err(internal_err("record callback attempt"))?
            .ok_or_else(|| not_found("work item", id))?;
        if !matches!(item.status.as_str(), queue::ASSIGNED | queue::WRAPPING)
            || item.agent_id.as_deref() != Some(caller.subject.as_str())
        {
            return Err(failed_precondition(
                "ASSIGNMENT",
                &format!("work-items/{id}"),
                "cette demande ne vous est pas attribuée",
            ));
        }
        if item.channel != "telephony" {
            return Err(failed_precondition(
                "CHANNEL",
                &format!("work-items/{id}"),
                "on ne rappelle que les demandes reçues par téléphone",
            ));
        }
        let limit = self.queue.settings().callback_attempts;
        let n = item.callback_attempts + 1;
        let answered = outcome == pb::CallbackOutcome::Answered;
        let unanswered = item.callback_unanswered + i32::from(!answered);
        let what = match outcome {
            pb::CallbackOutcome::Answered => "le citoyen a répondu".to_owned(),
            pb::CallbackOutcome::Voicemail => format!(
                "messagerie vocale, message laissé (tentative sans réponse {unanswered} sur {limit})"
            ),
            _ => format!("pas de réponse (tentative sans réponse {unanswered} sur {limit})"),
        };
        let closing = format!("Rappel sans réponse après {limit} tentatives : demande close");
        let mut text = format!("Rappel n° {n} : {what}");
        if !note.is_empty() {
            text.push_str(&format!(" — {note}"));
        }
        if !answered && unanswered >= limit {
            text.push_str(&format!(". {closing}."));
        }
        // On the timeline first (idempotent on the attempt's number), then
        // counted: a retry after a failure in between records it once.
        if !item.dossier_id.is_empty() || !item.citizen_id.is_empty() {
            let mut dossier = self.dossier.clone();
            dossier
                .record_contact(dpb::RecordContactRequest {
                    dossier_id: item.dossier_id.clone(),
                    citizen_id: if item.dossier_id.is_empty() {
                        item.citizen_id.clone()
                    } else {
                        String::new()
                    },
                    kind: dpb::EntryKind::Contact as i32,
                    channel: Channel::Telephony as i32,
                    occur_time: None,
                    summary: text.clone(),
                    actor: caller.subject.clone(),
                    source_event_id: format!("callback-attempt:{}:{n}", item.id),
                })
                .await
                .map_err(|s| unavailable("record the callback on the timeline", s.message()))?;
        }
        let done = self
            .queue
            .callback_attempt(id, &caller.subject, n, answered, &closing)
            .await
            .map_err(queue_err("record callback attempt", id))?;
        metrics::counter!("guichet_routing_callback_attempts_total", "outcome" => match outcome {
            pb::CallbackOutcome::Answered => "answered",
            pb::CallbackOutcome::Voicemail => "voicemail",
            _ => "no_answer",
        })
        .increment(1);
        if done.closed {
            tracing::info!(work_item_id = %id, attempts = n, "callback request closed after unanswered attempts");
        }
        Ok(Response::new(pb::CallbackAttempt {
            attempt: u32::try_from(done.attempt).unwrap_or(0),
            unanswered: u32::try_from(done.unanswered).unwrap_or(0),
            closed: done.closed,
            item: Some(item_pb(done.item)),
            text,
        }))
    }

    async fn resolve_citizen_candidate(
        &self,
        request: Request<pb::ResolveCitizenCandidateRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let caller = auth::caller(&request)?;
        let on_behalf = request.metadata().get("authorization").cloned();
        let req = request.into_inner();
        let id = required_id(&req.id)?;
        let candidate = req.citizen_id.trim();
        let item = self
            .queue
            .get(id)
            .await
            .map_err(|e| internal("get work item", e))?
            .ok_or_else(|| not_found("work item", id))?;
        let known = crate::queue::candidates_of(&item);
        let Some(c) = known.iter().find(|c| c.citizen_id == candidate) else {
            return Err(invalid_argument(
                "citizen_id",
                "is not a candidate of this work item",
            ));
        };
        let mut dossier = self.dossier.clone();
        if req.confirm {
            // On the agent's behalf: dossier checks and records the agent.
            let mut merge = Request::new(dpb::MergeCitizensRequest {
                target_citizen_id: candidate.to_owned(),
                source_citizen_id: item.citizen_id.clone(),
                reason: format!("Rapprochement confirmé depuis une demande ({})", c.why),
            });
            if let Some(auth) = on_behalf {
                merge.metadata_mut().insert("authorization", auth);
            }
            dossier.merge_citizens(merge).await?;
        } else {
            for (on, other) in [
                (&item.citizen_id, candidate),
                (&candidate.to_owned(), item.citizen_id.as_str()),
            ] {
                dossier
                    .record_contact(dpb::RecordContactRequest {
                        citizen_id: on.clone(),
                        kind: dpb::EntryKind::Note as i32,
                        channel: Channel::from_slug(&item.channel).unwrap_or(Channel::Unspecified)
                            as i32,
                        summary: format!(
                            "Rapprochement écarté par {} : pas la même personne que la fiche {other} ({})",
                            caller.subject, c.why
                        ),
                        actor: caller.subject.clone(),
                        source_event_id: format!("candidate-rejected:{}:{on}:{other}", item.id),
                        ..Default::default()
                    })
                    .await?;
            }
        }
        let settled = self
            .queue
            .settle_candidate(id, candidate, req.confirm)
            .await
            .map_err(queue_err("resolve citizen candidate", id))?;
        metrics::counter!("guichet_routing_citizen_candidates_total", "outcome" => if req.confirm { "confirmed" } else { "rejected" })
            .increment(1);
        tracing::info!(work_item_id = %id, confirmed = req.confirm, "citizen candidate settled");
        Ok(Response::new(item_pb(settled)))
    }

    async fn cancel_work_item(
        &self,
        request: Request<pb::CancelWorkItemRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        let id = required_id(&req.id)?;
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(invalid_argument("reason", "must be 1 to 500 characters"));
        }
        let item = self
            .queue
            .cancel(id, Self::holder(&caller), reason)
            .await
            .map_err(queue_err("cancel work item", id))?;
        metrics::counter!("guichet_routing_cancelled_total", "channel" => item.channel.clone())
            .increment(1);
        Ok(Response::new(item_pb(item)))
    }

    async fn transfer_work_item(
        &self,
        request: Request<pb::TransferWorkItemRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        let id = required_id(&req.id)?;
        let target = if req.queue_id.trim().is_empty() {
            None
        } else {
            Some(self.queue_arg("queue_id", &req.queue_id)?)
        };
        if req.reason.chars().count() > 500 {
            return Err(invalid_argument("reason", "at most 500 characters"));
        }
        let item = self
            .queue
            .transfer(
                id,
                target.as_deref(),
                Self::holder(&caller),
                req.reason.trim(),
            )
            .await
            .map_err(queue_err("transfer work item", id))?;
        tracing::info!(work_item_id = %item.id, queue_id = %item.queue_id, "work item transferred");
        Ok(Response::new(item_pb(item)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_work_items(
        &self,
        request: Request<pb::ListWorkItemsRequest>,
    ) -> Result<Response<pb::ListWorkItemsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.page_size, 50, 500)?;
        let status = match pb::WorkItemStatus::try_from(req.status) {
            Ok(s) => status_slug(s).map(str::to_owned),
            Err(_) => return Err(invalid_argument("status", "is not a known status")),
        };
        let queue_id = if req.queue_id.trim().is_empty() {
            None
        } else {
            Some(self.queue_arg("queue_id", &req.queue_id)?)
        };
        let agent_id = Some(req.agent_id.trim().to_owned()).filter(|a| !a.is_empty());
        let after =
            if req.page_token.is_empty() {
                None
            } else {
                Some(Cursor::decode(&req.page_token).ok_or_else(|| {
                    invalid_argument("page_token", "is not a token this API issued")
                })?)
            };
        let channel = match Channel::try_from(req.channel) {
            Ok(Channel::Unspecified) => None,
            Ok(c) => Some(c.slug().to_owned()),
            Err(_) => return Err(invalid_argument("channel", "is not a known channel")),
        };
        let sla_state = match pb::SlaState::try_from(req.sla_state) {
            Ok(pb::SlaState::Unspecified) => None,
            Ok(pb::SlaState::Ok) => Some("ok".to_owned()),
            Ok(pb::SlaState::Near) => Some("near".to_owned()),
            Ok(pb::SlaState::Breached) => Some("breached".to_owned()),
            Err(_) => return Err(invalid_argument("sla_state", "is not a known SLA state")),
        };
        let process_id = Some(req.process_id.trim().to_owned()).filter(|p| !p.is_empty());
        let filter = ListFilter {
            status,
            queue_id,
            agent_id,
            channel,
            process_id,
            sla_state,
        };
        let items = self
            .queue
            .list(&filter, after.as_ref(), limit)
            .await
            .map_err(internal_err("list work items"))?;
        let next_page_token = match items.last() {
            Some(last) if items.len() as u64 == limit => Cursor::of(last).encode(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListWorkItemsResponse {
            items: items.into_iter().map(item_pb).collect(),
            next_page_token,
        }))
    }

    async fn list_queues(
        &self,
        _request: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let queues = self
            .queue
            .settings()
            .queues
            .iter()
            .map(|(id, q)| pb::Queue {
                id: id.clone(),
                display_name: q.display_name.clone(),
                ageing_step: q.ageing_step,
                ageing_interval: Some(duration_pb(Duration::seconds(
                    q.ageing_interval_secs as i64,
                ))),
                ageing_max: q.ageing_max,
            })
            .collect();
        Ok(Response::new(pb::ListQueuesResponse { queues }))
    }

    async fn get_queue_statistics(
        &self,
        request: Request<pb::GetQueueStatisticsRequest>,
    ) -> Result<Response<pb::QueueStatistics>, Status> {
        let req = request.into_inner();
        let queue_id = self.queue_arg("queue_id", &req.queue_id)?;
        let window = Self::window_arg(req.window.as_ref())?;
        let s = self
            .queue
            .stats(&queue_id, window)
            .await
            .map_err(internal_err("queue statistics"))?;
        Ok(Response::new(self.stats_pb(&queue_id, window, s)))
    }

    type WatchQueueStream = StatsStream;

    async fn watch_queue(
        &self,
        request: Request<pb::WatchQueueRequest>,
    ) -> Result<Response<StatsStream>, Status> {
        let req = request.into_inner();
        let queue_id = self.queue_arg("queue_id", &req.queue_id)?;
        let window = Self::window_arg(req.window.as_ref())?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let api = self.clone();
        let mut changes = self.queue.subscribe();
        let stop = self.streams.clone();
        tokio::spawn(async move {
            let mut last: Option<Stats> = None;
            loop {
                match api.queue.stats(&queue_id, window).await {
                    Ok(s) => {
                        // Waiting times grow by themselves: send when counts change.
                        let key = Stats {
                            longest_wait: Duration::zero(),
                            ..s.clone()
                        };
                        if last.as_ref() != Some(&key) {
                            last = Some(key);
                            if tx
                                .send(Ok(api.stats_pb(&queue_id, window, s)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(internal("watch queue", e))).await;
                        return;
                    }
                }
                // Local changes wake at once; other replicas' show within 2 s.
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = stop.cancelled() => return,
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(StdDuration::from_secs(2)) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn explain_classification(
        &self,
        request: Request<pb::ExplainClassificationRequest>,
    ) -> Result<Response<pb::Classification>, Status> {
        let intake = request
            .into_inner()
            .intake
            .ok_or_else(|| invalid_argument("intake", "is required"))?;
        if intake.channel() == Channel::Unspecified {
            return Err(invalid_argument("intake.channel", "is required"));
        }
        let c = self.classifier.classify(&intake);
        Ok(Response::new(pb::Classification {
            rule_id: c.rule_id,
            process_id: c.process_id,
            priority: c.priority,
            skills: c.skills,
            queue_id: c.queue_id,
            sla_due_time: c.sla_due.map(timestamp),
            evaluations: c
                .evaluations
                .into_iter()
                .map(|e| pb::RuleEvaluation {
                    rule_id: e.rule_id,
                    matched: e.matched,
                    reasons: e.reasons,
                })
                .collect(),
            rules_version: c.rules_version,
            last_reload_error: self.classifier.rules.last_error(),
        }))
    }

    async fn get_routing_rules(
        &self,
        request: Request<pb::GetRoutingRulesRequest>,
    ) -> Result<Response<pb::RoutingRules>, Status> {
        self.get_rules(request).await.map(Response::new)
    }

    async fn try_routing_rules(
        &self,
        request: Request<pb::TryRoutingRulesRequest>,
    ) -> Result<Response<pb::RulesTrial>, Status> {
        self.try_rules(request).await.map(Response::new)
    }

    async fn publish_routing_rules(
        &self,
        request: Request<pb::PublishRoutingRulesRequest>,
    ) -> Result<Response<pb::RulesPublication>, Status> {
        self.publish_rules(request).await.map(Response::new)
    }

    async fn list_rules_publications(
        &self,
        request: Request<pb::ListRulesPublicationsRequest>,
    ) -> Result<Response<pb::ListRulesPublicationsResponse>, Status> {
        self.list_publications(request).await.map(Response::new)
    }
}
