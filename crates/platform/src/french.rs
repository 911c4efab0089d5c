//! Dates and times in French words, in Paris time, from chrono's `fr_FR`
//! locale (never hand-written month or day names).

use std::sync::LazyLock;

use chrono::{DateTime, Datelike, Locale, NaiveDate, Utc};
use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::calendar::to_paris;

/// "mardi 1 décembre 2026".
pub fn day_date(t: DateTime<Utc>) -> String {
    to_paris(t)
        .and_utc()
        .format_localized("%A %-d %B %Y", Locale::fr_FR)
        .to_string()
}

/// "09h15".
pub fn hour(t: DateTime<Utc>) -> String {
    to_paris(t).format("%Hh%M").to_string()
}

/// "mardi 12/01 à 10h00".
pub fn short_day_hour(t: DateTime<Utc>) -> String {
    let local = to_paris(t).and_utc();
    format!(
        "{} à {}",
        local.format_localized("%A %d/%m", Locale::fr_FR),
        local.format("%Hh%M")
    )
}

/// The French name of `month` (1-12): "février".
pub fn month_name(month: u32) -> String {
    NaiveDate::from_ymd_opt(2000, month, 1)
        .map(|d| d.format_localized("%B", Locale::fr_FR).to_string())
        .unwrap_or_default()
}

/// Lower case without accents: "Août" → "aout" (OCR often loses accents).
fn folded(s: &str) -> String {
    s.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

#[allow(clippy::expect_used)]
static MONTHS: LazyLock<Vec<String>> =
    LazyLock::new(|| (1..=12).map(|m| folded(&month_name(m))).collect());

#[allow(clippy::expect_used)]
static DATE_WORDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(1er|\d{1,2})\s+(\p{L}+)\s+(\d{4})\b").expect("regex"));
#[allow(clippy::expect_used)]
static DATE_NUMBERS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{4})\b").expect("regex"));

/// The first date written in `text`: "1er décembre 2026", "12 aout 2026"
/// (accents optional), or "12/01/2026" (day first).
pub fn find_date(text: &str) -> Option<NaiveDate> {
    for c in DATE_WORDS.captures_iter(text) {
        let Some(month) = MONTHS.iter().position(|m| *m == folded(&c[2])) else {
            continue;
        };
        let day = if c[1].eq_ignore_ascii_case("1er") {
            1
        } else {
            c[1].parse().ok()?
        };
        return NaiveDate::from_ymd_opt(c[3].parse().ok()?, month as u32 + 1, day);
    }
    let c = DATE_NUMBERS.captures(text)?;
    NaiveDate::from_ymd_opt(c[3].parse().ok()?, c[2].parse().ok()?, c[1].parse().ok()?)
}

/// The weekday of `d` in French: "lundi".
pub fn weekday(d: NaiveDate) -> String {
    d.format_localized("%A", Locale::fr_FR).to_string()
}

/// Whether `d` is a weekend day (Saturday or Sunday).
pub fn is_weekend(d: NaiveDate) -> bool {
    d.weekday().number_from_monday() >= 6
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn dates_and_hours_read_in_french_in_paris_time() {
        // 09:15 UTC in winter is 10:15 in Paris.
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 9, 15, 0).unwrap();
        assert_eq!(day_date(t), "mardi 1 décembre 2026");
        assert_eq!(hour(t), "10h15");
        let winter = Utc.with_ymd_and_hms(2027, 1, 12, 9, 0, 0).unwrap();
        assert_eq!(short_day_hour(winter), "mardi 12/01 à 10h00");
        assert_eq!(month_name(8), "août");
        assert_eq!(
            weekday(NaiveDate::from_ymd_opt(2026, 12, 6).unwrap()),
            "dimanche"
        );
    }

    #[test]
    fn dates_are_found_in_words_with_or_without_accents_and_in_numbers() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        assert_eq!(find_date("Vincennes, le 1er décembre 2026"), d(2026, 12, 1));
        assert_eq!(find_date("le 12 aout 2026"), d(2026, 8, 12));
        assert_eq!(find_date("le 3 FÉVRIER 2027"), d(2027, 2, 3));
        assert_eq!(find_date("fait le 05/01/2027."), d(2027, 1, 5));
        assert_eq!(
            find_date("le 12 bidule 2026, puis 31/12/2026"),
            d(2026, 12, 31)
        );
        assert_eq!(find_date("le 31 février 2026"), None);
        assert_eq!(find_date("rien"), None);
    }
}
