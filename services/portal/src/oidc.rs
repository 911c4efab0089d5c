//! Login with the town's OpenID Connect provider: authorization code with
//! PKCE, a nonce and a one-time `state` kept server-side; the ID token is
//! verified (issuer, audience, signature, nonce, expiry), roles and groups
//! are read from the configured claims, and the provider's token is what
//! the portal passes to the roles (they check it against the same JWKS).

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use guichet_platform::auth::Role;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use secrecy::ExposeSecret;
use tokio::sync::RwLock;

use crate::config::OidcConfig;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The town's provider, discovered on first use (it may start after us).
pub struct Provider {
    config: OidcConfig,
    redirect: String,
    http: openidconnect::reqwest::Client,
    client: RwLock<Option<Client>>,
}

/// Where to send the browser, and what to keep until it comes back.
pub struct Start {
    pub url: String,
    pub state: String,
    pub pkce_verifier: String,
    pub nonce: String,
}

/// Who logged in.
#[derive(Debug)]
pub struct Identity {
    pub subject: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
    /// The token passed to the roles: the access token when it is a JWT,
    /// else the ID token.
    pub bearer: String,
    pub expire_time: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider does not answer: {0}")]
    Unreachable(String),
    #[error("the identity provider refused the login: {0}")]
    Refused(String),
    #[error("no guichet role in the token's `{0}` claim")]
    NoRole(String),
}

impl Provider {
    pub fn new(config: OidcConfig, base_url: &str) -> anyhow::Result<Arc<Provider>> {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // No redirects: SSRF protection, as the library recommends.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Arc::new(Provider {
            config,
            redirect: format!("{base_url}/connexion/oidc/retour"),
            http,
            client: RwLock::new(None),
        }))
    }

    pub fn label(&self) -> &str {
        &self.config.label
    }

    async fn client(&self) -> Result<Client, OidcError> {
        if let Some(c) = self.client.read().await.as_ref() {
            return Ok(c.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer_url.trim_end_matches('/').to_owned())
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let redirect = RedirectUrl::new(self.redirect.clone())
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                self.config.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(redirect);
        *self.client.write().await = Some(client.clone());
        Ok(client)
    }

    /// Begin a login.
    pub async fn start(&self) -> Result<Start, OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &self.config.scopes {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok(Start {
            url: url.to_string(),
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        })
    }

    /// Finish a login: exchange the code, verify the ID token, read roles.
    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let client = self.client().await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Refused(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Refused(format!("token request: {e}")))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| OidcError::Refused("no ID token in the answer".into()))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map_err(|e| OidcError::Refused(format!("ID token: {e}")))?;
        let subject = claims.subject().to_string();
        let expire = claims.expiration();
        // The token is verified: its other claims (roles, groups) are read
        // from its payload as JSON.
        let raw = id_token.to_string();
        let payload: serde_json::Value = raw
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let strings = |path: &str| -> Vec<String> {
            let mut v = &payload;
            for part in path.split('.') {
                v = &v[part];
            }
            match v {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
                serde_json::Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            }
        };
        let mut roles: Vec<Role> = strings(&self.config.roles_claim)
            .iter()
            .filter_map(|r| r.parse().ok())
            .filter(|r: &Role| r.is_person())
            .collect();
        roles.dedup();
        if roles.is_empty() {
            return Err(OidcError::NoRole(self.config.roles_claim.clone()));
        }
        let groups = crate::accounts::parse_groups(&strings(&self.config.groups_claim).join(","));
        let display_name = payload[&self.config.name_claim]
            .as_str()
            .or_else(|| payload["preferred_username"].as_str())
            .unwrap_or("Agent")
            .to_owned();
        let access = token.access_token().secret();
        let bearer = if access.split('.').count() == 3 {
            access.clone()
        } else {
            raw
        };
        let access_expire = token
            .expires_in()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d);
        let expire_time = match access_expire {
            Some(a) => Some(a.min(expire)),
            None => Some(expire),
        };
        Ok(Identity {
            subject,
            display_name,
            roles,
            groups,
            bearer,
            expire_time,
        })
    }
}
