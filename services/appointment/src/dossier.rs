//! Links bookings to dossiers (and so to the citizen's timeline) with the
//! dossier role's LinkDossier, called with service credentials from the
//! job table after the booking committed.

use async_trait::async_trait;
use guichet_platform::auth::ServiceCredentials;
use guichet_proto::convert::timestamp;
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use guichet_proto::dossier::v1::{Link, LinkDossierRequest};
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[async_trait]
pub trait DossierLinker: Send + Sync {
    async fn link(&self, dossier_id: &str, booking_id: &str, status: &str) -> Result<(), Status>;

    /// [`DossierLinker::link`] for the booking change made at `at` (its
    /// time keys the timeline entry: a retried job records it once, a
    /// second reschedule again).
    async fn link_at(
        &self,
        dossier_id: &str,
        booking_id: &str,
        status: &str,
        _at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), Status> {
        self.link(dossier_id, booking_id, status).await
    }
}

pub struct Grpc {
    pub client: DossierServiceClient<InterceptedService<Channel, ServiceCredentials>>,
}

#[async_trait]
impl DossierLinker for Grpc {
    async fn link(&self, dossier_id: &str, booking_id: &str, status: &str) -> Result<(), Status> {
        self.link_at(dossier_id, booking_id, status, chrono::Utc::now())
            .await
    }

    async fn link_at(
        &self,
        dossier_id: &str,
        booking_id: &str,
        status: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), Status> {
        let mut c = self.client.clone();
        c.link_dossier(LinkDossierRequest {
            dossier_id: dossier_id.to_owned(),
            link: Some(Link {
                kind: "appointment".into(),
                ref_id: booking_id.to_owned(),
                status: status.to_owned(),
                update_time: Some(timestamp(at)),
            }),
        })
        .await?;
        Ok(())
    }
}
