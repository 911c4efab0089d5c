//! The `guichet.dossier.v1.DossierService` gRPC API: proto in, domain types
//! at the edge, store, proto out. One module per resource (citizens,
//! dossiers, documents, timelines, processes, audit); this one holds the
//! service, the access checks every resource shares and the trait that
//! dispatches to them.

mod audit;
mod citizens;
mod documents;
mod dossiers;
mod follow;
mod intake;
mod processes;
mod studio;
mod timelines;

use std::sync::Arc;

use chrono::Utc;
use guichet_platform::auth::{self, Role};
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

use dossiers::{dossier_message, label, transition_status};
use timelines::entry_pb;

/// Whether `p` may read `d`: restricted processes are for members of their
/// group, services and admins; other dossiers for every reader.
fn may_read(p: &Principal, d: &dossier::Model) -> bool {
    d.restricted_group.is_empty() || in_group(p, &d.restricted_group)
}

/// Whether `p` may act within a restricted process of `group`: its
/// members, services and admins.
fn in_group(p: &Principal, group: &str) -> bool {
    p.has(Role::Service) || p.has(Role::Admin) || p.groups.iter().any(|g| g == group)
}

#[derive(Clone)]
pub struct DossierApi {
    store: Store,
    config: Arc<Config>,
    /// The follow codes of "Suivre ma demande".
    follow: crate::follow::Follow,
}

fn opt_ts(t: Option<chrono::DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

impl DossierApi {
    pub fn new(store: Store, config: Config) -> Self {
        DossierApi {
            follow: crate::follow::Follow::new(store.db().clone()),
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
        let mut out: Vec<pb::Dossier> = ds
            .into_iter()
            .map(|d| {
                let links = links.remove(&d.id).unwrap_or_default();
                let other_citizen_ids = others.remove(&d.id).unwrap_or_default();
                dossier_message(&catalog, d, links, other_citizen_ids)
            })
            .collect();
        for d in &mut out {
            d.follow_code = self
                .follow
                .code(&d.id)
                .await
                .map_err(internal_err("follow code"))?;
        }
        Ok(out)
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
            if !may_read(p, &d) {
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

    /// Audit `action` on every restricted dossier among `dossiers`.
    async fn audit_restricted(
        &self,
        p: &Principal,
        dossiers: &[dossier::Model],
        action: &str,
        detail: &str,
    ) -> Result<(), Status> {
        for d in dossiers.iter().filter(|d| !d.restricted_group.is_empty()) {
            self.store
                .audit(&p.subject, action, &format!("dossiers/{}", d.id), detail)
                .await
                .map_err(internal_err("audit"))?;
        }
        Ok(())
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

/// A list's page token: the last id of the previous page (a UUID), as
/// this API issued it; anything else (forged, or 100 KB long) is refused.
fn page_after(token: &str) -> Result<Option<&str>, Status> {
    let t = token.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t.len() > 64 || !t.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(invalid_argument(
            "page_token",
            "is not a token this API issued",
        ));
    }
    Ok(Some(t))
}

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    if s.is_empty() { None } else { Some(s) }
}

#[tonic::async_trait]
impl pb::dossier_service_server::DossierService for DossierApi {
    #[tracing::instrument(skip_all)]
    async fn correlate_intake(
        &self,
        request: Request<pb::CorrelateIntakeRequest>,
    ) -> Result<Response<pb::CorrelateIntakeResponse>, Status> {
        intake::correlate_intake(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_intake_placements(
        &self,
        request: Request<pb::ListIntakePlacementsRequest>,
    ) -> Result<Response<pb::ListIntakePlacementsResponse>, Status> {
        intake::list_intake_placements(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn resolve_citizen(
        &self,
        request: Request<pb::ResolveCitizenRequest>,
    ) -> Result<Response<pb::ResolveCitizenResponse>, Status> {
        citizens::resolve_citizen(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_citizen(
        &self,
        request: Request<pb::GetCitizenRequest>,
    ) -> Result<Response<pb::Citizen>, Status> {
        citizens::get_citizen(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_citizens(
        &self,
        request: Request<pb::ListCitizensRequest>,
    ) -> Result<Response<pb::ListCitizensResponse>, Status> {
        citizens::list_citizens(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn update_citizen(
        &self,
        request: Request<pb::UpdateCitizenRequest>,
    ) -> Result<Response<pb::Citizen>, Status> {
        citizens::update_citizen(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn merge_citizens(
        &self,
        request: Request<pb::MergeCitizensRequest>,
    ) -> Result<Response<pb::Merge>, Status> {
        citizens::merge_citizens(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn split_citizen(
        &self,
        request: Request<pb::SplitCitizenRequest>,
    ) -> Result<Response<pb::Merge>, Status> {
        citizens::split_citizen(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn export_citizen(
        &self,
        request: Request<pb::ExportCitizenRequest>,
    ) -> Result<Response<pb::ExportCitizenResponse>, Status> {
        citizens::export_citizen(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn erase_citizen(
        &self,
        request: Request<pb::EraseCitizenRequest>,
    ) -> Result<Response<pb::EraseCitizenResponse>, Status> {
        citizens::erase_citizen(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn open_dossier(
        &self,
        request: Request<pb::OpenDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        dossiers::open_dossier(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_dossier(
        &self,
        request: Request<pb::GetDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        dossiers::get_dossier(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn follow_dossier(
        &self,
        request: Request<pb::FollowDossierRequest>,
    ) -> Result<Response<pb::FollowedDossier>, Status> {
        follow::follow_dossier(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_dossiers(
        &self,
        request: Request<pb::ListDossiersRequest>,
    ) -> Result<Response<pb::ListDossiersResponse>, Status> {
        dossiers::list_dossiers(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn update_dossier(
        &self,
        request: Request<pb::UpdateDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        dossiers::update_dossier(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn transition_dossier(
        &self,
        request: Request<pb::TransitionDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        dossiers::transition_dossier(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn reopen_dossier(
        &self,
        request: Request<pb::ReopenDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        dossiers::reopen_dossier(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn set_legal_hold(
        &self,
        request: Request<pb::SetLegalHoldRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        dossiers::set_legal_hold(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_guidance(
        &self,
        request: Request<pb::GetGuidanceRequest>,
    ) -> Result<Response<pb::Guidance>, Status> {
        dossiers::get_guidance(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn add_note(
        &self,
        request: Request<pb::AddNoteRequest>,
    ) -> Result<Response<pb::TimelineEntry>, Status> {
        dossiers::add_note(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn add_document(
        &self,
        request: Request<pb::AddDocumentRequest>,
    ) -> Result<Response<pb::Document>, Status> {
        documents::add_document(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_document(
        &self,
        request: Request<pb::GetDocumentRequest>,
    ) -> Result<Response<pb::GetDocumentResponse>, Status> {
        documents::get_document(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_documents(
        &self,
        request: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsResponse>, Status> {
        documents::list_documents(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn link_dossier(
        &self,
        request: Request<pb::LinkDossierRequest>,
    ) -> Result<Response<pb::Link>, Status> {
        dossiers::link_dossier(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn record_contact(
        &self,
        request: Request<pb::RecordContactRequest>,
    ) -> Result<Response<pb::TimelineEntry>, Status> {
        timelines::record_contact(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_dossier_timeline(
        &self,
        request: Request<pb::ListDossierTimelineRequest>,
    ) -> Result<Response<pb::ListTimelineResponse>, Status> {
        timelines::list_dossier_timeline(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_citizen_timeline(
        &self,
        request: Request<pb::ListCitizenTimelineRequest>,
    ) -> Result<Response<pb::ListTimelineResponse>, Status> {
        timelines::list_citizen_timeline(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_processes(
        &self,
        request: Request<pb::ListProcessesRequest>,
    ) -> Result<Response<pb::ListProcessesResponse>, Status> {
        processes::list_processes(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_process(
        &self,
        request: Request<pb::GetProcessRequest>,
    ) -> Result<Response<pb::Process>, Status> {
        processes::get_process(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn migrate_dossiers(
        &self,
        request: Request<pb::MigrateDossiersRequest>,
    ) -> Result<Response<pb::MigrateDossiersResponse>, Status> {
        processes::migrate_dossiers(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn purge_expired(
        &self,
        request: Request<pb::PurgeExpiredRequest>,
    ) -> Result<Response<pb::PurgeExpiredResponse>, Status> {
        audit::purge_expired(self, request).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        audit::list_audit_entries(self, request).await
    }
}
