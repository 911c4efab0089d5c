//! The gRPC API (agents and municipal systems): proto messages become
//! domain types here, once, and errors carry google.rpc details.

use guichet_platform::auth;
use guichet_platform::contact::{Phone, clean_name};
use guichet_platform::grpc::{invalid_argument, page_size};
use guichet_proto::convert::{datetime, timestamp};
use guichet_proto::signature::v1 as pb;
use guichet_proto::signature::v1::signature_service_server::SignatureService;
use tonic::{Request, Response, Status};

use crate::core::{self, Core, DocumentSource, Full, NewRequest, NewSigner, Origin};
use crate::otp::mask_phone;
use crate::verify::DocMatch;

pub struct SignatureApi {
    pub core: Core,
}

/// Who acts, for the evidence (the caller was admitted by the access table).
fn origin<T>(req: &Request<T>) -> Result<Origin, Status> {
    let p = auth::caller(req)?;
    Ok(Origin {
        actor: p.subject,
        ..Default::default()
    })
}

pub fn status_enum(s: core::Status) -> pb::RequestStatus {
    use core::Status;
    match s {
        Status::Pending => pb::RequestStatus::Pending,
        Status::Signed => pb::RequestStatus::Signed,
        Status::Declined => pb::RequestStatus::Declined,
        Status::Expired => pb::RequestStatus::Expired,
        Status::Cancelled => pb::RequestStatus::Cancelled,
        Status::Locked => pb::RequestStatus::Locked,
    }
}

pub fn to_pb(core: &Core, f: &Full) -> pb::SignatureRequest {
    let r = &f.req;
    pb::SignatureRequest {
        id: r.id.clone(),
        dossier_id: r.dossier_id.clone(),
        title: r.title.clone(),
        process_template: r.process_template.clone(),
        document_sha256: r.document_sha256.clone(),
        document_size: r.document_size as u64,
        signers: f
            .signers
            .iter()
            .map(|s| pb::Signer {
                id: s.id.clone(),
                name: s.name.clone(),
                phone: String::new(),
                masked_phone: mask_phone(&s.phone),
                status: s.status.as_str().to_owned(),
                sign_time: s.signed_at.map(timestamp),
                signing_url: core.signing_url(s),
                codes_sent: s.codes_sent as u32,
            })
            .collect(),
        status: status_enum(r.status) as i32,
        consent_text: r.consent_text.clone(),
        expire_time: Some(timestamp(r.expire_at)),
        create_time: Some(timestamp(r.created_at)),
        complete_time: r.completed_at.map(timestamp),
        signed_document_sha256: r.signed_sha256.clone().unwrap_or_default(),
        evidence_sha256: r.evidence_sha256.clone().unwrap_or_default(),
        decline_reason: r.decline_reason.clone().unwrap_or_default(),
        creator: r.creator.clone(),
    }
}

/// `dossier_id = "…" AND status = pending` (AIP-160 subset).
fn parse_filter(f: &str) -> Result<(Option<String>, Option<String>), Status> {
    let mut dossier = None;
    let mut status = None;
    if f.trim().is_empty() {
        return Ok((None, None));
    }
    for part in f.split(" AND ") {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| invalid_argument("filter", "attendu : champ = valeur [AND …]"))?;
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim() {
            "dossier_id" => dossier = Some(v),
            "status" => {
                if <core::Status as sea_orm::ActiveEnum>::try_from_value(&v).is_err() {
                    return Err(invalid_argument(
                        "filter",
                        format!("statut inconnu « {v} »"),
                    ));
                }
                status = Some(v)
            }
            other => {
                return Err(invalid_argument(
                    "filter",
                    format!("champ « {other} » non filtrable (dossier_id, status)"),
                ));
            }
        }
    }
    Ok((dossier, status))
}

#[tonic::async_trait]
impl SignatureService for SignatureApi {
    async fn create_signature_request(
        &self,
        request: Request<pb::CreateSignatureRequestRequest>,
    ) -> Result<Response<pb::SignatureRequest>, Status> {
        let o = origin(&request)?;
        // A person's token goes on to the dossier role, which decides what
        // she may read; a guichet role's token is scoped to this role, so
        // that check is made with the signature role's own.
        let internal = auth::caller(&request)?.roles.contains(&auth::Role::Service);
        let authorization = if internal {
            None
        } else {
            request.metadata().get("authorization").cloned()
        };
        let r = request.into_inner();
        if r.title.trim().is_empty() {
            return Err(invalid_argument("title", "obligatoire"));
        }
        if r.signers.is_empty() {
            return Err(invalid_argument("signers", "au moins un signataire"));
        }
        if r.signers.len() > 10 {
            return Err(invalid_argument("signers", "au plus 10 signataires"));
        }
        let mut signers = Vec::new();
        for (i, s) in r.signers.iter().enumerate() {
            let name = clean_name(&s.name)
                .map_err(|e| invalid_argument(&format!("signers[{i}].name"), e))?;
            let phone = Phone::parse(&s.phone)
                .map_err(|e| invalid_argument(&format!("signers[{i}].phone"), e))?;
            signers.push(NewSigner { name, phone });
        }
        let document = match (r.document_sha256.trim(), r.document_content.is_empty()) {
            ("", false) => DocumentSource::Uploaded(r.document_content),
            (sha, true) if !sha.is_empty() => DocumentSource::Stored(sha.to_ascii_lowercase()),
            ("", true) => {
                return Err(invalid_argument(
                    "document_sha256",
                    "donnez le SHA-256 d'un document stocké ou le contenu du PDF",
                ));
            }
            _ => {
                return Err(invalid_argument(
                    "document_content",
                    "donnez soit document_sha256 soit document_content, pas les deux",
                ));
            }
        };
        // A stored document is signed within the dossier that holds it,
        // and only by whoever may read that dossier: a hash seen in a
        // listing or an event is not a right to the content, which the
        // signing page would show. The dossier role decides, asked with the
        // caller's own token (a restricted dossier audits the attempt).
        if let DocumentSource::Stored(sha) = &document {
            let dossier_id = r.dossier_id.trim();
            if dossier_id.is_empty() {
                return Err(invalid_argument(
                    "dossier_id",
                    "obligatoire avec document_sha256 : le document doit être une pièce du dossier",
                ));
            }
            let held = self
                .core
                .dossier
                .holds(dossier_id, sha, authorization.clone())
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::NotFound | tonic::Code::InvalidArgument => {
                        invalid_argument("dossier_id", "dossier inconnu")
                    }
                    tonic::Code::PermissionDenied => Status::permission_denied(
                        "dossier_id : vous n'avez pas accès à ce dossier ni à ses pièces",
                    ),
                    _ => Status::unavailable(format!(
                        "le service des dossiers ne répond pas : {}",
                        s.message()
                    )),
                })?;
            if !held {
                return Err(Status::permission_denied(
                    "document_sha256 : ce document n'est pas une pièce du dossier",
                ));
            }
        }
        let expire_at = match &r.expire_time {
            Some(t) => {
                Some(datetime(t).ok_or_else(|| invalid_argument("expire_time", "date invalide"))?)
            }
            None => None,
        };
        let full = self
            .core
            .create(
                &o,
                NewRequest {
                    dossier_id: r.dossier_id.trim().to_owned(),
                    document,
                    title: r.title.trim().to_owned(),
                    process_template: r.process_template.trim().to_owned(),
                    signers,
                    consent_text: r.consent_text,
                    expire_at,
                    request_id: Some(r.request_id.trim().to_owned()).filter(|s| !s.is_empty()),
                    send_codes: r.send_codes,
                },
            )
            .await?;
        Ok(Response::new(to_pb(&self.core, &full)))
    }

    async fn get_signature_request(
        &self,
        request: Request<pb::GetSignatureRequestRequest>,
    ) -> Result<Response<pb::SignatureRequest>, Status> {
        let full = self.core.get(&request.into_inner().id).await?;
        Ok(Response::new(to_pb(&self.core, &full)))
    }

    async fn list_signature_requests(
        &self,
        request: Request<pb::ListSignatureRequestsRequest>,
    ) -> Result<Response<pb::ListSignatureRequestsResponse>, Status> {
        let r = request.into_inner();
        let size = page_size(r.page_size, 50, 500)?;
        let (dossier, status) = parse_filter(&r.filter)?;
        let after = Some(r.page_token).filter(|t| !t.is_empty());
        let (rows, next) = self.core.list(dossier, status, after, size).await?;
        Ok(Response::new(pb::ListSignatureRequestsResponse {
            signature_requests: rows.iter().map(|f| to_pb(&self.core, f)).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn send_code(
        &self,
        request: Request<pb::SendCodeRequest>,
    ) -> Result<Response<pb::SendCodeResponse>, Status> {
        let o = origin(&request)?;
        let r = request.into_inner();
        let sent = self
            .core
            .send_code(&o, &r.signature_request_id, &r.signer_id, false)
            .await?;
        Ok(Response::new(sent_pb(sent)))
    }

    async fn resend_code(
        &self,
        request: Request<pb::SendCodeRequest>,
    ) -> Result<Response<pb::SendCodeResponse>, Status> {
        let o = origin(&request)?;
        let r = request.into_inner();
        let sent = self
            .core
            .send_code(&o, &r.signature_request_id, &r.signer_id, true)
            .await?;
        Ok(Response::new(sent_pb(sent)))
    }

    async fn confirm_code(
        &self,
        request: Request<pb::ConfirmCodeRequest>,
    ) -> Result<Response<pb::ConfirmCodeResponse>, Status> {
        let mut o = origin(&request)?;
        let r = request.into_inner();
        // The evidence keeps what the caller says of the signer's device:
        // an address that parses, and a printable user agent.
        let ip = r.ip.trim();
        if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid_argument("ip", "doit être une adresse IPv4 ou IPv6"));
        }
        if r.user_agent.chars().count() > 512 || r.user_agent.chars().any(char::is_control) {
            return Err(invalid_argument(
                "user_agent",
                "au plus 512 caractères imprimables",
            ));
        }
        o.ip = ip.to_owned();
        o.user_agent = r.user_agent;
        let c = self
            .core
            .confirm(&o, &r.signature_request_id, &r.signer_id, &r.code)
            .await?;
        Ok(Response::new(pb::ConfirmCodeResponse {
            signed: c.signed,
            attempts_left: c.attempts_left,
            signature_request: Some(to_pb(&self.core, &c.full)),
        }))
    }

    async fn decline_signature_request(
        &self,
        request: Request<pb::DeclineSignatureRequestRequest>,
    ) -> Result<Response<pb::SignatureRequest>, Status> {
        let o = origin(&request)?;
        let r = request.into_inner();
        let f = self
            .core
            .decline(&o, &r.signature_request_id, &r.signer_id, &r.reason)
            .await?;
        Ok(Response::new(to_pb(&self.core, &f)))
    }

    async fn cancel_signature_request(
        &self,
        request: Request<pb::CancelSignatureRequestRequest>,
    ) -> Result<Response<pb::SignatureRequest>, Status> {
        let o = origin(&request)?;
        let r = request.into_inner();
        let f = self.core.cancel(&o, &r.id, &r.reason).await?;
        Ok(Response::new(to_pb(&self.core, &f)))
    }

    async fn reissue_signature_request(
        &self,
        request: Request<pb::ReissueSignatureRequestRequest>,
    ) -> Result<Response<pb::SignatureRequest>, Status> {
        let o = origin(&request)?;
        let r = request.into_inner();
        let expire = match &r.expire_time {
            Some(t) => {
                Some(datetime(t).ok_or_else(|| invalid_argument("expire_time", "date invalide"))?)
            }
            None => None,
        };
        let f = self.core.reissue(&o, &r.id, &r.reason, expire).await?;
        Ok(Response::new(to_pb(&self.core, &f)))
    }

    async fn get_evidence(
        &self,
        request: Request<pb::GetEvidenceRequest>,
    ) -> Result<Response<pb::Evidence>, Status> {
        let r = request.into_inner();
        let (full, bytes) = self.core.evidence_bytes(&r.signature_request_id).await?;
        let signed_sha = full.req.signed_sha256.clone().unwrap_or_default();
        let signed_document = if r.include_signed_document {
            self.core
                .objects
                .get(&signed_sha)
                .await
                .map_err(guichet_platform::grpc::internal_err("read signed pdf"))?
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::Evidence {
            signature_request_id: full.req.id.clone(),
            evidence_sha256: full.req.evidence_sha256.clone().unwrap_or_default(),
            evidence_json: bytes,
            key_id: full.req.key_id.clone().unwrap_or_default(),
            signed_document_sha256: signed_sha,
            signed_document,
        }))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let r = request.into_inner();
        let doc = (!r.document.is_empty()).then_some(r.document.as_slice());
        let sha = Some(r.document_sha256).filter(|s| !s.trim().is_empty());
        let ev = (!r.evidence_json.is_empty()).then_some(r.evidence_json);
        let v = self.core.verify(doc, sha, ev).await?;
        Ok(Response::new(pb::VerifyResponse {
            valid: v.valid,
            seal_valid: v.seal_valid,
            document_match: match v.document {
                DocMatch::None => pb::DocumentMatch::None,
                DocMatch::Original => pb::DocumentMatch::Original,
                DocMatch::Signed => pb::DocumentMatch::Signed,
                DocMatch::Mismatch => pb::DocumentMatch::Mismatch,
            } as i32,
            key_id: v.key_id,
            signature_request_id: v.request_id,
            title: v.title,
            original_sha256: v.original_sha256,
            signed_sha256: v.signed_sha256,
            signers: v
                .signers
                .into_iter()
                .map(|s| pb::SignedBy {
                    name: s.name,
                    masked_phone: s.masked_phone,
                    sign_time: s.signed_at.map(timestamp),
                })
                .collect(),
            findings: v.findings,
        }))
    }

    async fn list_signature_events(
        &self,
        request: Request<pb::ListSignatureEventsRequest>,
    ) -> Result<Response<pb::ListSignatureEventsResponse>, Status> {
        let r = request.into_inner();
        self.core.get(&r.signature_request_id).await?;
        let size = page_size(r.page_size, 100, 1000)?;
        let after = if r.page_token.is_empty() {
            0
        } else {
            r.page_token
                .parse::<i64>()
                .map_err(|_| invalid_argument("page_token", "jeton de page invalide"))?
        };
        let (rows, next) = self
            .core
            .events(&r.signature_request_id, after, size)
            .await?;
        Ok(Response::new(pb::ListSignatureEventsResponse {
            events: rows
                .into_iter()
                .map(|e| pb::SignatureEvent {
                    sequence: e.id as u64,
                    signer_id: e.signer_id,
                    kind: e.kind,
                    outcome: e.outcome,
                    time: Some(timestamp(e.at)),
                    ip: e.ip,
                    user_agent: e.user_agent,
                    actor: e.actor,
                    detail: e.detail,
                })
                .collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }
}

fn sent_pb(s: core::Sent) -> pb::SendCodeResponse {
    pb::SendCodeResponse {
        code_expire_time: Some(timestamp(s.code_expire_at)),
        next_send_time: Some(timestamp(s.next_send_at)),
        codes_sent: s.codes_sent,
        codes_left: s.codes_left,
    }
}
