//! Authentication, roles and bad input at the gRPC edge.

use guichet_testkit::proto::dossier::v1 as dpb;
use guichet_testkit::*;
use tonic::Code;
use tonic_types::StatusExt;

fn field_of(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn calls_without_a_token_are_unauthenticated_and_agents_cannot_make_service_calls() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;

    let err = counter_client(app.grpc_addr, "")
        .await
        .issue_ticket(ticket_request("A", "B", "", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let err = counter_client(app.grpc_addr, "not-a-jwt")
        .await
        .issue_ticket(ticket_request("A", "B", "", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let agent = env.token("agent-1", &[TokenRole::Agent]);
    // Agents may resolve citizens, not purge dossiers.
    dossier_client(app.grpc_addr, &agent)
        .await
        .resolve_citizen(dpb::ResolveCitizenRequest {
            hint: ticket_request("A", "B", "", "").citizen,
            request_id: "r1".into(),
            candidates_only: false,
        })
        .await
        .expect("an agent may resolve a citizen");
    let err = dossier_client(app.grpc_addr, &agent)
        .await
        .purge_expired(dpb::PurgeExpiredRequest { dry_run: true })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The same call with an admin token is allowed.
    let admin = env.token("admin-1", &[TokenRole::Admin]);
    dossier_client(app.grpc_addr, &admin)
        .await
        .purge_expired(dpb::PurgeExpiredRequest { dry_run: true })
        .await
        .expect("admin may purge");
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let mut counter = counter_client(app.grpc_addr, &agent).await;

    let err = counter
        .issue_ticket(ticket_request("", "", "", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(field_of(&err).starts_with("citizen"), "{err:?}");

    let err = counter
        .issue_ticket(ticket_request("Anne", "Martin", "06 12", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field_of(&err), "citizen.phones[0]");

    let mut req = ticket_request("Anne", "Martin", "", "x");
    req.service = "piscine".into();
    let err = counter.issue_ticket(req).await.unwrap_err();
    assert_eq!(field_of(&err), "service");

    // The service is still up and accepts a good request.
    counter
        .issue_ticket(ticket_request("Anne", "Martin", "06 12 34 56 78", "x"))
        .await
        .expect("a good request after bad ones");
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn a_retried_ticket_request_returns_the_same_ticket() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let mut counter = counter_client(app.grpc_addr, &agent).await;
    let mut req = ticket_request("Paul", "Durand", "", "x");
    req.request_id = "kiosk-3-0042".into();
    let a = counter
        .issue_ticket(req.clone())
        .await
        .expect("first")
        .into_inner();
    let b = counter.issue_ticket(req).await.expect("retry").into_inner();
    assert_eq!(a.id, b.id);
    assert_eq!(a.number, b.number);
    app.stop().await.expect("stop");
    env.cleanup().await;
}

/// RFC 8032 test key 1 (Ed25519), as PKCS#8 DER and as a JWK.
const ED25519_PKCS8: &str = "302e020100300506032b6570042204209d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const ED25519_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn provider_token(kid: &str, issuer: &str, roles: &[&str]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "sub": "agent-oidc-12", "iss": issuer, "aud": "guichet", "iat": now, "exp": now + 600,
        "realm_access": {"roles": roles}, "groups": ["social"],
    });
    let key = jsonwebtoken::EncodingKey::from_ed_der(&hex(ED25519_PKCS8));
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test]
async fn tokens_from_the_city_identity_provider_are_verified_against_its_jwks() {
    use guichet_testkit::proto::routing::v1 as qpb;
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    // A JWKS endpoint, as an OIDC provider publishes it.
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!(
        "http://{}/realms/ville/protocol/openid-connect/certs",
        listener.local_addr().unwrap()
    );
    let router = axum::Router::new().route(
        "/realms/ville/protocol/openid-connect/certs",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let issuer = "https://idp.ville.test/realms/ville";
    let app = env
        .spawn_with(
            &all_roles(),
            env.config_with(&[
                ("GUICHET__AUTH__JWKS_URL", &jwks_url),
                ("GUICHET__AUTH__OIDC_ISSUER", issuer),
                ("GUICHET__AUTH__ROLES_CLAIM", "realm_access.roles"),
            ]),
        )
        .await;
    eventually(
        "the JWKS loaded",
        std::time::Duration::from_secs(10),
        || async {
            matches!(http_get(app.admin_addr, "/readyz").await, Ok((200, _))).then_some(())
        },
    )
    .await;

    // Arrange: a provider token with a role guichet knows and one it does not.
    let good = provider_token("k1", issuer, &["agent", "offline_access"]);
    // Act / Assert
    let presence = queue_client(app.grpc_addr, &good)
        .await
        .set_presence(qpb::SetPresenceRequest {
            presence: qpb::Presence::Available as i32,
            ..Default::default()
        })
        .await
        .expect("provider token accepted")
        .into_inner();
    assert_eq!(presence.id, "agent-oidc-12");

    let wrong_issuer = provider_token("k1", "https://evil.test", &["agent"]);
    let err = queue_client(app.grpc_addr, &wrong_issuer)
        .await
        .take_next(qpb::TakeNextRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let unknown_key = provider_token("k2", issuer, &["agent"]);
    let err = queue_client(app.grpc_addr, &unknown_key)
        .await
        .take_next(qpb::TakeNextRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("k2"));

    let no_role = provider_token("k1", issuer, &["offline_access"]);
    let err = queue_client(app.grpc_addr, &no_role)
        .await
        .take_next(qpb::TakeNextRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The static key still works for guichet's own and development tokens.
    let dev = env.token("agent-dev", &[TokenRole::Agent]);
    queue_client(app.grpc_addr, &dev)
        .await
        .list_work_items(qpb::ListWorkItemsRequest::default())
        .await
        .expect("static-key token");
    app.stop().await.expect("stop");
    env.cleanup().await;
}
