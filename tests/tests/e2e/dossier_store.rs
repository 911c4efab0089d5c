//! The dossier store and process engine against real SQLite and PostgreSQL
//! databases and real NATS, with a manual clock: timers, retention and SLAs
//! are tested by moving time, never by sleeping.

use std::path::PathBuf;

use chrono::{Duration, TimeZone, Utc};
use guichet_dossier::catalog::CatalogHandle;
use guichet_dossier::db::entities::dossier::Model as Dossier;
use guichet_dossier::engine::{Change, TransitionError};
use guichet_dossier::records::NewDocument;
use guichet_dossier::store::{
    CitizenView, Match, NewEntry, Store, StoreParts, TimelineCursor, TimelineFilter,
};
use guichet_platform::calendar::BusinessCalendar;
use guichet_platform::clock::{Clock, ManualClock};
use guichet_platform::contact::{Address, CitizenInput, Email, Phone};
use guichet_platform::objects::ObjectStore;
use guichet_testkit::{Backend, TestEnv};

pub fn fixture_processes() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/processes")
}

struct Fx {
    env: TestEnv,
    store: Store,
    clock: ManualClock,
}

/// A store on the backend's dossier database; `None` when PostgreSQL is
/// optional and absent.
async fn fixture(backend: Backend) -> Option<Fx> {
    let env = TestEnv::new(backend).await?;
    let config = env.config();
    let db = guichet_platform::db::connect_and_migrate::<guichet_dossier::db::Migrator>(
        &config.dossier.database_url,
        &config.database,
    )
    .await
    .expect("dossier database");
    let bus = guichet_platform::bus::Bus::connect(&config.bus, "test")
        .await
        .expect("bus");
    bus.ensure_stream(guichet_platform::bus::StreamKind::Events)
        .await
        .expect("events stream");
    // Monday 2 November 2026, 09:00 Paris.
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap());
    let store = Store::new(StoreParts {
        db: db.clone(),
        reference_prefix: "VIN".into(),
        outbox: guichet_platform::outbox::Outbox::new(db, bus),
        clock: std::sync::Arc::new(clock.clone()),
        calendar: BusinessCalendar::default(),
        catalog: CatalogHandle::load(&fixture_processes()).expect("fixture catalog"),
        objects: ObjectStore::local(env.dir.path().join("objects")),
    });
    Some(Fx { env, store, clock })
}

fn person(given: &str, family: &str, phones: &[&str], emails: &[&str]) -> CitizenInput {
    CitizenInput {
        given_name: given.into(),
        family_name: family.into(),
        phones: phones.iter().map(|p| Phone::parse(p).unwrap()).collect(),
        emails: emails.iter().map(|e| Email::parse(e).unwrap()).collect(),
        address: None,
    }
}

fn at(street: &str) -> Option<Address> {
    Some(Address {
        lines: vec![street.into()],
        postal_code: "94300".into(),
        city: "Vincennes".into(),
        country: String::new(),
    })
}

/// A citizen known by phone (created on first sight).
async fn known(fx: &Fx, given: &str, family: &str, phone: &str) -> CitizenView {
    fx.store
        .resolve_citizen(&person(given, family, &[phone], &[]), None, false)
        .await
        .unwrap()
        .citizen
        .unwrap()
}

/// Store `content` in the object store and add it to `d` as a PDF.
async fn attach(fx: &Fx, d: &Dossier, content: &[u8], document_type: &str, channel: &str) {
    let sha256 = fx.store.objects().put(content).await.unwrap();
    fx.store
        .add_document(NewDocument {
            dossier: d.clone(),
            sha256,
            media_type: "application/pdf".into(),
            size_bytes: content.len() as u64,
            filename: "piece.pdf".into(),
            document_type: document_type.into(),
            source_channel: channel.into(),
            actor: "agent-1".into(),
        })
        .await
        .unwrap();
}

async fn open(
    fx: &Fx,
    citizen: &str,
    process: &str,
) -> guichet_dossier::db::entities::dossier::Model {
    let catalog = fx.store.catalog();
    let def = catalog.get_latest(process).unwrap();
    fx.store
        .open_dossier(citizen, def, "ouvert", "agent-1", None)
        .await
        .unwrap()
        .0
}

async fn fire(
    fx: &Fx,
    d: &guichet_dossier::db::entities::dossier::Model,
    to: &str,
    actor: &str,
    reason: &str,
) -> Result<guichet_dossier::db::entities::dossier::Model, TransitionError> {
    let catalog = fx.store.catalog();
    let def = catalog
        .get(&d.process_id, d.process_version as u32)
        .unwrap();
    fx.store
        .apply_transition(Change {
            dossier: d,
            def,
            to_state: to,
            cause: "transition",
            actor,
            reason,
            request_id: None,
        })
        .await
}

async fn resolution_cases(backend: Backend) {
    let Some(fx) = fixture(backend).await else {
        return;
    };
    let s = &fx.store;
    // Same phone in two formats: known.
    let a = s
        .resolve_citizen(
            &person("Amélie", "Durand", &["06 12 34 56 78"], &[]),
            Some("r1"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(a.matched, Match::Created);
    let a_id = a.citizen.unwrap().citizen.id;
    let again = s
        .resolve_citizen(
            &person("", "", &["+33 6 12 34 56 78"], &[]),
            Some("r2"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(again.matched, Match::Known);
    assert_eq!(again.citizen.unwrap().citizen.id, a_id);
    // A retry of the first request returns the same citizen.
    let retry = s
        .resolve_citizen(
            &person("Amélie", "Durand", &["06 12 34 56 78"], &[]),
            Some("r1"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(retry.citizen.unwrap().citizen.id, a_id);

    // Email case: known, and the new phone is added to the record.
    let b = s
        .resolve_citizen(
            &person("Bruno", "Petit", &[], &["Bruno.Petit@Exemple.FR"]),
            None,
            false,
        )
        .await
        .unwrap();
    let b_id = b.citizen.unwrap().citizen.id;
    let b2 = s
        .resolve_citizen(
            &person(
                "Bruno",
                "Petit",
                &["01 43 98 65 00"],
                &["bruno.petit@exemple.fr"],
            ),
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(b2.matched, Match::Known);
    let b2 = b2.citizen.unwrap();
    assert_eq!(b2.citizen.id, b_id);
    assert_eq!(b2.phones, vec!["+33143986500".to_string()]);

    // A letter: accented name and address written differently → "maybe",
    // with the earlier record as a high-confidence candidate.
    let mut letter = person("Hélène", "Lefèvre", &[], &[]);
    letter.address = at("12 bd de la Libération");
    let first = s.resolve_citizen(&letter, None, false).await.unwrap();
    assert_eq!(first.matched, Match::Created);
    let first_id = first.citizen.unwrap().citizen.id;
    let mut walk_in = person("HELENE", "LEFEVRE", &[], &[]);
    walk_in.address = at("12, Boulevard de la Liberation");
    let only = s.resolve_citizen(&walk_in, None, true).await.unwrap();
    assert_eq!(only.matched, Match::Maybe);
    assert!(only.citizen.is_none(), "candidates only: nothing created");
    assert_eq!(only.candidates.len(), 1);
    assert_eq!(only.candidates[0].citizen.citizen.id, first_id);
    assert!(
        only.candidates[0].confidence > 0.9,
        "{}",
        only.candidates[0].confidence
    );
    assert_eq!(only.candidates[0].why, "même nom et même adresse");
    // Same name elsewhere: weaker.
    let mut elsewhere = person("Hélène", "Lefèvre", &[], &[]);
    elsewhere.address = at("3 rue de Fontenay");
    let weak = s.resolve_citizen(&elsewhere, None, true).await.unwrap();
    assert!(weak.candidates[0].confidence < 0.9);

    // Two citizens sharing a landline: the name tells them apart; without a
    // name, both are candidates.
    let p1 = s
        .resolve_citizen(
            &person("Jean", "Martin", &["01 48 08 00 01"], &[]),
            None,
            false,
        )
        .await
        .unwrap();
    let p1_id = p1.citizen.unwrap().citizen.id;
    let p2 = s
        .resolve_citizen(
            &person("Claire", "Martin", &["01 48 08 00 01"], &[]),
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        p2.matched,
        Match::Created,
        "another name on the same line is another person"
    );
    let p2_id = p2.citizen.unwrap().citizen.id;
    assert_ne!(p1_id, p2_id);
    let claire = s
        .resolve_citizen(
            &person("Claire", "Martin", &["0148080001"], &[]),
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(claire.matched, Match::Known);
    assert_eq!(claire.citizen.unwrap().citizen.id, p2_id);
    let anonymous = s
        .resolve_citizen(&person("", "", &["01 48 08 00 01"], &[]), None, true)
        .await
        .unwrap();
    assert_eq!(anonymous.matched, Match::Maybe);
    let ids: Vec<_> = anonymous
        .candidates
        .iter()
        .map(|c| c.citizen.citizen.id.clone())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&p1_id) && ids.contains(&p2_id));

    // Search by name without accents, and by phone in another format.
    let found = s.search_citizens("lefevre helene", None, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    let found = s
        .search_citizens("+33 1 48 08 00 01", None, 10)
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    fx.env.cleanup().await;
}

#[tokio::test]
async fn citizens_resolve_on_sqlite() {
    resolution_cases(Backend::Sqlite).await;
}

#[tokio::test]
async fn citizens_resolve_on_postgres() {
    resolution_cases(Backend::Postgres).await;
}

async fn merge_and_split(backend: Backend) {
    let Some(fx) = fixture(backend).await else {
        return;
    };
    let s = &fx.store;
    let a = s
        .resolve_citizen(
            &person("Léa", "Roux", &["06 11 11 11 11"], &["lea@exemple.fr"]),
            None,
            false,
        )
        .await
        .unwrap()
        .citizen
        .unwrap();
    let b = s
        .resolve_citizen(
            &person(
                "Lea",
                "Roux",
                &["06 22 22 22 22"],
                &["lea@exemple.fr".to_uppercase().as_str()],
            ),
            None,
            false,
        )
        .await
        .unwrap();
    // Same email: recognised, not duplicated.
    assert_eq!(b.citizen.as_ref().unwrap().citizen.id, a.citizen.id);
    // A duplicate created from a letter without contact points.
    let mut letter = person("Léa", "Roux", &["07 33 33 33 33"], &[]);
    letter.address = at("5 avenue du Château");
    let dup = s.resolve_citizen(&letter, None, false).await.unwrap();
    assert_eq!(
        dup.matched,
        Match::Maybe,
        "same name: the agent must confirm"
    );
    let dup = dup.citizen.unwrap();
    let d_dup = open(&fx, &dup.citizen.id, "essai").await;
    let d_a = open(&fx, &a.citizen.id, "essai").await;

    let m = s
        .merge_citizens(
            &a.citizen.id,
            &dup.citizen.id,
            "agent-1",
            "même personne, vérifié au guichet",
        )
        .await
        .unwrap();
    let merged = s.get_citizen(&a.citizen.id).await.unwrap().unwrap();
    assert!(merged.phones.contains(&"+33733333333".to_string()));
    assert_eq!(
        s.get_dossier(&d_dup.id).await.unwrap().unwrap().citizen_id,
        a.citizen.id
    );
    let source = s.get_citizen(&dup.citizen.id).await.unwrap().unwrap();
    assert_eq!(
        source.citizen.merged_into.as_deref(),
        Some(a.citizen.id.as_str())
    );
    let history = s
        .timeline(
            None,
            Some(&a.citizen.id),
            &TimelineFilter::default(),
            None,
            100,
        )
        .await
        .unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.dossier_id.as_deref() == Some(d_dup.id.as_str()))
    );
    assert!(history.iter().any(|e| e.kind == "merge"));
    // Merged records are no longer resolved nor merged again.
    assert!(
        s.merge_citizens(&a.citizen.id, &dup.citizen.id, "agent-1", "encore")
            .await
            .is_err()
    );
    let by_phone = s
        .resolve_citizen(&person("", "", &["07 33 33 33 33"], &[]), None, false)
        .await
        .unwrap();
    assert_eq!(by_phone.citizen.unwrap().citizen.id, a.citizen.id);

    // A wrong merge is split back: everything that moved goes back.
    s.split_citizen(&m.id, "superviseur-1", "homonymes, pas la même personne")
        .await
        .unwrap();
    let back = s.get_citizen(&dup.citizen.id).await.unwrap().unwrap();
    assert!(back.citizen.merged_into.is_none());
    assert_eq!(back.phones, vec!["+33733333333".to_string()]);
    assert_eq!(
        s.get_dossier(&d_dup.id).await.unwrap().unwrap().citizen_id,
        dup.citizen.id
    );
    assert_eq!(
        s.get_dossier(&d_a.id).await.unwrap().unwrap().citizen_id,
        a.citizen.id
    );
    let a_after = s.get_citizen(&a.citizen.id).await.unwrap().unwrap();
    assert!(!a_after.phones.contains(&"+33733333333".to_string()));
    assert!(
        s.split_citizen(&m.id, "x", "deux fois").await.is_err(),
        "a merge splits once"
    );
    fx.env.cleanup().await;
}

#[tokio::test]
async fn merge_and_split_on_sqlite() {
    merge_and_split(Backend::Sqlite).await;
}

#[tokio::test]
async fn merge_and_split_on_postgres() {
    merge_and_split(Backend::Postgres).await;
}

async fn timers(backend: Backend) {
    let Some(fx) = fixture(backend).await else {
        return;
    };
    let s = &fx.store;
    let c = known(&fx, "Noé", "Blanc", "06 44 44 44 44").await;
    let d = open(&fx, &c.citizen.id, "essai").await;
    assert_eq!(
        s.pending_timers(&d.id).await.unwrap().len(),
        2,
        "reminder and auto-close armed"
    );

    // Nothing is due yet.
    fx.clock.advance(Duration::days(2));
    assert_eq!(s.fire_due_timers(100).await.unwrap(), 0);
    // Day 3: the reminder fires once.
    fx.clock.advance(Duration::days(1) + Duration::minutes(1));
    assert_eq!(s.fire_due_timers(100).await.unwrap(), 1);
    assert_eq!(s.fire_due_timers(100).await.unwrap(), 0, "fired once");
    let entries = s
        .timeline(Some(&d.id), None, &TimelineFilter::default(), None, 50)
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.kind == "message_sent" && e.summary.contains("relance-pieces"))
    );
    // Day 10: the dossier closes itself, with the reason.
    fx.clock.advance(Duration::days(7));
    assert_eq!(s.fire_due_timers(100).await.unwrap(), 1);
    let closed = s.get_dossier(&d.id).await.unwrap().unwrap();
    assert_eq!(closed.state, "classee");
    assert!(closed.closed_at.is_some());
    let entries = s
        .timeline(Some(&d.id), None, &TimelineFilter::default(), None, 50)
        .await
        .unwrap();
    let change = entries.iter().find(|e| e.kind == "state_change").unwrap();
    assert_eq!(change.actor, "system");
    assert!(
        change.summary.contains("Pièces non reçues"),
        "{}",
        change.summary
    );

    // Leaving the state cancels its timers: a dossier completed in time is
    // never closed by the old timer.
    let d2 = open(&fx, &c.citizen.id, "essai").await;
    attach(&fx, &d2, b"justificatif", "piece-a", "counter").await;
    let d2 = s.get_dossier(&d2.id).await.unwrap().unwrap();
    let d2 = fire(&fx, &d2, "instruction", "agent-1", "").await.unwrap();
    assert!(s.pending_timers(&d2.id).await.unwrap().is_empty());
    fx.clock.advance(Duration::days(30));
    s.fire_due_timers(100).await.unwrap();
    assert_eq!(
        s.get_dossier(&d2.id).await.unwrap().unwrap().state,
        "instruction"
    );
    // SLA: 5 calendar days in instruction, long past.
    let def = s.catalog().get("essai", 1).unwrap().clone();
    assert!(matches!(
        s.sla(&d2, def.state("instruction")),
        guichet_dossier::engine::Sla::Breached(_)
    ));
    fx.env.cleanup().await;
}

#[tokio::test]
async fn timers_fire_on_a_controlled_clock_on_sqlite() {
    timers(Backend::Sqlite).await;
}

#[tokio::test]
async fn timers_fire_on_a_controlled_clock_on_postgres() {
    timers(Backend::Postgres).await;
}

async fn concurrent_transitions(backend: Backend) {
    let Some(fx) = fixture(backend).await else {
        return;
    };
    let s = &fx.store;
    let c = known(&fx, "Iris", "Noir", "06 55 55 55 55").await;
    for round in 0..5 {
        let d = open(&fx, &c.citizen.id, "essai").await;
        attach(
            &fx,
            &d,
            format!("piece {round}").as_bytes(),
            "piece-a",
            "email",
        )
        .await;
        let d = s.get_dossier(&d.id).await.unwrap().unwrap();
        let d = fire(&fx, &d, "instruction", "agent-1", "").await.unwrap();
        s.add_note(&d, "private", "avis favorable", "agent-1", None)
            .await
            .unwrap();
        let d = s.get_dossier(&d.id).await.unwrap().unwrap();
        // Two agents act on the same revision at once: one wins.
        let (a, b) = tokio::join!(
            fire(&fx, &d, "accordee", "agent-1", ""),
            fire(&fx, &d, "refusee", "agent-2", "incomplet"),
        );
        let wins = [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count();
        assert_eq!(wins, 1, "round {round}: exactly one transition wins");
        let loser = if a.is_ok() { b } else { a };
        assert!(
            matches!(loser, Err(TransitionError::Conflict))
                || matches!(loser, Err(TransitionError::Db(_))),
            "the loser is told it lost"
        );
        let final_state = s.get_dossier(&d.id).await.unwrap().unwrap();
        let changes = s
            .timeline(
                Some(&d.id),
                None,
                &TimelineFilter {
                    kinds: vec!["state_change".into()],
                    ..Default::default()
                },
                None,
                50,
            )
            .await
            .unwrap();
        assert_eq!(changes.len(), 2, "one entry per applied transition");
        assert!(["accordee", "refusee"].contains(&final_state.state.as_str()));
    }
    fx.env.cleanup().await;
}

#[tokio::test]
async fn concurrent_transitions_have_one_winner_on_sqlite() {
    concurrent_transitions(Backend::Sqlite).await;
}

#[tokio::test]
async fn concurrent_transitions_have_one_winner_on_postgres() {
    concurrent_transitions(Backend::Postgres).await;
}

async fn retention(backend: Backend) {
    let Some(fx) = fixture(backend).await else {
        return;
    };
    let s = &fx.store;
    let c = known(&fx, "Paul", "Vert", "06 66 66 66 66").await;
    let keep = open(&fx, &c.citizen.id, "essai").await;
    let purge = open(&fx, &c.citizen.id, "essai").await;
    let open_one = open(&fx, &c.citizen.id, "essai").await;
    // Under instruction: no auto-close timer, stays open.
    let open_one = fire(&fx, &open_one, "instruction", "agent-1", "")
        .await
        .unwrap();
    let sha = s.objects().put(b"scan du courrier").await.unwrap();
    for d in [&keep, &purge] {
        attach(&fx, d, b"scan du courrier", "", "scan").await;
    }
    // Both close (auto-close after 10 days); one is put on legal hold.
    fx.clock.advance(Duration::days(11));
    s.fire_due_timers(100).await.unwrap();
    let keep = s.get_dossier(&keep.id).await.unwrap().unwrap();
    s.set_legal_hold(&keep, true, "contentieux en cours", "superviseur-1")
        .await
        .unwrap();
    // Not yet past the 30-day retention.
    fx.clock.advance(Duration::days(29));
    let r = s.purge_expired(false, "system").await.unwrap();
    assert!(r.references.is_empty(), "{:?}", r.references);
    // Past retention: the free one goes (the object stays, the held dossier
    // still references it); the held one stays; the open one is untouched.
    fx.clock.advance(Duration::days(2));
    let dry = s.purge_expired(true, "system").await.unwrap();
    assert_eq!(dry.references, vec![purge.reference.clone()]);
    assert!(
        s.get_dossier(&purge.id).await.unwrap().is_some(),
        "dry run deletes nothing"
    );
    let r = s.purge_expired(false, "system").await.unwrap();
    assert_eq!(r.references, vec![purge.reference.clone()]);
    assert_eq!(r.held, vec![keep.reference.clone()]);
    assert!(s.get_dossier(&purge.id).await.unwrap().is_none());
    assert!(s.get_dossier(&keep.id).await.unwrap().is_some());
    assert!(s.get_dossier(&open_one.id).await.unwrap().is_some());
    assert!(
        s.objects().exists(&sha).await.unwrap(),
        "still referenced by the held dossier"
    );
    // Lifting the hold: purged with its now unreferenced object.
    let keep = s.get_dossier(&keep.id).await.unwrap().unwrap();
    s.set_legal_hold(&keep, false, "", "superviseur-1")
        .await
        .unwrap();
    let r = s.purge_expired(false, "system").await.unwrap();
    assert_eq!(r.references, vec![keep.reference.clone()]);
    assert!(!s.objects().exists(&sha).await.unwrap());
    let audit = s
        .list_audit(Some(&format!("dossiers/{}", purge.id)), None, None, 50)
        .await
        .unwrap();
    assert!(audit.iter().any(|a| a.action == "dossier.purge"));
    fx.env.cleanup().await;
}

#[tokio::test]
async fn retention_purge_respects_legal_holds_on_sqlite() {
    retention(Backend::Sqlite).await;
}

#[tokio::test]
async fn retention_purge_respects_legal_holds_on_postgres() {
    retention(Backend::Postgres).await;
}

async fn export_and_erasure(backend: Backend) {
    let Some(fx) = fixture(backend).await else {
        return;
    };
    let s = &fx.store;
    let mut input = person("Zoé", "Marchand", &["06 77 77 77 77"], &["zoe@exemple.fr"]);
    input.address = at("8 rue de Montreuil");
    let c = s
        .resolve_citizen(&input, None, false)
        .await
        .unwrap()
        .citizen
        .unwrap();
    let d = open(&fx, &c.citizen.id, "essai").await;
    s.add_note(
        &d,
        "private",
        "appel reçu, pièces demandées",
        "agent-1",
        None,
    )
    .await
    .unwrap();
    let json = s
        .export_citizen(&c.citizen.id, "superviseur-1")
        .await
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["citizen"]["family_name"], "Marchand");
    assert_eq!(v["phones"][0], "+33677777777");
    assert_eq!(v["dossiers"][0]["reference"], d.reference);
    assert!(
        v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["summary"] == "appel reçu, pièces demandées")
    );

    // An open dossier keeps the data.
    let refused = s
        .erase_citizen(&c.citizen.id, "admin-1", "demande de l'usager")
        .await;
    assert!(
        matches!(refused, Err(guichet_dossier::privacy::EraseError::Retained(ref r)) if r == &vec![d.reference.clone()])
    );
    // Closed, but within retention: still kept.
    fx.clock.advance(Duration::days(11));
    s.fire_due_timers(100).await.unwrap();
    assert!(
        s.erase_citizen(&c.citizen.id, "admin-1", "demande")
            .await
            .is_err()
    );
    // Past retention: erased, and the erasure recorded.
    fx.clock.advance(Duration::days(31));
    let erased = s
        .erase_citizen(&c.citizen.id, "admin-1", "demande de l'usager")
        .await
        .unwrap();
    assert_eq!(erased.dossiers, 1);
    assert!(erased.entries >= 3);
    let tomb = s.get_citizen(&c.citizen.id).await.unwrap().unwrap();
    assert!(tomb.citizen.erased_at.is_some());
    assert!(
        tomb.citizen.family_name.is_empty() && tomb.phones.is_empty() && tomb.emails.is_empty()
    );
    assert!(
        s.search_citizens("Marchand", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = s
        .resolve_citizen(&person("", "", &["06 77 77 77 77"], &[]), None, false)
        .await
        .unwrap();
    assert_eq!(
        again.matched,
        Match::Created,
        "the number no longer leads to the erased person"
    );
    let audit = s
        .list_audit(Some(&format!("citizens/{}", c.citizen.id)), None, None, 50)
        .await
        .unwrap();
    let erase = audit
        .iter()
        .find(|a| a.action == "citizen.erase")
        .expect("erasure audited");
    assert!(
        !erase.detail.contains("Marchand"),
        "no personal data in the audit"
    );
    assert!(audit.iter().any(|a| a.action == "citizen.export"));
    fx.env.cleanup().await;
}

#[tokio::test]
async fn export_and_erasure_on_sqlite() {
    export_and_erasure(Backend::Sqlite).await;
}

#[tokio::test]
async fn export_and_erasure_on_postgres() {
    export_and_erasure(Backend::Postgres).await;
}

async fn timeline_across_channels(backend: Backend) {
    let Some(fx) = fixture(backend).await else {
        return;
    };
    let s = &fx.store;
    let c = known(&fx, "Ana", "Gris", "06 88 88 88 88").await;
    let d = open(&fx, &c.citizen.id, "essai").await;
    let base = fx.clock.now();
    // Monday call, Tuesday email, Wednesday letter, Thursday visit; recorded
    // out of order (redeliveries), some at the same instant.
    let contacts = [
        (3, "counter", "Visite au guichet"),
        (0, "telephony", "Appel (attente 2 min, conversation 5 min)"),
        (2, "scan", "Courrier reçu"),
        (1, "email", "Courriel reçu"),
        (1, "email", "Second courriel, même minute"),
    ];
    for (i, (day, channel, summary)) in contacts.iter().enumerate() {
        s.record(NewEntry {
            citizen_id: c.citizen.id.clone(),
            dossier_id: Some(d.id.clone()),
            kind: "contact".into(),
            channel: (*channel).into(),
            occurred_at: base + Duration::days(*day),
            summary: (*summary).into(),
            actor: "system".into(),
            source_event_id: Some(format!("evt-{i}")),
        })
        .await
        .unwrap();
    }
    let all_contacts = TimelineFilter {
        kinds: vec!["contact".into()],
        ..Default::default()
    };
    // Newest first, two per page, no entry lost or repeated across pages.
    let mut seen = Vec::new();
    let mut cursor: Option<TimelineCursor> = None;
    loop {
        let page = s
            .timeline(None, Some(&c.citizen.id), &all_contacts, cursor.as_ref(), 2)
            .await
            .unwrap();
        for e in &page {
            seen.push((e.occurred_at, e.summary.clone()));
        }
        if page.len() < 2 {
            break;
        }
        let last = page.last().unwrap();
        cursor = Some(TimelineCursor {
            occurred_at: last.occurred_at,
            id: last.id.clone(),
        });
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");
    assert_eq!(seen[0].1, "Visite au guichet");
    assert_eq!(seen[4].1, "Appel (attente 2 min, conversation 5 min)");
    // Filters: channel, and period.
    let emails = s
        .timeline(
            None,
            Some(&c.citizen.id),
            &TimelineFilter {
                channels: vec!["email".into()],
                ..Default::default()
            },
            None,
            50,
        )
        .await
        .unwrap();
    assert_eq!(emails.len(), 2);
    let tuesday_wednesday = s
        .timeline(
            Some(&d.id),
            None,
            &TimelineFilter {
                kinds: vec!["contact".into()],
                start: Some(base + Duration::days(1)),
                end: Some(base + Duration::days(3)),
                ..Default::default()
            },
            None,
            50,
        )
        .await
        .unwrap();
    assert_eq!(tuesday_wednesday.len(), 3);
    fx.env.cleanup().await;
}

#[tokio::test]
async fn timeline_orders_and_pages_across_channels_on_sqlite() {
    timeline_across_channels(Backend::Sqlite).await;
}

#[tokio::test]
async fn timeline_orders_and_pages_across_channels_on_postgres() {
    timeline_across_channels(Backend::Postgres).await;
}

/// Fifty requests from one new phone number, and fifty from one new email
/// address, resolved at the same time: one citizen each. Then the holder is
/// erased and the number comes back: a new citizen is created (the erased
/// holder's claim does not block it) and resolves as known afterwards.
async fn concurrent_first_contacts(backend: Backend) {
    let Some(fx) = fixture(backend).await else {
        return;
    };
    let s = fx.store.clone();
    let inputs = [
        person("", "", &["06 12 34 56 78"], &[]),
        person("", "", &[], &["jean.dupont@exemple.fr"]),
        person(
            "Jean",
            "Dupont",
            &["01 43 98 65 00"],
            &["j.dupont@exemple.fr"],
        ),
    ];
    for input in inputs {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let s = s.clone();
            let input = input.clone();
            tasks.spawn(async move { s.resolve_citizen(&input, None, false).await });
        }
        let mut ids = std::collections::BTreeSet::new();
        while let Some(res) = tasks.join_next().await {
            let resolution = res.unwrap().expect("every concurrent resolution succeeds");
            ids.insert(resolution.citizen.unwrap().citizen.id);
        }
        assert_eq!(ids.len(), 1, "one citizen for one new contact: {input:?}");
        let point = input
            .phones
            .first()
            .map(|p| p.as_str().to_owned())
            .or_else(|| input.emails.first().map(|e| e.as_str().to_owned()))
            .unwrap();
        let found = s.search_citizens(&point, None, 10).await.unwrap();
        assert_eq!(
            found.len(),
            1,
            "the directory holds one citizen for {point}"
        );
    }

    // The holder is erased; the number is new again.
    let first = s
        .resolve_citizen(&person("", "", &["06 12 34 56 78"], &[]), None, false)
        .await
        .unwrap();
    assert_eq!(first.matched, Match::Known);
    let erased_id = first.citizen.unwrap().citizen.id;
    s.erase_citizen(&erased_id, "admin-1", "demande de l'usager")
        .await
        .unwrap();
    let again = s
        .resolve_citizen(&person("", "", &["06 12 34 56 78"], &[]), None, false)
        .await
        .expect("an erased holder's claim does not block a new citizen");
    assert_eq!(again.matched, Match::Created);
    let new_id = again.citizen.unwrap().citizen.id;
    assert_ne!(new_id, erased_id);
    let known = s
        .resolve_citizen(&person("", "", &["06 12 34 56 78"], &[]), None, false)
        .await
        .unwrap();
    assert_eq!(known.matched, Match::Known);
    assert_eq!(known.citizen.unwrap().citizen.id, new_id);
    fx.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_contacts_make_one_citizen_on_sqlite() {
    concurrent_first_contacts(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_contacts_make_one_citizen_on_postgres() {
    concurrent_first_contacts(Backend::Postgres).await;
}

/// Issue 14: a record known only by its number (a call) is named by the
/// next request that gives the name with that number (a walk-in), instead of
/// staying nameless; a known name is never overwritten.
async fn a_nameless_record_gets_its_name(backend: Backend) {
    let Some(fx) = fixture(backend).await else {
        return;
    };
    let s = &fx.store;
    let call = s
        .resolve_citizen(&person("", "", &["06 44 55 66 77"], &[]), None, false)
        .await
        .unwrap();
    assert_eq!(call.matched, Match::Created);
    let id = call.citizen.unwrap().citizen.id;
    let mut visit = person("Jean", "Dupont", &["06 44 55 66 77"], &[]);
    visit.address = at("12 rue de Fontenay");
    let walk_in = s.resolve_citizen(&visit, None, false).await.unwrap();
    assert_eq!(walk_in.matched, Match::Known);
    let c = walk_in.citizen.unwrap();
    assert_eq!(c.citizen.id, id, "the same person");
    assert_eq!(
        (
            c.citizen.given_name.as_str(),
            c.citizen.family_name.as_str()
        ),
        ("Jean", "Dupont")
    );
    assert_eq!(c.citizen.postal_code, "94300");
    // Named now: the same name finds him by name too; another name on the
    // shared number does not rename him.
    let other = s
        .resolve_citizen(
            &person("Marie", "Dupont", &["06 44 55 66 77"], &[]),
            None,
            false,
        )
        .await
        .unwrap();
    assert_ne!(other.citizen.unwrap().citizen.id, id);
    let again = s.get_citizen(&id).await.unwrap().unwrap();
    assert_eq!(again.citizen.given_name, "Jean");
    fx.env.cleanup().await;
}

#[tokio::test]
async fn a_nameless_record_gets_its_name_on_sqlite() {
    a_nameless_record_gets_its_name(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_nameless_record_gets_its_name_on_postgres() {
    a_nameless_record_gets_its_name(Backend::Postgres).await;
}

/// Issue 14: two scans of one letter, the second with an OCR error in the
/// email, are one citizen: same name and same address is strong evidence
/// (0.95), linked by itself and recorded on the timeline with its evidence;
/// the same name with an email one letter away too. With the threshold at
/// 1.0 nothing links by itself: the agent gets the candidate.
async fn strong_evidence_links_by_itself(backend: Backend) {
    let Some(fx) = fixture(backend).await else {
        return;
    };
    let s = &fx.store;
    let mut first = person("Jean", "Dupont", &[], &["jean.dupont@exemple.fr"]);
    first.address = at("12 rue de Fontenay");
    let a = s
        .resolve_citizen(&first, Some("scan-1"), false)
        .await
        .unwrap();
    assert_eq!(a.matched, Match::Created);
    let id = a.citizen.unwrap().citizen.id;
    let mut second = person("JEAN", "DUPONT", &[], &["jean.dupomt@exemple.fr"]);
    second.address = at("12, rue de Fontenay");
    let b = s
        .resolve_citizen(&second, Some("scan-2"), false)
        .await
        .unwrap();
    assert_eq!(b.matched, Match::Known, "{:?}", b.candidates);
    assert_eq!(b.citizen.unwrap().citizen.id, id, "one citizen");
    assert_eq!(b.candidates[0].why, "même nom et même adresse");
    let entries = s
        .timeline(None, Some(&id), &TimelineFilter::default(), None, 50)
        .await
        .unwrap();
    assert!(
        entries.iter().any(|e| e
            .summary
            .starts_with("Demande rattachée automatiquement : même nom et même adresse")),
        "the link and its evidence are recorded"
    );
    // The same name and a near-identical address, no postal address.
    let c = s
        .resolve_citizen(
            &person("Jean", "Dupont", &[], &["jean.dupond@exemple.fr"]),
            Some("mail-3"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(c.matched, Match::Known);
    assert_eq!(c.citizen.unwrap().citizen.id, id);
    assert_eq!(
        c.candidates[0].why,
        "même nom et adresse électronique presque identique"
    );
    // A name misread by one letter at the same address (a scanned letter):
    // not linked by itself, offered to the agent as a strong candidate.
    let mut misread = person("Jean", "Dupomt", &[], &[]);
    misread.address = at("12 rue de Fontenay");
    let m = s
        .resolve_citizen(&misread, Some("scan-5"), false)
        .await
        .unwrap();
    assert_eq!(m.matched, Match::Maybe, "{:?}", m.candidates);
    assert_ne!(m.citizen.as_ref().unwrap().citizen.id, id);
    assert_eq!(m.candidates[0].citizen.citizen.id, id);
    assert_eq!(m.candidates[0].confidence, 0.85);
    assert!(
        m.candidates[0].why.contains("nom presque identique"),
        "{:?}",
        m.candidates
    );
    // A short name one letter away is someone else's: no such candidate.
    let mut other = person("Léa", "Roy", &[], &[]);
    other.address = at("12 rue de Fontenay");
    s.resolve_citizen(&other, Some("scan-6"), false)
        .await
        .unwrap();
    let mut other2 = person("Léo", "Roy", &[], &[]);
    other2.address = at("12 rue de Fontenay");
    let o = s
        .resolve_citizen(&other2, Some("scan-7"), false)
        .await
        .unwrap();
    assert!(
        o.candidates
            .iter()
            .all(|c| !c.why.contains("presque identique")),
        "{:?}",
        o.candidates
    );
    // A town that wants every link confirmed by an agent.
    let strict = s.clone().with_identity_auto_link(1.0);
    let mut third = person("Jean", "Dupont", &[], &[]);
    third.address = at("12 rue de Fontenay");
    let d = strict
        .resolve_citizen(&third, Some("scan-4"), false)
        .await
        .unwrap();
    assert_eq!(d.matched, Match::Maybe);
    assert_ne!(d.citizen.unwrap().citizen.id, id);
    assert_eq!(d.candidates[0].citizen.citizen.id, id);
    fx.env.cleanup().await;
}

#[tokio::test]
async fn strong_evidence_links_by_itself_on_sqlite() {
    strong_evidence_links_by_itself(Backend::Sqlite).await;
}

#[tokio::test]
async fn strong_evidence_links_by_itself_on_postgres() {
    strong_evidence_links_by_itself(Backend::Postgres).await;
}
