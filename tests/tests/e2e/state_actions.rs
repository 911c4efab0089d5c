//! State actions end to end: entering a state carries out its
//! `[[states.actions]]` once, through the owning roles (a message through
//! notification, a signature request through signature, an appointment to
//! propose from appointment), recorded on the timeline and shown in the
//! guidance; a replayed transition fires nothing again. The crèche contract
//! change is signed from the SMS alone and the dossier moves on by itself.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration as StdDuration;

use guichet::Role;
use guichet_dossier::catalog::{Catalog, ProcessDefinition};
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::CitizenHint;
use guichet_testkit::*;

use crate::signature_flow::{Browser, avenant_pdf, csrf};

const PHONE: &str = "+33611223344";

fn sms_of(env: &TestEnv, dossier_id: &str, template: &str) -> Vec<serde_json::Value> {
    env.sms_sink()
        .into_iter()
        .filter(|m| m["dossier_id"] == dossier_id && m["template"] == template)
        .collect()
}

async fn timeline(
    d: &mut dpb::dossier_service_client::DossierServiceClient<Authed>,
    dossier_id: &str,
) -> Vec<dpb::TimelineEntry> {
    d.list_dossier_timeline(dpb::ListDossierTimelineRequest {
        dossier_id: dossier_id.to_owned(),
        page_size: 500,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .entries
}

/// Timeline entries that record a state action carried out.
fn action_entries(entries: &[dpb::TimelineEntry]) -> Vec<&dpb::TimelineEntry> {
    entries
        .iter()
        .filter(|e| e.source_event_id.starts_with("action:"))
        .collect()
}

async fn guidance(
    d: &mut dpb::dossier_service_client::DossierServiceClient<Authed>,
    dossier_id: &str,
) -> dpb::Guidance {
    d.get_guidance(dpb::GetGuidanceRequest {
        dossier_id: dossier_id.to_owned(),
    })
    .await
    .unwrap()
    .into_inner()
}

async fn transition(
    d: &mut dpb::dossier_service_client::DossierServiceClient<Authed>,
    dossier_id: &str,
    to: &str,
    request_id: &str,
) -> dpb::Dossier {
    d.transition_dossier(dpb::TransitionDossierRequest {
        id: dossier_id.to_owned(),
        to_state: to.to_owned(),
        request_id: request_id.to_owned(),
        reason: "Motif indiqué par l'agent".into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("transition to {to}: {e}"))
    .into_inner()
}

async fn citizen(
    d: &mut dpb::dossier_service_client::DossierServiceClient<Authed>,
    given: &str,
    family: &str,
    phone: &str,
) -> String {
    d.resolve_citizen(dpb::ResolveCitizenRequest {
        hint: Some(CitizenHint {
            given_name: given.into(),
            family_name: family.into(),
            phones: vec![phone.into()],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .citizen
    .unwrap()
    .id
}

async fn crèche_contract_change_is_signed_from_the_sms(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let mut cfg = env.config();
    cfg.town.name = "Villeneuve".into();
    let app = env
        .spawn_with(&[Role::Dossier, Role::Signature, Role::Notification], cfg)
        .await;
    let pages = http_addr_of(&app, Role::Signature);
    let mut d = dossier_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;
    let citizen_id = citizen(&mut d, "Amélie", "Poulain", PHONE).await;
    let dossier = d
        .open_dossier(dpb::OpenDossierRequest {
            citizen_id,
            process_id: "creche-modification-contrat".into(),
            request_id: format!("open-{}", env.id),
        })
        .await
        .unwrap()
        .into_inner();
    let id = dossier.id.clone();
    d.add_document(dpb::AddDocumentRequest {
        dossier_id: id.clone(),
        filename: "planning.pdf".into(),
        media_type: "application/pdf".into(),
        document_type: "planning-souhaite".into(),
        content: guichet_signature::pdf::simple_document("Planning souhaité", &["lundi"]),
        ..Default::default()
    })
    .await
    .unwrap();
    transition(&mut d, &id, "etude", "").await;

    // Dry run: the agent sees what sending the avenant will do.
    let g = guidance(&mut d, &id).await;
    let next = g
        .next_actions
        .iter()
        .find(|a| a.to_state == "avenant-a-signer")
        .expect("the avenant can be sent");
    assert_eq!(next.on_enter.len(), 1, "{next:?}");
    assert_eq!(next.on_enter[0].kind, "request_signature");
    assert_eq!(next.on_enter[0].status, "", "a dry run has no status");
    assert!(
        next.on_enter[0]
            .description
            .contains("Demande de signature électronique de « Avenant au contrat d'accueil"),
        "{}",
        next.on_enter[0].description
    );
    assert!(
        sms_of(&env, &id, "signature-code").is_empty(),
        "a dry run sends nothing"
    );

    // Entered before the avenant is attached: the action waits, visibly.
    let rq = format!("send-avenant-{}", env.id);
    let first = transition(&mut d, &id, "avenant-a-signer", &rq).await;
    let g = eventually(
        "the missing avenant shown to the agent",
        StdDuration::from_secs(20),
        || {
            let mut d = d.clone();
            let id = id.clone();
            async move {
                let g = guidance(&mut d, &id).await;
                (g.actions.first()?.status == "retrying").then_some(g)
            }
        },
    )
    .await;
    assert!(
        g.actions[0]
            .error
            .contains("document à signer absent : joignez la pièce « Avenant au contrat d'accueil"),
        "{:?}",
        g.actions[0]
    );
    // A replayed transition (same request id) changes and fires nothing.
    let again = transition(&mut d, &id, "avenant-a-signer", &rq).await;
    assert_eq!(again.revision, first.revision);

    d.add_document(dpb::AddDocumentRequest {
        dossier_id: id.clone(),
        filename: "avenant.pdf".into(),
        media_type: "application/pdf".into(),
        document_type: "avenant".into(),
        content: avenant_pdf(&env.id),
        ..Default::default()
    })
    .await
    .unwrap();

    // The family receives one SMS: the link to the signing page and a code.
    let sms = eventually("the signing SMS", StdDuration::from_secs(40), || {
        let env = &env;
        let id = id.clone();
        async move { sms_of(env, &id, "signature-code").into_iter().next() }
    })
    .await;
    assert_eq!(sms["to"], PHONE);
    let text = sms["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with("Mairie de Villeneuve : "), "{text}");
    assert!(text.contains("Avenant au contrat d'accueil"), "{text}");
    assert_eq!(sms["encoding"], "gsm7", "{text}");
    assert!(sms["segments"].as_u64().unwrap() <= 2, "{sms}");
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/s/"))
        .unwrap_or_else(|| panic!("no signing link in {text}"));
    let path = &link[link.find("/s/").unwrap()..];
    let code = text
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {text}"))
        .to_owned();

    let browser = Browser::new(pages);
    let (status, page) = browser.get(path).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Avenant au contrat d&#39;accueil"), "{page}");
    assert!(page.contains("Villeneuve"), "{page}");
    let token = csrf(&page);
    let (status, page) = browser
        .post(
            &format!("{path}/confirm"),
            &[("csrf", &token), ("consent", "oui"), ("code", &code)],
        )
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("Votre signature est enregistrée"), "{page}");

    // The dossier moves on by itself, and its confirmation goes out once.
    eventually("the dossier moves on", StdDuration::from_secs(30), || {
        let mut d = d.clone();
        let id = id.clone();
        async move {
            let x = d
                .get_dossier(dpb::GetDossierRequest { id })
                .await
                .ok()?
                .into_inner();
            (x.state == "avenant-applique").then_some(())
        }
    })
    .await;
    eventually("the confirmation SMS", StdDuration::from_secs(30), || {
        let env = &env;
        let id = id.clone();
        async move { (!sms_of(env, &id, "avenant-creche-confirmation").is_empty()).then_some(()) }
    })
    .await;
    let entries = timeline(&mut d, &id).await;
    let actions = action_entries(&entries);
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(actions.iter().any(|e| {
        e.kind == dpb::EntryKind::Signature as i32
            && e.summary
                .contains("un SMS avec le lien de signature et un code")
    }));
    assert!(
        actions
            .iter()
            .any(|e| e.kind == dpb::EntryKind::MessageSent as i32
                && e.summary.contains("avenant-creche-confirmation"))
    );
    let g = guidance(&mut d, &id).await;
    assert_eq!(g.actions.len(), 1);
    assert_eq!(g.actions[0].status, "done", "{:?}", g.actions[0]);
    // Exactly one of each reached the family.
    assert_eq!(sms_of(&env, &id, "signature-code").len(), 1);
    assert_eq!(sms_of(&env, &id, "avenant-creche-confirmation").len(), 1);
    assert!(
        sms_of(&env, &id, "avenant-creche").is_empty(),
        "the family gets the signing SMS, not a second one announcing it"
    );
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn state_actions_a_creche_contract_change_is_signed_from_the_sms_and_moves_on_sqlite() {
    crèche_contract_change_is_signed_from_the_sms(Backend::Sqlite).await;
}

#[tokio::test]
async fn state_actions_a_creche_contract_change_is_signed_from_the_sms_and_moves_on_postgres() {
    crèche_contract_change_is_signed_from_the_sms(Backend::Postgres).await;
}

/// The shortest path of transitions from the initial state to `target`.
fn path_to(def: &ProcessDefinition, target: &str) -> Option<Vec<String>> {
    let mut prev: HashMap<String, String> = HashMap::new();
    let mut seen = HashSet::from([def.initial_state.clone()]);
    let mut todo = VecDeque::from([def.initial_state.clone()]);
    while let Some(s) = todo.pop_front() {
        if s == target {
            let mut path = vec![s.clone()];
            let mut at = s;
            while let Some(p) = prev.get(&at) {
                path.push(p.clone());
                at = p.clone();
            }
            path.reverse();
            return Some(path);
        }
        for t in def.transitions_from(&s) {
            if seen.insert(t.to.clone()) {
                prev.insert(t.to.clone(), s.clone());
                todo.push_back(t.to.clone());
            }
        }
    }
    None
}

/// One dossier per state with actions, driven there by the shortest path
/// (every guard satisfied beforehand), the last transition sent twice.
struct Drive {
    process: String,
    dossier_id: String,
    /// The states entered, initial first.
    path: Vec<String>,
}

async fn every_procedure_acts_once_per_entry(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env
        .spawn(&[
            Role::Dossier,
            Role::Signature,
            Role::Notification,
            Role::Appointment,
        ])
        .await;
    let catalog = Catalog::shipped().unwrap();
    let groups: Vec<&str> = catalog
        .latest()
        .filter_map(|p| p.restricted_group.as_deref())
        .collect();
    let mut d = dossier_client(
        app.grpc_addr,
        &env.token_in_groups("admin-1", &[TokenRole::Admin], &groups),
    )
    .await;
    let mut drives = Vec::new();
    let mut unreachable = Vec::new();
    let mut n = 0;
    for def in catalog.latest() {
        for s in def.states.iter().filter(|s| !s.actions.is_empty()) {
            let Some(path) = path_to(def, &s.id) else {
                // Entered only by a timer (tested with timers elsewhere).
                unreachable.push(format!("{}:{}", def.id, s.id));
                continue;
            };
            n += 1;
            let phone = format!("+336{:08}", 10_000_000 + n);
            let citizen_id = citizen(&mut d, "Camille", &format!("Martin{n}"), &phone).await;
            let open = dpb::OpenDossierRequest {
                citizen_id,
                process_id: def.id.clone(),
                request_id: format!("open-{}-{n}", env.id),
            };
            let dossier = d.open_dossier(open.clone()).await.unwrap().into_inner();
            // Opening again with the same request id enters nothing again.
            let again = d.open_dossier(open).await.unwrap().into_inner();
            assert_eq!(again.id, dossier.id);
            let id = dossier.id.clone();
            for doc in &def.documents {
                d.add_document(dpb::AddDocumentRequest {
                    dossier_id: id.clone(),
                    filename: format!("{}.pdf", doc.id),
                    media_type: "application/pdf".into(),
                    document_type: doc.id.clone(),
                    content: guichet_signature::pdf::simple_document(&doc.title, &[&doc.id]),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
            d.add_note(dpb::AddNoteRequest {
                dossier_id: id.clone(),
                visibility: dpb::NoteVisibility::Private as i32,
                text: "Dossier suivi par l'agent".into(),
                request_id: String::new(),
            })
            .await
            .unwrap();
            for (kind, status) in [("appointment", "booked"), ("signature", "signed")] {
                d.link_dossier(dpb::LinkDossierRequest {
                    dossier_id: id.clone(),
                    link: Some(dpb::Link {
                        kind: kind.into(),
                        ref_id: format!("{kind}-{n}"),
                        status: status.into(),
                        update_time: None,
                    }),
                })
                .await
                .unwrap();
            }
            for (i, to) in path.iter().enumerate().skip(1) {
                let rq = format!("{id}-{i}");
                let first = transition(&mut d, &id, to, &rq).await;
                if i == path.len() - 1 {
                    let replay = transition(&mut d, &id, to, &rq).await;
                    assert_eq!(replay.revision, first.revision, "{}: replayed", def.id);
                }
            }
            drives.push(Drive {
                process: def.id.clone(),
                dossier_id: id,
                path,
            });
        }
    }
    assert!(drives.len() >= 45, "only {} states driven", drives.len());

    for drive in &drives {
        let def = catalog.get_latest(&drive.process).unwrap();
        let expected: Vec<(String, String)> = drive
            .path
            .iter()
            .flat_map(|s| def.state(s).unwrap().actions.iter())
            .map(|a| {
                (
                    a.kind.clone(),
                    a.template
                        .clone()
                        .or(a.appointment_type.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let what = format!("{} → {}", drive.process, drive.path.join(" → "));
        let entries = eventually(&what, StdDuration::from_secs(60), || {
            let mut d = d.clone();
            let id = drive.dossier_id.clone();
            let want = expected.len();
            async move {
                let entries = timeline(&mut d, &id).await;
                (action_entries(&entries).len() >= want).then_some(entries)
            }
        })
        .await;
        let done = action_entries(&entries);
        assert_eq!(done.len(), expected.len(), "{what}: {done:?}");
        for (kind, name) in &expected {
            let want = (match kind.as_str() {
                "send_message" => dpb::EntryKind::MessageSent,
                "request_signature" => dpb::EntryKind::Signature,
                _ => dpb::EntryKind::Task,
            }) as i32;
            assert!(
                done.iter().any(|e| e.kind == want),
                "{what}: no {kind} entry for {name}"
            );
        }
        let g = guidance(&mut d, &drive.dossier_id).await;
        for a in &g.actions {
            assert_eq!(a.status, "done", "{what}: {a:?}");
        }
    }

    // Each message reached the citizen once per entry, never twice.
    let mut want: BTreeMap<(String, String), usize> = BTreeMap::new();
    for drive in &drives {
        let def = catalog.get_latest(&drive.process).unwrap();
        for s in &drive.path {
            for a in &def.state(s).unwrap().actions {
                if a.kind == "send_message" {
                    *want
                        .entry((drive.dossier_id.clone(), a.template.clone().unwrap()))
                        .or_default() += 1;
                }
            }
        }
    }
    for ((dossier_id, template), count) in &want {
        let got = eventually(
            &format!("{template} for {dossier_id}"),
            StdDuration::from_secs(30),
            || {
                let env = &env;
                async move {
                    let n = sms_of(env, dossier_id, template).len();
                    (n >= *count).then_some(n)
                }
            },
        )
        .await;
        assert_eq!(got, *count, "{template} for {dossier_id}");
    }
    eprintln!(
        "state actions: {} entries driven; entered by timers only: {}",
        drives.len(),
        unreachable.join(", ")
    );
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn state_actions_every_shipped_procedure_acts_once_per_state_entry_sqlite() {
    every_procedure_acts_once_per_entry(Backend::Sqlite).await;
}

#[tokio::test]
async fn state_actions_every_shipped_procedure_acts_once_per_state_entry_postgres() {
    every_procedure_acts_once_per_entry(Backend::Postgres).await;
}

#[tokio::test]
async fn state_actions_an_action_that_cannot_run_is_handed_to_the_agent() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&[Role::Dossier, Role::Notification]).await;
    let mut d = dossier_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;
    // Known by name only: no phone, no email to write to.
    let citizen_id = d
        .resolve_citizen(dpb::ResolveCitizenRequest {
            hint: Some(CitizenHint {
                given_name: "Paul".into(),
                family_name: "Sanscontact".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .citizen
        .unwrap()
        .id;
    let dossier = d
        .open_dossier(dpb::OpenDossierRequest {
            citizen_id,
            process_id: "creche-modification-contrat".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = dossier.id.clone();
    transition(&mut d, &id, "attente-precisions", "ask-1").await;
    let g = eventually(
        "the failed action shown",
        StdDuration::from_secs(20),
        || {
            let mut d = d.clone();
            let id = id.clone();
            async move {
                let g = guidance(&mut d, &id).await;
                (g.actions.first()?.status == "failed").then_some(g)
            }
        },
    )
    .await;
    assert_eq!(
        g.actions[0].error,
        "l'usager n'a ni numéro de téléphone ni adresse électronique"
    );
    let entries = timeline(&mut d, &id).await;
    let tasks: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == dpb::EntryKind::Task as i32)
        .collect();
    assert_eq!(tasks.len(), 1, "{entries:?}");
    assert!(
        tasks[0].summary.starts_with(
            "Action automatique non réalisée : Envoi à l'usager du message « pieces-manquantes »"
        ),
        "{}",
        tasks[0].summary
    );
    assert!(action_entries(&entries).is_empty(), "nothing was sent");
    app.stop().await.unwrap();
    env.cleanup().await;
}
