//! Retention purges and the audit trail of restricted dossiers.

use super::*;

pub(super) async fn purge_expired(
    api: &DossierApi,
    request: Request<pb::PurgeExpiredRequest>,
) -> Result<Response<pb::PurgeExpiredResponse>, Status> {
    let p = auth::caller(&request)?;
    let dry_run = request.into_inner().dry_run;
    let r = api
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

pub(super) async fn list_audit_entries(
    api: &DossierApi,
    request: Request<pb::ListAuditEntriesRequest>,
) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
    let req = request.into_inner();
    let limit = page_size(req.page_size, 50, 500)?;
    let list = api
        .store
        .list_audit(
            non_empty(&req.resource),
            non_empty(&req.actor),
            page_after(&req.page_token)?,
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
