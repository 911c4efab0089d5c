//! "Suivre ma demande": what a citizen sees of their dossier with its
//! reference and follow code. The public pages call it as `citizen_pages`.

use super::*;

/// The id a wrong reference's code is checked against, so an unknown
/// reference costs the same work as a known one with a wrong code.
const STAND_IN: &str = "00000000-0000-0000-0000-000000000000";

pub(super) async fn follow_dossier(
    api: &DossierApi,
    request: Request<pb::FollowDossierRequest>,
) -> Result<Response<pb::FollowedDossier>, Status> {
    let r = request.into_inner();
    let reference = r.reference.trim().to_uppercase();
    let unknown = || Status::not_found("no dossier with this reference and follow code");
    if reference.is_empty() || reference.len() > 64 || r.follow_code.len() > 64 {
        return Err(unknown());
    }
    let found = api
        .store
        .get_dossier(&reference)
        .await
        .map_err(internal_err("follow dossier"))?
        // The reference, not an id: an id alone never opens a dossier here.
        .filter(|d| d.reference.eq_ignore_ascii_case(&reference));
    let id = found.as_ref().map(|d| d.id.as_str()).unwrap_or(STAND_IN);
    let matches = api
        .follow
        .matches(id, &r.follow_code)
        .await
        .map_err(internal_err("follow dossier"))?;
    let d = match found {
        Some(d) if matches => d,
        _ => return Err(unknown()),
    };
    let def = api.def_of(&d)?;
    let state = def.state(&d.state);
    let provided = api
        .store
        .provided_document_types(&d.id)
        .await
        .map_err(internal_err("follow dossier"))?;
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
    let notes = api
        .store
        .timeline(
            Some(&d.id),
            None,
            &TimelineFilter {
                kinds: vec!["note".into()],
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .map_err(internal_err("follow dossier"))?
        .into_iter()
        .filter(|e| e.visibility == "public")
        .map(|e| pb::PublicNote {
            time: Some(timestamp(e.occurred_at)),
            text: e.summary,
        })
        .collect();
    tracing::info!(dossier_id = %d.id, "dossier followed by its citizen");
    Ok(Response::new(pb::FollowedDossier {
        dossier_id: d.id.clone(),
        reference: d.reference.clone(),
        process_title: def.title.clone(),
        state_title: state.map(|s| s.title.clone()).unwrap_or_default(),
        closed: d.closed_at.is_some(),
        create_time: Some(timestamp(d.created_at)),
        update_time: Some(timestamp(d.updated_at)),
        notes,
        checklist,
    }))
}
