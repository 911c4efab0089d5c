//! Appointment check-in at the kiosk or the desk.
//!
//! A citizen with an appointment gives the booking reference (RDV-…) or the
//! phone given at booking. The counter finds the booking through the
//! appointment role's gRPC contract (`ListBookings`), checks it in there
//! (`CheckInBooking`), then issues a ticket in the appointment type's
//! counter service. Inside the appointment's priority window (from
//! `appointment_early_minutes` before the start to
//! `appointment_grace_minutes` after it) the ticket is ranked as if it had
//! arrived `appointment_priority_minutes` before the appointment time, so
//! the citizen is called at about their time without starving walk-ins who
//! have waited longer; a citizen later than the grace keeps the check-in but
//! queues as a walk-in. The ticket's request id is `appointment:<booking>`,
//! so a second check-in (a double tap, a retry) returns the same ticket.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use guichet_platform::auth::{Authenticator, ServiceCredentials};
use guichet_platform::calendar::{from_paris, to_paris};
use guichet_platform::french;
use guichet_proto::appointment::v1 as apb;
use guichet_proto::appointment::v1::appointment_service_client::AppointmentServiceClient;
use guichet_proto::convert::timestamp;
use guichet_proto::counter::v1 as pb;
use guichet_proto::intake::v1::CitizenHint;
use tonic::Code;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::CounterApi;
use crate::core::NewTicket;
use crate::error::{Error, failed_precondition, invalid_argument, not_found};
use crate::grpc::ticket_pb;

pub type AppointmentClient =
    AppointmentServiceClient<InterceptedService<Channel, ServiceCredentials>>;

/// The priority category recorded on check-in tickets.
pub const APPOINTMENT_PRIORITY: &str = "rendez-vous";

/// A client of the appointment role at `url`; `None` when check-in is off.
pub fn client(url: &str, auth: &Arc<Authenticator>) -> anyhow::Result<Option<AppointmentClient>> {
    if url.is_empty() {
        return Ok(None);
    }
    let channel = guichet_platform::grpc::lazy_channel("counter.appointment_url", url)?;
    Ok(Some(AppointmentServiceClient::with_interceptor(
        channel,
        ServiceCredentials::new(auth.clone(), "counter", "appointment"),
    )))
}

/// The booking a ticket stands for.
#[derive(Debug, Clone)]
pub struct Appointment {
    pub booking_id: String,
    pub reference: String,
    pub dossier_id: String,
    pub start: DateTime<Utc>,
    /// Checked in after the grace period: ranked as a walk-in.
    pub late: bool,
}

fn start_of(b: &apb::Booking) -> Option<DateTime<Utc>> {
    let t = b.slot.as_ref()?.start_time.as_ref()?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

/// An error of the appointment role, as the kiosk should see it.
fn from_appointment(context: &str, s: Status) -> Error {
    match s.code() {
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => Error::Upstream(s),
        _ => crate::error::unavailable(context, s.message()),
    }
}

impl CounterApi {
    pub(crate) async fn check_in(
        &self,
        issued_by: &str,
        req: pb::CheckInAppointmentRequest,
    ) -> Result<pb::CheckInAppointmentResponse, Error> {
        let Some(mut client) = self.appointments.clone() else {
            return Err(failed_precondition(
                "CHECK_IN_OFF",
                "counter",
                "appointment check-in is not configured (counter.appointment_url)",
            ));
        };
        let reference = req.booking_reference.trim().to_uppercase();
        let phone = req.phone.trim();
        match (reference.is_empty(), phone.is_empty()) {
            (true, true) => {
                return Err(invalid_argument(
                    "booking_reference",
                    "give the booking reference or the phone given at booking",
                ));
            }
            (false, false) => {
                return Err(invalid_argument(
                    "phone",
                    "give the booking reference or the phone, not both",
                ));
            }
            _ => {}
        }
        if reference.len() > 32
            || !reference
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(invalid_argument(
                "booking_reference",
                "is not a booking reference (e.g. RDV-7K3M9QXT)",
            ));
        }
        let phone = if phone.is_empty() {
            None
        } else {
            Some(
                guichet_platform::contact::Phone::parse(phone)
                    .map_err(|e| invalid_argument("phone", e))?
                    .as_str()
                    .to_owned(),
            )
        };
        let site = self.checked_site(&req.site)?;

        let now = self.clock.now();
        let early = Duration::minutes(i64::from(self.config.appointment_early_minutes));
        let grace = Duration::minutes(i64::from(self.config.appointment_grace_minutes));
        let booking = self
            .find_booking(&mut client, &reference, phone.as_deref(), now, early, grace)
            .await?;
        let start = start_of(&booking)
            .ok_or_else(|| crate::error::internal("check in", "booking without a start time"))?;
        tracing::Span::current().record("booking_id", booking.id.as_str());
        let slot = booking.slot.clone().unwrap_or_default();
        let booking_site = self
            .config
            .appointment_sites
            .get(&slot.site_id)
            .cloned()
            .unwrap_or_else(|| slot.site_id.clone());
        if booking_site != site {
            return Err(failed_precondition(
                "OTHER_SITE",
                &format!("bookings/{}", booking.id),
                format!("the appointment is at site `{booking_site}`, this kiosk is at `{site}`"),
            ));
        }

        let request_id = format!("appointment:{}", booking.id);
        let late = now > start + grace;
        let service = self
            .config
            .appointment_services
            .get(&slot.appointment_type)
            .unwrap_or(&self.config.default_service)
            .clone();
        let letter = self
            .config
            .services
            .get(&service)
            .cloned()
            .unwrap_or_else(|| "G".to_owned());

        // Check the booking in first: a retry after a failed ticket finds
        // it checked in (the appointment role answers the same booking).
        if self.ticket_by_request(&request_id).await?.is_none() {
            client
                .check_in_booking(apb::CheckInBookingRequest {
                    id: booking.id.clone(),
                })
                .await
                .map_err(|s| from_appointment("check in booking", s))?;
        }
        let t = self
            .issue(NewTicket {
                citizen: phone.map(|p| CitizenHint {
                    phones: vec![p],
                    ..Default::default()
                }),
                reason: format!(
                    "Rendez-vous {} ({}) à {}",
                    booking.reference,
                    slot.appointment_type,
                    french::hour(start)
                ),
                service,
                letter,
                site,
                request_id: Some(request_id),
                priority: APPOINTMENT_PRIORITY.to_owned(),
                rank_offset_minutes: if late {
                    0
                } else {
                    self.config.appointment_priority_minutes
                },
                issued_by: issued_by.to_owned(),
                appointment: Some(Appointment {
                    booking_id: booking.id.clone(),
                    reference: booking.reference.clone(),
                    dossier_id: booking.dossier_id.clone(),
                    start,
                    late,
                }),
            })
            .await?;
        tracing::Span::current().record("ticket_id", t.id.as_str());
        metrics::counter!(
            "guichet_counter_appointment_check_ins_total",
            "late" => if late { "true" } else { "false" }
        )
        .increment(1);
        tracing::info!(ticket_id = %t.id, booking_id = %booking.id, late, "appointment checked in");
        let message = if late {
            format!(
                "Votre rendez-vous était à {} : le délai de {} minutes est dépassé. Ticket {} : vous serez reçu(e) dès qu'un guichet se libère.",
                french::hour(start),
                self.config.appointment_grace_minutes,
                t.number
            )
        } else {
            format!(
                "Votre rendez-vous de {} est enregistré. Ticket {} : vous serez appelé(e) à l'écran.",
                french::hour(start),
                t.number
            )
        };
        Ok(pb::CheckInAppointmentResponse {
            ticket: Some(ticket_pb(t)),
            booking_id: booking.id,
            booking_reference: booking.reference,
            appointment_type: slot.appointment_type,
            appointment_time: Some(timestamp(start)),
            late,
            message,
        })
    }

    pub(crate) fn checked_site(&self, site: &str) -> Result<String, Error> {
        let site = if site.trim().is_empty() {
            self.config.default_site.as_str()
        } else {
            site.trim()
        };
        if site.len() > 64
            || !site
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid_argument(
                "site",
                "must be 1 to 64 ASCII letters, digits, '-' or '_'",
            ));
        }
        Ok(site.to_owned())
    }

    /// The booking to check in: by reference, or the phone's booking of
    /// the Paris day nearest to now that the window accepts.
    async fn find_booking(
        &self,
        client: &mut AppointmentClient,
        reference: &str,
        phone: Option<&str>,
        now: DateTime<Utc>,
        early: Duration,
        grace: Duration,
    ) -> Result<apb::Booking, Error> {
        let midnight = to_paris(now)
            .date()
            .and_hms_opt(0, 0, 0)
            .map(from_paris)
            .unwrap_or(now);
        let tomorrow = to_paris(now)
            .date()
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(from_paris)
            .unwrap_or(now + Duration::days(1));
        let statuses = vec![
            apb::BookingStatus::Booked as i32,
            apb::BookingStatus::CheckedIn as i32,
        ];
        let filter = if phone.is_some() {
            apb::BookingFilter {
                phone: phone.unwrap_or_default().to_owned(),
                statuses: statuses.clone(),
                start_time: Some(timestamp(midnight)),
                end_time: Some(timestamp(tomorrow)),
                ..Default::default()
            }
        } else {
            apb::BookingFilter {
                reference: reference.to_owned(),
                ..Default::default()
            }
        };
        let found = client
            .list_bookings(apb::ListBookingsRequest {
                filter: Some(filter),
                page_size: 20,
                page_token: String::new(),
            })
            .await
            .map_err(|s| from_appointment("find booking", s))?
            .into_inner()
            .bookings;
        let what = if phone.is_some() {
            "appointment today for this phone".to_owned()
        } else {
            reference.to_owned()
        };
        if found.is_empty() {
            return Err(not_found("booking", &what));
        }
        // By reference: one booking, which must be today's and still open.
        if phone.is_none() {
            let b = found.into_iter().next().unwrap_or_default();
            let status = apb::BookingStatus::try_from(b.status).unwrap_or_default();
            if !statuses.contains(&(status as i32)) {
                return Err(failed_precondition(
                    "BOOKING_STATUS",
                    &format!("bookings/{}", b.id),
                    format!("the booking is {}", status.as_str_name()),
                ));
            }
            let start = start_of(&b).unwrap_or(now);
            if start >= tomorrow || start < midnight {
                return Err(failed_precondition(
                    if start >= tomorrow {
                        "TOO_EARLY"
                    } else {
                        "BOOKING_PAST"
                    },
                    &format!("bookings/{}", b.id),
                    format!(
                        "the appointment is not today: {}",
                        french::short_day_hour(start)
                    ),
                ));
            }
            if now < start - early {
                return Err(too_early(&b, start, early));
            }
            return Ok(b);
        }
        // By phone: the first one still in or before its window, else the
        // last one (late), never one that opens later than `early`.
        let mut open: Vec<(DateTime<Utc>, apb::Booking)> = found
            .into_iter()
            .filter_map(|b| start_of(&b).map(|s| (s, b)))
            .collect();
        open.sort_by_key(|(s, _)| *s);
        if let Some((s, b)) = open.iter().find(|(s, _)| now <= *s + grace) {
            if now < *s - early {
                return Err(too_early(b, *s, early));
            }
            return Ok(b.clone());
        }
        open.pop()
            .map(|(_, b)| b)
            .ok_or_else(|| not_found("booking", &what))
    }
}

fn too_early(b: &apb::Booking, start: DateTime<Utc>, early: Duration) -> Error {
    failed_precondition(
        "TOO_EARLY",
        &format!("bookings/{}", b.id),
        format!(
            "check-in opens {} minutes before the appointment ({})",
            early.num_minutes(),
            french::short_day_hour(start)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn hours_are_paris_time() {
        // 9:00 UTC in January is 10h00 in Paris; in July, 11h00.
        let winter = Utc.with_ymd_and_hms(2027, 1, 12, 9, 0, 0).unwrap();
        assert_eq!(french::hour(winter), "10h00");
        assert_eq!(french::short_day_hour(winter), "mardi 12/01 à 10h00");
        let summer = Utc.with_ymd_and_hms(2027, 7, 12, 9, 0, 0).unwrap();
        assert_eq!(french::hour(summer), "11h00");
    }
}
