//! The evidence record: Verify holds for the untouched PDF and evidence,
//! fails after one changed byte of either, and keeps old evidence
//! verifiable across a key rotation.

use guichet_proto::signature::v1 as pb;
use guichet_signature::config::{PublicKeyConfig, SealConfig};
use guichet_signature::seal::{Keys, canonical};
use guichet_testkit::*;
use secrecy::SecretString;

use crate::signature_flow::{Fx, PHONE, avenant_pdf, create_req, read_sms_code, start_signature};

type Client = pb::signature_service_client::SignatureServiceClient<Authed>;

/// Create, send, confirm: the signed request's evidence (with the PDF).
async fn signed(agent: &mut Client, env: &TestEnv, pdf: Vec<u8>, nth_sms: usize) -> pb::Evidence {
    let mut create = create_req(&[("Amélie Poulain", PHONE)], pdf);
    create.send_codes = true;
    let req = agent
        .create_signature_request(create)
        .await
        .unwrap()
        .into_inner();
    let code = read_sms_code(env, PHONE, nth_sms).await;
    let r = agent
        .confirm_code(pb::ConfirmCodeRequest {
            signature_request_id: req.id.clone(),
            code,
            ip: "198.51.100.4".into(),
            user_agent: "guichiet-agent-desk".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.signed);
    agent
        .get_evidence(pb::GetEvidenceRequest {
            signature_request_id: req.id,
            include_signed_document: true,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn verify(agent: &mut Client, document: &[u8], evidence: &[u8]) -> pb::VerifyResponse {
    agent
        .verify(pb::VerifyRequest {
            document: document.to_vec(),
            evidence_json: evidence.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn signature_evidence_verifies_and_fails_after_one_changed_byte() {
    let Some(f) = Fx::new(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let mut agent = f.agent().await;
    let original = avenant_pdf("tamper");
    let ev = signed(&mut agent, &f.env, original.clone(), 1).await;
    let (pdf, evidence) = (ev.signed_document.clone(), ev.evidence_json.clone());

    let v = verify(&mut agent, &pdf, &evidence).await;
    assert!(v.valid && v.seal_valid, "{:?}", v.findings);
    assert_eq!(v.document_match, pb::DocumentMatch::Signed as i32);
    assert_eq!(v.key_id, SEAL_KEY_A.0);
    let v = verify(&mut agent, &original, &evidence).await;
    assert!(v.valid);
    assert_eq!(v.document_match, pb::DocumentMatch::Original as i32);
    // The PDF alone, or its hash alone, finds its evidence.
    for req in [
        pb::VerifyRequest {
            document: pdf.clone(),
            ..Default::default()
        },
        pb::VerifyRequest {
            document_sha256: ev.signed_document_sha256.clone(),
            ..Default::default()
        },
    ] {
        let v = agent.verify(req).await.unwrap().into_inner();
        assert!(v.valid, "{:?}", v.findings);
        assert_eq!(v.signers[0].name, "Amélie Poulain");
    }

    // One byte of the PDF changed.
    let mut bad_pdf = pdf.clone();
    let mid = bad_pdf.len() / 2;
    bad_pdf[mid] ^= 0x20;
    let v = verify(&mut agent, &bad_pdf, &evidence).await;
    assert!(!v.valid);
    assert!(v.seal_valid);
    assert_eq!(v.document_match, pb::DocumentMatch::Mismatch as i32);
    assert!(
        v.findings.iter().any(|x| x.contains("ne correspond pas")),
        "{:?}",
        v.findings
    );
    let v = agent
        .verify(pb::VerifyRequest {
            document: bad_pdf,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!v.valid);

    // One byte of the evidence changed, wherever it is.
    let step = (evidence.len() / 40).max(1);
    for i in (0..evidence.len()).step_by(step) {
        let mut bad = evidence.clone();
        bad[i] = if bad[i] == b'7' { b'8' } else { b'7' };
        let v = verify(&mut agent, &pdf, &bad).await;
        assert!(!v.valid && !v.seal_valid, "byte {i} changed, still valid");
        assert!(!v.findings.is_empty());
    }
    // A tampered name, re-serialised canonically: the seal fails.
    let mut j: serde_json::Value = serde_json::from_slice(&evidence).unwrap();
    j["evidence"]["signers"][0]["name"] = "Amélie Poulin".into();
    let v = verify(&mut agent, &pdf, canonical(&j).as_bytes()).await;
    assert!(!v.seal_valid);
    assert!(
        v.findings
            .iter()
            .any(|x| x.contains("scellement est invalide")),
        "{:?}",
        v.findings
    );
    f.finish().await;
}

fn seal_config(key: (&str, &str), previous: Vec<PublicKeyConfig>) -> SealConfig {
    SealConfig {
        key_id: key.0.into(),
        private_key: SecretString::from(key.1.to_owned()),
        private_key_file: String::new(),
        previous_keys: previous,
    }
}

#[tokio::test]
async fn signature_old_evidence_verifies_after_key_rotation_and_a_false_key_claim_fails() {
    let Some(f) = Fx::new(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let mut on_a = f.agent().await;
    let old = signed(&mut on_a, &f.env, avenant_pdf("rotation-a"), 1).await;
    assert_eq!(old.key_id, SEAL_KEY_A.0);

    // Rotate: B seals, A's public key is kept.
    let public_a = Keys::from_config(&seal_config(SEAL_KEY_A, vec![]))
        .unwrap()
        .public_key_base64();
    let mut cfg = f.env.config();
    cfg.signature.dossier_url = format!("http://{}", f.dossier.grpc_addr);
    cfg.signature.seal = seal_config(
        SEAL_KEY_B,
        vec![PublicKeyConfig {
            key_id: SEAL_KEY_A.0.into(),
            public_key: public_a,
        }],
    );
    let (_core_b, grpc_b, _, stop_b) = start_signature(&f.env, &cfg, f.clock.clone()).await;
    let mut on_b = signature_client(grpc_b, &f.env.token("agent-1", &[TokenRole::Agent])).await;
    let v = verify(&mut on_b, &old.signed_document, &old.evidence_json).await;
    assert!(v.valid, "old evidence still verifies: {:?}", v.findings);
    assert_eq!(v.key_id, SEAL_KEY_A.0);

    let new = signed(&mut on_b, &f.env, avenant_pdf("rotation-b"), 2).await;
    assert_eq!(new.key_id, SEAL_KEY_B.0);
    assert!(
        verify(&mut on_b, &new.signed_document, &new.evidence_json)
            .await
            .valid
    );

    // Evidence sealed by A that claims B.
    let mut forged: serde_json::Value = serde_json::from_slice(&old.evidence_json).unwrap();
    forged["evidence"]["key_id"] = SEAL_KEY_B.0.into();
    forged["seal"]["key_id"] = SEAL_KEY_B.0.into();
    let v = verify(
        &mut on_b,
        &old.signed_document,
        canonical(&forged).as_bytes(),
    )
    .await;
    assert!(!v.valid && !v.seal_valid, "{:?}", v.findings);
    // The seal names B, the evidence still names A.
    let mut half: serde_json::Value = serde_json::from_slice(&old.evidence_json).unwrap();
    half["seal"]["key_id"] = SEAL_KEY_B.0.into();
    let v = verify(&mut on_b, &old.signed_document, canonical(&half).as_bytes()).await;
    assert!(!v.seal_valid);
    assert!(
        v.findings.iter().any(|x| x.contains("autre clé")),
        "{:?}",
        v.findings
    );
    stop_b.cancel();

    // A service that dropped A cannot vouch for A's evidence.
    let mut cfg = f.env.config();
    cfg.signature.seal = seal_config(SEAL_KEY_B, vec![]);
    let (_c, grpc_c, _, stop_c) = start_signature(&f.env, &cfg, f.clock.clone()).await;
    let mut on_c = signature_client(grpc_c, &f.env.token("agent-1", &[TokenRole::Agent])).await;
    let v = verify(&mut on_c, &old.signed_document, &old.evidence_json).await;
    assert!(!v.seal_valid);
    assert!(
        v.findings.iter().any(|x| x.contains("inconnue")),
        "{:?}",
        v.findings
    );
    stop_c.cancel();
    f.finish().await;
}

/// A real RFC 3161 authority (OpenSSL's `ts -reply` behind a small HTTP
/// server, with its own test CA), on a free loopback port.
struct Tsa {
    url: String,
    dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

async fn start_tsa() -> Tsa {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tsa/tsa.py");
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let child = tokio::process::Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .arg(dir.path().join("tsa"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (scripts/ensure-services.sh test) for the test TSA");
    eventually(
        "the test TSA to listen",
        std::time::Duration::from_secs(30),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    Tsa {
        url: format!("http://127.0.0.1:{port}/"),
        dir,
        _child: child,
    }
}

fn b64(s: &str) -> Vec<u8> {
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s).unwrap()
}

#[tokio::test]
async fn signature_evidence_is_time_stamped_by_a_real_rfc_3161_authority() {
    let tsa = start_tsa().await;
    let url = tsa.url.clone();
    let Some(f) = Fx::new(Backend::Sqlite, move |cfg| cfg.signature.tsa_url = url).await else {
        return;
    };
    let mut agent = f.agent().await;
    let ev = signed(&mut agent, &f.env, avenant_pdf("horodatage"), 1).await;
    let record: serde_json::Value = serde_json::from_slice(&ev.evidence_json).unwrap();
    let ts = &record["timestamp"];
    assert_eq!(ts["standard"], "RFC 3161", "{record}");
    assert_eq!(ts["covers"], "seal.signature");

    // The token is the authority's answer for this seal: OpenSSL checks it
    // against the authority's CA, independently of guichet.
    let work = tsa.dir.path();
    std::fs::write(
        work.join("seal.bin"),
        b64(record["seal"]["signature"].as_str().unwrap()),
    )
    .unwrap();
    std::fs::write(work.join("token.der"), b64(ts["token"].as_str().unwrap())).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["ts", "-verify", "-token_in"])
        .arg("-data")
        .arg(work.join("seal.bin"))
        .arg("-in")
        .arg(work.join("token.der"))
        .arg("-CAfile")
        .arg(work.join("tsa/ca.crt"))
        .output()
        .expect("openssl");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("Verification: OK"),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Verify reports the time-stamp.
    let v = verify(&mut agent, &ev.signed_document, &ev.evidence_json).await;
    assert!(v.valid, "{:?}", v.findings);
    assert!(
        v.findings.iter().any(|x| x.contains("Horodatage RFC 3161")),
        "{:?}",
        v.findings
    );

    // A token taken from another record does not vouch for this seal.
    let other = signed(&mut agent, &f.env, avenant_pdf("autre"), 2).await;
    let other: serde_json::Value = serde_json::from_slice(&other.evidence_json).unwrap();
    let mut swapped = record.clone();
    swapped["timestamp"] = other["timestamp"].clone();
    let v = verify(
        &mut agent,
        &ev.signed_document,
        canonical(&swapped).as_bytes(),
    )
    .await;
    assert!(v.seal_valid && !v.valid, "{:?}", v.findings);
    assert!(
        v.findings.iter().any(|x| x.contains("autre empreinte")),
        "{:?}",
        v.findings
    );

    // The authority away: the signature still completes, sealed, without
    // a token.
    drop(tsa);
    let ev = signed(&mut agent, &f.env, avenant_pdf("sans horodatage"), 3).await;
    let record: serde_json::Value = serde_json::from_slice(&ev.evidence_json).unwrap();
    assert!(record.get("timestamp").is_none(), "{record}");
    let v = verify(&mut agent, &ev.signed_document, &ev.evidence_json).await;
    assert!(v.valid, "{:?}", v.findings);
    f.finish().await;
}
