//! What agents read of a message: the new text without the quoted reply
//! history nor the signature; and the dossier references a text quotes.

use std::sync::LazyLock;

use regex::Regex;

#[allow(clippy::expect_used)]
static ATTRIBUTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^\s*(
            (le|on)\b.{0,200}\b(a\s+écrit|a\s+ecrit|wrote|schrieb)\s*:?\s*$
          | -{2,}\s*(message\s+d'origine|original\s+message)\s*-{2,}.*$
          | _{10,}\s*$
        )",
    )
    .expect("attribution pattern")
});

/// Outlook's header block of the answered message: `De : …` followed within
/// a few lines by `Envoyé : …` / `Sent: …`.
#[allow(clippy::expect_used)]
static OUTLOOK_FROM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*\*?(de|from)\s*:\*?\s*\S").expect("outlook from"));
#[allow(clippy::expect_used)]
static OUTLOOK_SENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*\*?(envoyé|envoye|sent|date)\s*:\*?\s*\S").expect("outlook sent")
});

/// Signature openers besides the standard `-- ` line: mobile footers.
#[allow(clippy::expect_used)]
static MOBILE_FOOTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(envoyé|envoye|sent)\s+(de|depuis|from)\s+(mon|my)\s+\S+").expect("footer")
});

/// The text without quoted history (`>` lines, "Le … a écrit :", "On …
/// wrote:", Outlook's "De : … Envoyé : …" block and everything after it)
/// and without the signature (from a `-- ` line). Falls back to the whole
/// text when stripping would leave nothing (a message that is only a quote).
pub fn clean(text: &str) -> String {
    cut(text, false)
}

/// The sender's own text: without the quoted history, with the signature
/// (where their phone number is).
pub fn own_text(text: &str) -> String {
    cut(text, true)
}

/// The phone numbers the sender wrote in their own text or signature (not
/// those of the quoted messages, e.g. the town hall's).
pub fn sender_phones(text: &str) -> Vec<String> {
    guichet_platform::contact::phones_in_text(&own_text(text))
}

fn cut(text: &str, keep_signature: bool) -> String {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<&str> = text.lines().collect();
    let mut kept: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_end();
        // The signature separator (RFC 3676 "-- "; some clients drop the space).
        if !keep_signature && (trimmed == "--" || line == "-- " || MOBILE_FOOTER.is_match(trimmed))
        {
            break;
        }
        if ATTRIBUTION.is_match(trimmed) {
            break;
        }
        // An attribution wrapped over two lines: "Le lun. 3 nov. 2026 à 10:00,
        // Mairie <contact@ville.fr>" / "a écrit :".
        if i + 1 < lines.len() {
            let joined = format!("{} {}", trimmed, lines[i + 1].trim());
            if (trimmed.to_lowercase().starts_with("le ")
                || trimmed.to_lowercase().starts_with("on "))
                && ATTRIBUTION.is_match(&joined)
            {
                break;
            }
        }
        if OUTLOOK_FROM.is_match(trimmed)
            && lines[i + 1..]
                .iter()
                .take(4)
                .any(|l| OUTLOOK_SENT.is_match(l.trim_end()))
        {
            break;
        }
        if trimmed.trim_start().starts_with('>') {
            i += 1;
            continue;
        }
        kept.push(trimmed);
        i += 1;
    }
    // Drop trailing blank lines.
    while kept.last().is_some_and(|l| l.trim().is_empty()) {
        kept.pop();
    }
    while kept.first().is_some_and(|l| l.trim().is_empty()) {
        kept.remove(0);
    }
    let out = kept.join("\n");
    if out.trim().is_empty() {
        text.trim().to_owned()
    } else {
        out
    }
}

/// Dossier references quoted in `text`, upper-cased, in order, without
/// repeats; those with `prefix` first (the platform's rules for typed text).
pub fn references(text: &str, prefix: &str) -> Vec<String> {
    guichet_platform::reference::find_in_text(text, prefix)
        .into_iter()
        .map(|r| r.into_string())
        .collect()
}

/// The subject without reply/forward prefixes (`Re:`, `RE :`, `Fwd:`,
/// `TR :`, `AW:`), for "Re: …" on answers.
pub fn base_subject(subject: &str) -> String {
    let mut s = subject.trim();
    'strip: loop {
        for p in ["re", "fwd", "fw", "tr", "aw", "wg", "réf", "ref"] {
            let Some(head) = s.get(..p.len()) else {
                continue;
            };
            if head.to_lowercase() != p {
                continue;
            }
            if let Some(rest) = s[p.len()..].trim_start().strip_prefix(':') {
                s = rest.trim_start();
                continue 'strip;
            }
        }
        return s.to_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_signature_phones_are_the_senders_not_the_quoted_ones() {
        let t = "Bonjour,\nje joins le justificatif.\n-- \nJean Dupont\nTél. 06 12 34 56 78\n\nLe lun. 3 nov. 2026 à 10:02, Mairie <contact@ville.fr> a écrit :\n> Appelez-nous au 01 43 98 65 00.\n";
        assert_eq!(sender_phones(t), vec!["06 12 34 56 78"]);
        assert!(
            !clean(t).contains("06 12"),
            "the agent's text has no signature"
        );
        assert!(sender_phones("Bonjour, merci.").is_empty());
    }

    #[test]
    fn email_quote_french_attribution_is_stripped() {
        let t = "Bonjour,\n\nJe vous joins la pièce demandée.\n\nCordialement,\nHélène\n\nLe lun. 3 nov. 2026 à 10:02, Mairie de Villeneuve <contact@ville.fr> a écrit :\n> Madame,\n> il manque un justificatif.\n";
        assert_eq!(
            clean(t),
            "Bonjour,\n\nJe vous joins la pièce demandée.\n\nCordialement,\nHélène"
        );
    }

    #[test]
    fn email_quote_wrapped_attribution_and_english_are_stripped() {
        let t = "Merci.\nLe lun. 3 nov. 2026 à 10:02, Mairie de Villeneuve <contact@ville.fr>\na écrit :\n> texte";
        assert_eq!(clean(t), "Merci.");
        let t =
            "Thanks!\n\nOn Mon, Nov 3, 2026 at 10:02 AM Mairie <contact@ville.fr> wrote:\n> hello";
        assert_eq!(clean(t), "Thanks!");
    }

    #[test]
    fn email_quote_outlook_block_is_stripped() {
        let t = "Voici le document.\r\n\r\nDe : Mairie de Villeneuve <contact@ville.fr>\r\nEnvoyé : lundi 3 novembre 2026 10:02\r\nÀ : Dupont Jean\r\nObjet : RE: Demande\r\n\r\nMonsieur,\r\n";
        assert_eq!(clean(t), "Voici le document.");
        let t = "See attached.\n\n-----Original Message-----\nFrom: x\nSent: y\n";
        assert_eq!(clean(t), "See attached.");
        // A forward is the substance, not history: kept.
        let t = "Pour info.\n\n---------- Forwarded message ---------\nDe : Préfecture\nVotre titre est prêt.";
        assert!(clean(t).contains("Votre titre est prêt."));
    }

    #[test]
    fn email_signature_and_quoted_lines_are_stripped() {
        let t = "> ancienne question\nMa réponse est oui.\n> encore\nMerci\n-- \nJean Dupont\n06 12 34 56 78\n";
        assert_eq!(clean(t), "Ma réponse est oui.\nMerci");
        let t = "Bien reçu.\n\nEnvoyé de mon iPhone";
        assert_eq!(clean(t), "Bien reçu.");
    }

    #[test]
    fn email_only_quote_keeps_the_text() {
        let t = "> tout est cité\n> rien de neuf";
        assert_eq!(clean(t), t);
    }

    #[test]
    fn email_references_prefer_the_configured_prefix() {
        assert_eq!(
            references("voir ABC-2025-000001 et [vin-2026-000123]", "VIN"),
            vec!["VIN-2026-000123", "ABC-2025-000001"]
        );
        assert!(references("commande 2026-000123", "VIN").is_empty());
    }

    #[test]
    fn email_subject_prefixes_are_removed() {
        assert_eq!(
            base_subject("RE : TR: Re: Demande d'acte"),
            "Demande d'acte"
        );
        assert_eq!(base_subject("Réunion"), "Réunion");
        assert_eq!(base_subject("RÉF : İstanbul"), "İstanbul");
        assert_eq!(base_subject("İİİ re: x"), "İİİ re: x");
    }
}
