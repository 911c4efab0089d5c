//! What a channel role's listing may show: a message or a letter that went
//! to a dossier the caller may not read (a CCAS request) is left out. The
//! dossier role decides, asked with the caller's own token.

use std::collections::HashSet;

use guichet_proto::dossier::v1::ListIntakePlacementsRequest;
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The intake requests among `ids` that went to a dossier the caller (whose
/// `authorization` is passed on) may not read.
pub async fn hidden_requests(
    client: &DossierServiceClient<Channel>,
    authorization: Option<&MetadataValue<Ascii>>,
    ids: Vec<String>,
) -> Result<HashSet<String>, Status> {
    let mut hidden = HashSet::new();
    let ids: Vec<String> = ids.into_iter().filter(|i| !i.is_empty()).collect();
    for chunk in ids.chunks(500) {
        let mut req = Request::new(ListIntakePlacementsRequest {
            request_ids: chunk.to_vec(),
        });
        if let Some(a) = authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        let placements = match client.clone().list_intake_placements(req).await {
            Ok(r) => r.into_inner().placements,
            Err(s) if s.code() == Code::PermissionDenied => return Err(s),
            Err(s) => {
                return Err(crate::grpc::unavailable(
                    "check where the requests went",
                    s.message(),
                ));
            }
        };
        hidden.extend(
            placements
                .into_iter()
                .filter(|p| !p.readable)
                .map(|p| p.request_id),
        );
    }
    Ok(hidden)
}
