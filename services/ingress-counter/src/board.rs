//! The waiting-room board: every call of a site, in order, as it happens.
//!
//! Calls are `ticket_called` events on NATS (published by whichever replica
//! served the desk), so a board connected to any replica sees every call.
//! Served as a gRPC server stream and as Server-Sent Events for screens
//! (`GET /board/<site>/events`, `event: call`, JSON data, French text).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use guichet_proto::counter::v1 as pb;
use guichet_proto::events::v1::TicketCalled;
use prost::Message;
use tonic::Status;

use crate::CounterApi;
use crate::error::{Error, unavailable};

pub type BoardStream = Pin<Box<dyn Stream<Item = Result<pb::BoardCall, Status>> + Send>>;

/// "Ticket P012 → guichet 3", or "Rappel : ticket P012 → guichet 3".
pub fn board_text(number: &str, desk: &str, recall: u32) -> String {
    if recall == 0 {
        format!("Ticket {number} → guichet {desk}")
    } else {
        format!("Rappel : ticket {number} → guichet {desk}")
    }
}

fn board_call(e: TicketCalled) -> pb::BoardCall {
    pb::BoardCall {
        text: board_text(&e.ticket_number, &e.desk, e.recall),
        ticket_number: e.ticket_number,
        desk: e.desk,
        service: e.service,
        site: e.site,
        call_time: e.call_time,
        recall: e.recall,
    }
}

impl CounterApi {
    /// The calls of `site` from now on (subscribed before this returns).
    pub(crate) async fn board_calls(
        &self,
        site: String,
    ) -> Result<impl Stream<Item = pb::BoardCall> + Send + use<>, Error> {
        let client = self.outbox.bus().client().clone();
        let subject = self.outbox.bus().event_subject("counter", "ticket_called");
        let sub = client
            .subscribe(subject)
            .await
            .map_err(|e| unavailable("follow the board", e))?;
        client
            .flush()
            .await
            .map_err(|e| unavailable("follow the board", e))?;
        let stop = self.stop.clone().cancelled_owned();
        Ok(sub.take_until(stop).filter_map(move |m| {
            let site = site.clone();
            async move {
                let e = TicketCalled::decode(m.payload).ok()?;
                (e.site == site).then(|| board_call(e))
            }
        }))
    }

    pub(crate) async fn board_stream(&self, site: String) -> Result<BoardStream, Error> {
        let calls = self.board_calls(site).await?;
        Ok(Box::pin(calls.map(Ok)))
    }
}
