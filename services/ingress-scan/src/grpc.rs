//! The scan ingress's gRPC surface: uploads, the list of files and the
//! quarantine, releases.

use std::pin::Pin;

use guichet_platform::auth::{self, Role};
use guichet_platform::grpc::{internal_err, invalid_argument, not_found, page_size};
use guichet_proto::convert::timestamp;
use guichet_proto::scan::v1 as pb;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::ScanApi;
use crate::core::{Incoming, STATE_PUBLISHED, STATE_QUARANTINED, Source};
use crate::db::entities::scan_file;
use crate::quarantine::Reason;

fn scan_file_pb(m: &scan_file::Model) -> pb::ScanFile {
    let state = match m.state.as_str() {
        STATE_PUBLISHED => pb::ScanState::Published,
        STATE_QUARANTINED => pb::ScanState::Quarantined,
        _ => pb::ScanState::Unspecified,
    };
    pb::ScanFile {
        name: format!("scanFiles/{}", m.id),
        filename: m.filename.clone(),
        media_type: m.media_type.clone(),
        size_bytes: m.size_bytes as u64,
        sha256: m.sha256.clone(),
        source: match m.source.as_str() {
            "folder" => pb::ScanSource::Folder,
            "upload" => pb::ScanSource::Upload,
            _ => pb::ScanSource::Unspecified,
        } as i32,
        batch_id: m.batch_id.clone(),
        state: state as i32,
        quarantine_reason: m
            .reason
            .as_deref()
            .and_then(Reason::parse)
            .map(|r| r.to_proto() as i32)
            .unwrap_or(0),
        quarantine_detail: m.detail.clone(),
        intake_event_id: m.intake_event_id.clone().unwrap_or_default(),
        page_count: m.page_count.max(0) as u32,
        ocr_confidence: m.ocr_confidence as f32,
        received_at: Some(timestamp(m.received_at)),
        update_time: Some(timestamp(m.updated_at)),
        release_count: m.release_count.max(0) as u32,
    }
}

fn parse_name(name: &str) -> Result<&str, Status> {
    name.strip_prefix("scanFiles/")
        .filter(|id| !id.is_empty() && id.len() <= 64 && !id.contains('/'))
        .ok_or_else(|| invalid_argument("name", "must be `scanFiles/{id}`"))
}

/// `state = QUARANTINED AND reason = OCR_TIMEOUT`.
fn parse_filter(filter: &str) -> Result<(Option<&'static str>, Option<Reason>), Status> {
    let (mut state, mut reason) = (None, None);
    if filter.trim().is_empty() {
        return Ok((state, reason));
    }
    for clause in filter.split(" AND ").flat_map(|c| c.split(" and ")) {
        let (key, value) = clause
            .split_once('=')
            .ok_or_else(|| invalid_argument("filter", "clauses are `key = VALUE` joined by AND"))?;
        let value = value.trim().trim_matches('"');
        match key.trim() {
            "state" => {
                state = Some(match value.trim_start_matches("SCAN_STATE_") {
                    "PUBLISHED" => STATE_PUBLISHED,
                    "QUARANTINED" => STATE_QUARANTINED,
                    _ => {
                        return Err(invalid_argument(
                            "filter",
                            "state is PUBLISHED or QUARANTINED",
                        ));
                    }
                })
            }
            "reason" => {
                reason = Some(Reason::parse(value).ok_or_else(|| {
                    invalid_argument("filter", format!("`{value}` is not a quarantine reason"))
                })?)
            }
            other => {
                return Err(invalid_argument(
                    "filter",
                    format!("`{other}` cannot be filtered on (state, reason)"),
                ));
            }
        }
    }
    Ok((state, reason))
}

type UploadStream = Streaming<pb::UploadScanRequest>;

/// A scan file as `caller` may see it: the object store address (a letter's
/// content, with its citizen's data) only for the mail room's supervisors,
/// admins, not for every agent.
fn scan_file_for(caller: &guichet_platform::auth::Principal, m: &scan_file::Model) -> pb::ScanFile {
    let mut f = scan_file_pb(m);
    if !caller.has(Role::Supervisor) {
        f.sha256.clear();
    }
    f
}

#[tonic::async_trait]
impl pb::scan_service_server::ScanService for ScanApi {
    #[tracing::instrument(skip_all)]
    async fn upload_scan(
        &self,
        request: Request<UploadStream>,
    ) -> Result<Response<pb::ScanFile>, Status> {
        let mut stream: Pin<Box<UploadStream>> = Box::pin(request.into_inner());
        let first = stream.next().await.ok_or_else(|| {
            invalid_argument("metadata", "the first message carries the metadata")
        })??;
        let Some(pb::upload_scan_request::Part::Metadata(meta)) = first.part else {
            return Err(invalid_argument(
                "metadata",
                "the first message carries the metadata",
            ));
        };
        if meta.batch_id.len() > 128 {
            return Err(invalid_argument(
                "metadata.batch_id",
                "must be at most 128 characters",
            ));
        }
        let mut bytes = Vec::new();
        while let Some(msg) = stream.next().await {
            match msg?.part {
                Some(pb::upload_scan_request::Part::Chunk(c)) => {
                    if (bytes.len() + c.len()) as u64 > self.config.max_file_bytes {
                        return Err(invalid_argument(
                            "chunk",
                            format!(
                                "the file is larger than the limit of {} bytes (scan.max_file_bytes)",
                                self.config.max_file_bytes
                            ),
                        ));
                    }
                    bytes.extend_from_slice(&c);
                }
                _ => {
                    return Err(invalid_argument(
                        "metadata",
                        "only the first message carries the metadata",
                    ));
                }
            }
        }
        let model = self
            .accept(Incoming {
                filename: meta.filename,
                bytes,
                source: Source::Upload,
                batch_id: meta.batch_id,
            })
            .await
            .map_err(|e| e.error("accept scan"))?;
        Ok(Response::new(scan_file_pb(&model)))
    }

    async fn get_scan_file(
        &self,
        request: Request<pb::GetScanFileRequest>,
    ) -> Result<Response<pb::ScanFile>, Status> {
        let caller = auth::caller(&request)?;
        let authorization = request.metadata().get("authorization").cloned();
        let req = request.into_inner();
        let id = parse_name(&req.name)?;
        let m = scan_file::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(internal_err("get scan file"))?
            .ok_or_else(|| not_found("scanFiles", &req.name))?;
        if let Some(event) = m.intake_event_id.clone()
            && !guichet_platform::placement::hidden_requests(
                &self.dossier,
                authorization.as_ref(),
                vec![event],
            )
            .await?
            .is_empty()
        {
            return Err(Status::permission_denied(
                "this letter went to a restricted dossier: it is not shown",
            ));
        }
        Ok(Response::new(scan_file_for(&caller, &m)))
    }

    async fn list_scan_files(
        &self,
        request: Request<pb::ListScanFilesRequest>,
    ) -> Result<Response<pb::ListScanFilesResponse>, Status> {
        let caller = auth::caller(&request)?;
        let authorization = request.metadata().get("authorization").cloned();
        let req = request.into_inner();
        let limit = page_size(req.page_size, 50, 500)?;
        let (state, reason) = parse_filter(&req.filter)?;
        let mut q = scan_file::Entity::find();
        if let Some(s) = state {
            q = q.filter(scan_file::Column::State.eq(s));
        }
        if let Some(r) = reason {
            q = q.filter(scan_file::Column::Reason.eq(r.as_str()));
        }
        if !req.page_token.is_empty() {
            if req.page_token.len() > 64 {
                return Err(invalid_argument(
                    "page_token",
                    "is not a token this API issued",
                ));
            }
            q = q.filter(scan_file::Column::Id.lt(req.page_token.as_str()));
        }
        let rows = q
            .order_by_desc(scan_file::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(internal_err("list scan files"))?;
        let next_page_token = if rows.len() as u64 == limit {
            rows.last().map(|m| m.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        // Letters that went to a dossier the caller may not read (a CCAS
        // request) are left out.
        let hidden = guichet_platform::placement::hidden_requests(
            &self.dossier,
            authorization.as_ref(),
            rows.iter()
                .filter_map(|m| m.intake_event_id.clone())
                .collect(),
        )
        .await?;
        Ok(Response::new(pb::ListScanFilesResponse {
            scan_files: rows
                .iter()
                .filter(|m| {
                    m.intake_event_id
                        .as_ref()
                        .is_none_or(|e| !hidden.contains(e))
                })
                .map(|m| scan_file_for(&caller, m))
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn release_scan_file(
        &self,
        request: Request<pb::ReleaseScanFileRequest>,
    ) -> Result<Response<pb::ScanFile>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        let id = parse_name(&req.name)?;
        tracing::info!(scan_file = id, by = %caller.subject, without_text = req.without_text, "release requested");
        let m = self.release(id, req.without_text).await?;
        Ok(Response::new(scan_file_pb(&m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{bounded, clean_filename};
    use crate::quarantine::Quarantine;

    #[test]
    fn scan_filters_parse_state_and_reason() {
        assert_eq!(
            parse_filter("state = QUARANTINED AND reason = OCR_TIMEOUT").unwrap(),
            (Some(STATE_QUARANTINED), Some(Reason::OcrTimeout))
        );
        assert!(parse_filter("colour = red").is_err());
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        let long = "é".repeat(1000);
        let cut = bounded(long.clone(), 101);
        assert!(cut.len() <= 101 && cut.ends_with("[…]"), "{cut}");
        assert_eq!(bounded("court".into(), 101), "court");
    }

    #[test]
    fn scan_quarantine_is_reported_without_content() {
        let q = Quarantine::new(Reason::NoText, "no text was recognised");
        assert_eq!(Reason::parse(q.reason.as_str()), Some(Reason::NoText));
    }
}
