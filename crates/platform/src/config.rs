//! Layered, validated configuration.
//!
//! Sources, later ones winning: the embedded defaults (a TOML string the
//! binary ships), an optional `guichet.toml`, then environment variables
//! `GUICHET__<SECTION>__<KEY>`. Deserialisation errors and validation errors
//! both name the offending key, so a bad value stops start-up with a message
//! an operator can act on.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Prefix of the environment variables that override configuration.
pub const ENV_PREFIX: &str = "GUICHET";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type; the message
    /// from the `config` crate names the key.
    // Not `#[from]`: the message already carries the source's text, which
    // an error chain would otherwise print twice.
    #[error("configuration error: {0}")]
    Load(config::ConfigError),
    /// A value has the right type but is not acceptable.
    #[error("configuration error: invalid value for key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        ConfigError::Load(e)
    }
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Load `T` from embedded defaults, an optional file and the environment.
///
/// `env` is passed in (rather than read from the process) so that tests can
/// check overrides without touching global state; use [`process_env`] in
/// `main`.
pub fn load<T: DeserializeOwned>(
    defaults_toml: &str,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        defaults_toml,
        config::FileFormat::Toml,
    ));
    if let Some(path) = file {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env)),
    );
    Ok(builder.build()?.try_deserialize()?)
}

/// The process environment, for [`load`].
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// Settings of the network listeners every process has.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address; every served role's gRPC services share it.
    pub grpc_addr: String,
    /// Admin HTTP address: `/healthz`, `/readyz`, `/metrics`.
    pub admin_addr: String,
    /// Time given to in-flight work after SIGTERM before the process exits.
    pub shutdown_grace_secs: u64,
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("server.grpc_addr", &self.grpc_addr)?;
        parse_addr("server.admin_addr", &self.admin_addr)?;
        Ok(())
    }
}

/// Parse a socket address, naming the key on failure.
pub fn parse_addr(key: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|e| ConfigError::invalid(key, format!("`{value}` is not a socket address ({e})")))
}

/// Database settings shared by every stateful role (each has its own URL).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Run migrations when a role starts. Turn off where a migration Job runs.
    pub migrate_on_start: bool,
    /// Pool size for PostgreSQL (SQLite always uses one writer connection).
    pub max_connections: u32,
}

/// Check that a database URL names a backend guichet supports.
pub fn validate_database_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            "expected a sqlite: or postgres:// URL",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        server: ServerConfig,
    }

    const DEFAULTS: &str = r#"
[server]
grpc_addr = "127.0.0.1:50051"
admin_addr = "127.0.0.1:9090"
shutdown_grace_secs = 20
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_defaults() {
        let s: Sample = load(
            DEFAULTS,
            None,
            env(&[("GUICHET__SERVER__GRPC_ADDR", "0.0.0.0:1")]),
        )
        .unwrap();
        assert_eq!(s.server.grpc_addr, "0.0.0.0:1");
        assert_eq!(s.server.shutdown_grace_secs, 20);
    }

    #[test]
    fn a_badly_typed_env_value_names_its_key() {
        let err = load::<Sample>(
            DEFAULTS,
            None,
            env(&[("GUICHET__SERVER__SHUTDOWN_GRACE_SECS", "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.shutdown_grace_secs"), "{err}");
    }

    #[test]
    fn a_file_overrides_defaults_and_env_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guichet.toml");
        std::fs::write(
            &path,
            "[server]\ngrpc_addr = \"10.0.0.1:5\"\nadmin_addr = \"10.0.0.1:6\"\n",
        )
        .unwrap();
        let s: Sample = load(
            DEFAULTS,
            Some(&path),
            env(&[("GUICHET__SERVER__ADMIN_ADDR", "1.2.3.4:7")]),
        )
        .unwrap();
        assert_eq!(s.server.grpc_addr, "10.0.0.1:5");
        assert_eq!(s.server.admin_addr, "1.2.3.4:7");
    }

    #[test]
    fn an_invalid_address_names_its_key() {
        let s: Sample = load(
            DEFAULTS,
            None,
            env(&[("GUICHET__SERVER__ADMIN_ADDR", "localhost")]),
        )
        .unwrap();
        let err = s.server.validate().unwrap_err().to_string();
        assert!(err.contains("server.admin_addr"), "{err}");
    }

    #[test]
    fn unrelated_environment_variables_are_ignored() {
        let s: Sample = load(DEFAULTS, None, env(&[("PATH", "/bin"), ("GUICHETX", "1")])).unwrap();
        assert_eq!(s.server.grpc_addr, "127.0.0.1:50051");
    }
}
