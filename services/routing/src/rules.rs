//! Classification rules: a TOML file mapping what a request looks like
//! (channel, IVR choice, sender, French keywords, attachments, time of day)
//! to a process, a priority, required skills, a queue and an SLA target.
//!
//! Rules are tried in file order; the first whose every condition holds
//! wins; none → triage. Keywords match accent- and case-insensitively on
//! whole words ("etat civil" matches "État-Civil" but "passe" does not match
//! "passeport"), singular or plural ("acte de naissance" matches "actes de
//! naissance"), and through the noise of OCR and typing: digits read for
//! letters ("1ivret" is "livret"), words cut at a line end ("inscrip-" /
//! "tion"), mis-decoded accents ("Ã©tat"), and one slip in a long word
//! ("inscripsion", "pasport" is too far from "passeport" and does not match).
//! `none_keywords` keeps a rule off requests that name something else, so the
//! specific rule (a crèche contract change) comes first and the general one
//! (a crèche place) does not take its requests. The file is reloaded when it
//! changes; a file that does not validate is refused whole, the previous
//! rules stay in force, and the reason is logged, counted and shown by the
//! dry-run call. With no file configured, the shipped rules
//! (`config/routing-rules.toml`, embedded) are in force. A rule set
//! published in the studio (`crate::studio`) takes over from the file or
//! the shipped rules on every replica; a refusal names its line
//! ([`RulesError`]), in English for the logs and French for the studio.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, NaiveTime, Utc};
use guichet_platform::contact::{Phone, name_key};
use guichet_proto::intake::v1::{IntakeEvent, intake_event};
use serde::Deserialize;
use toml::Spanned;

use crate::calendar::{Calendar, SlaTarget, parse_interval};
use crate::config::CHANNELS;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<Spanned<RuleSpec>>,
}

/// A rule as written; the spans place a refusal at its line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: Spanned<String>,
    #[serde(default)]
    description: String,
    process: Spanned<String>,
    #[serde(default)]
    priority: Option<Spanned<i32>>,
    #[serde(default)]
    skills: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    queue: Option<Spanned<String>>,
    #[serde(default)]
    sla: Option<Spanned<String>>,
    #[serde(default)]
    when: Option<Spanned<Conditions>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Conditions {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    ivr_choices: Vec<String>,
    /// Email addresses, `@domain` suffixes, or phone numbers.
    #[serde(default)]
    senders: Vec<String>,
    /// Any of these words or phrases in the subject, body or OCR text.
    #[serde(default)]
    keywords: Vec<String>,
    /// All of these.
    #[serde(default)]
    all_keywords: Vec<String>,
    /// None of these (the request is about something else).
    #[serde(default)]
    none_keywords: Vec<String>,
    #[serde(default)]
    has_attachments: Option<bool>,
    /// Media type prefixes, e.g. `application/pdf`, `image/`.
    #[serde(default)]
    attachment_types: Vec<String>,
    /// Local time-of-day interval `HH:MM-HH:MM` the request arrived in.
    #[serde(default)]
    hours: String,
    /// A call to return: missed, or the caller asked to be called back.
    #[serde(default)]
    callback: Option<bool>,
}

#[derive(Debug, Clone)]
enum Sender {
    Email(String),
    Domain(String),
    Phone(String),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub process: String,
    pub priority: i32,
    pub skills: Vec<String>,
    pub queue: Option<String>,
    pub sla: Option<SlaTarget>,
    /// The SLA target as written (`2d`), empty when none.
    pub sla_text: String,
    channels: Vec<String>,
    ivr_choices: Vec<String>,
    senders: Vec<Sender>,
    keywords: Vec<(String, Alternatives)>,
    all_keywords: Vec<(String, Alternatives)>,
    none_keywords: Vec<(String, Alternatives)>,
    has_attachments: Option<bool>,
    attachment_types: Vec<String>,
    hours: Option<(NaiveTime, NaiveTime)>,
    callback: Option<bool>,
}

/// Accents mis-decoded on the way (UTF-8 read as Latin-1, common in OCR
/// output and old mail clients), put back before matching.
const MOJIBAKE: &[(&str, &str)] = &[
    ("Ã©", "é"),
    ("Ã¨", "è"),
    ("Ãª", "ê"),
    ("Ã«", "ë"),
    ("Ã ", "à"),
    ("Ã¢", "â"),
    ("Ã§", "ç"),
    ("Ã´", "ô"),
    ("Ã®", "î"),
    ("Ã¯", "ï"),
    ("Ã¹", "ù"),
    ("Ã»", "û"),
    ("Ã‰", "É"),
    ("Ã€", "À"),
    ("Ã‡", "Ç"),
];

/// Lower-case, accent-free words of a French text, with OCR noise repaired:
/// mis-decoded accents, and words hyphenated across a line end joined.
pub fn words(text: &str) -> Vec<String> {
    let mut text = text.to_owned();
    if text.contains('Ã') {
        for (bad, good) in MOJIBAKE {
            text = text.replace(bad, good);
        }
    }
    let text = join_hyphenated(&text);
    let text: Vec<String> = text.split_whitespace().map(join_acronym).collect();
    name_key("", &text.join(" "))
        .to_lowercase()
        .replace('œ', "oe")
        .replace('æ', "ae")
        .split_whitespace()
        .filter(|w| !STOPWORDS.contains(w))
        .map(str::to_owned)
        .collect()
}

/// Articles, prepositions and possessives: left out on both sides, so
/// "inscription école" matches "inscription à l'école" and "certifier ma
/// signature" matches "certifier la signature".
const STOPWORDS: &[&str] = &[
    "a", "au", "aux", "d", "de", "des", "du", "l", "la", "le", "les", "un", "une", "en", "mon",
    "ma", "mes", "ton", "ta", "tes", "son", "sa", "ses", "notre", "nos", "votre", "vos", "leur",
    "leurs", "ce", "cet", "cette", "ces",
];

/// "P.A.C.S." → "PACS": an acronym written with dots is one word.
fn join_acronym(token: &str) -> String {
    let letters: Vec<char> = token.chars().filter(|c| *c != '.').collect();
    let dotted = token.contains('.')
        && letters.len() >= 2
        && letters.iter().all(|c| c.is_alphabetic())
        && token
            .split('.')
            .filter(|p| !p.is_empty())
            .all(|p| p.chars().count() == 1);
    if dotted {
        letters.into_iter().collect()
    } else {
        token.to_owned()
    }
}

/// "inscrip-\ntion" → "inscription": a word cut at a line end.
fn join_hyphenated(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("-\n") {
        let (before, after) = rest.split_at(i);
        let after = &after[2..];
        let next = after.trim_start_matches([' ', '\t', '\r']);
        let cut = before.chars().last().is_some_and(char::is_alphabetic)
            && next.chars().next().is_some_and(char::is_lowercase);
        out.push_str(before);
        if cut {
            rest = next;
        } else {
            out.push_str("-\n");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Whether a word as read matches a word as written, letter by letter, a
/// digit standing for the letter OCR takes it for ("1ivret", "C1VIL",
/// "passep0rt"). Numbers stay numbers: "94300" is not a word of letters.
fn ocr_eq(read: &str, written: &str) -> bool {
    read.chars().count() == written.chars().count()
        && read.chars().any(char::is_alphabetic)
        && read.chars().zip(written.chars()).all(|(r, w)| {
            r == w
                || matches!(
                    (r, w),
                    ('1', 'l') | ('1', 'i') | ('0', 'o') | ('5', 's') | ('8', 'b')
                )
        })
}

/// The singular a French plural most often drops to ("actes", "travaux").
/// Short words keep their final letter ("plus", "fils", "mois" are not
/// plurals).
fn singular(word: &str) -> &str {
    if word.len() > 4 && (word.ends_with('s') || word.ends_with('x')) {
        &word[..word.len() - 1]
    } else {
        word
    }
}

/// A word of the request against a word of a keyword: the same, singular or
/// plural, or one slip apart (a typo, an OCR misread) in a word of seven
/// letters or more that begins the same.
fn word_matches(text: &str, keyword: &str) -> bool {
    if text == keyword {
        return true;
    }
    let (t, k) = (singular(text), singular(keyword));
    if t == k || ocr_eq(text, keyword) || ocr_eq(t, k) {
        return true;
    }
    // OCR reads "m" as "rn" ("chôrnage").
    if text.contains("rn") && !keyword.contains("rn") {
        let repaired = text.replace("rn", "m");
        if repaired == keyword || singular(&repaired) == k {
            return true;
        }
    }
    let n = k.chars().count();
    n >= 7
        && t.chars().count().abs_diff(n) <= 1
        && t.chars().next() == k.chars().next()
        && strsim::osa_distance(t, k) <= 1
}

/// A keyword's alternatives (`a | b`): each as written, and as words.
type Alternatives = Vec<(String, Vec<String>)>;

/// The first of a keyword's alternatives found in the words, as written.
fn found<'a>(haystack: &[String], alternatives: &'a Alternatives) -> Option<&'a str> {
    alternatives
        .iter()
        .find(|(_, phrase)| contains_phrase(haystack, phrase))
        .map(|(written, _)| written.as_str())
}

fn contains_phrase(haystack: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty()
        && haystack.len() >= phrase.len()
        && haystack
            .windows(phrase.len())
            .any(|w| w.iter().zip(phrase).all(|(t, k)| word_matches(t, k)))
}

/// A validated rule set, the text it was read from and its version
/// (content hash).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub version: String,
    pub text: String,
}

/// The version (fingerprint) of a rules text.
pub fn content_version(text: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Why a rules text was refused, and where: line and column (from 1; 0 when
/// the text as a whole is at fault), in English for the logs and in French
/// for the process owners who read it in the studio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    pub line: u32,
    pub column: u32,
    pub message: String,
    pub message_fr: String,
}

impl std::fmt::Display for RulesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        } else {
            f.write_str(&self.message)
        }
    }
}

/// Line and column (from 1) of a byte offset of `text`.
fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line as u32, col as u32)
}

/// The TOML reader's and the field decoder's complaints, in French.
fn syntax_fr(message: &str) -> String {
    let quoted = |m: &str| -> String { m.split('`').nth(1).unwrap_or_default().to_owned() };
    let m = message.trim();
    if m.starts_with("unknown field") {
        format!(
            "champ inconnu « {} » (vérifiez l'orthographe : id, description, process, priority, skills, queue, sla, when et ses conditions)",
            quoted(m)
        )
    } else if m.starts_with("missing field") {
        format!("champ obligatoire « {} » absent", quoted(m))
    } else if m.starts_with("invalid type") {
        let expected = m.split("expected").nth(1).unwrap_or_default();
        let want = if expected.contains("i32") || expected.contains("integer") {
            "un nombre entier"
        } else if expected.contains("sequence") {
            "une liste entre crochets, par exemple [\"a\", \"b\"]"
        } else if expected.contains("bool") {
            "true ou false"
        } else if expected.contains("string") {
            "un texte entre guillemets"
        } else if expected.contains("struct") || expected.contains("map") {
            "une table, par exemple { keywords = [\"a\"] }"
        } else {
            "une autre sorte de valeur"
        };
        format!("valeur inattendue : {want} est attendu ici")
    } else if m.contains("duplicate key") {
        format!("clé « {} » écrite deux fois", quoted(m))
    } else {
        format!("le texte n'est pas du TOML valide ({m})")
    }
}

impl RuleSet {
    /// Parse and validate a rules file; `queues` are the configured queues.
    pub fn parse(text: &str, queues: &HashSet<String>) -> Result<RuleSet, String> {
        RuleSet::check(text, queues).map_err(|e| e.to_string())
    }

    /// [`RuleSet::parse`], the refusal placed at its line.
    pub fn check(text: &str, queues: &HashSet<String>) -> Result<RuleSet, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            RulesError {
                line,
                column,
                message: e.message().trim().to_owned(),
                message_fr: syntax_fr(e.message()),
            }
        })?;
        let mut seen = HashSet::new();
        let mut rules = Vec::new();
        for (i, spanned) in file.rule.into_iter().enumerate() {
            let rule_span = spanned.span();
            let r = spanned.into_inner();
            let id = r.id.get_ref().clone();
            let at = |span: std::ops::Range<usize>, en: String, fr: String| {
                let (line, column) = line_col(text, span.start);
                RulesError {
                    line,
                    column,
                    message: format!("rule[{i}] ({id}): {en}"),
                    message_fr: format!("règle « {id} » : {fr}"),
                }
            };
            let slug = |s: &str| {
                !s.is_empty()
                    && s.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    })
            };
            if !slug(&id) {
                return Err(at(
                    r.id.span(),
                    "id must be lower-case letters, digits and '-'".into(),
                    "l'identifiant s'écrit en minuscules sans accent, chiffres et « - »".into(),
                ));
            }
            if !seen.insert(id.clone()) {
                return Err(at(
                    r.id.span(),
                    "id is used twice".into(),
                    "cet identifiant est déjà celui d'une autre règle".into(),
                ));
            }
            if !slug(r.process.get_ref()) {
                return Err(at(
                    r.process.span(),
                    "process must be a process id".into(),
                    format!(
                        "« {} » n'est pas un identifiant de procédure (minuscules sans accent, chiffres et « - »)",
                        r.process.get_ref()
                    ),
                ));
            }
            let priority = match &r.priority {
                Some(p) if !(-100..=100).contains(p.get_ref()) => {
                    return Err(at(
                        p.span(),
                        "priority must be between -100 and 100".into(),
                        "la priorité est comprise entre -100 et 100".into(),
                    ));
                }
                Some(p) => *p.get_ref(),
                None => 0,
            };
            let skills = match &r.skills {
                Some(list) => {
                    if let Some(s) = list.get_ref().iter().find(|s| !slug(s)) {
                        return Err(at(
                            list.span(),
                            format!("skill `{s}` must be lower-case letters, digits and '-'"),
                            format!(
                                "la compétence « {s} » s'écrit en minuscules sans accent, chiffres et « - »"
                            ),
                        ));
                    }
                    list.get_ref().clone()
                }
                None => Vec::new(),
            };
            let queue = match &r.queue {
                None => None,
                Some(q) if q.get_ref().is_empty() => None,
                Some(q) if queues.contains(q.get_ref()) => Some(q.get_ref().clone()),
                Some(q) => {
                    let mut known: Vec<&str> = queues.iter().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(at(
                        q.span(),
                        format!("queue `{}` is not configured", q.get_ref()),
                        format!(
                            "la file « {} » n'existe pas (files : {})",
                            q.get_ref(),
                            known.join(", ")
                        ),
                    ));
                }
            };
            let (sla, sla_text) = match &r.sla {
                Some(v) if !v.get_ref().is_empty() => (
                    Some(SlaTarget::parse(v.get_ref()).map_err(|e| {
                        at(
                            v.span(),
                            e,
                            format!(
                                "délai « {} » invalide : un nombre suivi de m (minutes), h (heures) ou d (jours ouvrés), par exemple 2d",
                                v.get_ref()
                            ),
                        )
                    })?),
                    v.get_ref().trim().to_owned(),
                ),
                _ => (None, String::new()),
            };
            let (w, when_span) = match r.when {
                Some(w) => {
                    let span = w.span();
                    (w.into_inner(), span)
                }
                None => (Conditions::default(), rule_span.clone()),
            };
            if let Some(c) = w.channels.iter().find(|c| !CHANNELS.contains(&c.as_str())) {
                return Err(at(
                    when_span,
                    format!("unknown channel `{c}`"),
                    format!("canal « {c} » inconnu (telephony, email, scan ou counter)"),
                ));
            }
            let mut senders = Vec::new();
            for s in &w.senders {
                let s = s.trim();
                senders.push(if let Some(d) = s.strip_prefix('@') {
                    Sender::Domain(format!("@{}", d.to_lowercase()))
                } else if s.contains('@') {
                    Sender::Email(s.to_lowercase())
                } else {
                    Sender::Phone(
                        Phone::parse(s)
                            .map_err(|e| {
                                at(
                                    when_span.clone(),
                                    format!("sender `{s}` {e}"),
                                    format!(
                                        "expéditeur « {s} » : ni une adresse, ni un domaine (@…), ni un numéro de téléphone"
                                    ),
                                )
                            })?
                            .as_str()
                            .to_owned(),
                    )
                });
            }
            let phrases = |list: &[String]| -> Result<Vec<(String, Alternatives)>, RulesError> {
                list.iter()
                    .map(|k| {
                        let alternatives: Vec<(String, Vec<String>)> = k
                            .split('|')
                            .map(|a| (a.trim().to_owned(), words(a)))
                            .collect();
                        if alternatives.iter().any(|(_, ws)| ws.is_empty()) {
                            Err(at(
                                when_span.clone(),
                                format!("keyword `{k}` has an entry without letters"),
                                format!(
                                    "le mot-clé « {k} » a une alternative sans lettre (ou faite seulement de mots comme « de », « la »)"
                                ),
                            ))
                        } else {
                            Ok((k.trim().to_owned(), alternatives))
                        }
                    })
                    .collect()
            };
            let hours = if w.hours.is_empty() {
                None
            } else {
                Some(parse_interval(&w.hours).map_err(|e| {
                    at(
                        when_span.clone(),
                        e,
                        format!(
                            "plage horaire « {} » invalide (attendu HH:MM-HH:MM, par exemple 08:30-12:00)",
                            w.hours
                        ),
                    )
                })?)
            };
            rules.push(Rule {
                keywords: phrases(&w.keywords)?,
                all_keywords: phrases(&w.all_keywords)?,
                none_keywords: phrases(&w.none_keywords)?,
                id,
                description: r.description,
                process: r.process.into_inner(),
                priority,
                skills,
                queue,
                sla,
                sla_text,
                channels: w.channels,
                ivr_choices: w.ivr_choices,
                senders,
                has_attachments: w.has_attachments,
                attachment_types: w
                    .attachment_types
                    .iter()
                    .map(|t| t.to_lowercase())
                    .collect(),
                hours,
                callback: w.callback,
            });
        }
        Ok(RuleSet {
            rules,
            version: content_version(text),
            text: text.to_owned(),
        })
    }

    /// The first matching rule, and every evaluation (for the dry run).
    pub fn classify(
        &self,
        event: &IntakeEvent,
        calendar: &Calendar,
    ) -> (Option<&Rule>, Vec<Evaluation>) {
        let facts = Facts::of(event, calendar);
        let mut evaluations = Vec::new();
        let mut winner = None;
        for rule in &self.rules {
            let (matched, reasons) = rule.evaluate(&facts);
            evaluations.push(Evaluation {
                rule_id: rule.id.clone(),
                matched,
                reasons,
            });
            if matched {
                winner = Some(rule);
                break;
            }
        }
        (winner, evaluations)
    }
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    pub rule_id: String,
    pub matched: bool,
    pub reasons: Vec<String>,
}

/// What rules look at, extracted once from an intake event.
struct Facts {
    channel: &'static str,
    ivr_choice: String,
    emails: Vec<String>,
    phones: Vec<String>,
    words: Vec<String>,
    attachment_types: Vec<String>,
    local_time: Option<NaiveTime>,
    callback: bool,
}

impl Facts {
    fn of(e: &IntakeEvent, calendar: &Calendar) -> Facts {
        let hint = e.citizen.clone().unwrap_or_default();
        let (ivr_choice, callback) = match &e.details {
            Some(intake_event::Details::Telephony(t)) => (
                t.ivr_choice.trim().to_owned(),
                t.missed || t.callback_requested,
            ),
            _ => (String::new(), false),
        };
        let received: Option<DateTime<Utc>> = e
            .received_at
            .as_ref()
            .and_then(guichet_proto::convert::datetime);
        Facts {
            channel: e.channel().slug(),
            ivr_choice,
            emails: hint
                .emails
                .iter()
                .map(|m| m.trim().to_lowercase())
                .collect(),
            phones: hint
                .phones
                .iter()
                .filter_map(|p| Phone::parse(p).ok())
                .map(|p| p.as_str().to_owned())
                .collect(),
            words: words(&format!("{}\n{}", e.subject, e.body)),
            attachment_types: e
                .attachments
                .iter()
                .map(|a| a.media_type.to_lowercase())
                .collect(),
            local_time: received.map(|t| calendar.to_local(t).time()),
            callback,
        }
    }
}

impl Rule {
    fn evaluate(&self, f: &Facts) -> (bool, Vec<String>) {
        let mut ok = true;
        let mut reasons = Vec::new();
        let mut check = |cond: bool, yes: String, no: String| {
            ok &= cond;
            reasons.push(if cond { yes } else { no });
        };
        if !self.channels.is_empty() {
            let c = self.channels.iter().any(|c| c == f.channel);
            check(
                c,
                format!("canal « {} » accepté", f.channel),
                format!(
                    "canal « {} » non retenu ({})",
                    f.channel,
                    self.channels.join(", ")
                ),
            );
        }
        if !self.ivr_choices.is_empty() {
            let c = self.ivr_choices.contains(&f.ivr_choice);
            check(
                c,
                format!("choix du serveur vocal « {} »", f.ivr_choice),
                format!("choix du serveur vocal « {} » non retenu", f.ivr_choice),
            );
        }
        if !self.senders.is_empty() {
            let c = self.senders.iter().any(|s| match s {
                Sender::Email(m) => f.emails.contains(m),
                Sender::Domain(d) => f.emails.iter().any(|m| m.ends_with(d.as_str())),
                Sender::Phone(p) => f.phones.contains(p),
            });
            check(
                c,
                "expéditeur reconnu".into(),
                "expéditeur non reconnu".into(),
            );
        }
        if !self.keywords.is_empty() {
            let hit = self
                .keywords
                .iter()
                .find_map(|(_, alts)| found(&f.words, alts));
            match hit {
                Some(k) => check(true, format!("mot-clé « {k} » trouvé"), String::new()),
                None => check(false, String::new(), "aucun des mots-clés trouvé".into()),
            }
        }
        if let Some(k) = self
            .none_keywords
            .iter()
            .find_map(|(_, alts)| found(&f.words, alts))
        {
            check(
                false,
                String::new(),
                format!("mot-clé exclu « {k} » trouvé"),
            );
        }
        for (k, alts) in &self.all_keywords {
            match found(&f.words, alts) {
                Some(w) => check(true, format!("mot-clé « {w} » trouvé"), String::new()),
                None => check(false, String::new(), format!("mot-clé « {k} » absent")),
            }
        }
        if let Some(want) = self.has_attachments {
            let has = !f.attachment_types.is_empty();
            check(
                has == want,
                if has {
                    "pièces jointes présentes".into()
                } else {
                    "sans pièce jointe".into()
                },
                if has {
                    "pièces jointes présentes".into()
                } else {
                    "sans pièce jointe".into()
                },
            );
        }
        if !self.attachment_types.is_empty() {
            let c = f.attachment_types.iter().any(|t| {
                self.attachment_types
                    .iter()
                    .any(|p| t.starts_with(p.as_str()))
            });
            check(
                c,
                "type de pièce jointe retenu".into(),
                "aucune pièce jointe du type attendu".into(),
            );
        }
        if let Some((from, to)) = self.hours {
            let c = f.local_time.is_some_and(|t| from <= t && t < to);
            let at = f
                .local_time
                .map(|t| t.format("%H:%M").to_string())
                .unwrap_or_default();
            check(
                c,
                format!(
                    "reçu à {at}, dans la plage {}-{}",
                    from.format("%H:%M"),
                    to.format("%H:%M")
                ),
                format!(
                    "reçu à {at}, hors de la plage {}-{}",
                    from.format("%H:%M"),
                    to.format("%H:%M")
                ),
            );
        }
        if let Some(want) = self.callback {
            let says = if f.callback {
                "appel à rappeler"
            } else {
                "pas d'appel à rappeler"
            };
            check(f.callback == want, says.into(), says.into());
        }
        if reasons.is_empty() {
            reasons.push("règle sans condition : s'applique à tout".into());
        }
        (ok, reasons)
    }
}

impl Rule {
    /// What the rule looks at, in French, one condition a line (for the
    /// studio's table of rules).
    pub fn conditions_fr(&self) -> Vec<String> {
        let mut out = Vec::new();
        let list = |v: &[(String, Alternatives)]| {
            v.iter()
                // No-break spaces: a guillemet never starts a line.
                .map(|(k, _)| format!("«\u{a0}{k}\u{a0}»"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.channels.is_empty() {
            let named: Vec<String> = self
                .channels
                .iter()
                .map(|c| {
                    let word = match c.as_str() {
                        "telephony" => "appel",
                        "email" => "courriel",
                        "scan" => "courrier",
                        "counter" => "visite",
                        other => other,
                    };
                    format!("{word} ({c})")
                })
                .collect();
            out.push(format!("canal : {}", named.join(", ")));
        }
        if !self.ivr_choices.is_empty() {
            out.push(format!(
                "choix du serveur vocal : {}",
                self.ivr_choices.join(", ")
            ));
        }
        if !self.senders.is_empty() {
            let s: Vec<&str> = self
                .senders
                .iter()
                .map(|s| match s {
                    Sender::Email(m) | Sender::Domain(m) | Sender::Phone(m) => m.as_str(),
                })
                .collect();
            out.push(format!("expéditeur : {}", s.join(", ")));
        }
        if !self.keywords.is_empty() {
            out.push(format!("l'un des mots : {}", list(&self.keywords)));
        }
        if !self.all_keywords.is_empty() {
            out.push(format!("tous les mots : {}", list(&self.all_keywords)));
        }
        if !self.none_keywords.is_empty() {
            out.push(format!("aucun des mots : {}", list(&self.none_keywords)));
        }
        match self.has_attachments {
            Some(true) => out.push("avec pièce jointe".into()),
            Some(false) => out.push("sans pièce jointe".into()),
            None => {}
        }
        if !self.attachment_types.is_empty() {
            out.push(format!(
                "type de pièce jointe : {}",
                self.attachment_types.join(", ")
            ));
        }
        if let Some((from, to)) = self.hours {
            out.push(format!(
                "reçu entre {} et {}",
                from.format("%H:%M"),
                to.format("%H:%M")
            ));
        }
        match self.callback {
            Some(true) => out.push("appel à rappeler".into()),
            Some(false) => out.push("pas un appel à rappeler".into()),
            None => {}
        }
        if out.is_empty() {
            out.push("toute demande".into());
        }
        out
    }
}

/// A rule set published in the studio (a row of `rules_publications`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub id: String,
    /// The publisher's token subject, and the name shown for it.
    pub author: String,
    pub author_name: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Where the rules in force come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `config/routing-rules.toml`, embedded.
    Shipped,
    /// `routing.rules_file`.
    File(PathBuf),
    /// The newest rule set published in the studio, from routing's database.
    Published(Publication),
}

/// The rules in force, and the file (or the database's newest publication)
/// they are reloaded from.
pub struct Rules {
    path: Option<PathBuf>,
    queues: HashSet<String>,
    current: RwLock<Arc<RuleSet>>,
    source: RwLock<Source>,
    /// The last file content tried (loaded or refused), to reload only on change.
    last_seen: RwLock<String>,
    /// The last publication tried (applied or refused), likewise.
    last_publication: RwLock<String>,
    last_error: RwLock<String>,
}

pub enum Reload {
    Unchanged,
    Loaded(Arc<RuleSet>),
    Refused(String),
}

/// The rules shipped with guichet, one or more for every shipped procedure:
/// in force when no rules file is configured.
pub const SHIPPED: &str = include_str!("../../../config/routing-rules.toml");

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

impl Rules {
    /// Load the file, or the shipped rules when `path` is empty (a bad file
    /// at start-up is an error naming the key).
    pub fn load(path: &str, queues: HashSet<String>) -> Result<Rules, String> {
        let path = if path.trim().is_empty() {
            None
        } else {
            Some(PathBuf::from(path))
        };
        let rules = Rules {
            source: RwLock::new(match &path {
                Some(p) => Source::File(p.clone()),
                None => Source::Shipped,
            }),
            path,
            queues,
            current: RwLock::new(Arc::new(RuleSet::default())),
            last_seen: RwLock::new(String::new()),
            last_publication: RwLock::new(String::new()),
            last_error: RwLock::new(String::new()),
        };
        if rules.path.is_none() {
            let set = RuleSet::parse(SHIPPED, &rules.queues)
                .map_err(|e| format!("the shipped rules: {e}"))?;
            *write(&rules.current) = Arc::new(set);
            return Ok(rules);
        }
        if let Reload::Refused(e) = rules.reload() {
            return Err(e);
        }
        Ok(rules)
    }

    pub fn current(&self) -> Arc<RuleSet> {
        read(&self.current).clone()
    }

    pub fn source(&self) -> Source {
        read(&self.source).clone()
    }

    /// The rules file, when one is configured.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The configured queues rules may name.
    pub fn queues(&self) -> &HashSet<String> {
        &self.queues
    }

    pub fn last_error(&self) -> String {
        read(&self.last_error).clone()
    }

    /// The id of the last publication applied or refused.
    pub fn last_publication(&self) -> String {
        read(&self.last_publication).clone()
    }

    /// Re-read the file; apply it if it changed and validates.
    pub fn reload(&self) -> Reload {
        let Some(path) = &self.path else {
            return Reload::Unchanged;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("cannot read {}: {e}", path.display());
                return self.refuse(msg, String::new());
            }
        };
        if *read(&self.last_seen) == text {
            return Reload::Unchanged;
        }
        match RuleSet::parse(&text, &self.queues) {
            Ok(set) => {
                let set = Arc::new(set);
                *write(&self.current) = set.clone();
                *write(&self.source) = Source::File(path.clone());
                *write(&self.last_seen) = text;
                write(&self.last_error).clear();
                Reload::Loaded(set)
            }
            Err(e) => self.refuse(format!("{}: {e}", path.display()), text),
        }
    }

    /// Put a published rule set in force (once per publication): a text
    /// this replica does not accept (its queues differ) is refused, and the
    /// rules in force stay.
    pub fn apply_published(&self, text: &str, publication: Publication) -> Reload {
        if *read(&self.last_publication) == publication.id {
            return Reload::Unchanged;
        }
        *write(&self.last_publication) = publication.id.clone();
        match RuleSet::parse(text, &self.queues) {
            Ok(set) => {
                let set = Arc::new(set);
                *write(&self.current) = set.clone();
                *write(&self.source) = Source::Published(publication);
                write(&self.last_error).clear();
                Reload::Loaded(set)
            }
            Err(e) => {
                let msg = format!("published rules {}: {e}", publication.id);
                *write(&self.last_error) = msg.clone();
                Reload::Refused(msg)
            }
        }
    }

    fn refuse(&self, msg: String, text: String) -> Reload {
        let mut seen = write(&self.last_seen);
        let mut err = write(&self.last_error);
        if *seen == text && *err == msg {
            return Reload::Unchanged;
        }
        *seen = text;
        *err = msg.clone();
        Reload::Refused(msg)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use guichet_proto::intake::v1::{Channel, CitizenHint, TelephonyDetails};

    fn calendar() -> Calendar {
        let wd: Vec<String> = vec!["08:30-17:30".into()];
        Calendar::new([&wd, &wd, &wd, &wd, &wd, &wd, &wd], &[], false).unwrap()
    }

    const RULES: &str = r#"
[[rule]]
id = "etat-civil"
process = "acte-etat-civil"
priority = 5
skills = ["etat-civil"]
queue = "etat-civil"
sla = "2d"
when = { keywords = ["acte de naissance", "état civil", "mariage"] }

[[rule]]
id = "passeport-telephone"
process = "passeport"
priority = 10
when = { channels = ["telephony"], ivr_choices = ["1"] }

[[rule]]
id = "ants"
process = "passeport"
when = { senders = ["@ants.gouv.fr"], has_attachments = true }

[[rule]]
id = "rappel"
process = "demande-information"
sla = "2h"
when = { channels = ["telephony"], callback = true }
"#;

    fn queues() -> HashSet<String> {
        ["accueil", "etat-civil"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn email(subject: &str, body: &str) -> IntakeEvent {
        IntakeEvent {
            channel: Channel::Email as i32,
            subject: subject.into(),
            body: body.into(),
            ..Default::default()
        }
    }

    #[test]
    fn keywords_match_without_accents_or_case_on_word_boundaries() {
        let set = RuleSet::parse(RULES, &queues()).unwrap();
        let cal = calendar();
        for text in [
            "Demande d'ACTE DE NAISSANCE",
            "service de l'Etat-Civil",
            "ÉTAT CIVIL",
        ] {
            let (rule, _) = set.classify(&email(text, ""), &cal);
            assert_eq!(rule.map(|r| r.id.as_str()), Some("etat-civil"), "{text}");
        }
        for text in ["étatcivil", "l'état", "naissance", "mari"] {
            let (rule, _) = set.classify(&email("", text), &cal);
            assert!(rule.is_none(), "{text} must not match");
        }
    }

    #[test]
    fn keywords_tolerate_plurals_typos_and_ocr_noise() {
        let set = RuleSet::parse(RULES, &queues()).unwrap();
        let cal = calendar();
        for text in [
            "trois actes de naissance",
            "MARIAGES",
            "un acte de naisance",
            "Objet : acte de nais-\nsance de mon fils",
            "Ã©tat civil",
            "ETAT C1VIL",
        ] {
            let (rule, _) = set.classify(&email("", text), &cal);
            assert_eq!(rule.map(|r| r.id.as_str()), Some("etat-civil"), "{text}");
        }
        // Short words and far-off spellings are not stretched.
        for text in ["un acte de connaissance", "passe", "pasport"] {
            let (rule, _) = set.classify(&email("", text), &cal);
            assert!(rule.is_none(), "{text} must not match");
        }
    }

    #[test]
    fn none_keywords_keep_a_rule_off_other_requests() {
        let rules = r#"
[[rule]]
id = "creche-contrat"
process = "creche-modification-contrat"
when = { all_keywords = ["crèche", "contrat"] }

[[rule]]
id = "creche"
process = "creche-inscription"
when = { keywords = ["crèche"], none_keywords = ["contrat"] }
"#;
        let set = RuleSet::parse(rules, &queues()).unwrap();
        let cal = calendar();
        let (rule, _) = set.classify(&email("", "une place en crèche"), &cal);
        assert_eq!(rule.unwrap().id, "creche");
        let (rule, _) = set.classify(&email("", "changer les jours du contrat"), &cal);
        assert!(rule.is_none());
        let (rule, evals) = set.classify(&email("Crèche", "modifier mon contrat de crèche"), &cal);
        assert_eq!(rule.unwrap().id, "creche-contrat");
        let (_, evals2) = set.classify(&email("", "contrats de crèche"), &cal);
        assert!(evals.len() == 1 && evals2.len() == 1);
    }

    #[test]
    fn the_shipped_rules_are_in_force_without_a_file() {
        let queues = ["accueil", "etat-civil", "urbanisme"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rules = Rules::load("", queues).unwrap();
        assert!(!rules.current().rules.is_empty());
        assert_eq!(
            rules.current().version,
            RuleSet::parse(
                SHIPPED,
                &["accueil", "etat-civil", "urbanisme"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            )
            .unwrap()
            .version
        );
    }

    #[test]
    fn channel_ivr_sender_and_attachments_are_conditions() {
        let set = RuleSet::parse(RULES, &queues()).unwrap();
        let cal = calendar();
        let call = IntakeEvent {
            channel: Channel::Telephony as i32,
            details: Some(intake_event::Details::Telephony(TelephonyDetails {
                ivr_choice: "1".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let (rule, evals) = set.classify(&call, &cal);
        assert_eq!(rule.unwrap().id, "passeport-telephone");
        assert!(!evals[0].matched);
        let missed = IntakeEvent {
            channel: Channel::Telephony as i32,
            details: Some(intake_event::Details::Telephony(TelephonyDetails {
                missed: true,
                ..Default::default()
            })),
            ..Default::default()
        };
        let (rule, _) = set.classify(&missed, &cal);
        assert_eq!(rule.unwrap().sla, Some(SlaTarget::Minutes(120)));
        let mut mail = email("Dossier", "");
        mail.citizen = Some(CitizenHint {
            emails: vec!["Agent@ANTS.gouv.fr".into()],
            ..Default::default()
        });
        assert!(set.classify(&mail, &cal).0.is_none(), "no attachment");
        mail.attachments.push(Default::default());
        mail.attachments[0].media_type = "application/pdf".into();
        assert_eq!(set.classify(&mail, &cal).0.unwrap().id, "ants");
    }

    #[test]
    fn the_example_rules_file_is_valid() {
        let text = include_str!("../../../config/routing-rules.toml");
        let queues = ["accueil", "etat-civil", "urbanisme"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let set = RuleSet::parse(text, &queues).unwrap();
        assert!(set.rules.len() >= 5);
    }

    #[test]
    fn a_refusal_names_its_line_and_column_in_english_and_french() {
        // The queue of the first rule is on line 7 of RULES.
        let bad = RULES.replace("queue = \"etat-civil\"", "queue = \"nulle-part\"");
        let err = RuleSet::check(&bad, &queues()).unwrap_err();
        assert_eq!((err.line, err.column), (7, 9), "{err}");
        assert!(
            err.to_string()
                .starts_with("line 7, column 9: rule[0] (etat-civil)")
        );
        assert!(
            err.message_fr
                .contains("la file « nulle-part » n'existe pas"),
            "{}",
            err.message_fr
        );
        // A condition's refusal points at the rule's conditions.
        let bad = RULES.replace(
            "channels = [\"telephony\"], ivr",
            "channels = [\"fax\"], ivr",
        );
        let err = RuleSet::check(&bad, &queues()).unwrap_err();
        assert_eq!(err.line, 15, "{err}");
        assert!(err.message_fr.contains("canal « fax » inconnu"));
        // TOML syntax, and a field that does not exist.
        let err = RuleSet::check("[[rule]]\nid = \"a\"\nprocess = \n", &queues()).unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(
            err.message_fr
                .starts_with("le texte n'est pas du TOML valide")
        );
        let err = RuleSet::check(
            "[[rule]]\nid = \"a\"\nprocess = \"b\"\nquue = \"accueil\"\n",
            &queues(),
        )
        .unwrap_err();
        assert!(err.line >= 1, "{err}");
        assert!(
            err.message_fr.contains("champ inconnu « quue »"),
            "{}",
            err.message_fr
        );
        let err = RuleSet::check(
            "[[rule]]\nid = \"a\"\nprocess = \"b\"\npriority = \"haute\"\n",
            &queues(),
        )
        .unwrap_err();
        assert_eq!(err.line, 4, "{err}");
        assert_eq!(
            err.message_fr,
            "valeur inattendue : un nombre entier est attendu ici"
        );
        let err = RuleSet::check("[[rule]]\nid = \"a\"\n", &queues()).unwrap_err();
        assert!(
            err.message_fr.contains("« process » absent"),
            "{}",
            err.message_fr
        );
    }

    #[test]
    fn the_table_of_rules_says_what_each_matches_in_french() {
        let set = RuleSet::parse(RULES, &queues()).unwrap();
        assert_eq!(set.text, RULES);
        assert_eq!(set.rules[0].sla_text, "2d");
        let c = set.rules[0].conditions_fr();
        assert_eq!(
            c,
            vec![
                "l'un des mots : «\u{a0}acte de naissance\u{a0}», «\u{a0}état civil\u{a0}», «\u{a0}mariage\u{a0}»"
            ]
        );
        let c = set.rules[1].conditions_fr();
        assert!(
            c.contains(&"canal : appel (telephony)".to_string()),
            "{c:?}"
        );
        assert!(
            c.contains(&"choix du serveur vocal : 1".to_string()),
            "{c:?}"
        );
        assert!(
            set.rules[2]
                .conditions_fr()
                .contains(&"avec pièce jointe".to_string())
        );
    }

    #[test]
    fn a_publication_is_put_in_force_once_and_a_refused_one_keeps_the_rules() {
        let rules = Rules::load("", queues()).unwrap();
        let shipped = rules.current().version.clone();
        let publication = |id: &str| Publication {
            id: id.into(),
            author: "po-1".into(),
            author_name: "Paule".into(),
            reason: "essai".into(),
            at: Utc::now(),
        };
        assert!(matches!(
            rules.apply_published(RULES, publication("p1")),
            Reload::Loaded(_)
        ));
        assert_eq!(rules.current().text, RULES);
        assert!(matches!(rules.source(), Source::Published(p) if p.id == "p1"));
        assert!(matches!(
            rules.apply_published(RULES, publication("p1")),
            Reload::Unchanged
        ));
        let bad = RULES.replace("queue = \"etat-civil\"", "queue = \"ailleurs\"");
        assert!(matches!(
            rules.apply_published(&bad, publication("p2")),
            Reload::Refused(_)
        ));
        assert!(rules.last_error().contains("p2"));
        assert_eq!(rules.current().text, RULES, "the previous rules stay");
        assert_ne!(rules.current().version, shipped);
    }

    #[test]
    fn an_invalid_file_is_refused_with_the_reason() {
        let bad = RULES.replace("queue = \"etat-civil\"", "queue = \"nulle-part\"");
        let err = RuleSet::parse(&bad, &queues()).unwrap_err();
        assert!(err.contains("nulle-part"), "{err}");
        assert!(RuleSet::parse("[[rule]]\nid = 3", &queues()).is_err());
    }
}
