//! Bearer-JWT authentication and role checks for every gRPC call.
//!
//! Tokens are verified with a static HS256 key (development, small towns and
//! service-to-service calls between guichet's own roles). Claims carry the
//! subject (an agent or system id, never a name), its roles and groups.
//! Health checking and reflection are mounted without the interceptor, so
//! probes and `grpcurl list` work without a token.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

/// What a caller may do. `admin` may do everything; `supervisor` everything
/// an `agent` may; `service` is for other municipal systems and guichet's own
/// roles calling each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    Supervisor,
    Admin,
    Service,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            other => Err(format!(
                "unknown role `{other}` (agent, supervisor, admin, service)"
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthConfig {
    /// HS256 key shared by guichet's roles; at least 32 bytes.
    pub signing_key: SecretString,
    pub issuer: String,
    pub audience: String,
    /// Lifetime of tokens guichet mints for its own service calls.
    pub service_token_ttl_secs: u64,
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
}

impl Principal {
    /// Whether the caller holds `role`, directly or through a broader role.
    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| {
            *r == role || *r == Role::Admin || (*r == Role::Supervisor && role == Role::Agent)
        })
    }
}

/// Verifies and (with the static key) issues tokens.
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    service_ttl: Duration,
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
        validation.set_audience(&[cfg.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(Authenticator {
            encoding: EncodingKey::from_secret(key).map_err(bad_key)?,
            decoding: DecodingKey::from_secret(key).map_err(bad_key)?,
            validation,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            service_ttl: Duration::from_secs(cfg.service_token_ttl_secs),
        })
    }

    /// Issue a token for `subject` with `roles`, valid for `ttl`.
    pub fn issue(&self, subject: &str, roles: &[Role], groups: &[String], ttl: Duration) -> String {
        let now = now_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl.as_secs(),
            roles: roles.to_vec(),
            groups: groups.to_vec(),
        };
        // HS256 encoding of a plain struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// A `service` token for one of guichet's own roles calling another.
    pub fn service_token(&self, subject: &str) -> String {
        self.issue(subject, &[Role::Service], &[], self.service_ttl)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, Status> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                tracing::debug!(error = %e, "rejected bearer token");
                Status::unauthenticated(format!("invalid bearer token: {e}"))
            })?;
        Ok(Principal {
            subject: data.claims.sub,
            roles: data.claims.roles,
            groups: data.claims.groups,
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

/// The caller, if it holds one of `roles`; `PermissionDenied` otherwise.
pub fn require<T>(req: &Request<T>, roles: &[Role]) -> Result<Principal, Status> {
    let p = principal(req)?;
    if roles.iter().any(|r| p.has(*r)) {
        Ok(p.clone())
    } else {
        Err(Status::permission_denied(format!(
            "this call requires one of the roles {roles:?}"
        )))
    }
}

/// Client-side interceptor for guichet's own role-to-role calls: adds a
/// fresh service token and the current trace context to every request.
#[derive(Clone, Debug)]
pub struct ServiceCredentials {
    auth: Arc<Authenticator>,
    subject: String,
}

impl ServiceCredentials {
    pub fn new(auth: Arc<Authenticator>, subject: impl Into<String>) -> Self {
        ServiceCredentials {
            auth,
            subject: subject.into(),
        }
    }
}

impl tonic::service::Interceptor for ServiceCredentials {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let token = self.auth.service_token(&self.subject);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("service token is not valid metadata"))?;
        req.metadata_mut().insert("authorization", value);
        crate::telemetry::inject_grpc(req.metadata_mut());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            signing_key: SecretString::from("0123456789abcdef0123456789abcdef"),
            issuer: "guichet".into(),
            audience: "guichet".into(),
            service_token_ttl_secs: 300,
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
    fn a_token_signed_with_another_key_is_rejected() {
        let other = Authenticator::new(&AuthConfig {
            signing_key: SecretString::from("another-key-another-key-another-key"),
            issuer: "guichet".into(),
            audience: "guichet".into(),
            service_token_ttl_secs: 300,
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
        };
        assert!(a.has(Role::Service) && a.has(Role::Agent));
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
            issuer: "guichet".into(),
            audience: "guichet".into(),
            service_token_ttl_secs: 300,
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("auth.signing_key")
        );
    }
}
