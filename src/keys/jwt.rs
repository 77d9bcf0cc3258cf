//! The secret that signs login tokens: `ADMIN_JWT_SECRET`, or `<data dir>/jwt_secret` (mode
//! 0600, made on first start). `sluice keys rotate-jwt` replaces the file; the server notices
//! before the next token it checks or issues, so every login issued before is refused at once,
//! without a restart. API tokens are not JWTs and stay valid.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{FileStamp, KeyError};
use crate::auth::jwt::JwtKeys;

/// The secret's file in the data directory.
pub const FILE: &str = "jwt_secret";

fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn read(path: &Path) -> Result<Option<String>, KeyError> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().len() >= 32 => Ok(Some(s.trim().to_string())),
        Ok(_) => Err(KeyError::Format(format!(
            "the JWT secret in {} is shorter than 32 characters; run `sluice keys rotate-jwt` to make a new one",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces the data directory's secret with a new one (the server follows at once).
pub fn rotate(data_dir: &Path) -> Result<(), KeyError> {
    let path = data_dir.join(FILE);
    super::replace_private_file(&path, new_secret().as_bytes())
        .map_err(|source| KeyError::Io { path, source })
}

/// Where a server's login-signing secret comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `ADMIN_JWT_SECRET` in the server's environment: fixed for the process's life.
    Environment,
    /// The data directory's `jwt_secret`, followed as `sluice keys rotate-jwt` replaces it.
    File,
}

/// The signing keys in effect, following the file.
pub struct JwtSecret {
    file: Option<PathBuf>,
    current: RwLock<(Arc<JwtKeys>, FileStamp)>,
}

impl JwtSecret {
    /// A fixed secret (`ADMIN_JWT_SECRET`).
    pub fn fixed(secret: &[u8]) -> JwtSecret {
        JwtSecret {
            file: None,
            current: RwLock::new((Arc::new(JwtKeys::new(secret)), FileStamp::default())),
        }
    }

    /// The data directory's secret, made if missing.
    pub fn in_data_dir(data_dir: &Path) -> Result<JwtSecret, KeyError> {
        let path = data_dir.join(FILE);
        let secret = match read(&path)? {
            Some(s) => s,
            None => {
                let s = new_secret();
                super::replace_private_file(&path, s.as_bytes()).map_err(|source| {
                    KeyError::Io {
                        path: path.clone(),
                        source,
                    }
                })?;
                s
            }
        };
        Ok(JwtSecret {
            current: RwLock::new((
                Arc::new(JwtKeys::new(secret.as_bytes())),
                FileStamp::of(&path),
            )),
            file: Some(path),
        })
    }

    /// Where the secret comes from.
    pub fn source(&self) -> Source {
        if self.file.is_some() {
            Source::File
        } else {
            Source::Environment
        }
    }

    /// The keys to sign and check with now: the file read again if it changed. A file that
    /// cannot be read keeps the keys in use (and says so).
    pub fn keys(&self) -> Arc<JwtKeys> {
        let (keys, seen) = {
            let c = self.current.read().unwrap_or_else(|p| p.into_inner());
            (c.0.clone(), c.1)
        };
        let Some(path) = &self.file else {
            return keys;
        };
        let now = FileStamp::of(path);
        if now == seen {
            return keys;
        }
        match read(path) {
            Ok(Some(secret)) => {
                let fresh = Arc::new(JwtKeys::new(secret.as_bytes()));
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (fresh.clone(), now);
                tracing::info!("the JWT secret changed: logins issued before are no longer valid");
                fresh
            }
            Ok(None) | Err(_) => {
                tracing::warn!(path = %path.display(), "the JWT secret file cannot be read; the previous secret stays in use");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (keys.clone(), now);
                keys
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_refuses_older_tokens_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let secret = JwtSecret::in_data_dir(dir.path()).unwrap();
        let id = uuid::Uuid::now_v7();
        let old = secret.keys().issue(id, "admin", 0).unwrap();
        assert!(secret.keys().verify(&old).is_ok());
        rotate(dir.path()).unwrap();
        assert!(secret.keys().verify(&old).is_err());
        let new = secret.keys().issue(id, "admin", 0).unwrap();
        assert!(secret.keys().verify(&new).is_ok());
        // The same file, read by a new process, checks the new tokens.
        let again = JwtSecret::in_data_dir(dir.path()).unwrap();
        assert!(again.keys().verify(&new).is_ok());
    }
}
