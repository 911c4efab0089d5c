//! One-time codes and the small secrets of the signing pages: 6-digit codes
//! drawn from the operating system's CSPRNG, stored only as HMAC-SHA256
//! under the configured key and compared in constant time; signer link
//! tokens; form tokens; phone masking.

use guichet_platform::secret::constant_time_eq;
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A uniform 6-digit code from the OS CSPRNG (rejection sampling, no bias).
pub fn new_code() -> Result<String, rand::rand_core::OsError> {
    const LIMIT: u32 = u32::MAX - (u32::MAX % 1_000_000);
    loop {
        let n = OsRng.try_next_u32()?;
        if n < LIMIT {
            return Ok(format!("{:06}", n % 1_000_000));
        }
    }
}

/// An unguessable URL-safe token (256 bits from the OS CSPRNG).
pub fn new_token() -> Result<String, rand::rand_core::OsError> {
    use base64::Engine;
    let mut b = [0u8; 32];
    OsRng.try_fill_bytes(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

fn mac(secret: &SecretString, parts: &[&str]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut m = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for p in parts {
        m.update(p.as_bytes());
        m.update(&[0]);
    }
    m
}

/// The stored form of a code: hex HMAC-SHA256 over the code id and code,
/// so equal codes of two requests never share a hash.
pub fn hash_code(secret: &SecretString, code_id: &str, code: &str) -> String {
    hex(&mac(secret, &["code", code_id, code])
        .finalize()
        .into_bytes())
}

/// Constant-time check of a submitted code against its stored hash.
pub fn code_matches(secret: &SecretString, code_id: &str, submitted: &str, stored: &str) -> bool {
    let h = hash_code(secret, code_id, submitted.trim());
    constant_time_eq(h.as_bytes(), stored.as_bytes())
}

/// The form token of a signer's page (CSRF): bound to the signer token.
pub fn form_token(secret: &SecretString, signer_token: &str) -> String {
    hex(&mac(secret, &["form", signer_token]).finalize().into_bytes())
}

pub fn form_token_ok(secret: &SecretString, signer_token: &str, submitted: &str) -> bool {
    constant_time_eq(
        form_token(secret, signer_token).as_bytes(),
        submitted.as_bytes(),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// "+33 6 •• •• •• 78" for a French mobile; other numbers keep their
/// country code and last two digits.
pub fn mask_phone(e164: &str) -> String {
    let digits: String = e164.chars().filter(|c| c.is_ascii_digit()).collect();
    if let Some(national) = digits.strip_prefix("33")
        && national.len() == 9
    {
        return format!("+33 {} •• •• •• {}", &national[..1], &national[7..]);
    }
    if digits.len() >= 4 {
        return format!("+{}…{}", &digits[..2], &digits[digits.len() - 2..]);
    }
    "••".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("0123456789abcdef0123456789abcdef".to_owned())
    }

    #[test]
    fn codes_are_six_digits_and_vary() {
        let codes: std::collections::BTreeSet<String> =
            (0..50).map(|_| new_code().unwrap()).collect();
        assert!(
            codes
                .iter()
                .all(|c| c.len() == 6 && c.chars().all(|d| d.is_ascii_digit()))
        );
        assert!(codes.len() > 40);
    }

    #[test]
    fn a_code_is_stored_as_a_keyed_hash_and_checked() {
        let h = hash_code(&secret(), "c1", "123456");
        assert_eq!(h.len(), 64);
        assert!(!h.contains("123456"));
        assert!(code_matches(&secret(), "c1", "123456", &h));
        assert!(code_matches(&secret(), "c1", " 123456 ", &h));
        assert!(!code_matches(&secret(), "c1", "123457", &h));
        assert!(
            !code_matches(&secret(), "c2", "123456", &h),
            "bound to its code id"
        );
        let other = SecretString::from("another-key-another-key-another-key".to_owned());
        assert!(
            !code_matches(&other, "c1", "123456", &h),
            "bound to the key"
        );
    }

    #[test]
    fn phones_are_masked_but_for_the_last_two_digits() {
        assert_eq!(mask_phone("+33612345678"), "+33 6 •• •• •• 78");
        assert_eq!(mask_phone("+447700900123"), "+44…23");
    }

    #[test]
    fn form_tokens_are_bound_to_the_signer() {
        let t = form_token(&secret(), "tok");
        assert!(form_token_ok(&secret(), "tok", &t));
        assert!(!form_token_ok(&secret(), "other", &t));
        assert_eq!(new_token().unwrap().len(), 43);
    }
}
