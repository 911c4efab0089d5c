//! PDF handling with lopdf: checking that a document is a readable PDF, and
//! producing the signed PDF — the original with a French "Page de signature
//! électronique" appended. The page uses the standard Helvetica font with
//! WinAnsiEncoding, which covers French accents without embedding a font.

use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, ObjectId, Stream, StringFormat, dictionary};

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("le document n'est pas un PDF (il ne commence pas par %PDF-)")]
    NotPdf,
    #[error("le PDF est illisible ({0})")]
    Unreadable(String),
    #[error("le PDF est chiffré")]
    Encrypted,
    #[error("le PDF n'a aucune page")]
    NoPage,
}

fn unreadable(e: impl std::fmt::Display) -> PdfError {
    PdfError::Unreadable(e.to_string())
}

/// Check that `bytes` is a PDF lopdf can read, unencrypted, with pages;
/// returns its page count.
pub fn check(bytes: &[u8]) -> Result<usize, PdfError> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(PdfError::NotPdf);
    }
    let doc = Document::load_mem(bytes).map_err(unreadable)?;
    if doc.is_encrypted() {
        return Err(PdfError::Encrypted);
    }
    match doc.get_pages().len() {
        0 => Err(PdfError::NoPage),
        n => Ok(n),
    }
}

/// What the signature page says.
#[derive(Debug, Clone)]
pub struct SignaturePage {
    pub title: String,
    pub town: String,
    pub original_sha256: String,
    pub request_id: String,
    /// (name, masked phone, Paris date and time)
    pub signers: Vec<(String, String, String)>,
    pub consent_text: String,
    pub key_id: String,
}

/// Windows-1252 bytes of `s` (WinAnsiEncoding); unknown characters become '?'.
pub fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '\u{202f}' => 0xa0,
            '€' => 0x80,
            '‚' => 0x82,
            '„' => 0x84,
            '…' => 0x85,
            'Œ' => 0x8c,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            'œ' => 0x9c,
            'Ÿ' => 0x9f,
            _ => b'?',
        })
        .collect()
}

/// Split `s` into lines of at most `width` characters, at spaces.
fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in s.split_whitespace() {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

struct Writer {
    ops: Vec<Operation>,
    y: f32,
}

impl Writer {
    fn line(&mut self, font: &str, size: f32, x: f32, text: &str) {
        self.ops.push(Operation::new("BT", vec![]));
        self.ops
            .push(Operation::new("Tf", vec![font.into(), size.into()]));
        self.ops
            .push(Operation::new("Td", vec![x.into(), self.y.into()]));
        self.ops.push(Operation::new(
            "Tj",
            vec![Object::String(win_ansi(text), StringFormat::Literal)],
        ));
        self.ops.push(Operation::new("ET", vec![]));
        self.y -= size * 1.45;
    }

    fn gap(&mut self, h: f32) {
        self.y -= h;
    }
}

fn page_content(p: &SignaturePage) -> Content {
    let mut w = Writer {
        ops: Vec::new(),
        y: 780.0,
    };
    w.line("F2", 16.0, 50.0, "Page de signature électronique");
    w.line(
        "F1",
        10.0,
        50.0,
        &format!("{} – signature électronique simple (eIDAS)", p.town),
    );
    w.gap(10.0);
    w.line("F2", 11.0, 50.0, "Document");
    for l in wrap(&p.title, 80) {
        w.line("F1", 10.0, 60.0, &l);
    }
    w.line("F1", 9.0, 60.0, "Empreinte SHA-256 du document original :");
    w.line("F1", 9.0, 60.0, &p.original_sha256);
    w.line(
        "F1",
        9.0,
        60.0,
        &format!("Demande de signature : {}", p.request_id),
    );
    w.gap(8.0);
    w.line("F2", 11.0, 50.0, "Signataires");
    for (name, phone, when) in &p.signers {
        w.line("F1", 10.0, 60.0, &format!("{name} – téléphone {phone}"));
        w.line(
            "F1",
            10.0,
            75.0,
            &format!("a signé le {when} (heure de Paris)"),
        );
    }
    w.line(
        "F1",
        10.0,
        60.0,
        "Méthode : code à usage unique envoyé par SMS",
    );
    w.gap(8.0);
    w.line(
        "F2",
        11.0,
        50.0,
        "Consentement exprimé par chaque signataire",
    );
    for l in wrap(&p.consent_text, 90) {
        w.line("F1", 9.0, 60.0, &l);
    }
    w.gap(8.0);
    for l in wrap(
        &format!(
            "Le dossier de preuve (journal horodaté des envois de code, tentatives, adresses IP et navigateurs) est scellé par la clé « {} » du service de signature de la mairie. Vérifiez-le avec l'API Verify en fournissant ce PDF.",
            p.key_id
        ),
        95,
    ) {
        w.line("F1", 8.0, 50.0, &l);
    }
    Content { operations: w.ops }
}

/// The original PDF with the signature page appended as its last page.
pub fn append_signature_page(original: &[u8], p: &SignaturePage) -> Result<Vec<u8>, PdfError> {
    check(original)?;
    let mut doc = Document::load_mem(original).map_err(unreadable)?;
    let pages_id: ObjectId = doc
        .catalog()
        .and_then(|c| c.get(b"Pages"))
        .and_then(Object::as_reference)
        .map_err(unreadable)?;
    let regular = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let bold = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica-Bold",
        "Encoding" => "WinAnsiEncoding",
    });
    let content = page_content(p).encode().map_err(unreadable)?;
    let content_id = doc.add_object(Stream::new(dictionary! {}, content));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        "Contents" => content_id,
        "Resources" => dictionary! {
            "Font" => dictionary! { "F1" => regular, "F2" => bold },
        },
    });
    let pages = doc
        .get_object_mut(pages_id)
        .and_then(Object::as_dict_mut)
        .map_err(unreadable)?;
    let count = pages
        .get(b"Count")
        .and_then(Object::as_i64)
        .map_err(unreadable)?;
    pages
        .get_mut(b"Kids")
        .and_then(Object::as_array_mut)
        .map_err(unreadable)?
        .push(page_id.into());
    pages.set("Count", count + 1);
    let mut out = Vec::new();
    doc.save_to(&mut out).map_err(unreadable)?;
    Ok(out)
}

/// A simple one-page PDF with a title and lines of text (Helvetica): used
/// by tests and demos to produce real documents to sign.
pub fn simple_document(title: &str, lines: &[&str]) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let mut w = Writer {
        ops: Vec::new(),
        y: 780.0,
    };
    w.line("F1", 16.0, 50.0, title);
    for l in lines {
        w.line("F1", 11.0, 50.0, l);
    }
    let content = Content { operations: w.ops }.encode().unwrap_or_default();
    let content_id = doc.add_object(Stream::new(dictionary! {}, content));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "Contents" => content_id,
        "Resources" => dictionary! { "Font" => dictionary! { "F1" => font } },
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => vec![page_id.into()],
            "Count" => 1,
        }),
    );
    let catalog = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    let _ = doc.save_to(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_page_is_appended_in_french() {
        let original = simple_document("Avenant au contrat d'accueil", &["Jours : lundi, mardi"]);
        assert_eq!(check(&original).unwrap(), 1);
        let signed = append_signature_page(
            &original,
            &SignaturePage {
                title: "Avenant au contrat d'accueil – crèche « Les Lutins »".into(),
                town: "Villeneuve".into(),
                original_sha256: "ab".repeat(32),
                request_id: "req-1".into(),
                signers: vec![(
                    "Amélie Poulain".into(),
                    "+33 6 •• •• •• 78".into(),
                    "mardi 1 décembre 2026 à 10h15".into(),
                )],
                consent_text: crate::config::DEFAULT_CONSENT.into(),
                key_id: "k1".into(),
            },
        )
        .unwrap();
        assert_eq!(check(&signed).unwrap(), 2);
        let doc = Document::load_mem(&signed).unwrap();
        let last = *doc.get_pages().get(&2).unwrap();
        let content = doc.get_page_content(last);
        let has = |s: &str| {
            let needle = win_ansi(s);
            content
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        };
        assert!(has("Page de signature ") && has("lectronique"));
        assert!(has("Am\u{e9}lie Poulain"));
        assert!(has(&"ab".repeat(32)));
        assert!(has("code \u{e0} usage unique envoy\u{e9} par SMS"));
    }

    #[test]
    fn non_pdf_content_is_refused() {
        assert!(matches!(check(b"hello"), Err(PdfError::NotPdf)));
        assert!(matches!(
            check(b"%PDF-1.7 garbage"),
            Err(PdfError::Unreadable(_))
        ));
    }

    #[test]
    fn french_text_is_encoded_in_win_ansi() {
        assert_eq!(win_ansi("é•’€"), vec![0xe9, 0x95, 0x92, 0x80]);
    }
}
