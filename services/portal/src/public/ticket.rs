//! Mon ticket (the kiosk's QR code, `/ticket/<public token>`): the ticket's
//! place in the queue and the estimated wait, then « C'est votre tour,
//! guichet 3 » when a desk calls it. Live: the page follows server-sent
//! events (`/ticket/<token>/evenements`) that carry its new state whenever
//! the counter publishes a change; without JavaScript it reloads itself
//! every 20 seconds (a `<noscript>` refresh). Temps d'attente
//! (`/temps-attente`): the current wait per service, for the town's
//! website. The counter role computes both (see its `waits` module).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures::StreamExt;
use guichet_proto::convert::datetime;
use guichet_proto::counter::v1 as cpb;
use serde::Deserialize;
use tonic::Code;

use super::{Layout, Public, error, respond, unavailable};

/// "environ 25 minutes", "moins d'une minute".
pub fn minutes(secs: u32) -> String {
    match secs.div_ceil(60) {
        0 => "moins d'une minute".into(),
        1 => "environ 1 minute".into(),
        m if m < 60 => format!("environ {m} minutes"),
        m => format!("environ {} h {:02}", m / 60, m % 60),
    }
}

/// The part of the page that changes, rendered alone for the live updates.
#[derive(askama::Template, PartialEq, Eq, Clone)]
#[template(path = "public/ticket_state.html")]
pub struct TicketState {
    pub number: String,
    pub service: String,
    /// waiting, called, in_service, done, no_show.
    pub status: &'static str,
    pub place: u32,
    pub ahead: u32,
    pub wait: String,
    pub desks: u32,
    pub desk: String,
    pub recalled: bool,
}

fn state(t: &cpb::TicketPosition) -> TicketState {
    use cpb::TicketStatus as S;
    TicketState {
        number: t.number.clone(),
        service: t.service_label.clone(),
        status: match S::try_from(t.status).unwrap_or(S::Unspecified) {
            S::Waiting => "waiting",
            S::Called => "called",
            S::InService => "in_service",
            S::Done => "done",
            S::NoShow => "no_show",
            S::Unspecified => "waiting",
        },
        place: t.ahead + 1,
        ahead: t.ahead,
        wait: minutes(t.estimated_wait_seconds),
        desks: t.open_desks.max(1),
        desk: t.desk.clone(),
        recalled: t.recalls > 0,
    }
}

async fn position(p: &Public, token: &str) -> Result<Option<cpb::TicketPosition>, tonic::Status> {
    if token.is_empty() || token.len() > 64 {
        return Ok(None);
    }
    let mut c = p.app.clients.counter.clone();
    match c
        .get_ticket_position(p.app.clients.public(cpb::GetTicketPositionRequest {
            public_token: token.to_owned(),
        }))
        .await
    {
        Ok(t) => Ok(Some(t.into_inner())),
        Err(e) if matches!(e.code(), Code::NotFound | Code::InvalidArgument) => Ok(None),
        Err(e) => Err(e),
    }
}

fn unknown(p: &Public) -> Response {
    error(
        p,
        StatusCode::NOT_FOUND,
        "Ticket introuvable",
        "Ce ticket n'existe pas ou n'est plus valable (les tickets valent pour la journée). Reprenez un ticket à la borne d'accueil.",
    )
}

#[derive(askama::Template)]
#[template(path = "public/ticket.html")]
struct TicketPage {
    layout: Layout,
    token: String,
    now: TicketState,
}

pub async fn show(
    State(p): State<Public>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    match position(&p, &token).await {
        Ok(Some(t)) => respond(
            &p,
            &TicketPage {
                layout: Layout::new(&p, "ticket", &headers),
                token,
                now: state(&t),
            },
        ),
        Ok(None) => unknown(&p),
        Err(e) => unavailable(&p, &e),
    }
}

/// The changing part alone (what the live page swaps in).
pub async fn fragment(State(p): State<Public>, Path(token): Path<String>) -> Response {
    match position(&p, &token).await {
        Ok(Some(t)) => match askama::Template::render(&state(&t)) {
            Ok(html) => Html(html).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The live state of one ticket: a `ticket` event with the new fragment
/// whenever the counter publishes a change that moves it (and every 30
/// seconds at most, as the estimate ages); ends when the visit is over.
pub async fn events(
    State(p): State<Public>,
    Path(token): Path<String>,
    axum::Extension(stop): axum::Extension<tokio_util::sync::CancellationToken>,
) -> Response {
    let Ok(Some(first)) = position(&p, &token).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let rx = p.app.live.subscribe();
    let changes = tokio_stream::wrappers::BroadcastStream::new(rx)
        .filter(|c| futures::future::ready(matches!(c, Ok(c) if c.kind == "counter") || c.is_err()))
        .map(|_| ());
    let ticks =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_secs(30)))
            .map(|_| ());
    let last = std::sync::Arc::new(tokio::sync::Mutex::new(state(&first)));
    let stream = futures::stream::select(changes, ticks)
        .then(move |()| {
            let (p, token, last) = (p.clone(), token.clone(), last.clone());
            async move {
                let now = position(&p, &token)
                    .await
                    .ok()
                    .flatten()
                    .map(|t| state(&t))?;
                let mut last = last.lock().await;
                if *last == now {
                    return None;
                }
                *last = now.clone();
                askama::Template::render(&now).ok()
            }
        })
        .filter_map(|html| async move { html })
        .map(|html| Ok::<_, Infallible>(Event::default().event("ticket").data(html)))
        .take_until(stop.cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(20)))
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    lieu: String,
}

pub struct ServiceRow {
    pub name: String,
    pub waiting: u32,
    pub wait: String,
    pub desks: u32,
}

#[derive(askama::Template)]
#[template(path = "public/waiting_times.html")]
struct WaitingPage {
    layout: Layout,
    rows: Vec<ServiceRow>,
    at: String,
}

pub async fn waiting_times(
    State(p): State<Public>,
    headers: HeaderMap,
    Query(q): Query<WaitQuery>,
) -> Response {
    let mut c = p.app.clients.counter.clone();
    let res = c
        .list_waiting_times(p.app.clients.public(cpb::ListWaitingTimesRequest {
            site: q.lieu.chars().take(64).collect(),
        }))
        .await;
    match res {
        Ok(r) => {
            let r = r.into_inner();
            let page = WaitingPage {
                layout: Layout::new(&p, "attente", &headers),
                rows: r
                    .services
                    .iter()
                    .map(|s| ServiceRow {
                        name: s.service_label.clone(),
                        waiting: s.waiting,
                        wait: if s.waiting == 0 {
                            "pas d'attente".into()
                        } else {
                            minutes(s.estimated_wait_seconds)
                        },
                        desks: s.open_desks,
                    })
                    .collect(),
                at: r
                    .compute_time
                    .as_ref()
                    .and_then(datetime)
                    .map(guichet_platform::french::hour)
                    .unwrap_or_default(),
            };
            respond(&p, &page)
        }
        Err(e) => unavailable(&p, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_told_in_minutes() {
        assert_eq!(minutes(0), "moins d'une minute");
        assert_eq!(minutes(60), "environ 1 minute");
        assert_eq!(minutes(1500), "environ 25 minutes");
        assert_eq!(minutes(3900), "environ 1 h 05");
    }
}
