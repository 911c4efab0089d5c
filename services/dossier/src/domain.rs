//! Dossier's own domain values.

/// A dossier's human reference: `<PREFIX>-<year>-<6 digits>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference(String);

impl Reference {
    pub fn new(prefix: &str, year: i32, seq: i64) -> Reference {
        Reference(format!("{prefix}-{year}-{seq:06}"))
    }

    /// Parse a reference as a citizen may quote it (any case).
    pub fn parse(raw: &str) -> Option<Reference> {
        let s = raw.trim().to_ascii_uppercase();
        let mut parts = s.split('-');
        let prefix = parts.next()?;
        let year = parts.next()?;
        let seq = parts.next()?;
        if parts.next().is_some()
            || prefix.is_empty()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_format_and_parse() {
        let r = Reference::new("VIN", 2026, 123);
        assert_eq!(r.as_str(), "VIN-2026-000123");
        assert_eq!(Reference::parse("vin-2026-000123"), Some(r));
        assert!(Reference::parse("VIN-26-000123").is_none());
        assert!(Reference::parse("not a ref").is_none());
    }
}
