//! What routing needs from a letter's text: dossier references, the sender
//! (name, postal address, phones, emails), the letter's date and its
//! subject line.
//!
//! French letters follow one layout (NF Z 11-001 and habit): the sender's
//! block at the top left, the recipient's at the right, then "Lyon, le 3
//! novembre 2026", "Objet : …", the salutation and the body. The sender block
//! is therefore the first run of left-aligned lines of the first page, up to
//! a blank gap, the subject, the date or the salutation; the recipient block
//! (the town hall's own address and numbers) is kept out of the contact
//! points. OCR slips that matter are tolerated (`O` for `0` in references).

use std::sync::LazyLock;

use chrono::NaiveDate;
use regex::Regex;

use crate::ocr::{Line, Page};

/// Lines left of this fraction of the page width belong to the left column.
const LEFT_COLUMN: f32 = 0.40;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extraction {
    /// Every dossier reference, in order of appearance, deduplicated.
    pub references: Vec<String>,
    pub given_name: String,
    pub family_name: String,
    /// The sender block as read.
    pub sender_lines: Vec<String>,
    /// Street lines of the sender's address.
    pub address_lines: Vec<String>,
    pub postal_code: String,
    pub city: String,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    pub date: Option<NaiveDate>,
    pub subject: String,
}

impl Extraction {
    /// The reference to correlate on: the first with `prefix`, else the first.
    pub fn quoted_reference(&self, prefix: &str) -> String {
        self.references
            .iter()
            .find(|r| r.split('-').next() == Some(prefix))
            .or(self.references.first())
            .cloned()
            .unwrap_or_default()
    }
}

static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b([A-Z0-9]{1,8}) ?[-–—] ?([0-9OoIl]{4}) ?[-–—] ?([0-9OoIl]{6})\b").expect("regex")
});
use guichet_platform::contact::PHONE_IN_TEXT as PHONE;
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
        .expect("regex")
});
static POSTAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:F ?- ?)?(\d{2}) ?(\d{3}) +(\p{L}[\p{L}'’ \-]*?)(?: +CEDEX\b.*)?$")
        .expect("regex")
});
static SUBJECT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*objet\s*[:;.]?\s*(.+)$").expect("regex"));
/// "Madame, Monsieur," "Monsieur le Maire,": a salutation ends with a comma
/// (a sender line "Monsieur Gérard Dubœuf" does not).
static SALUTATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(madame|monsieur|mesdames|messieurs|mademoiselle|cher|ch[èe]re)\b.*,\s*$")
        .expect("regex")
});
/// Lines that open the letter's heading, below the sender block.
static HEADING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(objet|r[ée]f[ée]rence|r[ée]f\b|n/r[ée]f|v/r[ée]f)").expect("regex")
});
static DATE_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)(^|,\s*)le\s+(1er|\d{1,2})\b").expect("regex"));

/// Read everything from a letter's pages.
pub fn extract(pages: &[Page]) -> Extraction {
    let mut x = Extraction::default();
    let all_lines: Vec<&Line> = pages.iter().flat_map(|p| p.lines.iter()).collect();
    for line in &all_lines {
        for c in REFERENCE.captures_iter(&line.text) {
            let digits = |s: &str| -> String {
                s.chars()
                    .map(|c| match c {
                        'O' | 'o' => '0',
                        'I' | 'l' => '1',
                        c => c,
                    })
                    .collect()
            };
            let r = format!("{}-{}-{}", &c[1], digits(&c[2]), digits(&c[3]));
            if !x.references.contains(&r) {
                x.references.push(r);
            }
        }
    }
    let Some(first) = pages.first() else {
        return x;
    };
    let head_end = first
        .lines
        .iter()
        .position(|l| SUBJECT.is_match(&l.text))
        .unwrap_or(first.lines.len().min(20));
    if let Some(l) = first.lines.get(head_end)
        && let Some(c) = SUBJECT.captures(&l.text)
    {
        x.subject = c[1].trim().to_owned();
    }
    x.date = first
        .lines
        .iter()
        .filter(|l| DATE_LINE.is_match(&l.text))
        .chain(first.lines.iter())
        .find_map(|l| parse_date(&l.text));

    // The sender block: the first run of left-column lines above the subject.
    let head = &first.lines[..head_end];
    let mut block: Vec<&Line> = Vec::new();
    for line in head.iter().filter(|l| l.indent < LEFT_COLUMN) {
        if SALUTATION.is_match(&line.text)
            || HEADING.is_match(&line.text)
            || DATE_LINE.is_match(&line.text) && parse_date(&line.text).is_some()
        {
            break;
        }
        if let Some(prev) = block.last()
            && line.top - prev.top > prev.height.max(line.height) * 2.8
        {
            break;
        }
        block.push(line);
    }
    let recipient: Vec<&Line> = head.iter().filter(|l| l.indent >= LEFT_COLUMN).collect();

    let mut name_done = false;
    let mut postal_done = false;
    for line in &block {
        let text = line.text.trim();
        x.sender_lines.push(text.to_owned());
        let has_contact = PHONE.is_match(text) || EMAIL.is_match(text);
        if !postal_done && let Some(c) = POSTAL.captures(text) {
            x.postal_code = format!("{}{}", &c[1], &c[2]);
            x.city = c[3].trim().to_owned();
            postal_done = true;
            name_done = true;
        } else if has_contact {
            // Contact points are collected below.
        } else if !name_done {
            let (given, family) = split_name(text);
            x.given_name = given;
            x.family_name = family;
            name_done = true;
        } else if !postal_done {
            x.address_lines.push(text.to_owned());
        }
    }

    // Contact points anywhere but in the recipient block.
    for line in &all_lines {
        if recipient.iter().any(|r| std::ptr::eq(*r, *line)) {
            continue;
        }
        for m in EMAIL.find_iter(&line.text) {
            let e = m.as_str().trim_end_matches('.').to_lowercase();
            if !x.emails.contains(&e) {
                x.emails.push(e);
            }
        }
        for m in PHONE.find_iter(&line.text) {
            let p = m.as_str().to_owned();
            if !x.phones.contains(&p) {
                x.phones.push(p);
            }
        }
    }
    x
}

/// "Mme Hélène LEFÈVRE-MARTIN" → ("Hélène", "LEFÈVRE-MARTIN"): upper-case
/// words are the family name; otherwise the last word is.
pub fn split_name(raw: &str) -> (String, String) {
    let name = guichet_platform::names::split_name(raw);
    (name.given, name.family)
}

/// The letter's date, by the platform's French date rules.
fn parse_date(text: &str) -> Option<NaiveDate> {
    guichet_platform::french::find_date(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocr::TextSource;

    fn page(lines: &[(f32, &str)]) -> Page {
        Page {
            lines: lines
                .iter()
                .enumerate()
                .filter(|(_, (_, t))| !t.is_empty())
                .map(|(i, (indent, text))| Line {
                    text: (*text).into(),
                    indent: *indent,
                    top: i as f32 * 77.0,
                    height: 40.0,
                })
                .collect(),
            confidence: 0.9,
            source: TextSource::Ocr,
        }
    }

    fn letter() -> Page {
        page(&[
            (0.1, "Mme Hélène LEFÈVRE"),
            (0.1, "12 rue des Écoles"),
            (0.1, "Bâtiment B"),
            (0.1, "69003 Lyon"),
            (0.1, "Tél. : 06 12 34 56 78"),
            (0.1, "helene.lefevre@example.fr"),
            (0.0, ""),
            (0.55, "Mairie de Villeurbanne"),
            (0.55, "Place Lazare-Goujon"),
            (0.55, "69100 Villeurbanne"),
            (0.55, "Tél. : 04 72 65 80 00"),
            (0.0, ""),
            (0.55, "Lyon, le 3 novembre 2026"),
            (0.0, ""),
            (0.1, "Objet : demande de copie d'acte de naissance"),
            (0.1, "Référence : VIN-2O26-000123"),
            (0.1, "Madame, Monsieur,"),
            (
                0.1,
                "Suite à mon courrier (dossier ABC-2025-000042), je vous écris.",
            ),
        ])
    }

    #[test]
    fn scan_extraction_reads_a_french_letter_field_by_field() {
        let x = extract(&[letter()]);
        assert_eq!(x.references, ["VIN-2026-000123", "ABC-2025-000042"]);
        assert_eq!(x.quoted_reference("VIN"), "VIN-2026-000123");
        assert_eq!(x.quoted_reference("ABC"), "ABC-2025-000042");
        assert_eq!(x.given_name, "Hélène");
        assert_eq!(x.family_name, "LEFÈVRE");
        assert_eq!(x.address_lines, ["12 rue des Écoles", "Bâtiment B"]);
        assert_eq!(x.postal_code, "69003");
        assert_eq!(x.city, "Lyon");
        assert_eq!(x.phones, ["06 12 34 56 78"], "not the town hall's number");
        assert_eq!(x.emails, ["helene.lefevre@example.fr"]);
        assert_eq!(x.date, NaiveDate::from_ymd_opt(2026, 11, 3));
        assert_eq!(x.subject, "demande de copie d'acte de naissance");
    }

    #[test]
    fn scan_a_sender_titled_monsieur_is_not_a_salutation() {
        let x = extract(&[page(&[
            (0.1, "Monsieur Gérard Dubœuf"),
            (0.1, "27 boulevard de la Libération"),
            (0.1, "13001 Marseille CEDEX 01"),
            (0.0, ""),
            (0.1, "Monsieur le Maire,"),
        ])]);
        assert_eq!(
            (x.given_name.as_str(), x.family_name.as_str()),
            ("Gérard", "Dubœuf")
        );
        assert_eq!(
            (x.postal_code.as_str(), x.city.as_str()),
            ("13001", "Marseille")
        );
        assert_eq!(x.sender_lines.len(), 3);
    }

    #[test]
    fn scan_names_split_on_upper_case_or_last_word() {
        assert_eq!(
            split_name("M. Jean-Pierre DUPONT"),
            ("Jean-Pierre".into(), "DUPONT".into())
        );
        assert_eq!(
            split_name("Madame Marie Curie"),
            ("Marie".into(), "Curie".into())
        );
        assert_eq!(
            split_name("DE LA TOUR Anne"),
            ("Anne".into(), "DE LA TOUR".into())
        );
    }

    #[test]
    fn scan_dates_in_words_and_numbers() {
        assert_eq!(
            parse_date("Fait à Vincennes, le 1er août 2026"),
            NaiveDate::from_ymd_opt(2026, 8, 1)
        );
        assert_eq!(
            parse_date("Paris, le 05/02/2026"),
            NaiveDate::from_ymd_opt(2026, 2, 5)
        );
        assert_eq!(parse_date("sans date"), None);
    }
}
