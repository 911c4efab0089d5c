//! `guichet.routing.v1.QueueService`: agents work the unified queue.

use guichet_platform::auth::{Role, require};
use guichet_platform::grpc::{
    failed_precondition, internal_err, invalid_argument, not_found, page_size, unavailable,
};
use guichet_proto::convert::timestamp;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::Channel;
use guichet_proto::routing::v1 as pb;
use tonic::{Request, Response, Status};

use crate::db::entities::{agent, work_item};
use crate::intake::DossierClient;
use crate::queue::{self, Queue};

const AGENTS: &[Role] = &[Role::Agent];
const READERS: &[Role] = &[Role::Agent, Role::Service];

#[derive(Clone)]
pub struct QueueApi {
    pub queue: Queue,
    pub dossier: DossierClient,
}

fn status_slug(s: pb::WorkItemStatus) -> Option<&'static str> {
    use pb::WorkItemStatus as S;
    Some(match s {
        S::Pending => "pending",
        S::Offered => "offered",
        S::Assigned => "assigned",
        S::Wrapping => "wrapping",
        S::Completed => "completed",
        S::Cancelled => "cancelled",
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

fn agent_pb(a: agent::Model) -> pb::Agent {
    use pb::Presence as P;
    let presence = match a.presence.as_str() {
        "available" => P::Available,
        "busy" => P::Busy,
        "away" => P::Away,
        "offline" => P::Offline,
        _ => P::Unspecified,
    };
    pb::Agent {
        id: a.id,
        presence: presence as i32,
        update_time: Some(timestamp(a.updated_at)),
    }
}

pub fn item_pb(m: work_item::Model) -> pb::WorkItem {
    pb::WorkItem {
        channel: Channel::from_slug(&m.channel).unwrap_or(Channel::Unspecified) as i32,
        status: status_pb(&m.status) as i32,
        enter_time: Some(timestamp(m.enter_time)),
        assign_time: m.assign_time.map(timestamp),
        complete_time: m.complete_time.map(timestamp),
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
    }
}

#[tonic::async_trait]
impl pb::queue_service_server::QueueService for QueueApi {
    #[tracing::instrument(skip_all)]
    async fn set_presence(
        &self,
        request: Request<pb::SetPresenceRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let caller = require(&request, AGENTS)?;
        let presence = pb::Presence::try_from(request.into_inner().presence)
            .ok()
            .and_then(presence_slug)
            .ok_or_else(|| {
                invalid_argument("presence", "must be AVAILABLE, BUSY, AWAY or OFFLINE")
            })?;
        let a = self
            .queue
            .set_presence(&caller.subject, presence)
            .await
            .map_err(internal_err("set presence"))?;
        tracing::info!(agent_id = %caller.subject, presence, "agent presence");
        Ok(Response::new(agent_pb(a)))
    }

    #[tracing::instrument(skip_all)]
    async fn take_next(
        &self,
        request: Request<pb::TakeNextRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let caller = require(&request, AGENTS)?;
        let available = self
            .queue
            .agent(&caller.subject)
            .await
            .map_err(internal_err("take next"))?
            .is_some_and(|a| a.presence == "available");
        if !available {
            return Err(failed_precondition(
                "PRESENCE",
                &format!("agents/{}", caller.subject),
                "set your presence to AVAILABLE before taking work",
            ));
        }
        let item = self
            .queue
            .take_next(&caller.subject)
            .await
            .map_err(internal_err("take next"))?
            .ok_or_else(|| Status::not_found("the queue is empty"))?;
        metrics::counter!("guichet_routing_assigned_total", "channel" => item.channel.clone())
            .increment(1);
        tracing::info!(work_item_id = %item.id, agent_id = %caller.subject, "work item assigned");
        Ok(Response::new(item_pb(item)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_work_item(
        &self,
        request: Request<pb::GetWorkItemRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        require(&request, READERS)?;
        let id = request.into_inner().id;
        if id.trim().is_empty() {
            return Err(invalid_argument("id", "is required"));
        }
        let item = self
            .queue
            .get(id.trim())
            .await
            .map_err(internal_err("get work item"))?
            .ok_or_else(|| not_found("work item", &id))?;
        Ok(Response::new(item_pb(item)))
    }

    #[tracing::instrument(skip_all)]
    async fn complete_work_item(
        &self,
        request: Request<pb::CompleteWorkItemRequest>,
    ) -> Result<Response<pb::WorkItem>, Status> {
        let caller = require(&request, AGENTS)?;
        let req = request.into_inner();
        let id = req.id.trim();
        if id.is_empty() {
            return Err(invalid_argument("id", "is required"));
        }
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
        if item.status != queue::ASSIGNED
            || item.agent_id.as_deref() != Some(caller.subject.as_str())
        {
            return Err(failed_precondition(
                "ASSIGNMENT",
                &format!("work-items/{id}"),
                "this work item is not assigned to you",
            ));
        }
        // The outcome goes on the dossier's timeline first (idempotent on a
        // key derived from the item), then the item is closed: a retry after
        // a failure in between records nothing twice.
        let mut dossier = self.dossier.clone();
        dossier
            .record_contact(dpb::RecordContactRequest {
                dossier_id: item.dossier_id.clone(),
                kind: dpb::EntryKind::Outcome as i32,
                channel: Channel::from_slug(&item.channel).unwrap_or(Channel::Unspecified) as i32,
                occur_time: None,
                summary: outcome.to_owned(),
                actor: caller.subject.clone(),
                source_event_id: format!("work-item-completed:{}", item.id),
            })
            .await
            .map_err(|s| unavailable("record outcome on the dossier", s.message()))?;
        let done = self
            .queue
            .complete(id, &caller.subject, outcome)
            .await
            .map_err(internal_err("complete work item"))?
            .ok_or_else(|| {
                failed_precondition(
                    "ASSIGNMENT",
                    &format!("work-items/{id}"),
                    "this work item is not assigned to you",
                )
            })?;
        metrics::counter!("guichet_routing_completed_total", "channel" => done.channel.clone())
            .increment(1);
        tracing::info!(work_item_id = %done.id, agent_id = %caller.subject, "work item completed");
        Ok(Response::new(item_pb(done)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_work_items(
        &self,
        request: Request<pb::ListWorkItemsRequest>,
    ) -> Result<Response<pb::ListWorkItemsResponse>, Status> {
        require(&request, READERS)?;
        let req = request.into_inner();
        let limit = page_size(req.page_size, 50, 500)?;
        let status = match pb::WorkItemStatus::try_from(req.status) {
            Ok(s) => status_slug(s),
            Err(_) => return Err(invalid_argument("status", "is not a known status")),
        };
        let offset = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .strip_prefix("o")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| invalid_argument("page_token", "is not a token this API issued"))?
        };
        let items = self
            .queue
            .list(status, offset, limit)
            .await
            .map_err(internal_err("list work items"))?;
        let next_page_token = if items.len() as u64 == limit {
            format!("o{}", offset + limit)
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListWorkItemsResponse {
            items: items.into_iter().map(item_pb).collect(),
            next_page_token,
        }))
    }
}
