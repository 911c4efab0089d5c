//! The counter's gRPC surface: checks the caller's role, turns requests
//! into the core's calls and tickets into their proto form.

use guichet_platform::auth::{self, Role};
use guichet_platform::contact::parse_hint;
use guichet_platform::grpc::invalid_argument;
use guichet_proto::convert::timestamp;
use guichet_proto::counter::v1 as pb;
use tonic::{Request, Response, Status};

use crate::CounterApi;
use crate::board;
use crate::core::{NewTicket, secs};
use crate::db::entities::ticket;

pub(crate) fn ticket_pb(t: ticket::Model) -> pb::Ticket {
    let status = status_pb(&t.status);
    pb::Ticket {
        issued_at: Some(timestamp(t.issued_at)),
        id: t.id,
        number: t.number,
        service: t.service,
        site: t.site,
        intake_event_id: t.intake_event_id,
        priority: t.priority,
        status: status as i32,
        desk: t.desk.unwrap_or_default(),
        call_time: t.call_time.map(timestamp),
        start_time: t.start_time.map(timestamp),
        finish_time: t.finish_time.map(timestamp),
        recalls: u32::try_from(t.recalls).unwrap_or(0),
        waiting_seconds: t.start_time.map_or(0, |s| secs(t.waiting_since, s)),
        service_seconds: match (t.start_time, t.finish_time) {
            (Some(s), Some(f)) => secs(s, f),
            _ => 0,
        },
        no_show_time: t.no_show_time.map(timestamp),
        transferred_from: t.transferred_from.unwrap_or_default(),
        booking_id: t.booking_id.unwrap_or_default(),
        appointment_time: t.appointment_at.map(timestamp),
        public_token: t.public_token.unwrap_or_default(),
        agent_id: t.agent_id.unwrap_or_default(),
    }
}

fn status_pb(s: &str) -> pb::TicketStatus {
    match s {
        "waiting" => pb::TicketStatus::Waiting,
        "called" => pb::TicketStatus::Called,
        "in_service" => pb::TicketStatus::InService,
        "done" => pb::TicketStatus::Done,
        "no_show" => pb::TicketStatus::NoShow,
        _ => pb::TicketStatus::Unspecified,
    }
}

#[tonic::async_trait]
impl pb::counter_service_server::CounterService for CounterApi {
    #[tracing::instrument(skip_all, fields(ticket_id = tracing::field::Empty))]
    async fn issue_ticket(
        &self,
        request: Request<pb::IssueTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        // A kiosk may issue an anonymous ticket: the desk qualifies it.
        let kiosk = caller.has(Role::Kiosk) || caller.has(Role::CitizenPages);
        let empty = req.citizen.as_ref().is_none_or(|h| {
            h.given_name.trim().is_empty()
                && h.family_name.trim().is_empty()
                && h.phones.iter().all(|p| p.trim().is_empty())
                && h.emails.iter().all(|e| e.trim().is_empty())
                && h.address.is_none()
        });
        if !(kiosk && empty) {
            let citizen = parse_hint(req.citizen.as_ref(), "citizen")?;
            if citizen.given_name.is_empty() && citizen.family_name.is_empty() {
                return Err(invalid_argument(
                    "citizen.family_name",
                    "a walk-in citizen gives at least a name",
                ));
            }
        }
        let reason = req.reason.trim();
        if reason.chars().count() > 2000 {
            return Err(invalid_argument(
                "reason",
                "must be at most 2000 characters",
            ));
        }
        let service = if req.service.trim().is_empty() {
            self.config.default_service.as_str()
        } else {
            req.service.trim()
        };
        let letter = self.config.services.get(service).ok_or_else(|| {
            invalid_argument(
                "service",
                format!(
                    "`{service}` is not a counter service ({})",
                    self.config
                        .services
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let site = self.checked_site(&req.site)?;
        let request_id = req.request_id.trim();
        if request_id.len() > 128 {
            return Err(invalid_argument(
                "request_id",
                "must be at most 128 characters",
            ));
        }
        let request_id = (!request_id.is_empty()).then(|| request_id.to_owned());
        let priority = req.priority.trim();
        let weight = if priority.is_empty() {
            0
        } else {
            *self.config.priorities.get(priority).ok_or_else(|| {
                invalid_argument(
                    "priority",
                    format!(
                        "`{priority}` is not a priority category ({})",
                        self.config
                            .priorities
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?
        };

        let t = self
            .issue(NewTicket {
                citizen: req.citizen.clone(),
                reason: reason.to_owned(),
                service: service.to_owned(),
                letter: letter.clone(),
                site,
                request_id,
                priority: priority.to_owned(),
                rank_offset_minutes: weight,
                issued_by: caller.subject.clone(),
                appointment: None,
            })
            .await?;
        Ok(Response::new(ticket_pb(t)))
    }

    async fn call_next(
        &self,
        request: Request<pb::CallNextRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = auth::caller(&request)?;
        self.call_next_ticket(request.into_inner(), &caller.subject)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn recall_ticket(
        &self,
        request: Request<pb::TicketActionRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        self.recall(&request.into_inner().ticket_id)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn start_service(
        &self,
        request: Request<pb::TicketActionRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        self.start(&request.into_inner().ticket_id)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn finish_service(
        &self,
        request: Request<pb::TicketActionRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        self.finish(&request.into_inner().ticket_id)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn mark_no_show(
        &self,
        request: Request<pb::TicketActionRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        self.no_show(&request.into_inner().ticket_id)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn transfer_ticket(
        &self,
        request: Request<pb::TransferTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let req = request.into_inner();
        self.transfer(&req.ticket_id, &req.service)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let t = self.ticket(&request.into_inner().ticket_id).await?;
        Ok(Response::new(ticket_pb(t)))
    }

    async fn get_ticket_position(
        &self,
        request: Request<pb::GetTicketPositionRequest>,
    ) -> Result<Response<pb::TicketPosition>, Status> {
        let token = request.into_inner().public_token;
        let (t, w) = self.position(token.trim()).await?;
        Ok(Response::new(pb::TicketPosition {
            status: status_pb(&t.status) as i32,
            number: t.number,
            service_label: self.config.service_label(&t.service),
            service: t.service,
            site: t.site,
            ahead: w.ahead,
            estimated_wait_seconds: w.estimate,
            desk: t.desk.unwrap_or_default(),
            call_time: t.call_time.map(timestamp),
            recalls: u32::try_from(t.recalls).unwrap_or(0),
            open_desks: w.open_desks,
        }))
    }

    async fn list_waiting_times(
        &self,
        request: Request<pb::ListWaitingTimesRequest>,
    ) -> Result<Response<pb::ListWaitingTimesResponse>, Status> {
        let site = request.into_inner().site;
        let site = if site.trim().is_empty() {
            self.config.default_site.clone()
        } else {
            site.trim().to_owned()
        };
        let services = self.waiting_times(&site).await?;
        Ok(Response::new(pb::ListWaitingTimesResponse {
            site,
            services: services
                .into_iter()
                .map(|(service, w)| pb::ServiceWaiting {
                    service_label: self.config.service_label(&service),
                    service,
                    waiting: w.waiting,
                    open_desks: w.open_desks,
                    average_service_seconds: w.average_service,
                    estimated_wait_seconds: w.estimate,
                    longest_wait_seconds: w.longest,
                })
                .collect(),
            compute_time: Some(timestamp(self.clock.now())),
        }))
    }

    type WatchBoardStream = board::BoardStream;

    async fn watch_board(
        &self,
        request: Request<pb::WatchBoardRequest>,
    ) -> Result<Response<Self::WatchBoardStream>, Status> {
        let site = request.into_inner().site;
        let site = if site.trim().is_empty() {
            self.config.default_site.clone()
        } else {
            site.trim().to_owned()
        };
        let stream = self.board_stream(site).await?;
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all, fields(ticket_id = tracing::field::Empty, booking_id = tracing::field::Empty))]
    async fn check_in_appointment(
        &self,
        request: Request<pb::CheckInAppointmentRequest>,
    ) -> Result<Response<pb::CheckInAppointmentResponse>, Status> {
        let caller = auth::caller(&request)?;
        self.check_in(&caller.subject, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Result<Response<pb::ListTicketsResponse>, Status> {
        let req = request.into_inner();
        let site = self.checked_site(&req.site)?;
        let statuses = req
            .statuses
            .iter()
            .map(|s| match pb::TicketStatus::try_from(*s) {
                Ok(pb::TicketStatus::Unspecified) | Err(_) => Err(invalid_argument(
                    "statuses",
                    format!("`{s}` is not a ticket status"),
                )),
                Ok(s) => Ok(status_db(s)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limit = match req.limit {
            0 => 50,
            n if n <= 500 => u64::from(n),
            _ => return Err(invalid_argument("limit", "must be at most 500")),
        };
        let tickets = self
            .tickets_of_today(&site, req.desk.trim(), &statuses, &req.services, limit)
            .await?
            .into_iter()
            .map(|t| pb::Ticket {
                public_token: String::new(),
                ..ticket_pb(t)
            })
            .collect();
        Ok(Response::new(pb::ListTicketsResponse { site, tickets }))
    }

    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let c = &self.config;
        Ok(Response::new(pb::ListServicesResponse {
            services: c
                .services
                .iter()
                .map(|(name, letter)| pb::CounterServiceInfo {
                    name: name.clone(),
                    letter: letter.clone(),
                    label: c.service_label(name),
                })
                .collect(),
            default_service: c.default_service.clone(),
            default_site: c.default_site.clone(),
            priorities: c.priorities.keys().cloned().collect(),
        }))
    }
}

/// The stored name of a ticket status.
fn status_db(s: pb::TicketStatus) -> &'static str {
    match s {
        pb::TicketStatus::Waiting => "waiting",
        pb::TicketStatus::Called => "called",
        pb::TicketStatus::InService => "in_service",
        pb::TicketStatus::Done => "done",
        pb::TicketStatus::NoShow => "no_show",
        pb::TicketStatus::Unspecified => "",
    }
}
