//! Whether a message's sender is who it claims to be, as the town's relay
//! found (RFC 8601 `Authentication-Results`).
//!
//! guichet does not query DNS itself: the town's mail server (Postfix with
//! OpenDKIM/OpenDMARC, rspamd, Exchange Online…) checks SPF, DKIM and DMARC
//! and writes its findings in an `Authentication-Results` header under its
//! own name (the authserv-id). Only headers under a name listed in
//! `email.trusted_authserv_ids` count: anyone can write such a header into
//! the message they send, and a relay removes or overrides those under its
//! own name. A sender is verified when a trusted header says `dmarc=pass`,
//! or `dkim=pass` for the `From` domain (or a parent of it), or `spf=pass`
//! for an envelope domain aligned with it.

/// Messages per sender over a sliding window, to tell a burst (a robot, a
/// loop, a flood) from a person's few messages. Kept per process.
#[derive(Debug, Default)]
pub struct Bursts {
    seen: std::sync::Mutex<
        std::collections::HashMap<
            String,
            std::collections::VecDeque<chrono::DateTime<chrono::Utc>>,
        >,
    >,
}

impl Bursts {
    /// Count a message from `sender` at `now`; whether it is beyond `max`
    /// messages within `window`.
    pub fn record(
        &self,
        sender: &str,
        now: chrono::DateTime<chrono::Utc>,
        max: u32,
        window: chrono::Duration,
    ) -> bool {
        if sender.is_empty() {
            return false;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Forget senders whose window has passed (bounded memory).
        if seen.len() > 10_000 {
            seen.retain(|_, v| v.back().is_some_and(|t| now - *t < window));
        }
        let times = seen.entry(sender.to_ascii_lowercase()).or_default();
        while times.front().is_some_and(|t| now - *t >= window) {
            times.pop_front();
        }
        times.push_back(now);
        if times.len() > max as usize + 1 {
            times.pop_front();
        }
        times.len() > max as usize
    }
}

/// What the relay's checks said of the sender.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderCheck {
    pub verified: bool,
    /// The trusted results, e.g. `dmarc=pass`, `spf=fail dkim=none`; empty
    /// when no trusted relay checked the message.
    pub results: String,
    /// The `From` domain is one of the town's own, and the sender is not
    /// verified: mail claiming to come from the town hall, from outside.
    pub claims_town: bool,
}

/// One `method=result` of a header, with its `ptype.property=value` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    method: String,
    result: String,
    props: Vec<(String, String)>,
}

/// The authserv-id and findings of one `Authentication-Results` value;
/// `None` when it does not parse.
fn parse(value: &str) -> Option<(String, Vec<Finding>)> {
    let value = strip_comments(value);
    let mut parts = value.split(';');
    let id = parts
        .next()?
        .split_whitespace()
        .next()?
        .to_ascii_lowercase();
    if id.is_empty() {
        return None;
    }
    let mut findings = Vec::new();
    for part in parts {
        let mut words = part.split_whitespace();
        let Some(first) = words.next() else { continue };
        let Some((method, result)) = first.split_once('=') else {
            continue;
        };
        let mut props = Vec::new();
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                props.push((
                    k.to_ascii_lowercase(),
                    v.trim_matches('"').to_ascii_lowercase(),
                ));
            }
        }
        findings.push(Finding {
            method: method.to_ascii_lowercase(),
            result: result.to_ascii_lowercase(),
            props,
        });
    }
    Some((id, findings))
}

/// RFC 5322 comments `( … )`, nested, removed.
fn strip_comments(s: &str) -> String {
    let mut depth = 0usize;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// `domain` is `base` or one of its subdomains (relaxed alignment).
fn aligned(domain: &str, base: &str) -> bool {
    domain.contains('.')
        && base.contains('.')
        && (domain == base
            || domain.ends_with(&format!(".{base}"))
            || base.ends_with(&format!(".{domain}")))
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or(address)
        .trim()
        .trim_end_matches('>')
        .to_ascii_lowercase()
}

/// The check of a message from `from_address` with these
/// `Authentication-Results` values, trusting `trusted` authserv-ids;
/// `town_domains` are the town's own domains.
pub fn check(
    from_address: &str,
    headers: &[String],
    trusted: &[String],
    town_domains: &[String],
) -> SenderCheck {
    let from = domain_of(from_address);
    let mut results = Vec::new();
    let mut verified = false;
    for h in headers {
        let Some((id, findings)) = parse(h) else {
            continue;
        };
        if !trusted.iter().any(|t| t.eq_ignore_ascii_case(&id)) {
            continue;
        }
        for f in findings {
            if !matches!(f.method.as_str(), "spf" | "dkim" | "dmarc") {
                continue;
            }
            results.push(format!("{}={}", f.method, f.result));
            if f.result != "pass" {
                continue;
            }
            let prop = |name: &str| {
                f.props
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| domain_of(v))
                    .unwrap_or_default()
            };
            verified |= match f.method.as_str() {
                "dmarc" => {
                    let d = prop("header.from");
                    d.is_empty() || aligned(&d, &from)
                }
                "dkim" => aligned(&prop("header.d"), &from) || aligned(&prop("header.i"), &from),
                "spf" => aligned(&prop("smtp.mailfrom"), &from),
                _ => false,
            };
        }
    }
    let claims_town = !verified
        && town_domains
            .iter()
            .any(|t| aligned(&from, &t.to_ascii_lowercase()));
    SenderCheck {
        verified,
        results: results.join(" "),
        claims_town,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Vec<String> {
        vec!["mx.ville.fr".into()]
    }

    fn town() -> Vec<String> {
        vec!["ville.fr".into()]
    }

    #[test]
    fn a_trusted_dmarc_pass_verifies_the_sender() {
        let h = vec![
            "mx.ville.fr; spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=exemple.fr; dkim=pass header.d=exemple.fr header.s=s1; dmarc=pass (p=none) header.from=exemple.fr".to_owned(),
        ];
        let c = check("jean.dupont@exemple.fr", &h, &trusted(), &town());
        assert!(c.verified);
        assert_eq!(c.results, "spf=pass dkim=pass dmarc=pass");
        assert!(!c.claims_town);
    }

    #[test]
    fn aligned_dkim_or_spf_alone_verify_and_unaligned_ones_do_not() {
        let dkim = vec!["MX.ville.fr; dkim=pass header.d=mail.exemple.fr".to_owned()];
        assert!(check("a@mail.exemple.fr", &dkim, &trusted(), &town()).verified);
        assert!(check("a@exemple.fr", &dkim, &trusted(), &town()).verified);
        let other = vec!["mx.ville.fr; dkim=pass header.d=spammer.example; spf=pass smtp.mailfrom=bounce@spammer.example".to_owned()];
        let c = check("maire@exemple.fr", &other, &trusted(), &town());
        assert!(!c.verified, "{c:?}");
        let spf = vec!["mx.ville.fr; spf=pass smtp.mailfrom=jean@exemple.fr".to_owned()];
        assert!(check("jean@exemple.fr", &spf, &trusted(), &town()).verified);
    }

    #[test]
    fn headers_under_another_name_are_the_senders_own_words() {
        let forged = vec!["mx.exemple.fr; dmarc=pass header.from=exemple.fr".to_owned()];
        let c = check("jean@exemple.fr", &forged, &trusted(), &town());
        assert!(!c.verified);
        assert_eq!(c.results, "");
        // No trusted relay configured: nobody is verified.
        assert!(!check("jean@exemple.fr", &forged, &[], &town()).verified);
    }

    #[test]
    fn failures_are_told_and_the_towns_own_domain_from_outside_is_flagged() {
        let h = vec!["mx.ville.fr; spf=fail smtp.mailfrom=ville.fr; dkim=none; dmarc=fail header.from=ville.fr".to_owned()];
        let c = check("Le Maire <maire@ville.fr>", &h, &trusted(), &town());
        assert!(!c.verified);
        assert_eq!(c.results, "spf=fail dkim=none dmarc=fail");
        assert!(c.claims_town);
        // The town's own mail, verified by its relay, is not flagged.
        let ok = vec!["mx.ville.fr; dmarc=pass header.from=ville.fr".to_owned()];
        assert!(!check("accueil@ville.fr", &ok, &trusted(), &town()).claims_town);
        assert!(check("x@services.ville.fr", &[], &trusted(), &town()).claims_town);
    }

    #[test]
    fn a_burst_is_what_comes_beyond_the_bound_within_the_window() {
        let b = Bursts::default();
        let t0 = chrono::Utc::now();
        let w = chrono::Duration::minutes(10);
        let flags: Vec<bool> = (0..8)
            .map(|i| b.record("Robot@Exemple.fr", t0 + chrono::Duration::seconds(i), 5, w))
            .collect();
        assert_eq!(flags, [false, false, false, false, false, true, true, true]);
        // Another sender is not part of it; the same one, later, is calm again.
        assert!(!b.record("jean@exemple.fr", t0, 5, w));
        assert!(!b.record("robot@exemple.fr", t0 + chrono::Duration::minutes(30), 5, w));
    }

    #[test]
    fn garbage_never_panics_nor_verifies() {
        for h in [
            "",
            ";;;",
            "=",
            "(((",
            "mx.ville.fr",
            "mx.ville.fr; dmarc",
            "mx.ville.fr; =pass",
        ] {
            assert!(
                !check("a@b.fr", &[h.to_owned()], &trusted(), &town()).verified,
                "{h}"
            );
        }
    }
}
