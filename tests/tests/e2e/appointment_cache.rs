//! The availability index (answers from memory) never offers a slot that
//! is gone, on SQLite and PostgreSQL: a slot booked a moment before — on
//! this replica over gRPC, or on another replica sharing the database — is
//! not offered by either; a cancellation and a closure show at once on
//! both; and after every change the cached answers equal those of an
//! engine with an empty index.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use guichet_appointment::core::{Caller, Core, FreeSlot, NewBooking};
use guichet_proto::appointment::v1 as pb;
use guichet_proto::convert::timestamp;
use guichet_testkit::Backend;

use crate::appointment_booking::{Client, Fixture, book_req, monday_morning, utc};

fn agent() -> Caller {
    Caller {
        subject: "agent-b".into(),
        agent: true,
    }
}

/// A month of the public passport slots at the town hall, per desk.
async fn cached(core: &Core) -> Vec<FreeSlot> {
    let now = core.now();
    core.availability(
        "passeport-depot",
        &["mairie".into()],
        1,
        now,
        now + Duration::days(31),
        5000,
        false,
        false,
    )
    .await
    .unwrap()
}

/// The same question to replica A over gRPC, as the citizen pages ask it.
async fn searched(client: &mut Client, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    client
        .search_availability(pb::SearchAvailabilityRequest {
            appointment_type: "passeport-depot".into(),
            site_ids: vec!["mairie".into()],
            people: 1,
            start_time: Some(timestamp(now)),
            end_time: Some(timestamp(now + Duration::days(31))),
            page_size: 2000,
            distinct_times: false,
        })
        .await
        .unwrap()
        .into_inner()
        .slots
        .into_iter()
        .map(|s| {
            let t = s.start_time.unwrap();
            (
                s.desk_id,
                DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap(),
            )
        })
        .collect()
}

fn keys(v: &[FreeSlot]) -> BTreeSet<(String, DateTime<Utc>)> {
    v.iter().map(|s| (s.desk.clone(), s.start)).collect()
}

/// What an engine with an empty index answers (computed from the database).
async fn uncached(core: &Core) -> Vec<FreeSlot> {
    let fresh = Core {
        index: Default::default(),
        ..core.clone()
    };
    cached(&fresh).await
}

async fn cache_never_offers_a_slot_gone(backend: Backend) {
    // Arrange: replica A (the role, over gRPC) and replica B (a second
    // engine built on the same database and clock).
    let Some(f) = Fixture::new(backend, |_| {}, None).await else {
        return;
    };
    let mut cfg = f.env.config();
    crate::appointment_booking::town(&mut cfg);
    let mut deps = f.env.deps(&cfg, "appointment-b").await;
    deps.clock = Arc::new(f.clock.clone());
    let b = guichet_appointment::build(cfg.appointment.clone(), deps)
        .await
        .unwrap()
        .core();
    // Agents book on A; A's search runs as the citizen portal (public
    // window), the question `cached` asks B.
    let mut agent_a = f.agent().await;
    let mut a = f.portal().await;
    let now = monday_morning();
    // Both indexes warm.
    let before_b = cached(&b).await;
    let before_a = searched(&mut a, now).await;
    assert!(before_b.len() > 100, "a month of slots: {}", before_b.len());
    assert_eq!(
        before_a.iter().cloned().collect::<BTreeSet<_>>(),
        keys(&before_b)
    );

    // Act: A books a slot over gRPC; at once neither replica offers it.
    let first = before_b[0].clone();
    let mut req = book_req(first.start, "c-a", "cache-1");
    req.desk_id = first.desk.clone();
    agent_a.book_appointment(req).await.unwrap();
    let gone = (first.desk.clone(), first.start);
    assert!(!keys(&cached(&b).await).contains(&gone), "replica B");
    assert!(!searched(&mut a, now).await.contains(&gone), "replica A");

    // B books slots one after the other; A never offers one booked.
    let mut booked = vec![];
    for i in 0..15 {
        let slot = cached(&b).await[i * 7].clone();
        let bk = b
            .book(
                &agent(),
                NewBooking {
                    type_id: "passeport-depot".into(),
                    site_id: "mairie".into(),
                    desk_id: Some(slot.desk.clone()),
                    start: slot.start,
                    people: 1,
                    citizen_id: format!("c-b{i}"),
                    dossier_id: String::new(),
                    phone: Some("+33612345678".into()),
                    email: None,
                    application_ids: vec![],
                    request_id: Some(format!("cache-b-{i}")),
                },
            )
            .await
            .unwrap();
        let offered = searched(&mut a, now).await;
        assert!(
            !offered.contains(&(slot.desk.clone(), slot.start)),
            "A offers {slot:?}, booked on B a moment before"
        );
        booked.push((bk, slot));
    }
    assert_eq!(keys(&cached(&b).await), keys(&uncached(&b).await));
    assert_eq!(keys(&cached(&f.core).await), keys(&uncached(&b).await));

    // A cancellation on B frees the slot on A at once.
    let (bk, slot) = booked.pop().unwrap();
    b.cancel(&agent(), &bk.id, "", Some("cache-cancel".into()))
        .await
        .unwrap();
    assert!(
        searched(&mut a, now)
            .await
            .contains(&(slot.desk.clone(), slot.start))
    );

    // A move on B: the old time is free, the new one gone, on A.
    let (bk, old) = booked.pop().unwrap();
    let new = cached(&b).await[40].clone();
    b.reschedule(
        &agent(),
        &bk.id,
        new.start,
        Some(new.desk.clone()),
        "",
        Some("cache-move".into()),
    )
    .await
    .unwrap();
    let offered = searched(&mut a, now).await;
    assert!(offered.contains(&(old.desk.clone(), old.start)));
    assert!(!offered.contains(&(new.desk.clone(), new.start)));

    // A closure on A of dr1's Tuesday: B offers nothing of dr1 that day,
    // and offers it again once the closure is deleted.
    let (tue, wed) = (utc(2027, 1, 5, 0, 0), utc(2027, 1, 6, 0, 0));
    let on_tuesday = |v: &[FreeSlot]| {
        v.iter()
            .filter(|s| s.desk == "dr1" && s.start >= tue && s.start < wed)
            .count()
    };
    assert!(on_tuesday(&cached(&b).await) > 0);
    let (ex, _) = f
        .core
        .create_exception(&agent(), "dr1", "closure", tue, wed, "travaux")
        .await
        .unwrap();
    assert_eq!(on_tuesday(&cached(&b).await), 0, "closure seen on B");
    f.core.delete_exception(&ex.id).await.unwrap();
    assert!(on_tuesday(&cached(&b).await) > 0, "reopened on B");

    // Assert: both indexes agree with the database after all of it.
    let truth = keys(&uncached(&b).await);
    assert_eq!(keys(&cached(&b).await), truth);
    assert_eq!(
        searched(&mut a, now)
            .await
            .into_iter()
            .collect::<BTreeSet<_>>(),
        truth
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appointment_availability_never_offers_a_slot_booked_a_moment_before_on_sqlite() {
    cache_never_offers_a_slot_gone(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appointment_availability_never_offers_a_slot_booked_a_moment_before_on_postgres() {
    cache_never_offers_a_slot_gone(Backend::Postgres).await;
}
