//! The evidence seal: canonical JSON and Ed25519 signatures with key ids.
//!
//! An evidence file is the canonical JSON (sorted keys, no insignificant
//! whitespace) of `{"evidence": {...}, "seal": {"alg", "key_id",
//! "signature"}}`; the signature covers the canonical JSON of `evidence`,
//! which names its key id too, so a record cannot claim another key than
//! the one that sealed it. Verification also requires the file to be in
//! canonical form, so any changed byte is caught. Rotation: the current key
//! seals, previous public keys (by id) still verify.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use guichet_platform::config::ConfigError;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::SealConfig;

pub const ALG: &str = "Ed25519";

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace,
/// strings escaped as serde_json does. Numbers are written as serde_json
/// writes them (the evidence only holds integers).
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The sealing key and every key that may verify.
#[derive(Clone)]
pub struct Keys {
    pub key_id: String,
    signing: SigningKey,
    verifying: BTreeMap<String, VerifyingKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("key_id", &self.key_id)
            .field("verifying", &self.verifying.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn parse_private(s: &str) -> Result<SigningKey, String> {
    let s = s.trim();
    if s.starts_with("-----BEGIN") {
        return SigningKey::from_pkcs8_pem(s)
            .map_err(|e| format!("not a PKCS#8 Ed25519 key ({e})"));
    }
    let bytes = B64.decode(s).map_err(|e| format!("not base64 ({e})"))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the base64 seed must be 32 bytes".to_owned())?;
    Ok(SigningKey::from_bytes(&seed))
}

fn parse_public(s: &str) -> Result<VerifyingKey, String> {
    let s = s.trim();
    if s.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(s)
            .map_err(|e| format!("not an Ed25519 public key ({e})"));
    }
    let bytes = B64.decode(s).map_err(|e| format!("not base64 ({e})"))?;
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the base64 key must be 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&raw).map_err(|e| format!("not an Ed25519 public key ({e})"))
}

fn key_id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

impl Keys {
    pub fn from_config(c: &SealConfig) -> Result<Keys, ConfigError> {
        if !key_id_ok(&c.key_id) {
            return Err(ConfigError::invalid(
                "signature.seal.key_id",
                "must be 1-64 letters, digits or - _ . :",
            ));
        }
        let (raw, key) = if !c.private_key_file.is_empty() {
            let s = std::fs::read_to_string(&c.private_key_file).map_err(|e| {
                ConfigError::invalid(
                    "signature.seal.private_key_file",
                    format!("cannot read {} ({e})", c.private_key_file),
                )
            })?;
            (s, "signature.seal.private_key_file")
        } else {
            (
                c.private_key.expose_secret().to_owned(),
                "signature.seal.private_key",
            )
        };
        if raw.trim().is_empty() {
            return Err(ConfigError::invalid(key, "not set"));
        }
        let signing = parse_private(&raw).map_err(|e| ConfigError::invalid(key, e))?;
        let mut verifying = BTreeMap::new();
        verifying.insert(c.key_id.clone(), signing.verifying_key());
        for (i, p) in c.previous_keys.iter().enumerate() {
            if !key_id_ok(&p.key_id) || verifying.contains_key(&p.key_id) {
                return Err(ConfigError::invalid(
                    format!("signature.seal.previous_keys[{i}].key_id"),
                    "must be a unique key id",
                ));
            }
            let k = parse_public(&p.public_key).map_err(|e| {
                ConfigError::invalid(format!("signature.seal.previous_keys[{i}].public_key"), e)
            })?;
            verifying.insert(p.key_id.clone(), k);
        }
        Ok(Keys {
            key_id: c.key_id.clone(),
            signing,
            verifying,
        })
    }

    /// Base64 of the current public key (to publish for offline checks).
    pub fn public_key_base64(&self) -> String {
        B64.encode(self.signing.verifying_key().as_bytes())
    }

    /// Seal `evidence` (which must carry `key_id` = the current key id):
    /// the canonical bytes of the sealed record.
    pub fn seal(&self, evidence: Value) -> Vec<u8> {
        let signature = self.signing.sign(canonical(&evidence).as_bytes());
        let sealed = serde_json::json!({
            "evidence": evidence,
            "seal": {
                "alg": ALG,
                "key_id": self.key_id,
                "signature": B64.encode(signature.to_bytes()),
            }
        });
        canonical(&sealed).into_bytes()
    }

    /// Check a sealed record; returns the evidence when it holds. A
    /// `timestamp` next to the seal (RFC 3161 token over the seal) is
    /// checked by `Verify`, not here.
    pub fn verify(&self, bytes: &[u8]) -> Result<(String, Value), VerifyError> {
        let parsed: Value = serde_json::from_slice(bytes).map_err(|_| VerifyError::NotJson)?;
        if canonical(&parsed).as_bytes() != bytes {
            return Err(VerifyError::NotCanonical);
        }
        let evidence = parsed.get("evidence").ok_or(VerifyError::Malformed)?;
        let seal = parsed.get("seal").ok_or(VerifyError::Malformed)?;
        let alg = seal.get("alg").and_then(Value::as_str).unwrap_or_default();
        if alg != ALG {
            return Err(VerifyError::Malformed);
        }
        let key_id = seal
            .get("key_id")
            .and_then(Value::as_str)
            .ok_or(VerifyError::Malformed)?
            .to_owned();
        let claimed = evidence
            .get("key_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if claimed != key_id {
            return Err(VerifyError::KeyMismatch(key_id));
        }
        let key = self
            .verifying
            .get(&key_id)
            .ok_or_else(|| VerifyError::UnknownKey(key_id.clone()))?;
        let sig = seal
            .get("signature")
            .and_then(Value::as_str)
            .and_then(|s| B64.decode(s).ok())
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or(VerifyError::Malformed)?;
        key.verify_strict(canonical(evidence).as_bytes(), &sig)
            .map_err(|_| VerifyError::BadSignature(key_id.clone()))?;
        Ok((key_id, evidence.clone()))
    }
}

/// The seal's signature value of a sealed record (what a time-stamp
/// covers), or `None` when the record is not a sealed record.
pub fn seal_signature(sealed: &[u8]) -> Option<Vec<u8>> {
    let parsed: Value = serde_json::from_slice(sealed).ok()?;
    let sig = parsed.get("seal")?.get("signature")?.as_str()?;
    B64.decode(sig).ok()
}

/// `sealed` with `timestamp` set next to the evidence and the seal, still
/// canonical.
pub fn with_timestamp(sealed: &[u8], timestamp: Value) -> Option<Vec<u8>> {
    let mut parsed: Value = serde_json::from_slice(sealed).ok()?;
    parsed
        .as_object_mut()?
        .insert("timestamp".into(), timestamp);
    Some(canonical(&parsed).into_bytes())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("Le fichier de preuve n'est pas du JSON valide.")]
    NotJson,
    #[error("Le fichier de preuve a été modifié : il n'est plus sous sa forme canonique.")]
    NotCanonical,
    #[error("Le fichier de preuve est incomplet (preuve ou scellement manquant).")]
    Malformed,
    #[error("La preuve annonce une autre clé ({0}) que celle de son scellement.")]
    KeyMismatch(String),
    #[error("La clé de scellement « {0} » est inconnue de ce service.")]
    UnknownKey(String),
    #[error(
        "Le scellement est invalide : la preuve a été modifiée ou n'a pas été scellée par la clé « {0} »."
    )]
    BadSignature(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PublicKeyConfig;
    use secrecy::SecretString;

    fn cfg(id: &str, seed: [u8; 32], previous: Vec<PublicKeyConfig>) -> SealConfig {
        SealConfig {
            key_id: id.into(),
            private_key: SecretString::from(B64.encode(seed)),
            private_key_file: String::new(),
            previous_keys: previous,
        }
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, {"z": "é", "a": null}], "a": "x\"y" }"#).unwrap();
        assert_eq!(canonical(&v), r#"{"a":"x\"y","b":[1,{"a":null,"z":"é"}]}"#);
    }

    #[test]
    fn a_sealed_record_verifies_and_any_changed_byte_fails() {
        let keys = Keys::from_config(&cfg("k1", [7; 32], vec![])).unwrap();
        let sealed = keys.seal(serde_json::json!({"key_id": "k1", "doc": "abc"}));
        let (id, ev) = keys.verify(&sealed).unwrap();
        assert_eq!(id, "k1");
        assert_eq!(ev["doc"], "abc");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(keys.verify(&bad).is_err(), "byte {i} changed yet verified");
        }
    }

    #[test]
    fn old_keys_verify_after_rotation_and_a_false_key_claim_fails() {
        let a = Keys::from_config(&cfg("a", [1; 32], vec![])).unwrap();
        let old = a.seal(serde_json::json!({"key_id": "a"}));
        let b = Keys::from_config(&cfg(
            "b",
            [2; 32],
            vec![PublicKeyConfig {
                key_id: "a".into(),
                public_key: a.public_key_base64(),
            }],
        ))
        .unwrap();
        assert!(b.verify(&old).is_ok());
        // Sealed by A while claiming B.
        let forged = {
            let mut v: Value =
                serde_json::from_slice(&a.seal(serde_json::json!({"key_id": "b"}))).unwrap();
            v["seal"]["key_id"] = "b".into();
            canonical(&v).into_bytes()
        };
        assert_eq!(
            b.verify(&forged),
            Err(VerifyError::BadSignature("b".into()))
        );
    }
}
