//! The agents' portal in a real browser (headless chromium over WebDriver),
//! across real roles: an agent logs in, sees a walk-in ticket arrive in the
//! open queue page without reloading, takes it, finds the citizen's earlier
//! missed call and email on the fiche, is told why a step is blocked,
//! provides the document, moves the dossier on, adds a note, completes the
//! request and sees it on the timeline; a CCAS dossier stays invisible to a
//! non-CCAS agent; a form without its CSRF token is refused; the take-next
//! flow works with the keyboard alone; an expired session returns to the
//! page asked for after login. axe-core runs on every page (0 serious or
//! critical violations) and each page's screenshot is kept under
//! target/screenshots/.

use std::time::Duration;

use guichet_platform::auth::Role as AuthRole;
use guichet_portal::PortalHandle;
use guichet_portal::accounts::{self, NewAccount};
use guichet_testkit::browser::{Browser, fantoccini::Locator};
use guichet_testkit::proto::dossier::v1 as dpb;
use guichet_testkit::proto::intake::v1 as ipb;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::*;

pub(crate) const PASSWORD: &str = "un mot de passe de test";
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

pub(crate) async fn account(
    portal: &PortalHandle,
    login: &str,
    name: &str,
    roles: &[AuthRole],
    groups: &[&str],
) -> String {
    accounts::add(
        &portal.db,
        NewAccount {
            login: login.into(),
            display_name: name.into(),
            roles: roles.to_vec(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            password: PASSWORD.into(),
        },
    )
    .await
    .expect("add account")
    .id
}

pub(crate) async fn log_in(b: &Browser, base: &str, login: &str) {
    b.goto(&format!("{base}/connexion")).await;
    b.fill("login", login).await;
    b.fill("password", PASSWORD).await;
    b.click_text("Se connecter").await;
}

pub(crate) async fn log_out(b: &Browser) {
    b.click_text("Se déconnecter").await;
    b.wait_text("Connexion au portail", Duration::from_secs(10))
        .await;
}

/// The work item of an intake event, once routed.
async fn routed(app: &guichet::RunningApp, token: &str, event_id: &str) -> qpb::WorkItem {
    let q = queue_client(app.grpc_addr, token).await;
    eventually("the request routed", Duration::from_secs(30), || {
        let mut q = q.clone();
        let id = event_id.to_owned();
        async move {
            q.list_work_items(qpb::ListWorkItemsRequest {
                page_size: 200,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .items
            .into_iter()
            .find(|i| i.intake_event_id == id)
        }
    })
    .await
}

#[tokio::test]
async fn an_agent_works_a_request_from_queue_to_completion_in_the_browser() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(&portal, "marie", "Marie Durand", &[AuthRole::Agent], &[]).await;
    account(
        &portal,
        "sophie",
        "Sophie Martin",
        &[AuthRole::Agent],
        &["social"],
    )
    .await;
    let supervisor = env.token("chef-1", &[TokenRole::Supervisor]);
    let kiosk = env.token("borne-1", &[TokenRole::Kiosk]);

    // Login: the page asked for comes back after it; a wrong password is
    // told beside the form and keeps the login typed.
    b.goto(&format!("{base}/file")).await;
    assert!(
        b.current_path()
            .await
            .starts_with("/connexion?retour=%2Ffile"),
        "{}",
        b.current_path().await
    );
    b.check_page("connexion").await;
    b.fill("login", "marie").await;
    b.fill("password", "pas le bon mot de passe").await;
    b.click_text("Se connecter").await;
    b.wait_text(
        "Identifiant ou mot de passe incorrect",
        Duration::from_secs(10),
    )
    .await;
    let typed = b
        .client
        .find(Locator::Id("login"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(typed.as_deref(), Some("marie"));
    b.check_page("connexion-erreur").await;
    b.fill("password", PASSWORD).await;
    b.click_text("Se connecter").await;
    b.wait_text("File unique", Duration::from_secs(10)).await;
    assert_eq!(b.current_path().await, "/file");
    b.check_page("file-unique").await;

    // Jean Dupont called yesterday (missed) and emailed, before he walks in.
    let mut call = intake_at(
        ipb::Channel::Telephony,
        chrono::Utc::now() - chrono::Duration::hours(20),
    );
    call.citizen = Some(ipb::CitizenHint {
        phones: vec!["0612345678".into()],
        ..Default::default()
    });
    call.details = Some(ipb::intake_event::Details::Telephony(
        ipb::TelephonyDetails {
            call_id: "portal-call-1".into(),
            direction: "in".into(),
            missed: true,
            waiting_seconds: 95,
            source: "cti".into(),
            cause: "cancel".into(),
            ..Default::default()
        },
    ));
    env.publish_intake(&call).await;
    let call_item = routed(&app, &supervisor, &call.id).await;
    let mut mail = intake_at(
        ipb::Channel::Email,
        chrono::Utc::now() - chrono::Duration::hours(19),
    );
    mail.citizen = Some(ipb::CitizenHint {
        given_name: "Jean".into(),
        family_name: "Dupont".into(),
        phones: vec!["06 12 34 56 78".into()],
        emails: vec!["jean.dupont@exemple.fr".into()],
        ..Default::default()
    });
    mail.subject = "Demande de copie d'acte de naissance".into();
    mail.body =
        "Bonjour, je voudrais une copie intégrale de mon acte de naissance. Jean Dupont".into();
    mail.details = Some(ipb::intake_event::Details::Email(ipb::EmailDetails {
        message_id: "<portal-1@exemple.fr>".into(),
        source: "smtp".into(),
        ..Default::default()
    }));
    env.publish_intake(&mail).await;
    let mail_item = routed(&app, &supervisor, &mail.id).await;
    assert_eq!(mail_item.citizen_id, call_item.citizen_id, "one citizen");
    let jean = call_item.citizen_id.clone();
    // A colleague dealt with those two already.
    let mut q = queue_client(app.grpc_addr, &supervisor).await;
    for id in [&call_item.id, &mail_item.id] {
        q.cancel_work_item(qpb::CancelWorkItemRequest {
            id: id.clone(),
            reason: "traité par téléphone".into(),
        })
        .await
        .unwrap();
    }

    // Not available yet: taking a request says what to do.
    b.click_text("Prendre la suivante").await;
    b.wait_text(
        "Passez en « Disponible » pour prendre une demande",
        Duration::from_secs(10),
    )
    .await;

    // Available, then a walk-in ticket issued through the counter API shows
    // up in the open page without a reload.
    b.client
        .find(Locator::Css("#presence option[value='available']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.click_text("Enregistrer").await;
    b.wait_text("Statut enregistré : Disponible", Duration::from_secs(10))
        .await;
    b.client
        .execute("window.__sameDocument = 42; return true;", vec![])
        .await
        .unwrap();
    let ticket = counter_client(app.grpc_addr, &kiosk)
        .await
        .issue_ticket(ticket_request(
            "Jean",
            "Dupont",
            "06 12 34 56 78",
            "copie intégrale de mon acte de naissance",
        ))
        .await
        .unwrap()
        .into_inner();
    b.wait_text(&ticket.number, Duration::from_secs(20)).await;
    let same = b
        .client
        .execute("return window.__sameDocument === 42;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same,
        serde_json::Value::Bool(true),
        "the row came without a reload"
    );
    b.check_page("file-unique-demande-arrivee").await;

    // Take next: the fiche, with the citizen's earlier call and email.
    b.click_text("Prendre la suivante").await;
    let text = b.wait_text("La demande", Duration::from_secs(10)).await;
    assert!(b.current_path().await.starts_with("/demande/"));
    assert!(text.contains(&ticket.number), "{text}");
    assert!(text.contains("DUPONT Jean"), "{text}");
    assert!(
        text.contains("Demande de copie d'acte de naissance"),
        "the email on the timeline:\n{text}"
    );
    assert!(
        text.contains("Appel manqué (attente 1 min 35)"),
        "the missed call on the timeline, with its waiting time:\n{text}"
    );
    assert!(
        text.contains("Copie ou extrait d'acte d'état civil"),
        "the dossier's process:\n{text}"
    );
    b.check_page("fiche-demande").await;
    let item_path = b.current_path().await;

    // A step whose guard is unmet says why; the document provided, it goes.
    b.click_text("Lancer la recherche de l'acte").await;
    let text = b
        .wait_text("Étape impossible", Duration::from_secs(10))
        .await;
    assert!(text.contains("Pièces manquantes"), "{text}");
    b.check_page("fiche-etape-bloquee").await;
    let file = env_dir_file(
        "precisions.txt",
        "Acte de naissance de Jean Dupont, né le 3 mars 1980 à Villeneuve.",
    );
    b.client
        .find(Locator::Css("#piece-type option[value='precisions-acte']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.client
        .find(Locator::Id("piece-fichier"))
        .await
        .unwrap()
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    b.click_text("Joindre").await;
    b.wait_text("Pièce jointe au dossier", Duration::from_secs(10))
        .await;
    b.click_text("Lancer la recherche de l'acte").await;
    b.wait_text(
        "Étape franchie : Recherche et établissement de l'acte",
        Duration::from_secs(10),
    )
    .await;
    b.check_page("fiche-dossier").await;
    assert!(b.current_path().await.starts_with("/dossier/"));

    // A private note, then the request completed with its outcome.
    b.fill("note", "Acte retrouvé dans le registre de 1980.")
        .await;
    b.click_text("Ajouter la note").await;
    let text = b.wait_text("Note ajoutée", Duration::from_secs(10)).await;
    assert!(
        text.contains("Acte retrouvé dans le registre de 1980."),
        "{text}"
    );

    // Two agents on one dossier: a colleague sends the act by post while
    // Marie's page is open; her click is refused with the reason.
    let colleague = env.token("agent-2", &[TokenRole::Agent]);
    let dossier_id = dossier_path_id(&b.current_path().await);
    dossier_client(app.grpc_addr, &colleague)
        .await
        .transition_dossier(dpb::TransitionDossierRequest {
            id: dossier_id.clone(),
            to_state: "envoye".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    b.click_text("Remettre l'acte au guichet").await;
    let text = b
        .wait_text("a changé entre-temps", Duration::from_secs(10))
        .await;
    assert!(
        text.contains("Acte envoyé"),
        "the page now shows the colleague's step:\n{text}"
    );
    b.goto(&format!("{base}{item_path}")).await;
    b.fill("resultat", "Copie intégrale remise en main propre.")
        .await;
    b.click_text("Terminer la demande").await;
    b.wait_text("Demande terminée", Duration::from_secs(10))
        .await;
    b.goto(&format!("{base}/citoyen/{jean}")).await;
    let text = b.wait_text("Historique", Duration::from_secs(10)).await;
    assert!(
        text.contains("Copie intégrale remise en main propre."),
        "the outcome on the timeline:\n{text}"
    );
    b.check_page("fiche-citoyen").await;

    // Search: a name without its accents and case, a phone in another format.
    b.goto(&format!("{base}/recherche")).await;
    b.check_page("recherche").await;
    b.fill("q", "dupont").await;
    b.click_text("Rechercher").await;
    let text = b.wait_text("résultat(s)", Duration::from_secs(10)).await;
    assert!(text.contains("DUPONT Jean"), "{text}");
    b.check_page("recherche-resultats").await;
    b.fill("q", "+33 6 12 34 56 78").await;
    b.click_text("Rechercher").await;
    b.wait_text("DUPONT Jean", Duration::from_secs(10)).await;

    // A request taken by hand: errors beside their fields, then recorded.
    b.goto(&format!("{base}/nouvelle-demande")).await;
    b.check_page("nouvelle-demande").await;
    b.fill("telephone", "12").await;
    b.click_text("Enregistrer la demande").await;
    let text = b
        .wait_text("champ(s) à corriger", Duration::from_secs(10))
        .await;
    assert!(text.contains("Numéro de téléphone invalide"), "{text}");
    let invalid = b
        .client
        .find(Locator::Id("telephone"))
        .await
        .unwrap()
        .attr("aria-invalid")
        .await
        .unwrap();
    assert_eq!(invalid.as_deref(), Some("true"));
    b.check_page("nouvelle-demande-erreurs").await;
    b.fill("telephone", "06 98 76 54 32").await;
    b.fill("nom", "Bernard").await;
    b.fill("objet", "Signaler un lampadaire éteint rue des Lilas")
        .await;
    b.click_text("Enregistrer la demande").await;
    b.wait_text("Demande enregistrée", Duration::from_secs(10))
        .await;
    b.wait_text("lampadaire", Duration::from_secs(20)).await;

    b.goto(&format!("{base}/citoyens/a-confirmer")).await;
    b.wait_text("Citoyens à confirmer", Duration::from_secs(10))
        .await;
    b.check_page("citoyens-a-confirmer").await;

    // A CCAS dossier: invisible to Marie through any page, visible to the
    // CCAS agent.
    let ccas = env.token_in_groups("ccas-1", &[TokenRole::Agent], &["social"]);
    let aid = dossier_client(app.grpc_addr, &ccas)
        .await
        .open_dossier(dpb::OpenDossierRequest {
            citizen_id: jean.clone(),
            process_id: "aide-sociale-ccas".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    b.goto(&format!("{base}/dossier/{}", aid.id)).await;
    let text = b.text().await;
    assert!(
        !text.contains(&aid.reference) && !text.contains("Aide sociale"),
        "{text}"
    );
    b.check_page("dossier-refuse").await;
    b.goto(&format!("{base}/citoyen/{jean}")).await;
    let text = b.wait_text("Dossiers", Duration::from_secs(10)).await;
    assert!(
        !text.contains(&aid.reference),
        "Marie's fiche lists no CCAS dossier:\n{text}"
    );

    // A POST without the CSRF token is refused, with the session cookie.
    let cookie = b
        .cookie(guichet_portal::session::COOKIE)
        .await
        .expect("session cookie");
    let res = reqwest::Client::new()
        .post(format!("{base}/file/suivante"))
        .header(
            "cookie",
            format!("{}={cookie}", guichet_portal::session::COOKIE),
        )
        .form(&[("file", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("Formulaire refusé"));

    // Take next with the keyboard alone.
    let second = counter_client(app.grpc_addr, &kiosk)
        .await
        .issue_ticket(ticket_request(
            "Lucie",
            "Petit",
            "06 11 22 33 44",
            "inscription sur les listes électorales",
        ))
        .await
        .unwrap()
        .into_inner();
    b.goto(&format!("{base}/file")).await;
    b.wait_text(&second.number, Duration::from_secs(20)).await;
    // The queue serves its first row next.
    let first_row = b
        .client
        .find(Locator::Css("#file-lignes tbody tr td a"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    b.client
        .execute(
            "document.activeElement && document.activeElement.blur(); window.focus(); return true;",
            vec![],
        )
        .await
        .unwrap();
    let mut found = false;
    for _ in 0..60 {
        b.keys(TAB).await;
        if b.focused_text().await == "Prendre la suivante" {
            found = true;
            break;
        }
    }
    assert!(found, "the take-next button is reachable with Tab");
    b.keys(ENTER).await;
    let text = b.wait_text("La demande", Duration::from_secs(10)).await;
    assert!(text.contains(&first_row), "took `{first_row}`:\n{text}");

    log_out(&b).await;
    log_in(&b, &base, "sophie").await;
    b.wait_text("File unique", Duration::from_secs(10)).await;
    b.goto(&format!("{base}/dossier/{}", aid.id)).await;
    let text = b.wait_text(&aid.reference, Duration::from_secs(10)).await;
    assert!(text.contains("Accès restreint"), "{text}");
    b.check_page("dossier-ccas").await;

    b.close().await;
    app.stop().await.unwrap();
    env.cleanup().await;
}

/// The dossier id of a `/dossier/<id>` path.
fn dossier_path_id(path: &str) -> String {
    path.trim_start_matches("/dossier/")
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A small file to upload, in a directory that outlives the test's steps.
fn env_dir_file(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("guichet-portal-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test]
async fn an_expired_session_returns_to_the_page_asked_for_after_login() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let clock = guichet_platform::clock::ManualClock::new(chrono::Utc::now());
    let app = env.spawn_on_clock(&all_roles(), env.config(), &clock).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(&portal, "marie", "Marie Durand", &[AuthRole::Agent], &[]).await;
    log_in(&b, &base, "marie").await;
    b.wait_text("File unique", Duration::from_secs(10)).await;
    b.goto(&format!("{base}/recherche")).await;
    b.wait_text("Nom, téléphone", Duration::from_secs(10)).await;

    // 31 minutes without a page: the session has ended.
    clock.advance(chrono::Duration::minutes(31));
    b.goto(&format!("{base}/nouvelle-demande")).await;
    b.wait_text("Connexion au portail", Duration::from_secs(10))
        .await;
    assert!(
        b.current_path()
            .await
            .starts_with("/connexion?retour=%2Fnouvelle-demande")
    );
    b.fill("login", "marie").await;
    b.fill("password", PASSWORD).await;
    b.click_text("Se connecter").await;
    b.wait_text("Nouvelle demande", Duration::from_secs(10))
        .await;
    assert_eq!(b.current_path().await, "/nouvelle-demande");

    // Logging out ends the session: the cookie opens nothing any more.
    let cookie = b
        .cookie(guichet_portal::session::COOKIE)
        .await
        .expect("session cookie");
    log_out(&b).await;
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/file"))
        .header(
            "cookie",
            format!("{}={cookie}", guichet_portal::session::COOKIE),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    b.close().await;
    app.stop().await.unwrap();
    env.cleanup().await;
}

/// The test OpenID provider (npm oidc-provider) on `port`, or `None` when
/// Node.js or the package is missing (installed by the test command).
async fn oidc_provider(port: u16, redirect: &str, secret: &str) -> Option<tokio::process::Child> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/oidc");
    let installed = dir.join("node_modules/oidc-provider").exists();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed || !node {
        if std::env::var("GUICHET_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("the test OpenID provider is required: run scripts/ensure-services.sh test");
        }
        eprintln!("NOTICE: Node.js or oidc-provider not installed: skipping the OIDC login test");
        return None;
    }
    let child = tokio::process::Command::new("node")
        .arg(dir.join("provider.mjs"))
        .args([port.to_string().as_str(), redirect, secret])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the test OpenID provider");
    let discovery = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
    eventually(
        "the OpenID provider answers",
        Duration::from_secs(20),
        || {
            let url = discovery.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        },
    )
    .await;
    Some(child)
}

#[tokio::test]
async fn an_agent_logs_in_with_the_towns_openid_provider() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let portal_port = free_port();
    let idp_port = free_port();
    let base = format!("http://127.0.0.1:{portal_port}");
    let secret = "secret-du-client-de-test-0123456789";
    let Some(_idp) =
        oidc_provider(idp_port, &format!("{base}/connexion/oidc/retour"), secret).await
    else {
        return;
    };
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let jwks = format!("{issuer}/jwks");
    let addr = format!("127.0.0.1:{portal_port}");
    let config = env.config_with(&[
        ("GUICHET__PORTAL__HTTP_ADDR", &addr),
        ("GUICHET__PORTAL__PUBLIC_URL", &base),
        ("GUICHET__PORTAL__LOCAL_ACCOUNTS", "false"),
        ("GUICHET__PORTAL__OIDC__ISSUER_URL", &issuer),
        ("GUICHET__PORTAL__OIDC__CLIENT_ID", "guichet-portal"),
        ("GUICHET__PORTAL__OIDC__CLIENT_SECRET", secret),
        // The roles accept the provider's tokens the portal passes on.
        ("GUICHET__AUTH__JWKS_URL", &jwks),
        ("GUICHET__AUTH__OIDC_ISSUER", &issuer),
        ("GUICHET__AUTH__AUDIENCE", "guichet-portal"),
    ]);
    let auth = guichet_platform::auth::Authenticator::new(&config.auth).unwrap();
    let app = env.spawn_with(&all_roles(), config).await;

    // The login page offers the town's account only; a person without a
    // guichet role is refused with a French reason.
    b.goto(&format!("{base}/connexion?retour=%2Frecherche"))
        .await;
    let text = b
        .wait_text(
            "Se connecter avec le compte de la ville",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        !text.contains("Mot de passe"),
        "local accounts are off:\n{text}"
    );
    b.check_page("connexion-oidc").await;
    let provider_login = |who: &'static str| {
        let b = &b;
        async move {
            b.click_text("Se connecter avec le compte de la ville")
                .await;
            b.wait_text("Sign-in", Duration::from_secs(10)).await;
            b.client
                .find(Locator::Css("input[name='login']"))
                .await
                .unwrap()
                .send_keys(who)
                .await
                .unwrap();
            b.client
                .find(Locator::Css("input[name='password']"))
                .await
                .unwrap()
                .send_keys("peu importe")
                .await
                .unwrap();
            b.client
                .find(Locator::Css("button[type='submit']"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            // The provider's consent page.
            b.wait_text("Continue", Duration::from_secs(10)).await;
            b.client
                .find(Locator::Css("button[type='submit']"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    provider_login("paul").await;
    b.wait_text("n'a pas accès au portail", Duration::from_secs(15))
        .await;

    // Claire (agent, group social) comes back to the page she asked for,
    // and the roles accept the provider's token on her behalf.
    // Another person at the same browser: the provider's session (and the
    // portal's login cookie) are cleared first, as a logout would.
    b.client.delete_all_cookies().await.unwrap();
    b.goto(&format!("{base}/connexion?retour=%2Frecherche"))
        .await;
    provider_login("claire").await;
    let text = b.wait_text("Claire Dubois", Duration::from_secs(15)).await;
    assert_eq!(b.current_path().await, "/recherche", "{text}");
    b.goto(&format!("{base}/file")).await;
    let text = b
        .wait_text("Ma disponibilité", Duration::from_secs(10))
        .await;
    assert!(
        text.contains("Actuellement : Hors ligne"),
        "routing answered with her token:\n{text}"
    );
    let ccas = auth.issue(
        "ccas-1",
        &[TokenRole::Agent],
        &["social".to_owned()],
        Duration::from_secs(600),
    );
    let service = auth.issue(
        "portail-citoyen",
        &[TokenRole::CitizenPages],
        &[],
        Duration::from_secs(600),
    );
    let citizen = dossier_client(app.grpc_addr, &service)
        .await
        .resolve_citizen(dpb::ResolveCitizenRequest {
            hint: Some(ipb::CitizenHint {
                given_name: "Rose".into(),
                family_name: "Leroy".into(),
                phones: vec!["06 55 44 33 22".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .citizen
        .unwrap();
    let aid = dossier_client(app.grpc_addr, &ccas)
        .await
        .open_dossier(dpb::OpenDossierRequest {
            citizen_id: citizen.id,
            process_id: "aide-sociale-ccas".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    b.goto(&format!("{base}/dossier/{}", aid.id)).await;
    b.wait_text(&aid.reference, Duration::from_secs(10)).await;

    b.close().await;
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_role_that_is_down_gives_a_french_message_where_it_is_needed() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    // The portal alone, its roles unreachable.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let config = env.config_with(&[
        ("GUICHET__PORTAL__ROUTING_URL", &nowhere),
        ("GUICHET__PORTAL__DOSSIER_URL", &nowhere),
        ("GUICHET__PORTAL__COUNTER_URL", &nowhere),
    ]);
    let app = env.spawn_with(&[guichet::Role::Portal], config).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(&portal, "marie", "Marie Durand", &[AuthRole::Agent], &[]).await;
    log_in(&b, &base, "marie").await;
    let text = b
        .wait_text(
            "La file d'attente ne répond pas pour le moment",
            Duration::from_secs(15),
        )
        .await;
    // The rest of the page is there: navigation, the search and the
    // request forms still open.
    assert!(
        text.contains("Prendre la suivante") && text.contains("Recherche"),
        "{text}"
    );
    b.check_page("file-role-indisponible").await;
    b.goto(&format!("{base}/recherche")).await;
    b.fill("q", "Dupont").await;
    b.click_text("Rechercher").await;
    let text = b
        .wait_text(
            "Le service des dossiers ne répond pas pour le moment",
            Duration::from_secs(15),
        )
        .await;
    assert!(
        !text.contains("Unavailable") && !text.contains("transport"),
        "no technical message:\n{text}"
    );
    b.goto(&format!(
        "{base}/citoyen/0190a7a4-0000-7000-8000-000000000000"
    ))
    .await;
    let text = b
        .wait_text("ne répond pas pour le moment", Duration::from_secs(15))
        .await;
    assert!(!text.contains("panicked"), "{text}");
    b.close().await;
    app.stop().await.unwrap();
    env.cleanup().await;
}
