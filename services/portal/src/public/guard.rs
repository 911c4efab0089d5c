//! What protects the citizens' pages from a rush of bots and from abuse,
//! without an image CAPTCHA (inaccessible) nor JavaScript (the pages work
//! without it):
//!
//! * a **visitor session**: a signed cookie (random id, issue time,
//!   HMAC-SHA256 under the portal's key) given on the first page; every
//!   form carries a token bound to that session, to the form's purpose and
//!   to the time it was served (CSRF, and a form sent back faster than a
//!   person types is a bot's);
//! * **per-session limits**: booking attempts and bookings made;
//! * **per-address limits**: pages per minute and forms per hour, the
//!   address being the peer's or, from the town's reverse proxies only, the
//!   forwarded one.
//!
//! Counters live in this process's memory, like a reverse proxy's rate
//! limits: with several replicas each counts its own share.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::config::PublicConfig;

/// The visitor session cookie.
pub const VISITOR_COOKIE: &str = "guichet_visiteur";

/// A form token is valid this long after the page was served.
const FORM_TTL_SECS: i64 = 2 * 3600;

/// Counters are forgotten when the maps grow past this (a flood of
/// addresses must not grow memory without bound).
const MAX_ENTRIES: usize = 100_000;

/// What a form is for: a token for one purpose is refused for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Book,
    WaitingList,
    Manage,
    Follow,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Book => "book",
            Purpose::WaitingList => "waitlist",
            Purpose::Manage => "manage",
            Purpose::Follow => "follow",
        }
    }
}

/// Why a request or a form is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many pages or forms from one address.
    TooMany,
    /// The form's token is missing, forged, for another session or stale.
    BadForm,
    /// The form came back faster than a person fills it.
    TooFast,
    /// The session used up its booking attempts or bookings.
    SessionSpent,
}

#[derive(Default)]
struct AddressCount {
    minute: i64,
    pages: u32,
    hour: i64,
    forms: u32,
}

#[derive(Default)]
struct SessionCount {
    attempts: u32,
    bookings: u32,
    seen: i64,
}

/// The visitor sessions, form tokens and limits of one process.
#[derive(Clone)]
pub struct Guard {
    key: Arc<Vec<u8>>,
    limits: Arc<PublicConfig>,
    trusted: Arc<Vec<IpAddr>>,
    addresses: Arc<Mutex<HashMap<IpAddr, AddressCount>>>,
    sessions: Arc<Mutex<HashMap<String, SessionCount>>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Guard {
    pub fn new(config: &PublicConfig) -> Guard {
        let secret = config.secret.expose_secret();
        let key = if secret.is_empty() {
            use rand::Rng;
            let k: [u8; 32] = rand::rng().random();
            k.to_vec()
        } else {
            secret.as_bytes().to_vec()
        };
        Guard {
            key: Arc::new(key),
            limits: Arc::new(config.clone()),
            trusted: Arc::new(
                config
                    .trusted_proxies
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect(),
            ),
            addresses: Arc::default(),
            sessions: Arc::default(),
        }
    }

    fn mac(&self, parts: &[&str]) -> String {
        // HMAC accepts a key of any length.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        for p in parts {
            m.update(p.as_bytes());
            m.update(b"\x1f");
        }
        b64(&m.finalize().into_bytes())
    }

    /// The client's address for the limits.
    pub fn client(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        guichet_platform::net::client_ip(peer, headers, &self.trusted)
    }

    /// A new visitor session: the cookie's value.
    pub fn new_visitor(&self, now: DateTime<Utc>) -> String {
        let id = crate::session::random_token();
        let issued = now.timestamp().to_string();
        let mac = self.mac(&["visitor", &id, &issued]);
        format!("{id}.{issued}.{mac}")
    }

    /// The session id of a visitor cookie, when it is one of ours.
    pub fn visitor(&self, cookie: &str) -> Option<String> {
        let mut it = cookie.split('.');
        let (id, issued, mac) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || id.is_empty() {
            return None;
        }
        let want = self.mac(&["visitor", id, issued]);
        crate::session::same(&want, mac).then(|| id.to_owned())
    }

    /// The token of a form for `purpose`, served now to `visitor`.
    pub fn form_token(&self, visitor: &str, purpose: Purpose, now: DateTime<Utc>) -> String {
        let issued = now.timestamp().to_string();
        let mac = self.mac(&["form", visitor, purpose.as_str(), &issued]);
        format!("{issued}.{mac}")
    }

    /// Check a form's token: ours, for this visitor and purpose, not stale,
    /// and (for a booking) not sent back faster than a person would.
    pub fn check_form(
        &self,
        visitor: Option<&str>,
        token: &str,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let visitor = visitor.ok_or(Refusal::BadForm)?;
        let (issued, mac) = token.split_once('.').ok_or(Refusal::BadForm)?;
        let want = self.mac(&["form", visitor, purpose.as_str(), issued]);
        if !crate::session::same(&want, mac) {
            return Err(Refusal::BadForm);
        }
        let issued: i64 = issued.parse().map_err(|_| Refusal::BadForm)?;
        let age = now.timestamp() - issued;
        if !(0..=FORM_TTL_SECS).contains(&age) {
            return Err(Refusal::BadForm);
        }
        let min = i64::from(self.limits.min_form_secs);
        if matches!(purpose, Purpose::Book | Purpose::WaitingList) && age < min {
            return Err(Refusal::TooFast);
        }
        Ok(())
    }

    /// Count a page (and, for a form, a form) from `ip`; refused past the
    /// address limits.
    pub fn hit(&self, ip: IpAddr, form: bool, now: DateTime<Utc>) -> Result<(), Refusal> {
        let Ok(mut map) = self.addresses.lock() else {
            return Ok(());
        };
        let minute = now.timestamp() / 60;
        let hour = now.timestamp() / 3600;
        if map.len() > MAX_ENTRIES {
            map.retain(|_, c| c.hour == hour);
        }
        let c = map.entry(ip).or_default();
        if c.minute != minute {
            c.minute = minute;
            c.pages = 0;
        }
        if c.hour != hour {
            c.hour = hour;
            c.forms = 0;
        }
        c.pages += 1;
        if c.pages > self.limits.requests_per_minute {
            return Err(Refusal::TooMany);
        }
        if form {
            c.forms += 1;
            if c.forms > self.limits.forms_per_hour {
                return Err(Refusal::TooMany);
            }
        }
        Ok(())
    }

    /// Count a booking attempt of `visitor`; refused once the session has
    /// used its attempts or made its bookings.
    pub fn attempt(&self, visitor: &str, now: DateTime<Utc>) -> Result<(), Refusal> {
        let Ok(mut map) = self.sessions.lock() else {
            return Ok(());
        };
        if map.len() > MAX_ENTRIES {
            let day_ago = now.timestamp() - 86_400;
            map.retain(|_, c| c.seen > day_ago);
        }
        let c = map.entry(visitor.to_owned()).or_default();
        c.seen = now.timestamp();
        if c.attempts >= self.limits.attempts_per_session
            || c.bookings >= self.limits.bookings_per_session
        {
            return Err(Refusal::SessionSpent);
        }
        c.attempts += 1;
        Ok(())
    }

    /// A booking made by `visitor`.
    pub fn booked(&self, visitor: &str) {
        if let Ok(mut map) = self.sessions.lock() {
            map.entry(visitor.to_owned()).or_default().bookings += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min_form_secs: u32) -> PublicConfig {
        PublicConfig {
            http_addr: "127.0.0.1:0".into(),
            public_url: String::new(),
            service_subject: "portail-citoyen".into(),
            secret: secrecy::SecretString::from("0123456789abcdef0123456789abcdef"),
            trusted_proxies: vec!["10.0.0.1".into()],
            requests_per_minute: 3,
            forms_per_hour: 2,
            attempts_per_session: 2,
            bookings_per_session: 1,
            min_form_secs,
            next_slots: 6,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_visitor_cookie_is_ours_only_when_its_mac_holds() {
        let g = Guard::new(&config(0));
        let cookie = g.new_visitor(at(0));
        let id = g.visitor(&cookie).expect("our cookie");
        assert!(!id.is_empty());
        let forged = format!("{}x", cookie);
        assert_eq!(g.visitor(&forged), None);
        assert_eq!(g.visitor("abc.1.def"), None);
        // Another process with another key does not accept it.
        let mut other = config(0);
        other.secret = secrecy::SecretString::from("another key, 32 characters long!!");
        assert_eq!(Guard::new(&other).visitor(&cookie), None);
    }

    #[test]
    fn a_form_token_is_bound_to_its_visitor_purpose_and_time() {
        let g = Guard::new(&config(3));
        let t = g.form_token("v1", Purpose::Book, at(0));
        assert_eq!(g.check_form(Some("v1"), &t, Purpose::Book, at(5)), Ok(()));
        assert_eq!(
            g.check_form(Some("v1"), &t, Purpose::Book, at(1)),
            Err(Refusal::TooFast)
        );
        assert_eq!(
            g.check_form(Some("v2"), &t, Purpose::Book, at(5)),
            Err(Refusal::BadForm)
        );
        assert_eq!(
            g.check_form(Some("v1"), &t, Purpose::Manage, at(5)),
            Err(Refusal::BadForm)
        );
        assert_eq!(
            g.check_form(None, &t, Purpose::Book, at(5)),
            Err(Refusal::BadForm)
        );
        assert_eq!(
            g.check_form(Some("v1"), &t, Purpose::Book, at(FORM_TTL_SECS + 1)),
            Err(Refusal::BadForm)
        );
        // Managing a booking has no minimum time.
        let m = g.form_token("v1", Purpose::Manage, at(0));
        assert_eq!(g.check_form(Some("v1"), &m, Purpose::Manage, at(0)), Ok(()));
    }

    #[test]
    fn addresses_and_sessions_are_limited() {
        let g = Guard::new(&config(0));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(g.hit(ip, true, at(0)), Ok(()));
        assert_eq!(g.hit(ip, true, at(1)), Ok(()));
        assert_eq!(g.hit(ip, false, at(2)), Ok(()));
        assert_eq!(g.hit(ip, false, at(3)), Err(Refusal::TooMany));
        // The next minute pages are allowed again, forms not before the hour.
        assert_eq!(g.hit(ip, false, at(61)), Ok(()));
        assert_eq!(g.hit(ip, true, at(62)), Err(Refusal::TooMany));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(g.hit(other, true, at(3)), Ok(()));

        assert_eq!(g.attempt("v1", at(0)), Ok(()));
        g.booked("v1");
        assert_eq!(g.attempt("v1", at(1)), Err(Refusal::SessionSpent));
        assert_eq!(g.attempt("v2", at(1)), Ok(()));
        assert_eq!(g.attempt("v2", at(1)), Ok(()));
        assert_eq!(g.attempt("v2", at(1)), Err(Refusal::SessionSpent));
    }

    #[test]
    fn a_forwarded_address_counts_only_from_a_trusted_proxy() {
        let g = Guard::new(&config(0));
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.7".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(g.client(proxy, &h).to_string(), "198.51.100.7");
        assert_eq!(g.client(other, &h), other);
    }
}
