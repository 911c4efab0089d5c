//! The roles the portal calls, over their gRPC contracts, always with the
//! signed-in agent's token: each role decides what the agent may see and do.

use std::sync::Arc;
use std::time::Duration;

use guichet_platform::auth::{Authenticator, Role};
use guichet_proto::appointment::v1::appointment_service_client::AppointmentServiceClient;
use guichet_proto::counter::v1::counter_service_client::CounterServiceClient;
use guichet_proto::dossier::v1::dossier_service_client::DossierServiceClient;
use guichet_proto::dossier::v1::process_studio_service_client::ProcessStudioServiceClient;
use guichet_proto::email::v1::email_service_client::EmailServiceClient;
use guichet_proto::indicators::v1::indicator_service_client::IndicatorServiceClient;
use guichet_proto::notification::v1::notification_service_client::NotificationServiceClient;
use guichet_proto::routing::v1::queue_service_client::QueueServiceClient;
use guichet_proto::scan::v1::scan_service_client::ScanServiceClient;
use guichet_proto::signature::v1::signature_service_client::SignatureServiceClient;
use guichet_proto::telephony::v1::telephony_service_client::TelephonyServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::Config;
use crate::session::Session;

type Ch = InterceptedService<Channel, AgentOnly>;

/// Adds the trace context; refuses a call that carries no agent token, so
/// no page can ever act with more than the agent may.
#[derive(Clone, Debug, Default)]
pub struct AgentOnly;

impl tonic::service::Interceptor for AgentOnly {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !req.metadata().contains_key("authorization") {
            return Err(tonic::Status::unauthenticated(
                "portal call without the agent's token",
            ));
        }
        guichet_platform::telemetry::inject_grpc(req.metadata_mut());
        Ok(req)
    }
}

#[derive(Clone)]
pub struct Clients {
    pub routing: QueueServiceClient<Ch>,
    pub dossier: DossierServiceClient<Ch>,
    /// The process studio, served by the dossier role.
    pub studio: ProcessStudioServiceClient<Ch>,
    pub counter: CounterServiceClient<Ch>,
    /// Called for the agents, and for the citizens' pages as `citizen_pages`.
    pub appointment: AppointmentServiceClient<Ch>,
    pub indicators: IndicatorServiceClient<Ch>,
    pub telephony: TelephonyServiceClient<Ch>,
    pub signature: SignatureServiceClient<Ch>,
    pub email: EmailServiceClient<Ch>,
    pub scan: ScanServiceClient<Ch>,
    /// The message wordings of the process studio.
    pub notification: NotificationServiceClient<Ch>,
    auth: Arc<Authenticator>,
    ttl: Duration,
    /// The identity of the citizens' pages' calls.
    service_subject: String,
}

impl Clients {
    pub fn new(config: &Config, auth: Arc<Authenticator>) -> anyhow::Result<Clients> {
        let creds = AgentOnly;
        let channel = |key: &str, url: &str| guichet_platform::grpc::lazy_channel(key, url);
        Ok(Clients {
            routing: QueueServiceClient::with_interceptor(
                channel("portal.routing_url", &config.routing_url)?,
                creds.clone(),
            ),
            dossier: DossierServiceClient::with_interceptor(
                channel("portal.dossier_url", &config.dossier_url)?,
                creds.clone(),
            ),
            studio: ProcessStudioServiceClient::with_interceptor(
                channel("portal.dossier_url", &config.dossier_url)?,
                creds.clone(),
            ),
            counter: CounterServiceClient::with_interceptor(
                channel("portal.counter_url", &config.counter_url)?,
                creds.clone(),
            ),
            appointment: AppointmentServiceClient::with_interceptor(
                channel("portal.appointment_url", &config.appointment_url)?,
                creds.clone(),
            ),
            indicators: IndicatorServiceClient::with_interceptor(
                channel("portal.indicators_url", &config.indicators_url)?,
                creds.clone(),
            ),
            telephony: TelephonyServiceClient::with_interceptor(
                channel("portal.telephony_url", &config.telephony_url)?,
                creds.clone(),
            ),
            signature: SignatureServiceClient::with_interceptor(
                channel("portal.signature_url", &config.signature_url)?,
                creds.clone(),
            ),
            email: EmailServiceClient::with_interceptor(
                channel("portal.email_url", &config.email_url)?,
                creds.clone(),
            ),
            scan: ScanServiceClient::with_interceptor(
                channel("portal.scan_url", &config.scan_url)?,
                creds.clone(),
            ),
            notification: NotificationServiceClient::with_interceptor(
                channel("portal.notification_url", &config.notification_url)?,
                creds,
            ),
            auth,
            ttl: Duration::from_secs(u64::from(config.token_ttl_secs)),
            service_subject: config.public.service_subject.clone(),
        })
    }

    /// `message` as a request made by `agent`.
    pub fn request<T>(&self, agent: &Session, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        let token = agent.token(&self.auth, self.ttl);
        if let Ok(value) = format!("Bearer {token}").parse() {
            req.metadata_mut().insert("authorization", value);
        }
        req
    }

    /// `message` as a request of the citizens' pages: the portal's own
    /// `citizen_pages` identity (admitted only on the calls those pages
    /// make, see `guichet access`), held by the roles to the public rules (public
    /// appointment types, booking delays, no-show policy, link secrets).
    pub fn public<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        let token = self
            .auth
            .issue(&self.service_subject, &[Role::CitizenPages], &[], self.ttl);
        if let Ok(value) = format!("Bearer {token}").parse() {
            req.metadata_mut().insert("authorization", value);
        }
        req
    }
}
