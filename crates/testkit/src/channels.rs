//! Telephony and counter channels in the test process on a manual clock.

use crate::*;

// ---------------------------------------------------------------------------
// Telephony

pub async fn telephony_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::telephony::v1::telephony_service_client::TelephonyServiceClient<Authed> {
    proto::telephony::v1::telephony_service_client::TelephonyServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

/// The CTI webhook address of a process running ingress-telephony.
pub fn cti_addr(app: &RunningApp) -> std::net::SocketAddr {
    app.http_addrs
        .iter()
        .find(|(r, _)| *r == Role::IngressTelephony)
        .map(|(_, a)| *a)
        .expect("ingress-telephony runs in this process")
}

/// A minimal HTTP/1.1 POST; returns status and body.
pub async fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    read_response(stream).await
}

/// Post a CTI event as JSON to `/api/v1/cti/<token>`; returns status and
/// the JSON answer (`null` when the body is not JSON).
pub async fn cti_json(
    addr: std::net::SocketAddr,
    token: &str,
    event: serde_json::Value,
) -> (u16, serde_json::Value) {
    let (status, body) = http_post(
        addr,
        &format!("/api/v1/cti/{token}"),
        "application/json",
        event.to_string().as_bytes(),
    )
    .await
    .expect("post cti event");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// Post a CTI event as a form (`a=b&c=d`) to `/api/v1/cti/<token>`.
pub async fn cti_form(
    addr: std::net::SocketAddr,
    token: &str,
    form: &str,
) -> (u16, serde_json::Value) {
    let (status, body) = http_post(
        addr,
        &format!("/api/v1/cti/{token}"),
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    )
    .await
    .expect("post cti event");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// A channel role (telephony, counter) running inside the test on a
/// [`ManualClock`]: waiting, talk and service times are measured by moving
/// the clock, never by sleeping.
pub struct ChannelUnderTest {
    pub grpc_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub clock: ManualClock,
    role: RunningApp,
}

impl ChannelUnderTest {
    pub async fn stop(self) {
        let _ = self.role.stop().await;
    }
}

pub type TelephonyUnderTest = ChannelUnderTest;
pub type CounterUnderTest = ChannelUnderTest;

impl TestEnv {
    /// Start ingress-telephony in this process on `clock`; `extra` are
    /// `GUICHET__…` overrides.
    pub async fn spawn_telephony_with_clock(
        &self,
        clock: ManualClock,
        extra: &[(&str, &str)],
    ) -> TelephonyUnderTest {
        let config = self.config_with(extra);
        let role = self
            .spawn_on_clock(&[Role::IngressTelephony], config, &clock)
            .await;
        let http_addr = http_addr_of(&role, Role::IngressTelephony);
        ChannelUnderTest {
            grpc_addr: role.grpc_addr,
            http_addr,
            clock,
            role,
        }
    }
}

// ---------------------------------------------------------------------------
// Counter

/// The HTTP address of `role` in a process (board feed, CTI webhook).
pub fn http_addr_of(app: &RunningApp, role: Role) -> std::net::SocketAddr {
    app.http_addrs
        .iter()
        .find(|(r, _)| *r == role)
        .map(|(_, a)| *a)
        .unwrap_or_else(|| panic!("{} has no HTTP listener in this process", role.name()))
}

impl TestEnv {
    /// Start ingress-counter in this process on `clock`.
    pub async fn spawn_counter_with_clock(
        &self,
        clock: ManualClock,
        extra: &[(&str, &str)],
    ) -> CounterUnderTest {
        let config = self.config_with(extra);
        let role = self
            .spawn_on_clock(&[Role::IngressCounter], config, &clock)
            .await;
        let http_addr = http_addr_of(&role, Role::IngressCounter);
        ChannelUnderTest {
            grpc_addr: role.grpc_addr,
            http_addr,
            clock,
            role,
        }
    }
}
