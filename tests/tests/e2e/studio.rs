//! The process studio as a town's process owner uses it: she opens the
//! passport procedure (its diagram and tables, its open dossiers by state),
//! makes a draft of version 2 that adds a state, sees the validation error
//! of a transition to a state that does not exist at its line, fixes it in
//! the text, walks a test dossier through the draft, publishes it with a
//! reason and moves the two open dossiers to the new version with a state
//! mapping; an agent then finds them on version 2 with the migration on
//! their timeline, and sees no studio. axe-core runs on every page. Over
//! gRPC, on SQLite and PostgreSQL: a published version reaches another
//! replica, drafts are checked and kept, the catalog exports and imports as
//! files (all or nothing), a deployment that keeps its processes as files
//! gets a file, and only process owners and admins get in.

use std::time::Duration;

use guichet::Role;
use guichet_platform::auth::Role as AuthRole;
use guichet_portal::PortalHandle;
use guichet_proto::dossier::v1 as dpb;
use guichet_testkit::browser::{Browser, fantoccini::Locator};
use guichet_testkit::*;
use tonic::Code;

type Studio = dpb::process_studio_service_client::ProcessStudioServiceClient<Authed>;

/// The field a refusal names (its `BadRequest` detail).
fn bad_field(e: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    e.get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

async fn studio_client(addr: std::net::SocketAddr, token: &str) -> Studio {
    dpb::process_studio_service_client::ProcessStudioServiceClient::with_interceptor(
        channel(addr).await,
        Bearer(token.into()),
    )
}

async fn open_passport(
    d: &mut dpb::dossier_service_client::DossierServiceClient<Authed>,
    family: &str,
    phone: &str,
) -> dpb::Dossier {
    let citizen = crate::dossier_api::citizen(d, family, phone).await;
    crate::dossier_api::open(d, &citizen, "passeport").await
}

async fn click_css(b: &Browser, css: &str) {
    b.client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

async fn open_details(b: &Browser, summary: &str) {
    let xpath = format!("//summary[contains(normalize-space(.), '{summary}')]");
    b.client
        .find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("summary `{summary}`: {e}"))
        .click()
        .await
        .expect("open details");
}

#[tokio::test]
async fn a_process_owner_changes_tries_publishes_and_migrates_the_passport_procedure() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    crate::portal::account(
        &portal,
        "clara",
        "Clara Procédures",
        &[AuthRole::ProcessOwner],
        &[],
    )
    .await;
    crate::portal::account(&portal, "aline", "Aline Accueil", &[AuthRole::Agent], &[]).await;
    let service = env.token("agent-test", &[AuthRole::Agent]);
    let mut d = dossier_client(app.grpc_addr, &service).await;
    let first = open_passport(&mut d, "Moreau", "06 11 22 33 44").await;
    let second = open_passport(&mut d, "Lefèvre", "06 55 66 77 88").await;
    assert_eq!(
        (first.process_version, first.state.as_str()),
        (1, "demande")
    );
    let photo = d
        .add_document(dpb::AddDocumentRequest {
            dossier_id: first.id.clone(),
            filename: "photo d'identité.png".into(),
            media_type: "image/png".into(),
            document_type: "photo".into(),
            content: b"\x89PNG une photo".to_vec(),
            ..Default::default()
        })
        .await
        .expect("add a document")
        .into_inner();

    // The catalog by domain, then the procedure with its open dossiers.
    crate::portal::log_in(&b, &base, "clara").await;
    b.wait_text("Se déconnecter", Duration::from_secs(10)).await;
    b.goto(&format!("{base}/studio")).await;
    let text = b
        .wait_text("Studio des procédures", Duration::from_secs(10))
        .await;
    assert!(
        text.contains("Titres d'identité") && text.contains("Passeport"),
        "{text}"
    );
    b.check_page("studio-catalogue").await;
    b.goto(&format!("{base}/studio/procedure/passeport")).await;
    let text = b
        .wait_text("Versions et dossiers ouverts", Duration::from_secs(10))
        .await;
    assert!(
        text.contains("Demande et prise de rendez-vous : 2"),
        "{text}"
    );
    assert!(
        text.contains("Relevez les empreintes digitales"),
        "the guidance: {text}"
    );
    let svg_title = b
        .client
        .find(Locator::Css("svg.diagram__svg > title"))
        .await
        .expect("the diagram")
        .html(true)
        .await
        .expect("its title");
    assert!(svg_title.contains("Passeport"), "{svg_title}");
    b.check_page("studio-procedure").await;

    // A draft of v2 that adds a state: unreachable until a transition leads to it.
    b.click_text("Préparer une nouvelle version").await;
    b.wait_text("Brouillon de la version 2", Duration::from_secs(10))
        .await;
    b.check_page("studio-brouillon").await;
    open_details(&b, "Ajouter un état").await;
    b.fill("nouvel-etat-id", "pre-controle").await;
    b.fill("nouvel-etat-titre", "Pré-contrôle des pièces").await;
    b.fill(
        "nouvel-etat-consignes",
        "Vérifiez avec l'usager la liste des pièces avant de fixer le rendez-vous.",
    )
    .await;
    b.click_text("Ajouter l'état").await;
    let text = b
        .wait_text("À corriger avant publication", Duration::from_secs(10))
        .await;
    assert!(text.contains("`pre-controle` is unreachable"), "{text}");

    // A transition to a state that does not exist: the error names it, its field and line.
    open_details(&b, "Ajouter une transition").await;
    b.fill("transition-vers", "pre-controlee").await;
    b.fill("transition-libelle", "Pré-contrôler les pièces")
        .await;
    b.click_text("Ajouter la transition").await;
    let text = b
        .wait_text("unknown state `pre-controlee`", Duration::from_secs(10))
        .await;
    assert!(
        text.contains("champ transitions[") && text.contains("Ligne "),
        "{text}"
    );
    b.check_page("studio-brouillon-erreur").await;

    // Fixed in the text, with the way out of the new state.
    let current: String = b
        .client
        .execute("return document.getElementById('texte').value;", vec![])
        .await
        .expect("read the text")
        .as_str()
        .expect("a string")
        .to_owned();
    let fixed = format!(
        "{}\n[[transitions]]\nfrom = \"pre-controle\"\nto = \"rendez-vous-fixe\"\nlabel = \"Pièces vérifiées : fixer le rendez-vous\"\nroles = [\"agent\"]\n",
        current.replace("\"pre-controlee\"", "\"pre-controle\"")
    );
    b.client
        .execute(
            "document.getElementById('texte').value = arguments[0];",
            vec![serde_json::json!(fixed)],
        )
        .await
        .expect("set the text");
    b.click_text("Enregistrer le texte").await;
    let text = b
        .wait_text("Le brouillon est valide", Duration::from_secs(10))
        .await;
    assert!(
        text.contains("État ajouté : « Pré-contrôle des pièces » (pre-controle)"),
        "{text}"
    );
    assert!(
        text.contains(
            "Transition ajoutée : « Demande et prise de rendez-vous » → « Pré-contrôle des pièces »"
        ),
        "{text}"
    );

    // A dry run: a test dossier walks into the new state; nothing real moves.
    b.click_text("Essayer le brouillon").await;
    b.wait_text("Essai de « Passeport »", Duration::from_secs(10))
        .await;
    b.click_text("Pré-contrôler les pièces").await;
    let text = b
        .wait_text(
            "État actuel : Pré-contrôle des pièces",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        text.contains("Vérifiez avec l'usager la liste des pièces"),
        "{text}"
    );
    assert!(
        text.contains("Pièces vérifiées : fixer le rendez-vous"),
        "{text}"
    );
    b.check_page("studio-essai").await;
    let still = d
        .get_dossier(dpb::GetDossierRequest {
            id: first.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (still.process_version, still.state.as_str()),
        (1, "demande")
    );

    // The wording of a message the procedure sends, with its preview.
    b.goto(&format!("{base}/studio/procedure/passeport")).await;
    b.click_text("passeport-confirmation-rendez-vous").await;
    b.wait_text("Aperçu avec des valeurs d'exemple", Duration::from_secs(10))
        .await;
    b.check_page("studio-message").await;
    b.fill("sms", "{{town}} : rendez-vous passeport confirmé, dossier {{reference}}. Apportez l'original de chaque pièce.").await;
    b.fill("motif", "Rappeler les originaux").await;
    b.click_text("Enregistrer").await;
    let text = b
        .wait_text("Texte enregistré", Duration::from_secs(10))
        .await;
    assert!(
        text.contains(
            "rendez-vous passeport confirmé, dossier VIN-2026-000123. Apportez l'original"
        ),
        "the preview shows the new wording: {text}"
    );

    // Published with a reason, then the open dossiers move with a mapping.
    b.goto(&format!("{base}/studio/procedure/passeport/brouillon"))
        .await;
    b.fill("motif", "Pré-contrôle des pièces demandé par l'accueil")
        .await;
    b.click_text("Publier").await;
    let text = b
        .wait_text("Version 2 publiée", Duration::from_secs(10))
        .await;
    assert!(text.contains("De la v1 à la v2"), "{text}");
    click_css(&b, "#etat-demande option[value='pre-controle']").await;
    b.click_text("Simuler").await;
    b.wait_text(
        "Simulation : 2 dossier(s) passeraient en v2",
        Duration::from_secs(10),
    )
    .await;
    b.check_page("studio-migration").await;
    b.click_text("Appliquer la migration").await;
    let text = b
        .wait_text(
            "Migration faite : 2 dossier(s) en v2",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        text.contains(&first.reference) && text.contains(&second.reference),
        "{text}"
    );
    b.goto(&format!("{base}/studio")).await;
    let text = b
        .wait_text("Dernières publications", Duration::from_secs(10))
        .await;
    assert!(
        text.contains("Pré-contrôle des pièces demandé par l'accueil"),
        "{text}"
    );
    for dossier in [&first, &second] {
        let now = d
            .get_dossier(dpb::GetDossierRequest {
                id: dossier.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (now.process_version, now.state.as_str()),
            (2, "pre-controle")
        );
    }
    let fresh = open_passport(&mut d, "Nouveau", "06 99 88 77 66").await;
    assert_eq!(
        fresh.process_version, 2,
        "new dossiers follow the new version"
    );
    crate::portal::log_out(&b).await;

    // The agent: no studio, and the dossier on v2 with the migration on its timeline.
    crate::portal::log_in(&b, &base, "aline").await;
    let text = b.wait_text("Se déconnecter", Duration::from_secs(10)).await;
    assert!(
        !text.contains("Procédures"),
        "no studio entry for agents: {text}"
    );
    b.goto(&format!("{base}/studio")).await;
    b.wait_text(
        "Seuls les responsables des procédures",
        Duration::from_secs(10),
    )
    .await;
    b.goto(&format!("{base}/dossier/{}", first.id)).await;
    let text = b
        .wait_text(
            "Dossier passé à la version 2 de la démarche",
            Duration::from_secs(10),
        )
        .await;
    assert!(text.contains("Pré-contrôle des pièces"), "{text}");
    b.check_page("studio-fiche-migree").await;
    // Its documents download from the fiche, as attachments never cached.
    let link = b
        .client
        .find(Locator::Css(&format!("a[href='/document/{}']", photo.id)))
        .await
        .expect("the document's link")
        .text()
        .await
        .unwrap();
    assert_eq!(link, "photo d'identité.png");
    let got = b
        .client
        .execute(
            "return fetch(arguments[0]).then(async r => [r.status, r.headers.get('content-disposition'), r.headers.get('cache-control'), await r.text()]);",
            vec![serde_json::json!(format!("/document/{}", photo.id))],
        )
        .await
        .expect("fetch the document");
    assert_eq!(got[0], 200, "{got}");
    assert_eq!(
        got[1],
        "attachment; filename=\"photo d_identit_.png\"; filename*=UTF-8''photo%20d%27identit%C3%A9.png"
    );
    assert_eq!(got[2], "no-store");
    assert!(got[3].as_str().unwrap().ends_with("PNG une photo"), "{got}");
    let missing = b
        .client
        .execute(
            "return fetch('/document/nulle-part').then(r => r.status);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(missing, 404);
    b.close().await;
}

async fn studio_api(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env.spawn(&[Role::Dossier]).await;
    let owner = env.token("clara", &[AuthRole::ProcessOwner]);
    let agent = env.token("aline", &[AuthRole::Agent]);
    let mut s = studio_client(app.grpc_addr, &owner).await;

    // Only process owners (and admins).
    let e = studio_client(app.grpc_addr, &agent)
        .await
        .create_draft(dpb::CreateDraftRequest {
            process_id: "passeport".into(),
            from_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = s
        .create_draft(dpb::CreateDraftRequest {
            process_id: "nulle-part".into(),
            from_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let draft = s
        .create_draft(dpb::CreateDraftRequest {
            process_id: "passeport".into(),
            from_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((draft.base_version, draft.version), (1, 2));
    assert!(draft.problems.is_empty() && draft.changes.is_empty());
    let e = s
        .create_draft(dpb::CreateDraftRequest {
            process_id: "passeport".into(),
            from_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    // A broken text is kept, with its problem placed.
    let broken = draft
        .text
        .replace("sla_days = 60", "sla_days = \"soixante\"");
    let kept = s
        .update_draft_text(dpb::UpdateDraftTextRequest {
            process_id: "passeport".into(),
            text: broken.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.text, broken);
    let p = &kept.problems[0];
    assert_eq!(p.field, "states[1].sla_days", "{p:?}");
    assert_eq!(
        broken.lines().nth(p.line as usize - 1),
        Some("sla_days = \"soixante\"")
    );
    let e = s
        .publish_draft(dpb::PublishDraftRequest {
            process_id: "passeport".into(),
            reason: "essai".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // A form change on the fixed text; publishing needs a reason.
    s.update_draft_text(dpb::UpdateDraftTextRequest {
        process_id: "passeport".into(),
        text: draft.text.clone(),
    })
    .await
    .unwrap();
    let edited = s
        .edit_draft(dpb::EditDraftRequest {
            process_id: "passeport".into(),
            edit: Some(dpb::edit_draft_request::Edit::SetFields(
                dpb::ProcessFieldsEdit {
                    title: "Passeport biométrique".into(),
                    description: "Demande de passeport.".into(),
                    retention_days: 400,
                },
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(edited.problems.is_empty(), "{:?}", edited.problems);
    assert!(
        edited
            .changes
            .contains(&"Titre : « Passeport » devient « Passeport biométrique »".to_string()),
        "{:?}",
        edited.changes
    );
    let e = s
        .publish_draft(dpb::PublishDraftRequest {
            process_id: "passeport".into(),
            reason: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(bad_field(&e), "reason", "{e:?}");

    // A dry run of the draft with facts; a bad path names its step.
    let run = s
        .dry_run(dpb::DryRunRequest {
            process_id: "passeport".into(),
            version: 0,
            path: vec!["rendez-vous-fixe".into(), "depot".into()],
            facts: Some(dpb::DryRunFacts::default()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.current.as_ref().unwrap().id, "depot");
    assert!(
        run.missing_documents
            .iter()
            .any(|m| m.starts_with("Photo d'identité"))
    );
    let e = s
        .dry_run(dpb::DryRunRequest {
            process_id: "passeport".into(),
            version: 0,
            path: vec!["remis".into()],
            facts: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(bad_field(&e), "path[0]", "{e:?}");

    let publication = s
        .publish_draft(dpb::PublishDraftRequest {
            process_id: "passeport".into(),
            reason: "Titre précisé".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (publication.version, publication.written_to.as_str()),
        (2, "database")
    );
    assert_eq!(publication.published_by, "clara");
    let e = s
        .get_draft(dpb::GetDraftRequest {
            process_id: "passeport".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "the published draft is gone");

    // Another replica of the same database has v2 from its start.
    let other = env.spawn(&[Role::Dossier]).await;
    let p = dossier_client(other.grpc_addr, &agent)
        .await
        .get_process(dpb::GetProcessRequest {
            id: "passeport".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p.version, p.title.as_str()), (2, "Passeport biométrique"));
    assert_eq!(p.versions, vec![1, 2]);
    let source = studio_client(other.grpc_addr, &owner)
        .await
        .get_process_source(dpb::GetProcessSourceRequest {
            process_id: "passeport".into(),
            version: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(source.origin, "database");

    // Export, then imports: unchanged, refused (nothing published), published.
    let files = s
        .export_catalog(dpb::ExportCatalogRequest {})
        .await
        .unwrap()
        .into_inner()
        .files;
    let v2 = files
        .iter()
        .find(|f| f.name == "passeport.v2.toml")
        .expect("v2 exported")
        .clone();
    assert!(files.iter().any(|f| f.name == "passeport.v1.toml"));
    let v3 = dpb::CatalogFile {
        name: "passeport.v3.toml".into(),
        text: v2.text.replace("version = 2", "version = 3"),
    };
    let changed_v2 = dpb::CatalogFile {
        name: "passeport.v2.toml".into(),
        text: v2
            .text
            .replace("Passeport biométrique", "Passeport modifié"),
    };
    let out = s
        .import_catalog(dpb::ImportCatalogRequest {
            files: vec![v3.clone(), changed_v2],
            reason: "relecture".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .files;
    let outcomes: Vec<&str> = out.iter().map(|f| f.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["not_published", "refused"]);
    assert!(out[1].problems[0].message.contains("already published"));
    let out = s
        .import_catalog(dpb::ImportCatalogRequest {
            files: vec![v2.clone(), v3],
            reason: "relecture".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .files;
    let outcomes: Vec<&str> = out.iter().map(|f| f.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["unchanged", "published"]);
    let usage = s
        .get_process_usage(dpb::GetProcessUsageRequest {
            process_id: "passeport".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        usage.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let history = s
        .list_publications(dpb::ListPublicationsRequest {
            process_id: "passeport".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .publications;
    assert_eq!(
        history.iter().map(|p| p.version).collect::<Vec<_>>(),
        vec![3, 2]
    );
    let audit = dossier_client(app.grpc_addr, &env.token("chef", &[AuthRole::Supervisor]))
        .await
        .list_audit_entries(dpb::ListAuditEntriesRequest {
            resource: "processes/passeport".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    for a in [
        "process.draft.create",
        "process.draft.update",
        "process.publish",
    ] {
        assert!(actions.contains(&a), "{actions:?}");
    }
}

#[tokio::test]
async fn the_studio_api_checks_publishes_to_every_replica_exports_and_imports() {
    studio_api(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_studio_api_checks_publishes_to_every_replica_exports_and_imports_postgres() {
    studio_api(Backend::Postgres).await;
}

/// A town that keeps its processes as reviewed files: publishing writes the
/// next version's file in its directory and says where.
#[tokio::test]
async fn a_deployment_that_keeps_processes_as_files_gets_a_file() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let dir = env.dir.path().join("processes");
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../processes");
    for f in ["a-qualifier.toml", "passeport.toml"] {
        std::fs::copy(shipped.join(f), dir.join(f)).unwrap();
    }
    let dir_s = dir.display().to_string();
    let app = env
        .spawn_with(
            &[Role::Dossier],
            env.config_with(&[
                ("GUICHET__DOSSIER__PROCESSES_DIR", dir_s.as_str()),
                ("GUICHET__DOSSIER__STUDIO_WRITES", "directory"),
            ]),
        )
        .await;
    let owner = env.token("clara", &[AuthRole::Admin]);
    let mut s = studio_client(app.grpc_addr, &owner).await;
    s.create_draft(dpb::CreateDraftRequest {
        process_id: "passeport".into(),
        from_version: 1,
    })
    .await
    .unwrap();
    s.edit_draft(dpb::EditDraftRequest {
        process_id: "passeport".into(),
        edit: Some(dpb::edit_draft_request::Edit::PutDocument(
            dpb::DocumentEdit {
                id: "attestation-hebergement".into(),
                title: "Attestation d'hébergement".into(),
                required: false,
            },
        )),
    })
    .await
    .unwrap();
    let p = s
        .publish_draft(dpb::PublishDraftRequest {
            process_id: "passeport".into(),
            reason: "Pièce ajoutée".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let file = dir.join("passeport.v2.toml");
    assert_eq!(p.written_to, file.display().to_string());
    let text = std::fs::read_to_string(&file).expect("the file is written");
    assert!(text.contains("Attestation d'hébergement") && text.contains("version = 2"));
    // The running catalog has it, read from the file (not twice).
    let source = s
        .get_process_source(dpb::GetProcessSourceRequest {
            process_id: "passeport".into(),
            version: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(source.origin, file.display().to_string());
    assert_eq!(source.text, text);
}

async fn message_wordings(backend: Backend) {
    use guichet_proto::notification::v1 as npb;
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let config = env.config_with(&[
        ("GUICHET__NOTIFICATION__WORKER_INTERVAL_MS", "50"),
        ("GUICHET__TOWN__NAME", "Villeneuve"),
    ]);
    let app = env.spawn_with(&[Role::Notification], config.clone()).await;
    let owner = env.token("clara", &[AuthRole::ProcessOwner]);
    let mut n = notification_client(app.grpc_addr, &owner).await;
    let e = notification_client(app.grpc_addr, &env.token("aline", &[AuthRole::Agent]))
        .await
        .update_template(npb::UpdateTemplateRequest {
            id: "signature-code".into(),
            description: "Code".into(),
            sms: "{{code}}".into(),
            reason: "essai".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let shipped = n
        .get_template(npb::GetTemplateRequest {
            id: "signature-code".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shipped.origin, "shipped");
    assert!(shipped.variables.contains(&"{{code}}".to_string()));
    let wording = |sms: &str| npb::UpdateTemplateRequest {
        id: "signature-code".into(),
        description: shipped.description.clone(),
        sms: sms.into(),
        email_subject: String::new(),
        email_body: String::new(),
        reason: "Formulation plus courte, demandée par l'accueil".into(),
    };
    // A variable the signature role does not send is refused, naming it.
    let e = n
        .update_template(wording("Code {{code}} pour {{iban}}"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(bad_field(&e), "variables");
    assert!(e.message().contains("{{iban}}"), "{e:?}");
    let e = n.update_template(wording("Code {{code")).await.unwrap_err();
    assert_eq!(bad_field(&e), "sms", "{e:?}");

    let changed = n
        .update_template(wording(
            "{{town}} : votre code de signature est {{code}} ({{minutes}} min) : {{link}}",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (changed.origin.as_str(), changed.updated_by.as_str()),
        ("studio", "clara")
    );
    assert!(
        changed
            .preview_sms
            .starts_with("Villeneuve : votre code de signature est [code]"),
        "{}",
        changed.preview_sms
    );

    // Another replica has the wording from its start; whichever delivers
    // sends the town's words.
    let _other = env.spawn_with(&[Role::Notification], config).await;
    env.publish_notification(
        "sms",
        &npb::NotificationRequest {
            id: "otp-studio".into(),
            target: Some(npb::notification_request::Target::Phone(
                "06 12 34 56 78".into(),
            )),
            template: "signature-code".into(),
            variables: [
                ("code", "482915"),
                ("document", "Avenant"),
                ("minutes", "10"),
                ("link", "https://signature.example.fr/s/abc"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            dossier_id: "dossier-1".into(),
            requested_by: "test".into(),
            ..Default::default()
        },
    )
    .await;
    let sms = env
        .wait_for_sms("+33612345678", |m| m["template"] == "signature-code")
        .await;
    assert_eq!(
        sms["text"],
        "Villeneuve : votre code de signature est 482915 (10 min) : https://signature.example.fr/s/abc"
    );

    let back = n
        .reset_template(npb::ResetTemplateRequest {
            id: "signature-code".into(),
            reason: "Retour au texte national".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (back.origin.as_str(), back.sms.as_str()),
        ("shipped", shipped.sms.as_str())
    );
    // Every change is kept: who, what, why.
    let history: Vec<(&str, &str, &str)> = back
        .changes
        .iter()
        .map(|c| (c.action.as_str(), c.actor.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        history,
        vec![
            ("reset", "clara", "Retour au texte national"),
            (
                "update",
                "clara",
                "Formulation plus courte, demandée par l'accueil"
            ),
        ]
    );
    assert!(
        back.changes[1]
            .text
            .contains("votre code de signature est {{code}}")
    );
}

#[tokio::test]
async fn a_message_wording_changed_in_the_studio_is_sent_by_every_replica() {
    message_wordings(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_message_wording_changed_in_the_studio_is_sent_by_every_replica_postgres() {
    message_wordings(Backend::Postgres).await;
}
