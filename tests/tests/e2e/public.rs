//! The citizens' pages in a real browser (headless chromium over
//! WebDriver), across real roles, in a town with exactly two passport
//! slots for two people: a citizen books a passport appointment for two
//! from a phone, gets the SMS with the link and the email with the
//! calendar file, moves it; a wrong secret and an unknown booking answer
//! alike; a second citizen books the other slot with JavaScript turned
//! off (and is told plainly that a pre-application number is already
//! booked); with nothing free a third joins the waiting list; the first
//! cancels and the waiting citizen is offered the freed slot; a shared
//! link is replaced. axe-core runs on every page, error states included (0
//! serious or critical violations), screenshots under target/screenshots/.

use std::time::Duration;

use chrono::{Duration as Days, NaiveDate, Utc};
use guichet_portal::PortalHandle;
use guichet_testkit::browser::{Browser, fantoccini::Locator};
use guichet_testkit::proto::dossier::v1 as dpb;
use guichet_testkit::*;

const SHIPPED_LINKS: &str = "https://rendez-vous.mairie.example.fr";
const WAIT: Duration = Duration::from_secs(15);

/// The shipped town, with its passport desk open only on two extra
/// mornings of half an hour: for two people, exactly two slots.
fn town_with_two_slots(dir: &std::path::Path) -> (String, NaiveDate, NaiveDate) {
    let town = dir.join("town");
    std::fs::create_dir_all(&town).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../town");
    for f in std::fs::read_dir(&shipped).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&f, town.join(f.file_name().unwrap())).unwrap();
        }
    }
    let today = guichet_platform::calendar::to_paris(Utc::now()).date();
    let (d1, d2) = (today + Days::days(2), today + Days::days(3));
    std::fs::write(
        town.join("desks.toml"),
        format!(
            r#"[[appointment.desks]]
id = "mairie-titres-1"
site = "mairie"
name = "Titres d'identité – station 1"
resources = ["DR"]
opening = []
extra_openings = ["{d1} 10:00-10:30", "{d2} 10:00-10:30"]

[[appointment.desks]]
id = "mairie-etat-civil"
site = "mairie"
name = "État civil"
resources = []
opening = ["mon 09:00-12:00", "tue 09:00-12:00"]
"#
        ),
    )
    .unwrap();
    (town.display().to_string(), d1, d2)
}

/// "jeudi 10 décembre 2026 à 10h00" for 10:00 Paris on `d`.
fn ten_o_clock(d: NaiveDate) -> String {
    let t = guichet_platform::calendar::from_paris(d.and_hms_opt(10, 0, 0).unwrap());
    format!(
        "{} à {}",
        guichet_platform::french::day_date(t),
        guichet_platform::french::hour(t)
    )
}

/// The path of the link in a message (`/rendez-vous/…`).
fn link_path(text: &str) -> String {
    let start = text
        .find(SHIPPED_LINKS)
        .unwrap_or_else(|| panic!("no link in `{text}`"));
    let rest = &text[start + SHIPPED_LINKS.len()..];
    rest.split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches([')', '.'])
        .to_owned()
}

async fn click_id(b: &Browser, id: &str) {
    b.client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn choose_passport_for_two(b: &Browser, public: &str) {
    b.goto(&format!("{public}/rendez-vous")).await;
    b.wait_text("Étape 1 sur 3", WAIT).await;
    click_id(b, "demarche").await;
    b.client
        .find(Locator::Css("#personnes option[value='2']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.click_text("Voir les créneaux libres").await;
}

async fn fill_details(b: &Browser, phone: &str, email: &str, numbers: [&str; 2]) {
    b.fill("prenom", "Jeanne").await;
    b.fill("nom", "Martin").await;
    b.fill("telephone", phone).await;
    b.fill("courriel", email).await;
    b.fill("ants1", numbers[0]).await;
    b.fill("ants2", numbers[1]).await;
    b.click_text("Confirmer le rendez-vous").await;
}

#[tokio::test]
async fn a_citizen_books_moves_and_cancels_a_passport_appointment_and_the_waiting_list_gets_the_slot()
 {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let (town, d1, d2) = town_with_two_slots(env.dir.path());
    let config = env.config_with(&[("GUICHET__TOWN_DIR", &town)]);
    let app = env.spawn_with(&all_roles(), config).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let public = portal.public_url.clone();
    assert!(public.starts_with("http://127.0.0.1:"), "{public}");

    // Step 1, with its error state.
    b.goto(&format!("{public}/rendez-vous")).await;
    b.wait_text("Prendre rendez-vous", WAIT).await;
    b.check_page("public-rdv-demarche").await;
    b.click_text("Voir les créneaux libres").await;
    b.wait_text("Choisissez votre démarche", WAIT).await;
    b.check_page("public-rdv-demarche-erreur").await;

    // Step 2: the two slots, the first one first.
    choose_passport_for_two(&b, &public).await;
    let text = b.wait_text("Les prochains créneaux libres", WAIT).await;
    assert!(text.contains(&ten_o_clock(d1)), "{text}");
    assert!(text.contains(&ten_o_clock(d2)), "{text}");
    b.check_page("public-rdv-creneaux").await;
    click_id(&b, "prochain-1").await;
    b.click_text("Continuer avec ce créneau").await;
    b.wait_text("Étape 3 sur 3", WAIT).await;
    b.check_page("public-rdv-coordonnees").await;

    // Step 3: an empty form is refused field by field, then booked.
    b.click_text("Confirmer le rendez-vous").await;
    let text = b.wait_text("champs sont à corriger", WAIT).await;
    assert!(
        text.contains("numéro de pré-demande de la personne 2"),
        "{text}"
    );
    b.check_page("public-rdv-coordonnees-erreurs").await;
    fill_details(
        &b,
        "06 98 76 54 32",
        "jeanne.martin@exemple.fr",
        ["1234567AB8", "12345-67ab9"],
    )
    .await;
    let text = b.wait_text("Votre rendez-vous est confirmé", WAIT).await;
    assert!(text.contains(&ten_o_clock(d1)), "{text}");
    assert!(text.contains("1234567AB9"), "numbers cleaned: {text}");
    b.check_page("public-mon-rendez-vous").await;
    let page = b.current_path().await;
    let id = page
        .trim_start_matches("/rendez-vous/")
        .split('?')
        .next()
        .unwrap()
        .to_owned();

    // The SMS carries this very page's link; the email the calendar file.
    let sms = env
        .wait_for_sms("+33698765432", |m| {
            m["template"] == "appointment-confirmation"
        })
        .await;
    let link = link_path(sms["text"].as_str().unwrap());
    assert_eq!(link, page);
    let sink = env.dir.path().join("email-sink");
    eventually("the confirmation email with its .ics", WAIT * 2, || {
        let found = std::fs::read_dir(&sink).ok().and_then(|d| {
            d.filter_map(|f| std::fs::read_to_string(f.ok()?.path()).ok())
                .find(|m| m.contains("jeanne.martin@exemple.fr") && m.contains("rendez-vous.ics"))
        });
        async move { found }
    })
    .await;

    // A wrong secret and an unknown booking get the same page.
    b.goto(&format!(
        "{public}/rendez-vous/{id}?jeton=pas-le-bon-secret"
    ))
    .await;
    let wrong = b.wait_text("Lien invalide ou expiré", WAIT).await;
    b.check_page("public-lien-invalide").await;
    let secret = link.split("jeton=").nth(1).unwrap();
    b.goto(&format!(
        "{public}/rendez-vous/{}?jeton={secret}",
        uuid::Uuid::now_v7()
    ))
    .await;
    let unknown = b.wait_text("Lien invalide ou expiré", WAIT).await;
    assert_eq!(wrong, unknown);

    // Move it to the other slot.
    b.goto(&format!("{public}{link}")).await;
    b.click_text("Déplacer le rendez-vous").await;
    let text = b.wait_text("Déplacer à ce créneau", WAIT).await;
    assert!(text.contains(&ten_o_clock(d2)), "{text}");
    b.check_page("public-deplacer").await;
    click_id(&b, "prochain-1").await;
    b.click_text("Déplacer à ce créneau").await;
    let text = b.wait_text("Votre rendez-vous est déplacé", WAIT).await;
    assert!(text.contains(&ten_o_clock(d2)), "{text}");
    let d2_day = guichet_platform::french::day_date(guichet_platform::calendar::from_paris(
        d2.and_hms_opt(10, 0, 0).unwrap(),
    ));
    env.wait_for_sms("+33698765432", |m| {
        m["template"] == "appointment-confirmation"
            && m["text"].as_str().is_some_and(|t| t.contains(&d2_day))
    })
    .await;

    // A second citizen, JavaScript off, takes the freed first slot; a
    // number already booked is told plainly.
    let Some(nojs) = Browser::start_without_javascript().await else {
        return;
    };
    choose_passport_for_two(&nojs, &public).await;
    let text = nojs.wait_text("Les prochains créneaux libres", WAIT).await;
    assert!(text.contains(&ten_o_clock(d1)), "{text}");
    assert!(!text.contains(&ten_o_clock(d2)), "{text}");
    click_id(&nojs, "prochain-1").await;
    nojs.click_text("Continuer avec ce créneau").await;
    nojs.wait_text("Étape 3 sur 3", WAIT).await;
    fill_details(
        &nojs,
        "06 11 22 33 44",
        "paul.martin@exemple.fr",
        ["1234567AB8", "AAAAAAAAA1"],
    )
    .await;
    nojs.wait_text("a déjà un rendez-vous", WAIT).await;
    nojs.fill("ants1", "BBBBBBBBB2").await;
    nojs.fill("ants2", "AAAAAAAAA1").await;
    nojs.click_text("Confirmer le rendez-vous").await;
    let text = nojs.wait_text("Votre rendez-vous est confirmé", WAIT).await;
    assert!(text.contains(&ten_o_clock(d1)), "{text}");
    let second = link_path(
        env.wait_for_sms("+33611223344", |m| {
            m["template"] == "appointment-confirmation"
        })
        .await["text"]
            .as_str()
            .unwrap(),
    );
    nojs.close().await;

    // Nothing is free now: the waiting list.
    choose_passport_for_two(&b, &public).await;
    b.wait_text("Aucun créneau libre pour le moment", WAIT)
        .await;
    b.check_page("public-rdv-complet").await;
    b.fill("attente-telephone", "06 55 44 33 22").await;
    b.click_text("M'inscrire sur la liste d'attente").await;
    b.wait_text("Vous êtes sur la liste d'attente", WAIT).await;
    b.check_page("public-liste-attente").await;

    // The first citizen cancels; the waiting citizen is offered the slot.
    b.goto(&format!("{public}{link}")).await;
    b.click_text("Annuler le rendez-vous").await;
    b.wait_text("Annuler le rendez-vous ?", WAIT).await;
    b.check_page("public-annuler").await;
    b.click_text("Oui, annuler le rendez-vous").await;
    let text = b.wait_text("Votre rendez-vous est annulé", WAIT).await;
    assert!(text.contains("Annulé à votre demande"), "{text}");
    b.check_page("public-rendez-vous-annule").await;
    let offer = env
        .wait_for_sms("+33655443322", |m| {
            m["template"] == "appointment-waitlist-offer"
        })
        .await;
    let offer_text = offer["text"].as_str().unwrap();
    assert!(offer_text.contains(&d2_day), "{offer_text}");
    b.goto(&format!("{public}{}", link_path(offer_text))).await;
    let text = b.wait_text("Étape 3 sur 3", WAIT).await;
    assert!(text.contains(&ten_o_clock(d2)), "{text}");

    // A shared link is replaced: the old one stops, the new one comes by SMS.
    b.goto(&format!("{public}{second}")).await;
    b.click_text("Remplacer ce lien").await;
    b.wait_text("Lien remplacé", WAIT).await;
    b.check_page("public-lien-remplace").await;
    b.goto(&format!("{public}{second}")).await;
    b.wait_text("Lien invalide ou expiré", WAIT).await;
    let renewed = eventually("the new link by SMS", WAIT * 2, || {
        let found = env
            .sms_sink()
            .into_iter()
            .filter(|m| m["to"] == "+33611223344")
            .filter_map(|m| m["text"].as_str().map(link_path))
            .find(|l| *l != second);
        async move { found }
    })
    .await;
    b.goto(&format!("{public}{renewed}")).await;
    b.wait_text("Mon rendez-vous", WAIT).await;

    // A form without its token is refused.
    let res = reqwest::Client::new()
        .post(format!("{public}/rendez-vous/reserver"))
        .form(&[("demarche", "passeport-depot"), ("personnes", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);

    b.close().await;
    env.cleanup().await;
}

/// A citizen's dossier opened by an agent, with a public and a private note.
async fn dossier_with_notes(app: &guichet::RunningApp, env: &TestEnv) -> dpb::Dossier {
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let mut d = dossier_client(app.grpc_addr, &agent).await;
    let citizen = d
        .resolve_citizen(dpb::ResolveCitizenRequest {
            hint: Some(guichet_testkit::proto::intake::v1::CitizenHint {
                given_name: "Louise".into(),
                family_name: "Bernard".into(),
                phones: vec!["06 44 55 66 77".into()],
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
            citizen_id: citizen,
            process_id: "acte-etat-civil".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    for (visibility, text) in [
        (
            dpb::NoteVisibility::Public,
            "Votre demande est en cours de recherche.",
        ),
        (
            dpb::NoteVisibility::Private,
            "Note interne : dossier sensible.",
        ),
    ] {
        d.add_note(dpb::AddNoteRequest {
            dossier_id: dossier.id.clone(),
            visibility: visibility as i32,
            text: text.into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    }
    dossier
}

async fn follow(b: &Browser, public: &str, reference: &str, code: &str, expect: &str) -> String {
    b.goto(&format!("{public}/suivre")).await;
    b.wait_text("Code de suivi", WAIT).await;
    b.fill("reference", reference).await;
    b.fill("code", code).await;
    b.click_text("Voir ma demande").await;
    b.wait_text(expect, WAIT).await
}

#[tokio::test]
async fn a_citizen_follows_a_request_with_its_reference_and_code_and_sends_a_missing_document() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let public = portal.public_url.clone();
    let dossier = dossier_with_notes(&app, &env).await;
    let code = dossier.follow_code.clone();
    assert_eq!(code.len(), 14, "{code}");

    // The form, then a wrong code and an unknown reference: the same answer.
    b.goto(&format!("{public}/suivre")).await;
    b.wait_text("Suivre ma demande", WAIT).await;
    b.check_page("public-suivre").await;
    let wrong = follow(
        &b,
        &public,
        &dossier.reference,
        "AAAA-BBBB-CCCC",
        "incorrect",
    )
    .await;
    assert!(
        wrong.contains("Référence ou code de suivi incorrect"),
        "{wrong}"
    );
    b.check_page("public-suivre-erreur").await;
    let alert = |t: &str| {
        t.lines()
            .find(|l| l.contains("incorrect"))
            .unwrap_or_default()
            .to_owned()
    };
    let unknown = follow(&b, &public, "VIN-2099-999999", &code, "incorrect").await;
    assert_eq!(alert(&wrong), alert(&unknown));
    assert!(!unknown.contains("Louise") && !wrong.contains("Demande reçue"));

    // The right code, typed loosely: the state, the public note only, what
    // is missing.
    let loose = code.to_lowercase().replace('-', " ");
    let text = follow(
        &b,
        &public,
        &dossier.reference.to_lowercase(),
        &loose,
        "Ma demande VIN",
    )
    .await;
    assert!(
        text.contains("Copie ou extrait d'acte d'état civil"),
        "{text}"
    );
    assert!(text.contains("Demande reçue"), "{text}");
    assert!(
        text.contains("Votre demande est en cours de recherche."),
        "{text}"
    );
    assert!(!text.contains("Note interne"), "{text}");
    assert!(text.contains("À envoyer"), "{text}");
    b.check_page("public-suivre-dossier").await;

    // A missing document, sent from the page, is provided in the fiche's checklist.
    let file = env.dir.path().join("precisions.pdf");
    std::fs::write(&file, b"%PDF-1.4\n% precisions de l'acte\n%%EOF\n").unwrap();
    b.client
        .find(Locator::Css("#piece option[value='precisions-acte']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.client
        .find(Locator::Id("fichier"))
        .await
        .unwrap()
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    b.click_text("Envoyer la pièce").await;
    b.wait_text("Pièce reçue", WAIT).await;
    b.check_page("public-suivre-piece-recue").await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let guidance = dossier_client(app.grpc_addr, &agent)
        .await
        .get_guidance(dpb::GetGuidanceRequest {
            dossier_id: dossier.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let item = guidance
        .checklist
        .iter()
        .find(|c| c.document_id == "precisions-acte")
        .unwrap();
    assert!(item.provided, "{guidance:?}");

    b.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_ticket_page_follows_the_queue_and_says_when_a_desk_calls() {
    use guichet_testkit::proto::counter::v1 as cpb;
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let public = portal.public_url.clone();
    let kiosk = env.token("borne-1", &[TokenRole::Kiosk]);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let counter = counter_client(app.grpc_addr, &kiosk).await;
    let issue = |n: u32| {
        let mut c = counter.clone();
        async move {
            c.issue_ticket(cpb::IssueTicketRequest {
                citizen: Some(guichet_testkit::proto::intake::v1::CitizenHint {
                    family_name: format!("Visiteur {n}"),
                    ..Default::default()
                }),
                service: "passeports".into(),
                request_id: format!("borne-{n}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let first = issue(1).await;
    let mine = issue(2).await;
    assert_eq!(mine.public_token.len(), 32, "{mine:?}");
    assert_ne!(mine.public_token, mine.id);

    // One person ahead, an estimate; the public waiting times agree.
    b.goto(&format!("{public}/ticket/{}", mine.public_token))
        .await;
    let text = b.wait_text("1 personne avant vous", WAIT).await;
    assert!(
        text.contains(&mine.number) && text.contains("Attente estimée"),
        "{text}"
    );
    b.check_page("public-ticket").await;
    b.goto(&format!("{public}/temps-attente")).await;
    let text = b.wait_text("Passeports et cartes d'identité", WAIT).await;
    assert!(text.contains("Temps d'attente"), "{text}");
    b.check_page("public-temps-attente").await;
    b.goto(&format!("{public}/ticket/pas-un-ticket-valable-du-tout"))
        .await;
    b.wait_text("Ticket introuvable", WAIT).await;
    b.check_page("public-ticket-introuvable").await;

    // Desks call: the open page moves on by itself, then says it is our turn.
    b.goto(&format!("{public}/ticket/{}", mine.public_token))
        .await;
    b.wait_text("1 personne avant vous", WAIT).await;
    let mut desk = counter_client(app.grpc_addr, &agent).await;
    let call = |desk_name: &'static str| cpb::CallNextRequest {
        desk: desk_name.into(),
        services: vec!["passeports".into()],
        site: String::new(),
    };
    let called = desk.call_next(call("1")).await.unwrap().into_inner();
    assert_eq!(called.id, first.id);
    b.wait_text("Vous êtes le prochain ou la prochaine", WAIT)
        .await;
    let called = desk.call_next(call("3")).await.unwrap().into_inner();
    assert_eq!(called.id, mine.id);
    b.wait_text("C'est votre tour, guichet 3", WAIT).await;
    b.check_page("public-ticket-appele").await;

    b.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_signing_pages_have_the_citizens_design_and_pass_axe() {
    use super::signature_flow::{avenant_pdf, create_req, page_path};
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let pages = app
        .listener(guichet::Role::Signature, "http")
        .expect("signing pages");
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let req = signature_client(app.grpc_addr, &agent)
        .await
        .create_signature_request(create_req(
            &[("Amélie Poulain", "06 12 34 56 78")],
            avenant_pdf("design"),
        ))
        .await
        .unwrap()
        .into_inner();
    b.goto(&format!("http://{pages}{}", page_path(&req.signers[0])))
        .await;
    let text = b.wait_text("Recevoir le code", WAIT).await;
    assert!(text.contains("signature électronique"), "{text}");
    b.check_page("signature-page").await;
    // A wrong code: the refusal, in the same design.
    b.click_text("Recevoir le code").await;
    b.wait_text("Signer un document", WAIT).await;
    b.client
        .find(Locator::Css("input[name='consent']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.fill("code", "000000").await;
    b.click_text("Signer le document").await;
    b.wait_text("Code incorrect", WAIT).await;
    b.check_page("signature-erreur").await;
    b.close().await;
    env.cleanup().await;
}
