//! The telephony ingress's gRPC surface: callback requests, CDR imports,
//! reading a call.

use guichet_platform::auth;
use guichet_platform::grpc::{internal_err, invalid_argument, not_found};
use guichet_proto::convert::timestamp;
use guichet_proto::telephony::v1 as pb;
use tonic::{Request, Response as GrpcResponse, Status};

use crate::TelephonyApi;
use crate::db::entities::{call, callback};

pub(crate) fn callback_pb(c: callback::Model) -> pb::Callback {
    pb::Callback {
        id: c.id,
        intake_event_id: c.intake_event_id,
        request_time: Some(timestamp(c.requested_at)),
    }
}

fn call_pb(c: call::Model) -> pb::Call {
    pb::Call {
        call_id: c.call_id,
        direction: c.direction,
        state: c.state,
        queue: c.queue,
        answered_by: c.answered_by,
        cause: c.cause,
        waiting_seconds: c
            .waiting_seconds
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(0),
        talk_seconds: c
            .talk_seconds
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(0),
        missed: c.missed,
        voicemail: c.voicemail,
        anonymous: c.anonymous,
        blocked: c.blocked,
        callback_requested: c.callback_requested,
        source: c.source,
        intake_event_id: c.intake_event_id.unwrap_or_default(),
        started_at: Some(timestamp(c.started_at)),
        answered_at: c.answered_at.map(timestamp),
        ended_at: c.ended_at.map(timestamp),
        caller_phone: c.citizen_phone.unwrap_or_default(),
        caller_name: c.caller_name,
        answered_agent_id: c.answered_agent_id.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl pb::telephony_service_server::TelephonyService for TelephonyApi {
    #[tracing::instrument(skip_all, fields(callback_id = tracing::field::Empty))]
    async fn request_callback(
        &self,
        request: Request<pb::RequestCallbackRequest>,
    ) -> Result<GrpcResponse<pb::Callback>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        self.record_callback(&caller.subject, req)
            .await
            .map(GrpcResponse::new)
            .map_err(Status::from)
    }

    async fn import_cdr(
        &self,
        request: Request<pb::ImportCdrRequest>,
    ) -> Result<GrpcResponse<pb::ImportCdrResponse>, Status> {
        let req = request.into_inner();
        Ok(GrpcResponse::new(self.import_cdr_bytes(&req.csv).await?))
    }

    async fn get_call(
        &self,
        request: Request<pb::GetCallRequest>,
    ) -> Result<GrpcResponse<pb::Call>, Status> {
        let id = request.into_inner().call_id;
        let c = self
            .find_call(id.trim())
            .await
            .map_err(internal_err("get call"))?
            .ok_or_else(|| not_found("call", &id))?;
        Ok(GrpcResponse::new(call_pb(c)))
    }

    async fn list_calls(
        &self,
        request: Request<pb::ListCallsRequest>,
    ) -> Result<GrpcResponse<pb::ListCallsResponse>, Status> {
        let req = request.into_inner();
        let (Some(start), Some(end)) = (
            req.start_time
                .as_ref()
                .and_then(guichet_proto::convert::datetime),
            req.end_time
                .as_ref()
                .and_then(guichet_proto::convert::datetime),
        ) else {
            return Err(invalid_argument(
                "start_time",
                "start_time and end_time are required",
            ));
        };
        if end <= start || end - start > chrono::Duration::days(31) {
            return Err(invalid_argument(
                "end_time",
                "must be after start_time, at most 31 days later",
            ));
        }
        let limit = match req.limit {
            0 => 200,
            n if n <= 1000 => u64::from(n),
            _ => return Err(invalid_argument("limit", "must be at most 1000")),
        };
        let calls = self
            .calls_between(start, end, req.missed_only, limit)
            .await
            .map_err(internal_err("list calls"))?
            .into_iter()
            .map(call_pb)
            .collect();
        Ok(GrpcResponse::new(pb::ListCallsResponse { calls }))
    }

    async fn list_extensions(
        &self,
        _request: Request<pb::ListExtensionsRequest>,
    ) -> Result<GrpcResponse<pb::ListExtensionsResponse>, Status> {
        let extensions = self
            .list_extensions()
            .await
            .map_err(internal_err("list extensions"))?
            .into_iter()
            .map(crate::extensions::extension_pb)
            .collect();
        Ok(GrpcResponse::new(pb::ListExtensionsResponse { extensions }))
    }

    async fn set_extension(
        &self,
        request: Request<pb::SetExtensionRequest>,
    ) -> Result<GrpcResponse<pb::Extension>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        let ext = req.extension.trim();
        if !crate::extensions::valid_extension(ext) {
            return Err(invalid_argument(
                "extension",
                "must be 1 to 100 printable characters",
            ));
        }
        let agent = req.agent_id.trim();
        if !crate::extensions::valid_extension(agent) {
            return Err(invalid_argument(
                "agent_id",
                "must be 1 to 100 printable characters",
            ));
        }
        let e = self
            .set_extension(ext, agent, &caller.subject)
            .await
            .map_err(internal_err("set extension"))?;
        tracing::info!(extension = %e.extension, "PBX extension mapped");
        Ok(GrpcResponse::new(crate::extensions::extension_pb(e)))
    }

    async fn delete_extension(
        &self,
        request: Request<pb::DeleteExtensionRequest>,
    ) -> Result<GrpcResponse<pb::DeleteExtensionResponse>, Status> {
        let ext = request.into_inner().extension;
        if !self
            .delete_extension(ext.trim())
            .await
            .map_err(internal_err("delete extension"))?
        {
            return Err(not_found("extension", &ext));
        }
        Ok(GrpcResponse::new(pb::DeleteExtensionResponse {}))
    }
}
