//! `guichet.dossier.v1.ProcessStudioService`: the process owners' studio.
//! Every call needs the `process_owner` role (admins pass).

use super::*;
use crate::catalog::{Facts, Problem};
use crate::db::entities::{process_draft, process_publication};
use crate::studio::{self, ActionForm, Edit, StateForm, StudioError, Target, TransitionForm};

fn studio_status(e: StudioError) -> Status {
    match e {
        StudioError::NotFound(what) => Status::not_found(what),
        StudioError::Exists(what) => Status::already_exists(what),
        StudioError::Invalid { field, message } => invalid_argument(&field, message),
        StudioError::Precondition(why) => failed_precondition("PROCESS_DRAFT", "processes", why),
        StudioError::Db(e) => internal("process studio", e),
        StudioError::Io(e) => internal("process studio file", e),
    }
}

fn internal(context: &str, e: impl std::fmt::Display) -> Status {
    guichet_platform::grpc::internal(context, e)
}

fn problem_pb(p: Problem) -> pb::Problem {
    pb::Problem {
        field: p.field,
        line: p.line,
        message: p.message,
    }
}

fn id_of(s: &str) -> Result<&str, Status> {
    non_empty(s).ok_or_else(|| invalid_argument("process_id", "is required"))
}

fn publication_pb(p: process_publication::Model) -> pb::Publication {
    pb::Publication {
        process_id: p.process_id,
        version: p.version as u32,
        published_by: p.published_by,
        reason: p.reason,
        publish_time: Some(timestamp(p.published_at)),
        written_to: p.written_to,
    }
}

impl DossierApi {
    fn target(&self) -> Target {
        match (
            self.config.studio_writes.as_str(),
            self.store.catalog_handle().dir(),
        ) {
            ("directory", Some(dir)) => Target::Directory(dir.to_owned()),
            _ => Target::Database,
        }
    }

    /// A draft with its problems and, when valid, its process and what it
    /// changes against its base version.
    fn draft_pb(&self, d: process_draft::Model) -> pb::Draft {
        let (def, problems) = studio::problems(&d.text);
        let catalog = self.store.catalog();
        let changes = match (&def, catalog.get(&d.process_id, d.base_version as u32)) {
            (Some(next), Some(base)) => studio::changes(base, next),
            _ => vec![],
        };
        let process = def.map(|p| {
            let mut versions = catalog.versions(&p.id);
            versions.push(p.version);
            processes::process_pb(&p, versions)
        });
        pb::Draft {
            process_id: d.process_id,
            base_version: d.base_version as u32,
            version: d.version as u32,
            text: d.text,
            author: d.author,
            create_time: Some(timestamp(d.created_at)),
            update_time: Some(timestamp(d.updated_at)),
            problems: problems.into_iter().map(problem_pb).collect(),
            process,
            changes,
        }
    }

    async fn draft_of(&self, id: &str) -> Result<process_draft::Model, Status> {
        self.store
            .draft(id)
            .await
            .map_err(internal_err("get draft"))?
            .ok_or_else(|| not_found("draft", id))
    }
}

fn opt(v: u32) -> Option<u32> {
    (v > 0).then_some(v)
}

fn edit_of(e: pb::edit_draft_request::Edit) -> Edit {
    use pb::edit_draft_request::Edit as E;
    match e {
        E::PutState(s) => Edit::PutState(StateForm {
            id: s.id.trim().to_owned(),
            title: s.title,
            guidance: s.guidance,
            terminal: s.terminal,
            checklist: s.checklist,
            sla_days: opt(s.sla_days),
            sla_working_hours: opt(s.sla_working_hours),
        }),
        E::RemoveState(id) => Edit::RemoveState(id),
        E::AddTransition(t) => Edit::AddTransition(TransitionForm {
            from: t.from_state,
            to: t.to_state,
            label: t.label,
            roles: t.roles,
            guards: t.guards,
            requires_reason: t.requires_reason,
        }),
        E::RemoveTransition(i) => Edit::RemoveTransition(i as usize),
        E::AddTimer(t) => Edit::AddTimer(crate::catalog::TimerDefinition {
            state: t.state,
            after_days: opt(t.after_days),
            after_working_days: opt(t.after_working_days),
            kind: t.kind,
            to: Some(t.to_state).filter(|s| !s.is_empty()),
            reason: Some(t.reason).filter(|s| !s.is_empty()),
            template: Some(t.template).filter(|s| !s.is_empty()),
        }),
        E::RemoveTimer(i) => Edit::RemoveTimer(i as usize),
        E::AddAction(a) => Edit::AddAction(ActionForm {
            state: a.state,
            kind: a.kind,
            appointment_type: a.appointment_type,
            template: a.template,
            document: a.document,
        }),
        E::RemoveAction(at) => {
            let (state, index) = at.rsplit_once('/').unwrap_or((at.as_str(), ""));
            Edit::RemoveAction {
                state: state.to_owned(),
                index: index.parse().unwrap_or(usize::MAX),
            }
        }
        E::PutDocument(d) => Edit::PutDocument {
            id: d.id.trim().to_owned(),
            title: d.title,
            required: d.required,
        },
        E::SetFields(f) => Edit::SetFields {
            title: f.title,
            description: f.description,
            retention_days: f.retention_days,
        },
    }
}

#[tonic::async_trait]
impl pb::process_studio_service_server::ProcessStudioService for DossierApi {
    #[tracing::instrument(skip_all)]
    async fn get_process_usage(
        &self,
        request: Request<pb::GetProcessUsageRequest>,
    ) -> Result<Response<pb::ProcessUsage>, Status> {
        let id = id_of(&request.get_ref().process_id)?.to_owned();
        let catalog = self.store.catalog();
        if catalog.get_latest(&id).is_none() {
            return Err(not_found("process", &id));
        }
        let mut usage = self
            .store
            .process_usage(&id)
            .await
            .map_err(internal_err("process usage"))?;
        let versions = catalog
            .versions(&id)
            .into_iter()
            .map(|v| {
                let states = usage.remove(&v).unwrap_or_default();
                pb::VersionUsage {
                    version: v,
                    open_dossiers: states.values().sum(),
                    states: states
                        .into_iter()
                        .map(|(state, open_dossiers)| pb::StateCount {
                            state,
                            open_dossiers,
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(pb::ProcessUsage {
            process_id: id,
            versions,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_process_source(
        &self,
        request: Request<pb::GetProcessSourceRequest>,
    ) -> Result<Response<pb::ProcessSource>, Status> {
        let req = request.into_inner();
        let id = id_of(&req.process_id)?;
        let catalog = self.store.catalog();
        let version = if req.version == 0 {
            catalog.get_latest(id).map(|p| p.version).unwrap_or(0)
        } else {
            req.version
        };
        let (text, origin) = catalog
            .source_of(id, version)
            .ok_or_else(|| not_found("process", &format!("{id} v{version}")))?;
        Ok(Response::new(pb::ProcessSource {
            process_id: id.to_owned(),
            version,
            text: text.to_owned(),
            origin,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_drafts(
        &self,
        _request: Request<pb::ListDraftsRequest>,
    ) -> Result<Response<pb::ListDraftsResponse>, Status> {
        let drafts = self
            .store
            .drafts()
            .await
            .map_err(internal_err("list drafts"))?;
        Ok(Response::new(pb::ListDraftsResponse {
            drafts: drafts.into_iter().map(|d| self.draft_pb(d)).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_draft(
        &self,
        request: Request<pb::GetDraftRequest>,
    ) -> Result<Response<pb::Draft>, Status> {
        let id = id_of(&request.get_ref().process_id)?.to_owned();
        let d = self.draft_of(&id).await?;
        Ok(Response::new(self.draft_pb(d)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_draft(
        &self,
        request: Request<pb::CreateDraftRequest>,
    ) -> Result<Response<pb::Draft>, Status> {
        let p = auth::caller(&request)?;
        let req = request.into_inner();
        let id = id_of(&req.process_id)?;
        let d = self
            .store
            .create_draft(id, req.from_version, &p.subject)
            .await
            .map_err(studio_status)?;
        tracing::info!(process_id = %id, version = d.version, "process draft created");
        Ok(Response::new(self.draft_pb(d)))
    }

    #[tracing::instrument(skip_all)]
    async fn update_draft_text(
        &self,
        request: Request<pb::UpdateDraftTextRequest>,
    ) -> Result<Response<pb::Draft>, Status> {
        let p = auth::caller(&request)?;
        let req = request.into_inner();
        let id = id_of(&req.process_id)?;
        if req.text.trim().is_empty() {
            return Err(invalid_argument("text", "is empty"));
        }
        if req.text.len() > 512 * 1024 {
            return Err(invalid_argument("text", "is longer than 512 KiB"));
        }
        let d = self
            .store
            .save_draft_text(id, &req.text, &p.subject)
            .await
            .map_err(studio_status)?;
        Ok(Response::new(self.draft_pb(d)))
    }

    #[tracing::instrument(skip_all)]
    async fn edit_draft(
        &self,
        request: Request<pb::EditDraftRequest>,
    ) -> Result<Response<pb::Draft>, Status> {
        let p = auth::caller(&request)?;
        let req = request.into_inner();
        let id = id_of(&req.process_id)?;
        let edit = req
            .edit
            .map(edit_of)
            .ok_or_else(|| invalid_argument("edit", "is required"))?;
        let d = self
            .store
            .edit_draft(id, &edit, &p.subject)
            .await
            .map_err(studio_status)?;
        Ok(Response::new(self.draft_pb(d)))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_draft(
        &self,
        request: Request<pb::DeleteDraftRequest>,
    ) -> Result<Response<pb::DeleteDraftResponse>, Status> {
        let p = auth::caller(&request)?;
        let id = id_of(&request.get_ref().process_id)?.to_owned();
        self.store
            .delete_draft(&id, &p.subject)
            .await
            .map_err(studio_status)?;
        Ok(Response::new(pb::DeleteDraftResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn dry_run(
        &self,
        request: Request<pb::DryRunRequest>,
    ) -> Result<Response<pb::DryRunResponse>, Status> {
        let req = request.into_inner();
        let id = id_of(&req.process_id)?;
        let def = if req.version == 0 {
            let d = self.draft_of(id).await?;
            crate::catalog::check_text(&d.text).map_err(|p| {
                failed_precondition(
                    "PROCESS_DRAFT",
                    &format!("processes/{id}"),
                    format!("the draft is not valid: {p}"),
                )
            })?
        } else {
            self.store
                .catalog()
                .get(id, req.version)
                .cloned()
                .ok_or_else(|| not_found("process", &format!("{id} v{}", req.version)))?
        };
        let facts = req.facts.unwrap_or_default();
        let role = if facts.role.is_empty() {
            Role::Agent
        } else {
            facts
                .role
                .parse::<Role>()
                .map_err(|e| invalid_argument("facts.role", e))?
        };
        let run = studio::dry_run(
            &def,
            &req.path,
            &Facts {
                provided_documents: facts.provided_documents,
                citizen_identified: facts.citizen_identified,
                appointment_booked: facts.appointment_booked,
                signature_completed: facts.signature_completed,
                note_present: facts.note_present,
            },
            role,
        )
        .map_err(|e| invalid_argument(&e.field, e.message))?;
        let current = run
            .steps
            .last()
            .map(|s| s.state.clone())
            .unwrap_or_default();
        let state = def.state(&current).expect("the dry run ends on a state");
        Ok(Response::new(pb::DryRunResponse {
            version: def.version,
            steps: run
                .steps
                .into_iter()
                .map(|s| pb::DryRunStep {
                    state: s.state,
                    title: s.title,
                    cause: s.cause.to_owned(),
                })
                .collect(),
            current: Some(processes::state_pb(&def, state)),
            missing_documents: run.missing_documents,
            timers: run.timers,
            options: run
                .options
                .into_iter()
                .map(|o| pb::DryRunOption {
                    to_state: o.to,
                    label: o.label,
                    blocked: o.blocked,
                    requires_reason: o.requires_reason,
                })
                .collect(),
            closed: state.terminal,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn publish_draft(
        &self,
        request: Request<pb::PublishDraftRequest>,
    ) -> Result<Response<pb::Publication>, Status> {
        let p = auth::caller(&request)?;
        let req = request.into_inner();
        let id = id_of(&req.process_id)?;
        let row = self
            .store
            .publish_draft(id, &req.reason, &p.subject, &self.target())
            .await
            .map_err(studio_status)?;
        tracing::info!(process_id = %id, version = row.version, written_to = %row.written_to, "process version published");
        metrics::counter!("guichet_dossier_process_publications_total").increment(1);
        Ok(Response::new(publication_pb(row)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_publications(
        &self,
        request: Request<pb::ListPublicationsRequest>,
    ) -> Result<Response<pb::ListPublicationsResponse>, Status> {
        let id = non_empty(&request.get_ref().process_id).map(str::to_owned);
        let rows = self
            .store
            .publications(id.as_deref())
            .await
            .map_err(internal_err("list publications"))?;
        Ok(Response::new(pb::ListPublicationsResponse {
            publications: rows.into_iter().map(publication_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn export_catalog(
        &self,
        _request: Request<pb::ExportCatalogRequest>,
    ) -> Result<Response<pb::ExportCatalogResponse>, Status> {
        let catalog = self.store.catalog();
        let files = catalog
            .all()
            .filter_map(|p| {
                catalog
                    .source_of(&p.id, p.version)
                    .map(|(text, _)| pb::CatalogFile {
                        name: studio::file_name(&p.id, p.version),
                        text: text.to_owned(),
                    })
            })
            .collect();
        Ok(Response::new(pb::ExportCatalogResponse { files }))
    }

    #[tracing::instrument(skip_all)]
    async fn import_catalog(
        &self,
        request: Request<pb::ImportCatalogRequest>,
    ) -> Result<Response<pb::ImportCatalogResponse>, Status> {
        let p = auth::caller(&request)?;
        let req = request.into_inner();
        if req.files.is_empty() {
            return Err(invalid_argument("files", "give at least one file"));
        }
        if req.files.len() > 500 {
            return Err(invalid_argument("files", "at most 500 files at once"));
        }
        let files: Vec<(String, String)> =
            req.files.into_iter().map(|f| (f.name, f.text)).collect();
        let out = self
            .store
            .import(&files, &req.reason, &p.subject, &self.target())
            .await
            .map_err(studio_status)?;
        Ok(Response::new(pb::ImportCatalogResponse {
            files: out
                .into_iter()
                .map(|f| pb::ImportedFile {
                    name: f.name,
                    process_id: f.process_id,
                    version: f.version,
                    outcome: f.outcome.to_owned(),
                    problems: f.problems.into_iter().map(problem_pb).collect(),
                })
                .collect(),
        }))
    }
}
