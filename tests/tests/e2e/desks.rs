//! The counter desk, the kiosk and the waiting-room board in the portal,
//! across the real roles: a supervisor enrols a kiosk and a board; a
//! citizen takes an anonymous ticket at the kiosk and gets its QR code;
//! another checks in for her appointment by phone; the agent at "Mon
//! guichet" calls the next ticket and the board shows it live, without a
//! reload; the called ticket's request is handed to the agent (nobody else
//! takes it from the unified queue), its fiche opens from the desk, and
//! finishing the visit with an outcome completes the request with her
//! words; a no-show completes it too. A removed kiosk opens nothing. axe-core
//! runs on every page. Without a browser, the same hand-over is checked
//! over gRPC on SQLite and PostgreSQL, with transfers between desks.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use guichet_platform::auth::Role as AuthRole;
use guichet_platform::clock::ManualClock;
use guichet_portal::PortalHandle;
use guichet_proto::appointment::v1 as apb;
use guichet_testkit::browser::{Browser, fantoccini::Locator};
use guichet_testkit::proto::counter::v1 as cpb;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::*;

async fn account(portal: &PortalHandle, login: &str, name: &str, roles: &[AuthRole]) -> String {
    crate::portal::account(portal, login, name, roles, &[]).await
}

/// Log in and wait for the signed-in page.
async fn log_in(b: &Browser, base: &str, login: &str) {
    crate::portal::log_in(b, base, login).await;
    b.wait_text("Se déconnecter", Duration::from_secs(10)).await;
}

/// The work item of an intake event, once routing has it in `status`.
async fn item_in(
    app: &guichet::RunningApp,
    token: &str,
    intake_event_id: &str,
    status: qpb::WorkItemStatus,
) -> qpb::WorkItem {
    let q = queue_client(app.grpc_addr, token).await;
    eventually(
        &format!("the ticket's request {status:?}"),
        Duration::from_secs(30),
        || {
            let mut q = q.clone();
            let id = intake_event_id.to_owned();
            async move {
                let item = q
                    .get_work_item(qpb::GetWorkItemRequest {
                        intake_event_id: id,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                (item.status() == status).then_some(item)
            }
        },
    )
    .await
}

async fn click_id(b: &Browser, id: &str) {
    b.client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .click()
        .await
        .expect("click");
}

/// Enrol the browser as a device; the supervisor's session ends.
async fn enrol(b: &Browser, base: &str, kind: &str, label: &str) {
    log_in(b, base, "chef").await;
    b.goto(&format!("{base}/appareils")).await;
    b.check_page(&format!("appareils-{kind}")).await;
    click_id(b, &format!("kind-{kind}")).await;
    b.fill("label", label).await;
    b.click_text("Activer ce navigateur").await;
}

#[tokio::test]
async fn a_walk_in_goes_from_the_kiosk_to_the_board_and_the_desk_in_the_browser() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(kiosk) = Browser::start().await else {
        return;
    };
    let Some(board) = Browser::start().await else {
        return;
    };
    let Some(desk) = Browser::start().await else {
        return;
    };
    // Monday 4 January 2027, 09:00 in Paris.
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2027, 1, 4, 8, 0, 0).unwrap());
    let mut config = env.config();
    config.counter.recalls_before_no_show = 1;
    let app = env.spawn_on_clock(&all_roles(), config, &clock).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(&portal, "chef", "Claire Chef", &[AuthRole::Supervisor]).await;
    let marie = account(&portal, "marie", "Marie Durand", &[AuthRole::Agent]).await;
    let token = env.token("chef-1", &[TokenRole::Supervisor]);
    let counter = counter_client(app.grpc_addr, &token).await;

    // A passport appointment at 09:30, booked by phone.
    let booked = appointment_client(app.grpc_addr, &env.token("agent-9", &[TokenRole::Agent]))
        .await
        .book_appointment(apb::BookAppointmentRequest {
            appointment_type: "passeport-depot".into(),
            site_id: "mairie".into(),
            start_time: Some(guichet_proto::convert::timestamp(
                Utc.with_ymd_and_hms(2027, 1, 4, 8, 30, 0).unwrap(),
            )),
            people: 1,
            citizen_id: "citoyen-rdv".into(),
            contact: Some(apb::Contact {
                phone: "06 12 34 56 78".into(),
                email: String::new(),
            }),
            request_id: "rdv-1".into(),
            ..Default::default()
        })
        .await
        .expect("book")
        .into_inner();

    // An agent may not manage devices.
    log_in(&desk, &base, "marie").await;
    desk.goto(&format!("{base}/appareils")).await;
    desk.wait_text("Seuls les superviseurs", Duration::from_secs(10))
        .await;
    // A browser that is not enrolled opens no kiosk.
    kiosk.goto(&format!("{base}/borne")).await;
    kiosk
        .wait_text("Cet appareil n'est pas activé", Duration::from_secs(10))
        .await;

    // The supervisor enrols the kiosk and the board; her session ends.
    enrol(&kiosk, &base, "borne", "Borne du hall").await;
    kiosk
        .wait_text("Prendre un ticket", Duration::from_secs(10))
        .await;
    assert_eq!(kiosk.current_path().await, "/borne");
    kiosk.check_page("borne").await;
    kiosk.goto(&format!("{base}/file")).await;
    assert!(
        kiosk.current_path().await.starts_with("/connexion"),
        "the kiosk is left signed in"
    );
    kiosk.goto(&format!("{base}/borne")).await;
    enrol(&board, &base, "ecran", "Écran salle 1").await;
    board
        .wait_text(
            "Les numéros appelés s'afficheront ici",
            Duration::from_secs(10),
        )
        .await;
    board.check_page("ecran-vide").await;
    // A board opens no kiosk page.
    board.goto(&format!("{base}/borne")).await;
    board
        .wait_text("Cet appareil n'est pas activé", Duration::from_secs(10))
        .await;
    board.goto(&format!("{base}/ecran")).await;
    board
        .wait_text("Les numéros appelés", Duration::from_secs(10))
        .await;
    board
        .client
        .execute("window.guichetMarker = 'same page';", vec![])
        .await
        .unwrap();

    // A walk-in takes an anonymous passport ticket; a double touch would
    // give the same one.
    kiosk.click_text("Passeports et cartes d'identité").await;
    let text = kiosk
        .wait_text("Votre ticket", Duration::from_secs(10))
        .await;
    assert!(text.contains("P001"), "{text}");
    assert!(text.contains("Vous êtes le prochain"), "{text}");
    let qr = kiosk
        .client
        .find(Locator::Css(".kiosk__qr img"))
        .await
        .expect("QR code")
        .attr("src")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(qr.starts_with("data:image/svg+xml;base64,"), "{qr}");
    let caption = kiosk
        .client
        .find(Locator::Css(".kiosk__qr figcaption"))
        .await
        .unwrap()
        .html(true)
        .await
        .unwrap();
    assert!(caption.contains("/ticket/"), "{caption}");
    kiosk.check_page("borne-ticket").await;
    kiosk.click_text("Terminer").await;

    // The appointment checks in by phone at 09:05.
    clock.set(Utc.with_ymd_and_hms(2027, 1, 4, 8, 5, 0).unwrap());
    kiosk.fill("telephone", "0612345678").await;
    kiosk.click_text("Enregistrer mon arrivée").await;
    let text = kiosk
        .wait_text("Votre ticket", Duration::from_secs(10))
        .await;
    assert!(text.contains("h30 est enregistré"), "{text}");
    assert!(text.contains("P002"), "{text}");
    kiosk.goto(&format!("{base}/borne")).await;
    // An unknown reference is told in French.
    kiosk.fill("reference", "RDV-ZZZZZZZZ").await;
    kiosk.click_text("Enregistrer mon arrivée").await;
    kiosk
        .wait_text(
            "Aucun rendez-vous aujourd'hui ne correspond",
            Duration::from_secs(10),
        )
        .await;
    kiosk.check_page("borne-erreur").await;

    let tickets = counter
        .clone()
        .list_tickets(cpb::ListTicketsRequest {
            statuses: vec![cpb::TicketStatus::Waiting as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tickets;
    // The walk-in of 09:00 still goes before the appointment checked in at
    // 09:05 (ranked as if arrived at 09:20: fairness).
    let numbers: Vec<&str> = tickets.iter().map(|t| t.number.as_str()).collect();
    assert_eq!(numbers, ["P001", "P002"]);
    assert!(tickets.iter().all(|t| t.public_token.is_empty()));
    let walk_in = tickets[0].clone();
    let with_rdv = tickets[1].clone();
    assert_eq!(with_rdv.booking_id, booked.id);
    item_in(
        &app,
        &token,
        &walk_in.intake_event_id,
        qpb::WorkItemStatus::Pending,
    )
    .await;

    // Marie sets up her desk.
    desk.goto(&format!("{base}/guichet")).await;
    desk.wait_text("Choisir mon guichet", Duration::from_secs(10))
        .await;
    desk.check_page("guichet-reglages").await;
    desk.fill("guichet", "3").await;
    click_id(&desk, "service-passeports").await;
    desk.click_text("Enregistrer").await;
    desk.wait_text("Vous êtes au guichet 3.", Duration::from_secs(10))
        .await;
    desk.check_page("guichet").await;

    // She calls the next: the walk-in; the board shows it live, without a
    // reload and without a name.
    desk.click_text("Appeler le suivant").await;
    desk.wait_text("Ticket P001 appelé au guichet 3.", Duration::from_secs(10))
        .await;
    let text = board.wait_text("P001", Duration::from_secs(10)).await;
    assert!(text.contains("guichet 3"), "{text}");
    let marker = board
        .client
        .execute("return window.guichetMarker || '';", vec![])
        .await
        .unwrap();
    assert_eq!(marker.as_str(), Some("same page"), "the board reloaded");
    board.check_page("ecran").await;
    // The called ticket's request is hers: nobody takes it from the queue.
    let item = item_in(
        &app,
        &token,
        &walk_in.intake_event_id,
        qpb::WorkItemStatus::Assigned,
    )
    .await;
    assert_eq!(item.agent_id, marie);

    // The walk-in does not come: recalled, then absent; the visit's end
    // completes its request.
    desk.click_text("Absent").await;
    desk.wait_text("Rappelez d'abord le ticket", Duration::from_secs(10))
        .await;
    desk.check_page("guichet-appele").await;
    desk.click_text("Rappeler").await;
    desk.wait_text("Ticket P001 rappelé.", Duration::from_secs(10))
        .await;
    board
        .wait_text("Rappel — guichet 3", Duration::from_secs(10))
        .await;
    desk.click_text("Absent").await;
    desk.wait_text("Ticket P001 noté absent.", Duration::from_secs(10))
        .await;
    let gone = item_in(
        &app,
        &token,
        &walk_in.intake_event_id,
        qpb::WorkItemStatus::Completed,
    )
    .await;
    assert_eq!(gone.outcome, "Ticket P001 : absent après 1 rappel(s)");

    // Then the appointment: its fiche opens from the desk, and finishing
    // with an outcome completes the request with her words.
    desk.click_text("Appeler le suivant").await;
    desk.wait_text("Ticket P002 appelé au guichet 3.", Duration::from_secs(10))
        .await;
    board.wait_text("P002", Duration::from_secs(10)).await;
    let item = item_in(
        &app,
        &token,
        &with_rdv.intake_event_id,
        qpb::WorkItemStatus::Assigned,
    )
    .await;
    assert_eq!(item.agent_id, marie);
    desk.goto(&format!("{base}/guichet")).await;
    desk.wait_text("Ouvrir la fiche de la demande", Duration::from_secs(10))
        .await;
    desk.click_text("Commencer la réception").await;
    desk.wait_text(
        "Réception du ticket P002 commencée.",
        Duration::from_secs(10),
    )
    .await;
    desk.check_page("guichet-en-cours").await;
    desk.click_text("Ouvrir la fiche de la demande").await;
    let fiche = format!("/demande/{}", item.id);
    eventually("the fiche opens", Duration::from_secs(10), || {
        let desk = &desk;
        let fiche = fiche.clone();
        async move { (desk.current_path().await == fiche).then_some(()) }
    })
    .await;
    desk.wait_text("P002", Duration::from_secs(10)).await;
    desk.check_page("guichet-fiche").await;
    desk.goto(&format!("{base}/guichet")).await;
    desk.fill("resultat", "Dossier de passeport déposé, pièces complètes")
        .await;
    desk.click_text("Terminer").await;
    desk.wait_text("Ticket P002 terminé.", Duration::from_secs(10))
        .await;
    let done = item_in(
        &app,
        &token,
        &with_rdv.intake_event_id,
        qpb::WorkItemStatus::Completed,
    )
    .await;
    assert_eq!(
        done.outcome,
        "Dossier de passeport déposé, pièces complètes"
    );
    assert_eq!(done.agent_id, marie);
    let rows = desk
        .client
        .execute(
            "return Array.from(document.querySelectorAll('section[aria-labelledby=recus-titre] tbody tr')).map(r => r.cells[0].innerText + ' ' + r.cells[2].innerText);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(rows, serde_json::json!(["P002 Reçu", "P001 Absent"]));
    desk.click_text("Appeler le suivant").await;
    desk.wait_text(
        "Personne n'attend pour vos services.",
        Duration::from_secs(10),
    )
    .await;

    // The supervisor removes the kiosk: it opens nothing any more.
    crate::portal::log_out(&desk).await;
    log_in(&desk, &base, "chef").await;
    desk.goto(&format!("{base}/appareils")).await;
    desk.wait_text("Borne du hall", Duration::from_secs(10))
        .await;
    desk.click_text("Retirer Borne du hall").await;
    desk.wait_text("Appareil retiré.", Duration::from_secs(10))
        .await;
    kiosk.goto(&format!("{base}/borne")).await;
    kiosk
        .wait_text("Cet appareil n'est pas activé", Duration::from_secs(10))
        .await;

    kiosk.close().await;
    board.close().await;
    desk.close().await;
}

/// Over gRPC: a called ticket's request goes to the agent who called it,
/// follows a transfer to the next desk's agent, and ends with the visit;
/// a kiosk may issue an anonymous ticket, an agent may not.
async fn desk_hand_over(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let kiosk_token = env.token("borne-1", &[TokenRole::Kiosk]);
    let a1 = env.token("agent-1", &[TokenRole::Agent]);
    let a2 = env.token("agent-2", &[TokenRole::Agent]);
    let mut kiosk = counter_client(app.grpc_addr, &kiosk_token).await;
    let mut desk1 = counter_client(app.grpc_addr, &a1).await;
    let mut desk2 = counter_client(app.grpc_addr, &a2).await;

    let services = kiosk
        .list_services(cpb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    let passeports = services
        .services
        .iter()
        .find(|s| s.name == "passeports")
        .expect("passports service");
    assert_eq!(passeports.letter, "P");
    assert_eq!(passeports.label, "Passeports et cartes d'identité");
    assert_eq!(services.default_site, "mairie");

    let anonymous = cpb::IssueTicketRequest {
        citizen: Some(Default::default()),
        service: "general".into(),
        ..Default::default()
    };
    let err = desk1.issue_ticket(anonymous.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let t = kiosk.issue_ticket(anonymous).await.unwrap().into_inner();
    assert_eq!(t.number, "G001");
    let pending = item_in(&app, &a1, &t.intake_event_id, qpb::WorkItemStatus::Pending).await;
    assert_eq!(pending.correlation, "none");

    let called = desk1
        .call_next(cpb::CallNextRequest {
            desk: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(called.id, t.id);
    assert_eq!(called.agent_id, "agent-1");
    let held = item_in(&app, &a1, &t.intake_event_id, qpb::WorkItemStatus::Assigned).await;
    assert_eq!(held.agent_id, "agent-1");
    // Nobody takes it from the unified queue meanwhile.
    let mut q2 = queue_client(app.grpc_addr, &a2).await;
    q2.set_presence(qpb::SetPresenceRequest {
        presence: qpb::Presence::Available as i32,
        accept_offers: false,
    })
    .await
    .unwrap();
    let err = q2
        .take_next(qpb::TakeNextRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // The desk's list shows it; the board's calls carry no token.
    let at_desk = desk1
        .list_tickets(cpb::ListTicketsRequest {
            desk: "1".into(),
            statuses: vec![cpb::TicketStatus::Called as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(at_desk.site, "mairie");
    assert_eq!(at_desk.tickets.len(), 1);
    assert!(at_desk.tickets[0].public_token.is_empty());
    let err = desk1
        .list_tickets(cpb::ListTicketsRequest {
            statuses: vec![99],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("statuses"), "{err:?}");

    // Transferred to passports: the next desk's agent gets the request.
    desk1
        .transfer_ticket(cpb::TransferTicketRequest {
            ticket_id: t.id.clone(),
            service: "passeports".into(),
        })
        .await
        .unwrap();
    let again = desk2
        .call_next(cpb::CallNextRequest {
            desk: "2".into(),
            services: vec!["passeports".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, t.id);
    let q = queue_client(app.grpc_addr, &a2).await;
    eventually(
        "the request follows the transfer",
        Duration::from_secs(30),
        || {
            let mut q = q.clone();
            let id = t.intake_event_id.clone();
            async move {
                let i = q
                    .get_work_item(qpb::GetWorkItemRequest {
                        intake_event_id: id,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                (i.agent_id == "agent-2").then_some(())
            }
        },
    )
    .await;
    // Only a telephony request is called back; an outcome is required.
    let mut q2 = queue_client(app.grpc_addr, &a2).await;
    let held = item_in(&app, &a2, &t.intake_event_id, qpb::WorkItemStatus::Assigned).await;
    let err = q2
        .record_callback_attempt(qpb::RecordCallbackAttemptRequest {
            id: held.id.clone(),
            outcome: 0,
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("outcome"), "{err:?}");
    let err = q2
        .record_callback_attempt(qpb::RecordCallbackAttemptRequest {
            id: held.id.clone(),
            outcome: qpb::CallbackOutcome::NoAnswer as i32,
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    desk2
        .start_service(cpb::TicketActionRequest {
            ticket_id: t.id.clone(),
        })
        .await
        .unwrap();
    desk2
        .finish_service(cpb::TicketActionRequest {
            ticket_id: t.id.clone(),
        })
        .await
        .unwrap();
    let done = item_in(
        &app,
        &a2,
        &t.intake_event_id,
        qpb::WorkItemStatus::Completed,
    )
    .await;
    assert_eq!(done.agent_id, "agent-2");
    assert_eq!(done.outcome, "Ticket G001 : reçu au guichet 2");
}

#[tokio::test]
async fn a_called_ticket_hands_its_request_to_the_desk_agent() {
    desk_hand_over(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_called_ticket_hands_its_request_to_the_desk_agent_postgres() {
    desk_hand_over(Backend::Postgres).await;
}

/// Screen pop: a call ringing at Marie's extension shows the caller's fiche
/// on her page and not on Paul's; an unknown number at Paul's opens a new
/// request with the number filled in; the answered call's request is
/// assigned to Marie (her PBX extension is mapped by the admin).
#[tokio::test]
async fn a_call_pops_the_callers_fiche_on_the_right_agents_page() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(admin) = Browser::start().await else {
        return;
    };
    let Some(paul_b) = Browser::start().await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(&portal, "adele", "Adèle Admin", &[AuthRole::Admin]).await;
    let marie = account(&portal, "marie", "Marie Durand", &[AuthRole::Agent]).await;
    let paul = account(&portal, "paul", "Paul Petit", &[AuthRole::Agent]).await;
    let token = env.token("chef-1", &[TokenRole::Supervisor]);
    let tel = cti_addr(&app);

    // A known citizen: Jean Dupont came to the counter with his phone.
    let t = counter_client(app.grpc_addr, &env.token("agent-9", &[TokenRole::Agent]))
        .await
        .issue_ticket(ticket_request(
            "Jean",
            "Dupont",
            "06 12 34 56 78",
            "carte d'identité",
        ))
        .await
        .unwrap()
        .into_inner();
    let visit = item_in(
        &app,
        &token,
        &t.intake_event_id,
        qpb::WorkItemStatus::Pending,
    )
    .await;
    queue_client(app.grpc_addr, &token)
        .await
        .cancel_work_item(qpb::CancelWorkItemRequest {
            id: visit.id,
            reason: "Reçu à l'accueil".into(),
        })
        .await
        .unwrap();

    // An agent may not map extensions; the admin maps 201 to Marie and
    // 202 to Paul (typed as a subject).
    log_in(&admin, &base, "marie").await;
    admin.goto(&format!("{base}/telephonie/postes")).await;
    admin
        .wait_text("Seuls les administrateurs", Duration::from_secs(10))
        .await;
    admin.goto(&format!("{base}/file")).await;
    crate::portal::log_out(&admin).await;
    log_in(&admin, &base, "adele").await;
    admin.goto(&format!("{base}/telephonie/postes")).await;
    admin
        .wait_text("Aucun poste", Duration::from_secs(10))
        .await;
    admin.check_page("postes-vide").await;
    admin.fill("poste", "201").await;
    admin
        .client
        .find(Locator::Css(&format!("#compte option[value='{marie}']")))
        .await
        .expect("Marie in the accounts")
        .click()
        .await
        .unwrap();
    admin.click_text("Associer").await;
    admin
        .wait_text("Poste 201 associé.", Duration::from_secs(10))
        .await;
    admin.fill("poste", "202").await;
    admin.fill("agent", &paul).await;
    admin.click_text("Associer").await;
    admin
        .wait_text("Poste 202 associé.", Duration::from_secs(10))
        .await;
    let text = admin.text().await;
    assert!(
        text.contains("Marie Durand (marie)") && text.contains("Paul Petit (paul)"),
        "{text}"
    );
    admin.check_page("postes").await;
    crate::portal::log_out(&admin).await;

    // Marie (in the first browser) and Paul each have their queue open.
    let marie_b = admin;
    log_in(&marie_b, &base, "marie").await;
    log_in(&paul_b, &base, "paul").await;
    for b in [&marie_b, &paul_b] {
        b.goto(&format!("{base}/file")).await;
        b.wait_text("File unique", Duration::from_secs(10)).await;
    }
    // The pages' call streams are open before the phone rings.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (status, _) = cti_json(
        tel,
        CTI_TOKEN,
        serde_json::json!({"event":"newCall","from":"0612345678","to":"0143986500","direction":"in","callId":"pop-1","user":["201"]}),
    )
    .await;
    assert_eq!(status, 200);
    let text = marie_b
        .wait_text("Appel entrant : +33612345678", Duration::from_secs(10))
        .await;
    assert!(text.contains("DUPONT Jean"), "{text}");
    assert!(text.contains("Ouvrir la fiche"), "{text}");
    marie_b.check_page("appel-entrant-connu").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !paul_b.text().await.contains("Appel entrant"),
        "the call popped on another agent's page"
    );

    // An unknown number at Paul's extension: a new request, number filled.
    let (status, _) = cti_json(
        tel,
        CTI_TOKEN,
        serde_json::json!({"event":"newCall","from":"0698765432","to":"0143986500","direction":"in","callId":"pop-2","user":["202"]}),
    )
    .await;
    assert_eq!(status, 200);
    paul_b
        .wait_text("Numéro inconnu", Duration::from_secs(10))
        .await;
    paul_b.check_page("appel-entrant-inconnu").await;
    paul_b.click_text("Nouvelle demande pour cet appel").await;
    paul_b
        .wait_text("Nouvelle demande", Duration::from_secs(10))
        .await;
    let phone = paul_b
        .client
        .find(Locator::Id("telephone"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(phone.as_deref(), Some("+33698765432"));
    assert!(
        !paul_b.current_path().await.contains("698765432"),
        "the number is in the URL"
    );

    // Marie answers (the PBX names her extension) and hangs up: the
    // answered call's request is hers.
    let (status, _) = cti_json(
        tel,
        CTI_TOKEN,
        serde_json::json!({"event":"answer","from":"0612345678","to":"0143986500","direction":"in","callId":"pop-1","user":["201"],"answeringNumber":"201"}),
    )
    .await;
    assert_eq!(status, 200);
    marie_b
        .wait_text("Appel en cours : +33612345678", Duration::from_secs(10))
        .await;
    let (status, _) = cti_json(
        tel,
        CTI_TOKEN,
        serde_json::json!({"event":"hangup","from":"0612345678","to":"0143986500","direction":"in","callId":"pop-1","cause":"normalClearing"}),
    )
    .await;
    assert_eq!(status, 200);
    let call = telephony_client(app.grpc_addr, &token)
        .await
        .get_call(guichet_testkit::proto::telephony::v1::GetCallRequest {
            call_id: "pop-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(call.answered_agent_id, marie);
    let handled = item_in(
        &app,
        &token,
        &call.intake_event_id,
        qpb::WorkItemStatus::Completed,
    )
    .await;
    assert_eq!(handled.agent_id, marie);

    // Paul's caller hangs up unanswered: a callback request. Paul calls
    // back three times without an answer; the third closes the request.
    let (status, _) = cti_json(
        tel,
        CTI_TOKEN,
        serde_json::json!({"event":"hangup","from":"0698765432","to":"0143986500","direction":"in","callId":"pop-2","cause":"noAnswer"}),
    )
    .await;
    assert_eq!(status, 200);
    let missed = telephony_client(app.grpc_addr, &token)
        .await
        .get_call(guichet_testkit::proto::telephony::v1::GetCallRequest {
            call_id: "pop-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let callback = item_in(
        &app,
        &token,
        &missed.intake_event_id,
        qpb::WorkItemStatus::Pending,
    )
    .await;
    paul_b.goto(&format!("{base}/file")).await;
    paul_b
        .client
        .find(Locator::Css("#presence option[value='available']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    paul_b.click_text("Enregistrer").await;
    paul_b
        .wait_text("Actuellement : Disponible", Duration::from_secs(10))
        .await;
    paul_b.click_text("Prendre la suivante").await;
    paul_b
        .wait_text("Rappel du citoyen", Duration::from_secs(10))
        .await;
    assert_eq!(
        paul_b.current_path().await,
        format!("/demande/{}", callback.id)
    );
    paul_b.check_page("rappel").await;
    for n in 1..=2 {
        paul_b.click_text("Enregistrer le rappel").await;
        paul_b
            .wait_text(
                &format!("Rappel n° {n} : pas de réponse (tentative sans réponse {n} sur 3)."),
                Duration::from_secs(10),
            )
            .await;
    }
    let text = paul_b.text().await;
    assert!(text.contains("2 déjà faits, 2 sans réponse"), "{text}");
    click_id(&paul_b, "rappel-messagerie").await;
    paul_b
        .fill("rappel-note", "Message : rappeler la mairie")
        .await;
    paul_b.click_text("Enregistrer le rappel").await;
    paul_b
        .wait_text(
            "Rappel sans réponse après 3 tentatives : demande close",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(paul_b.current_path().await, "/file");
    let closed = item_in(
        &app,
        &token,
        &missed.intake_event_id,
        qpb::WorkItemStatus::Completed,
    )
    .await;
    assert_eq!(
        closed.outcome,
        "Rappel sans réponse après 3 tentatives : demande close"
    );
    assert_eq!(
        (closed.callback_attempts, closed.callback_unanswered),
        (3, 3)
    );
    // The three attempts are on the citizen's timeline.
    let timeline = dossier_client(app.grpc_addr, &token)
        .await
        .list_citizen_timeline(
            guichet_testkit::proto::dossier::v1::ListCitizenTimelineRequest {
                citizen_id: closed.citizen_id.clone(),
                page_size: 20,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .into_inner()
        .entries;
    let attempts: Vec<&str> = timeline
        .iter()
        .map(|e| e.summary.as_str())
        .filter(|s| s.starts_with("Rappel n°"))
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(
        attempts[0].contains(
            "messagerie vocale, message laissé (tentative sans réponse 3 sur 3) — Message : rappeler la mairie"
        ),
        "{attempts:?}"
    );

    // The day's call log: the answered call and the missed one.
    marie_b.goto(&format!("{base}/appels")).await;
    let text = marie_b
        .wait_text("Appels du jour", Duration::from_secs(10))
        .await;
    assert!(
        text.contains("2 appel(s) reçu(s), 1 répondu(s), 1 manqué(s)"),
        "{text}"
    );
    assert!(
        text.contains("Répondu (201)") && text.contains("Manqué"),
        "{text}"
    );
    assert!(text.contains("+33698765432"), "{text}");
    marie_b.check_page("journal-appels").await;

    marie_b.close().await;
    paul_b.close().await;
}

/// The appointment desk: an agent books for the citizen from her dossier
/// (type, site, people, a free slot), the booking shows in the day's
/// agenda with the citizen's name and reaches the dossier's timeline, and
/// the desk marks it seen.
#[tokio::test]
async fn an_agent_books_from_the_dossier_and_works_the_agenda() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    // Monday 4 January 2027, 09:00 in Paris.
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2027, 1, 4, 8, 0, 0).unwrap());
    let app = env.spawn_on_clock(&all_roles(), env.config(), &clock).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(&portal, "marie", "Marie Durand", &[AuthRole::Agent]).await;
    let token = env.token("chef-1", &[TokenRole::Supervisor]);
    let t = counter_client(app.grpc_addr, &env.token("agent-9", &[TokenRole::Agent]))
        .await
        .issue_ticket(ticket_request(
            "Jean",
            "Dupont",
            "06 12 34 56 78",
            "carte d'identité",
        ))
        .await
        .unwrap()
        .into_inner();
    let item = item_in(
        &app,
        &token,
        &t.intake_event_id,
        qpb::WorkItemStatus::Pending,
    )
    .await;
    assert!(!item.dossier_id.is_empty(), "{item:?}");

    log_in(&b, &base, "marie").await;
    b.goto(&format!("{base}/dossier/{}", item.dossier_id)).await;
    b.click_text("Prendre un rendez-vous").await;
    b.wait_text(
        "Prendre un rendez-vous pour DUPONT Jean",
        Duration::from_secs(10),
    )
    .await;
    b.client
        .find(Locator::Css("#type option[value='cni-depot']"))
        .await
        .expect("the CNI type")
        .click()
        .await
        .unwrap();
    b.client
        .find(Locator::Css("#site option[value='mairie']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.click_text("Voir les créneaux").await;
    b.wait_text("Créneaux libres", Duration::from_secs(10))
        .await;
    b.check_page("rendez-vous-creneaux").await;
    // Booking without a slot is told.
    b.click_text("Réserver").await;
    b.wait_text("Choisissez un créneau.", Duration::from_secs(10))
        .await;
    b.click_text("Voir les créneaux").await;
    b.wait_text("Créneaux libres", Duration::from_secs(10))
        .await;
    let first = b
        .client
        .find(Locator::Css(".slot input"))
        .await
        .expect("a free slot");
    let value = first.attr("value").await.unwrap().unwrap_or_default();
    first.click().await.unwrap();
    b.click_text("Réserver").await;
    let text = b.wait_text("réservé le", Duration::from_secs(10)).await;
    assert!(b.current_path().await.starts_with("/agenda?"), "{text}");
    assert!(text.contains("DUPONT Jean"), "{text}");
    assert!(text.contains("Attendu"), "{text}");
    assert!(
        text.contains("1 rendez-vous : 1 attendu(s) ou arrivé(s)"),
        "{text}"
    );
    b.check_page("agenda").await;
    let start = value.split_once('|').unwrap().1.to_owned();
    let bookings = appointment_client(app.grpc_addr, &token)
        .await
        .list_bookings(apb::ListBookingsRequest {
            filter: Some(apb::BookingFilter {
                dossier_id: item.dossier_id.clone(),
                ..Default::default()
            }),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .bookings;
    assert_eq!(bookings.len(), 1);
    let booked = &bookings[0];
    assert_eq!(booked.slot.as_ref().unwrap().appointment_type, "cni-depot");
    assert_eq!(
        booked
            .slot
            .as_ref()
            .unwrap()
            .start_time
            .as_ref()
            .map(|t| t.seconds),
        Some(
            chrono::DateTime::parse_from_rfc3339(&start)
                .unwrap()
                .timestamp()
        )
    );
    // On the dossier's timeline.
    let d = dossier_client(app.grpc_addr, &token).await;
    eventually(
        "the booking on the timeline",
        Duration::from_secs(30),
        || {
            let mut d = d.clone();
            let id = item.dossier_id.clone();
            async move {
                d.list_dossier_timeline(
                    guichet_testkit::proto::dossier::v1::ListDossierTimelineRequest {
                        dossier_id: id,
                        page_size: 50,
                        ..Default::default()
                    },
                )
                .await
                .ok()?
                .into_inner()
                .entries
                .iter()
                .any(|e| e.summary.starts_with("Rendez-vous"))
                .then_some(())
            }
        },
    )
    .await;
    // The desk marks it seen.
    b.click_text(&format!("Reçu {}", booked.reference)).await;
    b.wait_text(
        &format!("Rendez-vous {} : reçu.", booked.reference),
        Duration::from_secs(10),
    )
    .await;
    let text = b.text().await;
    assert!(text.contains("1 reçu(s)"), "{text}");
    b.close().await;
}

/// A signature requested from the dossier: the agent prepares it (a PDF
/// of the dossier, the citizen's mobile prefilled), the citizen signs on
/// the signing page with the code from the SMS, the agent's open page
/// shows "Signé" live, and the evidence verifies.
#[tokio::test]
async fn a_signature_requested_from_the_dossier_completes_with_the_sms_code() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(agent_b) = Browser::start().await else {
        return;
    };
    let Some(citizen_b) = Browser::start().await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(&portal, "marie", "Marie Durand", &[AuthRole::Agent]).await;
    let token = env.token("chef-1", &[TokenRole::Supervisor]);
    let t = counter_client(app.grpc_addr, &env.token("agent-9", &[TokenRole::Agent]))
        .await
        .issue_ticket(ticket_request(
            "Amélie",
            "Poulain",
            "06 12 34 56 78",
            "contrat de crèche",
        ))
        .await
        .unwrap()
        .into_inner();
    let item = item_in(
        &app,
        &token,
        &t.intake_event_id,
        qpb::WorkItemStatus::Pending,
    )
    .await;
    assert!(!item.dossier_id.is_empty(), "{item:?}");
    dossier_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent]))
        .await
        .add_document(guichet_testkit::proto::dossier::v1::AddDocumentRequest {
            dossier_id: item.dossier_id.clone(),
            filename: "avenant.pdf".into(),
            media_type: "application/pdf".into(),
            document_type: "avenant".into(),
            content: crate::signature_flow::avenant_pdf(&env.id),
            ..Default::default()
        })
        .await
        .unwrap();

    log_in(&agent_b, &base, "marie").await;
    agent_b
        .goto(&format!("{base}/dossier/{}", item.dossier_id))
        .await;
    agent_b.click_text("Signatures").await;
    agent_b
        .wait_text("Aucune demande de signature", Duration::from_secs(10))
        .await;
    let phone = agent_b
        .client
        .find(Locator::Id("telephone"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(phone.as_deref(), Some("+33612345678"));
    agent_b.check_page("signatures-vide").await;
    agent_b.fill("titre", "Avenant au contrat d'accueil").await;
    agent_b.click_text("Envoyer la demande de signature").await;
    agent_b
        .wait_text(
            "Demande de signature « Avenant au contrat d'accueil » envoyée",
            Duration::from_secs(10),
        )
        .await;
    agent_b
        .wait_text("En attente de signature", Duration::from_secs(10))
        .await;
    agent_b.check_page("signatures-en-attente").await;

    // The citizen signs with the code of the SMS.
    let code = crate::signature_flow::read_sms_code(&env, "+33612345678", 1).await;
    let sms = env
        .sms_sink()
        .into_iter()
        .find(|m| m["template"] == "signature-code")
        .expect("the signing SMS");
    let text = sms["text"].as_str().unwrap().to_owned();
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/s/"))
        .unwrap_or_else(|| panic!("no signing link in {text}"));
    let path = &link[link.find("/s/").unwrap()..];
    let pages = http_addr_of(&app, guichet::Role::Signature);
    citizen_b.goto(&format!("http://{pages}{path}")).await;
    citizen_b
        .wait_text("Avenant au contrat d'accueil", Duration::from_secs(10))
        .await;
    citizen_b
        .client
        .find(Locator::Css("input[name='consent']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    citizen_b.fill("code", &code).await;
    citizen_b.click_text("Signer le document").await;
    citizen_b
        .wait_text("Votre signature est enregistrée", Duration::from_secs(10))
        .await;

    // The agent's open page follows: signed, with its evidence verified.
    agent_b.wait_text("Signé", Duration::from_secs(15)).await;
    agent_b
        .click_text("Voir la preuve et sa vérification")
        .await;
    agent_b
        .wait_text("Preuve valide", Duration::from_secs(10))
        .await;
    let text = agent_b.text().await;
    assert!(text.contains("Amélie Poulain"), "{text}");
    agent_b.check_page("signature-preuve").await;
    agent_b.close().await;
    citizen_b.close().await;
}

/// An email answered from the dossier: the admin writes a text module, the
/// agent reads the citizen's message in the thread, fills the answer from
/// the module (placeholders filled), previews it and sends it; it reaches
/// a real SMTP server threaded to the citizen's message, with the
/// reference, and the thread shows it.
#[tokio::test]
async fn an_email_answered_from_the_dossier_reaches_the_citizen_threaded() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let outbound = SmtpSink::start(env.dir.path()).await;
    let port = outbound.port.to_string();
    let email = crate::email_smtp::spawn_email(
        &env,
        &all_roles(),
        &[
            ("GUICHET__NOTIFICATION__EMAIL__TRANSPORT", "smtp"),
            ("GUICHET__NOTIFICATION__EMAIL__SMTP_HOST", "127.0.0.1"),
            ("GUICHET__NOTIFICATION__EMAIL__SMTP_PORT", port.as_str()),
            (
                "GUICHET__NOTIFICATION__EMAIL__FROM",
                "Mairie de Villeneuve <contact@ville.fr>",
            ),
        ],
    )
    .await;
    let app = &email.app;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(&portal, "adele", "Adèle Admin", &[AuthRole::Admin]).await;
    account(&portal, "marie", "Marie Durand", &[AuthRole::Agent]).await;
    let token = env.token("chef-1", &[TokenRole::Supervisor]);

    // The citizen writes; the acknowledgement leaves first.
    let sent = guichet_testkit::email::send(
        email.smtp,
        false,
        None,
        "helene.lefevre@example.fr",
        &[crate::email_smtp::CITY],
        &[guichet_testkit::email::fixture("01-simple-utf8.eml")],
    )
    .await;
    assert_eq!(sent[0].code, 250);
    outbound.wait_for(1).await;
    let q = queue_client(app.grpc_addr, &token).await;
    let item = eventually("the email routed", Duration::from_secs(30), || {
        let mut q = q.clone();
        async move {
            q.list_work_items(qpb::ListWorkItemsRequest {
                channel: guichet_testkit::proto::intake::v1::Channel::Email as i32,
                page_size: 10,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .items
            .into_iter()
            .find(|i| !i.dossier_id.is_empty())
        }
    })
    .await;

    // The admin writes a module for every procedure.
    log_in(&b, &base, "adele").await;
    b.goto(&format!("{base}/modeles")).await;
    b.wait_text("Aucun modèle.", Duration::from_secs(10)).await;
    b.fill("titre", "Accusé de prise en charge").await;
    b.fill(
        "texte",
        "Bonjour {prenom} {nom},\nvotre demande {reference} est prise en charge.\n{agent}, {mairie}",
    )
    .await;
    b.click_text("Enregistrer le modèle").await;
    b.wait_text(
        "Modèle « Accusé de prise en charge » enregistré.",
        Duration::from_secs(10),
    )
    .await;
    b.check_page("modeles").await;
    crate::portal::log_out(&b).await;

    // Marie answers from the dossier.
    log_in(&b, &base, "marie").await;
    b.goto(&format!("{base}/dossier/{}", item.dossier_id)).await;
    b.click_text("Courriels").await;
    let text = b.wait_text("Échanges", Duration::from_secs(10)).await;
    assert!(text.contains("helene.lefevre@example.fr"), "{text}");
    assert!(
        text.contains("Envoyé"),
        "the acknowledgement is in the thread: {text}"
    );
    b.click_text("Utiliser ce modèle").await;
    b.wait_text("Texte de la réponse", Duration::from_secs(10))
        .await;
    let filled = b
        .client
        .find(Locator::Id("texte"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(filled.starts_with("Bonjour Hélène Lefèvre,"), "{filled}");
    assert!(filled.contains(&item.dossier_reference), "{filled}");
    assert!(
        filled.contains("Marie Durand, Mairie de Villeneuve"),
        "{filled}"
    );
    b.click_text("Aperçu").await;
    b.wait_text("Aperçu de la réponse", Duration::from_secs(10))
        .await;
    b.check_page("courriels-apercu").await;
    b.click_text("Envoyer la réponse").await;
    b.wait_text(
        "Réponse envoyée à helene.lefevre@example.fr.",
        Duration::from_secs(10),
    )
    .await;
    let text = b.text().await;
    assert!(
        text.contains(
            "de contact@ville.fr à helene.lefevre@example.fr\nRe: Demande d'acte de naissance"
        ),
        "{text}"
    );
    b.check_page("courriels").await;

    // It reaches her mail server, threaded to her message.
    let raw = eventually(
        "the answer on the SMTP server",
        Duration::from_secs(30),
        || {
            let all = outbound.messages();
            async move {
                all.into_iter().find(|raw| {
                    mail_parser::MessageParser::default()
                        .parse(raw)
                        .and_then(|m| m.body_text(0).map(|t| t.contains("est prise en charge")))
                        .unwrap_or(false)
                })
            }
        },
    )
    .await;
    let reply = mail_parser::MessageParser::default()
        .parse(&raw)
        .expect("a MIME message");
    // In the citizen's thread: her message heads its references (the
    // email role answers the thread's latest message, here the
    // acknowledgement).
    let references: Vec<String> = reply
        .references()
        .as_text_list()
        .map(|l| l.iter().map(|r| r.to_string()).collect())
        .or_else(|| reply.references().as_text().map(|r| vec![r.to_owned()]))
        .unwrap_or_default();
    assert_eq!(
        references.first().map(String::as_str),
        Some("c01@example.fr"),
        "{references:?}"
    );
    let subject = reply.subject().unwrap_or_default().to_owned();
    assert!(subject.contains(&item.dossier_reference), "{subject}");
    let body = reply.body_text(0).unwrap_or_default().to_string();
    assert!(body.contains("est prise en charge"), "{body}");
    b.close().await;
}

/// The mail room: a supervisor uploads a letter from the browser (read and
/// routed: its request opens from the page) and a file the scan role cannot
/// read (quarantined with its reason in French); reading it again keeps it
/// there and says why.
#[tokio::test]
async fn the_mail_room_uploads_letters_and_works_the_quarantine() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(&portal, "chef", "Claire Chef", &[AuthRole::Supervisor]).await;
    let work = tempfile::tempdir().unwrap();
    let letter = work.path().join("lettre-dupont.pdf");
    guichet_testkit::scan::render(
        &letter,
        "pdf_text",
        150,
        &[guichet_testkit::scan::PageSpec::new(&[
            (20.0, "Jean Dupont"),
            (20.0, "12 rue de la Mairie"),
            (20.0, "94300 Villeneuve"),
            (20.0, "06 12 34 56 78"),
            (0.0, ""),
            (20.0, "Objet : demande d'acte de naissance"),
            (
                20.0,
                "Madame, Monsieur, je souhaite obtenir une copie de mon acte de naissance.",
            ),
        ])],
    );
    let bad = work.path().join("notes.txt");
    std::fs::write(&bad, "ceci n'est pas un scan").unwrap();

    log_in(&b, &base, "chef").await;
    b.goto(&format!("{base}/courrier")).await;
    b.wait_text("Aucun courrier en quarantaine.", Duration::from_secs(10))
        .await;
    b.check_page("courrier-vide").await;
    let upload = |path: std::path::PathBuf| {
        let b = &b;
        async move {
            b.client
                .find(Locator::Id("fichier"))
                .await
                .unwrap()
                .send_keys(path.to_str().unwrap())
                .await
                .unwrap();
            b.client
                .find(Locator::Css("form[action='/courrier/envoyer'] button"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    upload(letter).await;
    b.wait_text(
        "« lettre-dupont.pdf » lu (1 page(s)) : il est dans la file unique.",
        Duration::from_secs(60),
    )
    .await;
    upload(bad).await;
    b.wait_text(
        "« notes.txt » mis en quarantaine : type de fichier non pris en charge",
        Duration::from_secs(30),
    )
    .await;
    let text = b.text().await;
    assert!(text.contains("lettre-dupont.pdf"), "{text}");
    b.check_page("courrier").await;
    // Its request opens from the mail room (once routed).
    eventually("the letter's request", Duration::from_secs(30), || {
        let b = &b;
        let base = base.clone();
        async move {
            b.goto(&format!("{base}/courrier")).await;
            b.text().await.contains("Ouvrir la demande").then_some(())
        }
    })
    .await;
    b.click_text("Ouvrir la demande").await;
    b.wait_text("Demande", Duration::from_secs(10)).await;
    assert!(b.current_path().await.starts_with("/demande/"));

    // Reading the bad file again: still unreadable, and said so.
    b.goto(&format!("{base}/courrier")).await;
    b.click_text("Relire notes.txt").await;
    b.wait_text(
        "« notes.txt » reste en quarantaine : type de fichier non pris en charge",
        Duration::from_secs(30),
    )
    .await;
    let text = b.text().await;
    assert!(text.contains("déjà relu 1 fois"), "{text}");
    b.close().await;
}

/// Mail nobody wrote (a newsletter, a bounce, an out-of-office reply)
/// makes no citizen, dossier or request, and is not lost from sight: the
/// "Courrier automatique" view lists it, by kind, with the dossier it is
/// recorded on when it threads to one, set aside otherwise.
#[tokio::test]
async fn automatic_mail_has_a_view_of_its_own() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let email = crate::email_smtp::spawn_email(&env, &all_roles(), &[]).await;
    let app = &email.app;
    let portal: PortalHandle = app.handle().expect("portal handle");
    let base = portal.base_url.clone();
    account(&portal, "marie", "Marie Durand", &[AuthRole::Agent]).await;
    let token = env.token("chef-1", &[TokenRole::Supervisor]);
    for (from, file) in [
        ("infos@asso-commerce.example", "16-mailing-list.eml"),
        ("MAILER-DAEMON@mx.example.org", "17-dsn-bounce.eml"),
    ] {
        let sent = guichet_testkit::email::send(
            email.smtp,
            false,
            None,
            from,
            &[crate::email_smtp::CITY],
            &[guichet_testkit::email::fixture(file)],
        )
        .await;
        assert_eq!(sent[0].code, 250, "{file}");
    }
    // A person's mail: a request, not in this view.
    let sent = guichet_testkit::email::send(
        email.smtp,
        false,
        None,
        "helene.lefevre@example.fr",
        &[crate::email_smtp::CITY],
        &[guichet_testkit::email::fixture("01-simple-utf8.eml")],
    )
    .await;
    assert_eq!(sent[0].code, 250);
    let q = queue_client(app.grpc_addr, &token).await;
    eventually("the person's email routed", Duration::from_secs(30), || {
        let mut q = q.clone();
        async move {
            let items = q
                .list_work_items(qpb::ListWorkItemsRequest {
                    page_size: 10,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .items;
            (items.len() == 1).then_some(())
        }
    })
    .await;

    log_in(&b, &base, "marie").await;
    b.goto(&format!("{base}/courrier")).await;
    b.click_text("Courrier automatique").await;
    b.wait_text("Messages reçus", Duration::from_secs(10)).await;
    let text = b.text().await;
    assert!(text.contains("[Lettre d'info] Novembre 2026"), "{text}");
    assert!(text.contains("Liste de diffusion"), "{text}");
    assert!(
        text.contains("Undelivered Mail Returned to Sender"),
        "{text}"
    );
    assert!(text.contains("Non-distribution"), "{text}");
    assert!(text.contains("Mis de côté"), "{text}");
    assert!(
        !text.contains("helene.lefevre@example.fr"),
        "a person's mail is a request, not automatic mail: {text}"
    );
    assert!(
        !text.contains("Accusé de réception"),
        "guichet's own acknowledgement is not mail received: {text}"
    );
    b.check_page("courrier-automatique").await;
    b.click_text("Non-distribution").await;
    b.wait_text(
        "Undelivered Mail Returned to Sender",
        Duration::from_secs(10),
    )
    .await;
    let text = b.text().await;
    assert!(!text.contains("[Lettre d'info]"), "{text}");
    b.check_page("courrier-automatique-non-distribution").await;
    // Nothing of it reached the queue.
    let items = queue_client(app.grpc_addr, &token)
        .await
        .list_work_items(qpb::ListWorkItemsRequest {
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1, "{items:?}");
    b.close().await;
}

/// The counter's events and the ticket's intake event travel on two
/// streams: a desk's steps (the ticket called, then served) that routing
/// reads before the ticket's request are kept, not retried away, and
/// reach the request once it is enqueued.
async fn desk_steps_before_their_request(backend: Backend) {
    use guichet_platform::bus::IncomingEvent;
    use guichet_testkit::proto::events::v1 as evpb;
    use guichet_testkit::proto::intake::v1 as ipb;
    use prost::Message;
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env
        .spawn(&[guichet::Role::Dossier, guichet::Role::Routing])
        .await;
    let queue: guichet_testkit::routing::queue::Queue = app.handle().expect("routing's queue");
    let now = Utc::now();
    let mut visit = intake_at(ipb::Channel::Counter, now);
    visit.citizen = Some(ipb::CitizenHint {
        given_name: "Jean".into(),
        family_name: "Dupont".into(),
        ..Default::default()
    });
    let step = |id: &str, subject: &str, body: Vec<u8>| IncomingEvent {
        id: id.into(),
        ty: String::new(),
        source: "test".into(),
        subject: "tickets/t1".into(),
        time: None,
        nats_subject: format!("guichet.events.counter.{subject}"),
        body: body.into(),
        delivered: 1,
        stream_sequence: 0,
    };
    let called = evpb::TicketCalled {
        ticket_id: "t1".into(),
        ticket_number: "G001".into(),
        desk: "1".into(),
        agent_id: "agent-1".into(),
        intake_event_id: visit.id.clone(),
        call_time: Some(guichet_proto::convert::timestamp(
            now + chrono::Duration::minutes(5),
        )),
        ..Default::default()
    };
    let ended = evpb::VisitEnded {
        ticket_id: "t1".into(),
        ticket_number: "G001".into(),
        desk: "1".into(),
        outcome: "done".into(),
        agent_id: "agent-1".into(),
        intake_event_id: visit.id.clone(),
        end_time: Some(guichet_proto::convert::timestamp(
            now + chrono::Duration::minutes(9),
        )),
        ..Default::default()
    };
    // Read before the request exists: kept (and a redelivery is harmless).
    for _ in 0..2 {
        guichet_testkit::routing::desk::handle(
            &queue,
            step("desk-1", "ticket_called", called.encode_to_vec()),
        )
        .await
        .expect("the call is kept, not retried");
        guichet_testkit::routing::desk::handle(
            &queue,
            step("desk-2", "visit_ended", ended.encode_to_vec()),
        )
        .await
        .expect("the end of visit is kept, not retried");
    }
    // The ticket's request arrives: the kept steps reach it, in order.
    env.publish_intake(&visit).await;
    let a1 = env.token("agent-1", &[TokenRole::Agent]);
    let done = item_in(&app, &a1, &visit.id, qpb::WorkItemStatus::Completed).await;
    assert_eq!(done.agent_id, "agent-1");
    assert_eq!(done.outcome, "Ticket G001 : reçu au guichet 1");
    let first_touch = views_seconds(&done.assign_time) - views_seconds(&done.enter_time);
    assert_eq!(first_touch, 300, "the desk's call time is the first touch");
}

fn views_seconds(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map(|t| t.seconds).unwrap_or_default()
}

#[tokio::test]
async fn desk_steps_that_come_before_their_request_are_kept() {
    desk_steps_before_their_request(Backend::Sqlite).await;
}

#[tokio::test]
async fn desk_steps_that_come_before_their_request_are_kept_postgres() {
    desk_steps_before_their_request(Backend::Postgres).await;
}
