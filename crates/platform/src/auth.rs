//! Bearer-JWT authentication and role checks for every gRPC call.
//!
//! Two kinds of tokens are accepted:
//! * HS256 tokens signed with the static key (`auth.signing_key`): guichet's
//!   own role-to-role calls, development tokens from `guichet token`, and
//!   small installations without an identity provider;
//! * tokens from the city's OIDC provider, when `auth.jwks_url` is set:
//!   verified against the provider's JWKS (refreshed in the background,
//!   and sooner when an unknown key id shows up), with the provider's issuer
//!   and the configured audience; roles and groups are read from
//!   configurable claims (e.g. Keycloak's `realm_access.roles`).
//!
//! Claims carry the subject (an agent or system id, never a name), its roles
//! and groups.
//! Health checking and reflection are mounted without the interceptor, so
//! probes and `grpcurl list` work without a token.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

/// What a caller is. People: `admin` holds every person's role,
/// `supervisor` everything an `agent` may, `process_owner` changes the
/// town's procedures and routing rules in the process studio. Devices and
/// systems outside guichet: `kiosk` (hall kiosks and waiting-room screens),
/// `citizen_pages` (the portal's public pages) and `partner` (another
/// municipal system). `service` is only for guichet's own roles calling each
/// other, with tokens scoped to the caller and the callee. What each may
/// call is [`crate::access::RULES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    Supervisor,
    Admin,
    Service,
    #[serde(rename = "process_owner")]
    ProcessOwner,
    Kiosk,
    #[serde(rename = "citizen_pages")]
    CitizenPages,
    Partner,
}

impl Role {
    /// The role's name, as in tokens and `--role` (`agent`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
            Role::Service => "service",
            Role::ProcessOwner => "process_owner",
            Role::Kiosk => "kiosk",
            Role::CitizenPages => "citizen_pages",
            Role::Partner => "partner",
        }
    }

    /// A person's role (what a portal account or the identity provider may
    /// grant), as opposed to a device's, a system's or guichet's own.
    pub fn is_person(self) -> bool {
        matches!(
            self,
            Role::Agent | Role::Supervisor | Role::Admin | Role::ProcessOwner
        )
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            "process_owner" => Ok(Role::ProcessOwner),
            "kiosk" => Ok(Role::Kiosk),
            "citizen_pages" => Ok(Role::CitizenPages),
            "partner" => Ok(Role::Partner),
            other => Err(format!(
                "unknown role `{other}` (agent, supervisor, admin, process_owner, kiosk, citizen_pages, partner, service)"
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 key shared by guichet's roles; at least 32 bytes.
    pub signing_key: SecretString,
    pub issuer: String,
    pub audience: String,
    /// Lifetime of tokens guichet mints for its own service calls.
    pub service_token_ttl_secs: u64,
    /// OIDC provider's JWKS URL; empty = static key only.
    #[serde(default)]
    pub jwks_url: String,
    /// `iss` of the provider's tokens (required with `jwks_url`).
    #[serde(default)]
    pub oidc_issuer: String,
    /// Dotted path of the roles claim in provider tokens.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Dotted path of the groups claim in provider tokens.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// How often the JWKS is fetched again.
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
}

fn default_roles_claim() -> String {
    "roles".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_jwks_refresh_secs() -> u64 {
    300
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if self.signing_key.expose_secret().len() < 32 {
            return Err(crate::config::ConfigError::invalid(
                "auth.signing_key",
                "must be at least 32 bytes long",
            ));
        }
        if self.issuer.is_empty() {
            return Err(crate::config::ConfigError::invalid(
                "auth.issuer",
                "must not be empty",
            ));
        }
        if self.audience.is_empty() {
            return Err(crate::config::ConfigError::invalid(
                "auth.audience",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Groups that open restricted processes (e.g. `social`).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The authenticated caller, put into request extensions by the interceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
    /// The token's audience: the configured one for people, devices and
    /// systems; `<audience>/<role>` for a guichet role's service token.
    pub audience: String,
}

impl Principal {
    /// Whether the caller holds `role`, directly or through a broader one:
    /// an admin holds every person's role, a supervisor the agent's.
    /// Devices', systems' and guichet's own roles are held only as such.
    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| {
            *r == role
                || (*r == Role::Admin && role.is_person())
                || (*r == Role::Supervisor && role == Role::Agent)
        })
    }
}

/// Verifies and (with the static key) issues tokens.
pub struct Authenticator {
    /// Keys derived from the signing key for other secrets (a desk's
    /// agenda feed address).
    derive: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    service_ttl: Duration,
    oidc: Option<Arc<Oidc>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(cfg: &AuthConfig) -> Result<Self, crate::config::ConfigError> {
        let bad_key = |e: jsonwebtoken::errors::Error| {
            crate::config::ConfigError::invalid("auth.signing_key", e.to_string())
        };
        let key = cfg.signing_key.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[cfg.issuer.as_str()]);
        // People's tokens carry the audience; guichet's service tokens
        // `<audience>/<role>`, the role they are for (see `access`).
        let mut audiences = vec![cfg.audience.clone()];
        audiences.extend(
            crate::access::PACKAGES
                .iter()
                .map(|p| format!("{}/{p}", cfg.audience)),
        );
        validation.set_audience(&audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // A token not valid yet (`nbf` ahead, beyond the leeway) is refused.
        validation.validate_nbf = true;
        validation.leeway = 30;
        Ok(Authenticator {
            derive: key.to_vec(),
            encoding: EncodingKey::from_secret(key).map_err(bad_key)?,
            decoding: DecodingKey::from_secret(key).map_err(bad_key)?,
            validation,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            service_ttl: Duration::from_secs(cfg.service_token_ttl_secs),
            oidc: (!cfg.jwks_url.is_empty()).then(|| {
                Arc::new(Oidc {
                    jwks_url: cfg.jwks_url.clone(),
                    issuer: cfg.oidc_issuer.clone(),
                    audience: cfg.audience.clone(),
                    roles_claim: cfg.roles_claim.clone(),
                    groups_claim: cfg.groups_claim.clone(),
                    refresh: Duration::from_secs(cfg.jwks_refresh_secs),
                    keys: std::sync::RwLock::new(std::collections::HashMap::new()),
                    wake: tokio::sync::Notify::new(),
                })
            }),
        })
    }

    /// The OIDC key cache, when an identity provider is configured; the
    /// process runs [`Oidc::refresh_loop`] for it.
    pub fn oidc(&self) -> Option<Arc<Oidc>> {
        self.oidc.clone()
    }

    /// Issue a token for `subject` with `roles`, valid for `ttl`.
    pub fn issue(&self, subject: &str, roles: &[Role], groups: &[String], ttl: Duration) -> String {
        self.issue_for(subject, roles, groups, ttl, &self.audience)
    }

    fn issue_for(
        &self,
        subject: &str,
        roles: &[Role],
        groups: &[String],
        ttl: Duration,
        audience: &str,
    ) -> String {
        let now = now_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            iat: now,
            exp: now + ttl.as_secs(),
            roles: roles.to_vec(),
            groups: groups.to_vec(),
        };
        // HS256 encoding of a plain struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// A `service` token for guichet's role `from` calling the role that
    /// serves the API package `to` (`routing` calling `dossier`): subject
    /// `guichet-<from>`, audience `<audience>/<to>`.
    pub fn service_token(&self, from: &str, to: &str) -> String {
        self.issue_for(
            &format!("guichet-{from}"),
            &[Role::Service],
            &[],
            self.service_ttl,
            &format!("{}/{to}", self.audience),
        )
    }

    /// A secret for `subject` in the domain `purpose`, derived from the
    /// signing key (HMAC-SHA256, 32 hex digits): the same in every process
    /// of an installation, changed with the key. E.g. a desk's agenda feed
    /// key, given in the feed's address instead of a person's token.
    pub fn derived_secret(&self, purpose: &str, subject: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.derive)
            .expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(subject.as_bytes());
        let bytes = mac.finalize().into_bytes();
        bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The audience of people's, devices' and systems' tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn verify(&self, token: &str) -> Result<Principal, Status> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Status::unauthenticated(format!("invalid bearer token: {e}")))?;
        if header.alg != Algorithm::HS256 {
            return match &self.oidc {
                Some(oidc) => oidc.verify(token, &header),
                None => Err(Status::unauthenticated(
                    "invalid bearer token: only HS256 tokens are accepted (no identity provider configured)",
                )),
            };
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                tracing::debug!(error = %e, "rejected bearer token");
                Status::unauthenticated(format!("invalid bearer token: {e}"))
            })?;
        Ok(Principal {
            subject: data.claims.sub,
            roles: data.claims.roles,
            groups: data.claims.groups,
            audience: data.claims.aud,
        })
    }
}

/// Keys of the OIDC provider, by key id, and how to read its tokens.
pub struct Oidc {
    jwks_url: String,
    issuer: String,
    audience: String,
    roles_claim: String,
    groups_claim: String,
    refresh: Duration,
    keys: std::sync::RwLock<std::collections::HashMap<String, (DecodingKey, Algorithm)>>,
    /// Woken when a token names a key id we do not know (key rotation).
    wake: tokio::sync::Notify,
}

impl Oidc {
    /// Fetch the JWKS once; returns how many usable keys it holds.
    pub async fn fetch(&self, http: &reqwest::Client) -> Result<usize, String> {
        let set: jsonwebtoken::jwk::JwkSet = http
            .get(&self.jwks_url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot fetch {}: {e}", self.jwks_url))?
            .json()
            .await
            .map_err(|e| format!("{} is not a JWKS: {e}", self.jwks_url))?;
        let mut keys = std::collections::HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(a), _) => a.to_string().parse::<Algorithm>().ok(),
                (None, jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_)) => {
                    Some(Algorithm::EdDSA)
                }
                (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
                (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)) => {
                    Some(Algorithm::ES256)
                }
                _ => None,
            };
            match (alg, DecodingKey::from_jwk(jwk)) {
                (Some(alg), Ok(key)) if alg != Algorithm::HS256 => {
                    keys.insert(kid, (key, alg));
                }
                _ => tracing::warn!(%kid, "skipping a JWKS key guichet cannot use"),
            }
        }
        let n = keys.len();
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        Ok(n)
    }

    /// Whether keys are loaded (for readiness).
    pub fn has_keys(&self) -> bool {
        self.keys.read().map(|k| !k.is_empty()).unwrap_or(false)
    }

    /// Keep the keys fresh until `shutdown`: every `jwks_refresh_secs`, and
    /// at most every 30 s when an unknown key id was seen.
    pub async fn refresh_loop(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let http = reqwest::Client::new();
        loop {
            match self.fetch(&http).await {
                Ok(n) => tracing::debug!(keys = n, "jwks refreshed"),
                Err(error) => {
                    tracing::warn!(%error, "jwks refresh failed, keeping the previous keys")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.refresh) => {}
                _ = async {
                    self.wake.notified().await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                } => {}
            }
        }
    }

    fn verify(&self, token: &str, header: &Header) -> Result<Principal, Status> {
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| Status::unauthenticated("invalid bearer token: no key id (kid)"))?;
        let (key, alg) = {
            let keys = self
                .keys
                .read()
                .map_err(|_| Status::internal("key cache poisoned"))?;
            match keys.get(kid) {
                Some((k, a)) => (k.clone(), *a),
                None => {
                    self.wake.notify_one();
                    return Err(Status::unauthenticated(format!(
                        "invalid bearer token: unknown key id `{kid}`"
                    )));
                }
            }
        };
        if header.alg != alg {
            return Err(Status::unauthenticated(
                "invalid bearer token: algorithm does not match its key",
            ));
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[self.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // A token not valid yet (`nbf` ahead, beyond the leeway) is refused.
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| Status::unauthenticated(format!("invalid bearer token: {e}")))?;
        let claims = data.claims;
        let strings = |path: &str| -> Vec<String> {
            let mut v = &claims;
            for part in path.split('.') {
                match v.get(part) {
                    Some(next) => v = next,
                    None => return Vec::new(),
                }
            }
            match v {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
                serde_json::Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
                _ => Vec::new(),
            }
        };
        Ok(Principal {
            subject: claims
                .get("sub")
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_owned(),
            // Provider roles guichet does not know are ignored, not fatal;
            // `service` is guichet's own and never comes from a provider.
            roles: strings(&self.roles_claim)
                .iter()
                .filter_map(|r| r.parse().ok())
                .filter(|r| *r != Role::Service)
                .collect(),
            groups: strings(&self.groups_claim),
            audience: self.audience.clone(),
        })
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Server-side interceptor: requires `authorization: Bearer <jwt>`.
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    auth: Arc<Authenticator>,
}

impl AuthInterceptor {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuthInterceptor { auth }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing authorization metadata (expected `Bearer <token>`)")
        })?;
        let value = header
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization metadata is not ASCII"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be `Bearer <token>`")
            })?;
        let principal = self.auth.verify(token.trim())?;
        // Who may call what is one table, checked here before any handler.
        let path = req
            .extensions()
            .get::<crate::access::CalledMethod>()
            .map(|m| m.0.as_str())
            .unwrap_or_default();
        crate::access::admit(&principal, path, self.auth.audience())?;
        req.extensions_mut().insert(principal);
        Ok(req)
    }
}

/// The caller of a request that went through [`AuthInterceptor`].
pub fn principal<T>(req: &Request<T>) -> Result<&Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

/// The caller of a request the interceptor admitted (who may call which
/// method is [`crate::access::RULES`]), owned.
pub fn caller<T>(req: &Request<T>) -> Result<Principal, Status> {
    principal(req).cloned()
}

/// Client-side interceptor for guichet's own role-to-role calls: adds a
/// fresh service token and the current trace context to every request.
#[derive(Clone, Debug)]
pub struct ServiceCredentials {
    auth: Arc<Authenticator>,
    from: &'static str,
    to: &'static str,
}

impl ServiceCredentials {
    /// Credentials of guichet's role `from` calling the API package `to`.
    pub fn new(auth: Arc<Authenticator>, from: &'static str, to: &'static str) -> Self {
        ServiceCredentials { auth, from, to }
    }
}

impl tonic::service::Interceptor for ServiceCredentials {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        // A call made on behalf of a person (their token set on the request,
        // e.g. an agent confirming a merge) keeps it: the callee checks and
        // records that person, not the calling role.
        if !req.metadata().contains_key("authorization") {
            let token = self.auth.service_token(self.from, self.to);
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("service token is not valid metadata"))?;
            req.metadata_mut().insert("authorization", value);
        }
        crate::telemetry::inject_grpc(req.metadata_mut());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn base_config() -> AuthConfig {
        AuthConfig {
            signing_key: SecretString::from("0123456789abcdef0123456789abcdef"),
            issuer: "guichet".into(),
            audience: "guichet".into(),
            service_token_ttl_secs: 300,
            jwks_url: String::new(),
            oidc_issuer: String::new(),
            roles_claim: default_roles_claim(),
            groups_claim: default_groups_claim(),
            jwks_refresh_secs: 300,
        }
    }

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            signing_key: SecretString::from("0123456789abcdef0123456789abcdef"),
            issuer: "guichet".into(),
            audience: "guichet".into(),
            service_token_ttl_secs: 300,
            ..base_config()
        })
        .unwrap()
    }

    #[test]
    fn an_issued_token_verifies_with_its_roles() {
        let a = auth();
        let t = a.issue(
            "agent-7",
            &[Role::Agent],
            &["social".into()],
            Duration::from_secs(60),
        );
        let p = a.verify(&t).unwrap();
        assert_eq!(p.subject, "agent-7");
        assert!(p.has(Role::Agent));
        assert!(!p.has(Role::Admin));
        assert_eq!(p.groups, vec!["social".to_string()]);
    }

    #[test]
    fn a_token_not_valid_yet_is_rejected() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = |nbf: u64| {
            serde_json::json!({
                "sub": "agent-7", "iss": "guichet", "aud": "guichet",
                "exp": now + 3600, "iat": now, "nbf": nbf, "roles": ["agent"],
            })
        };
        let key = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap();
        let sign = |c: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &key).unwrap()
        };
        let a = auth();
        let e = a.verify(&sign(claims(now + 600))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("ImmatureSignature"), "{}", e.message());
        a.verify(&sign(claims(now))).expect("valid from now");
    }

    #[test]
    fn a_token_signed_with_another_key_is_rejected() {
        let other = Authenticator::new(&AuthConfig {
            signing_key: SecretString::from("another-key-another-key-another-key"),
            issuer: "guichet".into(),
            audience: "guichet".into(),
            service_token_ttl_secs: 300,
            ..base_config()
        })
        .unwrap();
        let t = other.issue("x", &[Role::Admin], &[], Duration::from_secs(60));
        assert_eq!(
            auth().verify(&t).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn role_hierarchy_admin_and_supervisor() {
        let p = Principal {
            subject: "s".into(),
            roles: vec![Role::Supervisor],
            groups: vec![],
            audience: "guichet".into(),
        };
        assert!(
            p.has(Role::Agent)
                && p.has(Role::Supervisor)
                && !p.has(Role::Admin)
                && !p.has(Role::Service)
        );
        let a = Principal {
            subject: "a".into(),
            roles: vec![Role::Admin],
            groups: vec![],
            audience: "guichet".into(),
        };
        // An admin holds every person's role, not a device's or guichet's own.
        assert!(a.has(Role::Agent) && a.has(Role::Supervisor) && a.has(Role::ProcessOwner));
        assert!(!a.has(Role::Service) && !a.has(Role::Kiosk) && !a.has(Role::Partner));
    }

    #[test]
    fn a_service_token_names_its_caller_and_the_role_it_is_for() {
        let a = auth();
        let p = a.verify(&a.service_token("routing", "dossier")).unwrap();
        assert_eq!(p.subject, "guichet-routing");
        assert_eq!(p.audience, "guichet/dossier");
        assert_eq!(p.roles, vec![Role::Service]);
    }

    #[test]
    fn the_interceptor_checks_the_access_table() {
        let auth = Arc::new(auth());
        let mut i = AuthInterceptor::new(auth.clone());
        let call = |token: String, path: &str| {
            let mut req = Request::new(());
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            req.extensions_mut()
                .insert(crate::access::CalledMethod(path.to_owned()));
            req
        };
        let kiosk = auth.issue("borne-1", &[Role::Kiosk], &[], Duration::from_secs(60));
        let list = "/guichet.dossier.v1.DossierService/ListCitizens";
        let ticket = "/guichet.counter.v1.CounterService/IssueTicket";
        let e = i.call(call(kiosk.clone(), list)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let ok = i.call(call(kiosk.clone(), ticket)).unwrap();
        assert_eq!(principal(&ok).unwrap().subject, "borne-1");
        // A request whose method is unknown to the table is refused.
        let mut req = call(kiosk, ticket);
        req.extensions_mut().clear();
        assert_eq!(
            i.call(req).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn the_interceptor_requires_a_bearer_token() {
        let mut i = AuthInterceptor::new(Arc::new(auth()));
        let err = i.call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(
            i.call(req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn a_short_signing_key_is_a_config_error_naming_the_key() {
        let cfg = AuthConfig {
            signing_key: SecretString::from("short"),
            ..base_config()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("auth.signing_key")
        );
    }
}
