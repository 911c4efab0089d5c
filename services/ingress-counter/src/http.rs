//! The counter's HTTP surface: the waiting-room board as Server-Sent Events
//! (`GET /board/<site>/events`) for screens.

use std::convert::Infallible;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;

use crate::CounterApi;

pub fn router(api: CounterApi) -> Router {
    Router::new()
        .route("/board/{site}/events", get(sse))
        .with_state(api)
}

async fn sse(State(api): State<CounterApi>, Path(site): Path<String>) -> Response {
    match api.board_calls(site).await {
        Ok(calls) => {
            let events = calls.map(|c| {
                let data = serde_json::json!({
                    "ticket": c.ticket_number,
                    "desk": c.desk,
                    "service": c.service,
                    "recall": c.recall,
                    "text": c.text,
                });
                Ok::<_, Infallible>(Event::default().event("call").data(data.to_string()))
            });
            Sse::new(events)
                .keep_alive(KeepAlive::default())
                .into_response()
        }
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            tonic::Status::from(e).message().to_owned(),
        )
            .into_response(),
    }
}
