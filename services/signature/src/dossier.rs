//! Calls to the dossier role with service credentials, from the job table
//! after the change committed: the link status of a request on the
//! dossier (and so the timeline), the signed PDF as a dossier document, and
//! the process transition a completed signature allows.

use async_trait::async_trait;
use guichet_platform::auth::ServiceCredentials;
use guichet_proto::convert::timestamp;
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use guichet_proto::dossier::v1::{
    AddDocumentRequest, GetGuidanceRequest, GetProcessRequest, Link, LinkDossierRequest,
    ListDocumentsRequest, TransitionDossierRequest,
};
use guichet_proto::intake::v1::AttachmentRef;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The guard a completed signature satisfies in process definitions.
pub const GUARD: &str = "signature_completed";

#[async_trait]
pub trait DossierPort: Send + Sync {
    async fn link(&self, dossier_id: &str, request_id: &str, status: &str) -> Result<(), Status>;
    /// Attach a stored object (the signed PDF) to the dossier.
    async fn add_document(
        &self,
        dossier_id: &str,
        filename: &str,
        sha256: &str,
        size: u64,
    ) -> Result<(), Status>;
    /// Fire the transition guarded by `signature_completed` that the
    /// process allows the `service` role from the current state, if any;
    /// returns the new state.
    async fn advance(
        &self,
        dossier_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<String>, Status>;
    /// Whether the dossier holds a document of this SHA-256, asked with the
    /// caller's own `authorization` (so a restricted dossier answers
    /// PERMISSION_DENIED to whoever may not read it, and audits it).
    async fn holds(
        &self,
        dossier_id: &str,
        sha256: &str,
        authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Result<bool, Status>;
}

pub struct Grpc {
    pub client: DossierServiceClient<InterceptedService<Channel, ServiceCredentials>>,
}

#[async_trait]
impl DossierPort for Grpc {
    async fn holds(
        &self,
        dossier_id: &str,
        sha256: &str,
        authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Result<bool, Status> {
        let mut c = self.client.clone();
        let mut page_token = String::new();
        loop {
            let mut req = tonic::Request::new(ListDocumentsRequest {
                dossier_id: dossier_id.to_owned(),
                page_size: 200,
                page_token: page_token.clone(),
            });
            if let Some(a) = &authorization {
                req.metadata_mut().insert("authorization", a.clone());
            }
            let page = c.list_documents(req).await?.into_inner();
            if page.documents.iter().any(|d| d.sha256 == sha256) {
                return Ok(true);
            }
            if page.next_page_token.is_empty() {
                return Ok(false);
            }
            page_token = page.next_page_token;
        }
    }

    async fn link(&self, dossier_id: &str, request_id: &str, status: &str) -> Result<(), Status> {
        let mut c = self.client.clone();
        c.link_dossier(LinkDossierRequest {
            dossier_id: dossier_id.to_owned(),
            link: Some(Link {
                kind: "signature".into(),
                ref_id: request_id.to_owned(),
                status: status.to_owned(),
                update_time: Some(timestamp(chrono::Utc::now())),
            }),
        })
        .await?;
        Ok(())
    }

    async fn add_document(
        &self,
        dossier_id: &str,
        filename: &str,
        sha256: &str,
        size: u64,
    ) -> Result<(), Status> {
        // A retried job must not attach the same PDF twice.
        if self.holds(dossier_id, sha256, None).await? {
            return Ok(());
        }
        let mut c = self.client.clone();
        c.add_document(AddDocumentRequest {
            dossier_id: dossier_id.to_owned(),
            filename: filename.to_owned(),
            media_type: "application/pdf".into(),
            stored: Some(AttachmentRef {
                sha256: sha256.to_owned(),
                media_type: "application/pdf".into(),
                size_bytes: size,
                filename: filename.to_owned(),
            }),
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    async fn advance(
        &self,
        dossier_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<String>, Status> {
        let mut c = self.client.clone();
        let g = c
            .get_guidance(GetGuidanceRequest {
                dossier_id: dossier_id.to_owned(),
            })
            .await?
            .into_inner();
        let process = c
            .get_process(GetProcessRequest {
                id: g.process_id.clone(),
                version: g.process_version,
            })
            .await?
            .into_inner();
        let target = process.transitions.iter().find(|t| {
            t.from_state == g.state
                && t.guards.iter().any(|x| x == GUARD)
                && t.roles.iter().any(|r| r == "service")
                && g.next_actions
                    .iter()
                    .any(|a| a.to_state == t.to_state && a.allowed)
        });
        let Some(t) = target else {
            return Ok(None);
        };
        c.transition_dossier(TransitionDossierRequest {
            id: dossier_id.to_owned(),
            to_state: t.to_state.clone(),
            request_id: idempotency_key.to_owned(),
            ..Default::default()
        })
        .await?;
        Ok(Some(t.to_state.clone()))
    }
}
