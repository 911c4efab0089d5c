//! The process catalog and the migration of open dossiers to a new version.

use super::*;

pub(super) fn process_pb(p: &ProcessDefinition, versions: Vec<u32>) -> pb::Process {
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
        states: p.states.iter().map(|s| state_pb(p, s)).collect(),
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
        documents: p
            .documents
            .iter()
            .map(|d| pb::ProcessDocument {
                id: d.id.clone(),
                title: d.title.clone(),
                required: d.required,
            })
            .collect(),
        timers: p
            .timers
            .iter()
            .map(|t| pb::ProcessTimer {
                state: t.state.clone(),
                after_days: t.after_days.unwrap_or_default(),
                after_working_days: t.after_working_days.unwrap_or_default(),
                kind: t.kind.clone(),
                to_state: t.to.clone().unwrap_or_default(),
                reason: t.reason.clone().unwrap_or_default(),
                template: t.template.clone().unwrap_or_default(),
            })
            .collect(),
        reopen_state: p.reopen_state.clone().unwrap_or_default(),
    }
}

pub(super) fn state_pb(
    p: &ProcessDefinition,
    s: &crate::catalog::StateDefinition,
) -> pb::ProcessState {
    pb::ProcessState {
        id: s.id.clone(),
        title: s.title.clone(),
        terminal: s.terminal,
        guidance: s.guidance.trim().to_owned(),
        checklist: s.checklist.clone(),
        sla_days: s.sla_days.unwrap_or_default(),
        sla_working_hours: s.sla_working_hours.unwrap_or_default(),
        actions: s
            .actions
            .iter()
            .map(|a| pb::ProcessAction {
                kind: a.kind.clone(),
                appointment_type: a.appointment_type.clone().unwrap_or_default(),
                template: a.template.clone().unwrap_or_default(),
                document: a.document.clone().unwrap_or_default(),
                description: a.describe(p),
            })
            .collect(),
    }
}

pub(super) async fn list_processes(
    api: &DossierApi,
    request: Request<pb::ListProcessesRequest>,
) -> Result<Response<pb::ListProcessesResponse>, Status> {
    let domain = request.into_inner().domain;
    let catalog = api.store.catalog();
    let processes = catalog
        .latest()
        .filter(|p| domain.is_empty() || p.domain == domain)
        .map(|p| process_pb(p, catalog.versions(&p.id)))
        .collect();
    Ok(Response::new(pb::ListProcessesResponse { processes }))
}

pub(super) async fn get_process(
    api: &DossierApi,
    request: Request<pb::GetProcessRequest>,
) -> Result<Response<pb::Process>, Status> {
    let req = request.into_inner();
    let id = non_empty(&req.id).ok_or_else(|| invalid_argument("id", "is required"))?;
    let catalog = api.store.catalog();
    let def = if req.version == 0 {
        catalog.get_latest(id)
    } else {
        catalog.get(id, req.version)
    }
    .ok_or_else(|| not_found("process", &format!("{id} v{}", req.version)))?;
    Ok(Response::new(process_pb(def, catalog.versions(id))))
}

pub(super) async fn migrate_dossiers(
    api: &DossierApi,
    request: Request<pb::MigrateDossiersRequest>,
) -> Result<Response<pb::MigrateDossiersResponse>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let id =
        non_empty(&req.process_id).ok_or_else(|| invalid_argument("process_id", "is required"))?;
    let catalog = api.store.catalog();
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
    let open = api
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
    let done = api
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
