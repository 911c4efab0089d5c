//! The role's HTTP endpoint: the SMS provider's delivery reports.
//!
//! `POST /sms/delivery-report/<report_token>` with a JSON body
//! `{"id": "<provider message id>", "status": "delivered" | "failed" |
//! "undelivered" | "rejected" | "expired" | …, "error": "<optional>"}`.
//! Intermediate statuses (accepted, queued, sent, buffered) are
//! acknowledged and ignored. Answers: 200 once recorded, 401 for a wrong
//! token, 404 for an unknown message id (the provider may retry), 400 for
//! a malformed body, 503 when the database is down (retry).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::core::Core;

#[derive(Clone)]
struct Ctx {
    core: Core,
    token: SecretString,
}

#[derive(Debug, Deserialize)]
pub struct Report {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub error: String,
}

pub fn router(core: Core, token: SecretString) -> axum::Router {
    axum::Router::new()
        .route("/sms/delivery-report/{token}", post(report))
        .with_state(Ctx { core, token })
}

async fn report(
    State(ctx): State<Ctx>,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let expected = ctx.token.expose_secret();
    if expected.is_empty()
        || !guichet_platform::secret::constant_time_eq(token.as_bytes(), expected.as_bytes())
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "unknown webhook"})),
        );
    }
    let Ok(r) = serde_json::from_slice::<Report>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "expected {\"id\", \"status\"}"})),
        );
    };
    let delivered = match r.status.to_ascii_lowercase().as_str() {
        "delivered" | "delivrd" | "ok" => true,
        "failed" | "undelivered" | "undeliv" | "rejected" | "rejectd" | "expired" | "error" => {
            false
        }
        _ => return (StatusCode::OK, Json(serde_json::json!({"ignored": true}))),
    };
    match ctx.core.delivery_report(&r.id, delivered, &r.error).await {
        Ok(Some(id)) => (
            StatusCode::OK,
            Json(serde_json::json!({"notification_id": id})),
        ),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "unknown message id"})),
        ),
        Err(error) => {
            tracing::warn!(%error, "delivery report not recorded");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"error": "try again later"})),
            )
        }
    }
}
