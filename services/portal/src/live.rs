//! Live views: one NATS subscription per portal process to the routing
//! role's work-item events, fanned out to every open page over server-sent
//! events. An event carries no personal data: the page that receives it
//! asks for its fragment again, with the agent's own rights.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The fan-out of live changes to the open pages.
#[derive(Clone)]
pub struct Live {
    tx: broadcast::Sender<Change>,
}

/// Something a live page shows changed.
#[derive(Clone, Debug)]
pub struct Change {
    /// The SSE event name: `queue` (a work item moved).
    pub kind: &'static str,
    /// The work item concerned (`queue`), the event type (`counter`), the
    /// call (`call`).
    pub id: String,
    /// Only the pages of these agents (a screen pop); every page when empty.
    pub to: Vec<String>,
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

impl Live {
    pub fn new() -> Live {
        // A page that falls this far behind just refreshes once.
        let (tx, _) = broadcast::channel(1024);
        Live { tx }
    }

    /// A receiver of every change (the citizens' ticket pages pick theirs).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }

    pub fn send(&self, change: Change) {
        let _ = self.tx.send(change);
    }

    /// Connected pages.
    pub fn receivers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Follow the routing role's events (the queue) and the counter's (the
    /// citizens' ticket pages) until `shutdown`; resubscribes when the
    /// subscription ends (NATS reconnects on its own).
    pub async fn follow(self, bus: guichet_platform::bus::Bus, shutdown: CancellationToken) {
        let subject = bus.subject("events.>");
        let counter = bus.subject("events.counter.");
        let routing = bus.subject("events.routing.");
        let telephony = bus.subject("events.telephony.call_");
        let signature = bus.subject("events.signature.");
        while !shutdown.is_cancelled() {
            match bus.client().subscribe(subject.clone()).await {
                Ok(mut sub) => loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        msg = sub.next() => match msg {
                            Some(msg) if msg.subject.as_str().starts_with(&counter) => {
                                // The event's type (`ticket_called`…): never
                                // empty, or browsers drop the SSE event.
                                let ty = msg.subject.as_str()[counter.len()..].to_owned();
                                self.send(Change { kind: "counter", id: ty, to: Vec::new() });
                            }
                            Some(msg) if msg.subject.as_str().starts_with(&signature) => {
                                let ty = msg.subject.as_str()[signature.len()..].to_owned();
                                self.send(Change { kind: "signature", id: ty, to: Vec::new() });
                            }
                            Some(msg) if msg.subject.as_str().starts_with(&telephony) => {
                                if let Some(c) = call_change(&msg) {
                                    self.send(c);
                                }
                            }
                            Some(msg) if !msg.subject.as_str().starts_with(&routing) => {}
                            Some(msg) => {
                                let id = msg
                                    .headers
                                    .as_ref()
                                    .and_then(|h| h.get("ce-subject"))
                                    .map(|v| v.as_str().trim_start_matches("work-items/").to_owned())
                                    .unwrap_or_default();
                                metrics::counter!("guichet_portal_live_events_total").increment(1);
                                self.send(Change { kind: "queue", id, to: Vec::new() });
                            }
                            None => break,
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to the live events"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The SSE stream of `agent`'s page: the changes of `kind` meant for
    /// every page or for her (a screen pop goes to her pages only).
    pub fn stream_for(
        &self,
        stop: CancellationToken,
        kind: &'static str,
        agent: String,
    ) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>> + use<>> {
        self.stream_where(stop, kind, move |c| {
            c.to.is_empty() || c.to.contains(&agent)
        })
    }

    /// The SSE stream of one page, ended at `stop` (process shutdown): the
    /// changes of `kind` only (`queue` for the queue pages, `counter` for
    /// the desks, the kiosk and the waiting-room board).
    pub fn stream(
        &self,
        stop: CancellationToken,
        kind: &'static str,
    ) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>> + use<>> {
        self.stream_where(stop, kind, |c| c.to.is_empty())
    }

    fn stream_where<K>(
        &self,
        stop: CancellationToken,
        kind: &'static str,
        keep: K,
    ) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>> + use<K>>
    where
        K: Fn(&Change) -> bool + Send + 'static,
    {
        let rx = self.tx.subscribe();
        let events = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter(move |c| {
                futures::future::ready(match c {
                    Ok(c) => c.kind == kind && keep(c),
                    Err(_) => true,
                })
            })
            .map(move |change| {
                // An SSE event with empty data is never dispatched by the
                // browser: always send something.
                let event = match change {
                    Ok(c) if !c.id.is_empty() => Event::default().event(c.kind).data(c.id),
                    Ok(c) => Event::default().event(c.kind).data("*"),
                    // Lagged: the page refreshes everything once.
                    Err(_) => Event::default().event(kind).data("*"),
                };
                Ok(event)
            })
            .take_until(stop.cancelled_owned());
        Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(20)))
    }
}

/// A call ringing at or answered by mapped agents: a change for their pages.
fn call_change(msg: &async_nats::Message) -> Option<Change> {
    use guichet_proto::events::v1::{CallAnswered, CallRinging};
    use prost::Message as _;
    let subject = msg.subject.as_str();
    let (call_id, to) = if subject.ends_with(".call_ringing") {
        let e = CallRinging::decode(msg.payload.as_ref()).ok()?;
        (e.call_id, e.agent_ids)
    } else if subject.ends_with(".call_answered") {
        let e = CallAnswered::decode(msg.payload.as_ref()).ok()?;
        (e.call_id, vec![e.agent_id])
    } else {
        return None;
    };
    if call_id.is_empty() || to.is_empty() {
        return None;
    }
    metrics::counter!("guichet_portal_screen_pops_total").increment(1);
    Some(Change {
        kind: "call",
        id: call_id,
        to,
    })
}
