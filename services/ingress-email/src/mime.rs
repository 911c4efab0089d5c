//! One received message, parsed with mail-parser: headers that thread it,
//! the text (HTML-only mail turned into text), its parts sorted into
//! documents kept and parts rejected, and whether it is automatic mail
//! (auto-reply, list, bulk, loop, bounce) that must never be acknowledged.

use std::borrow::Cow;

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};

use crate::config::Config;

/// A part of the message worth keeping as a document (or refused).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub filename: String,
    pub media_type: String,
    pub content: Vec<u8>,
    pub inline: bool,
    /// `None`: accepted; else why not (`too_large`, `forbidden_type`, `too_many_parts`).
    pub rejected: Option<&'static str>,
}

/// A delivery status notification's failed recipient.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bounce {
    pub recipient: String,
    /// e.g. `5.1.1`
    pub status: String,
    /// The diagnostic, e.g. `smtp; 550 5.1.1 user unknown` (no address).
    pub diagnostic: String,
    pub permanent: bool,
    /// Message-ID of the message that bounced, when the report quotes it.
    pub original_message_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// Without angle brackets; empty when the message has none.
    pub message_id: String,
    pub in_reply_to: String,
    pub references: Vec<String>,
    pub subject: String,
    pub from_address: String,
    pub from_name: String,
    pub to_address: String,
    /// The whole text of the message.
    pub text: String,
    pub parts: Vec<Part>,
    pub auto_reason: Option<&'static str>,
    pub bounce: Option<Bounce>,
    pub tnef: bool,
    pub forwarded_subjects: Vec<String>,
    /// The `Authentication-Results` header values, as written (unfolded).
    pub auth_results: Vec<String>,
}

impl Parsed {
    pub fn auto_submitted(&self) -> bool {
        self.auto_reason.is_some()
    }
}

fn strip_id(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_owned()
}

fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => t
            .split_whitespace()
            .map(strip_id)
            .filter(|s| !s.is_empty())
            .collect(),
        HeaderValue::TextList(l) => l
            .iter()
            .map(|t| strip_id(t))
            .filter(|s| !s.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

fn first_addr(a: Option<&Address<'_>>) -> (String, String) {
    a.and_then(|a| a.first())
        .map(|a| {
            (
                a.address().unwrap_or_default().trim().to_lowercase(),
                a.name().unwrap_or_default().trim().to_owned(),
            )
        })
        .unwrap_or_default()
}

fn header_text<'a>(m: &'a mail_parser::Message<'a>, name: &str) -> Option<Cow<'a, str>> {
    m.header_raw(name).map(|s| Cow::Owned(s.trim().to_owned()))
}

/// Why a message is automatic (RFC 3834 and the usual list/bulk/loop
/// markers), or `None` for a person's mail. `own_addresses` are guichet's
/// (an `X-Loop` naming one is our own mail coming back).
pub fn auto_reason(m: &mail_parser::Message<'_>, from: &str) -> Option<&'static str> {
    if let Some(v) = header_text(m, "Auto-Submitted")
        && !v.eq_ignore_ascii_case("no")
        && !v.is_empty()
    {
        return Some("auto-submitted");
    }
    if let Some(v) = header_text(m, "Precedence") {
        let v = v.to_ascii_lowercase();
        if ["bulk", "list", "junk", "auto_reply"].contains(&v.as_str()) {
            return Some(if v == "list" {
                "list"
            } else {
                "precedence-bulk"
            });
        }
    }
    if m.header_raw("X-Loop").is_some() {
        return Some("x-loop");
    }
    if m.header_raw("X-Autoreply").is_some()
        || m.header_raw("X-Autorespond").is_some()
        || m.header_raw("X-Auto-Response-Suppress").is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("all") || v.contains("oof") || v.contains("autoreply")
        })
    {
        return Some("auto-response-suppress");
    }
    if ["List-Id", "List-Unsubscribe", "List-Post", "List-Help"]
        .iter()
        .any(|h| m.header_raw(*h).is_some())
    {
        return Some("list");
    }
    let local = from.split('@').next().unwrap_or_default();
    if from.is_empty() || ["mailer-daemon", "postmaster", "mail-daemon"].contains(&local) {
        return Some("mailer-daemon");
    }
    None
}

/// Parse the `message/delivery-status` body of a report: per-recipient
/// blocks of `Field: value` lines.
pub fn parse_delivery_status(body: &str) -> Option<Bounce> {
    let mut best: Option<Bounce> = None;
    for block in body.replace("\r\n", "\n").split("\n\n") {
        let mut b = Bounce::default();
        let mut action = String::new();
        for line in block.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "final-recipient" | "original-recipient" if b.recipient.is_empty() => {
                    // "rfc822; someone@example.org"
                    let addr = v.rsplit(';').next().unwrap_or(v).trim();
                    b.recipient = strip_id(addr).to_lowercase();
                }
                "status" => b.status = v.split_whitespace().next().unwrap_or("").to_owned(),
                "action" => action = v.to_ascii_lowercase(),
                "diagnostic-code" => b.diagnostic = v.chars().take(200).collect(),
                _ => {}
            }
        }
        if b.recipient.is_empty() {
            continue;
        }
        if action == "delivered" || action == "relayed" || action == "expanded" {
            continue;
        }
        b.permanent = b.status.starts_with('5') || action == "failed";
        best = Some(b);
        break;
    }
    best
}

/// Parse `raw`. `None` when it has no header at all.
pub fn parse(raw: &[u8], config: &Config) -> Option<Parsed> {
    let m = MessageParser::default().parse(raw)?;
    if m.headers().is_empty() {
        return None;
    }
    let (from_address, from_name) = first_addr(m.from());
    let (to_address, _) = first_addr(m.to());
    let mut p = Parsed {
        message_id: m.message_id().map(strip_id).unwrap_or_default(),
        in_reply_to: ids(m.in_reply_to()).into_iter().next().unwrap_or_default(),
        references: ids(m.references()),
        subject: m.subject().unwrap_or_default().trim().to_owned(),
        from_address,
        from_name,
        to_address,
        ..Default::default()
    };
    p.auto_reason = auto_reason(&m, &p.from_address);
    let raw_headers = m.raw_message();
    p.auth_results = m
        .headers()
        .iter()
        .filter(|h| {
            h.name
                .as_str()
                .eq_ignore_ascii_case("Authentication-Results")
        })
        .filter_map(|h| raw_headers.get(h.offset_start as usize..h.offset_end as usize))
        .map(|v| {
            String::from_utf8_lossy(v)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .take(20)
        .collect();

    // The text: every text body part (text/plain preferred over HTML in
    // multipart/alternative, HTML converted to text otherwise).
    let mut texts = Vec::new();
    for i in 0..m.text_body_count() {
        if let Some(t) = m.body_text(i) {
            texts.push(t.trim_end().to_owned());
        }
    }
    if texts.is_empty() {
        for i in 0..m.html_body_count() {
            if let Some(h) = m.body_html(i) {
                texts.push(
                    mail_parser::decoders::html::html_to_text(&h)
                        .trim()
                        .to_owned(),
                );
            }
        }
    }
    p.text = texts.join("\n\n");

    let is_report = m.content_type().is_some_and(|c| {
        c.ctype().eq_ignore_ascii_case("multipart")
            && c.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });

    let text_body: Vec<u32> = m
        .text_body
        .iter()
        .chain(m.html_body.iter())
        .copied()
        .collect();
    let mut stored = 0usize;
    for (idx, part) in m.parts.iter().enumerate() {
        let idx = idx as u32;
        if idx == 0 || matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let media_type = part
            .content_type()
            .map(|c| match c.subtype() {
                Some(s) => format!("{}/{}", c.ctype(), s),
                None => c.ctype().to_owned(),
            })
            .unwrap_or_else(|| "text/plain".into())
            .to_ascii_lowercase();
        if media_type == "message/delivery-status" {
            if is_report {
                let body = String::from_utf8_lossy(part.contents());
                p.bounce = parse_delivery_status(&body);
            }
            continue;
        }
        if let PartType::Message(inner) = &part.body {
            if media_type == "message/rfc822" || media_type == "message/global" {
                p.forwarded_subjects
                    .push(inner.subject().unwrap_or_default().trim().to_owned());
                // A forwarded message's own text joins the text agents read.
                if !is_report && let Some(t) = inner.body_text(0) {
                    p.text.push_str("\n\n[Message transféré]\n");
                    if let Some(s) = inner.subject() {
                        p.text.push_str(&format!("Objet : {s}\n\n"));
                    }
                    p.text.push_str(t.trim());
                }
            }
            if is_report {
                // The bounced message (or its headers): its id threads the bounce.
                if let Some(b) = p.bounce.as_mut()
                    && let Some(id) = inner.message_id()
                {
                    b.original_message_id = strip_id(id);
                }
                continue;
            }
            // Keep the forwarded message itself as a document (.eml).
            let raw = m
                .raw_message
                .get(part.offset_body as usize..part.offset_end as usize)
                .unwrap_or_default();
            let name = part
                .attachment_name()
                .map(str::to_owned)
                .unwrap_or_else(|| "message-transfere.eml".into());
            p.parts.push(decide(
                config,
                &mut stored,
                name,
                "message/rfc822".into(),
                raw.to_vec(),
                false,
            ));
            continue;
        }
        if text_body.contains(&idx) && part.attachment_name().is_none() {
            continue;
        }
        if media_type == "text/rfc822-headers" && is_report {
            if let Some(b) = p.bounce.as_mut() {
                let h = String::from_utf8_lossy(part.contents());
                if let Some(id) = h.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("message-id")
                        .then(|| strip_id(v))
                }) {
                    b.original_message_id = id;
                }
            }
            continue;
        }
        let content = part.contents().to_vec();
        let filename = part
            .attachment_name()
            .map(clean_filename)
            .unwrap_or_else(|| default_name(&media_type, idx));
        let inline = part.content_id().is_some()
            || part.content_disposition().is_some_and(|d| d.is_inline());
        if media_type == "application/ms-tnef"
            || media_type == "application/vnd.ms-tnef"
            || filename.eq_ignore_ascii_case("winmail.dat")
        {
            p.tnef = true;
        }
        p.parts.push(decide(
            config,
            &mut stored,
            filename,
            media_type,
            content,
            inline,
        ));
    }
    // A report whose status part did not parse is still a bounce.
    if is_report
        && p.bounce.is_none()
        && m.content_type()
            .and_then(|c| c.attribute("report-type"))
            .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
    {
        p.bounce = Some(Bounce::default());
    }
    // A bounce written as plain text (no delivery-status part): Postfix,
    // Exim, Exchange and Gmail forms, in English or French.
    if p.bounce.is_none() {
        p.bounce = parse_plain_bounce(&p);
    }
    if p.bounce.is_some() {
        p.auto_reason = Some("bounce");
    }
    Some(p)
}

/// Subjects of non-delivery reports, lower-case.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undelivered mail returned to sender",
    "mail delivery failed",
    "delivery status notification",
    "undeliverable:",
    "undeliverable mail",
    "returned mail:",
    "failure notice",
    "delivery failure",
    "mail delivery failure",
    "non remis",
    "échec de la remise",
    "message non remis",
    "message non délivré",
    "impossible de remettre",
];

/// What the text of a non-delivery report says.
const BOUNCE_PHRASES: &[&str] = &[
    "could not be delivered",
    "couldn't be delivered",
    "wasn't delivered",
    "was not delivered",
    "delivery has failed",
    "following address(es) failed",
    "permanent error",
    "address not found",
    "user unknown",
    "recipient address rejected",
    "n'a pas pu être remis",
    "n'a pas été remis",
    "adresse introuvable",
    "échec de la remise",
];

/// Phrases of a delay notice: automatic, not (yet) a failure.
const DELAY_PHRASES: &[&str] = &[
    "delayed",
    "will retry",
    "will keep trying",
    "temporary failure",
    "has not yet been delivered",
    "(delay)",
    "retardé",
];

static EMAIL_RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?i)[a-z0-9._%+\-]+@[a-z0-9.\-]+\.[a-z]{2,}").expect("valid pattern")
});
static STATUS_RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b").expect("valid pattern")
});
static SMTP_CODE_RE: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"\b([45])\d\d\b").expect("valid pattern"));
static QUOTED_ID_RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?im)^\s*message-id:\s*<([^>\s]+)>").expect("valid pattern")
});

/// A non-delivery report in plain text: from a mailer daemon or with a
/// report's subject, and saying the message failed. The failed recipient is
/// the first address in the text that is neither the report's sender nor
/// its recipient (the town's mailbox).
pub fn parse_plain_bounce(p: &Parsed) -> Option<Bounce> {
    let subject = p.subject.to_lowercase();
    let text = p.text.to_lowercase();
    let from_daemon = p.auto_reason == Some("mailer-daemon");
    let report_subject = BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s));
    let says_failed = BOUNCE_PHRASES.iter().any(|s| text.contains(s));
    let says_delayed = DELAY_PHRASES
        .iter()
        .any(|s| text.contains(s) || subject.contains(s));
    if !(from_daemon || report_subject) || !(says_failed || says_delayed) {
        return None;
    }
    let recipient = EMAIL_RE
        .find_iter(&p.text)
        .map(|m| m.as_str().trim_end_matches('.').to_lowercase())
        .find(|a| *a != p.from_address && *a != p.to_address)
        .unwrap_or_default();
    let status = STATUS_RE
        .find(&p.text)
        .map(|m| m.as_str().to_owned())
        .or_else(|| {
            SMTP_CODE_RE
                .find(&p.text)
                .map(|m| format!("{}.0.0", &m.as_str()[..1]))
        })
        .unwrap_or_else(|| if says_failed { "5.0.0" } else { "4.0.0" }.to_owned());
    let diagnostic = p
        .text
        .lines()
        .find(|l| SMTP_CODE_RE.is_match(l) || STATUS_RE.is_match(l))
        .map(|l| {
            let l = EMAIL_RE.replace_all(l.trim(), "<adresse>");
            l.chars().take(200).collect()
        })
        .unwrap_or_default();
    let permanent = says_failed && !says_delayed && !status.starts_with('4');
    Some(Bounce {
        recipient,
        status,
        diagnostic,
        permanent,
        original_message_id: QUOTED_ID_RE
            .captures(&p.text)
            .map(|c| c[1].to_owned())
            .unwrap_or_default(),
    })
}

/// The parsing entry point with a fixed configuration, for fuzzing
/// (`fuzz/`, and the mutation test below): parse, clean the text, find
/// references. Must never panic, whatever the bytes.
pub fn parse_for_fuzzing(raw: &[u8]) -> usize {
    let config = crate::config::Config::fuzzing();
    let Some(p) = parse(raw, &config) else {
        return 0;
    };
    let cleaned = crate::text::clean(&p.text);
    let refs = crate::text::references(&p.subject, "VIN").len()
        + crate::text::references(&cleaned, "VIN").len();
    let _ = crate::text::base_subject(&p.subject);
    p.parts.len() + refs + cleaned.len()
}

fn decide(
    config: &Config,
    stored: &mut usize,
    filename: String,
    media_type: String,
    content: Vec<u8>,
    inline: bool,
) -> Part {
    let media_type = effective_type(&media_type, &filename);
    let rejected = if content.len() as u64 > config.max_attachment_bytes {
        Some("too_large")
    } else if !config.allows(&media_type) {
        Some("forbidden_type")
    } else if *stored >= config.max_attachments {
        Some("too_many_parts")
    } else {
        *stored += 1;
        None
    };
    Part {
        filename,
        content: if rejected.is_some() {
            Vec::new()
        } else {
            content
        },
        media_type,
        inline,
        rejected,
    }
}

/// Mail clients often send `application/octet-stream`: take the type from
/// the file name then.
fn effective_type(media_type: &str, filename: &str) -> String {
    if media_type != "application/octet-stream" {
        return media_type.to_owned();
    }
    let ext = filename
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "tif" | "tiff" => "image/tiff",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "odt" => "application/vnd.oasis.opendocument.text",
        "doc" => "application/msword",
        "dat" if filename.eq_ignore_ascii_case("winmail.dat") => "application/ms-tnef",
        _ => media_type,
    }
    .to_owned()
}

fn default_name(media_type: &str, idx: u32) -> String {
    let ext = match media_type {
        "application/pdf" => "pdf",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "text/html" => "html",
        "text/plain" => "txt",
        _ => "bin",
    };
    format!("partie-{idx}.{ext}")
}

/// A file name as shown to agents: last path component, no control characters, bounded.
pub fn clean_filename(raw: &str) -> String {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
    if name.trim().is_empty() {
        "piece-jointe".into()
    } else {
        name.trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::valid;

    fn parse_str(s: &str) -> Parsed {
        parse(s.as_bytes(), &valid()).expect("parses")
    }

    #[test]
    fn email_loop_headers_are_recognised() {
        let base = "From: a@example.org\r\nTo: contact@ville.fr\r\nSubject: x\r\n";
        for (h, reason) in [
            ("Auto-Submitted: auto-replied\r\n", "auto-submitted"),
            ("Precedence: bulk\r\n", "precedence-bulk"),
            ("Precedence: junk\r\n", "precedence-bulk"),
            ("Precedence: list\r\n", "list"),
            ("X-Loop: contact@ville.fr\r\n", "x-loop"),
            ("List-Id: <infos.example.org>\r\n", "list"),
            (
                "X-Auto-Response-Suppress: All\r\n",
                "auto-response-suppress",
            ),
        ] {
            let p = parse_str(&format!("{base}{h}\r\nbody\r\n"));
            assert_eq!(p.auto_reason, Some(reason), "{h}");
        }
        let p = parse_str(&format!("{base}Auto-Submitted: no\r\n\r\nbody\r\n"));
        assert_eq!(p.auto_reason, None);
        let p = parse_str("From: MAILER-DAEMON@mx.example.org\r\nSubject: x\r\n\r\nb\r\n");
        assert_eq!(p.auto_reason, Some("mailer-daemon"));
    }

    /// A fuzz run in the suite: every corpus message cut at many places and
    /// with bytes flipped (a fixed xorshift sequence, so failures repeat).
    #[test]
    fn email_parser_survives_mutated_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/email");
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut files = 0;
        for entry in std::fs::read_dir(dir).expect("corpus") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "eml") {
                continue;
            }
            files += 1;
            let raw = std::fs::read(&path).expect("read");
            parse_for_fuzzing(&raw);
            for _ in 0..60 {
                let mut m = raw.clone();
                let cut = (next() as usize) % (m.len() + 1);
                m.truncate(cut.max(m.len() / 2));
                for _ in 0..(next() % 16) {
                    let i = (next() as usize) % m.len().max(1);
                    if let Some(b) = m.get_mut(i) {
                        *b = [b'\n', b'-', b'=', b'?', b':', b';', b'>', 0xC3, 0xFF, b'"']
                            [(next() % 10) as usize];
                    }
                }
                parse_for_fuzzing(&m);
                parse_for_fuzzing(&m[..cut.min(m.len())]);
            }
        }
        assert!(files >= 25, "corpus of {files} messages");
    }

    /// The usual plain-text forms of a non-delivery report (no
    /// `multipart/report`): the failed address, the status, permanent.
    #[test]
    fn email_plain_text_bounces_are_recognised() {
        let cases = [
            (
                "MAILER-DAEMON@mx.ville.fr (Mail Delivery System)",
                "Undelivered Mail Returned to Sender",
                "This is the mail system at host mx.ville.fr.\r\n\r\nI'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients.\r\n\r\n<jean.dupont@exemple.fr>: host mx.exemple.fr[192.0.2.1] said: 550 5.1.1\r\n    <jean.dupont@exemple.fr>: Recipient address rejected: User unknown\r\n\r\nMessage-ID: <ack-1@ville.fr>\r\n",
                "5.1.1",
            ),
            (
                "Mail Delivery System <Mailer-Daemon@smtp.ville.fr>",
                "Mail delivery failed: returning message to sender",
                "This message was created automatically by mail delivery software.\r\n\r\nA message that you sent could not be delivered to one or more of its\r\nrecipients. This is a permanent error. The following address(es) failed:\r\n\r\n  jean.dupont@exemple.fr\r\n    SMTP error from remote mail server after RCPT TO:<jean.dupont@exemple.fr>:\r\n    550 User unknown\r\n",
                "5.0.0",
            ),
            (
                "postmaster@outlook.example",
                "Undeliverable: Votre demande VIN-2026-000123",
                "Delivery has failed to these recipients or groups:\r\n\r\njean.dupont@exemple.fr\r\nThe email address you entered couldn't be found.\r\n\r\nDiagnostic information for administrators:\r\n\r\nRemote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'\r\n",
                "5.1.10",
            ),
            (
                "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
                "Delivery Status Notification (Failure)",
                "** Address not found **\r\n\r\nYour message wasn't delivered to jean.dupont@exemple.fr because the address couldn't be found, or is unable to receive mail.\r\n\r\nThe response from the remote server was:\r\n550 5.1.1 The email account that you tried to reach does not exist.\r\n",
                "5.1.1",
            ),
        ];
        for (from, subject, body, status) in cases {
            let raw = format!(
                "From: {from}\r\nTo: contact@ville.fr\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
            );
            let p = parse_str(&raw);
            assert_eq!(p.auto_reason, Some("bounce"), "{subject}");
            let b = p.bounce.expect("a bounce");
            assert_eq!(b.recipient, "jean.dupont@exemple.fr", "{subject}");
            assert_eq!(b.status, status, "{subject}");
            assert!(b.permanent, "{subject}");
            assert!(
                !b.diagnostic.contains('@'),
                "no address kept: {}",
                b.diagnostic
            );
        }
        let p = parse_str(
            "From: MAILER-DAEMON@mx.ville.fr\r\nTo: contact@ville.fr\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\ncould not be delivered to <a@b.fr>\r\nMessage-ID: <ack-1@ville.fr>\r\n",
        );
        assert_eq!(p.bounce.unwrap().original_message_id, "ack-1@ville.fr");
        // A delay notice is automatic but not a failure.
        let p = parse_str(
            "From: MAILER-DAEMON@mx.ville.fr\r\nTo: contact@ville.fr\r\nSubject: Delayed Mail (still being retried)\r\n\r\nYour message to <jean.dupont@exemple.fr> has been delayed. The system will retry.\r\n",
        );
        assert!(!p.bounce.expect("a delay notice").permanent);
        // A person writing about a message that "could not be delivered" is
        // not a bounce.
        let p = parse_str(
            "From: jean.dupont@exemple.fr\r\nTo: contact@ville.fr\r\nSubject: Colis\r\n\r\nMon colis could not be delivered hier.\r\n",
        );
        assert!(p.bounce.is_none());
        assert!(!p.auto_submitted());
    }

    #[test]
    fn email_delivery_status_gives_the_failed_recipient() {
        let ds = "Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; Jean.Dupont@example.org\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n";
        let b = parse_delivery_status(ds).expect("bounce");
        assert_eq!(b.recipient, "jean.dupont@example.org");
        assert_eq!(b.status, "5.1.1");
        assert!(b.permanent);
        let delayed = "Final-Recipient: rfc822; a@example.org\nAction: delayed\nStatus: 4.4.1\n";
        assert!(!parse_delivery_status(delayed).expect("delay").permanent);
    }
}
