//! Authenticated gRPC clients of every role, and small helpers tests share.

use crate::*;

/// Adds a bearer token to every request.
#[derive(Clone)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.0.is_empty() {
            let v = format!("Bearer {}", self.0)
                .parse()
                .map_err(|_| tonic::Status::internal("bad token"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

pub type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// A channel to a running process's gRPC port.
pub async fn channel(app_grpc: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{app_grpc}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect gRPC")
}

pub async fn counter_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::counter::v1::counter_service_client::CounterServiceClient<Authed> {
    proto::counter::v1::counter_service_client::CounterServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

pub async fn dossier_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::dossier::v1::dossier_service_client::DossierServiceClient<Authed> {
    proto::dossier::v1::dossier_service_client::DossierServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

pub async fn queue_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::routing::v1::queue_service_client::QueueServiceClient<Authed> {
    proto::routing::v1::queue_service_client::QueueServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

/// Poll `check` until it returns `Some`, or panic after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A walk-in ticket request for a citizen.
pub fn ticket_request(
    given: &str,
    family: &str,
    phone: &str,
    reason: &str,
) -> proto::counter::v1::IssueTicketRequest {
    proto::counter::v1::IssueTicketRequest {
        citizen: Some(proto::intake::v1::CitizenHint {
            given_name: given.into(),
            family_name: family.into(),
            phones: if phone.is_empty() {
                vec![]
            } else {
                vec![phone.into()]
            },
            ..Default::default()
        }),
        reason: reason.into(),
        ..Default::default()
    }
}

/// A header's value, or empty.
pub fn header(headers: &async_nats::HeaderMap, key: &str) -> String {
    headers
        .get(key)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// The roles of a full installation.
pub fn all_roles() -> Vec<Role> {
    Role::ALL.to_vec()
}

pub use guichet_platform::auth::Role as TokenRole;

// --- Appointment role helpers --------------------------------------------

pub async fn appointment_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::appointment::v1::appointment_service_client::AppointmentServiceClient<Authed> {
    proto::appointment::v1::appointment_service_client::AppointmentServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

pub async fn scan_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::scan::v1::scan_service_client::ScanServiceClient<Authed> {
    proto::scan::v1::scan_service_client::ScanServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

pub async fn indicators_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::indicators::v1::indicator_service_client::IndicatorServiceClient<Authed> {
    proto::indicators::v1::indicator_service_client::IndicatorServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}
