//! `Verify`: does a sealed evidence record hold, does a PDF match it, and
//! who signed what when — with findings in French for people.

use chrono::{DateTime, Utc};
use guichet_platform::grpc::{internal_err, invalid_argument};
use guichet_platform::objects::sha256_hex;
use serde_json::Value;
use tonic::Status;

use crate::core::{Core, paris_text};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocMatch {
    None,
    Original,
    Signed,
    Mismatch,
}

#[derive(Debug, Clone)]
pub struct SignedBy {
    pub name: String,
    pub masked_phone: String,
    pub signed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub valid: bool,
    pub seal_valid: bool,
    pub document: DocMatch,
    pub key_id: String,
    pub request_id: String,
    pub title: String,
    pub original_sha256: String,
    pub signed_sha256: String,
    pub signers: Vec<SignedBy>,
    pub findings: Vec<String>,
    /// A time-stamp is present but is not the authority's answer for this
    /// seal (altered or moved from another record).
    pub timestamp_invalid: bool,
}

enum TimeStamp {
    Absent,
    Valid(String),
    Invalid(String),
}

/// The RFC 3161 token next to the seal, if any: is it the authority's
/// answer for this very seal, and when was it issued.
fn check_timestamp(sealed: &[u8]) -> TimeStamp {
    let Ok(parsed) = serde_json::from_slice::<Value>(sealed) else {
        return TimeStamp::Absent;
    };
    let Some(ts) = parsed.get("timestamp") else {
        return TimeStamp::Absent;
    };
    let invalid = |why: &str| {
        TimeStamp::Invalid(format!(
            "L'horodatage joint à la preuve n'est pas valide : {why}."
        ))
    };
    let Some(token) = ts
        .get("token")
        .and_then(Value::as_str)
        .and_then(|t| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, t).ok())
    else {
        return invalid("jeton absent ou illisible");
    };
    let info = match crate::tsa::inspect(&token) {
        Ok(i) => i,
        Err(e) => return invalid(&e),
    };
    let Some(signature) = crate::seal::seal_signature(sealed) else {
        return invalid("scellement illisible");
    };
    let hash = sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        &signature,
    ));
    if info.imprint != hash.as_slice() {
        return invalid("il porte sur une autre empreinte que ce scellement");
    }
    let tsa = ts
        .get("tsa_url")
        .and_then(Value::as_str)
        .unwrap_or_default();
    TimeStamp::Valid(format!(
        "Horodatage RFC 3161 de l'autorité {tsa} : le scellement existait le {} (heure de Paris, jeton n° {}). La signature de l'autorité sur le jeton se vérifie avec son certificat (openssl ts -verify).",
        paris_text(info.gen_time),
        info.serial_hex
    ))
}

fn s(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or_default().to_owned()
}

impl Core {
    #[tracing::instrument(name = "signature.verify", skip_all)]
    pub async fn verify(
        &self,
        document: Option<&[u8]>,
        document_sha256: Option<String>,
        evidence: Option<Vec<u8>>,
    ) -> Result<Verdict, Status> {
        let doc_sha = match (document, document_sha256) {
            (Some(d), _) => Some(sha256_hex(d)),
            (None, Some(h)) => {
                let h = h.trim().to_ascii_lowercase();
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid_argument(
                        "document_sha256",
                        "doit être un SHA-256 hexadécimal",
                    ));
                }
                Some(h)
            }
            (None, None) => None,
        };
        let mut v = Verdict {
            valid: false,
            seal_valid: false,
            document: DocMatch::None,
            key_id: String::new(),
            request_id: String::new(),
            title: String::new(),
            original_sha256: String::new(),
            signed_sha256: String::new(),
            signers: Vec::new(),
            findings: Vec::new(),
            timestamp_invalid: false,
        };
        let evidence = match (evidence, &doc_sha) {
            (Some(e), _) => e,
            (None, Some(h)) => match self.by_document(h).await? {
                Some(r) => {
                    let sha = r.evidence_sha256.unwrap_or_default();
                    v.findings.push(format!(
                        "Ce document correspond à la demande de signature {} ; sa preuve a été retrouvée.",
                        r.id
                    ));
                    self.objects
                        .get(&sha)
                        .await
                        .map_err(internal_err("read evidence"))?
                }
                None => {
                    v.findings.push(
                        "Aucune signature achevée n'est connue pour ce document : il a pu être modifié, ou n'a pas été signé par ce service.".into(),
                    );
                    v.document = DocMatch::Mismatch;
                    return Ok(v);
                }
            },
            (None, None) => {
                return Err(invalid_argument(
                    "evidence_json",
                    "donnez un document, son SHA-256 ou un fichier de preuve",
                ));
            }
        };
        let ev = match self.keys.verify(&evidence) {
            Ok((key_id, ev)) => {
                v.seal_valid = true;
                v.findings.push(format!(
                    "Le scellement de la preuve est valide (clé « {key_id} ») : la preuve n'a pas été modifiée."
                ));
                v.key_id = key_id;
                match check_timestamp(&evidence) {
                    TimeStamp::Absent => {}
                    TimeStamp::Valid(finding) => v.findings.push(finding),
                    TimeStamp::Invalid(finding) => {
                        v.findings.push(finding);
                        v.timestamp_invalid = true;
                    }
                }
                ev
            }
            Err(e) => {
                v.findings.push(e.to_string());
                return Ok(v);
            }
        };
        v.request_id = s(&ev, &["request", "id"]);
        v.title = s(&ev, &["request", "title"]);
        v.original_sha256 = s(&ev, &["document", "original_sha256"]);
        v.signed_sha256 = s(&ev, &["document", "signed_sha256"]);
        if let Some(list) = ev["signers"].as_array() {
            for x in list {
                let at = x["signed_at"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc));
                let who = SignedBy {
                    name: s(x, &["name"]),
                    masked_phone: s(x, &["phone_masked"]),
                    signed_at: at,
                };
                v.findings.push(match at {
                    Some(t) => format!(
                        "{} ({}) a signé « {} » le {} (heure de Paris) par code à usage unique envoyé par SMS.",
                        who.name,
                        who.masked_phone,
                        v.title,
                        paris_text(t)
                    ),
                    None => format!("{} n'a pas signé.", who.name),
                });
                v.signers.push(who);
            }
        }
        v.document = match &doc_sha {
            None => DocMatch::None,
            Some(h) if *h == v.signed_sha256 => DocMatch::Signed,
            Some(h) if *h == v.original_sha256 => DocMatch::Original,
            Some(_) => DocMatch::Mismatch,
        };
        v.findings.push(
            match v.document {
                DocMatch::None => "Aucun document n'a été fourni : seule la preuve a été vérifiée.",
                DocMatch::Signed => "Le document fourni est exactement le PDF signé décrit par la preuve.",
                DocMatch::Original => "Le document fourni est exactement le document original décrit par la preuve (avant ajout de la page de signature).",
                DocMatch::Mismatch => "Le document fourni ne correspond pas à la preuve : il a été modifié ou il s'agit d'un autre document.",
            }
            .to_owned(),
        );
        v.valid = v.seal_valid && !v.timestamp_invalid && v.document != DocMatch::Mismatch;
        Ok(v)
    }
}
