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

use crate::catalog::ProcessDefinition;
use crate::citizens::{CitizenUpdate, MergeError};
use crate::config::Config;
use crate::db::entities::{document, dossier, link, merge, timeline};
use crate::engine::{Change, Sla, TransitionError};
use crate::privacy::EraseError;
use crate::records::NewDocument;
use crate::store::{
    CitizenView, DossierFilter, Match, NewEntry, Store, TimelineCursor, TimelineFilter,
};
use guichet_platform::auth::Principal;
use guichet_platform::contact::{Email, Phone, parse_hint};
use guichet_platform::grpc::failed_precondition;

/// Front-desk agents (and supervisors), and other systems.
const READERS: &[Role] = &[Role::Agent, Role::Service];
/// Who records requests: routing and other systems, and agents at the desk.
const WRITERS: &[Role] = &[Role::Agent, Role::Service];
const SUPERVISORS: &[Role] = &[Role::Supervisor];
const ADMINS: &[Role] = &[Role::Admin];

#[derive(Clone)]
pub struct DossierApi {
    store: Store,
    config: Arc<Config>,
}

fn opt_ts(t: Option<chrono::DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

fn link_pb(l: link::Model) -> pb::Link {
    pb::Link {
        kind: l.kind,
        ref_id: l.ref_id,
        status: l.status,
        update_time: Some(timestamp(l.updated_at)),
    }
}

fn document_pb(d: document::Model) -> pb::Document {
    pb::Document {
        id: d.id,
        dossier_id: d.dossier_id,
        sha256: d.sha256,
        media_type: d.media_type,
        size_bytes: d.size_bytes as u64,
        filename: d.filename,
        document_type: d.document_type,
        source_channel: Channel::from_slug(&d.source_channel).unwrap_or(Channel::Unspecified)
            as i32,
        create_time: Some(timestamp(d.created_at)),
        actor: d.actor,
    }
}

fn merge_pb(m: merge::Model) -> pb::Merge {
    let (contacts, dossiers, entries) = Store::merge_counts(&m);
    pb::Merge {
        id: m.id,
        target_citizen_id: m.target_id,
        source_citizen_id: m.source_id,
        actor: m.actor,
        reason: m.reason,
        create_time: Some(timestamp(m.created_at)),
        split_time: opt_ts(m.split_at),
        split_actor: m.split_actor,
        split_reason: m.split_reason,
        moved_contacts: contacts,
        moved_dossiers: dossiers,
        moved_entries: entries,
    }
}

fn process_pb(p: &ProcessDefinition, versions: Vec<u32>) -> pb::Process {
    pb::Process {
        id: p.id.clone(),
        version: p.version,
        title: p.title.clone(),
        description: p.description.trim().to_owned(),
        domain: p.domain.clone(),
        channels: p
            .channels
            .iter()
            .filter_map(|c| Channel::from_slug(c))
            .map(|c| c as i32)
            .collect(),
        initial_state: p.initial_state.clone(),
        states: p
            .states
            .iter()
            .map(|s| pb::ProcessState {
                id: s.id.clone(),
                title: s.title.clone(),
                terminal: s.terminal,
                guidance: s.guidance.trim().to_owned(),
            })
            .collect(),
        transitions: p
            .transitions
            .iter()
            .map(|t| pb::ProcessTransition {
                from_state: t.from.clone(),
                to_state: t.to.clone(),
                label: label(p, t),
                roles: t.roles.clone(),
                guards: t.guards.clone(),
                requires_reason: t.requires_reason,
            })
            .collect(),
        retention_days: p.retention_days,
        restricted_group: p.restricted_group.clone().unwrap_or_default(),
        reopen_on_reference: p.reopen_on_reference,
        versions,
    }
}

fn label(p: &ProcessDefinition, t: &crate::catalog::TransitionDefinition) -> String {
    if t.label.trim().is_empty() {
        p.state(&t.to)
            .map(|s| s.title.clone())
            .unwrap_or_else(|| t.to.clone())
    } else {
        t.label.clone()
    }
}

fn may_fire(p: &Principal, t: &crate::catalog::TransitionDefinition) -> bool {
    t.roles
        .iter()
        .filter_map(|r| r.parse::<Role>().ok())
        .any(|r| p.has(r))
}

fn transition_status(e: TransitionError) -> Status {
    match e {
        TransitionError::Conflict => Status::aborted(
            "the dossier changed concurrently (another transition won): read it again and retry",
        ),
        TransitionError::Db(e) => internal_err("transition")(e),
    }
}

impl DossierApi {
    pub fn new(store: Store, config: Config) -> Self {
        DossierApi {
            store,
            config: Arc::new(config),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn dossier_pb(&self, d: dossier::Model) -> Result<pb::Dossier, Status> {
        let mut one = self.dossiers_pb(vec![d]).await?;
        one.pop()
            .ok_or_else(|| Status::internal("dossier conversion lost its dossier"))
    }

    /// Dossiers with their links and other citizens: two queries for the
    /// whole page, not two per dossier.
    async fn dossiers_pb(&self, ds: Vec<dossier::Model>) -> Result<Vec<pb::Dossier>, Status> {
        let ids: Vec<String> = ds.iter().map(|d| d.id.clone()).collect();
        let mut links = self
            .store
            .links_of(&ids)
            .await
            .map_err(internal_err("dossier links"))?;
        let mut others = self
            .store
            .other_citizens_of(&ids)
            .await
            .map_err(internal_err("dossier citizens"))?;
        let catalog = self.store.catalog();
        Ok(ds
            .into_iter()
            .map(|d| {
                let links = links.remove(&d.id).unwrap_or_default();
                let other_citizen_ids = others.remove(&d.id).unwrap_or_default();
                dossier_message(&catalog, d, links, other_citizen_ids)
            })
            .collect())
    }

    /// The dossier if the caller may read it (restricted processes: members
    /// of the group, services and admins); reads of restricted dossiers are
    /// audited.
    async fn readable(
        &self,
        p: &Principal,
        id: &str,
        field: &str,
    ) -> Result<dossier::Model, Status> {
        let id = non_empty(id).ok_or_else(|| invalid_argument(field, "is required"))?;
        let d = self
            .store
            .get_dossier(id)
            .await
            .map_err(internal_err("get dossier"))?
            .ok_or_else(|| not_found("dossier", id))?;
        if !d.restricted_group.is_empty() {
            let allowed = p.has(Role::Service)
                || p.has(Role::Admin)
                || p.groups.contains(&d.restricted_group);
            if !allowed {
                self.store
                    .audit(
                        &p.subject,
                        "dossier.read_denied",
                        &format!("dossiers/{}", d.id),
                        "",
                    )
                    .await
                    .map_err(internal_err("audit"))?;
                return Err(Status::permission_denied(format!(
                    "dossier {} is restricted to group `{}`",
                    d.id, d.restricted_group
                )));
            }
            self.store
                .audit(
                    &p.subject,
                    "dossier.read",
                    &format!("dossiers/{}", d.id),
                    "",
                )
                .await
                .map_err(internal_err("audit"))?;
        }
        Ok(d)
    }

    /// The dossier as a state change with this `request_id` left it, when
    /// it was already applied (a retried click or a redelivered event).
    async fn replayed(
        &self,
        p: &Principal,
        request_id: &str,
    ) -> Result<Option<pb::Dossier>, Status> {
        let Some(rid) = non_empty(request_id) else {
            return Ok(None);
        };
        let Some(t) = self
            .store
            .transition_by_request(rid)
            .await
            .map_err(internal_err("transition"))?
        else {
            return Ok(None);
        };
        let d = self.readable(p, &t.dossier_id, "id").await?;
        Ok(Some(self.dossier_pb(d).await?))
    }

    fn def_of(&self, d: &dossier::Model) -> Result<ProcessDefinition, Status> {
        self.store
            .catalog()
            .get(&d.process_id, d.process_version as u32)
            .cloned()
            .ok_or_else(|| {
                failed_precondition(
                    "PROCESS_VERSION",
                    &format!("processes/{}/versions/{}", d.process_id, d.process_version),
                    "the dossier's process version is not in the catalog",
                )
            })
    }

    /// Restricted dossiers the caller may not read (their timeline entries
    /// are hidden from citizen timelines).
    async fn hidden_dossiers(
        &self,
        p: &Principal,
        citizen_id: &str,
    ) -> Result<Vec<String>, Status> {
        if p.has(Role::Service) || p.has(Role::Admin) {
            return Ok(vec![]);
        }
        self.store
            .dossiers_hidden_from(citizen_id, &p.groups)
            .await
            .map_err(internal_err("timeline"))
    }
}

/// One dossier as the API shows it, with the catalog's titles and guidance.
fn dossier_message(
    catalog: &crate::catalog::Catalog,
    d: dossier::Model,
    links: Vec<link::Model>,
    other_citizen_ids: Vec<String>,
) -> pb::Dossier {
    let def = catalog.get(&d.process_id, d.process_version as u32);
    let state = def.and_then(|p| p.state(&d.state));
    pb::Dossier {
        process_title: def.map(|p| p.title.clone()).unwrap_or_default(),
        state_title: state.map(|s| s.title.clone()).unwrap_or_default(),
        guidance: state
            .map(|s| s.guidance.trim().to_owned())
            .unwrap_or_default(),
        closed: d.closed_at.is_some(),
        close_time: opt_ts(d.closed_at),
        holder_agent: d.holder_agent,
        holder_department: d.holder_department,
        legal_hold: d.legal_hold,
        revision: d.revision,
        state_enter_time: opt_ts(d.state_entered_at),
        links: links.into_iter().map(link_pb).collect(),
        other_citizen_ids,
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

fn citizen_pb(v: CitizenView) -> pb::Citizen {
    let lines: Vec<String> = serde_json::from_str(&v.citizen.address_lines).unwrap_or_default();
    let address =
        (!lines.is_empty() || !v.citizen.postal_code.is_empty() || !v.citizen.city.is_empty())
            .then(|| guichet_proto::intake::v1::PostalAddress {
                lines,
                postal_code: v.citizen.postal_code.clone(),
                city: v.citizen.city.clone(),
                country: v.citizen.country.clone(),
            });
    pb::Citizen {
        create_time: Some(timestamp(v.citizen.created_at)),
        update_time: Some(timestamp(v.citizen.updated_at)),
        address,
        preferred_channel: Channel::from_slug(&v.citizen.preferred_channel)
            .unwrap_or(Channel::Unspecified) as i32,
        language: v.citizen.language,
        merged_into: v.citizen.merged_into.unwrap_or_default(),
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
        "document" => pb::EntryKind::Document,
        "appointment" => pb::EntryKind::Appointment,
        "signature" => pb::EntryKind::Signature,
        "message_sent" => pb::EntryKind::MessageSent,
        "merge" => pb::EntryKind::Merge,
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
        pb::EntryKind::Document => "document",
        pb::EntryKind::Appointment => "appointment",
        pb::EntryKind::Signature => "signature",
        pb::EntryKind::MessageSent => "message_sent",
        pb::EntryKind::Merge => "merge",
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
        visibility: match e.visibility.as_str() {
            "public" => pb::NoteVisibility::Public,
            "private" => pb::NoteVisibility::Private,
            _ => pb::NoteVisibility::Unspecified,
        } as i32,
    }
}

fn timeline_filter(f: Option<&pb::TimelineFilter>) -> Result<TimelineFilter, Status> {
    let Some(f) = f else {
        return Ok(TimelineFilter::default());
    };
    let mut out = TimelineFilter::default();
    for (i, c) in f.channels.iter().enumerate() {
        let c = Channel::try_from(*c).map_err(|_| {
            invalid_argument(&format!("filter.channels[{i}]"), "is not a known channel")
        })?;
        out.channels.push(c.slug().to_owned());
    }
    for (i, k) in f.kinds.iter().enumerate() {
        let k = pb::EntryKind::try_from(*k)
            .ok()
            .and_then(entry_kind_slug)
            .ok_or_else(|| {
                invalid_argument(&format!("filter.kinds[{i}]"), "is not a known entry kind")
            })?;
        out.kinds.push(k.to_owned());
    }
    if let Some(t) = &f.start_time {
        out.start = Some(
            datetime(t).ok_or_else(|| invalid_argument("filter.start_time", "is out of range"))?,
        );
    }
    if let Some(t) = &f.end_time {
        out.end = Some(
            datetime(t).ok_or_else(|| invalid_argument("filter.end_time", "is out of range"))?,
        );
    }
    if let (Some(a), Some(b)) = (out.start, out.end)
        && b <= a
    {
        return Err(invalid_argument(
            "filter.end_time",
            "must be after start_time",
        ));
    }
    Ok(out)
}

fn text_field(field: &str, value: &str, max: usize) -> Result<String, Status> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(invalid_argument(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    Ok(v.to_owned())
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
        let r = self
            .store
            .resolve_citizen(&input, non_empty(&req.request_id), req.candidates_only)
            .await
            .map_err(internal_err("resolve citizen"))?;
        tracing::info!(
            citizen_id = r.citizen.as_ref().map(|c| c.citizen.id.as_str()).unwrap_or(""),
            matched = ?r.matched,
            candidates = r.candidates.len(),
            "citizen resolved"
        );
        Ok(Response::new(pb::ResolveCitizenResponse {
            citizen: r.citizen.map(citizen_pb),
            r#match: match r.matched {
                Match::Known => pb::MatchKind::Known,
                Match::Created => pb::MatchKind::Created,
                Match::Maybe => pb::MatchKind::Maybe,
            } as i32,
            candidates: r
                .candidates
                .into_iter()
                .map(|c| pb::Candidate {
                    citizen: Some(citizen_pb(c.citizen)),
                    confidence: c.confidence,
                    why: c.why,
                })
                .collect(),
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
    async fn list_citizens(
        &self,
        request: Request<pb::ListCitizensRequest>,
    ) -> Result<Response<pb::ListCitizensResponse>, Status> {
        require(&request, READERS)?;
        let req = request.into_inner();
        let query = text_field("query", &req.query, 200)?;
        let limit = page_size(req.page_size, 20, 200)?;
        let list = self
            .store
            .search_citizens(&query, non_empty(&req.page_token), limit)
            .await
            .map_err(internal_err("list citizens"))?;
        let next_page_token = if list.len() as u64 == limit {
            list.last()
                .map(|c| c.citizen.id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListCitizensResponse {
            citizens: list.into_iter().map(citizen_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_citizen(
        &self,
        request: Request<pb::UpdateCitizenRequest>,
    ) -> Result<Response<pb::Citizen>, Status> {
        let p = require(&request, WRITERS)?;
        let req = request.into_inner();
        let c = req
            .citizen
            .ok_or_else(|| invalid_argument("citizen", "is required"))?;
        let id = non_empty(&c.id).ok_or_else(|| invalid_argument("citizen.id", "is required"))?;
        let mut u = CitizenUpdate::default();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        for path in &paths {
            match path.as_str() {
                "given_name" => {
                    u.given_name = Some(
                        guichet_platform::contact::clean_name(&c.given_name)
                            .map_err(|e| invalid_argument("citizen.given_name", e))?,
                    )
                }
                "family_name" => {
                    u.family_name = Some(
                        guichet_platform::contact::clean_name(&c.family_name)
                            .map_err(|e| invalid_argument("citizen.family_name", e))?,
                    )
                }
                "address" => {
                    let hint = guichet_proto::intake::v1::CitizenHint {
                        family_name: "x".into(),
                        address: c.address.clone(),
                        ..Default::default()
                    };
                    u.address = Some(
                        parse_hint(Some(&hint), "citizen")?
                            .address
                            .unwrap_or_default(),
                    );
                }
                "preferred_channel" => {
                    let ch = Channel::try_from(c.preferred_channel).map_err(|_| {
                        invalid_argument("citizen.preferred_channel", "is not a known channel")
                    })?;
                    u.preferred_channel = Some(if ch == Channel::Unspecified {
                        String::new()
                    } else {
                        ch.slug().to_owned()
                    });
                }
                "language" => {
                    let l = c.language.trim();
                    if l.is_empty()
                        || l.len() > 12
                        || !l.chars().all(|x| x.is_ascii_alphanumeric() || x == '-')
                    {
                        return Err(invalid_argument(
                            "citizen.language",
                            "must be a BCP 47 tag such as fr",
                        ));
                    }
                    u.language = Some(l.to_owned());
                }
                other => {
                    return Err(invalid_argument(
                        "update_mask",
                        format!(
                            "`{other}` cannot be updated (given_name, family_name, address, preferred_channel, language)"
                        ),
                    ));
                }
            }
        }
        for (i, ph) in req.add_phones.iter().enumerate() {
            u.add.phones.push(
                Phone::parse(ph).map_err(|e| invalid_argument(&format!("add_phones[{i}]"), e))?,
            );
        }
        for (i, em) in req.add_emails.iter().enumerate() {
            u.add.emails.push(
                Email::parse(em).map_err(|e| invalid_argument(&format!("add_emails[{i}]"), e))?,
            );
        }
        if paths.is_empty() && u.add.phones.is_empty() && u.add.emails.is_empty() {
            return Err(invalid_argument("update_mask", "names nothing to update"));
        }
        let view = self
            .store
            .update_citizen(id, u, &p.subject)
            .await
            .map_err(internal_err("update citizen"))?
            .ok_or_else(|| not_found("citizen", id))?;
        Ok(Response::new(citizen_pb(view)))
    }

    #[tracing::instrument(skip_all)]
    async fn merge_citizens(
        &self,
        request: Request<pb::MergeCitizensRequest>,
    ) -> Result<Response<pb::Merge>, Status> {
        let p = require(&request, &[Role::Agent])?;
        let req = request.into_inner();
        let target = non_empty(&req.target_citizen_id)
            .ok_or_else(|| invalid_argument("target_citizen_id", "is required"))?;
        let source = non_empty(&req.source_citizen_id)
            .ok_or_else(|| invalid_argument("source_citizen_id", "is required"))?;
        let reason = text_field("reason", &req.reason, 1000)?;
        let m = self
            .store
            .merge_citizens(target, source, &p.subject, &reason)
            .await
            .map_err(merge_status)?;
        tracing::info!(merge_id = %m.id, "citizens merged");
        Ok(Response::new(merge_pb(m)))
    }

    #[tracing::instrument(skip_all)]
    async fn split_citizen(
        &self,
        request: Request<pb::SplitCitizenRequest>,
    ) -> Result<Response<pb::Merge>, Status> {
        let p = require(&request, &[Role::Agent])?;
        let req = request.into_inner();
        let id =
            non_empty(&req.merge_id).ok_or_else(|| invalid_argument("merge_id", "is required"))?;
        let reason = text_field("reason", &req.reason, 1000)?;
        let m = self
            .store
            .split_citizen(id, &p.subject, &reason)
            .await
            .map_err(merge_status)?;
        tracing::info!(merge_id = %m.id, "merge split back");
        Ok(Response::new(merge_pb(m)))
    }

    #[tracing::instrument(skip_all)]
    async fn export_citizen(
        &self,
        request: Request<pb::ExportCitizenRequest>,
    ) -> Result<Response<pb::ExportCitizenResponse>, Status> {
        let p = require(&request, SUPERVISORS)?;
        let id = request.into_inner().citizen_id;
        let id = non_empty(&id).ok_or_else(|| invalid_argument("citizen_id", "is required"))?;
        let json = self
            .store
            .export_citizen(id, &p.subject)
            .await
            .map_err(internal_err("export citizen"))?
            .ok_or_else(|| not_found("citizen", id))?;
        Ok(Response::new(pb::ExportCitizenResponse { json }))
    }

    #[tracing::instrument(skip_all)]
    async fn erase_citizen(
        &self,
        request: Request<pb::EraseCitizenRequest>,
    ) -> Result<Response<pb::EraseCitizenResponse>, Status> {
        let p = require(&request, ADMINS)?;
        let req = request.into_inner();
        let id = non_empty(&req.citizen_id)
            .ok_or_else(|| invalid_argument("citizen_id", "is required"))?;
        let reason = text_field("reason", &req.reason, 1000)?;
        let erased = self
            .store
            .erase_citizen(id, &p.subject, &reason)
            .await
            .map_err(|e| match e {
                EraseError::NotFound => not_found("citizen", id),
                EraseError::Retained(refs) => failed_precondition(
                    "RETENTION",
                    &format!("citizens/{id}"),
                    format!(
                        "retention obligations apply to dossiers {}: erase after they expire",
                        refs.join(", ")
                    ),
                ),
                EraseError::Db(e) => internal_err("erase citizen")(e),
            })?;
        tracing::info!(citizen_id = %id, dossiers = erased.dossiers, "citizen erased");
        Ok(Response::new(pb::EraseCitizenResponse {
            citizen_id: id.to_owned(),
            erase_time: Some(timestamp(self.store.now())),
            erased_dossiers: erased.dossiers,
            erased_entries: erased.entries,
            erased_documents: erased.documents,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn open_dossier(
        &self,
        request: Request<pb::OpenDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        let p = require(&request, WRITERS)?;
        let req = request.into_inner();
        let citizen_id = non_empty(&req.citizen_id)
            .ok_or_else(|| invalid_argument("citizen_id", "is required"))?;
        let process_id = non_empty(&req.process_id).unwrap_or(&self.config.default_process);
        let catalog = self.store.catalog();
        let def = catalog.get_latest(process_id).ok_or_else(|| {
            invalid_argument(
                "process_id",
                format!("`{process_id}` is not in the process catalog"),
            )
        })?;
        let citizen = self
            .store
            .get_citizen(citizen_id)
            .await
            .map_err(internal_err("open dossier"))?
            .ok_or_else(|| not_found("citizen", citizen_id))?;
        if citizen.citizen.merged_into.is_some() || citizen.citizen.erased_at.is_some() {
            return Err(failed_precondition(
                "CITIZEN_STATE",
                &format!("citizens/{citizen_id}"),
                "the citizen record was merged or erased: use the current record",
            ));
        }
        let summary = format!("Dossier ouvert : {}", def.title);
        let (d, created) = self
            .store
            .open_dossier(
                citizen_id,
                def,
                &summary,
                &p.subject,
                non_empty(&req.request_id),
            )
            .await
            .map_err(internal_err("open dossier"))?;
        if created {
            tracing::info!(dossier_id = %d.id, process_id = %d.process_id, "dossier opened");
        }
        Ok(Response::new(self.dossier_pb(d).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_dossier(
        &self,
        request: Request<pb::GetDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        let p = require(&request, READERS)?;
        let d = self.readable(&p, &request.into_inner().id, "id").await?;
        Ok(Response::new(self.dossier_pb(d).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_dossiers(
        &self,
        request: Request<pb::ListDossiersRequest>,
    ) -> Result<Response<pb::ListDossiersResponse>, Status> {
        let p = require(&request, READERS)?;
        let req = request.into_inner();
        let limit = page_size(req.page_size, 50, 500)?;
        let filter = DossierFilter {
            citizen_id: non_empty(&req.citizen_id).map(str::to_owned),
            process_id: non_empty(&req.process_id).map(str::to_owned),
            open_only: req.open_only,
            updated_after: match &req.updated_after {
                Some(t) => Some(
                    datetime(t)
                        .ok_or_else(|| invalid_argument("updated_after", "is out of range"))?,
                ),
                None => None,
            },
            holder_agent: non_empty(&req.holder_agent).map(str::to_owned),
            holder_department: non_empty(&req.holder_department).map(str::to_owned),
            groups: p.groups.clone(),
            visible_groups_all: p.has(Role::Service) || p.has(Role::Admin),
        };
        let list = self
            .store
            .list_dossiers(&filter, non_empty(&req.page_token), limit)
            .await
            .map_err(internal_err("list dossiers"))?;
        let next_page_token = if list.len() as u64 == limit {
            list.last().map(|d| d.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let dossiers = self.dossiers_pb(list).await?;
        Ok(Response::new(pb::ListDossiersResponse {
            dossiers,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_dossier(
        &self,
        request: Request<pb::UpdateDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        let p = require(&request, WRITERS)?;
        let req = request.into_inner();
        let body = req
            .dossier
            .ok_or_else(|| invalid_argument("dossier", "is required"))?;
        let d = self.readable(&p, &body.id, "dossier.id").await?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(invalid_argument("update_mask", "names nothing to update"));
        }
        let (mut agent, mut department, mut others) = (None, None, None);
        for path in &paths {
            match path.as_str() {
                "holder_agent" => agent = Some(body.holder_agent.trim()),
                "holder_department" => department = Some(body.holder_department.trim()),
                "other_citizen_ids" => others = Some(body.other_citizen_ids.clone()),
                other => {
                    return Err(invalid_argument(
                        "update_mask",
                        format!(
                            "`{other}` cannot be updated (holder_agent, holder_department, other_citizen_ids); states change with TransitionDossier"
                        ),
                    ));
                }
            }
        }
        for (field, v) in [
            ("dossier.holder_agent", agent),
            ("dossier.holder_department", department),
        ] {
            if v.is_some_and(|v| v.chars().count() > 100) {
                return Err(invalid_argument(field, "is longer than 100 characters"));
            }
        }
        if let Some(mut ids) = others {
            ids.iter_mut().for_each(|i| *i = i.trim().to_owned());
            ids.sort();
            ids.dedup();
            if ids.len() > 10 {
                return Err(invalid_argument(
                    "dossier.other_citizen_ids",
                    "at most 10 other citizens",
                ));
            }
            for (i, id) in ids.iter().enumerate() {
                let field = format!("dossier.other_citizen_ids[{i}]");
                if *id == d.citizen_id || id.is_empty() {
                    return Err(invalid_argument(
                        &field,
                        "must be another citizen than the dossier's",
                    ));
                }
                let c = self
                    .store
                    .get_citizen(id)
                    .await
                    .map_err(internal_err("update dossier"))?
                    .ok_or_else(|| {
                        invalid_argument(&field, format!("citizen {id} does not exist"))
                    })?;
                if c.citizen.merged_into.is_some() || c.citizen.erased_at.is_some() {
                    return Err(invalid_argument(
                        &field,
                        "this citizen record was merged or erased",
                    ));
                }
            }
            self.store
                .set_other_citizens(&d, &ids, &p.subject)
                .await
                .map_err(internal_err("update dossier"))?;
        }
        if agent.is_some() || department.is_some() {
            self.store
                .set_holder(&d, agent, department, &p.subject)
                .await
                .map_err(internal_err("update dossier"))?;
        }
        let d = self.readable(&p, &d.id, "dossier.id").await?;
        Ok(Response::new(self.dossier_pb(d).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn transition_dossier(
        &self,
        request: Request<pb::TransitionDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        let p = require(&request, READERS)?;
        let req = request.into_inner();
        if let Some(done) = self.replayed(&p, &req.request_id).await? {
            return Ok(Response::new(done));
        }
        let d = self.readable(&p, &req.id, "id").await?;
        let to =
            non_empty(&req.to_state).ok_or_else(|| invalid_argument("to_state", "is required"))?;
        let def = self.def_of(&d)?;
        let subject = format!("dossiers/{}", d.id);
        let Some(t) = def.transitions_from(&d.state).find(|t| t.to == to) else {
            let allowed: Vec<&str> = def
                .transitions_from(&d.state)
                .map(|t| t.to.as_str())
                .collect();
            return Err(failed_precondition(
                "TRANSITION",
                &subject,
                format!(
                    "process {} v{} has no transition from `{}` to `{to}` (allowed: {})",
                    def.id,
                    def.version,
                    d.state,
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        };
        if !may_fire(&p, t) {
            return Err(Status::permission_denied(format!(
                "the transition `{}` → `{to}` requires one of the roles {:?}",
                d.state, t.roles
            )));
        }
        if t.requires_reason && req.reason.trim().is_empty() {
            return Err(invalid_argument(
                "reason",
                "is required for this transition",
            ));
        }
        if req.reason.chars().count() > 2000 {
            return Err(invalid_argument("reason", "is longer than 2000 characters"));
        }
        if req.expected_revision != 0 && req.expected_revision != d.revision {
            return Err(Status::aborted(format!(
                "the dossier is at revision {}, not {}: read it again",
                d.revision, req.expected_revision
            )));
        }
        let failures = self
            .store
            .guard_failures(&d, &def, t)
            .await
            .map_err(internal_err("guards"))?;
        if !failures.is_empty() {
            return Err(failed_precondition("GUARD", &subject, failures.join(" ; ")));
        }
        let updated = self
            .store
            .apply_transition(Change {
                dossier: &d,
                def: &def,
                to_state: to,
                cause: "transition",
                actor: &p.subject,
                reason: req.reason.trim(),
                request_id: non_empty(&req.request_id),
            })
            .await;
        let updated = match updated {
            Err(TransitionError::Db(e))
                if guichet_platform::db::is_unique_violation(&e) && !req.request_id.is_empty() =>
            {
                // The same request won concurrently.
                self.readable(&p, &d.id, "id").await?
            }
            other => other.map_err(transition_status)?,
        };
        tracing::info!(dossier_id = %updated.id, from = %d.state, to = %updated.state, "dossier transition");
        Ok(Response::new(self.dossier_pb(updated).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn reopen_dossier(
        &self,
        request: Request<pb::ReopenDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        let p = require(&request, &[Role::Service, Role::Supervisor])?;
        let req = request.into_inner();
        if let Some(done) = self.replayed(&p, &req.request_id).await? {
            return Ok(Response::new(done));
        }
        let d = self.readable(&p, &req.id, "id").await?;
        let reason = text_field("reason", &req.reason, 2000)?;
        let def = self.def_of(&d)?;
        let subject = format!("dossiers/{}", d.id);
        if d.closed_at.is_none() {
            return Err(failed_precondition(
                "NOT_CLOSED",
                &subject,
                "the dossier is not closed",
            ));
        }
        let Some(target) = def
            .reopen_state
            .as_deref()
            .filter(|_| def.reopen_on_reference)
        else {
            return Err(failed_precondition(
                "NO_REOPEN",
                &subject,
                format!(
                    "process {} does not reopen closed dossiers: open a new dossier",
                    def.id
                ),
            ));
        };
        let updated = self
            .store
            .apply_transition(Change {
                dossier: &d,
                def: &def,
                to_state: target,
                cause: "reopen",
                actor: &p.subject,
                reason: &reason,
                request_id: non_empty(&req.request_id),
            })
            .await
            .map_err(transition_status)?;
        tracing::info!(dossier_id = %updated.id, "dossier reopened");
        Ok(Response::new(self.dossier_pb(updated).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn set_legal_hold(
        &self,
        request: Request<pb::SetLegalHoldRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        let p = require(&request, SUPERVISORS)?;
        let req = request.into_inner();
        let d = self.readable(&p, &req.id, "id").await?;
        let reason = if req.hold {
            text_field("reason", &req.reason, 1000)?
        } else {
            req.reason.trim().to_owned()
        };
        self.store
            .set_legal_hold(&d, req.hold, &reason, &p.subject)
            .await
            .map_err(internal_err("legal hold"))?;
        let d = self.readable(&p, &d.id, "id").await?;
        Ok(Response::new(self.dossier_pb(d).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_guidance(
        &self,
        request: Request<pb::GetGuidanceRequest>,
    ) -> Result<Response<pb::Guidance>, Status> {
        let p = require(&request, READERS)?;
        let d = self
            .readable(&p, &request.into_inner().dossier_id, "dossier_id")
            .await?;
        let def = self.def_of(&d)?;
        let state = def.state(&d.state);
        let provided = self
            .store
            .provided_document_types(&d.id)
            .await
            .map_err(internal_err("guidance"))?;
        let checklist = state
            .map(|s| {
                s.checklist
                    .iter()
                    .filter_map(|id| def.document(id))
                    .map(|doc| pb::ChecklistItem {
                        document_id: doc.id.clone(),
                        title: doc.title.clone(),
                        required: doc.required,
                        provided: provided.contains(&doc.id),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut next_actions = Vec::new();
        for t in def.transitions_from(&d.state) {
            if !may_fire(&p, t) {
                continue;
            }
            let failures = self
                .store
                .guard_failures(&d, &def, t)
                .await
                .map_err(internal_err("guidance"))?;
            next_actions.push(pb::NextAction {
                to_state: t.to.clone(),
                to_state_title: def
                    .state(&t.to)
                    .map(|s| s.title.clone())
                    .unwrap_or_default(),
                label: label(&def, t),
                requires_reason: t.requires_reason,
                allowed: failures.is_empty(),
                blocked_reason: failures.join(" ; "),
            });
        }
        let (sla_status, due) = match self.store.sla(&d, state) {
            Sla::None => (pb::SlaStatus::None, None),
            Sla::OnTime(t) => (pb::SlaStatus::OnTime, Some(t)),
            Sla::AtRisk(t) => (pb::SlaStatus::AtRisk, Some(t)),
            Sla::Breached(t) => (pb::SlaStatus::Breached, Some(t)),
        };
        Ok(Response::new(pb::Guidance {
            dossier_id: d.id.clone(),
            process_id: def.id.clone(),
            process_version: def.version,
            state: d.state.clone(),
            state_title: state.map(|s| s.title.clone()).unwrap_or_default(),
            guidance: state
                .map(|s| s.guidance.trim().to_owned())
                .unwrap_or_default(),
            checklist,
            next_actions,
            sla_status: sla_status as i32,
            sla_due_time: opt_ts(due),
            actions: state
                .map(|s| {
                    s.actions
                        .iter()
                        .map(|a| pb::StateAction {
                            kind: a.kind.clone(),
                            appointment_type: a.appointment_type.clone().unwrap_or_default(),
                            template: a.template.clone().unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn add_note(
        &self,
        request: Request<pb::AddNoteRequest>,
    ) -> Result<Response<pb::TimelineEntry>, Status> {
        let p = require(&request, WRITERS)?;
        let req = request.into_inner();
        let d = self.readable(&p, &req.dossier_id, "dossier_id").await?;
        let visibility = match pb::NoteVisibility::try_from(req.visibility) {
            Ok(pb::NoteVisibility::Public) => "public",
            Ok(pb::NoteVisibility::Private) => "private",
            _ => return Err(invalid_argument("visibility", "must be PUBLIC or PRIVATE")),
        };
        let text = text_field("text", &req.text, 4000)?;
        let e = self
            .store
            .add_note(
                &d,
                visibility,
                &text,
                &p.subject,
                non_empty(&req.request_id),
            )
            .await
            .map_err(internal_err("add note"))?;
        Ok(Response::new(entry_pb(e)))
    }

    #[tracing::instrument(skip_all)]
    async fn add_document(
        &self,
        request: Request<pb::AddDocumentRequest>,
    ) -> Result<Response<pb::Document>, Status> {
        let p = require(&request, WRITERS)?;
        let req = request.into_inner();
        let d = self.readable(&p, &req.dossier_id, "dossier_id").await?;
        let media_type = req.media_type.trim().to_ascii_lowercase();
        if !self.config.document_media_types.contains(&media_type) {
            return Err(invalid_argument(
                "media_type",
                format!(
                    "`{media_type}` is not accepted (accepted: {})",
                    self.config.document_media_types.join(", ")
                ),
            ));
        }
        let filename = req.filename.trim();
        if filename.chars().count() > 255 || filename.contains(['/', '\\', '\0']) {
            return Err(invalid_argument(
                "filename",
                "must be a file name of at most 255 characters, without path",
            ));
        }
        let def = self.def_of(&d)?;
        let document_type = req.document_type.trim();
        if !document_type.is_empty() && def.document(document_type).is_none() {
            return Err(invalid_argument(
                "document_type",
                format!("`{document_type}` is not a document of process {}", def.id),
            ));
        }
        let channel = Channel::try_from(req.source_channel)
            .map_err(|_| invalid_argument("source_channel", "is not a known channel"))?;
        let (sha256, size) = match (&req.stored, req.content.is_empty()) {
            (Some(stored), true) => {
                let sha = stored.sha256.trim().to_ascii_lowercase();
                let exists = self
                    .store
                    .objects()
                    .exists(&sha)
                    .await
                    .map_err(|e| match e {
                        guichet_platform::objects::ObjectError::BadAddress(_) => {
                            invalid_argument("stored.sha256", "is not a SHA-256 address")
                        }
                        other => internal_err("object store")(other),
                    })?;
                if !exists {
                    return Err(invalid_argument(
                        "stored.sha256",
                        "is not in the object store",
                    ));
                }
                (sha, stored.size_bytes)
            }
            (None, false) => {
                let size = req.content.len() as u64;
                if size > self.config.max_document_bytes {
                    return Err(invalid_argument(
                        "content",
                        format!(
                            "is {size} bytes, more than the {} accepted",
                            self.config.max_document_bytes
                        ),
                    ));
                }
                let sha = self
                    .store
                    .objects()
                    .put(&req.content)
                    .await
                    .map_err(internal_err("object store"))?;
                (sha, size)
            }
            _ => {
                return Err(invalid_argument(
                    "content",
                    "give either the content or a stored object reference, not both or neither",
                ));
            }
        };
        if size > self.config.max_document_bytes {
            return Err(invalid_argument(
                "stored.size_bytes",
                "is larger than accepted",
            ));
        }
        let doc = self
            .store
            .add_document(NewDocument {
                dossier: d,
                sha256,
                media_type,
                size_bytes: size,
                filename: filename.to_owned(),
                document_type: document_type.to_owned(),
                source_channel: channel.slug().to_owned(),
                actor: p.subject.clone(),
            })
            .await
            .map_err(internal_err("add document"))?;
        Ok(Response::new(document_pb(doc)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_document(
        &self,
        request: Request<pb::GetDocumentRequest>,
    ) -> Result<Response<pb::GetDocumentResponse>, Status> {
        let p = require(&request, READERS)?;
        let req = request.into_inner();
        let id = non_empty(&req.id).ok_or_else(|| invalid_argument("id", "is required"))?;
        let doc = self
            .store
            .get_document(id)
            .await
            .map_err(internal_err("get document"))?
            .ok_or_else(|| not_found("document", id))?;
        self.readable(&p, &doc.dossier_id, "id").await?;
        let content = if req.include_content {
            self.store
                .objects()
                .get(&doc.sha256)
                .await
                .map_err(internal_err("object store"))?
        } else {
            vec![]
        };
        Ok(Response::new(pb::GetDocumentResponse {
            document: Some(document_pb(doc)),
            content,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_documents(
        &self,
        request: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsResponse>, Status> {
        let p = require(&request, READERS)?;
        let req = request.into_inner();
        let d = self.readable(&p, &req.dossier_id, "dossier_id").await?;
        let limit = page_size(req.page_size, 50, 500)?;
        let docs = self
            .store
            .list_documents(&d.id, non_empty(&req.page_token), limit)
            .await
            .map_err(internal_err("list documents"))?;
        let next_page_token = if docs.len() as u64 == limit {
            docs.last().map(|x| x.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDocumentsResponse {
            documents: docs.into_iter().map(document_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn link_dossier(
        &self,
        request: Request<pb::LinkDossierRequest>,
    ) -> Result<Response<pb::Link>, Status> {
        let p = require(&request, WRITERS)?;
        let req = request.into_inner();
        let d = self.readable(&p, &req.dossier_id, "dossier_id").await?;
        let l = req
            .link
            .ok_or_else(|| invalid_argument("link", "is required"))?;
        if l.kind != "appointment" && l.kind != "signature" {
            return Err(invalid_argument(
                "link.kind",
                "must be appointment or signature",
            ));
        }
        let ref_id = text_field("link.ref_id", &l.ref_id, 100)?;
        let status = l.status.trim();
        if status.is_empty()
            || status.len() > 32
            || !status.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            return Err(invalid_argument(
                "link.status",
                "must be a lower-case status such as booked or signed",
            ));
        }
        let m = self
            .store
            .link(&d, &l.kind, &ref_id, status, &p.subject)
            .await
            .map_err(internal_err("link dossier"))?;
        Ok(Response::new(link_pb(m)))
    }

    #[tracing::instrument(skip_all)]
    async fn record_contact(
        &self,
        request: Request<pb::RecordContactRequest>,
    ) -> Result<Response<pb::TimelineEntry>, Status> {
        require(&request, &[Role::Service])?;
        let req = request.into_inner();
        let dossier_id = non_empty(&req.dossier_id)
            .ok_or_else(|| invalid_argument("dossier_id", "is required"))?;
        let kind = pb::EntryKind::try_from(req.kind)
            .ok()
            .and_then(entry_kind_slug)
            .ok_or_else(|| invalid_argument("kind", "must be a known entry kind"))?;
        let channel = Channel::try_from(req.channel)
            .map_err(|_| invalid_argument("channel", "is not a known channel"))?;
        let summary = text_field("summary", &req.summary, 4000)?;
        let occurred_at = match &req.occur_time {
            Some(ts) => {
                datetime(ts).ok_or_else(|| invalid_argument("occur_time", "is out of range"))?
            }
            None => self.store.now(),
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
                summary,
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
        let p = require(&request, READERS)?;
        let req = request.into_inner();
        let limit = page_size(req.page_size, 50, 500)?;
        let after = cursor(&req.page_token)?;
        let filter = timeline_filter(req.filter.as_ref())?;
        let d = self.readable(&p, &req.dossier_id, "dossier_id").await?;
        let entries = self
            .store
            .timeline(Some(&d.id), None, &filter, after.as_ref(), limit)
            .await
            .map_err(internal_err("timeline"))?;
        Ok(Response::new(timeline_page(entries, limit)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_citizen_timeline(
        &self,
        request: Request<pb::ListCitizenTimelineRequest>,
    ) -> Result<Response<pb::ListTimelineResponse>, Status> {
        let p = require(&request, READERS)?;
        let req = request.into_inner();
        let id = non_empty(&req.citizen_id)
            .ok_or_else(|| invalid_argument("citizen_id", "is required"))?;
        let limit = page_size(req.page_size, 50, 500)?;
        let after = cursor(&req.page_token)?;
        let mut filter = timeline_filter(req.filter.as_ref())?;
        filter.restricted_dossiers = self.hidden_dossiers(&p, id).await?;
        let entries = self
            .store
            .timeline(None, Some(id), &filter, after.as_ref(), limit)
            .await
            .map_err(internal_err("timeline"))?;
        Ok(Response::new(timeline_page(entries, limit)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_processes(
        &self,
        request: Request<pb::ListProcessesRequest>,
    ) -> Result<Response<pb::ListProcessesResponse>, Status> {
        require(&request, READERS)?;
        let domain = request.into_inner().domain;
        let catalog = self.store.catalog();
        let processes = catalog
            .latest()
            .filter(|p| domain.is_empty() || p.domain == domain)
            .map(|p| process_pb(p, catalog.versions(&p.id)))
            .collect();
        Ok(Response::new(pb::ListProcessesResponse { processes }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_process(
        &self,
        request: Request<pb::GetProcessRequest>,
    ) -> Result<Response<pb::Process>, Status> {
        require(&request, READERS)?;
        let req = request.into_inner();
        let id = non_empty(&req.id).ok_or_else(|| invalid_argument("id", "is required"))?;
        let catalog = self.store.catalog();
        let def = if req.version == 0 {
            catalog.get_latest(id)
        } else {
            catalog.get(id, req.version)
        }
        .ok_or_else(|| not_found("process", &format!("{id} v{}", req.version)))?;
        Ok(Response::new(process_pb(def, catalog.versions(id))))
    }

    #[tracing::instrument(skip_all)]
    async fn migrate_dossiers(
        &self,
        request: Request<pb::MigrateDossiersRequest>,
    ) -> Result<Response<pb::MigrateDossiersResponse>, Status> {
        let p = require(&request, SUPERVISORS)?;
        let req = request.into_inner();
        let id = non_empty(&req.process_id)
            .ok_or_else(|| invalid_argument("process_id", "is required"))?;
        let catalog = self.store.catalog();
        catalog.get(id, req.from_version).ok_or_else(|| {
            invalid_argument(
                "from_version",
                format!("process {id} has no version {}", req.from_version),
            )
        })?;
        let to = catalog
            .get(id, req.to_version)
            .ok_or_else(|| {
                invalid_argument(
                    "to_version",
                    format!("process {id} has no version {}", req.to_version),
                )
            })?
            .clone();
        if req.from_version == req.to_version {
            return Err(invalid_argument(
                "to_version",
                "must differ from from_version",
            ));
        }
        for (old, new) in &req.state_mapping {
            if to.state(new).is_none() {
                return Err(invalid_argument(
                    &format!("state_mapping[{old}]"),
                    format!("`{new}` is not a state of {id} v{}", req.to_version),
                ));
            }
        }
        let open = self
            .store
            .open_dossiers_of(id, req.from_version)
            .await
            .map_err(internal_err("migrate"))?;
        let mut unmapped: Vec<&str> = open
            .iter()
            .map(|d| d.state.as_str())
            .filter(|s| !req.state_mapping.contains_key(*s))
            .collect();
        unmapped.sort();
        unmapped.dedup();
        if !unmapped.is_empty() {
            return Err(failed_precondition(
                "STATE_MAPPING",
                &format!("processes/{id}"),
                format!(
                    "open dossiers are in states without a mapping: {}",
                    unmapped.join(", ")
                ),
            ));
        }
        let plan: Vec<pb::DossierMigration> = open
            .iter()
            .map(|d| pb::DossierMigration {
                dossier_id: d.id.clone(),
                reference: d.reference.clone(),
                from_state: d.state.clone(),
                to_state: req.state_mapping.get(&d.state).cloned().unwrap_or_default(),
            })
            .collect();
        if req.dry_run {
            return Ok(Response::new(pb::MigrateDossiersResponse {
                dossiers: plan,
                applied: false,
            }));
        }
        let done = self
            .store
            .migrate(&open, &to, &req.state_mapping, &p.subject)
            .await
            .map_err(transition_status)?;
        tracing::info!(process_id = %id, from = req.from_version, to = req.to_version, dossiers = done.len(), "dossiers migrated");
        Ok(Response::new(pb::MigrateDossiersResponse {
            dossiers: done
                .into_iter()
                .map(|(d, from)| pb::DossierMigration {
                    dossier_id: d.id,
                    reference: d.reference,
                    from_state: from,
                    to_state: d.state,
                })
                .collect(),
            applied: true,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn purge_expired(
        &self,
        request: Request<pb::PurgeExpiredRequest>,
    ) -> Result<Response<pb::PurgeExpiredResponse>, Status> {
        let p = require(&request, ADMINS)?;
        let dry_run = request.into_inner().dry_run;
        let r = self
            .store
            .purge_expired(dry_run, &p.subject)
            .await
            .map_err(internal_err("purge"))?;
        Ok(Response::new(pb::PurgeExpiredResponse {
            references: r.references,
            documents: r.documents,
            held: r.held,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        require(&request, SUPERVISORS)?;
        let req = request.into_inner();
        let limit = page_size(req.page_size, 50, 500)?;
        let list = self
            .store
            .list_audit(
                non_empty(&req.resource),
                non_empty(&req.actor),
                non_empty(&req.page_token),
                limit,
            )
            .await
            .map_err(internal_err("audit"))?;
        let next_page_token = if list.len() as u64 == limit {
            list.last().map(|a| a.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: list
                .into_iter()
                .map(|a| pb::AuditEntry {
                    id: a.id,
                    actor: a.actor,
                    action: a.action,
                    resource: a.resource,
                    detail: a.detail,
                    occur_time: Some(timestamp(a.created_at)),
                })
                .collect(),
            next_page_token,
        }))
    }
}

fn merge_status(e: MergeError) -> Status {
    match e {
        MergeError::Refused(why) => failed_precondition("MERGE", "citizens", why),
        MergeError::NotFound(what) => Status::not_found(what),
        MergeError::Db(e) => internal_err("merge")(e),
    }
}
