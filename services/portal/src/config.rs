//! The `[portal]` configuration section.

use guichet_platform::config::{ConfigError, validate_database_url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The portal's own tables (sessions, local accounts, preferences).
    pub database_url: String,
    /// Where the pages are served.
    pub http_addr: String,
    /// The address agents type (`https://guichet.ville.fr`), used for the
    /// OIDC redirect; empty: `http://<http_addr>`.
    pub public_url: String,
    /// gRPC URLs of the roles the portal calls (set to the local port when
    /// they run in the same process).
    pub routing_url: String,
    pub dossier_url: String,
    pub counter_url: String,
    pub appointment_url: String,
    /// The indicators role (the supervisors' dashboard).
    #[serde(default = "default_indicators_url")]
    pub indicators_url: String,
    /// The telephony role (screen pop, the PBX extension mapping).
    #[serde(default = "default_indicators_url")]
    pub telephony_url: String,
    /// The signature role (a dossier's signature requests).
    #[serde(default = "default_indicators_url")]
    pub signature_url: String,
    /// The email role (a dossier's thread, the agents' answers).
    #[serde(default = "default_indicators_url")]
    pub email_url: String,
    /// The scanned-mail role (the mail room).
    #[serde(default = "default_indicators_url")]
    pub scan_url: String,
    /// The notification role (the process studio's message wordings).
    #[serde(default = "default_indicators_url")]
    pub notification_url: String,
    /// A session unused this long ends (the agent logs in again).
    pub session_idle_minutes: u32,
    /// A session ends this long after login, used or not.
    pub session_max_hours: u32,
    /// `Secure` on the session cookie (behind HTTPS).
    pub secure_cookies: bool,
    /// Lifetime of the tokens the portal mints for a local account's calls.
    pub token_ttl_secs: u32,
    /// Origins allowed to frame the pages (CSP `frame-ancestors`); empty:
    /// none.
    #[serde(default)]
    pub frame_ancestors: Vec<String>,
    /// Whether local accounts may log in (towns without a provider).
    pub local_accounts: bool,
    pub oidc: OidcConfig,
    /// The citizens' pages (booking, my appointment, follow my request,
    /// my ticket), on a listener of their own.
    pub public: PublicConfig,
}

/// `[portal.public]`: the citizens' pages. They hold no agent session:
/// the portal calls the roles as `citizen_pages` for them, and every limit that
/// protects a rush or a bot is here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicConfig {
    /// Where the citizens' pages are served; empty: not served.
    pub http_addr: String,
    /// The address citizens reach them at (`https://rendez-vous.ville.fr`);
    /// empty: `http://<http_addr>`.
    pub public_url: String,
    /// The service identity the portal calls the roles with for citizens.
    pub service_subject: String,
    /// Keys the visitor cookie and the forms' tokens (HMAC); at least 32
    /// characters. Empty: a random key per process (set one when several
    /// replicas serve the pages, so a form served by one is accepted by
    /// another).
    pub secret: SecretString,
    /// Proxies whose `X-Forwarded-For` is believed (the town's reverse
    /// proxy), for the per-address limits.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Requests per minute from one address (every page), then 429.
    pub requests_per_minute: u32,
    /// Forms sent per hour from one address (bookings, cancellations,
    /// searches), then 429.
    pub forms_per_hour: u32,
    /// Booking attempts (a slot taken, a form refused) per visitor
    /// session, then the session must start again.
    pub attempts_per_session: u32,
    /// Bookings made per visitor session.
    pub bookings_per_session: u32,
    /// A booking form sent back sooner than this after it was served is
    /// refused as a bot's (a person reads and types); 0: no check.
    pub min_form_secs: u32,
    /// Free slots shown first ("les prochains créneaux").
    pub next_slots: u32,
}

/// The town's OpenID Connect provider (Keycloak, Entra ID, Authentik,
/// ProConnect…); empty `issuer_url`: local accounts only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Scopes asked besides `openid`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Dotted path of the roles claim in the ID token (`realm_access.roles`).
    pub roles_claim: String,
    /// Dotted path of the groups claim.
    pub groups_claim: String,
    /// Claim holding the name shown in the header.
    pub name_claim: String,
    /// The login button's label.
    pub label: String,
}

impl OidcConfig {
    pub fn enabled(&self) -> bool {
        !self.issuer_url.trim().is_empty()
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("portal.database_url", &self.database_url)?;
        guichet_platform::config::parse_addr("portal.http_addr", &self.http_addr)?;
        for (key, url) in [
            ("portal.routing_url", &self.routing_url),
            ("portal.dossier_url", &self.dossier_url),
            ("portal.counter_url", &self.counter_url),
            ("portal.appointment_url", &self.appointment_url),
            ("portal.indicators_url", &self.indicators_url),
            ("portal.telephony_url", &self.telephony_url),
            ("portal.signature_url", &self.signature_url),
            ("portal.email_url", &self.email_url),
            ("portal.scan_url", &self.scan_url),
            ("portal.notification_url", &self.notification_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    key,
                    "must be an http:// or https:// URL",
                ));
            }
        }
        let url = self.public_url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "portal.public_url",
                "must be an http:// or https:// URL, or empty",
            ));
        }
        if self.session_idle_minutes == 0 || self.session_idle_minutes > 24 * 60 {
            return Err(ConfigError::invalid(
                "portal.session_idle_minutes",
                "must be between 1 and 1440",
            ));
        }
        if self.session_max_hours == 0 || self.session_max_hours > 24 * 7 {
            return Err(ConfigError::invalid(
                "portal.session_max_hours",
                "must be between 1 and 168",
            ));
        }
        if !(30..=3600).contains(&self.token_ttl_secs) {
            return Err(ConfigError::invalid(
                "portal.token_ttl_secs",
                "must be between 30 and 3600",
            ));
        }
        for origin in &self.frame_ancestors {
            if !(origin.starts_with("https://") || origin.starts_with("http://"))
                || origin.contains([' ', ';', '\'', '"'])
            {
                return Err(ConfigError::invalid(
                    "portal.frame_ancestors",
                    format!("`{origin}` is not an origin (https://host)"),
                ));
            }
        }
        self.public.validate()?;
        if self.oidc.enabled() {
            let o = &self.oidc;
            if !(o.issuer_url.starts_with("https://") || o.issuer_url.starts_with("http://")) {
                return Err(ConfigError::invalid(
                    "portal.oidc.issuer_url",
                    "must be an http:// or https:// URL",
                ));
            }
            if o.client_id.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "portal.oidc.client_id",
                    "must be set with portal.oidc.issuer_url",
                ));
            }
            if o.client_secret.expose_secret().is_empty() {
                return Err(ConfigError::invalid(
                    "portal.oidc.client_secret",
                    "must be set with portal.oidc.issuer_url (GUICHET__PORTAL__OIDC__CLIENT_SECRET)",
                ));
            }
        } else if !self.local_accounts {
            return Err(ConfigError::invalid(
                "portal.local_accounts",
                "no way to log in: enable local accounts or set portal.oidc.issuer_url",
            ));
        }
        Ok(())
    }

    /// The base URL agents reach the portal at.
    pub fn base_url(&self, bound: std::net::SocketAddr) -> String {
        let url = self.public_url.trim().trim_end_matches('/');
        if url.is_empty() {
            format!("http://{bound}")
        } else {
            url.to_owned()
        }
    }
}

impl PublicConfig {
    pub fn enabled(&self) -> bool {
        !self.http_addr.trim().is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled() {
            guichet_platform::config::parse_addr("portal.public.http_addr", &self.http_addr)?;
        }
        let url = self.public_url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "portal.public.public_url",
                "must be an http:// or https:// URL, or empty",
            ));
        }
        if self.service_subject.trim().is_empty() {
            return Err(ConfigError::invalid(
                "portal.public.service_subject",
                "must name the portal's service identity",
            ));
        }
        let secret = self.secret.expose_secret();
        if !secret.is_empty() && secret.len() < 32 {
            return Err(ConfigError::invalid(
                "portal.public.secret",
                "must be at least 32 characters (or empty: a random key per process)",
            ));
        }
        for (i, p) in self.trusted_proxies.iter().enumerate() {
            if p.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::invalid(
                    format!("portal.public.trusted_proxies[{i}]"),
                    format!("`{p}` is not an IP address"),
                ));
            }
        }
        for (key, v) in [
            (
                "portal.public.requests_per_minute",
                self.requests_per_minute,
            ),
            ("portal.public.forms_per_hour", self.forms_per_hour),
            (
                "portal.public.attempts_per_session",
                self.attempts_per_session,
            ),
            (
                "portal.public.bookings_per_session",
                self.bookings_per_session,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if !(1..=50).contains(&self.next_slots) {
            return Err(ConfigError::invalid(
                "portal.public.next_slots",
                "must be between 1 and 50",
            ));
        }
        Ok(())
    }

    /// The base URL citizens reach the pages at.
    pub fn base_url(&self, bound: Option<std::net::SocketAddr>) -> String {
        let url = self.public_url.trim().trim_end_matches('/');
        match (url.is_empty(), bound) {
            (false, _) => url.to_owned(),
            (true, Some(a)) => format!("http://{a}"),
            (true, None) => String::new(),
        }
    }
}

fn default_indicators_url() -> String {
    "http://127.0.0.1:50051".into()
}
