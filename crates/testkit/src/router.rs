//! A routing role on a controllable clock, and publishing intake events as channels do.

use crate::*;

// ---- routing: a routing role on a controllable clock, intake publishing ----

pub use guichet_routing as routing;
pub use guichet_routing::ManualClock;

/// A routing role running inside the test with a [`ManualClock`]: SLA
/// escalation, ageing and offer timeouts happen when the test moves the
/// clock and runs [`RoutingUnderTest::maintain`], never by sleeping.
pub struct RoutingUnderTest {
    pub grpc_addr: std::net::SocketAddr,
    pub clock: ManualClock,
    pub queue: guichet_routing::queue::Queue,
    role: RunningApp,
}

impl RoutingUnderTest {
    /// One maintenance pass (offer timers, SLA escalation, ageing, offers)
    /// at the clock's current time.
    pub async fn maintain(&self) -> guichet_routing::queue::Maintenance {
        self.queue.maintain().await.expect("maintenance")
    }

    /// Stop serving and consuming (like a crash of this replica: offers in
    /// flight stay in the database).
    pub async fn stop(self) {
        let _ = self.role.stop().await;
    }
}

impl TestEnv {
    /// Start the routing role in this process on `clock`, calling dossier
    /// at `dossier`; `extra` are `GUICHET__…` overrides. The periodic
    /// maintenance is slowed to once an hour so the test decides when it runs.
    pub async fn spawn_routing_with_clock(
        &self,
        clock: ManualClock,
        dossier: std::net::SocketAddr,
        extra: &[(&str, &str)],
    ) -> RoutingUnderTest {
        let dossier_url = format!("http://{dossier}");
        let mut overrides: Vec<(&str, &str)> = vec![
            ("GUICHET__ROUTING__DOSSIER_URL", dossier_url.as_str()),
            ("GUICHET__ROUTING__MAINTENANCE_INTERVAL_MS", "3600000"),
        ];
        overrides.extend_from_slice(extra);
        let config = self.config_with(&overrides);
        let role = self.spawn_on_clock(&[Role::Routing], config, &clock).await;
        let queue = role
            .handle::<guichet_routing::queue::Queue>()
            .expect("routing shares its queue");
        RoutingUnderTest {
            grpc_addr: role.grpc_addr,
            clock,
            queue,
            role,
        }
    }

    /// Publish an intake event as a channel does (CloudEvents headers,
    /// Nats-Msg-Id), on `intake.<channel>`.
    /// Publish an intake event as an ingress role would; returns its stream
    /// sequence (for [`TestEnv::wait_consumed`]).
    pub async fn publish_intake(&self, event: &proto::intake::v1::IntakeEvent) -> u64 {
        use prost::Message;
        let js = async_nats::jetstream::new(self.nats().await);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("ce-id", event.id.as_str());
        headers.insert("ce-type", "guichet.intake.v1.intake_event");
        headers.insert("ce-source", "test");
        headers.insert("Nats-Msg-Id", event.id.as_str());
        js.publish_with_headers(
            self.subject(&format!("intake.{}", event.channel().slug())),
            headers,
            event.encode_to_vec().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("jetstream ack")
        .sequence
    }
}

/// A new intake event on `channel` received at `at`.
pub fn intake_at(
    channel: proto::intake::v1::Channel,
    at: chrono::DateTime<chrono::Utc>,
) -> proto::intake::v1::IntakeEvent {
    proto::intake::v1::IntakeEvent {
        id: uuid::Uuid::now_v7().to_string(),
        channel: channel as i32,
        received_at: Some(proto::convert::timestamp(at)),
        ..Default::default()
    }
}
