//! The dossier API as agents, supervisors and other systems use it: the
//! process engine's refusals and guidance, documents, restricted dossiers,
//! version migration, reopening, and the events every change publishes.

use guichet::Role;
use guichet_platform::auth::Role as TokenRole;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::{Channel, CitizenHint};
use guichet_testkit::{Backend, TestEnv, dossier_client, header};
use tonic::Code;

use crate::dossier_store::fixture_processes;

type Client = dpb::dossier_service_client::DossierServiceClient<guichet_testkit::Authed>;

pub(crate) async fn citizen(c: &mut Client, family: &str, phone: &str) -> String {
    c.resolve_citizen(dpb::ResolveCitizenRequest {
        hint: Some(CitizenHint {
            given_name: "Marie".into(),
            family_name: family.into(),
            phones: vec![phone.into()],
            ..Default::default()
        }),
        request_id: String::new(),
        candidates_only: false,
    })
    .await
    .expect("resolve")
    .into_inner()
    .citizen
    .expect("citizen")
    .id
}

pub(crate) async fn open(c: &mut Client, citizen_id: &str, process: &str) -> dpb::Dossier {
    c.open_dossier(dpb::OpenDossierRequest {
        citizen_id: citizen_id.into(),
        process_id: process.into(),
        request_id: String::new(),
    })
    .await
    .expect("open")
    .into_inner()
}

fn transition(id: &str, to: &str, reason: &str) -> dpb::TransitionDossierRequest {
    dpb::TransitionDossierRequest {
        id: id.into(),
        to_state: to.into(),
        reason: reason.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_engine_refuses_with_reasons_and_guides_the_agent() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let dir = fixture_processes().display().to_string();
    let app = env
        .spawn_with(
            &[Role::Dossier],
            env.config_with(&[("GUICHET__DOSSIER__PROCESSES_DIR", dir.as_str())]),
        )
        .await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);
    let mut a = dossier_client(app.grpc_addr, &agent).await;
    let mut sup = dossier_client(app.grpc_addr, &supervisor).await;
    let cid = citizen(&mut a, "Garnier", "06 10 20 30 40").await;
    let d = open(&mut a, &cid, "essai").await;
    assert_eq!(d.state, "depot");
    assert!(d.reference.starts_with("VIN-"));

    // Guidance: what to check, the checklist, the next step blocked.
    let g = a
        .get_guidance(dpb::GetGuidanceRequest {
            dossier_id: d.reference.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.guidance, "Vérifiez le justificatif de domicile.");
    assert_eq!(g.checklist.len(), 2);
    assert!(g.checklist.iter().all(|i| !i.provided));
    assert_eq!(g.next_actions.len(), 1);
    assert_eq!(g.next_actions[0].label, "Valider la complétude");
    assert!(!g.next_actions[0].allowed);
    assert_eq!(
        g.next_actions[0].blocked_reason,
        "Pièces manquantes : Justificatif de domicile"
    );
    assert_eq!(g.sla_status(), dpb::SlaStatus::OnTime);
    assert_eq!(g.actions[0].template, "accuse-reception");

    // A transition the process does not have: refused, with what is allowed.
    let e = a
        .transition_dossier(transition(&d.id, "accordee", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("(possibles : instruction)"),
        "{}",
        e.message()
    );
    // A guard that does not hold: refused with the missing piece.
    let e = a
        .transition_dossier(transition(&d.id, "instruction", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("Justificatif de domicile"),
        "{}",
        e.message()
    );

    // The document arrives: stored by content, the checklist ticks.
    let e = a
        .add_document(dpb::AddDocumentRequest {
            dossier_id: d.id.clone(),
            filename: "domicile.exe".into(),
            media_type: "application/x-msdownload".into(),
            content: b"MZ".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let doc = a
        .add_document(dpb::AddDocumentRequest {
            dossier_id: d.id.clone(),
            filename: "facture-edf.pdf".into(),
            media_type: "application/pdf".into(),
            document_type: "piece-a".into(),
            source_channel: Channel::Counter as i32,
            content: b"%PDF-1.7 justificatif".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(doc.sha256.len(), 64);
    let back = a
        .get_document(dpb::GetDocumentRequest {
            id: doc.id.clone(),
            include_content: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.content, b"%PDF-1.7 justificatif");
    let g = a
        .get_guidance(dpb::GetGuidanceRequest {
            dossier_id: d.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        g.checklist
            .iter()
            .find(|i| i.document_id == "piece-a")
            .unwrap()
            .provided
    );
    assert!(g.next_actions[0].allowed);

    // A stale revision: aborted. The current one: applied, idempotently.
    let current = a
        .get_dossier(dpb::GetDossierRequest { id: d.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut stale = transition(&d.id, "instruction", "");
    stale.expected_revision = current.revision - 1;
    assert_eq!(
        a.transition_dossier(stale).await.unwrap_err().code(),
        Code::Aborted
    );
    let mut req = transition(&d.id, "instruction", "");
    req.expected_revision = current.revision;
    req.request_id = "click-1".into();
    let moved = a
        .transition_dossier(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.state, "instruction");
    let again = a.transition_dossier(req).await.unwrap().into_inner();
    assert_eq!(
        again.revision, moved.revision,
        "a retried click changes nothing"
    );

    // A refusal needs a reason; accepting needs a note.
    let e = a
        .transition_dossier(transition(&d.id, "refusee", " "))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("reason"));
    let e = a
        .transition_dossier(transition(&d.id, "accordee", ""))
        .await
        .unwrap_err();
    assert!(e.message().contains("note"), "{}", e.message());
    a.add_note(dpb::AddNoteRequest {
        dossier_id: d.id.clone(),
        visibility: dpb::NoteVisibility::Private as i32,
        text: "Dossier complet, avis favorable.".into(),
        request_id: String::new(),
    })
    .await
    .unwrap();
    let done = a
        .transition_dossier(transition(&d.id, "accordee", ""))
        .await
        .unwrap()
        .into_inner();
    assert!(done.closed);
    assert!(done.close_time.is_some());

    // Reopening a closed dossier is a supervisor's transition.
    let e = a
        .transition_dossier(transition(&d.id, "instruction", "erreur"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // The process reopens on a quoted reference (routing, or a supervisor).
    let reopened = sup
        .reopen_dossier(dpb::ReopenDossierRequest {
            id: d.reference.clone(),
            reason: "Courriel de l'usager citant le dossier".into(),
            request_id: "intake-42".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reopened.state, "instruction");
    assert!(!reopened.closed);
    let e = sup
        .reopen_dossier(dpb::ReopenDossierRequest {
            id: d.id.clone(),
            reason: "encore".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "not closed");

    // The whole story is on the timeline, newest first; filters work.
    let tl = a
        .list_dossier_timeline(dpb::ListDossierTimelineRequest {
            dossier_id: d.id.clone(),
            page_size: 50,
            page_token: String::new(),
            filter: Some(dpb::TimelineFilter {
                kinds: vec![dpb::EntryKind::StateChange as i32],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let summaries: Vec<_> = tl.entries.iter().map(|e| e.summary.as_str()).collect();
    assert_eq!(summaries.len(), 3, "{summaries:?}");
    assert!(summaries[0].starts_with("Dossier rouvert"), "{summaries:?}");

    // Every change is an event on EVENTS, and audited.
    let headers = env.stream_headers("EVENTS", 10).await;
    let types: Vec<String> = headers.iter().map(|h| header(h, "ce-type")).collect();
    for t in [
        "dossier_opened",
        "dossier_state_changed",
        "dossier_updated",
        "audit_recorded",
    ] {
        assert!(
            types.iter().any(|x| x.ends_with(t)),
            "{t} missing in {types:?}"
        );
    }
    let audit = sup
        .list_audit_entries(dpb::ListAuditEntriesRequest {
            resource: format!("dossiers/{}", d.id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<_> = audit.entries.iter().map(|e| e.action.as_str()).collect();
    for a in [
        "dossier.open",
        "dossier.transition",
        "dossier.document",
        "dossier.note",
        "dossier.reopen",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn restricted_dossiers_are_for_their_group_only_and_every_read_is_audited() {
    let Some(env) = TestEnv::new(Backend::Postgres).await else {
        return;
    };
    let app = env.spawn(&[Role::Dossier]).await;
    let service = env.token("admin-1", &[TokenRole::Admin]);
    let social = env.token_in_groups("as-1", &[TokenRole::Agent], &["social"]);
    let front = env.token("agent-2", &[TokenRole::Agent]);
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);
    let mut svc = dossier_client(app.grpc_addr, &service).await;
    let cid = citizen(&mut svc, "Fontaine", "06 99 88 77 66").await;
    let ccas = open(&mut svc, &cid, "aide-sociale-ccas").await;
    let other = open(&mut svc, &cid, "acte-etat-civil").await;

    let mut front_c = dossier_client(app.grpc_addr, &front).await;
    let e = front_c
        .get_dossier(dpb::GetDossierRequest {
            id: ccas.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Nor may an agent outside the group open one (the answer would carry it).
    let e = front_c
        .open_dossier(dpb::OpenDossierRequest {
            citizen_id: cid.clone(),
            process_id: "aide-sociale-ccas".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("réservée au groupe"),
        "{}",
        e.message()
    );
    let denied = dossier_client(app.grpc_addr, &supervisor)
        .await
        .list_audit_entries(dpb::ListAuditEntriesRequest {
            resource: "processes/aide-sociale-ccas".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        denied
            .entries
            .iter()
            .any(|e| e.actor == "agent-2" && e.action == "dossier.open_denied"),
        "{:?}",
        denied.entries
    );
    let still = front_c
        .list_dossiers(dpb::ListDossiersRequest {
            citizen_id: cid.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.dossiers.len(), 1, "no second dossier was opened");
    let mut social_open = dossier_client(app.grpc_addr, &social).await;
    social_open
        .open_dossier(dpb::OpenDossierRequest {
            citizen_id: cid.clone(),
            process_id: "aide-sociale-ccas".into(),
            request_id: "social-open-1".into(),
        })
        .await
        .expect("the group opens it");
    let listed = front_c
        .list_dossiers(dpb::ListDossiersRequest {
            citizen_id: cid.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.dossiers.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids, vec![other.id.clone()], "the social dossier is hidden");
    let history = front_c
        .list_citizen_timeline(dpb::ListCitizenTimelineRequest {
            citizen_id: cid.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(history.entries.iter().all(|e| e.dossier_id != ccas.id));

    let mut social_c = dossier_client(app.grpc_addr, &social).await;
    let seen = social_c
        .get_dossier(dpb::GetDossierRequest {
            id: ccas.reference.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.process_id, "aide-sociale-ccas");
    let audit = dossier_client(app.grpc_addr, &supervisor)
        .await
        .list_audit_entries(dpb::ListAuditEntriesRequest {
            resource: format!("dossiers/{}", ccas.id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let reads: Vec<_> = audit
        .entries
        .iter()
        .filter(|e| e.action.starts_with("dossier.read"))
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert!(reads.contains(&("as-1", "dossier.read")), "{reads:?}");
    assert!(
        reads.contains(&("agent-2", "dossier.read_denied")),
        "{reads:?}"
    );
    app.stop().await.expect("stop");
    env.cleanup().await;
}

fn by_hash(dossier_id: &str, sha256: &str, size_bytes: u64) -> dpb::AddDocumentRequest {
    dpb::AddDocumentRequest {
        dossier_id: dossier_id.into(),
        filename: "copie.pdf".into(),
        media_type: "application/pdf".into(),
        stored: Some(guichet_proto::intake::v1::AttachmentRef {
            sha256: sha256.into(),
            size_bytes,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn audited(
    app_addr: std::net::SocketAddr,
    token: &str,
    dossier_id: &str,
) -> Vec<(String, String)> {
    dossier_client(app_addr, token)
        .await
        .list_audit_entries(dpb::ListAuditEntriesRequest {
            resource: format!("dossiers/{dossier_id}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| (e.actor, e.action))
        .collect()
}

/// Issue 24: a restricted dossier's document is not readable through its
/// hash. An agent outside the group cannot attach it to a dossier of theirs
/// (and the attempt is audited on the restricted dossier); a declared size
/// must be the stored one; and when a member copies it to an open dossier,
/// each read of the content is recorded on the restricted dossier too.
async fn restricted_documents_by_hash(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env.spawn(&[Role::Dossier, Role::Signature]).await;
    let service = env.token("admin-1", &[TokenRole::Admin]);
    let social = env.token_in_groups("as-1", &[TokenRole::Agent], &["social"]);
    let front = env.token("agent-2", &[TokenRole::Agent]);
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);
    let mut svc = dossier_client(app.grpc_addr, &service).await;
    let cid = citizen(&mut svc, "Fontaine", "06 99 88 77 66").await;
    let ccas = open(&mut svc, &cid, "aide-sociale-ccas").await;
    let own = open(&mut svc, &cid, "acte-etat-civil").await;
    let content = b"%PDF-1.7 avis d'imposition confidentiel".to_vec();
    let secret = svc
        .add_document(dpb::AddDocumentRequest {
            dossier_id: ccas.id.clone(),
            filename: "avis.pdf".into(),
            media_type: "application/pdf".into(),
            content: content.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let mut front_c = dossier_client(app.grpc_addr, &front).await;
    let e = front_c
        .add_document(by_hash(&own.id, &secret.sha256, content.len() as u64))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("stored.sha256"), "{}", e.message());
    let docs = front_c
        .list_documents(dpb::ListDocumentsRequest {
            dossier_id: own.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(docs.documents.is_empty(), "nothing was attached");
    assert!(
        audited(app.grpc_addr, &supervisor, &ccas.id)
            .await
            .contains(&("agent-2".into(), "document.reference_denied".into())),
        "the attempt is recorded on the restricted dossier"
    );

    // Nor have it signed: the signing page would show it to anyone with
    // the link. A stored document is signed within the dossier holding it,
    // by whoever may read that dossier; nothing is created otherwise.
    let mut sign = guichet_testkit::signature_client(app.grpc_addr, &front).await;
    let by_hash_signature =
        |dossier_id: &str| guichet_proto::signature::v1::CreateSignatureRequestRequest {
            dossier_id: dossier_id.into(),
            document_sha256: secret.sha256.clone(),
            title: "Avis".into(),
            signers: vec![guichet_proto::signature::v1::Signer {
                name: "Jean Fontaine".into(),
                phone: "06 99 88 77 66".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
    for (dossier_id, expected, field) in [
        (ccas.id.as_str(), Code::PermissionDenied, "dossier_id"),
        (own.id.as_str(), Code::PermissionDenied, "document_sha256"),
        ("", Code::InvalidArgument, "dossier_id"),
    ] {
        let e = sign
            .create_signature_request(by_hash_signature(dossier_id))
            .await
            .unwrap_err();
        assert_eq!(e.code(), expected, "{dossier_id}: {e:?}");
        assert!(e.message().contains(field), "{}", e.message());
    }
    let made = guichet_testkit::signature_client(app.grpc_addr, &supervisor)
        .await
        .list_signature_requests(
            guichet_proto::signature::v1::ListSignatureRequestsRequest::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert!(made.signature_requests.is_empty(), "{made:?}");

    // Content the agent may read can be referenced; a false size cannot.
    let mine = front_c
        .add_document(dpb::AddDocumentRequest {
            dossier_id: own.id.clone(),
            filename: "justificatif.pdf".into(),
            media_type: "application/pdf".into(),
            content: b"%PDF-1.7 justificatif".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = front_c
        .add_document(by_hash(&own.id, &mine.sha256, 10_000_000))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("stored.size_bytes"), "{}", e.message());
    let copy = front_c
        .add_document(by_hash(&own.id, &mine.sha256, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(copy.size_bytes, mine.size_bytes, "the stored size is kept");

    // A member of the group copies it to an open dossier: reading it there
    // is a read of the restricted dossier's document.
    let mut social_c = dossier_client(app.grpc_addr, &social).await;
    let shared = social_c
        .add_document(by_hash(&own.id, &secret.sha256, content.len() as u64))
        .await
        .unwrap()
        .into_inner();
    let got = front_c
        .get_document(dpb::GetDocumentRequest {
            id: shared.id.clone(),
            include_content: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.content, content);
    assert!(
        audited(app.grpc_addr, &supervisor, &ccas.id)
            .await
            .contains(&("agent-2".into(), "document.read".into())),
        "the read is recorded on the restricted dossier"
    );
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn restricted_documents_are_not_readable_by_their_hash_on_sqlite() {
    restricted_documents_by_hash(Backend::Sqlite).await;
}

#[tokio::test]
async fn restricted_documents_are_not_readable_by_their_hash_on_postgres() {
    restricted_documents_by_hash(Backend::Postgres).await;
}

#[tokio::test]
async fn publishing_a_version_migrates_open_dossiers_only_with_a_full_mapping() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    // Version 1 only at first: dossiers open on it.
    let dir = env.dir.path().join("processes");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["a-qualifier.toml", "essai.toml"] {
        std::fs::copy(fixture_processes().join(f), dir.join(f)).unwrap();
    }
    let dir_s = dir.display().to_string();
    let app = env
        .spawn_with(
            &[Role::Dossier],
            env.config_with(&[
                ("GUICHET__DOSSIER__PROCESSES_DIR", dir_s.as_str()),
                ("GUICHET__DOSSIER__CATALOG_RELOAD_SECS", "1"),
            ]),
        )
        .await;
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);
    let mut s = dossier_client(app.grpc_addr, &supervisor).await;
    let cid = citizen(&mut s, "Perrin", "06 12 12 12 12").await;
    let in_depot = open(&mut s, &cid, "essai").await;
    let in_instruction = open(&mut s, &cid, "essai").await;
    s.add_document(dpb::AddDocumentRequest {
        dossier_id: in_instruction.id.clone(),
        filename: "a.pdf".into(),
        media_type: "application/pdf".into(),
        document_type: "piece-a".into(),
        content: b"%PDF".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    s.transition_dossier(transition(&in_instruction.id, "instruction", ""))
        .await
        .unwrap();

    // Publish version 2 while running (hot reload), and a broken file that
    // must not replace anything.
    std::fs::write(dir.join("casse.toml"), "id = \"casse\"\nversion = 1\n").unwrap();
    std::fs::copy(
        fixture_processes().join("../essai.v2.toml"),
        dir.join("essai.v2.toml"),
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let p = s
        .get_process(dpb::GetProcessRequest {
            id: "essai".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p.version, 1,
        "a broken file blocks the reload: the running catalog stays"
    );
    std::fs::remove_file(dir.join("casse.toml")).unwrap();
    let p = guichet_testkit::eventually(
        "version 2 published",
        std::time::Duration::from_secs(10),
        || {
            let mut s = s.clone();
            async move {
                let p = s
                    .get_process(dpb::GetProcessRequest {
                        id: "essai".into(),
                        version: 0,
                    })
                    .await
                    .ok()?
                    .into_inner();
                (p.version == 2).then_some(p)
            }
        },
    )
    .await;
    assert_eq!(p.versions, vec![1, 2]);
    // New dossiers use version 2; open ones stay on version 1.
    assert_eq!(open(&mut s, &cid, "essai").await.process_version, 2);
    let still = s
        .get_dossier(dpb::GetDossierRequest {
            id: in_instruction.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (still.process_version, still.state.as_str()),
        (1, "instruction")
    );

    let mut req = dpb::MigrateDossiersRequest {
        process_id: "essai".into(),
        from_version: 1,
        to_version: 2,
        dry_run: true,
        ..Default::default()
    };
    req.state_mapping.insert("depot".into(), "depot".into());
    let e = s.migrate_dossiers(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("instruction"), "{}", e.message());
    req.state_mapping
        .insert("instruction".into(), "examen".into());
    let plan = s.migrate_dossiers(req.clone()).await.unwrap().into_inner();
    assert!(!plan.applied);
    assert_eq!(plan.dossiers.len(), 2);
    let unchanged = s
        .get_dossier(dpb::GetDossierRequest {
            id: in_instruction.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged.process_version, 1, "a dry run changes nothing");
    req.dry_run = false;
    let done = s.migrate_dossiers(req).await.unwrap().into_inner();
    assert!(done.applied);
    let migrated = s
        .get_dossier(dpb::GetDossierRequest {
            id: in_instruction.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (migrated.process_version, migrated.state.as_str()),
        (2, "examen")
    );
    let migrated = s
        .get_dossier(dpb::GetDossierRequest {
            id: in_depot.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (migrated.process_version, migrated.state.as_str()),
        (2, "depot")
    );
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[test]
fn processes_check_validates_a_catalog_offline_and_names_the_bad_line() {
    let ok = std::process::Command::new(guichet_testkit::guichet_bin())
        .args([
            "processes",
            "check",
            guichet_testkit::processes_dir().as_str(),
        ])
        .output()
        .expect("run guichet processes check");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(out.contains("ok  passeport v1"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let broken = std::fs::read_to_string(fixture_processes().join("essai.toml"))
        .unwrap()
        .replace(
            "guards = [\"note_present\"]",
            "guards = [\"avis_du_maire\"]",
        );
    std::fs::write(dir.path().join("essai.toml"), &broken).unwrap();
    let bad = std::process::Command::new(guichet_testkit::guichet_bin())
        .args(["processes", "check"])
        .arg(dir.path())
        .output()
        .expect("run guichet processes check");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    let line = broken
        .lines()
        .position(|l| l.contains("avis_du_maire"))
        .unwrap()
        + 1;
    assert!(
        err.contains("essai.toml")
            && err.contains("avis_du_maire")
            && err.contains(&format!("line {line}")),
        "{err}"
    );
}

#[tokio::test]
async fn a_dossier_can_concern_several_citizens() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&[Role::Dossier]).await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let admin = env.token("admin-1", &[TokenRole::Admin]);
    let mut a = dossier_client(app.grpc_addr, &agent).await;
    let first = citizen(&mut a, "Moreau", "06 01 01 01 01").await;
    let spouse = citizen(&mut a, "Lambert", "06 02 02 02 02").await;
    let d = open(&mut a, &first, "mariage").await;
    let update = |ids: Vec<String>| dpb::UpdateDossierRequest {
        dossier: Some(dpb::Dossier {
            id: d.id.clone(),
            other_citizen_ids: ids,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["other_citizen_ids".into()],
        }),
    };
    let e = a
        .update_dossier(update(vec!["nobody".into()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("other_citizen_ids[0]")
            || format!("{:?}", e.details()).contains("other_citizen_ids[0]")
    );
    let updated = a
        .update_dossier(update(vec![spouse.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.other_citizen_ids, vec![spouse.clone()]);
    // The spouse's dossiers include it.
    let theirs = a
        .list_dossiers(dpb::ListDossiersRequest {
            citizen_id: spouse.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(theirs.dossiers.len(), 1);
    assert_eq!(theirs.dossiers[0].id, d.id);
    // The open dossier keeps the spouse's data too.
    let e = dossier_client(app.grpc_addr, &admin)
        .await
        .erase_citizen(dpb::EraseCitizenRequest {
            citizen_id: spouse.clone(),
            reason: "demande".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains(&d.reference), "{}", e.message());
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn dossier_transition_refusals_are_worded_in_french_for_the_agent() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let dir = fixture_processes().display().to_string();
    let app = env
        .spawn_with(
            &[Role::Dossier],
            env.config_with(&[("GUICHET__DOSSIER__PROCESSES_DIR", dir.as_str())]),
        )
        .await;
    let mut a = dossier_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;
    let mut svc = dossier_client(app.grpc_addr, &env.service_token("signature", "dossier")).await;
    let cid = citizen(&mut a, "Lefèvre", "06 11 22 33 44").await;
    let d = open(&mut a, &cid, "essai").await;

    let e = a
        .transition_dossier(transition(&d.id, "accordee", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains(
            "La démarche « Démarche d'essai » (version 1) ne permet pas de passer de « depot » à « accordee »"
        ),
        "{}",
        e.message()
    );
    let e = svc
        .transition_dossier(transition(&d.id, "instruction", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "Le passage de « depot » à « instruction » est réservé aux rôles : agent."
    );
    let mut stale = transition(&d.id, "instruction", "");
    stale.expected_revision = d.revision + 5;
    let e = a.transition_dossier(stale).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert!(
        e.message()
            .starts_with("Le dossier a changé depuis votre lecture"),
        "{}",
        e.message()
    );
    app.stop().await.unwrap();
    env.cleanup().await;
}

/// A document is kept under the type it really has: HTML declared as a PDF
/// (it would open in a browser as a page) or a PNG that is not one is
/// refused, naming the field; the real thing is kept.
#[tokio::test]
async fn a_document_must_be_what_its_media_type_says() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&[Role::Dossier]).await;
    let mut c = dossier_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;
    let cid = citizen(&mut c, "Garnier", "06 31 31 31 31").await;
    let d = open(&mut c, &cid, "acte-etat-civil").await;
    let add = |media_type: &str, content: &[u8]| dpb::AddDocumentRequest {
        dossier_id: d.id.clone(),
        filename: "piece".into(),
        media_type: media_type.into(),
        content: content.to_vec(),
        ..Default::default()
    };
    for (media_type, content) in [
        (
            "application/pdf",
            &b"<!DOCTYPE html><script>alert(1)</script>"[..],
        ),
        ("image/png", &b"GIF89a not a png"[..]),
        ("image/jpeg", &b"%PDF-1.7"[..]),
        ("text/plain", &b"<!doctype html><p>page</p>"[..]),
    ] {
        let e = c.add_document(add(media_type, content)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{media_type}");
        assert!(e.message().contains("content"), "{}", e.message());
    }
    for (media_type, content) in [
        (
            "application/pdf",
            &b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"[..],
        ),
        ("image/png", &b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..]),
        ("text/plain", "Bonjour, voici ma demande.".as_bytes()),
    ] {
        c.add_document(add(media_type, content))
            .await
            .unwrap_or_else(|e| panic!("{media_type}: {e:?}"));
    }
    app.stop().await.expect("stop");
    env.cleanup().await;
}

/// A page token is the last id of the previous page, as the API issued it:
/// a forged or huge one is refused with the field, a real one pages on.
#[tokio::test]
async fn page_tokens_are_the_apis_own() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&[Role::Dossier]).await;
    let mut c = dossier_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;
    let cid = citizen(&mut c, "Leroy", "06 41 41 41 41").await;
    for _ in 0..3 {
        open(&mut c, &cid, "acte-etat-civil").await;
    }
    let page = |token: String| dpb::ListDossiersRequest {
        citizen_id: cid.clone(),
        page_size: 2,
        page_token: token,
        ..Default::default()
    };
    let first = c
        .list_dossiers(page(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.dossiers.len(), 2);
    let second = c
        .list_dossiers(page(first.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.dossiers.len(), 1);
    for forged in ["x".repeat(100_000), "' OR 1=1 --".to_owned()] {
        let e = c.list_dossiers(page(forged)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("page_token"), "{}", e.message());
    }
    let e = c
        .list_citizens(dpb::ListCitizensRequest {
            query: "Leroy".into(),
            page_token: "z".repeat(65),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await.expect("stop");
    env.cleanup().await;
}
