//! How well a rule set sends requests to the right procedure, measured on a
//! labelled corpus of French requests (`tests/fixtures/classification/`).
//! `make bench` prints the report; a test holds the shipped rules to a floor.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use guichet_proto::intake::v1::{Channel, IntakeEvent};
use serde::Deserialize;

use crate::calendar::Calendar;
use crate::rules::RuleSet;

/// One labelled request.
#[derive(Debug, Clone, Deserialize)]
pub struct Labelled {
    pub id: String,
    /// `email`, `scan`, `counter` or `telephony`.
    pub channel: String,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub body: String,
    /// The process a good agent would choose, or the triage process.
    pub expected: String,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Deserialize)]
struct CorpusFile {
    request: Vec<Labelled>,
}

/// Parse a corpus file.
pub fn parse_corpus(text: &str) -> Result<Vec<Labelled>, String> {
    let file: CorpusFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut seen = HashSet::new();
    for r in &file.request {
        if !seen.insert(r.id.as_str()) {
            return Err(format!("request id `{}` is used twice", r.id));
        }
        if channel(&r.channel).is_none() {
            return Err(format!(
                "request `{}`: unknown channel `{}`",
                r.id, r.channel
            ));
        }
    }
    Ok(file.request)
}

fn channel(slug: &str) -> Option<Channel> {
    match slug {
        "email" => Some(Channel::Email),
        "scan" => Some(Channel::Scan),
        "counter" => Some(Channel::Counter),
        "telephony" => Some(Channel::Telephony),
        _ => None,
    }
}

/// What the rules made of one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub expected: String,
    pub got: String,
    pub rule: String,
    /// Why the winning rule matched (its reasons), for the report.
    pub why: String,
}

/// The measure of a rule set on a corpus.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub triage: String,
}

impl Report {
    pub fn total(&self) -> usize {
        self.outcomes.len()
    }

    pub fn correct(&self) -> usize {
        self.outcomes.iter().filter(|o| o.got == o.expected).count()
    }

    /// Requests sent to a procedure other than the right one (triage
    /// excluded: an agent qualifies those, nobody works a wrong dossier).
    pub fn wrong(&self) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .filter(|o| o.got != o.expected && o.got != self.triage)
            .collect()
    }

    /// Requests with a procedure that went to triage.
    pub fn missed(&self) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .filter(|o| o.got != o.expected && o.got == self.triage)
            .collect()
    }

    pub fn accuracy(&self) -> f64 {
        if self.outcomes.is_empty() {
            return 0.0;
        }
        self.correct() as f64 / self.total() as f64
    }

    /// The report as text: accuracy, per-procedure recall, the confusion
    /// table (expected → got, off-diagonal only) and every error.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "classification: {} requests, {} right ({:.1} %), {} to triage instead of a procedure, {} to a wrong procedure",
            self.total(),
            self.correct(),
            100.0 * self.accuracy(),
            self.missed().len(),
            self.wrong().len()
        );
        let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for o in &self.outcomes {
            let e = per.entry(o.expected.as_str()).or_default();
            e.0 += 1;
            if o.got == o.expected {
                e.1 += 1;
            }
        }
        let _ = writeln!(
            out,
            "\n{:<34} {:>5} {:>5} {:>7}",
            "expected", "n", "right", "recall"
        );
        for (p, (n, ok)) in &per {
            let _ = writeln!(
                out,
                "{p:<34} {n:>5} {ok:>5} {:>6.1}%",
                100.0 * *ok as f64 / *n as f64
            );
        }
        let mut confusion: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for o in self.outcomes.iter().filter(|o| o.got != o.expected) {
            *confusion
                .entry((o.expected.as_str(), o.got.as_str()))
                .or_default() += 1;
        }
        let _ = writeln!(out, "\nconfusion (expected → got, errors only):");
        for ((e, g), n) in &confusion {
            let _ = writeln!(out, "  {e:<34} → {g:<34} {n:>3}");
        }
        let _ = writeln!(out, "\nerrors:");
        for o in self.outcomes.iter().filter(|o| o.got != o.expected) {
            let _ = writeln!(
                out,
                "  {:<36} expected {:<30} got {} ({}{}{})",
                o.id,
                o.expected,
                o.got,
                if o.rule.is_empty() {
                    "no rule"
                } else {
                    &o.rule
                },
                if o.why.is_empty() { "" } else { ": " },
                o.why
            );
        }
        out
    }
}

/// Classify every request of `corpus` with `rules`; a request no rule takes
/// goes to `triage`.
pub fn evaluate(rules: &RuleSet, corpus: &[Labelled], triage: &str) -> Report {
    let calendar = office_hours();
    let outcomes = corpus
        .iter()
        .map(|r| {
            let event = IntakeEvent {
                channel: channel(&r.channel).unwrap_or(Channel::Unspecified) as i32,
                subject: r.subject.clone(),
                body: r.body.clone(),
                ..Default::default()
            };
            let (rule, evaluations) = rules.classify(&event, &calendar);
            let why = evaluations
                .iter()
                .find(|e| e.matched)
                .map(|e| e.reasons.join(", "))
                .unwrap_or_default();
            Outcome {
                why,
                id: r.id.clone(),
                expected: r.expected.clone(),
                got: rule.map_or_else(|| triage.to_owned(), |r| r.process.clone()),
                rule: rule.map(|r| r.id.clone()).unwrap_or_default(),
            }
        })
        .collect();
    Report {
        outcomes,
        triage: triage.to_owned(),
    }
}

fn office_hours() -> Calendar {
    let day: Vec<String> = vec!["08:30-17:30".into()];
    let none: Vec<String> = vec![];
    Calendar::new([&day, &day, &day, &day, &day, &none, &none], &[], false)
        .unwrap_or_else(|_| unreachable!("a fixed, valid week"))
}

/// The corpus shipped with the sources.
pub const CORPUS: &str = include_str!("../../../tests/fixtures/classification/corpus.toml");

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::rules::SHIPPED;

    fn queues() -> HashSet<String> {
        ["accueil", "etat-civil", "urbanisme"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// The shipped rules on the labelled corpus: at least 90 % to the right
    /// procedure, and when unsure, triage rather than a wrong procedure (at
    /// most 3 % wrong).
    #[test]
    fn the_shipped_rules_classify_the_corpus() {
        let corpus = parse_corpus(CORPUS).unwrap();
        assert!(corpus.len() >= 200, "a corpus of at least 200 requests");
        let rules = RuleSet::parse(SHIPPED, &queues()).unwrap();
        let report = evaluate(&rules, &corpus, "a-qualifier");
        println!("{}", report.render());
        assert!(
            report.accuracy() >= 0.90,
            "accuracy {:.1} % below the 90 % floor\n{}",
            100.0 * report.accuracy(),
            report.render()
        );
        assert!(
            report.wrong().len() * 100 <= report.total() * 3,
            "{} requests sent to a wrong procedure\n{}",
            report.wrong().len(),
            report.render()
        );
    }

    /// Every shipped procedure has a rule, and every rule names a shipped
    /// procedure.
    #[test]
    fn the_shipped_rules_cover_the_shipped_procedures() {
        let rules = RuleSet::parse(SHIPPED, &queues()).unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../processes");
        let shipped: HashSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".toml").map(str::to_owned)
            })
            .collect();
        let covered: HashSet<String> = rules.rules.iter().map(|r| r.process.clone()).collect();
        for p in &shipped {
            assert!(
                p == "a-qualifier" || covered.contains(p),
                "no shipped rule sends requests to `{p}`"
            );
        }
        for p in &covered {
            assert!(shipped.contains(p), "rule for unknown process `{p}`");
        }
    }
}
