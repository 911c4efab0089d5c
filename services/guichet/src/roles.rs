//! The roles guichet knows, and how each is built into a process.

use guichet_platform::grpc::GrpcServer;
use tokio_util::sync::CancellationToken;

use crate::GuichetConfig;

/// Every role of the architecture. The all-in-one command, the deployment
/// manifests (checked by a test) and the test sandbox all come from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Role {
    IngressTelephony,
    IngressEmail,
    IngressScan,
    IngressCounter,
    Routing,
    Dossier,
    Appointment,
    Signature,
    Notification,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::IngressTelephony,
        Role::IngressEmail,
        Role::IngressScan,
        Role::IngressCounter,
        Role::Routing,
        Role::Dossier,
        Role::Appointment,
        Role::Signature,
        Role::Notification,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::IngressTelephony => "ingress-telephony",
            Role::IngressEmail => "ingress-email",
            Role::IngressScan => "ingress-scan",
            Role::IngressCounter => "ingress-counter",
            Role::Routing => "routing",
            Role::Dossier => "dossier",
            Role::Appointment => "appointment",
            Role::Signature => "signature",
            Role::Notification => "notification",
        }
    }

    /// Whether this version implements the role.
    pub fn is_served(self) -> bool {
        matches!(
            self,
            Role::IngressTelephony
                | Role::IngressEmail
                | Role::IngressCounter
                | Role::IngressScan
                | Role::Routing
                | Role::Dossier
                | Role::Appointment
                | Role::Signature
                | Role::Notification
        )
    }

    /// The roles `guichet up` runs.
    pub fn served() -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| r.is_served()).collect()
    }
}

/// A built role: mounts its gRPC API, then runs its background work.
pub enum Built {
    Dossier(Box<guichet_dossier::Service>),
    Routing(Box<guichet_routing::Service>),
    Counter(Box<guichet_ingress_counter::Service>),
    Scan(Box<guichet_ingress_scan::Service>),
    Email(Box<guichet_ingress_email::Service>),
    Telephony(Box<guichet_ingress_telephony::Service>),
    Appointment(Box<guichet_appointment::Service>),
    Signature(Box<guichet_signature::Service>),
    Notification(Box<guichet_notification::Service>),
}

impl Built {
    pub fn register(&self, server: &mut GrpcServer) {
        match self {
            Built::Dossier(s) => s.register(server),
            Built::Routing(s) => s.register(server),
            Built::Counter(s) => s.register(server),
            Built::Scan(s) => s.register(server),
            Built::Email(s) => s.register(server),
            Built::Telephony(s) => s.register(server),
            Built::Appointment(s) => s.register(server),
            Built::Signature(s) => s.register(server),
            Built::Notification(s) => s.register(server),
        }
    }

    /// The role's own HTTP listener, if it has one.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Built::Telephony(s) => Some(s.http_addr()),
            Built::Counter(s) => Some(s.http_addr()),
            Built::Signature(s) => s.http_addr(),
            Built::Notification(s) => s.http_addr(),
            _ => None,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        match self {
            Built::Dossier(s) => (*s).run(shutdown).await,
            Built::Routing(s) => (*s).run(shutdown).await,
            Built::Counter(s) => (*s).run(shutdown).await,
            Built::Scan(s) => (*s).run(shutdown).await,
            Built::Email(s) => (*s).run(shutdown).await,
            Built::Telephony(s) => (*s).run(shutdown).await,
            Built::Appointment(s) => (*s).run(shutdown).await,
            Built::Signature(s) => (*s).run(shutdown).await,
            Built::Notification(s) => (*s).run(shutdown).await,
        }
    }
}

pub async fn build(
    role: Role,
    config: &GuichetConfig,
    shared: &guichet_platform::Deps,
) -> anyhow::Result<Built> {
    Ok(match role {
        Role::Dossier => Built::Dossier(Box::new(
            guichet_dossier::build(config.dossier.clone(), shared.clone()).await?,
        )),
        Role::Routing => Built::Routing(Box::new(
            guichet_routing::build(config.routing.clone(), shared.clone()).await?,
        )),
        Role::IngressCounter => Built::Counter(Box::new(
            guichet_ingress_counter::build(config.counter.clone(), shared.clone()).await?,
        )),
        Role::IngressScan => Built::Scan(Box::new(
            guichet_ingress_scan::build(config.scan.clone(), shared.clone()).await?,
        )),
        Role::IngressEmail => Built::Email(Box::new(
            guichet_ingress_email::build(config.email.clone(), shared.clone()).await?,
        )),
        Role::IngressTelephony => Built::Telephony(Box::new(
            guichet_ingress_telephony::build(config.telephony.clone(), shared.clone()).await?,
        )),
        Role::Appointment => Built::Appointment(Box::new(
            guichet_appointment::build(config.appointment.clone(), shared.clone()).await?,
        )),
        Role::Signature => Built::Signature(Box::new(
            guichet_signature::build(config.signature.clone(), shared.clone()).await?,
        )),
        Role::Notification => Built::Notification(Box::new(
            guichet_notification::build(config.notification.clone(), shared.clone()).await?,
        )),
    })
}
