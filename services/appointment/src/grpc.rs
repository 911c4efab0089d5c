//! The gRPC edge: proto messages in, checked domain values to the engine,
//! bookings out. Authorization by role lives here.

use chrono::{DateTime, Duration, Utc};
use guichet_platform::auth::{self, Role};
use guichet_platform::contact::{Email, Phone};
use guichet_platform::grpc::{invalid_argument, not_found, page_size};
use guichet_proto::appointment::v1 as pb;
use guichet_proto::convert::{datetime, timestamp};
use sea_orm::Set;
use tonic::{Request, Response, Status};

use crate::core::{
    BOOKED, BookingStatus, CANCELLED_BY_CITIZEN, CANCELLED_BY_TOWN, CHECKED_IN, Caller, Core,
    ListFilter, NO_SHOW, NewBooking, SEEN, parse_application_id,
};
use crate::db::entities::{booking, waiter};

const DESK: &[Role] = &[Role::Agent, Role::Supervisor, Role::Admin];

#[derive(Clone)]
pub struct AppointmentApi {
    pub core: Core,
    /// Derives the desks' agenda feed keys.
    pub auth: std::sync::Arc<guichet_platform::auth::Authenticator>,
}

/// The derivation purpose of a desk's agenda feed key.
pub const AGENDA_FEED: &str = "guichet agenda feed";

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    let p = auth::caller(req)?;
    Ok(Caller {
        agent: DESK.iter().any(|r| p.has(*r)),
        subject: p.subject,
    })
}

fn status_pb(s: BookingStatus) -> pb::BookingStatus {
    match s {
        BOOKED => pb::BookingStatus::Booked,
        CHECKED_IN => pb::BookingStatus::CheckedIn,
        SEEN => pb::BookingStatus::Seen,
        NO_SHOW => pb::BookingStatus::NoShow,
        CANCELLED_BY_CITIZEN => pb::BookingStatus::CancelledByCitizen,
        CANCELLED_BY_TOWN => pb::BookingStatus::CancelledByTown,
    }
}

fn status_slug(s: pb::BookingStatus) -> Option<BookingStatus> {
    Some(match s {
        pb::BookingStatus::Booked => BOOKED,
        pb::BookingStatus::CheckedIn => CHECKED_IN,
        pb::BookingStatus::Seen => SEEN,
        pb::BookingStatus::NoShow => NO_SHOW,
        pb::BookingStatus::CancelledByCitizen => CANCELLED_BY_CITIZEN,
        pb::BookingStatus::CancelledByTown => CANCELLED_BY_TOWN,
        pb::BookingStatus::Unspecified => return None,
    })
}

fn booking_pb(b: booking::Model, apps: Vec<String>, with_token: bool) -> pb::Booking {
    pb::Booking {
        slot: Some(pb::Slot {
            site_id: b.site_id,
            desk_id: b.desk_id,
            appointment_type: b.type_id,
            start_time: Some(timestamp(b.start_at)),
            end_time: Some(timestamp(b.end_at)),
        }),
        status: status_pb(b.status) as i32,
        id: b.id,
        reference: b.reference,
        citizen_id: b.citizen_id,
        dossier_id: b.dossier_id,
        people: b.people.max(0) as u32,
        application_ids: apps,
        cancel_token: if with_token {
            b.cancel_token
        } else {
            String::new()
        },
        create_time: Some(timestamp(b.created_at)),
        update_time: Some(timestamp(b.updated_at)),
        version: b.version.max(0) as u32,
    }
}

fn time(ts: &Option<prost_types::Timestamp>, field: &str) -> Result<Option<DateTime<Utc>>, Status> {
    match ts {
        None => Ok(None),
        Some(t) => datetime(t)
            .map(Some)
            .ok_or_else(|| invalid_argument(field, "is out of range")),
    }
}

fn key(raw: &str, field: &str) -> Result<Option<String>, Status> {
    let k = raw.trim();
    if k.len() > 128 {
        return Err(invalid_argument(field, "must be at most 128 characters"));
    }
    Ok((!k.is_empty()).then(|| k.to_owned()))
}

fn id_field(raw: &str, field: &str) -> Result<String, Status> {
    let s = raw.trim();
    if s.is_empty() || s.len() > 100 {
        return Err(invalid_argument(
            field,
            "is required (at most 100 characters)",
        ));
    }
    Ok(s.to_owned())
}

fn contact(c: &Option<pb::Contact>) -> Result<(Option<String>, Option<String>), Status> {
    let Some(c) = c else { return Ok((None, None)) };
    let phone = if c.phone.trim().is_empty() {
        None
    } else {
        Some(
            Phone::parse(&c.phone)
                .map_err(|e| invalid_argument("contact.phone", e))?
                .as_str()
                .to_owned(),
        )
    };
    let email = if c.email.trim().is_empty() {
        None
    } else {
        Some(
            Email::parse(&c.email)
                .map_err(|e| invalid_argument("contact.email", e))?
                .as_str()
                .to_owned(),
        )
    };
    Ok((phone, email))
}

impl AppointmentApi {
    /// A desk agent moves a booking to `status` (seen, no-show).
    async fn desk_transition(
        &self,
        p: guichet_platform::auth::Principal,
        id: &str,
        status: BookingStatus,
    ) -> Result<Response<pb::Booking>, Status> {
        let c = Caller {
            subject: p.subject,
            agent: true,
        };
        let b = self
            .core
            .transition(&c, &id_field(id, "id")?, status)
            .await?;
        self.out(b, false).await
    }

    async fn out(
        &self,
        b: booking::Model,
        with_token: bool,
    ) -> Result<Response<pb::Booking>, Status> {
        let apps = self.core_apps(&b.id).await?;
        Ok(Response::new(booking_pb(b, apps, with_token)))
    }

    async fn core_apps(&self, id: &str) -> Result<Vec<String>, Status> {
        use sea_orm::sea_query::{Alias, Expr, Query};
        use sea_orm::{ConnectionTrait, ExprTrait, TryGetable};
        let q = Query::select()
            .column(Alias::new("application_id"))
            .from(Alias::new("booking_applications"))
            .and_where(Expr::col(Alias::new("booking_id")).eq(id))
            .to_owned();
        let rows = self
            .core
            .db
            .query_all(&q)
            .await
            .map_err(guichet_platform::grpc::internal_err("read applications"))?;
        Ok(rows
            .iter()
            .filter_map(|r| String::try_get(r, "", "application_id").ok())
            .collect())
    }

    fn site_pb(&self, s: &crate::config::SiteConfig) -> pb::Site {
        pb::Site {
            id: s.id.clone(),
            name: s.name.clone(),
            address: s.address.clone(),
            zip_code: s.zip_code.clone(),
            city: s.city.clone(),
            latitude: s.latitude,
            longitude: s.longitude,
            website: s.website.clone(),
            desks: self
                .core
                .model
                .desks
                .iter()
                .filter(|d| d.site == s.id)
                .map(|d| pb::Desk {
                    id: d.id.clone(),
                    site_id: d.site.clone(),
                    name: d.name.clone(),
                    resources: d.resources.iter().cloned().collect(),
                })
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl pb::appointment_service_server::AppointmentService for AppointmentApi {
    async fn get_site(
        &self,
        request: Request<pb::GetSiteRequest>,
    ) -> Result<Response<pb::Site>, Status> {
        let id = request.into_inner().id;
        let s = self
            .core
            .model
            .site(&id)
            .ok_or_else(|| not_found("site", &id))?;
        Ok(Response::new(self.site_pb(s)))
    }

    async fn list_sites(
        &self,
        _request: Request<pb::ListSitesRequest>,
    ) -> Result<Response<pb::ListSitesResponse>, Status> {
        Ok(Response::new(pb::ListSitesResponse {
            sites: self
                .core
                .model
                .sites
                .iter()
                .map(|s| self.site_pb(s))
                .collect(),
        }))
    }

    async fn list_appointment_types(
        &self,
        request: Request<pb::ListAppointmentTypesRequest>,
    ) -> Result<Response<pb::ListAppointmentTypesResponse>, Status> {
        let public_only = request.into_inner().public_only;
        Ok(Response::new(pb::ListAppointmentTypesResponse {
            types: self
                .core
                .model
                .types
                .iter()
                .filter(|t| !public_only || t.public)
                .map(|t| pb::AppointmentType {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    duration_minutes: t.duration_minutes,
                    per_person_minutes: t.per_person_minutes,
                    resources: t.resources.clone(),
                    public: t.public,
                    min_delay_hours: t.min_delay_hours,
                    max_delay_days: t.max_delay_days,
                    cancellable_until_hours: t.cancellable_until_hours,
                    max_people: t.max_people,
                    ants_reason: t.ants_reason.clone(),
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn search_availability(
        &self,
        request: Request<pb::SearchAvailabilityRequest>,
    ) -> Result<Response<pb::SearchAvailabilityResponse>, Status> {
        let c = caller(&request)?;
        let r = request.into_inner();
        let now = self.core.now();
        let from = time(&r.start_time, "start_time")?.unwrap_or(now);
        let to = time(&r.end_time, "end_time")?.unwrap_or(from + Duration::days(31));
        if to <= from || to - from > Duration::days(366) {
            return Err(invalid_argument(
                "end_time",
                "must be after start_time, within a year",
            ));
        }
        let t = self.core.kind(&r.appointment_type, "appointment_type")?;
        if r.people > t.max_people {
            return Err(invalid_argument(
                "people",
                format!("must be at most {}", t.max_people),
            ));
        }
        for (i, s) in r.site_ids.iter().enumerate() {
            if self.core.model.site(s).is_none() {
                return Err(invalid_argument(
                    &format!("site_ids[{i}]"),
                    format!("`{s}` is not a site"),
                ));
            }
        }
        let limit = page_size(r.page_size, 200, 2000)? as usize;
        let slots = self
            .core
            .availability(
                &r.appointment_type,
                &r.site_ids,
                r.people.max(1),
                from,
                to,
                limit,
                r.distinct_times,
                c.agent,
            )
            .await?;
        Ok(Response::new(pb::SearchAvailabilityResponse {
            slots: slots
                .into_iter()
                .map(|s| pb::Slot {
                    site_id: s.site,
                    desk_id: s.desk,
                    appointment_type: r.appointment_type.clone(),
                    start_time: Some(timestamp(s.start)),
                    end_time: Some(timestamp(s.end)),
                })
                .collect(),
        }))
    }

    async fn get_booking(
        &self,
        request: Request<pb::GetBookingRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let r = request.into_inner();
        let id = id_field(&r.id, "id")?;
        let token = r.cancel_token.trim();
        let b = if token.is_empty() {
            self.core.get(&id).await?
        } else {
            self.core.by_link(&id, token).await?
        };
        self.out(b, false).await
    }

    async fn revoke_booking_link(
        &self,
        request: Request<pb::RevokeBookingLinkRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let c = caller(&request)?;
        let r = request.into_inner();
        let b = self
            .core
            .revoke_link(
                &c,
                &id_field(&r.id, "id")?,
                r.cancel_token.trim(),
                key(&r.request_id, "request_id")?,
            )
            .await?;
        self.out(b, false).await
    }

    async fn list_bookings(
        &self,
        request: Request<pb::ListBookingsRequest>,
    ) -> Result<Response<pb::ListBookingsResponse>, Status> {
        let r = request.into_inner();
        let size = page_size(r.page_size, 50, 500)?;
        let f = r.filter.unwrap_or_default();
        let mut statuses = Vec::new();
        for (i, s) in f.statuses.iter().enumerate() {
            let st = pb::BookingStatus::try_from(*s)
                .ok()
                .and_then(status_slug)
                .ok_or_else(|| {
                    invalid_argument(&format!("filter.statuses[{i}]"), "is not a booking status")
                })?;
            statuses.push(st);
        }
        let filter = ListFilter {
            site: f.site_id,
            desk: f.desk_id,
            citizen: f.citizen_id,
            dossier: f.dossier_id,
            statuses,
            start: time(&f.start_time, "filter.start_time")?,
            end: time(&f.end_time, "filter.end_time")?,
            reference: f.reference.trim().to_uppercase(),
            phone: if f.phone.trim().is_empty() {
                String::new()
            } else {
                Phone::parse(&f.phone)
                    .map_err(|e| invalid_argument("filter.phone", e))?
                    .as_str()
                    .to_owned()
            },
        };
        let after = if r.page_token.is_empty() {
            None
        } else {
            let (t, id) = r.page_token.split_once('|').ok_or_else(|| {
                invalid_argument("page_token", "is not a page token of this list")
            })?;
            let t = DateTime::parse_from_rfc3339(t)
                .map_err(|_| invalid_argument("page_token", "is not a page token of this list"))?
                .with_timezone(&Utc);
            Some((t, id.to_owned()))
        };
        let rows = self.core.list(&filter, size + 1, after).await?;
        let more = rows.len() as u64 > size;
        let rows: Vec<_> = rows.into_iter().take(size as usize).collect();
        let next_page_token = match (more, rows.last()) {
            (true, Some(b)) => format!("{}|{}", b.start_at.to_rfc3339(), b.id),
            _ => String::new(),
        };
        let mut bookings = Vec::with_capacity(rows.len());
        for b in rows {
            let apps = self.core_apps(&b.id).await?;
            bookings.push(booking_pb(b, apps, false));
        }
        Ok(Response::new(pb::ListBookingsResponse {
            bookings,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(booking_id = tracing::field::Empty))]
    async fn book_appointment(
        &self,
        request: Request<pb::BookAppointmentRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let c = caller(&request)?;
        let r = request.into_inner();
        let start = time(&r.start_time, "start_time")?
            .ok_or_else(|| invalid_argument("start_time", "is required"))?;
        let (phone, email) = contact(&r.contact)?;
        let mut apps = Vec::new();
        for (i, raw) in r.application_ids.iter().enumerate() {
            let app = parse_application_id(raw).ok_or_else(|| {
                invalid_argument(
                    &format!("application_ids[{i}]"),
                    "un numéro de pré-demande compte 10 lettres ou chiffres",
                )
            })?;
            if !apps.contains(&app) {
                apps.push(app);
            }
        }
        let t = self.core.kind(&r.appointment_type, "appointment_type")?;
        if !apps.is_empty() && t.ants_reason.is_empty() {
            return Err(invalid_argument(
                "application_ids",
                "only for passport and identity card appointments",
            ));
        }
        let citizen_id = r.citizen_id.trim().to_owned();
        if citizen_id.len() > 100 {
            return Err(invalid_argument(
                "citizen_id",
                "must be at most 100 characters",
            ));
        }
        if !c.agent && citizen_id.is_empty() {
            return Err(invalid_argument(
                "citizen_id",
                "is required for an online booking",
            ));
        }
        let nb = NewBooking {
            type_id: r.appointment_type.clone(),
            site_id: id_field(&r.site_id, "site_id")?,
            desk_id: key(&r.desk_id, "desk_id")?,
            start,
            people: r.people.max(1),
            citizen_id,
            dossier_id: r.dossier_id.trim().to_owned(),
            phone,
            email,
            application_ids: apps,
            request_id: key(&r.request_id, "request_id")?,
        };
        let b = self.core.book(&c, nb).await?;
        tracing::Span::current().record("booking_id", b.id.as_str());
        self.out(b, true).await
    }

    async fn reschedule_booking(
        &self,
        request: Request<pb::RescheduleBookingRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let c = caller(&request)?;
        let r = request.into_inner();
        let start = time(&r.start_time, "start_time")?
            .ok_or_else(|| invalid_argument("start_time", "is required"))?;
        let b = self
            .core
            .reschedule(
                &c,
                &id_field(&r.id, "id")?,
                start,
                key(&r.desk_id, "desk_id")?,
                r.cancel_token.trim(),
                key(&r.request_id, "request_id")?,
            )
            .await?;
        self.out(b, false).await
    }

    async fn cancel_booking(
        &self,
        request: Request<pb::CancelBookingRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let c = caller(&request)?;
        let r = request.into_inner();
        if r.reason.chars().count() > 1000 {
            return Err(invalid_argument(
                "reason",
                "must be at most 1000 characters",
            ));
        }
        let b = self
            .core
            .cancel(
                &c,
                &id_field(&r.id, "id")?,
                r.cancel_token.trim(),
                key(&r.request_id, "request_id")?,
            )
            .await?;
        self.out(b, false).await
    }

    async fn check_in_booking(
        &self,
        request: Request<pb::CheckInBookingRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        // The counter role checks in with its service token.
        let c = caller(&request)?;
        let b = self
            .core
            .transition(&c, &id_field(&request.into_inner().id, "id")?, CHECKED_IN)
            .await?;
        self.out(b, false).await
    }

    async fn mark_booking_seen(
        &self,
        request: Request<pb::MarkBookingSeenRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let p = auth::caller(&request)?;
        self.desk_transition(p, &request.into_inner().id, SEEN)
            .await
    }

    async fn mark_no_show(
        &self,
        request: Request<pb::MarkNoShowRequest>,
    ) -> Result<Response<pb::Booking>, Status> {
        let p = auth::caller(&request)?;
        self.desk_transition(p, &request.into_inner().id, NO_SHOW)
            .await
    }

    async fn join_waiting_list(
        &self,
        request: Request<pb::JoinWaitingListRequest>,
    ) -> Result<Response<pb::WaitingListEntry>, Status> {
        let r = request.into_inner();
        let t = self.core.kind(&r.appointment_type, "appointment_type")?;
        let people = r.people.max(1);
        if people > t.max_people {
            return Err(invalid_argument(
                "people",
                format!("must be at most {}", t.max_people),
            ));
        }
        for (i, s) in r.site_ids.iter().enumerate() {
            if self.core.model.site(s).is_none() {
                return Err(invalid_argument(
                    &format!("site_ids[{i}]"),
                    format!("`{s}` is not a site"),
                ));
            }
        }
        let (phone, email) = contact(&r.contact)?;
        if phone.is_none() && email.is_none() {
            return Err(invalid_argument(
                "contact",
                "a phone or an email is required to be told",
            ));
        }
        let before = time(&r.before_time, "before_time")?
            .ok_or_else(|| invalid_argument("before_time", "is required"))?;
        let now = self.core.now();
        let m = self
            .core
            .join_waitlist(
                waiter::ActiveModel {
                    id: Set(uuid::Uuid::now_v7().to_string()),
                    request_id: Set(key(&r.request_id, "request_id")?),
                    type_id: Set(t.id.clone()),
                    site_ids: Set(r.site_ids.join(",")),
                    people: Set(people as i32),
                    citizen_id: Set(r.citizen_id.trim().to_owned()),
                    phone: Set(phone),
                    email: Set(email),
                    before_at: Set(before),
                    messages_sent: Set(0),
                    last_message_day: Set(String::new()),
                    active: Set(true),
                    created_at: Set(now),
                },
                key(&r.request_id, "request_id")?,
            )
            .await?;
        Ok(Response::new(waiter_pb(m)))
    }

    async fn leave_waiting_list(
        &self,
        request: Request<pb::LeaveWaitingListRequest>,
    ) -> Result<Response<pb::WaitingListEntry>, Status> {
        let m = self
            .core
            .leave_waitlist(&id_field(&request.into_inner().id, "id")?)
            .await?;
        Ok(Response::new(waiter_pb(m)))
    }

    async fn create_schedule_exception(
        &self,
        request: Request<pb::CreateScheduleExceptionRequest>,
    ) -> Result<Response<pb::ScheduleException>, Status> {
        let p = auth::caller(&request)?;
        let r = request.into_inner();
        if self.core.model.desk(&r.desk_id).is_none() {
            return Err(invalid_argument(
                "desk_id",
                format!("`{}` is not a desk", r.desk_id),
            ));
        }
        let kind = match pb::ExceptionKind::try_from(r.kind) {
            Ok(pb::ExceptionKind::Closure) => "closure",
            Ok(pb::ExceptionKind::Absence) => "absence",
            Ok(pb::ExceptionKind::ExtraOpening) => "extra_opening",
            _ => {
                return Err(invalid_argument(
                    "kind",
                    "must be closure, absence or extra opening",
                ));
            }
        };
        let start = time(&r.start_time, "start_time")?
            .ok_or_else(|| invalid_argument("start_time", "is required"))?;
        let end = time(&r.end_time, "end_time")?
            .ok_or_else(|| invalid_argument("end_time", "is required"))?;
        if end <= start || end - start > Duration::days(366) {
            return Err(invalid_argument(
                "end_time",
                "must be after start_time, within a year",
            ));
        }
        let reason = r.reason.trim();
        if reason.chars().count() > 500 {
            return Err(invalid_argument("reason", "must be at most 500 characters"));
        }
        let c = Caller {
            subject: p.subject,
            agent: true,
        };
        let (m, affected) = self
            .core
            .create_exception(&c, &r.desk_id, kind, start, end, reason)
            .await?;
        Ok(Response::new(exception_pb(m, affected)))
    }

    async fn list_schedule_exceptions(
        &self,
        request: Request<pb::ListScheduleExceptionsRequest>,
    ) -> Result<Response<pb::ListScheduleExceptionsResponse>, Status> {
        let r = request.into_inner();
        let now = self.core.now();
        let from = time(&r.start_time, "start_time")?.unwrap_or(now - Duration::days(1));
        let to = time(&r.end_time, "end_time")?.unwrap_or(now + Duration::days(366));
        let desks: Vec<&str> = if r.desk_id.is_empty() {
            vec![]
        } else {
            vec![r.desk_id.as_str()]
        };
        let mut exceptions = Vec::new();
        for m in self.core.exceptions(&desks, from, to).await? {
            let affected = self.core.affected(&m).await?;
            exceptions.push(exception_pb(m, affected));
        }
        Ok(Response::new(pb::ListScheduleExceptionsResponse {
            exceptions,
        }))
    }

    async fn delete_schedule_exception(
        &self,
        request: Request<pb::DeleteScheduleExceptionRequest>,
    ) -> Result<Response<pb::ScheduleException>, Status> {
        let m = self
            .core
            .delete_exception(&id_field(&request.into_inner().id, "id")?)
            .await?;
        Ok(Response::new(exception_pb(m, 0)))
    }

    async fn export_booking_ics(
        &self,
        request: Request<pb::ExportBookingIcsRequest>,
    ) -> Result<Response<pb::IcsDocument>, Status> {
        let b = self
            .core
            .get(&id_field(&request.into_inner().id, "id")?)
            .await?;
        Ok(Response::new(pb::IcsDocument {
            content: self.core.booking_ics(&b),
            feed_path: String::new(),
        }))
    }

    async fn export_desk_agenda(
        &self,
        request: Request<pb::ExportDeskAgendaRequest>,
    ) -> Result<Response<pb::IcsDocument>, Status> {
        let r = request.into_inner();
        let desk = self
            .core
            .model
            .desk(&r.desk_id)
            .ok_or_else(|| not_found("desk", &r.desk_id))?
            .clone();
        let now = self.core.now();
        let from = time(&r.start_time, "start_time")?.unwrap_or(now - Duration::days(7));
        let to = time(&r.end_time, "end_time")?.unwrap_or(now + Duration::days(90));
        let filter = ListFilter {
            desk: desk.id.clone(),
            statuses: vec![BOOKED, CHECKED_IN, SEEN, NO_SHOW],
            start: Some(from),
            end: Some(to),
            ..Default::default()
        };
        let rows = self.core.list(&filter, 5000, None).await?;
        let key = self.auth.derived_secret(AGENDA_FEED, &desk.id);
        Ok(Response::new(pb::IcsDocument {
            content: self.core.agenda_ics(&desk.name, &rows),
            feed_path: format!("/agenda/{}.ics?key={key}", desk.id),
        }))
    }
}

fn waiter_pb(m: waiter::Model) -> pb::WaitingListEntry {
    pb::WaitingListEntry {
        site_ids: m
            .site_ids
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        id: m.id,
        appointment_type: m.type_id,
        people: m.people.max(0) as u32,
        citizen_id: m.citizen_id,
        before_time: Some(timestamp(m.before_at)),
        messages_sent: m.messages_sent.max(0) as u32,
        active: m.active,
    }
}

fn exception_pb(m: crate::db::entities::exception::Model, affected: u64) -> pb::ScheduleException {
    pb::ScheduleException {
        kind: match m.kind.as_str() {
            "closure" => pb::ExceptionKind::Closure,
            "absence" => pb::ExceptionKind::Absence,
            "extra_opening" => pb::ExceptionKind::ExtraOpening,
            _ => pb::ExceptionKind::Unspecified,
        } as i32,
        id: m.id,
        desk_id: m.desk_id,
        start_time: Some(timestamp(m.start_at)),
        end_time: Some(timestamp(m.end_at)),
        reason: m.reason,
        affected_bookings: u32::try_from(affected).unwrap_or(u32::MAX),
        create_by: m.created_by,
    }
}
