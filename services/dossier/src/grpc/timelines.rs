//! The cross-channel timeline: contacts recorded, entries listed per dossier or citizen.

use super::*;

pub(super) fn entry_kind(kind: &str) -> pb::EntryKind {
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
        "task" => pb::EntryKind::Task,
        _ => pb::EntryKind::Unspecified,
    }
}

pub(super) fn entry_kind_slug(kind: pb::EntryKind) -> Option<&'static str> {
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
        pb::EntryKind::Task => "task",
        pb::EntryKind::Unspecified => return None,
    })
}

pub(super) fn entry_pb(e: timeline::Model) -> pb::TimelineEntry {
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

pub(super) fn timeline_filter(f: Option<&pb::TimelineFilter>) -> Result<TimelineFilter, Status> {
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

pub(super) fn timeline_page(entries: Vec<timeline::Model>, limit: u64) -> pb::ListTimelineResponse {
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

pub(super) fn cursor(token: &str) -> Result<Option<TimelineCursor>, Status> {
    match non_empty(token) {
        None => Ok(None),
        Some(t) => TimelineCursor::decode(t)
            .map(Some)
            .ok_or_else(|| invalid_argument("page_token", "is not a token this API issued")),
    }
}

pub(super) async fn record_contact(
    api: &DossierApi,
    request: Request<pb::RecordContactRequest>,
) -> Result<Response<pb::TimelineEntry>, Status> {
    let req = request.into_inner();
    let dossier_id = non_empty(&req.dossier_id);
    if dossier_id.is_none() && non_empty(&req.citizen_id).is_none() {
        return Err(invalid_argument(
            "dossier_id",
            "is required (or citizen_id, for the citizen's timeline only)",
        ));
    }
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
        None => api.store.now(),
    };
    let (citizen_id, dossier_id) = match dossier_id {
        Some(id) => {
            let d = api
                .store
                .get_dossier(id)
                .await
                .map_err(internal_err("record contact"))?
                .ok_or_else(|| not_found("dossier", id))?;
            (d.citizen_id, Some(d.id))
        }
        None => {
            let id = req.citizen_id.trim();
            let c = api
                .store
                .get_citizen(id)
                .await
                .map_err(internal_err("record contact"))?
                .ok_or_else(|| not_found("citizen", id))?;
            (c.citizen.id, None)
        }
    };
    let (entry, created) = api
        .store
        .record(NewEntry {
            citizen_id,
            dossier_id: dossier_id.clone(),
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
        tracing::info!(entry_id = %entry.id, dossier_id = dossier_id.as_deref().unwrap_or(""), kind, "timeline entry recorded");
    }
    Ok(Response::new(entry_pb(entry)))
}

pub(super) async fn list_dossier_timeline(
    api: &DossierApi,
    request: Request<pb::ListDossierTimelineRequest>,
) -> Result<Response<pb::ListTimelineResponse>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let limit = page_size(req.page_size, 50, 500)?;
    let after = cursor(&req.page_token)?;
    let filter = timeline_filter(req.filter.as_ref())?;
    let d = api.readable(&p, &req.dossier_id, "dossier_id").await?;
    let entries = api
        .store
        .timeline(Some(&d.id), None, &filter, after.as_ref(), limit)
        .await
        .map_err(internal_err("timeline"))?;
    Ok(Response::new(timeline_page(entries, limit)))
}

pub(super) async fn list_citizen_timeline(
    api: &DossierApi,
    request: Request<pb::ListCitizenTimelineRequest>,
) -> Result<Response<pb::ListTimelineResponse>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let id =
        non_empty(&req.citizen_id).ok_or_else(|| invalid_argument("citizen_id", "is required"))?;
    let limit = page_size(req.page_size, 50, 500)?;
    let after = cursor(&req.page_token)?;
    let mut filter = timeline_filter(req.filter.as_ref())?;
    filter.restricted_dossiers = api.hidden_dossiers(&p, id).await?;
    let entries = api
        .store
        .timeline(None, Some(id), &filter, after.as_ref(), limit)
        .await
        .map_err(internal_err("timeline"))?;
    Ok(Response::new(timeline_page(entries, limit)))
}
