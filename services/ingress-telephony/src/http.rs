//! The telephony ingress's HTTP surface: the Zammad-compatible CTI webhook
//! and the CDR upload, both behind the configured token.

use axum::Router;
use axum::body::Bytes as BodyBytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::TelephonyApi;
use guichet_platform::secret::constant_time_eq;

use crate::config::Config;
use crate::core::{CtiError, CtiReply};
use crate::cti;

/// The HTTP routes: the Zammad-compatible CTI webhook and the CDR upload.
pub fn router(api: TelephonyApi) -> Router {
    let cdr_limit = api.config.max_cdr_bytes;
    Router::new()
        .route("/api/v1/cti/{token}", post(cti_webhook))
        .route(
            "/api/v1/cdr/{token}",
            post(cdr_upload).layer(DefaultBodyLimit::max(cdr_limit)),
        )
        .with_state(api)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error_response(status: StatusCode, error: impl Into<String>) -> Response {
    json_response(status, json!({ "error": error.into() }))
}

/// Constant-time comparison of the token in the URL with the configured one.
fn token_ok(config: &Config, given: &str) -> bool {
    let want = config.webhook_token.expose_secret().as_bytes();
    !want.is_empty() && constant_time_eq(want, given.as_bytes())
}

async fn cti_webhook(
    State(api): State<TelephonyApi>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Response {
    if !token_ok(&api.config, &token) {
        metrics::counter!("guichet_telephony_cti_requests_total", "outcome" => "unauthorized")
            .increment(1);
        return error_response(StatusCode::UNAUTHORIZED, "invalid token");
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let params = match cti::parse(content_type, &body) {
        Ok(p) => p,
        Err(e) => {
            metrics::counter!("guichet_telephony_cti_requests_total", "outcome" => "invalid")
                .increment(1);
            return error_response(StatusCode::UNPROCESSABLE_ENTITY, e.0);
        }
    };
    match api.handle_cti(params).await {
        Ok(reply) => {
            metrics::counter!("guichet_telephony_cti_requests_total", "outcome" => reply.outcome())
                .increment(1);
            match reply {
                CtiReply::Reject => json_response(
                    StatusCode::OK,
                    json!({ "action": "reject", "reason": "busy" }),
                ),
                _ => json_response(StatusCode::OK, json!({})),
            }
        }
        Err(CtiError::Invalid(e)) => {
            metrics::counter!("guichet_telephony_cti_requests_total", "outcome" => "invalid")
                .increment(1);
            error_response(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        Err(CtiError::Internal(e)) => {
            tracing::error!(error = %e, "cti event not stored");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

async fn cdr_upload(
    State(api): State<TelephonyApi>,
    Path(token): Path<String>,
    body: BodyBytes,
) -> Response {
    if !token_ok(&api.config, &token) {
        return error_response(StatusCode::UNAUTHORIZED, "invalid token");
    }
    match api.import_cdr_bytes(&body).await {
        Ok(r) => json_response(
            StatusCode::OK,
            json!({ "imported": r.imported, "duplicates": r.duplicates, "errors": r.errors }),
        ),
        Err(e) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Status::from(e).message(),
        ),
    }
}
