//! A person's name as channels give it, split into given and family name
//! with one rule for every channel.
//!
//! French correspondence writes the family name in capitals, before or
//! after the given name ("DUPONT Jean", "Jean DUPONT", "Mme Hélène
//! LEFÈVRE-MARTIN"); otherwise the family name is the last word ("Jean
//! Dupont"). Civilities are dropped; an email address or a display name
//! that is only an address gives no name at all.

use crate::contact::clean_name;

/// The civilities that open a name in letters and signatures.
const CIVILITIES: &[&str] = &[
    "m",
    "m.",
    "mme",
    "mme.",
    "mlle",
    "mlle.",
    "melle",
    "madame",
    "monsieur",
    "mademoiselle",
    "mr",
    "mr.",
    "dr",
    "dr.",
    "me",
    "me.",
];

/// A name split in two; either part may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonName {
    pub given: String,
    pub family: String,
}

impl PersonName {
    pub fn is_empty(&self) -> bool {
        self.given.is_empty() && self.family.is_empty()
    }
}

/// Split `raw` ("Mme Hélène LEFÈVRE-MARTIN", "\"Jean Dupont\"",
/// "DUPONT Jean") into given and family name.
pub fn split_name(raw: &str) -> PersonName {
    let Ok(cleaned) = clean_name(raw.trim().trim_matches(|c| c == '"' || c == '\'')) else {
        return PersonName::default();
    };
    if cleaned.contains('@') {
        return PersonName::default();
    }
    let words: Vec<&str> = cleaned
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| c == ',' || c == ';'))
        .filter(|w| !w.is_empty())
        .collect();
    let start = words
        .iter()
        .take_while(|w| CIVILITIES.contains(&w.to_lowercase().as_str()))
        .count();
    let words = &words[start..];
    let is_upper = |w: &&str| -> bool {
        w.chars().filter(|c| c.is_alphabetic()).count() >= 2
            && w.chars()
                .filter(|c| c.is_alphabetic())
                .all(|c| c.is_uppercase())
    };
    let (family, given): (Vec<&str>, Vec<&str>) =
        if words.iter().any(is_upper) && !words.iter().all(is_upper) {
            words.iter().partition(|w| is_upper(w))
        } else {
            match words.split_last() {
                Some((last, rest)) => (vec![*last], rest.to_vec()),
                None => (vec![], vec![]),
            }
        };
    PersonName {
        given: given.join(" "),
        family: family.join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> (String, String) {
        let n = split_name(s);
        (n.given, n.family)
    }

    #[test]
    fn capitals_mark_the_family_name_before_or_after_the_given_name() {
        assert_eq!(split("DUPONT Jean"), ("Jean".into(), "DUPONT".into()));
        assert_eq!(split("Jean DUPONT"), ("Jean".into(), "DUPONT".into()));
        assert_eq!(
            split("Mme Hélène LEFÈVRE-MARTIN"),
            ("Hélène".into(), "LEFÈVRE-MARTIN".into())
        );
        assert_eq!(
            split("Jean-Pierre DE LA FONTAINE"),
            ("Jean-Pierre".into(), "DE LA FONTAINE".into())
        );
    }

    #[test]
    fn otherwise_the_last_word_is_the_family_name() {
        assert_eq!(split("\"Jean Dupont\""), ("Jean".into(), "Dupont".into()));
        assert_eq!(
            split("Marie Anne Durand"),
            ("Marie Anne".into(), "Durand".into())
        );
        assert_eq!(split("M. Dupont"), ("".into(), "Dupont".into()));
        assert_eq!(split("DUPONT"), ("".into(), "DUPONT".into()));
    }

    #[test]
    fn addresses_and_empty_names_give_no_name() {
        assert!(split_name("jean.dupont@example.fr").is_empty());
        assert!(split_name("   ").is_empty());
        assert!(split_name("Madame").is_empty());
    }
}
