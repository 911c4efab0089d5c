//! Dossiers: opening, reading, updates, the process engine (transitions, reopening, guidance), notes and links.

use super::*;

pub(super) fn link_pb(l: link::Model) -> pb::Link {
    pb::Link {
        kind: l.kind,
        ref_id: l.ref_id,
        status: l.status,
        update_time: Some(timestamp(l.updated_at)),
    }
}

pub(super) fn label(p: &ProcessDefinition, t: &crate::catalog::TransitionDefinition) -> String {
    if t.label.trim().is_empty() {
        p.state(&t.to)
            .map(|s| s.title.clone())
            .unwrap_or_else(|| t.to.clone())
    } else {
        t.label.clone()
    }
}

pub(super) fn may_fire(p: &Principal, t: &crate::catalog::TransitionDefinition) -> bool {
    t.roles
        .iter()
        .filter_map(|r| r.parse::<Role>().ok())
        .any(|r| p.has(r))
}

pub(super) fn transition_status(e: TransitionError) -> Status {
    match e {
        TransitionError::Conflict => Status::aborted(
            "Le dossier vient d'être modifié par un autre changement : rechargez-le puis recommencez.",
        ),
        TransitionError::Db(e) => internal_err("transition")(e),
    }
}

/// One dossier as the API shows it, with the catalog's titles and guidance.
pub(super) fn dossier_message(
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
        // Set by the API, which holds the follow key.
        follow_code: String::new(),
    }
}

pub(super) async fn open_dossier(
    api: &DossierApi,
    request: Request<pb::OpenDossierRequest>,
) -> Result<Response<pb::Dossier>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let citizen_id =
        non_empty(&req.citizen_id).ok_or_else(|| invalid_argument("citizen_id", "is required"))?;
    let process_id = non_empty(&req.process_id).unwrap_or(&api.config.default_process);
    let catalog = api.store.catalog();
    let def = catalog.get_latest(process_id).ok_or_else(|| {
        invalid_argument(
            "process_id",
            format!("`{process_id}` is not in the process catalog"),
        )
    })?;
    // A restricted process (the CCAS's) is opened only by its group, a
    // service or an admin: the answer would carry the dossier.
    if let Some(group) = def.restricted_group.as_deref()
        && !in_group(&p, group)
    {
        api.store
            .audit(
                &p.subject,
                "dossier.open_denied",
                &format!("processes/{process_id}"),
                &format!("citizen {citizen_id}"),
            )
            .await
            .map_err(internal_err("audit"))?;
        return Err(Status::permission_denied(format!(
            "la démarche « {} » est réservée au groupe `{group}`",
            def.title
        )));
    }
    let citizen = api
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
    let (d, created) = api
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
    Ok(Response::new(api.dossier_pb(d).await?))
}

pub(super) async fn get_dossier(
    api: &DossierApi,
    request: Request<pb::GetDossierRequest>,
) -> Result<Response<pb::Dossier>, Status> {
    let p = auth::caller(&request)?;
    let d = api.readable(&p, &request.into_inner().id, "id").await?;
    Ok(Response::new(api.dossier_pb(d).await?))
}

pub(super) async fn list_dossiers(
    api: &DossierApi,
    request: Request<pb::ListDossiersRequest>,
) -> Result<Response<pb::ListDossiersResponse>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let limit = page_size(req.page_size, 50, 500)?;
    let filter = DossierFilter {
        citizen_id: non_empty(&req.citizen_id).map(str::to_owned),
        process_id: non_empty(&req.process_id).map(str::to_owned),
        open_only: req.open_only,
        updated_after: match &req.updated_after {
            Some(t) => Some(
                datetime(t).ok_or_else(|| invalid_argument("updated_after", "is out of range"))?,
            ),
            None => None,
        },
        holder_agent: non_empty(&req.holder_agent).map(str::to_owned),
        holder_department: non_empty(&req.holder_department).map(str::to_owned),
        groups: p.groups.clone(),
        visible_groups_all: p.has(Role::Service) || p.has(Role::Admin),
    };
    let list = api
        .store
        .list_dossiers(&filter, page_after(&req.page_token)?, limit)
        .await
        .map_err(internal_err("list dossiers"))?;
    let next_page_token = if list.len() as u64 == limit {
        list.last().map(|d| d.id.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    let dossiers = api.dossiers_pb(list).await?;
    Ok(Response::new(pb::ListDossiersResponse {
        dossiers,
        next_page_token,
    }))
}

pub(super) async fn update_dossier(
    api: &DossierApi,
    request: Request<pb::UpdateDossierRequest>,
) -> Result<Response<pb::Dossier>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let body = req
        .dossier
        .ok_or_else(|| invalid_argument("dossier", "is required"))?;
    let d = api.readable(&p, &body.id, "dossier.id").await?;
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
            let c = api
                .store
                .get_citizen(id)
                .await
                .map_err(internal_err("update dossier"))?
                .ok_or_else(|| invalid_argument(&field, format!("citizen {id} does not exist")))?;
            if c.citizen.merged_into.is_some() || c.citizen.erased_at.is_some() {
                return Err(invalid_argument(
                    &field,
                    "this citizen record was merged or erased",
                ));
            }
        }
        api.store
            .set_other_citizens(&d, &ids, &p.subject)
            .await
            .map_err(internal_err("update dossier"))?;
    }
    if agent.is_some() || department.is_some() {
        api.store
            .set_holder(&d, agent, department, &p.subject)
            .await
            .map_err(internal_err("update dossier"))?;
    }
    let d = api.readable(&p, &d.id, "dossier.id").await?;
    Ok(Response::new(api.dossier_pb(d).await?))
}

pub(super) async fn transition_dossier(
    api: &DossierApi,
    request: Request<pb::TransitionDossierRequest>,
) -> Result<Response<pb::Dossier>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    if let Some(done) = api.replayed(&p, &req.request_id).await? {
        return Ok(Response::new(done));
    }
    let d = api.readable(&p, &req.id, "id").await?;
    let to = non_empty(&req.to_state).ok_or_else(|| invalid_argument("to_state", "is required"))?;
    let def = api.def_of(&d)?;
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
                "La démarche « {} » (version {}) ne permet pas de passer de « {} » à « {to} » (possibles : {}).",
                def.title,
                def.version,
                d.state,
                if allowed.is_empty() {
                    "aucun".to_owned()
                } else {
                    allowed.join(", ")
                }
            ),
        ));
    };
    if !may_fire(&p, t) {
        return Err(Status::permission_denied(format!(
            "Le passage de « {} » à « {to} » est réservé aux rôles : {}.",
            d.state,
            t.roles.join(", ")
        )));
    }
    if t.requires_reason && req.reason.trim().is_empty() {
        return Err(invalid_argument(
            "reason",
            "un motif est obligatoire pour ce changement d'état",
        ));
    }
    if req.reason.chars().count() > 2000 {
        return Err(invalid_argument(
            "reason",
            "le motif ne doit pas dépasser 2000 caractères",
        ));
    }
    if req.expected_revision != 0 && req.expected_revision != d.revision {
        return Err(Status::aborted(format!(
            "Le dossier a changé depuis votre lecture (révision {} et non {}) : rechargez-le.",
            d.revision, req.expected_revision
        )));
    }
    let failures = api
        .store
        .guard_failures(&d, &def, t)
        .await
        .map_err(internal_err("guards"))?;
    if !failures.is_empty() {
        return Err(failed_precondition("GUARD", &subject, failures.join(" ; ")));
    }
    let updated = api
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
            api.readable(&p, &d.id, "id").await?
        }
        other => other.map_err(transition_status)?,
    };
    tracing::info!(dossier_id = %updated.id, from = %d.state, to = %updated.state, "dossier transition");
    Ok(Response::new(api.dossier_pb(updated).await?))
}

pub(super) async fn reopen_dossier(
    api: &DossierApi,
    request: Request<pb::ReopenDossierRequest>,
) -> Result<Response<pb::Dossier>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    if let Some(done) = api.replayed(&p, &req.request_id).await? {
        return Ok(Response::new(done));
    }
    let d = api.readable(&p, &req.id, "id").await?;
    let reason = text_field("reason", &req.reason, 2000)?;
    let def = api.def_of(&d)?;
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
    let updated = api
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
    Ok(Response::new(api.dossier_pb(updated).await?))
}

pub(super) async fn set_legal_hold(
    api: &DossierApi,
    request: Request<pb::SetLegalHoldRequest>,
) -> Result<Response<pb::Dossier>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let d = api.readable(&p, &req.id, "id").await?;
    let reason = if req.hold {
        text_field("reason", &req.reason, 1000)?
    } else {
        req.reason.trim().to_owned()
    };
    api.store
        .set_legal_hold(&d, req.hold, &reason, &p.subject)
        .await
        .map_err(internal_err("legal hold"))?;
    let d = api.readable(&p, &d.id, "id").await?;
    Ok(Response::new(api.dossier_pb(d).await?))
}

pub(super) async fn get_guidance(
    api: &DossierApi,
    request: Request<pb::GetGuidanceRequest>,
) -> Result<Response<pb::Guidance>, Status> {
    let p = auth::caller(&request)?;
    let d = api
        .readable(&p, &request.into_inner().dossier_id, "dossier_id")
        .await?;
    let def = api.def_of(&d)?;
    let state = def.state(&d.state);
    let provided = api
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
        let failures = api
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
            on_enter: def
                .state(&t.to)
                .map(|s| s.actions.iter().map(|a| action_pb(&def, a)).collect())
                .unwrap_or_default(),
        });
    }
    // The current state's actions, with where each of this entry stands.
    let runs = api
        .store
        .action_runs(&d.id, &d.state)
        .await
        .map_err(internal_err("guidance"))?;
    let actions = state
        .map(|s| {
            s.actions
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let mut x = action_pb(&def, a);
                    if let Some(r) = runs.iter().find(|r| r.planned.index == i) {
                        x.status = r.status.to_owned();
                        x.attempts = r.attempts;
                        x.error = r.error.clone();
                    }
                    x
                })
                .collect()
        })
        .unwrap_or_default();
    let (sla_status, due) = match api.store.sla(&d, state) {
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
        actions,
    }))
}

/// A state action as the agent sees it, before it runs.
fn action_pb(def: &ProcessDefinition, a: &crate::catalog::ActionDefinition) -> pb::StateAction {
    pb::StateAction {
        kind: a.kind.clone(),
        appointment_type: a.appointment_type.clone().unwrap_or_default(),
        template: a.template.clone().unwrap_or_default(),
        description: a.describe(def),
        document: a.document.clone().unwrap_or_default(),
        ..Default::default()
    }
}

pub(super) async fn add_note(
    api: &DossierApi,
    request: Request<pb::AddNoteRequest>,
) -> Result<Response<pb::TimelineEntry>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let d = api.readable(&p, &req.dossier_id, "dossier_id").await?;
    let visibility = match pb::NoteVisibility::try_from(req.visibility) {
        Ok(pb::NoteVisibility::Public) => "public",
        Ok(pb::NoteVisibility::Private) => "private",
        _ => return Err(invalid_argument("visibility", "must be PUBLIC or PRIVATE")),
    };
    let text = text_field("text", &req.text, 4000)?;
    let e = api
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

pub(super) async fn link_dossier(
    api: &DossierApi,
    request: Request<pb::LinkDossierRequest>,
) -> Result<Response<pb::Link>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let d = api.readable(&p, &req.dossier_id, "dossier_id").await?;
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
    let m = api
        .store
        .link(
            &d,
            &l.kind,
            &ref_id,
            status,
            &p.subject,
            l.update_time
                .as_ref()
                .and_then(guichet_proto::convert::datetime),
        )
        .await
        .map_err(internal_err("link dossier"))?;
    Ok(Response::new(link_pb(m)))
}
