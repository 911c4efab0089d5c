//! The object store: documents (email attachments, scans, PDFs to sign,
//! signature evidence) addressed by the lower-case hex SHA-256 of their
//! content. Databases keep metadata only.
//!
//! Two backends, chosen by `objects.backend`:
//! - `local` (default): a directory (`objects.dir`, a volume in
//!   Kubernetes): `<dir>/<aa>/<bb>/<sha256>`. Writes go to a temporary file
//!   first and are renamed into place, so a reader never sees half an
//!   object.
//! - `s3`: an S3-compatible bucket (AWS S3, MinIO, Garage, Ceph RGW,
//!   Scaleway, OVHcloud…): key `<prefix><aa>/<bb>/<sha256>`. An S3 PUT is
//!   atomic, so a reader never sees half an object either.
//!
//! Either way writing the same content twice is a no-op.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore as _, PutPayload};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsConfig {
    /// `local` (a directory) or `s3` (an S3-compatible bucket).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Directory of the local object store; empty: `<data_dir>/objects`.
    #[serde(default)]
    pub dir: PathBuf,
    #[serde(default)]
    pub s3: S3Config,
}

fn default_backend() -> String {
    "local".to_owned()
}

/// `[objects.s3]`: where the bucket is and how to sign requests.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// e.g. `https://s3.fr-par.scw.cloud` or `http://minio:9000`; empty:
    /// AWS S3 of `region`.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub region: String,
    /// Key prefix inside the bucket, e.g. `guichet/` (several towns or
    /// environments may share a bucket).
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub secret_access_key: Option<SecretString>,
    /// Path-style URLs (`<endpoint>/<bucket>/<key>`), as most
    /// self-hosted servers expect; false: virtual-hosted style.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Allow a plain `http://` endpoint (a server on the cluster network).
    #[serde(default)]
    pub allow_http: bool,
}

fn yes() -> bool {
    true
}

impl ObjectsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.backend.as_str() {
            "local" => Ok(()),
            "s3" => {
                let s = &self.s3;
                if s.bucket.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        "objects.s3.bucket",
                        "is required when objects.backend is s3",
                    ));
                }
                if s.endpoint.is_empty() && s.region.is_empty() {
                    return Err(ConfigError::invalid(
                        "objects.s3.region",
                        "is required when objects.s3.endpoint is empty (AWS S3)",
                    ));
                }
                if s.endpoint.starts_with("http://") && !s.allow_http {
                    return Err(ConfigError::invalid(
                        "objects.s3.endpoint",
                        "is plain http: set objects.s3.allow_http = true to accept it",
                    ));
                }
                let e = s.endpoint.as_str();
                if !(e.is_empty() || e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(ConfigError::invalid(
                        "objects.s3.endpoint",
                        "must be an http:// or https:// URL",
                    ));
                }
                if s.access_key_id.is_empty() != s.secret_access_key.is_none() {
                    return Err(ConfigError::invalid(
                        "objects.s3.secret_access_key",
                        "give both access_key_id and secret_access_key, or neither (instance credentials)",
                    ));
                }
                Ok(())
            }
            other => Err(ConfigError::invalid(
                "objects.backend",
                format!("`{other}` is not a backend (local, s3)"),
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("`{0}` is not a SHA-256 address")]
    BadAddress(String),
    #[error("object store I/O on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("object store S3 request on {key}: {message}")]
    S3 { key: String, message: String },
    #[error("object store configuration: {0}")]
    Config(String),
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn is_address(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[derive(Debug, Clone)]
pub struct ObjectStore {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Local(PathBuf),
    S3 {
        store: Arc<AmazonS3>,
        bucket: String,
        prefix: String,
    },
}

impl ObjectStore {
    pub fn local(root: impl Into<PathBuf>) -> ObjectStore {
        ObjectStore {
            backend: Backend::Local(root.into()),
        }
    }

    /// The store `config` describes (validated with
    /// [`ObjectsConfig::validate`]). Nothing is contacted yet.
    pub fn from_config(config: &ObjectsConfig) -> Result<ObjectStore, ObjectError> {
        if config.backend != "s3" {
            return Ok(ObjectStore::local(&config.dir));
        }
        let s = &config.s3;
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&s.bucket)
            .with_virtual_hosted_style_request(!s.path_style)
            .with_allow_http(s.allow_http);
        b = b.with_region(if s.region.is_empty() {
            "us-east-1"
        } else {
            &s.region
        });
        if !s.endpoint.is_empty() {
            b = b.with_endpoint(&s.endpoint);
        }
        if let Some(secret) = &s.secret_access_key {
            b = b
                .with_access_key_id(&s.access_key_id)
                .with_secret_access_key(secret.expose_secret());
        }
        let store = b.build().map_err(|e| ObjectError::Config(e.to_string()))?;
        Ok(ObjectStore {
            backend: Backend::S3 {
                store: Arc::new(store),
                bucket: s.bucket.clone(),
                prefix: s.prefix.clone(),
            },
        })
    }

    /// The directory of a local store; `None` for S3.
    pub fn root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local(root) => Some(root),
            Backend::S3 { .. } => None,
        }
    }

    /// What readiness reports: the bucket answers (S3), or the directory
    /// can be created (local).
    pub async fn check(&self) -> Result<(), String> {
        match &self.backend {
            Backend::Local(root) => tokio::fs::create_dir_all(root)
                .await
                .map_err(|e| format!("object store directory: {e}")),
            Backend::S3 { store, bucket, .. } => {
                use futures::StreamExt;
                let mut list = store.list(None);
                match list.next().await {
                    None | Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(format!("object store bucket {bucket}: {e}")),
                }
            }
        }
    }

    fn relative(sha: &str) -> Result<String, ObjectError> {
        if !is_address(sha) {
            return Err(ObjectError::BadAddress(sha.to_owned()));
        }
        Ok(format!("{}/{}/{sha}", &sha[..2], &sha[2..4]))
    }

    fn path(root: &Path, sha: &str) -> Result<PathBuf, ObjectError> {
        Ok(root.join(Self::relative(sha)?))
    }

    fn key(prefix: &str, sha: &str) -> Result<object_store::path::Path, ObjectError> {
        Ok(object_store::path::Path::from(format!(
            "{prefix}{}",
            Self::relative(sha)?
        )))
    }

    /// Store `bytes`; returns their address. Idempotent.
    pub async fn put(&self, bytes: &[u8]) -> Result<String, ObjectError> {
        let sha = sha256_hex(bytes);
        let root = match &self.backend {
            Backend::Local(root) => root,
            Backend::S3 { store, prefix, .. } => {
                let key = Self::key(prefix, &sha)?;
                if s3_exists(store, &key).await? {
                    return Ok(sha);
                }
                store
                    .put(&key, PutPayload::from(bytes.to_vec()))
                    .await
                    .map_err(|e| s3_error(&key, e))?;
                return Ok(sha);
            }
        };
        let path = Self::path(root, &sha)?;
        let io = |source| ObjectError::Io {
            path: path.display().to_string(),
            source,
        };
        if tokio::fs::try_exists(&path).await.map_err(io)? {
            return Ok(sha);
        }
        let dir = path.parent().unwrap_or(root);
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let tmp = dir.join(format!(".{sha}.{}", uuid::Uuid::now_v7()));
        let write = async {
            tokio::fs::write(&tmp, bytes).await?;
            let f = tokio::fs::File::open(&tmp).await?;
            f.sync_all().await?;
            tokio::fs::rename(&tmp, &path).await
        };
        if let Err(e) = write.await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io(e));
        }
        Ok(sha)
    }

    pub async fn get(&self, sha: &str) -> Result<Vec<u8>, ObjectError> {
        let root = match &self.backend {
            Backend::Local(root) => root,
            Backend::S3 { store, prefix, .. } => {
                let key = Self::key(prefix, sha)?;
                let got = match store.get(&key).await {
                    Ok(g) => g,
                    Err(object_store::Error::NotFound { .. }) => {
                        return Err(ObjectError::NotFound(sha.to_owned()));
                    }
                    Err(e) => return Err(s3_error(&key, e)),
                };
                let bytes = got.bytes().await.map_err(|e| s3_error(&key, e))?;
                return Ok(bytes.to_vec());
            }
        };
        let path = Self::path(root, sha)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ObjectError::NotFound(sha.to_owned()))
            }
            Err(source) => Err(ObjectError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    pub async fn exists(&self, sha: &str) -> Result<bool, ObjectError> {
        let root = match &self.backend {
            Backend::Local(root) => root,
            Backend::S3 { store, prefix, .. } => {
                return s3_exists(store, &Self::key(prefix, sha)?).await;
            }
        };
        let path = Self::path(root, sha)?;
        tokio::fs::try_exists(&path)
            .await
            .map_err(|source| ObjectError::Io {
                path: path.display().to_string(),
                source,
            })
    }

    /// The stored size of an object in bytes; `None` when it is missing.
    pub async fn size(&self, sha: &str) -> Result<Option<u64>, ObjectError> {
        let root = match &self.backend {
            Backend::Local(root) => root,
            Backend::S3 { store, prefix, .. } => {
                let key = Self::key(prefix, sha)?;
                return match store.head(&key).await {
                    Ok(meta) => Ok(Some(meta.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(s3_error(&key, e)),
                };
            }
        };
        let path = Self::path(root, sha)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ObjectError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Remove an object; removing a missing object is not an error.
    pub async fn delete(&self, sha: &str) -> Result<(), ObjectError> {
        let root = match &self.backend {
            Backend::Local(root) => root,
            Backend::S3 { store, prefix, .. } => {
                let key = Self::key(prefix, sha)?;
                return match store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(s3_error(&key, e)),
                };
            }
        };
        let path = Self::path(root, sha)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ObjectError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Which backend, for logs and readiness: `local` or `s3:<bucket>`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(_) => "local".to_owned(),
            Backend::S3 { bucket, .. } => format!("s3:{bucket}"),
        }
    }
}

async fn s3_exists(store: &AmazonS3, key: &object_store::path::Path) -> Result<bool, ObjectError> {
    match store.head(key).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(s3_error(key, e)),
    }
}

fn s3_error(key: &object_store::path::Path, e: object_store::Error) -> ObjectError {
    ObjectError::S3 {
        key: key.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_are_addressed_by_content_and_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::local(dir.path());
        let a = store.put(b"bonjour").await.unwrap();
        assert_eq!(a, sha256_hex(b"bonjour"));
        assert_eq!(store.put(b"bonjour").await.unwrap(), a);
        assert_eq!(store.get(&a).await.unwrap(), b"bonjour");
        assert!(store.exists(&a).await.unwrap());
        store.delete(&a).await.unwrap();
        assert!(matches!(store.get(&a).await, Err(ObjectError::NotFound(_))));
        assert!(matches!(
            store.get("../../etc/passwd").await,
            Err(ObjectError::BadAddress(_))
        ));
    }
}
