//! Documents held by dossiers.

use super::*;

pub(super) fn document_pb(d: document::Model) -> pb::Document {
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

pub(super) async fn add_document(
    api: &DossierApi,
    request: Request<pb::AddDocumentRequest>,
) -> Result<Response<pb::Document>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let d = api.readable(&p, &req.dossier_id, "dossier_id").await?;
    let media_type = accepted_media_type(api, &req.media_type)?;
    let filename = file_name(&req.filename)?;
    let def = api.def_of(&d)?;
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
            let (sha, size) = stored_object(api, &p, stored).await?;
            stored_matches(api, &sha, &media_type).await?;
            (sha, size)
        }
        (None, false) => {
            let size = req.content.len() as u64;
            if size > api.config.max_document_bytes {
                return Err(invalid_argument(
                    "content",
                    format!(
                        "is {size} bytes, more than the {} accepted",
                        api.config.max_document_bytes
                    ),
                ));
            }
            if !content_matches(&media_type, &req.content) {
                return Err(invalid_argument(
                    "content",
                    format!("is not a `{media_type}` document"),
                ));
            }
            let sha = api
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
    let doc = api
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

/// The media type as kept, when documents of that type are accepted.
pub(super) fn accepted_media_type(api: &DossierApi, raw: &str) -> Result<String, Status> {
    let media_type = raw.trim().to_ascii_lowercase();
    if !api.config.document_media_types.contains(&media_type) {
        return Err(invalid_argument(
            "media_type",
            format!(
                "`{media_type}` is not accepted (accepted: {})",
                api.config.document_media_types.join(", ")
            ),
        ));
    }
    Ok(media_type)
}

/// Whether `bytes` look like `media_type`: a document is kept under the
/// type it really has (HTML declared as `application/pdf` would open in a
/// browser as a page).
pub(super) fn content_matches(media_type: &str, bytes: &[u8]) -> bool {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    match media_type {
        // Readers accept the header within the first kilobyte.
        "application/pdf" => bytes[..bytes.len().min(1024)]
            .windows(4)
            .any(|w| w == b"%PDF"),
        "image/png" => starts(b"\x89PNG"),
        "image/jpeg" => starts(b"\xff\xd8\xff"),
        "image/tiff" => starts(b"II*\0") || starts(b"MM\0*"),
        "application/vnd.oasis.opendocument.text"
        | "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
            starts(b"PK\x03\x04")
        }
        // Text: UTF-8 (or Latin-1 mail) without NUL bytes, and not markup.
        "text/plain" | "message/rfc822" => {
            let head = &bytes[..bytes.len().min(4096)];
            !head.contains(&0)
                && !String::from_utf8_lossy(head)
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("<!doctype html")
        }
        _ => true,
    }
}

/// A file name without a path, at most 255 characters.
pub(super) fn file_name(raw: &str) -> Result<&str, Status> {
    let filename = raw.trim();
    if filename.chars().count() > 255 || filename.contains(['/', '\\', '\0']) {
        return Err(invalid_argument(
            "filename",
            "must be a file name of at most 255 characters, without path",
        ));
    }
    Ok(filename)
}

/// Refuse a stored object whose content is not of `media_type`.
pub(super) async fn stored_matches(
    api: &DossierApi,
    sha: &str,
    media_type: &str,
) -> Result<(), Status> {
    let bytes = api
        .store
        .objects()
        .get(sha)
        .await
        .map_err(internal_err("object store"))?;
    if content_matches(media_type, &bytes) {
        Ok(())
    } else {
        Err(invalid_argument(
            "media_type",
            format!("the stored object is not a `{media_type}` document"),
        ))
    }
}

/// The address and size of an object already in the object store, when
/// `p` may reference it and it is not larger than accepted.
pub(super) async fn stored_object(
    api: &DossierApi,
    p: &Principal,
    stored: &guichet_proto::intake::v1::AttachmentRef,
) -> Result<(String, u64), Status> {
    let sha = stored.sha256.trim().to_ascii_lowercase();
    let exists = api
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
    // An object is referenced by what holds it: services relay their own
    // intake's objects; anyone else only what a dossier they may read
    // already holds (a hash seen in a listing or an event is not a right
    // to the content).
    if !p.has(Role::Service) {
        let holders = api
            .store
            .dossiers_holding(&sha)
            .await
            .map_err(internal_err("document holders"))?;
        if !holders.iter().any(|h| may_read(p, h)) {
            api.audit_restricted(p, &holders, "document.reference_denied", &sha)
                .await?;
            return Err(Status::permission_denied(
                "stored.sha256: no dossier you may read holds this object",
            ));
        }
    }
    let actual = api
        .store
        .objects()
        .size(&sha)
        .await
        .map_err(internal_err("object store"))?
        .unwrap_or_default();
    if stored.size_bytes != 0 && stored.size_bytes != actual {
        return Err(invalid_argument(
            "stored.size_bytes",
            format!(
                "is {}, but the stored object has {actual} bytes",
                stored.size_bytes
            ),
        ));
    }
    if actual > api.config.max_document_bytes {
        return Err(invalid_argument(
            "stored.size_bytes",
            "is larger than accepted",
        ));
    }
    Ok((sha, actual))
}

pub(super) async fn get_document(
    api: &DossierApi,
    request: Request<pb::GetDocumentRequest>,
) -> Result<Response<pb::GetDocumentResponse>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let id = non_empty(&req.id).ok_or_else(|| invalid_argument("id", "is required"))?;
    let doc = api
        .store
        .get_document(id)
        .await
        .map_err(internal_err("get document"))?
        .ok_or_else(|| not_found("document", id))?;
    api.readable(&p, &doc.dossier_id, "id").await?;
    let content = if req.include_content {
        // The same content may be held by a restricted dossier too: reading
        // it is a read of that dossier's document, recorded there.
        let holders = api
            .store
            .dossiers_holding(&doc.sha256)
            .await
            .map_err(internal_err("document holders"))?;
        api.audit_restricted(&p, &holders, "document.read", &doc.id)
            .await?;
        api.store
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

pub(super) async fn list_documents(
    api: &DossierApi,
    request: Request<pb::ListDocumentsRequest>,
) -> Result<Response<pb::ListDocumentsResponse>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let d = api.readable(&p, &req.dossier_id, "dossier_id").await?;
    let limit = page_size(req.page_size, 50, 500)?;
    let docs = api
        .store
        .list_documents(&d.id, page_after(&req.page_token)?, limit)
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
