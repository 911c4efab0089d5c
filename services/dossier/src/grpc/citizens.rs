//! Citizens: resolution, reading, updates, merges and splits, export and erasure.

use super::*;

pub(super) fn merge_pb(m: merge::Model) -> pb::Merge {
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

pub(super) fn citizen_pb(v: CitizenView) -> pb::Citizen {
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

pub(super) fn merge_status(e: MergeError) -> Status {
    match e {
        MergeError::Refused(why) => failed_precondition("MERGE", "citizens", why),
        MergeError::NotFound(what) => Status::not_found(what),
        MergeError::Db(e) => internal_err("merge")(e),
    }
}

pub(super) async fn resolve_citizen(
    api: &DossierApi,
    request: Request<pb::ResolveCitizenRequest>,
) -> Result<Response<pb::ResolveCitizenResponse>, Status> {
    let req = request.into_inner();
    let input = parse_hint(req.hint.as_ref(), "hint")?;
    let r = api
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

pub(super) async fn get_citizen(
    api: &DossierApi,
    request: Request<pb::GetCitizenRequest>,
) -> Result<Response<pb::Citizen>, Status> {
    let id = request.into_inner().id;
    let id = non_empty(&id).ok_or_else(|| invalid_argument("id", "is required"))?;
    let view = api
        .store
        .get_citizen(id)
        .await
        .map_err(internal_err("get citizen"))?
        .ok_or_else(|| not_found("citizen", id))?;
    Ok(Response::new(citizen_pb(view)))
}

pub(super) async fn list_citizens(
    api: &DossierApi,
    request: Request<pb::ListCitizensRequest>,
) -> Result<Response<pb::ListCitizensResponse>, Status> {
    let req = request.into_inner();
    let query = text_field("query", &req.query, 200)?;
    let limit = page_size(req.page_size, 20, 200)?;
    let list = api
        .store
        .search_citizens(&query, page_after(&req.page_token)?, limit)
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

pub(super) async fn update_citizen(
    api: &DossierApi,
    request: Request<pb::UpdateCitizenRequest>,
) -> Result<Response<pb::Citizen>, Status> {
    let p = auth::caller(&request)?;
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
        u.add
            .phones
            .push(Phone::parse(ph).map_err(|e| invalid_argument(&format!("add_phones[{i}]"), e))?);
    }
    for (i, em) in req.add_emails.iter().enumerate() {
        u.add
            .emails
            .push(Email::parse(em).map_err(|e| invalid_argument(&format!("add_emails[{i}]"), e))?);
    }
    if paths.is_empty() && u.add.phones.is_empty() && u.add.emails.is_empty() {
        return Err(invalid_argument("update_mask", "names nothing to update"));
    }
    let view = api
        .store
        .update_citizen(id, u, &p.subject)
        .await
        .map_err(internal_err("update citizen"))?
        .ok_or_else(|| not_found("citizen", id))?;
    Ok(Response::new(citizen_pb(view)))
}

pub(super) async fn merge_citizens(
    api: &DossierApi,
    request: Request<pb::MergeCitizensRequest>,
) -> Result<Response<pb::Merge>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let target = non_empty(&req.target_citizen_id)
        .ok_or_else(|| invalid_argument("target_citizen_id", "is required"))?;
    let source = non_empty(&req.source_citizen_id)
        .ok_or_else(|| invalid_argument("source_citizen_id", "is required"))?;
    let reason = text_field("reason", &req.reason, 1000)?;
    let m = api
        .store
        .merge_citizens(target, source, &p.subject, &reason)
        .await
        .map_err(merge_status)?;
    tracing::info!(merge_id = %m.id, "citizens merged");
    Ok(Response::new(merge_pb(m)))
}

pub(super) async fn split_citizen(
    api: &DossierApi,
    request: Request<pb::SplitCitizenRequest>,
) -> Result<Response<pb::Merge>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let id = non_empty(&req.merge_id).ok_or_else(|| invalid_argument("merge_id", "is required"))?;
    let reason = text_field("reason", &req.reason, 1000)?;
    let m = api
        .store
        .split_citizen(id, &p.subject, &reason)
        .await
        .map_err(merge_status)?;
    tracing::info!(merge_id = %m.id, "merge split back");
    Ok(Response::new(merge_pb(m)))
}

pub(super) async fn export_citizen(
    api: &DossierApi,
    request: Request<pb::ExportCitizenRequest>,
) -> Result<Response<pb::ExportCitizenResponse>, Status> {
    let p = auth::caller(&request)?;
    let id = request.into_inner().citizen_id;
    let id = non_empty(&id).ok_or_else(|| invalid_argument("citizen_id", "is required"))?;
    let json = api
        .store
        .export_citizen(id, &p.subject)
        .await
        .map_err(internal_err("export citizen"))?
        .ok_or_else(|| not_found("citizen", id))?;
    Ok(Response::new(pb::ExportCitizenResponse { json }))
}

pub(super) async fn erase_citizen(
    api: &DossierApi,
    request: Request<pb::EraseCitizenRequest>,
) -> Result<Response<pb::EraseCitizenResponse>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let id =
        non_empty(&req.citizen_id).ok_or_else(|| invalid_argument("citizen_id", "is required"))?;
    let reason = text_field("reason", &req.reason, 1000)?;
    let erased = api
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
        erase_time: Some(timestamp(api.store.now())),
        erased_dossiers: erased.dossiers,
        erased_entries: erased.entries,
        erased_documents: erased.documents,
    }))
}
