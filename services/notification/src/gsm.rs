//! SMS encoding and segmentation (3GPP TS 23.038, "GSM 03.38").
//!
//! A message is sent in the 7-bit GSM default alphabet when every character
//! is in its basic table or its extension table (an extension character
//! costs two septets: ESC + code); otherwise the whole message goes as
//! UCS-2 (UTF-16 code units). French text usually fits GSM-7 (é è à ù ì ò
//! Ç É are basic characters), but one ê, â, ô, î, û, ç, œ or typographic
//! apostrophe (’) switches the whole message to UCS-2, which more than
//! halves the characters per segment. The provider bills per segment, so
//! the count is recorded per message.

/// The 128 characters of the GSM 7-bit default alphabet, in code order.
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table (after ESC): form feed, ^ { } \ [ ~ ] | €.
const EXTENSION: [char; 10] = ['\u{0C}', '^', '{', '}', '\\', '[', '~', ']', '|', '€'];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }
}

/// How a text is sent: encoding, segments and its length in units of that
/// encoding (septets or UTF-16 code units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsShape {
    pub encoding: Encoding,
    pub segments: u32,
    pub units: u32,
}

/// Septets of `c` in GSM-7 (1 basic, 2 extension), `None` outside it.
pub fn gsm7_septets(c: char) -> Option<u32> {
    if c != '\u{1B}' && BASIC.contains(&c) {
        Some(1)
    } else if EXTENSION.contains(&c) {
        Some(2)
    } else {
        None
    }
}

/// Whether every character of `text` is in the GSM-7 alphabet.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_septets(c).is_some())
}

/// `text` with the French letters outside GSM-7 replaced by their base
/// letter (â ê î ô û → a e i o u, ë ï → e i, ç → c, œ → oe, and their
/// capitals), for templates that ask for it (`sms_gsm7 = true`): a message
/// carrying a site or a type name with an "ô" then stays in one or two GSM-7
/// segments instead of five or six UCS-2 ones. Letters of GSM-7 (é è à ù
/// ì ò Ç É) are kept.
pub fn fit_letters(text: &str) -> std::borrow::Cow<'_, str> {
    fn replacement(c: char) -> Option<&'static str> {
        Some(match c {
            'â' | 'á' | 'ã' => "a",
            'ê' | 'ë' => "e",
            'î' | 'ï' | 'í' => "i",
            'ô' | 'ó' | 'õ' => "o",
            'û' | 'ú' => "u",
            'ÿ' => "y",
            'ç' => "c",
            'œ' => "oe",
            'Â' | 'À' | 'Á' => "A",
            'Ê' | 'È' | 'Ë' => "E",
            'Î' | 'Ï' => "I",
            'Ô' => "O",
            'Û' | 'Ù' => "U",
            'Œ' => "OE",
            _ => return None,
        })
    }
    if !text.chars().any(|c| replacement(c).is_some()) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match replacement(c) {
            Some(r) => out.push_str(r),
            None => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `text` with its typography fitted to the GSM-7 alphabet, as SMS
/// gateways' "smart encoding" does: guillemets and curly quotes become
/// straight quotes, typographic apostrophes `'`, dashes `-`, the ellipsis
/// `...`, and non-breaking or thin spaces a space. Letters are never
/// changed (an ê stays an ê, and the message then goes as UCS-2), so the
/// French text reads the same; only punctuation that would otherwise force
/// UCS-2 and cost two or three times the segments is replaced.
pub fn fit_typography(text: &str) -> std::borrow::Cow<'_, str> {
    fn replacement(c: char) -> Option<&'static str> {
        Some(match c {
            '«' | '»' | '“' | '”' | '„' | '‟' | '″' => "\"",
            '‹' | '›' | '‘' | '’' | '‚' | '‛' | '′' | 'ʼ' => "'",
            '–' | '—' | '‐' | '‑' | '‒' | '−' => "-",
            '…' => "...",
            '\u{00A0}' | '\u{202F}' | '\u{2009}' | '\u{2007}' | '\u{2002}' | '\u{2003}' => " ",
            '•' => "-",
            _ => return None,
        })
    }
    if !text.chars().any(|c| replacement(c).is_some()) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match replacement(c) {
            // « texte » → "texte": the narrow space inside guillemets goes too.
            Some("\"") if c == '«' => {
                out.push('"');
                while chars
                    .peek()
                    .is_some_and(|n| matches!(n, ' ' | '\u{00A0}' | '\u{202F}'))
                {
                    chars.next();
                }
            }
            Some("\"") if c == '»' => {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push('"');
            }
            Some(r) => out.push_str(r),
            None => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Encoding, segment count and length of `text`.
///
/// One segment holds 160 septets (GSM-7) or 70 code units (UCS-2); a
/// concatenated message loses 7 septets / 3 units per segment to the user
/// data header (153 / 67), and an escape pair or a surrogate pair is never
/// split across two segments.
pub fn shape(text: &str) -> SmsShape {
    if is_gsm7(text) {
        let costs: Vec<u32> = text.chars().filter_map(gsm7_septets).collect();
        let units: u32 = costs.iter().sum();
        SmsShape {
            encoding: Encoding::Gsm7,
            segments: segments(&costs, units, 160, 153),
            units,
        }
    } else {
        let costs: Vec<u32> = text.chars().map(|c| c.len_utf16() as u32).collect();
        let units: u32 = costs.iter().sum();
        SmsShape {
            encoding: Encoding::Ucs2,
            segments: segments(&costs, units, 70, 67),
            units,
        }
    }
}

fn segments(costs: &[u32], total: u32, single: u32, multi: u32) -> u32 {
    if total == 0 {
        return 1;
    }
    if total <= single {
        return 1;
    }
    let mut count = 1;
    let mut used = 0;
    for &c in costs {
        if used + c > multi {
            count += 1;
            used = 0;
        }
        used += c;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_outside_gsm7_become_their_base_letter_and_gsm7_letters_stay() {
        let t = "Hôtel de ville, fête, garçon, Œuvre : é è à ù Ç É";
        let fitted = fit_letters(t);
        assert_eq!(fitted, "Hotel de ville, fete, garcon, OEuvre : é è à ù Ç É");
        assert!(is_gsm7(&fitted));
        assert!(matches!(
            fit_letters("Bonjour"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn typography_is_fitted_to_gsm7_and_letters_are_kept() {
        let text = "Mairie de Villeneuve : votre code de signature pour « Avenant au contrat – crèche » est 123456. N’attendez pas…";
        let fitted = fit_typography(text);
        assert_eq!(
            fitted,
            "Mairie de Villeneuve : votre code de signature pour \"Avenant au contrat - crèche\" est 123456. N'attendez pas..."
        );
        assert_eq!(shape(text).encoding, Encoding::Ucs2);
        assert_eq!(shape(&fitted).encoding, Encoding::Gsm7);
        assert_eq!(shape(&fitted).segments, 1);
        // Letters outside GSM-7 stay: the message is UCS-2, and reads right.
        assert_eq!(fit_typography("Fête de l’été"), "Fête de l'été");
        assert_eq!(shape(&fit_typography("Fête")).encoding, Encoding::Ucs2);
        // Nothing to fit: the text itself.
        assert!(matches!(
            fit_typography("Bonjour"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_basic_table_has_128_distinct_characters() {
        let mut v = BASIC.to_vec();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), 128);
    }

    #[test]
    fn french_accents_of_the_basic_table_stay_gsm7() {
        let s = shape("Votre pièce d'identité est prête à être retirée à la mairie. Où ? Ici.");
        // "prête" and "être" hold ê: not GSM-7.
        assert_eq!(s.encoding, Encoding::Ucs2);
        let s = shape("Votre carte est arrivée à la mairie : retrait au guichet, Ça marche ?");
        assert_eq!(s.encoding, Encoding::Gsm7);
        assert!(is_gsm7("éèàùìòÇÉ"));
    }

    #[test]
    fn circumflexes_lower_cedilla_ligature_and_curly_apostrophe_force_ucs2() {
        for c in ['ê', 'â', 'ô', 'î', 'û', 'ç', 'œ', '’', 'ë', 'ï'] {
            assert_eq!(
                shape(&format!("Bonjour {c}")).encoding,
                Encoding::Ucs2,
                "{c} is not GSM-7"
            );
        }
    }

    #[test]
    fn extension_characters_cost_two_septets() {
        let s = shape("Prix : 25 €");
        assert_eq!(s.encoding, Encoding::Gsm7);
        assert_eq!(s.units, 12);
        assert_eq!(shape("[{}]").units, 8);
        assert_eq!(shape("\u{1B}").encoding, Encoding::Ucs2);
    }

    #[test]
    fn gsm7_segments_are_160_then_153() {
        assert_eq!(shape("").segments, 1);
        assert_eq!(shape(&"a".repeat(160)).segments, 1);
        assert_eq!(shape(&"a".repeat(161)).segments, 2);
        assert_eq!(shape(&"a".repeat(306)).segments, 2);
        assert_eq!(shape(&"a".repeat(307)).segments, 3);
        // 152 septets then an escape pair: the pair moves to segment 2.
        let s = format!("{}€{}", "a".repeat(152), "a".repeat(10));
        assert_eq!(shape(&s).units, 164);
        assert_eq!(shape(&s).segments, 2);
        let s = format!("{}€", "a".repeat(305));
        assert_eq!(shape(&s).segments, 3);
    }

    #[test]
    fn ucs2_segments_are_70_then_67() {
        assert_eq!(shape(&"ê".repeat(70)).segments, 1);
        assert_eq!(shape(&"ê".repeat(71)).segments, 2);
        assert_eq!(shape(&"ê".repeat(134)).segments, 2);
        assert_eq!(shape(&"ê".repeat(135)).segments, 3);
        // An emoji is a surrogate pair: two units, never split.
        let s = format!("{}😀", "ê".repeat(66));
        assert_eq!(shape(&s).units, 68);
        assert_eq!(shape(&s).segments, 1);
        let s = format!("{}😀{}", "ê".repeat(66), "ê".repeat(3));
        assert_eq!(shape(&s).segments, 2);
    }

    #[test]
    fn the_signature_code_message_is_one_gsm7_segment_once_fitted() {
        let text = "Mairie de Villeneuve : votre code de signature pour « Contrat crèche » est 123456. Il expire dans 10 minutes. Ne le communiquez à personne.";
        // « and » are not GSM-7: as written, UCS-2 in three segments.
        let s = shape(text);
        assert_eq!(s.encoding, Encoding::Ucs2);
        assert_eq!(s.segments, 3);
        // Fitted, as it is sent: GSM-7, one segment.
        let s = shape(&fit_typography(text));
        assert_eq!(s.encoding, Encoding::Gsm7);
        assert_eq!(s.segments, 1);
    }
}
