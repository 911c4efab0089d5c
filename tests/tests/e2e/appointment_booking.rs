//! Appointments over gRPC: the booking race (no slot ever given twice, on
//! PostgreSQL and SQLite), booking delays, idempotent retries, reschedule
//! and cancel rules, desk statuses and the no-show policy, dossier links,
//! events, and iCalendar exports parsed back.
//!
//! Most tests run the role in this process on a [`ManualClock`], so time
//! moves without sleeping; the race runs it through `guichet::start` like
//! `guichet serve appointment`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use guichet::Role;
use guichet_appointment::config::{DeskConfig, SiteConfig, TypeConfig};
use guichet_appointment::coordination::Coordination;
use guichet_appointment::core::Core;
use guichet_appointment::dossier::DossierLinker;
use guichet_platform::clock::ManualClock;
use guichet_proto::appointment::v1 as pb;
use guichet_proto::convert::timestamp;
use guichet_proto::notification::v1::NotificationRequest;
use guichet_testkit::{
    Authed, Backend, TestEnv, TokenRole, appointment_client, eventually, header,
};
use pb::appointment_service_client::AppointmentServiceClient;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::Code;

pub type Client = AppointmentServiceClient<Authed>;

pub fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, mi, 0).single().unwrap()
}

/// Monday 2027-01-04, 08:00 in Paris.
pub fn monday_morning() -> DateTime<Utc> {
    utc(2027, 1, 4, 7, 0)
}

fn site(id: &str, name: &str) -> SiteConfig {
    SiteConfig {
        id: id.into(),
        name: name.into(),
        address: "1 place de la Mairie".into(),
        zip_code: "99000".into(),
        city: "Villeneuve".into(),
        latitude: 48.85,
        longitude: 2.35,
        website: "https://www.villeneuve.example.fr".into(),
    }
}

fn desk(id: &str, site: &str, resources: &[&str], opening: &[&str]) -> DeskConfig {
    DeskConfig {
        id: id.into(),
        site: site.into(),
        name: format!("Guichet {id}"),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        opening: opening.iter().map(|s| s.to_string()).collect(),
        closures: vec![],
        extra_openings: vec![],
        absences: vec![],
    }
}

pub fn passport() -> TypeConfig {
    TypeConfig {
        id: "passeport-depot".into(),
        name: "Dépôt de passeport".into(),
        duration_minutes: 15,
        per_person_minutes: 15,
        resources: vec!["DR".into()],
        public: true,
        min_delay_hours: 2,
        max_delay_days: 60,
        cancellable_until_hours: 24,
        max_people: 5,
        ants_reason: "PASSPORT".into(),
    }
}

/// Two sites, three biometric desks open on weekdays, a public passport
/// type and an agent-only marriage interview.
pub fn town(cfg: &mut guichet::GuichetConfig) {
    let week = [
        "mon 09:00-12:00",
        "mon 13:30-17:00",
        "tue 09:00-12:00",
        "wed 09:00-12:00",
        "thu 09:00-12:00",
        "fri 09:00-12:00",
    ];
    let a = &mut cfg.appointment;
    a.sites = vec![
        site("mairie", "Hôtel de ville"),
        site("annexe", "Mairie annexe"),
    ];
    a.desks = vec![
        desk("dr1", "mairie", &["DR"], &week),
        desk("dr2", "mairie", &["DR"], &week),
        desk("dr3", "annexe", &["DR"], &week),
    ];
    let mut mariage = passport();
    mariage.id = "mariage-audition".into();
    mariage.name = "Audition préalable au mariage".into();
    mariage.resources = vec![];
    mariage.public = false;
    mariage.ants_reason = String::new();
    mariage.duration_minutes = 45;
    mariage.per_person_minutes = 0;
    a.types = vec![passport(), mariage];
    a.notify_channels = vec!["sms".into()];
    a.job_interval_secs = 3600;
}

/// Records LinkDossier calls; fails the first `fail_first` of them.
#[derive(Default)]
pub struct Linker {
    pub calls: Mutex<Vec<(String, String, String)>>,
    pub fail_first: Mutex<u32>,
}

#[tonic::async_trait]
impl DossierLinker for Linker {
    async fn link(&self, dossier: &str, booking: &str, status: &str) -> Result<(), tonic::Status> {
        {
            let mut f = self.fail_first.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(tonic::Status::unavailable("dossier down"));
            }
        }
        self.calls
            .lock()
            .unwrap()
            .push((dossier.into(), booking.into(), status.into()));
        Ok(())
    }
}

/// The role running in this process on a manual clock.
pub struct Fixture {
    pub env: TestEnv,
    pub core: Core,
    pub clock: ManualClock,
    pub grpc: SocketAddr,
    pub ants: Option<SocketAddr>,
    pub linker: Arc<Linker>,
    pub stop: CancellationToken,
}

impl Fixture {
    pub async fn new(
        backend: Backend,
        edit: impl FnOnce(&mut guichet::GuichetConfig),
        coordination: Option<Arc<dyn Coordination>>,
    ) -> Option<Fixture> {
        let env = TestEnv::new(backend).await?;
        let mut cfg = env.config();
        town(&mut cfg);
        edit(&mut cfg);
        let clock = ManualClock::new(monday_morning());
        let linker = Arc::new(Linker::default());
        let mut overrides = guichet_platform::role::Overrides::new();
        if let Some(coordination) = coordination {
            overrides.insert(coordination);
        }
        let dossier: Arc<dyn guichet_appointment::dossier::DossierLinker> = linker.clone();
        overrides.insert(dossier);
        let options = guichet::StartOptions {
            clock: Arc::new(clock.clone()),
            overrides,
        };
        let app = env
            .spawn_with_options(&[Role::Appointment], cfg, options)
            .await;
        let core = app.handle::<Core>().expect("appointment shares its core");
        let ants = app.listener(Role::Appointment, "http");
        let (grpc, stop) = (app.grpc_addr, app.shutdown_token());
        Some(Fixture {
            env,
            core,
            clock,
            grpc,
            ants,
            linker,
            stop,
        })
    }

    pub async fn agent(&self) -> Client {
        appointment_client(self.grpc, &self.env.token("agent-1", &[TokenRole::Agent])).await
    }

    /// The citizen portal (public booking rules).
    pub async fn portal(&self) -> Client {
        appointment_client(
            self.grpc,
            &self.env.token("portail", &[TokenRole::CitizenPages]),
        )
        .await
    }

    pub async fn finish(self) {
        self.stop.cancel();
        self.env.cleanup().await;
    }
}

pub fn book_req(start: DateTime<Utc>, citizen: &str, rid: &str) -> pb::BookAppointmentRequest {
    pb::BookAppointmentRequest {
        appointment_type: "passeport-depot".into(),
        site_id: "mairie".into(),
        start_time: Some(timestamp(start)),
        people: 1,
        citizen_id: citizen.into(),
        contact: Some(pb::Contact {
            phone: "06 12 34 56 78".into(),
            email: String::new(),
        }),
        request_id: rid.into(),
        ..Default::default()
    }
}

/// Every NotificationRequest on this test's NOTIFY stream (at least `n`).
pub async fn notifications(env: &TestEnv, n: usize) -> Vec<NotificationRequest> {
    let js = async_nats::jetstream::new(env.nats().await);
    let name = env.stream("NOTIFY");
    eventually(
        &format!("{n} notifications"),
        StdDuration::from_secs(20),
        || {
            let js = js.clone();
            let name = name.clone();
            async move {
                let mut stream = js.get_stream(name).await.ok()?;
                let info = stream.info().await.ok()?;
                if (info.state.messages as usize) < n {
                    return None;
                }
                let mut out = Vec::new();
                for seq in info.state.first_sequence..=info.state.last_sequence {
                    if let Ok(m) = stream.get_raw_message(seq).await {
                        out.push(NotificationRequest::decode(m.payload).ok()?);
                    }
                }
                Some(out)
            }
        },
    )
    .await
}

async fn race(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let mut cfg = env.config();
    town(&mut cfg);
    // One desk open for exactly 50 quarter-hours on a day ten days ahead.
    let day = (guichet_platform::calendar::to_paris(Utc::now()) + Duration::days(10)).date();
    let mut d = desk("race", "mairie", &["DR"], &[]);
    d.extra_openings = vec![format!("{} 08:00-20:30", day.format("%Y-%m-%d"))];
    cfg.appointment.desks = vec![d];
    let app = env.spawn_with(&[Role::Appointment], cfg).await;
    let token = env.token("agent-1", &[TokenRole::Agent]);
    let client = appointment_client(app.grpc_addr, &token).await;

    let free = client
        .clone()
        .search_availability(pb::SearchAvailabilityRequest {
            appointment_type: "passeport-depot".into(),
            people: 1,
            start_time: Some(timestamp(Utc::now())),
            end_time: Some(timestamp(Utc::now() + Duration::days(20))),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .slots;
    assert_eq!(free.len(), 50, "50 quarter-hours open");
    let starts: Vec<DateTime<Utc>> = free
        .iter()
        .map(|s| guichet_proto::convert::datetime(s.start_time.as_ref().unwrap()).unwrap())
        .collect();

    // 500 clients, released together, ten per slot.
    let barrier = Arc::new(tokio::sync::Barrier::new(500));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500usize {
        let mut c = client.clone();
        let start = starts[i % 50];
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            c.book_appointment(book_req(
                start,
                &format!("citoyen-{i}"),
                &format!("race-{i}"),
            ))
            .await
        });
    }
    let (mut won, mut lost) = (Vec::new(), 0);
    while let Some(res) = tasks.join_next().await {
        match res.unwrap() {
            Ok(b) => won.push(b.into_inner()),
            Err(s) => {
                assert_eq!(
                    s.code(),
                    Code::Aborted,
                    "a loser is told the slot is gone: {s:?}"
                );
                assert!(s.message().contains("plus disponible"));
                lost += 1;
            }
        }
    }
    assert_eq!(won.len(), 50, "exactly one booking per slot");
    assert_eq!(lost, 450);
    let distinct: BTreeSet<_> = won
        .iter()
        .map(|b| b.slot.as_ref().unwrap().start_time.unwrap().seconds)
        .collect();
    assert_eq!(distinct.len(), 50);

    // The database agrees, and nothing is left to book.
    let mut listed = 0;
    let mut token_page = String::new();
    loop {
        let page = client
            .clone()
            .list_bookings(pb::ListBookingsRequest {
                filter: Some(pb::BookingFilter {
                    desk_id: "race".into(),
                    ..Default::default()
                }),
                page_size: 20,
                page_token: token_page.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        listed += page.bookings.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token_page = page.next_page_token;
    }
    assert_eq!(listed, 50);
    let left = client
        .clone()
        .search_availability(pb::SearchAvailabilityRequest {
            appointment_type: "passeport-depot".into(),
            start_time: Some(timestamp(Utc::now())),
            end_time: Some(timestamp(Utc::now() + Duration::days(20))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .slots;
    assert!(left.is_empty());
    // Every booking is announced, once.
    let headers = env.stream_headers("EVENTS", 50).await;
    let booked = headers
        .iter()
        .filter(|h| header(h, "ce-type") == "guichet.appointment.v1.appointment_booked")
        .count();
    assert_eq!(booked, 50);
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appointment_race_of_500_clients_for_50_slots_books_each_slot_once_on_sqlite() {
    race(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appointment_race_of_500_clients_for_50_slots_books_each_slot_once_on_postgres() {
    race(Backend::Postgres).await;
}

async fn delays_and_types(backend: Backend) {
    let Some(f) = Fixture::new(backend, |_| {}, None).await else {
        return;
    };
    let mut portal = f.portal().await;
    let mut agent = f.agent().await;
    // Now is 08:00; public booking needs 2 hours' notice and at most 60 days.
    let err = portal
        .book_appointment(book_req(utc(2027, 1, 4, 8, 30), "c1", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("à l'avance"));
    let err = portal
        .book_appointment(book_req(utc(2027, 3, 8, 8, 30), "c1", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let ok = portal
        .book_appointment(book_req(utc(2027, 1, 4, 10, 0), "c1", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status(), pb::BookingStatus::Booked);
    assert_eq!(ok.cancel_token.len(), 32);
    // An agent books within the delay.
    agent
        .book_appointment(book_req(utc(2027, 1, 4, 8, 30), "c2", ""))
        .await
        .unwrap();
    // A slot that is not an opening (lunch break) is refused.
    let err = agent
        .book_appointment(book_req(utc(2027, 1, 4, 11, 30), "c2", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Availability honours the delay for the portal, not for agents.
    let search = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.search_availability(pb::SearchAvailabilityRequest {
                appointment_type: "passeport-depot".into(),
                site_ids: vec!["mairie".into()],
                people: 3,
                start_time: Some(timestamp(utc(2027, 1, 4, 0, 0))),
                end_time: Some(timestamp(utc(2027, 1, 5, 0, 0))),
                distinct_times: true,
                page_size: 100,
            })
            .await
            .unwrap()
            .into_inner()
            .slots
        }
    };
    let public = search(&mut portal).await;
    let desk = search(&mut agent).await;
    assert!(
        public
            .iter()
            .all(|s| s.start_time.unwrap().seconds >= utc(2027, 1, 4, 9, 0).timestamp())
    );
    assert!(desk.len() > public.len());
    // Three people take 45 minutes: none starts after 11:15 in the morning range.
    let last_morning = public
        .iter()
        .map(|s| s.start_time.unwrap().seconds)
        .filter(|s| *s < utc(2027, 1, 4, 12, 0).timestamp())
        .max()
        .unwrap();
    assert_eq!(last_morning, utc(2027, 1, 4, 10, 15).timestamp());
    // Agent-only types.
    let mut mariage = book_req(utc(2027, 1, 5, 9, 0), "c3", "");
    mariage.appointment_type = "mariage-audition".into();
    let err = portal.book_appointment(mariage.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    agent.book_appointment(mariage).await.unwrap();
    f.finish().await;
}

#[tokio::test]
async fn appointment_booking_delays_openings_and_agent_only_types_apply_on_sqlite() {
    delays_and_types(Backend::Sqlite).await;
}

#[tokio::test]
async fn appointment_booking_delays_openings_and_agent_only_types_apply_on_postgres() {
    delays_and_types(Backend::Postgres).await;
}

#[tokio::test]
async fn appointment_retries_with_the_same_key_change_nothing_twice() {
    let Some(f) = Fixture::new(Backend::Sqlite, |_| {}, None).await else {
        return;
    };
    let mut portal = f.portal().await;
    let start = utc(2027, 1, 5, 9, 0);
    let a = portal
        .book_appointment(book_req(start, "c1", "k-1"))
        .await
        .unwrap()
        .into_inner();
    let b = portal
        .book_appointment(book_req(start, "c1", "k-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.id, b.id);
    assert_eq!(a.reference, b.reference);
    // The same key for another slot still answers the first booking.
    let c = portal
        .book_appointment(book_req(utc(2027, 1, 5, 10, 0), "c1", "k-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.id, a.id);
    let cancel = pb::CancelBookingRequest {
        id: a.id.clone(),
        cancel_token: a.cancel_token.clone(),
        reason: String::new(),
        request_id: "k-2".into(),
    };
    let x = portal
        .cancel_booking(cancel.clone())
        .await
        .unwrap()
        .into_inner();
    let y = portal.cancel_booking(cancel).await.unwrap().into_inner();
    assert_eq!(x.version, y.version);
    assert_eq!(y.status(), pb::BookingStatus::CancelledByCitizen);
    let headers = f.env.stream_headers("EVENTS", 2).await;
    let types: Vec<String> = headers.iter().map(|h| header(h, "ce-type")).collect();
    assert_eq!(
        types,
        vec![
            "guichet.appointment.v1.appointment_booked",
            "guichet.appointment.v1.appointment_cancelled"
        ]
    );
    f.finish().await;
}

async fn reschedule_and_cancel(backend: Backend) {
    let Some(f) = Fixture::new(backend, |_| {}, None).await else {
        return;
    };
    let mut portal = f.portal().await;
    let mut agent = f.agent().await;
    let b = portal
        .book_appointment(book_req(utc(2027, 1, 6, 9, 0), "c1", ""))
        .await
        .unwrap()
        .into_inner();
    let other = portal
        .book_appointment(book_req(utc(2027, 1, 6, 9, 15), "c2", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.slot.as_ref().unwrap().desk_id, "dr1");
    // Both desks of the site hold 09:15 now.
    let third = portal
        .book_appointment(book_req(utc(2027, 1, 6, 9, 15), "c3", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(third.slot.as_ref().unwrap().desk_id, "dr2");
    let err = portal
        .book_appointment(book_req(utc(2027, 1, 6, 9, 15), "c4", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);

    // A wrong link secret is refused.
    let err = portal
        .cancel_booking(pb::CancelBookingRequest {
            id: b.id.clone(),
            cancel_token: "x".repeat(32),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Moving onto a slot held on the same desk: refused, nothing changes.
    let err = portal
        .reschedule_booking(pb::RescheduleBookingRequest {
            id: b.id.clone(),
            start_time: Some(timestamp(utc(2027, 1, 6, 9, 15))),
            desk_id: "dr1".into(),
            cancel_token: b.cancel_token.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    // Moving to a free slot frees the old one.
    let moved = portal
        .reschedule_booking(pb::RescheduleBookingRequest {
            id: b.id.clone(),
            start_time: Some(timestamp(utc(2027, 1, 7, 10, 0))),
            desk_id: String::new(),
            cancel_token: b.cancel_token.clone(),
            request_id: "move-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        moved.slot.as_ref().unwrap().start_time.unwrap().seconds,
        utc(2027, 1, 7, 10, 0).timestamp()
    );
    assert_eq!(moved.version, 2);
    let again = portal
        .book_appointment(book_req(utc(2027, 1, 6, 9, 0), "c5", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.slot.as_ref().unwrap().desk_id, "dr1");

    // Less than 24 hours before: the citizen can no longer cancel online.
    f.clock.set(utc(2027, 1, 6, 12, 0));
    let err = portal
        .cancel_booking(pb::CancelBookingRequest {
            id: b.id.clone(),
            cancel_token: b.cancel_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("24 heures"));
    // The town can.
    let c = agent
        .cancel_booking(pb::CancelBookingRequest {
            id: b.id.clone(),
            reason: "Fermeture exceptionnelle".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.status(), pb::BookingStatus::CancelledByTown);
    // A cancelled booking cannot move.
    let err = agent
        .reschedule_booking(pb::RescheduleBookingRequest {
            id: b.id.clone(),
            start_time: Some(timestamp(utc(2027, 1, 8, 10, 0))),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    f.finish().await;
}

#[tokio::test]
async fn appointment_reschedule_and_cancel_follow_the_rules_on_sqlite() {
    reschedule_and_cancel(Backend::Sqlite).await;
}

#[tokio::test]
async fn appointment_reschedule_and_cancel_follow_the_rules_on_postgres() {
    reschedule_and_cancel(Backend::Postgres).await;
}

#[tokio::test]
async fn appointment_statuses_at_the_desk_and_the_no_show_policy() {
    let Some(f) = Fixture::new(Backend::Sqlite, |_| {}, None).await else {
        return;
    };
    let mut portal = f.portal().await;
    let mut agent = f.agent().await;
    let first = portal
        .book_appointment(book_req(utc(2027, 1, 4, 10, 0), "c1", ""))
        .await
        .unwrap()
        .into_inner();
    let second = portal
        .book_appointment(book_req(utc(2027, 1, 4, 10, 30), "c1", ""))
        .await
        .unwrap()
        .into_inner();
    let seen = portal
        .book_appointment(book_req(utc(2027, 1, 4, 13, 0), "c2", ""))
        .await
        .unwrap()
        .into_inner();
    // No-show only after the start.
    let err = agent
        .mark_no_show(pb::MarkNoShowRequest {
            id: first.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // The portal cannot mark no-shows.
    f.clock.set(utc(2027, 1, 4, 12, 30));
    let err = portal
        .mark_no_show(pb::MarkNoShowRequest {
            id: first.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    for id in [&first.id, &second.id] {
        let b = agent
            .mark_no_show(pb::MarkNoShowRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(b.status(), pb::BookingStatus::NoShow);
    }
    let c = agent
        .check_in_booking(pb::CheckInBookingRequest {
            id: seen.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.status(), pb::BookingStatus::CheckedIn);
    let s = agent
        .mark_booking_seen(pb::MarkBookingSeenRequest {
            id: seen.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.status(), pb::BookingStatus::Seen);
    // A seen booking is not cancelled.
    let err = agent
        .cancel_booking(pb::CancelBookingRequest {
            id: seen.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Two no-shows: the citizen books through an agent now.
    let err = portal
        .book_appointment(book_req(utc(2027, 1, 8, 10, 0), "c1", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("agent"));
    agent
        .book_appointment(book_req(utc(2027, 1, 8, 10, 0), "c1", ""))
        .await
        .unwrap();
    f.finish().await;
}

#[tokio::test]
async fn appointment_changes_reach_the_dossier_even_when_it_was_down() {
    let Some(f) = Fixture::new(Backend::Sqlite, |_| {}, None).await else {
        return;
    };
    *f.linker.fail_first.lock().unwrap() = 1;
    let mut portal = f.portal().await;
    let mut req = book_req(utc(2027, 1, 5, 9, 0), "c1", "");
    req.dossier_id = "dossier-42".into();
    let b = portal.book_appointment(req).await.unwrap().into_inner();
    // First attempt fails (dossier down): retried later, not lost.
    f.core.run_due_jobs().await.unwrap();
    assert!(f.linker.calls.lock().unwrap().is_empty());
    f.clock.advance(Duration::seconds(5));
    f.core.run_due_jobs().await.unwrap();
    portal
        .cancel_booking(pb::CancelBookingRequest {
            id: b.id.clone(),
            cancel_token: b.cancel_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    f.core.run_due_jobs().await.unwrap();
    let calls = f.linker.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            ("dossier-42".to_owned(), b.id.clone(), "booked".to_owned()),
            (
                "dossier-42".to_owned(),
                b.id.clone(),
                "cancelled".to_owned()
            ),
        ]
    );
    f.finish().await;
}

#[tokio::test]
async fn appointment_ics_of_a_booking_and_a_desk_agenda_parse_back() {
    let Some(f) = Fixture::new(Backend::Sqlite, |_| {}, None).await else {
        return;
    };
    let mut portal = f.portal().await;
    let mut agent = f.agent().await;
    let a = portal
        .book_appointment(book_req(utc(2027, 1, 5, 9, 0), "c1", ""))
        .await
        .unwrap()
        .into_inner();
    let mut two = book_req(utc(2027, 1, 5, 10, 0), "c2", "");
    two.people = 2;
    two.desk_id = "dr1".into();
    portal.book_appointment(two).await.unwrap();
    let ics = portal
        .export_booking_ics(pb::ExportBookingIcsRequest { id: a.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .content;
    use icalendar::{Component, EventLike};
    let cal: icalendar::Calendar = ics.parse().expect("valid iCalendar");
    let events: Vec<_> = cal.components.iter().filter_map(|c| c.as_event()).collect();
    assert_eq!(events.len(), 1);
    let e = events[0];
    assert_eq!(e.get_uid(), Some(format!("{}@guichet", a.id).as_str()));
    assert!(e.get_summary().unwrap().contains("passeport"));
    assert!(e.get_location().unwrap().contains("Hôtel de ville"));
    match e.get_start() {
        Some(icalendar::DatePerhapsTime::DateTime(icalendar::CalendarDateTime::Utc(t))) => {
            assert_eq!(t, utc(2027, 1, 5, 9, 0))
        }
        other => panic!("unexpected DTSTART {other:?}"),
    }
    match e.get_end() {
        Some(icalendar::DatePerhapsTime::DateTime(icalendar::CalendarDateTime::Utc(t))) => {
            assert_eq!(t, utc(2027, 1, 5, 9, 15))
        }
        other => panic!("unexpected DTEND {other:?}"),
    }
    assert!(ics.contains("\r\n"), "CRLF line endings");
    assert!(
        ics.lines().all(|l| l.trim_end_matches('\r').len() <= 75),
        "folded lines"
    );

    let agenda = agent
        .export_desk_agenda(pb::ExportDeskAgendaRequest {
            desk_id: "dr1".into(),
            start_time: Some(timestamp(utc(2027, 1, 5, 0, 0))),
            end_time: Some(timestamp(utc(2027, 1, 6, 0, 0))),
        })
        .await
        .unwrap()
        .into_inner()
        .content;
    let cal: icalendar::Calendar = agenda.parse().expect("valid agenda");
    let n = cal.components.iter().filter_map(|c| c.as_event()).count();
    assert_eq!(n, 2);
    assert!(agenda.contains("2 pers."));
    // The portal does not read agendas.
    let err = portal
        .export_desk_agenda(pb::ExportDeskAgendaRequest {
            desk_id: "dr1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    f.finish().await;
}

async fn exceptions(backend: Backend) {
    let Some(f) = Fixture::new(backend, |_| {}, None).await else {
        return;
    };
    let mut portal = f.portal().await;
    let mut agent = f.agent().await;
    let mut on_dr1 = book_req(utc(2027, 1, 5, 9, 0), "c1", "");
    on_dr1.desk_id = "dr1".into();
    portal.book_appointment(on_dr1).await.unwrap();
    // dr1's agent is away Tuesday 10:00-11:00 Paris (09:00-10:00 UTC).
    let absence = agent
        .create_schedule_exception(pb::CreateScheduleExceptionRequest {
            desk_id: "dr1".into(),
            kind: pb::ExceptionKind::Absence as i32,
            start_time: Some(timestamp(utc(2027, 1, 5, 9, 0))),
            end_time: Some(timestamp(utc(2027, 1, 5, 10, 0))),
            reason: "Formation".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        absence.affected_bookings, 1,
        "the agent is told what to move"
    );
    let free = |c: &Client, desk: &'static str| {
        let mut c = c.clone();
        async move {
            c.search_availability(pb::SearchAvailabilityRequest {
                appointment_type: "passeport-depot".into(),
                site_ids: vec!["mairie".into()],
                people: 1,
                start_time: Some(timestamp(utc(2027, 1, 5, 0, 0))),
                end_time: Some(timestamp(utc(2027, 1, 10, 0, 0))),
                page_size: 2000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .slots
            .into_iter()
            .filter(|s| s.desk_id == desk)
            .map(|s| s.start_time.unwrap().seconds)
            .collect::<BTreeSet<_>>()
        }
    };
    let dr1 = free(&agent, "dr1").await;
    assert!(!dr1.contains(&utc(2027, 1, 5, 9, 15).timestamp()));
    assert!(dr1.contains(&utc(2027, 1, 5, 10, 0).timestamp()));
    assert!(
        free(&agent, "dr2")
            .await
            .contains(&utc(2027, 1, 5, 9, 15).timestamp())
    );
    let mut req = book_req(utc(2027, 1, 5, 9, 30), "c2", "");
    req.desk_id = "dr1".into();
    let err = portal.book_appointment(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // An extra Saturday morning (09:00-10:00 Paris) on dr1.
    assert!(!dr1.contains(&utc(2027, 1, 9, 8, 0).timestamp()));
    let extra = agent
        .create_schedule_exception(pb::CreateScheduleExceptionRequest {
            desk_id: "dr1".into(),
            kind: pb::ExceptionKind::ExtraOpening as i32,
            start_time: Some(timestamp(utc(2027, 1, 9, 8, 0))),
            end_time: Some(timestamp(utc(2027, 1, 9, 9, 0))),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        free(&agent, "dr1")
            .await
            .iter()
            .filter(|t| **t >= utc(2027, 1, 9, 0, 0).timestamp())
            .count(),
        4
    );
    let mut sat = book_req(utc(2027, 1, 9, 8, 45), "c3", "");
    sat.desk_id = "dr1".into();
    portal.book_appointment(sat).await.unwrap();
    // Listing, then lifting the absence.
    let listed = agent
        .list_schedule_exceptions(pb::ListScheduleExceptionsRequest {
            desk_id: "dr1".into(),
            start_time: Some(timestamp(utc(2027, 1, 1, 0, 0))),
            end_time: Some(timestamp(utc(2027, 2, 1, 0, 0))),
        })
        .await
        .unwrap()
        .into_inner()
        .exceptions;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, absence.id);
    assert_eq!(listed[1].id, extra.id);
    let err = portal
        .create_schedule_exception(pb::CreateScheduleExceptionRequest {
            desk_id: "dr1".into(),
            kind: pb::ExceptionKind::Closure as i32,
            start_time: Some(timestamp(utc(2027, 1, 6, 0, 0))),
            end_time: Some(timestamp(utc(2027, 1, 7, 0, 0))),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    agent
        .delete_schedule_exception(pb::DeleteScheduleExceptionRequest {
            id: absence.id.clone(),
        })
        .await
        .unwrap();
    assert!(
        free(&agent, "dr1")
            .await
            .contains(&utc(2027, 1, 5, 9, 15).timestamp())
    );
    f.finish().await;
}

#[tokio::test]
async fn appointment_absences_closures_and_extra_openings_change_the_slots_at_run_time_on_sqlite() {
    exceptions(Backend::Sqlite).await;
}

#[tokio::test]
async fn appointment_absences_closures_and_extra_openings_change_the_slots_at_run_time_on_postgres()
{
    exceptions(Backend::Postgres).await;
}
