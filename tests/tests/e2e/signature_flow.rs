//! Signing by SMS code end to end: the citizen's French pages, the gRPC API
//! for agents, real NATS (the code is read back from the SMS request) and
//! real databases; the dossier role moves the dossier on completion.

use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use guichet::{Role, RunningApp};
use guichet_platform::clock::ManualClock;
use guichet_proto::convert::timestamp;
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::CitizenHint;
use guichet_proto::signature::v1 as pb;
use guichet_testkit::*;
use tokio_util::sync::CancellationToken;
use tonic::Code;

pub const PHONE: &str = "+33612345678";
pub const PHONE_2: &str = "+33698765432";

/// The signature SMS to `phone` the development sink has received so far
/// (the notification role delivers them), oldest first.
fn signature_sms(env: &TestEnv, phone: &str) -> Vec<serde_json::Value> {
    env.sms_sink()
        .into_iter()
        .filter(|m| m["to"] == phone && m["template"] == "signature-code")
        .collect()
}

/// The six-digit code in a signature SMS text ("… est 123456. Il expire …").
fn code_in(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .map(str::to_owned)
}

/// The code of the `nth` (1-based) signature SMS to `phone`, read from the
/// text the notification role delivered to the development SMS sink, as
/// the citizen reads it on their phone.
pub async fn read_sms_code(env: &TestEnv, phone: &str, nth: usize) -> String {
    eventually(
        &format!("signature SMS #{nth} in the development sink"),
        StdDuration::from_secs(30),
        || async move {
            let sms = signature_sms(env, phone);
            let text = sms.get(nth - 1)?["text"].as_str()?.to_owned();
            code_in(&text)
        },
    )
    .await
}

/// How many signature SMS reached `phone` so far.
pub async fn sms_count(env: &TestEnv, phone: &str) -> usize {
    signature_sms(env, phone).len()
}

/// A real one-page PDF.
pub fn avenant_pdf(tag: &str) -> Vec<u8> {
    guichet_signature::pdf::simple_document(
        "Avenant au contrat d'accueil – crèche « Les Lutins »",
        &[
            "Nouveau planning : lundi, mardi, jeudi de 8h30 à 17h30.",
            "Date d'effet : 1er janvier 2027.",
            tag,
        ],
    )
}

/// Roles in this process (dossier) plus the signature role built in-process
/// on a manual clock.
pub struct Fx {
    pub env: TestEnv,
    pub dossier: RunningApp,
    pub core: guichet_signature::core::Core,
    pub clock: ManualClock,
    pub grpc: SocketAddr,
    pub pages: SocketAddr,
    pub stop: CancellationToken,
}

impl Fx {
    pub async fn new(
        backend: Backend,
        edit: impl FnOnce(&mut guichet::GuichetConfig),
    ) -> Option<Fx> {
        let env = TestEnv::new(backend).await?;
        // The notification role delivers the codes to the SMS sink.
        let dossier = env.spawn(&[Role::Dossier, Role::Notification]).await;
        let mut cfg = env.config();
        cfg.signature.dossier_url = format!("http://{}", dossier.grpc_addr);
        cfg.town.name = "Villeneuve".into();
        cfg.signature.job_interval_secs = 1;
        edit(&mut cfg);
        let clock = ManualClock::new(Utc::now());
        let (core, grpc, pages, stop) = start_signature(&env, &cfg, clock.clone()).await;
        Some(Fx {
            env,
            dossier,
            core,
            clock,
            grpc,
            pages,
            stop,
        })
    }

    pub async fn agent(&self) -> pb::signature_service_client::SignatureServiceClient<Authed> {
        signature_client(self.grpc, &self.env.token("agent-1", &[TokenRole::Agent])).await
    }

    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.dossier.stop().await;
        self.env.cleanup().await;
    }
}

/// Build and serve the signature role in this test with `clock`.
pub async fn start_signature(
    env: &TestEnv,
    cfg: &guichet::GuichetConfig,
    clock: ManualClock,
) -> (
    guichet_signature::core::Core,
    SocketAddr,
    SocketAddr,
    CancellationToken,
) {
    let app = env
        .spawn_on_clock(&[Role::Signature], cfg.clone(), &clock)
        .await;
    let core = app
        .handle::<guichet_signature::core::Core>()
        .expect("signature shares its core");
    let pages = app
        .listener(Role::Signature, "http")
        .expect("signing pages served");
    let (grpc, stop) = (app.grpc_addr, app.shutdown_token());
    (core, grpc, pages, stop)
}

/// A citizen's dossier for a day-care contract change, moved to
/// "avenant-a-signer"; returns (dossier id, sha256 of the avenant PDF
/// attached to it).
pub async fn dossier_awaiting_signature(
    env: &TestEnv,
    dossier_grpc: SocketAddr,
) -> (String, String) {
    let mut d = dossier_client(dossier_grpc, &env.token("agent-1", &[TokenRole::Agent])).await;
    let citizen = d
        .resolve_citizen(dpb::ResolveCitizenRequest {
            hint: Some(CitizenHint {
                given_name: "Amélie".into(),
                family_name: "Poulain".into(),
                phones: vec![PHONE.into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .citizen
        .unwrap();
    let dossier = d
        .open_dossier(dpb::OpenDossierRequest {
            citizen_id: citizen.id,
            process_id: "creche-modification-contrat".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    d.add_document(dpb::AddDocumentRequest {
        dossier_id: dossier.id.clone(),
        filename: "planning.pdf".into(),
        media_type: "application/pdf".into(),
        document_type: "planning-souhaite".into(),
        content: guichet_signature::pdf::simple_document(
            "Planning souhaité",
            &["lundi 8h30-17h30"],
        ),
        ..Default::default()
    })
    .await
    .unwrap();
    for to in ["etude", "avenant-a-signer"] {
        d.transition_dossier(dpb::TransitionDossierRequest {
            id: dossier.id.clone(),
            to_state: to.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let doc = d
        .add_document(dpb::AddDocumentRequest {
            dossier_id: dossier.id.clone(),
            filename: "avenant.pdf".into(),
            media_type: "application/pdf".into(),
            content: avenant_pdf(&env.id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (dossier.id, doc.sha256)
}

pub fn create_req(signers: &[(&str, &str)], pdf: Vec<u8>) -> pb::CreateSignatureRequestRequest {
    pb::CreateSignatureRequestRequest {
        document_content: pdf,
        title: "Avenant au contrat d'accueil".into(),
        process_template: "avenant-creche".into(),
        signers: signers
            .iter()
            .map(|(n, p)| pb::Signer {
                name: (*n).into(),
                phone: (*p).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The signer's page path (`/s/<token>`) from its signing URL.
pub fn page_path(s: &pb::Signer) -> String {
    let i = s.signing_url.find("/s/").expect("signing url");
    s.signing_url[i..].to_owned()
}

/// A browser on the signing pages.
pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
    pub forwarded_for: Option<String>,
}

impl Browser {
    pub fn new(pages: SocketAddr) -> Browser {
        Browser {
            base: format!("http://{pages}"),
            http: reqwest::Client::builder()
                .user_agent("Mozilla/5.0 (Android 14; Mobile) Firefox/133.0")
                .build()
                .unwrap(),
            forwarded_for: None,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(x) = &self.forwarded_for {
            req = req.header("x-forwarded-for", x);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

pub fn csrf(page: &str) -> String {
    let i = page.find(r#"name="csrf" value=""#).expect("a form token") + 19;
    page[i..i + 64].to_owned()
}

async fn citizen_signs_on_the_pages(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    // The real process: dossier and signature roles together, as `guichet up`.
    let app = env
        .spawn(&[Role::Dossier, Role::Signature, Role::Notification])
        .await;
    let pages = http_addr_of(&app, Role::Signature);
    let (dossier_id, sha) = dossier_awaiting_signature(&env, app.grpc_addr).await;
    let mut agent =
        signature_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;

    let mut create = create_req(&[("Amélie Poulain", "06 12 34 56 78")], Vec::new());
    create.document_sha256 = sha.clone();
    create.dossier_id = dossier_id.clone();
    create.request_id = format!("avenant-{dossier_id}");
    let req = agent
        .create_signature_request(create.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(req.status, pb::RequestStatus::Pending as i32);
    assert_eq!(req.document_sha256, sha);
    assert_eq!(req.signers[0].masked_phone, "+33 6 •• •• •• 78");
    assert!(
        req.signers[0].phone.is_empty(),
        "outputs never carry the number"
    );
    assert!(
        !req.signing_url_contains_id(),
        "the link is not the request id"
    );
    let again = agent
        .create_signature_request(create)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, req.id, "idempotent on request_id");

    let browser = Browser::new(pages);
    let path = page_path(&req.signers[0]);
    let (status, page) = browser.get(&path).await;
    assert_eq!(status, 200);
    assert!(page.contains("<html lang=\"fr\">"));
    assert!(page.contains("Avenant au contrat d&#39;accueil"), "{page}");
    assert!(page.contains("Recevoir le code"));
    assert!(page.contains("Refuser de signer"));
    assert!(page.contains("J&#39;accepte") || page.contains("j&#39;accepte"));
    assert!(page.contains("+33 6 •• •• •• 78"));
    assert!(!page.contains("12 34 56"), "the number is masked");
    let token = csrf(&page);
    let (status, pdf) = browser.get(&format!("{path}/document")).await;
    assert_eq!(status, 200);
    assert!(pdf.starts_with("%PDF-"));

    // A forged form (no token) is refused.
    let (status, _) = browser
        .post(&format!("{path}/code"), &[("csrf", "x")])
        .await;
    assert_eq!(status, 403);

    let (status, page) = browser
        .post(&format!("{path}/code"), &[("csrf", &token)])
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("Un code a été envoyé par SMS"), "{page}");
    let code = read_sms_code(&env, PHONE, 1).await;
    assert_eq!(code.len(), 6);

    // Resend right away is throttled, and no SMS goes out.
    let (_, page) = browser
        .post(&format!("{path}/code"), &[("csrf", &token)])
        .await;
    assert!(page.contains("patientez"), "{page}");
    assert_eq!(sms_count(&env, PHONE).await, 1);

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (_, page) = browser
        .post(
            &format!("{path}/confirm"),
            &[("csrf", &token), ("consent", "oui"), ("code", wrong)],
        )
        .await;
    assert!(
        page.contains("Code incorrect. Il vous reste 2 essais"),
        "{page}"
    );
    // Without the consent box, nothing is signed.
    let (_, page) = browser
        .post(
            &format!("{path}/confirm"),
            &[("csrf", &token), ("code", &code)],
        )
        .await;
    assert!(page.contains("Cochez la case"), "{page}");
    let mut browser = browser;
    // Not a trusted proxy: its X-Forwarded-For is not believed.
    browser.forwarded_for = Some("203.0.113.50".into());
    let (status, page) = browser
        .post(
            &format!("{path}/confirm"),
            &[("csrf", &token), ("consent", "oui"), ("code", &code)],
        )
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("Votre signature est enregistrée"), "{page}");
    assert!(page.contains("Tous les signataires ont signé"), "{page}");
    // The signed document's link comes after this sentence, and every
    // control is a 44 px target on a phone.
    assert!(page.contains("disponible ci-dessous"), "{page}");
    let sentence = page.find("disponible ci-dessous").unwrap();
    assert!(
        page[sentence..].contains("Télécharger le document signé"),
        "{page}"
    );
    // (The rules are in the citizens' style sheet the page links.)
    assert!(page.contains(r#"href="/signature.css""#), "{page}");
    let (status, css) = browser.get("/signature.css").await;
    assert_eq!(status, 200);
    assert!(
        css.contains(".signature main button { font: inherit; font-weight: 600; min-height: 44px; min-width: 44px;"),
        "{css}"
    );
    assert!(
        css.contains(".signature main label { display: flex; align-items: center; gap: .5rem; min-height: 44px;"),
        "{css}"
    );

    let done = agent
        .get_signature_request(pb::GetSignatureRequestRequest { id: req.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, pb::RequestStatus::Signed as i32);
    assert_eq!(done.signed_document_sha256.len(), 64);

    // The signed PDF: the original plus the French signature page.
    let (_, signed) = browser.get(&format!("{path}/document")).await;
    assert!(signed.starts_with("%PDF-"));
    let ev = agent
        .get_evidence(pb::GetEvidenceRequest {
            signature_request_id: req.id.clone(),
            include_signed_document: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        guichet_platform::objects::sha256_hex(&ev.signed_document),
        done.signed_document_sha256
    );
    assert_eq!(
        guichet_signature::pdf::check(&ev.signed_document).unwrap(),
        2
    );
    let evidence: serde_json::Value = serde_json::from_slice(&ev.evidence_json).unwrap();
    let e = &evidence["evidence"];
    assert_eq!(e["document"]["original_sha256"], sha.as_str());
    assert_eq!(
        e["document"]["signed_sha256"],
        done.signed_document_sha256.as_str()
    );
    assert_eq!(e["signers"][0]["phone_masked"], "+33 6 •• •• •• 78");
    assert_eq!(e["signers"][0]["ip"], "127.0.0.1");
    assert!(
        e["signers"][0]["user_agent"]
            .as_str()
            .unwrap()
            .contains("Firefox")
    );
    assert_eq!(e["key_id"], SEAL_KEY_A.0);
    let kinds: Vec<(String, String)> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["kind"].as_str().unwrap().to_owned(),
                x["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for k in [
        ("created", "ok"),
        ("code_sent", "ok"),
        ("code_resent", "throttled"),
        ("attempt", "wrong_code"),
        ("attempt", "ok"),
        ("signed", "ok"),
    ] {
        assert!(
            kinds.contains(&(k.0.to_owned(), k.1.to_owned())),
            "{k:?} in {kinds:?}"
        );
    }
    let raw = String::from_utf8(ev.evidence_json.clone()).unwrap();
    assert!(
        !raw.contains("612345678") && !raw.contains(&code),
        "no number, no code in the evidence"
    );

    let v = agent
        .verify(pb::VerifyRequest {
            document: ev.signed_document.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid && v.seal_valid, "{:?}", v.findings);
    assert_eq!(v.document_match, pb::DocumentMatch::Signed as i32);
    assert_eq!(v.signers[0].name, "Amélie Poulain");
    assert!(
        v.findings
            .iter()
            .any(|f| f.contains("Amélie Poulain (+33 6 •• •• •• 78) a signé")),
        "{:?}",
        v.findings
    );

    // The dossier: link signed, signed PDF attached, process moved on.
    let mut d = dossier_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;
    let dossier = eventually("the dossier moves on", StdDuration::from_secs(20), || {
        let mut d = d.clone();
        let id = dossier_id.clone();
        async move {
            let x = d
                .get_dossier(dpb::GetDossierRequest { id })
                .await
                .ok()?
                .into_inner();
            (x.state == "avenant-applique").then_some(x)
        }
    })
    .await;
    let link = dossier
        .links
        .iter()
        .find(|l| l.kind == "signature")
        .unwrap();
    assert_eq!(link.ref_id, req.id);
    assert_eq!(link.status, "signed");
    let docs = d
        .list_documents(dpb::ListDocumentsRequest {
            dossier_id: dossier_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        docs.documents
            .iter()
            .any(|x| x.sha256 == done.signed_document_sha256)
    );

    // Domain events, ids only.
    let headers = env.stream_headers("EVENTS", 1).await;
    let types: Vec<String> = headers.iter().map(|h| header(h, "ce-type")).collect();
    for t in ["request_created", "code_sent", "signer_signed", "completed"] {
        assert!(
            types.contains(&format!("guichet.signature.v1.{t}")),
            "{t} in {types:?}"
        );
    }
    app.stop().await.unwrap();
    env.cleanup().await;
}

trait NoId {
    fn signing_url_contains_id(&self) -> bool;
}

impl NoId for pb::SignatureRequest {
    fn signing_url_contains_id(&self) -> bool {
        self.signers
            .iter()
            .any(|s| s.signing_url.contains(&self.id))
    }
}

#[tokio::test]
async fn signature_a_citizen_signs_on_the_pages_and_the_dossier_moves_on_sqlite() {
    citizen_signs_on_the_pages(Backend::Sqlite).await;
}

#[tokio::test]
async fn signature_a_citizen_signs_on_the_pages_and_the_dossier_moves_on_postgres() {
    citizen_signs_on_the_pages(Backend::Postgres).await;
}

#[tokio::test]
async fn signature_three_wrong_codes_lock_the_request_until_an_agent_reissues() {
    let Some(f) = Fx::new(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let mut agent = f.agent().await;
    let req = agent
        .create_signature_request(create_req(
            &[("Amélie Poulain", PHONE)],
            avenant_pdf("lock"),
        ))
        .await
        .unwrap()
        .into_inner();
    let signer = req.signers[0].id.clone();
    let send = pb::SendCodeRequest {
        signature_request_id: req.id.clone(),
        signer_id: signer.clone(),
    };
    agent.send_code(send.clone()).await.unwrap();
    let code = read_sms_code(&f.env, PHONE, 1).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let confirm = |c: &str| pb::ConfirmCodeRequest {
        signature_request_id: req.id.clone(),
        signer_id: signer.clone(),
        code: c.into(),
        ip: "192.0.2.10".into(),
        user_agent: "guichet-test".into(),
    };
    for left in [2, 1] {
        let r = agent
            .confirm_code(confirm(wrong))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.signed);
        assert_eq!(r.attempts_left, left);
    }
    let e = agent.confirm_code(confirm(wrong)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("bloquée"), "{}", e.message());
    // Locked: even the right code no longer signs, and no code is sent.
    let e = agent.confirm_code(confirm(&code)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        agent.send_code(send.clone()).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let got = agent
        .get_signature_request(pb::GetSignatureRequestRequest { id: req.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::RequestStatus::Locked as i32);

    // Only an agent reissues (the citizens' pages may not).
    let mut service =
        signature_client(f.grpc, &f.env.token("portail", &[TokenRole::CitizenPages])).await;
    let e = service
        .reissue_signature_request(pb::ReissueSignatureRequestRequest {
            id: req.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let re = agent
        .reissue_signature_request(pb::ReissueSignatureRequestRequest {
            id: req.id.clone(),
            reason: "Appel de la famille, identité vérifiée".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(re.status, pb::RequestStatus::Pending as i32);
    // The old code is void; a new one signs.
    assert_eq!(
        agent.confirm_code(confirm(&code)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    agent.send_code(send).await.unwrap();
    let code2 = read_sms_code(&f.env, PHONE, 2).await;
    let r = agent
        .confirm_code(confirm(&code2))
        .await
        .unwrap()
        .into_inner();
    assert!(r.signed);
    assert_eq!(
        r.signature_request.unwrap().status,
        pb::RequestStatus::Signed as i32
    );
    let events = agent
        .list_signature_events(pb::ListSignatureEventsRequest {
            signature_request_id: req.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == ("attempt", "wrong_code"))
            .count(),
        3
    );
    assert!(kinds.contains(&("locked", "attempts_limit")));
    assert!(kinds.contains(&("reissued", "ok")));
    assert!(kinds.contains(&("completed", "ok")));
    assert!(
        events
            .iter()
            .any(|e| e.ip == "192.0.2.10" && e.user_agent == "guichet-test")
    );
    f.finish().await;
}

#[tokio::test]
async fn signature_resends_are_throttled_and_a_sixth_code_locks_the_request() {
    let Some(f) = Fx::new(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let mut agent = f.agent().await;
    let req = agent
        .create_signature_request(create_req(
            &[("Amélie Poulain", PHONE)],
            avenant_pdf("limit"),
        ))
        .await
        .unwrap()
        .into_inner();
    let send = pb::SendCodeRequest {
        signature_request_id: req.id.clone(),
        signer_id: String::new(),
    };
    for n in 1..=5u32 {
        let r = agent.resend_code(send.clone()).await.unwrap().into_inner();
        assert_eq!(r.codes_sent, n);
        assert_eq!(r.codes_left, 5 - n);
        let e = agent.resend_code(send.clone()).await.unwrap_err();
        assert_eq!(
            e.code(),
            Code::ResourceExhausted,
            "throttled within the interval"
        );
        f.clock.advance(Duration::seconds(61));
    }
    // Only the latest code is good.
    let last = read_sms_code(&f.env, PHONE, 5).await;
    let first = read_sms_code(&f.env, PHONE, 1).await;
    assert_eq!(sms_count(&f.env, PHONE).await, 5);
    if first != last {
        let r = agent
            .confirm_code(pb::ConfirmCodeRequest {
                signature_request_id: req.id.clone(),
                code: first,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.signed, "a superseded code does not sign");
    }
    let e = agent.resend_code(send).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let got = agent
        .get_signature_request(pb::GetSignatureRequestRequest { id: req.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::RequestStatus::Locked as i32);
    assert_eq!(sms_count(&f.env, PHONE).await, 5, "no sixth SMS");
    f.finish().await;
}

#[tokio::test]
async fn signature_codes_and_requests_expire_on_time() {
    let Some(f) = Fx::new(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let (dossier_id, sha) = dossier_awaiting_signature(&f.env, f.dossier.grpc_addr).await;
    let mut agent = f.agent().await;
    let mut create = create_req(&[("Amélie Poulain", PHONE)], Vec::new());
    create.document_sha256 = sha;
    create.dossier_id = dossier_id.clone();
    create.expire_time = Some(timestamp(f.clock.now_utc() + Duration::days(2)));
    create.send_codes = true;
    let req = agent
        .create_signature_request(create)
        .await
        .unwrap()
        .into_inner();
    let code = read_sms_code(&f.env, PHONE, 1).await;
    let confirm = pb::ConfirmCodeRequest {
        signature_request_id: req.id.clone(),
        code: code.clone(),
        ..Default::default()
    };
    // Ten minutes later the code is dead.
    f.clock.advance(Duration::minutes(10));
    let e = agent.confirm_code(confirm.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("expiré"), "{}", e.message());

    // The request itself expires: the worker marks it, the dossier hears it.
    f.clock.advance(Duration::days(2));
    // (The role's own worker may get there first: either way, once.)
    assert!(f.core.expire_due().await.unwrap() <= 1);
    assert_eq!(f.core.expire_due().await.unwrap(), 0, "once");
    let got = agent
        .get_signature_request(pb::GetSignatureRequestRequest { id: req.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::RequestStatus::Expired as i32);
    assert_eq!(
        got.signers[0].status, "expired",
        "a signer who did not sign in time is not left pending"
    );
    let browser = Browser::new(f.pages);
    let (_, page) = browser.get(&page_path(&req.signers[0])).await;
    assert!(page.contains("Délai de signature dépassé"), "{page}");
    let mut d = dossier_client(
        f.dossier.grpc_addr,
        &f.env.token("agent-1", &[TokenRole::Agent]),
    )
    .await;
    eventually(
        "the dossier link says expired",
        StdDuration::from_secs(20),
        || {
            let mut d = d.clone();
            let id = dossier_id.clone();
            let core = f.core.clone();
            async move {
                let _ = core.run_due_jobs().await;
                let x = d
                    .get_dossier(dpb::GetDossierRequest { id })
                    .await
                    .ok()?
                    .into_inner();
                x.links
                    .iter()
                    .any(|l| l.kind == "signature" && l.status == "expired")
                    .then_some(())
            }
        },
    )
    .await;
    let x = d
        .get_dossier(dpb::GetDossierRequest { id: dossier_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        x.state, "avenant-a-signer",
        "an expired signature does not move the dossier"
    );
    f.finish().await;
}

async fn concurrent_confirmations(backend: Backend) {
    let Some(f) = Fx::new(backend, |_| {}).await else {
        return;
    };
    let mut agent = f.agent().await;
    let mut create = create_req(&[("Amélie Poulain", PHONE)], avenant_pdf("race"));
    create.send_codes = true;
    let req = agent
        .create_signature_request(create)
        .await
        .unwrap()
        .into_inner();
    let code = read_sms_code(&f.env, PHONE, 1).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let core = f.core.clone();
        let id = req.id.clone();
        let code = code.clone();
        tasks.push(tokio::spawn(async move {
            let o = guichet_signature::core::Origin {
                actor: "citizen".into(),
                ip: format!("192.0.2.{i}"),
                user_agent: "race".into(),
            };
            core.confirm(&o, &id, "", &code).await.map(|c| c.signed)
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if let Ok(Ok(true)) = t.await {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one confirmation succeeds");
    let events = f.core.events(&req.id, 0, 1000).await.unwrap().0;
    assert_eq!(events.iter().filter(|e| e.kind == "signed").count(), 1);
    assert_eq!(events.iter().filter(|e| e.kind == "completed").count(), 1);
    f.finish().await;
}

#[tokio::test]
async fn signature_concurrent_confirmations_of_one_code_give_one_success_sqlite() {
    concurrent_confirmations(Backend::Sqlite).await;
}

#[tokio::test]
async fn signature_concurrent_confirmations_of_one_code_give_one_success_postgres() {
    concurrent_confirmations(Backend::Postgres).await;
}

#[tokio::test]
async fn signature_a_signer_declines_on_the_page_with_a_reason() {
    let Some(f) = Fx::new(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let mut agent = f.agent().await;
    let req = agent
        .create_signature_request(create_req(
            &[("Amélie Poulain", PHONE)],
            avenant_pdf("decline"),
        ))
        .await
        .unwrap()
        .into_inner();
    let browser = Browser::new(f.pages);
    let path = page_path(&req.signers[0]);
    let (_, page) = browser.get(&path).await;
    let (status, page) = browser
        .post(
            &format!("{path}/decline"),
            &[
                ("csrf", &csrf(&page)),
                ("reason", "Les horaires ne conviennent pas"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("Signature refusée"), "{page}");
    let got = agent
        .get_signature_request(pb::GetSignatureRequestRequest { id: req.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::RequestStatus::Declined as i32);
    assert_eq!(got.decline_reason, "Les horaires ne conviennent pas");
    assert_eq!(got.signers[0].status, "declined");
    let e = agent
        .send_code(pb::SendCodeRequest {
            signature_request_id: req.id.clone(),
            signer_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let (status, _) = browser.get("/s/not-a-real-token").await;
    assert_eq!(status, 404);

    // The town withdraws another request.
    let other = agent
        .create_signature_request(create_req(
            &[("Amélie Poulain", PHONE)],
            avenant_pdf("cancel"),
        ))
        .await
        .unwrap()
        .into_inner();
    let cancelled = agent
        .cancel_signature_request(pb::CancelSignatureRequestRequest {
            id: other.id.clone(),
            reason: "Avenant remplacé".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, pb::RequestStatus::Cancelled as i32);
    let (_, page) = browser.get(&page_path(&other.signers[0])).await;
    assert!(page.contains("Demande annulée"), "{page}");

    // Listing with a filter, page by page.
    let list = |filter: &str, token: &str| pb::ListSignatureRequestsRequest {
        page_size: 1,
        page_token: token.into(),
        filter: filter.into(),
    };
    let page1 = agent
        .list_signature_requests(list("status = declined", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page1.signature_requests.len(), 1);
    assert_eq!(page1.signature_requests[0].id, req.id);
    assert!(page1.next_page_token.is_empty());
    let all1 = agent
        .list_signature_requests(list("", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all1.signature_requests.len(), 1);
    let all2 = agent
        .list_signature_requests(list("", &all1.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all2.signature_requests.len(), 1);
    assert_ne!(all1.signature_requests[0].id, all2.signature_requests[0].id);
    let e = agent
        .list_signature_requests(list("phone = \"+33612345678\"", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    f.finish().await;
}

#[tokio::test]
async fn signature_every_signer_signs_before_the_document_is_complete() {
    let Some(f) = Fx::new(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let mut agent = f.agent().await;
    let mut create = create_req(
        &[("Amélie Poulain", PHONE), ("Nino Quincampoix", PHONE_2)],
        avenant_pdf("two"),
    );
    create.send_codes = true;
    let req = agent
        .create_signature_request(create)
        .await
        .unwrap()
        .into_inner();
    assert_ne!(req.signers[0].signing_url, req.signers[1].signing_url);
    let browser = Browser::new(f.pages);
    let sign = |i: usize, phone: &'static str| {
        let path = page_path(&req.signers[i]);
        let browser = &browser;
        let env = &f.env;
        async move {
            let code = read_sms_code(env, phone, 1).await;
            let (_, page) = browser.get(&path).await;
            browser
                .post(
                    &format!("{path}/confirm"),
                    &[("csrf", &csrf(&page)), ("consent", "oui"), ("code", &code)],
                )
                .await
                .1
        }
    };
    let page = sign(0, PHONE).await;
    assert!(
        page.contains("lorsque les autres signataires auront signé"),
        "{page}"
    );
    let got = agent
        .get_signature_request(pb::GetSignatureRequestRequest { id: req.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::RequestStatus::Pending as i32);
    assert!(got.signed_document_sha256.is_empty());
    let page = sign(1, PHONE_2).await;
    assert!(page.contains("Tous les signataires ont signé"), "{page}");
    let ev = agent
        .get_evidence(pb::GetEvidenceRequest {
            signature_request_id: req.id.clone(),
            include_signed_document: false,
        })
        .await
        .unwrap()
        .into_inner();
    let v = agent
        .verify(pb::VerifyRequest {
            evidence_json: ev.evidence_json,
            document_sha256: ev.signed_document_sha256,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    let names: Vec<&str> = v.signers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Amélie Poulain", "Nino Quincampoix"]);
    assert!(v.signers.iter().all(|s| s.sign_time.is_some()));
    f.finish().await;
}

#[tokio::test]
async fn signature_bad_input_is_refused_with_field_violations() {
    let Some(f) = Fx::new(Backend::Sqlite, |c| c.signature.max_document_bytes = 4096).await else {
        return;
    };
    let mut agent = f.agent().await;
    let cases = [
        (
            create_req(&[("Amélie Poulain", PHONE)], b"MZ not a pdf".to_vec()),
            "document_content",
        ),
        (
            create_req(&[("Amélie Poulain", PHONE)], b"%PDF-1.7 broken".to_vec()),
            "document_content",
        ),
        (
            create_req(&[("Amélie Poulain", PHONE)], vec![b'%'; 5000]),
            "document_content",
        ),
        (
            create_req(&[("Amélie Poulain", "12")], avenant_pdf("x")),
            "signers[0].phone",
        ),
        (create_req(&[], avenant_pdf("x")), "signers"),
    ];
    for (req, field) in cases {
        let e = agent.create_signature_request(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let details = tonic_types::StatusExt::get_error_details(&e);
        let v = details.bad_request().expect("field violations");
        assert_eq!(v.field_violations[0].field, field, "{}", e.message());
    }
    let mut stored = create_req(&[("Amélie Poulain", PHONE)], Vec::new());
    stored.document_sha256 = "ab".repeat(32);
    let e = agent.create_signature_request(stored).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // What the evidence keeps of the signer's device is checked.
    for (ip, ua, field) in [
        ("pas une adresse", "Firefox", "ip"),
        ("192.0.2.7", "Firefox\r\nX-Forged: 1", "user_agent"),
    ] {
        let e = agent
            .confirm_code(pb::ConfirmCodeRequest {
                signature_request_id: "x".into(),
                signer_id: "y".into(),
                code: "123456".into(),
                ip: ip.into(),
                user_agent: ua.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let details = tonic_types::StatusExt::get_error_details(&e);
        assert_eq!(
            details.bad_request().expect("violations").field_violations[0].field,
            field
        );
    }
    // Nobody anonymous.
    let mut anon = signature_client(f.grpc, "").await;
    let e = anon
        .get_signature_request(pb::GetSignatureRequestRequest { id: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    f.finish().await;
}

/// `ManualClock::now` through the platform trait.
pub trait NowUtc {
    fn now_utc(&self) -> chrono::DateTime<Utc>;
}

impl NowUtc for ManualClock {
    fn now_utc(&self) -> chrono::DateTime<Utc> {
        guichet_platform::clock::Clock::now(self)
    }
}

#[tokio::test]
async fn signature_sms_delivery_reports_land_in_the_evidence() {
    let Some(f) = Fx::new(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let mut agent = f.agent().await;
    let mut create = create_req(&[("Amélie Poulain", PHONE)], avenant_pdf("report"));
    create.send_codes = true;
    let req = agent
        .create_signature_request(create)
        .await
        .unwrap()
        .into_inner();
    let code = read_sms_code(&f.env, PHONE, 1).await;
    let code_row = f.core.events(&req.id, 0, 100).await.unwrap().0;
    assert!(code_row.iter().any(|e| e.kind == "code_sent"));
    // The notification role reports the SMS sent (NotificationStatusChanged
    // on guichet.events.notification.sent): it lands in the trail.
    eventually(
        "the sms report in the trail",
        StdDuration::from_secs(20),
        || {
            let core = f.core.clone();
            let id = req.id.clone();
            async move {
                let ev = core.events(&id, 0, 100).await.ok()?.0;
                ev.iter().any(|e| e.kind == "sms_sent").then_some(())
            }
        },
    )
    .await;
    let r = agent
        .confirm_code(pb::ConfirmCodeRequest {
            signature_request_id: req.id.clone(),
            code,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.signed);
    let ev = agent
        .get_evidence(pb::GetEvidenceRequest {
            signature_request_id: req.id.clone(),
            include_signed_document: false,
        })
        .await
        .unwrap()
        .into_inner();
    let j: serde_json::Value = serde_json::from_slice(&ev.evidence_json).unwrap();
    let sent: Vec<&serde_json::Value> = j["evidence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "sms_sent")
        .collect();
    assert_eq!(sent.len(), 1, "recorded once");
    assert_eq!(sent[0]["outcome"], "ok");
    f.finish().await;
}

#[test]
fn signature_config_errors_name_the_key_and_guichet_up_creates_dev_keys_once() {
    use secrecy::ExposeSecret;
    let dir = tempfile::tempdir().unwrap();
    let env = || {
        vec![
            (
                "GUICHET__DATA_DIR".to_owned(),
                dir.path().display().to_string(),
            ),
            (
                "GUICHET__AUTH__SIGNING_KEY".to_owned(),
                SIGNING_KEY.to_owned(),
            ),
        ]
    };
    let mut cfg = guichet::GuichetConfig::load(None, env()).unwrap();
    let err = cfg.validate(&[Role::Signature]).unwrap_err().to_string();
    assert!(err.contains("signature.code_secret"), "{err}");
    let mut bad = guichet::GuichetConfig::load(
        None,
        [
            env(),
            vec![("GUICHET__SIGNATURE__CODE_TTL_MINUTES".into(), "0".into())],
        ]
        .concat(),
    )
    .unwrap();
    bad.ensure_dev_signature_keys().unwrap();
    let err = bad.validate(&[Role::Signature]).unwrap_err().to_string();
    assert!(err.contains("signature.code_ttl_minutes"), "{err}");

    cfg.ensure_dev_signature_keys().unwrap();
    cfg.validate(&[Role::Signature]).unwrap();
    let mut again = guichet::GuichetConfig::load(None, env()).unwrap();
    again.ensure_dev_signature_keys().unwrap();
    assert_eq!(
        again.signature.seal.private_key.expose_secret(),
        cfg.signature.seal.private_key.expose_secret(),
        "the development sealing key is kept across restarts"
    );
    let mut wrong = guichet::GuichetConfig::load(
        None,
        [
            env(),
            vec![(
                "GUICHET__SIGNATURE__SEAL__PRIVATE_KEY".into(),
                "bm90LWEta2V5".into(),
            )],
        ]
        .concat(),
    )
    .unwrap();
    wrong.ensure_dev_signature_keys().unwrap();
    let err = wrong.validate(&[Role::Signature]).unwrap_err().to_string();
    assert!(err.contains("signature.seal.private_key"), "{err}");
}

#[tokio::test]
async fn signature_guichet_serve_runs_the_role_with_its_pages_and_metrics() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let pages: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let p = env
        .spawn_process(
            &["dossier", "signature", "notification"],
            &[("GUICHET__SIGNATURE__HTTP_ADDR", &pages.to_string())],
        )
        .await;
    let mut agent = signature_client(p.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;
    let mut create = create_req(&[("Amélie Poulain", PHONE)], avenant_pdf("process"));
    create.send_codes = true;
    let req = agent
        .create_signature_request(create)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read_sms_code(&env, PHONE, 1).await.len(), 6);
    let (status, page) = Browser::new(pages).get(&page_path(&req.signers[0])).await;
    assert_eq!(status, 200);
    assert!(page.contains("Signer un document"), "{page}");
    let (status, metrics) = http_get(p.admin_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("guichet_signature_codes_sent_total"),
        "{metrics}"
    );
    assert!(metrics.contains("guichet_signature_requests_total"));
    assert!(p.terminate().await.success());
    env.cleanup().await;
}
