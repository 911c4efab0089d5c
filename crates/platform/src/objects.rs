//! The object store: documents (email attachments, scans, PDFs to sign,
//! signature evidence) addressed by the lower-case hex SHA-256 of their
//! content. Databases keep metadata only.
//!
//! The built-in backend is a local directory (`objects.dir`, a volume in
//! Kubernetes): `<dir>/<aa>/<bb>/<sha256>`. Writes go to a temporary file
//! first and are renamed into place, so a reader never sees half an object;
//! writing the same content twice is a no-op.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsConfig {
    /// Directory of the local object store; empty: `<data_dir>/objects`.
    #[serde(default)]
    pub dir: PathBuf,
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
    root: PathBuf,
}

impl ObjectStore {
    pub fn local(root: impl Into<PathBuf>) -> ObjectStore {
        ObjectStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, sha: &str) -> Result<PathBuf, ObjectError> {
        if !is_address(sha) {
            return Err(ObjectError::BadAddress(sha.to_owned()));
        }
        Ok(self.root.join(&sha[..2]).join(&sha[2..4]).join(sha))
    }

    /// Store `bytes`; returns their address. Idempotent.
    pub async fn put(&self, bytes: &[u8]) -> Result<String, ObjectError> {
        let sha = sha256_hex(bytes);
        let path = self.path(&sha)?;
        let io = |source| ObjectError::Io {
            path: path.display().to_string(),
            source,
        };
        if tokio::fs::try_exists(&path).await.map_err(io)? {
            return Ok(sha);
        }
        let dir = path.parent().unwrap_or(&self.root);
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
        let path = self.path(sha)?;
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
        let path = self.path(sha)?;
        tokio::fs::try_exists(&path)
            .await
            .map_err(|source| ObjectError::Io {
                path: path.display().to_string(),
                source,
            })
    }

    /// Remove an object; removing a missing object is not an error.
    pub async fn delete(&self, sha: &str) -> Result<(), ObjectError> {
        let path = self.path(sha)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ObjectError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
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
