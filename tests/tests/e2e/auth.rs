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
    let err = dossier_client(app.grpc_addr, &agent)
        .await
        .resolve_citizen(dpb::ResolveCitizenRequest {
            hint: ticket_request("A", "B", "", "").citizen,
            request_id: "r1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The same call with an admin token is allowed.
    let admin = env.token("admin-1", &[TokenRole::Admin]);
    dossier_client(app.grpc_addr, &admin)
        .await
        .resolve_citizen(dpb::ResolveCitizenRequest {
            hint: ticket_request("A", "B", "", "").citizen,
            request_id: "r1".into(),
        })
        .await
        .expect("admin may resolve");
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
