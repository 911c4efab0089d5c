//! The dossier reference citizens quote (`VIN-2026-000123`): one type, one
//! set of rules to parse it, and one to find it in what people write.
//!
//! Every channel looks for references the same way: in typed text (email
//! subjects and bodies, routing's correlation) a reference is
//! `<PREFIX>-<year>-<6 digits>` in any case; in OCR text the same shape may
//! come with the mistakes Tesseract makes on printed letters (`O` for `0`,
//! `l`/`I` for `1`, a space around the dash, an en dash). Both finders give
//! the same answer for the same reference: upper-cased, in order of
//! appearance, without repeats, those with the town's prefix first.

use std::sync::LazyLock;

use regex::Regex;

/// A dossier's human reference: `<PREFIX>-<year>-<6+ digits>`, upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference(String);

impl Reference {
    pub fn new(prefix: &str, year: i32, seq: i64) -> Reference {
        Reference(format!("{}-{year}-{seq:06}", prefix.to_ascii_uppercase()))
    }

    /// Parse a reference as a citizen may quote it (any case, surrounding
    /// spaces); nothing else around it.
    pub fn parse(raw: &str) -> Option<Reference> {
        let s = raw.trim().to_ascii_uppercase();
        let mut parts = s.split('-');
        let prefix = parts.next()?;
        let year = parts.next()?;
        let seq = parts.next()?;
        if parts.next().is_some()
            || prefix.is_empty()
            || prefix.len() > 8
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric())
            || year.len() != 4
            || !year.chars().all(|c| c.is_ascii_digit())
            || seq.len() < 6
            || !seq.chars().all(|c| c.is_ascii_digit())
        {
            return None;
        }
        Some(Reference(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the year (`VIN`).
    pub fn prefix(&self) -> &str {
        self.0.split('-').next().unwrap_or_default()
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[allow(clippy::expect_used)]
static TYPED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b([A-Z0-9]{1,8})-(\d{4})-(\d{6})\b").expect("regex"));

/// OCR: digits misread as letters, spaces around dashes, en and em dashes.
#[allow(clippy::expect_used)]
static OCR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b([A-Z0-9]{1,8}) ?[-–—] ?([0-9OIl]{4}) ?[-–—] ?([0-9OIl]{6})\b")
        .expect("regex")
});

/// References quoted in typed text (`text` may hold several).
pub fn find_in_text(text: &str, prefix: &str) -> Vec<Reference> {
    collect(&TYPED, text, prefix)
}

/// `text` without the references it quotes other than `keep` (compared
/// case-insensitively): a reference a citizen quoted that does not exist is
/// never repeated back to them as theirs, e.g. in an acknowledgement's
/// subject.
pub fn without_other_references(text: &str, keep: &str) -> String {
    let out = TYPED.replace_all(text, |c: &regex::Captures<'_>| {
        if c[0].eq_ignore_ascii_case(keep) {
            c[0].to_owned()
        } else {
            String::new()
        }
    });
    out.replace("[]", "")
        .replace("()", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// References read by OCR in `text`, misread digits repaired.
pub fn find_in_ocr(text: &str, prefix: &str) -> Vec<Reference> {
    collect(&OCR, text, prefix)
}

fn collect(re: &Regex, text: &str, prefix: &str) -> Vec<Reference> {
    let digits = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                'O' | 'o' => '0',
                'I' | 'l' => '1',
                c => c,
            })
            .collect()
    };
    let mut out: Vec<Reference> = Vec::new();
    for c in re.captures_iter(text) {
        let raw = format!(
            "{}-{}-{}",
            c[1].to_ascii_uppercase(),
            digits(&c[2]),
            digits(&c[3])
        );
        if let Some(r) = Reference::parse(&raw)
            && !out.contains(&r)
        {
            out.push(r);
        }
    }
    let prefix = prefix.to_ascii_uppercase();
    // Stable: the town's own references first, each group in text order.
    out.sort_by_key(|r| r.prefix() != prefix);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_references_are_left_out_of_a_text() {
        assert_eq!(
            without_other_references(
                "Re: dossier vin-2026-009999 [VIN-2026-000123]",
                "VIN-2026-000123"
            ),
            "Re: dossier [VIN-2026-000123]"
        );
        assert_eq!(
            without_other_references("Pièces (VIN-2026-009999) manquantes", ""),
            "Pièces manquantes"
        );
    }

    #[test]
    fn references_format_and_parse() {
        let r = Reference::new("VIN", 2026, 123);
        assert_eq!(r.as_str(), "VIN-2026-000123");
        assert_eq!(Reference::parse("vin-2026-000123"), Some(r.clone()));
        assert_eq!(Reference::parse("  VIN-2026-000123 "), Some(r));
        assert!(Reference::parse("VIN-26-000123").is_none());
        assert!(Reference::parse("VIN-2026-00012").is_none());
        assert!(Reference::parse("TOOLONGPFX-2026-000123").is_none());
        assert!(Reference::parse("not a ref").is_none());
    }

    #[test]
    fn references_in_email_text_and_in_ocr_text_follow_the_same_rules() {
        let email =
            "Re: [vin-2026-000123] ma demande\nVoir aussi ABC-2025-000007 et VIN-2026-000123.";
        let ocr = "Objet : dossier ABC - 2025 - 00OOO7\nRéférence : VIN–2026–OOO123, rappel VIN-2026-000123";
        let want = vec![
            Reference::parse("VIN-2026-000123").unwrap(),
            Reference::parse("ABC-2025-000007").unwrap(),
        ];
        assert_eq!(find_in_text(email, "VIN"), want);
        assert_eq!(find_in_ocr(ocr, "vin"), want);
        // Typed text is not repaired: a letter O there is not a digit.
        assert!(find_in_text("VIN-2026-OOO123", "VIN").is_empty());
        // Words that merely contain digits are not references.
        assert!(find_in_text("tel 01-2345-678901x", "VIN").is_empty());
    }
}
