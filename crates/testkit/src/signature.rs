//! Signature role test secrets and client.

use crate::*;

// --- Signature role helpers ----------------------------------------------

/// HMAC key of stored one-time codes in every test environment.
pub const SIGNATURE_CODE_SECRET: &str = "test-signature-code-secret-0123456789abcdef";

/// Evidence sealing keys (key id, base64 Ed25519 seed): every test
/// environment seals with A; rotation tests move to B.
pub const SEAL_KEY_A: (&str, &str) = ("test-a", "oaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaE=");
pub const SEAL_KEY_B: (&str, &str) = ("test-b", "srKysrKysrKysrKysrKysrKysrKysrKysrKysrKysrI=");

pub async fn signature_client(
    addr: std::net::SocketAddr,
    token: &str,
) -> proto::signature::v1::signature_service_client::SignatureServiceClient<Authed> {
    proto::signature::v1::signature_service_client::SignatureServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}
