//! The `guichet.dossier.v1.DossierService` gRPC API: proto in, domain types
//! at the edge, store, proto out.

use std::sync::Arc;

use chrono::Utc;
use guichet_platform::auth::{Role, require};
use guichet_platform::grpc::{internal_err, invalid_argument, not_found, page_size};
use guichet_proto::convert::{datetime, timestamp};
use guichet_proto::dossier::v1 as pb;
use guichet_proto::intake::v1::Channel;
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::db::entities::{dossier, timeline};
use crate::store::{CitizenView, Match, NewEntry, Store, TimelineCursor};
use guichet_platform::contact::parse_hint;

const READERS: &[Role] = &[Role::Agent, Role::Service];
const WRITERS: &[Role] = &[Role::Service];

#[derive(Clone)]
pub struct DossierApi {
    store: Store,
    catalog: Arc<Catalog>,
    config: Arc<Config>,
}

impl DossierApi {
    pub fn new(store: Store, catalog: Arc<Catalog>, config: Config) -> Self {
        DossierApi {
            store,
            catalog,
            config: Arc::new(config),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn dossier_pb(&self, d: dossier::Model) -> pb::Dossier {
        let def = self.catalog.get(&d.process_id, d.process_version as u32);
        let state = def.and_then(|p| p.state(&d.state));
        pb::Dossier {
            process_title: def.map(|p| p.title.clone()).unwrap_or_default(),
            state_title: state.map(|s| s.title.clone()).unwrap_or_default(),
            guidance: state
                .map(|s| s.guidance.trim().to_owned())
                .unwrap_or_default(),
            id: d.id,
            reference: d.reference,
            citizen_id: d.citizen_id,
            process_id: d.process_id,
            process_version: d.process_version as u32,
            state: d.state,
            create_time: Some(timestamp(d.created_at)),
            update_time: Some(timestamp(d.updated_at)),
        }
    }
}

fn citizen_pb(v: CitizenView) -> pb::Citizen {
    pb::Citizen {
        create_time: Some(timestamp(v.citizen.created_at)),
        id: v.citizen.id,
        given_name: v.citizen.given_name,
        family_name: v.citizen.family_name,
        phones: v.phones,
        emails: v.emails,
    }
}

fn entry_kind(kind: &str) -> pb::EntryKind {
    match kind {
        "contact" => pb::EntryKind::Contact,
        "outcome" => pb::EntryKind::Outcome,
        "state_change" => pb::EntryKind::StateChange,
        "note" => pb::EntryKind::Note,
        "dossier_opened" => pb::EntryKind::DossierOpened,
        _ => pb::EntryKind::Unspecified,
    }
}

fn entry_kind_slug(kind: pb::EntryKind) -> Option<&'static str> {
    Some(match kind {
        pb::EntryKind::Contact => "contact",
        pb::EntryKind::Outcome => "outcome",
        pb::EntryKind::StateChange => "state_change",
        pb::EntryKind::Note => "note",
        pb::EntryKind::DossierOpened => "dossier_opened",
        pb::EntryKind::Unspecified => return None,
    })
}

fn entry_pb(e: timeline::Model) -> pb::TimelineEntry {
    pb::TimelineEntry {
        kind: entry_kind(&e.kind) as i32,
        channel: Channel::from_slug(&e.channel).unwrap_or(Channel::Unspecified) as i32,
        occur_time: Some(timestamp(e.occurred_at)),
        id: e.id,
        citizen_id: e.citizen_id,
        dossier_id: e.dossier_id.unwrap_or_default(),
        summary: e.summary,
        actor: e.actor,
        source_event_id: e.source_event_id.unwrap_or_default(),
    }
}

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    if s.is_empty() { None } else { Some(s) }
}

fn timeline_page(entries: Vec<timeline::Model>, limit: u64) -> pb::ListTimelineResponse {
    let next_page_token = if entries.len() as u64 == limit {
        entries
            .last()
            .map(|e| {
                TimelineCursor {
                    occurred_at: e.occurred_at,
                    id: e.id.clone(),
                }
                .encode()
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    pb::ListTimelineResponse {
        entries: entries.into_iter().map(entry_pb).collect(),
        next_page_token,
    }
}

fn cursor(token: &str) -> Result<Option<TimelineCursor>, Status> {
    match non_empty(token) {
        None => Ok(None),
        Some(t) => TimelineCursor::decode(t)
            .map(Some)
            .ok_or_else(|| invalid_argument("page_token", "is not a token this API issued")),
    }
}

#[tonic::async_trait]
impl pb::dossier_service_server::DossierService for DossierApi {
    #[tracing::instrument(skip_all)]
    async fn resolve_citizen(
        &self,
        request: Request<pb::ResolveCitizenRequest>,
    ) -> Result<Response<pb::ResolveCitizenResponse>, Status> {
        require(&request, WRITERS)?;
        let req = request.into_inner();
        let input = parse_hint(req.hint.as_ref(), "hint")?;
        let (view, matched) = self
            .store
            .resolve_citizen(&input, non_empty(&req.request_id))
            .await
            .map_err(internal_err("resolve citizen"))?;
        tracing::info!(citizen_id = %view.citizen.id, matched = ?matched, "citizen resolved");
        Ok(Response::new(pb::ResolveCitizenResponse {
            citizen: Some(citizen_pb(view)),
            r#match: match matched {
                Match::Known => pb::MatchKind::Known,
                Match::Created => pb::MatchKind::Created,
            } as i32,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_citizen(
        &self,
        request: Request<pb::GetCitizenRequest>,
    ) -> Result<Response<pb::Citizen>, Status> {
        require(&request, READERS)?;
        let id = request.into_inner().id;
        let id = non_empty(&id).ok_or_else(|| invalid_argument("id", "is required"))?;
        let view = self
            .store
            .get_citizen(id)
            .await
            .map_err(internal_err("get citizen"))?
            .ok_or_else(|| not_found("citizen", id))?;
        Ok(Response::new(citizen_pb(view)))
    }

    #[tracing::instrument(skip_all)]
    async fn open_dossier(
        &self,
        request: Request<pb::OpenDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        require(&request, WRITERS)?;
        let req = request.into_inner();
        let citizen_id = non_empty(&req.citizen_id)
            .ok_or_else(|| invalid_argument("citizen_id", "is required"))?;
        let process_id = non_empty(&req.process_id).unwrap_or(&self.config.default_process);
        let def = self.catalog.get_latest(process_id).ok_or_else(|| {
            invalid_argument(
                "process_id",
                format!("`{process_id}` is not in the process catalog"),
            )
        })?;
        self.store
            .get_citizen(citizen_id)
            .await
            .map_err(internal_err("open dossier"))?
            .ok_or_else(|| not_found("citizen", citizen_id))?;
        let summary = format!("Dossier ouvert : {}", def.title);
        let (d, created) = self
            .store
            .open_dossier(
                citizen_id,
                &def.id,
                def.version,
                &def.initial_state,
                &summary,
                non_empty(&req.request_id),
            )
            .await
            .map_err(internal_err("open dossier"))?;
        if created {
            tracing::info!(dossier_id = %d.id, process_id = %d.process_id, "dossier opened");
        }
        Ok(Response::new(self.dossier_pb(d)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_dossier(
        &self,
        request: Request<pb::GetDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        require(&request, READERS)?;
        let id = request.into_inner().id;
        let id = non_empty(&id).ok_or_else(|| invalid_argument("id", "is required"))?;
        let d = self
            .store
            .get_dossier(id)
            .await
            .map_err(internal_err("get dossier"))?
            .ok_or_else(|| not_found("dossier", id))?;
        Ok(Response::new(self.dossier_pb(d)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_dossiers(
        &self,
        request: Request<pb::ListDossiersRequest>,
    ) -> Result<Response<pb::ListDossiersResponse>, Status> {
        require(&request, READERS)?;
        let req = request.into_inner();
        let limit = page_size(req.page_size, 50, 500)?;
        let list = self
            .store
            .list_dossiers(
                non_empty(&req.citizen_id),
                non_empty(&req.page_token),
                limit,
            )
            .await
            .map_err(internal_err("list dossiers"))?;
        let next_page_token = if list.len() as u64 == limit {
            list.last().map(|d| d.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDossiersResponse {
            dossiers: list.into_iter().map(|d| self.dossier_pb(d)).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn record_contact(
        &self,
        request: Request<pb::RecordContactRequest>,
    ) -> Result<Response<pb::TimelineEntry>, Status> {
        require(&request, WRITERS)?;
        let req = request.into_inner();
        let dossier_id = non_empty(&req.dossier_id)
            .ok_or_else(|| invalid_argument("dossier_id", "is required"))?;
        let kind = pb::EntryKind::try_from(req.kind)
            .ok()
            .and_then(entry_kind_slug)
            .ok_or_else(|| invalid_argument("kind", "must be a known entry kind"))?;
        let channel = Channel::try_from(req.channel)
            .map_err(|_| invalid_argument("channel", "is not a known channel"))?;
        let summary = req.summary.trim();
        if summary.is_empty() || summary.chars().count() > 4000 {
            return Err(invalid_argument("summary", "must be 1 to 4000 characters"));
        }
        let occurred_at = match &req.occur_time {
            Some(ts) => {
                datetime(ts).ok_or_else(|| invalid_argument("occur_time", "is out of range"))?
            }
            None => Utc::now(),
        };
        let d = self
            .store
            .get_dossier(dossier_id)
            .await
            .map_err(internal_err("record contact"))?
            .ok_or_else(|| not_found("dossier", dossier_id))?;
        let (entry, created) = self
            .store
            .record(NewEntry {
                citizen_id: d.citizen_id.clone(),
                dossier_id: Some(d.id.clone()),
                kind: kind.to_owned(),
                channel: channel.slug().to_owned(),
                occurred_at,
                summary: summary.to_owned(),
                actor: non_empty(&req.actor).unwrap_or("system").to_owned(),
                source_event_id: non_empty(&req.source_event_id).map(str::to_owned),
            })
            .await
            .map_err(internal_err("record contact"))?;
        if created {
            tracing::info!(entry_id = %entry.id, dossier_id = %d.id, kind, "timeline entry recorded");
        }
        Ok(Response::new(entry_pb(entry)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_dossier_timeline(
        &self,
        request: Request<pb::ListDossierTimelineRequest>,
    ) -> Result<Response<pb::ListTimelineResponse>, Status> {
        require(&request, READERS)?;
        let req = request.into_inner();
        let id = non_empty(&req.dossier_id)
            .ok_or_else(|| invalid_argument("dossier_id", "is required"))?;
        let limit = page_size(req.page_size, 50, 500)?;
        let after = cursor(&req.page_token)?;
        let d = self
            .store
            .get_dossier(id)
            .await
            .map_err(internal_err("timeline"))?
            .ok_or_else(|| not_found("dossier", id))?;
        let entries = self
            .store
            .timeline(Some(&d.id), None, after.as_ref(), limit)
            .await
            .map_err(internal_err("timeline"))?;
        Ok(Response::new(timeline_page(entries, limit)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_citizen_timeline(
        &self,
        request: Request<pb::ListCitizenTimelineRequest>,
    ) -> Result<Response<pb::ListTimelineResponse>, Status> {
        require(&request, READERS)?;
        let req = request.into_inner();
        let id = non_empty(&req.citizen_id)
            .ok_or_else(|| invalid_argument("citizen_id", "is required"))?;
        let limit = page_size(req.page_size, 50, 500)?;
        let after = cursor(&req.page_token)?;
        let entries = self
            .store
            .timeline(None, Some(id), after.as_ref(), limit)
            .await
            .map_err(internal_err("timeline"))?;
        Ok(Response::new(timeline_page(entries, limit)))
    }
}
