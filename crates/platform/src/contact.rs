//! Contact points and names as channels give them, parsed and normalised
//! once at the API edge (phone numbers to E.164, emails lower-cased, names
//! cleaned), so every role compares the same forms.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// A phone number in E.164 (`+33612345678`). French national formats
/// (`06 12 34 56 78`, `01.43.98.65.00`) are read as French numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Phone, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("is empty".into());
        }
        let number = phonenumber::parse(Some(phonenumber::country::Id::FR), trimmed)
            .map_err(|e| format!("is not a phone number ({e})"))?;
        if !phonenumber::is_valid(&number) {
            return Err("is not a valid phone number".into());
        }
        Ok(Phone(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, trimmed and lower-cased (addresses are matched
/// case-insensitively in practice, whatever RFC 5321 allows).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, String> {
        let s = raw.trim().to_lowercase();
        let (local, domain) = s.split_once('@').ok_or("has no @")?;
        if local.is_empty()
            || domain.is_empty()
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err("is not an email address".into());
        }
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c == '<' || c == '>') {
            return Err("is not an email address".into());
        }
        Ok(Email(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A person's name part: trimmed, inner whitespace collapsed, bounded.
/// French phone numbers as people write them in a text (`06 12 34 56 78`,
/// `+33 (0)6.12.34.56.78`, `0033612345678`).
#[allow(clippy::expect_used)]
pub static PHONE_IN_TEXT: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?:(?:\+|00)33 ?(?:\(0\) ?)?|\b0)[1-9](?:[ .\-]?\d{2}){4}\b")
        .expect("phone pattern")
});

/// The phone numbers written in `text`, as written, in order, without
/// repeats.
pub fn phones_in_text(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in PHONE_IN_TEXT.find_iter(text) {
        let p = m.as_str().to_owned();
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

pub fn clean_name(raw: &str) -> Result<String, String> {
    let s = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 200 {
        return Err("is longer than 200 characters".into());
    }
    if s.chars().any(|c| c.is_control()) {
        return Err("contains control characters".into());
    }
    Ok(s)
}

/// Accent- and case-insensitive key of a name, for matching letters and
/// walk-ins: `Hélène  DUPONT-Lefèvre` → `helene dupont lefevre`.
pub fn name_key(given: &str, family: &str) -> String {
    fold(&format!("{family} {given}"))
}

/// What a channel knows about a person, parsed: the form every role trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CitizenInput {
    pub given_name: String,
    pub family_name: String,
    pub phones: Vec<Phone>,
    pub emails: Vec<Email>,
    pub address: Option<Address>,
}

/// A postal address as written, trimmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    pub lines: Vec<String>,
    pub postal_code: String,
    pub city: String,
    pub country: String,
}

impl Address {
    /// Accent-, case- and abbreviation-insensitive key: postal code and
    /// street lines ("12 bd de la Libération" = "12, Boulevard de la
    /// Liberation"). Empty when there is no street line.
    pub fn key(&self) -> String {
        let street = self
            .lines
            .iter()
            .map(|l| fold(l))
            .collect::<Vec<_>>()
            .join(" ");
        let words: Vec<String> = street
            .split_whitespace()
            .map(|w| {
                match w {
                    "bd" | "bld" | "boul" | "bvd" => "boulevard",
                    "av" | "ave" => "avenue",
                    "pl" => "place",
                    "che" | "chem" => "chemin",
                    "imp" => "impasse",
                    "all" => "allee",
                    "fg" | "fbg" => "faubourg",
                    "rte" => "route",
                    "sq" => "square",
                    "st" => "saint",
                    "ste" => "sainte",
                    "r" => "rue",
                    "bis" | "b" => "bis",
                    other => other,
                }
                .to_owned()
            })
            .collect();
        if words.is_empty() {
            return String::new();
        }
        let postal: String = self
            .postal_code
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        format!("{postal} {}", words.join(" "))
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.postal_code.is_empty() && self.city.is_empty()
    }
}

/// Lower-case ASCII words without accents or punctuation.
fn fold(s: &str) -> String {
    s.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_address(
    a: &guichet_proto::intake::v1::PostalAddress,
    prefix: &str,
) -> Result<Option<Address>, tonic::Status> {
    use crate::grpc::invalid_argument;
    let clean = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let lines: Vec<String> = a
        .lines
        .iter()
        .map(|l| clean(l))
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() > 6 || lines.iter().any(|l| l.chars().count() > 200) {
        return Err(invalid_argument(
            &format!("{prefix}.lines"),
            "at most 6 lines of 200 characters",
        ));
    }
    let postal_code = clean(&a.postal_code);
    if postal_code.chars().count() > 16 {
        return Err(invalid_argument(
            &format!("{prefix}.postal_code"),
            "is too long",
        ));
    }
    let address = Address {
        lines,
        postal_code,
        city: clean(&a.city),
        country: clean(&a.country),
    };
    Ok((!address.is_empty()).then_some(address))
}

/// Whether a channel gave anything to identify the person by (a name, a
/// phone, an email or an address line), before any parsing.
pub fn hint_given(hint: Option<&guichet_proto::intake::v1::CitizenHint>) -> bool {
    hint.is_some_and(|h| {
        !h.given_name.trim().is_empty()
            || !h.family_name.trim().is_empty()
            || h.phones.iter().any(|p| !p.trim().is_empty())
            || h.emails.iter().any(|e| !e.trim().is_empty())
            || h.address
                .as_ref()
                .is_some_and(|a| a.lines.iter().any(|l| !l.trim().is_empty()))
    })
}

/// Parse a `CitizenHint`; errors are `InvalidArgument` naming the field
/// under `prefix` (e.g. `citizen.phones[0]`).
pub fn parse_hint(
    hint: Option<&guichet_proto::intake::v1::CitizenHint>,
    prefix: &str,
) -> Result<CitizenInput, tonic::Status> {
    use crate::grpc::invalid_argument;
    let hint = hint.ok_or_else(|| invalid_argument(prefix, "is required"))?;
    let given_name = clean_name(&hint.given_name)
        .map_err(|e| invalid_argument(&format!("{prefix}.given_name"), e))?;
    let family_name = clean_name(&hint.family_name)
        .map_err(|e| invalid_argument(&format!("{prefix}.family_name"), e))?;
    let phones = hint
        .phones
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Phone::parse(p).map_err(|e| invalid_argument(&format!("{prefix}.phones[{i}]"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let emails = hint
        .emails
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Email::parse(p).map_err(|e| invalid_argument(&format!("{prefix}.emails[{i}]"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if given_name.is_empty() && family_name.is_empty() && phones.is_empty() && emails.is_empty() {
        return Err(invalid_argument(
            prefix,
            "needs at least a name, a phone number or an email address",
        ));
    }
    let address = match &hint.address {
        Some(a) => parse_address(a, &format!("{prefix}.address"))?,
        None => None,
    };
    Ok(CitizenInput {
        given_name,
        family_name,
        phones,
        emails,
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_national_and_international_formats_give_one_e164() {
        let a = Phone::parse("06 12 34 56 78").unwrap();
        let b = Phone::parse("+33 6 12 34 56 78").unwrap();
        let c = Phone::parse("0033612345678").unwrap();
        let d = Phone::parse("06.12.34.56.78").unwrap();
        assert_eq!(a.as_str(), "+33612345678");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
    }

    #[test]
    fn address_keys_ignore_accents_case_punctuation_and_abbreviations() {
        let a = Address {
            lines: vec!["12 bd de la Libération".into()],
            postal_code: "94300".into(),
            city: "Vincennes".into(),
            country: String::new(),
        };
        let b = Address {
            lines: vec!["12, BOULEVARD DE LA LIBERATION".into()],
            postal_code: "94 300".into(),
            city: "VINCENNES".into(),
            country: "France".into(),
        };
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key(), "94300 12 boulevard de la liberation");
        let c = Address {
            lines: vec!["14 bd de la Libération".into()],
            ..a.clone()
        };
        assert_ne!(a.key(), c.key());
    }

    #[test]
    fn malformed_phones_are_refused() {
        assert!(Phone::parse("bonjour").is_err());
        assert!(Phone::parse("06 12").is_err());
        assert!(Phone::parse("").is_err());
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            Email::parse(" Marie.Curie@Example.FR ").unwrap().as_str(),
            "marie.curie@example.fr"
        );
        assert!(Email::parse("marie").is_err());
        assert!(Email::parse("marie@localhost").is_err());
    }

    #[test]
    fn name_keys_ignore_accents_case_and_punctuation() {
        assert_eq!(
            name_key("Hélène", "DUPONT-Lefèvre"),
            "dupont lefevre helene"
        );
        assert_eq!(
            name_key("helene", "Dupont Lefevre"),
            name_key("Hélène", "DUPONT-LEFÈVRE")
        );
    }
}
