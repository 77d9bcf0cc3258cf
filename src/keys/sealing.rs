//! Sealing keys: AES-256-GCM keys that encrypt stored secrets, each known by an id (the first
//! 8 hex digits of its SHA-256), the newest the one new seals use.
//!
//! They come from `<data dir>/sealing.keys` (mode 0600, one `ID BASE64` line per key, newest
//! last; made with one key on first start) or, instead, from `SLUICE_SEALING_KEYS` (base64
//! keys, comma-separated, newest last), so a database and its data directory can be kept
//! apart from the key. A sealed value carries its key id; its associated data names the row
//! and column it belongs to, so a sealed value copied onto another row does not open.
//!
//! Rotation (`sluice keys rotate`, in another process while the server runs): a new key is
//! appended to the file, every row is sealed again under it, and keys no row uses any more
//! are dropped. The server notices the file changed before each seal and on an unknown key
//! id, so it seals under the new key and opens rows sealed by the rotation at once.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::{FileStamp, KeyError};

/// The key file in the data directory.
pub const FILE: &str = "sealing.keys";
/// The environment variable that gives the keys instead of the file.
pub const ENV: &str = "SLUICE_SEALING_KEYS";

/// A sealed value and the key it is sealed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    /// base64 of the nonce followed by the ciphertext and tag.
    pub text: String,
}

#[derive(Clone)]
struct Key {
    id: String,
    bytes: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Key {
    fn new(bytes: [u8; 32]) -> Key {
        Key {
            id: hex::encode(&Sha256::digest(bytes)[..4]),
            bytes,
        }
    }

    fn aead(&self) -> Result<LessSafeKey, KeyError> {
        UnboundKey::new(&AES_256_GCM, &self.bytes)
            .map(LessSafeKey::new)
            .map_err(|_| KeyError::Corrupt(self.id.clone()))
    }
}

/// Where the keys come from.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Env,
}

#[derive(Debug, Default)]
struct State {
    keys: Vec<Key>,
    /// The file as last read (inode, length, time), to notice a rotation.
    stamp: FileStamp,
}

/// The sealing keys of an install.
#[derive(Debug)]
pub struct Keyring {
    source: Source,
    state: RwLock<State>,
}

fn parse_file(path: &Path, text: &str) -> Result<Vec<Key>, KeyError> {
    let bad = |n: usize, why: &str| {
        KeyError::Format(format!(
            "{} line {n}: {why} (each line: a key id and a base64 key of 32 bytes)",
            path.display()
        ))
    };
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, b64) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad(i + 1, "expected two fields"))?;
        let key = decode_key(b64.trim()).map_err(|why| bad(i + 1, &why))?;
        if key.id != id {
            return Err(bad(i + 1, "the id does not match the key"));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(KeyError::Format(format!(
            "{} holds no key; restore it from a backup (a new one would not open the stored secrets)",
            path.display()
        )));
    }
    Ok(keys)
}

fn decode_key(b64: &str) -> Result<Key, String> {
    let bytes = B64
        .decode(b64)
        .map_err(|_| "not base64".to_string())?
        .try_into()
        .map_err(|_| "a key is 32 bytes".to_string())?;
    Ok(Key::new(bytes))
}

fn render(keys: &[Key]) -> String {
    let mut s = String::from(
        "# Sluice sealing keys (newest last). Without this file the stored secrets cannot be opened:\n\
         # back it up with the database, but not in the same place.\n",
    );
    for k in keys {
        s.push_str(&format!("{} {}\n", k.id, B64.encode(k.bytes)));
    }
    s
}

/// Parses `SLUICE_SEALING_KEYS`.
fn parse_env(value: &str) -> Result<Vec<Key>, KeyError> {
    let keys = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| {
            decode_key(s).map_err(|why| KeyError::Format(format!("{ENV}: key {}: {why}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(KeyError::Format(format!("{ENV} is set but holds no key")));
    }
    Ok(keys)
}

/// A new random key, base64, for `SLUICE_SEALING_KEYS`.
pub fn generate() -> String {
    B64.encode(rand::random::<[u8; 32]>())
}

impl Keyring {
    /// The install's keys: from `SLUICE_SEALING_KEYS` when set, else from the data
    /// directory's file, made with one new key if missing.
    pub fn open(data_dir: &Path) -> Result<Keyring, KeyError> {
        match std::env::var(ENV).ok().filter(|v| !v.trim().is_empty()) {
            Some(v) => Ok(Keyring {
                source: Source::Env,
                state: RwLock::new(State {
                    keys: parse_env(&v)?,
                    stamp: FileStamp::default(),
                }),
            }),
            None => Self::open_file(&data_dir.join(FILE)),
        }
    }

    fn open_file(path: &Path) -> Result<Keyring, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        if !path.exists() {
            let key = Key::new(rand::random());
            super::replace_private_file(path, render(std::slice::from_ref(&key)).as_bytes())
                .map_err(io)?;
            tracing::info!(path = %path.display(), key = %key.id, "made a sealing key for stored secrets");
        }
        let ring = Keyring {
            source: Source::File(path.to_path_buf()),
            state: RwLock::new(State::default()),
        };
        ring.reload()?;
        Ok(ring)
    }

    /// A keyring of the given keys, newest last (tests).
    #[cfg(test)]
    pub fn of(keys: &[[u8; 32]]) -> Keyring {
        Keyring {
            source: Source::Env,
            state: RwLock::new(State {
                keys: keys.iter().map(|k| Key::new(*k)).collect(),
                stamp: FileStamp::default(),
            }),
        }
    }

    /// Reads the file again (a no-op for keys from the environment).
    fn reload(&self) -> Result<(), KeyError> {
        let Source::File(path) = &self.source else {
            return Ok(());
        };
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            tracing::warn!(path = %path.display(), "the sealing key file was readable by others; it is now 0600");
        }
        let stamp = FileStamp::of(path);
        let keys = parse_file(path, &std::fs::read_to_string(path).map_err(io)?)?;
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.keys = keys;
        state.stamp = stamp;
        Ok(())
    }

    /// Reads the file again if it changed since it was last read.
    fn refresh(&self) -> Result<(), KeyError> {
        if let Source::File(path) = &self.source {
            let seen = self.state.read().unwrap_or_else(|p| p.into_inner()).stamp;
            if seen != FileStamp::of(path) {
                self.reload()?;
            }
        }
        Ok(())
    }

    fn key(&self, id: &str) -> Option<Key> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.keys.iter().find(|k| k.id == id).cloned()
    }

    fn current(&self) -> Result<Key, KeyError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .keys
            .last()
            .cloned()
            .ok_or_else(|| KeyError::Format("no sealing key".into()))
    }

    /// The id new seals use.
    pub fn current_id(&self) -> Result<String, KeyError> {
        self.refresh()?;
        Ok(self.current()?.id)
    }

    /// Every key id, oldest first.
    pub fn ids(&self) -> Vec<String> {
        let _ = self.refresh();
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// Whether the keys come from `SLUICE_SEALING_KEYS`.
    pub fn from_env(&self) -> bool {
        matches!(self.source, Source::Env)
    }

    /// Seals `plain` under the newest key, bound to `context` (which row and column).
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Result<Sealed, KeyError> {
        self.refresh()?;
        let key = self.current()?;
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut buf = plain.to_vec();
        key.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context),
                &mut buf,
            )
            .map_err(|_| KeyError::Corrupt(key.id.clone()))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(Sealed {
            key_id: key.id,
            text: B64.encode(out),
        })
    }

    /// Opens a sealed value bound to `context`.
    pub fn open_sealed(&self, context: &[u8], sealed: &Sealed) -> Result<Vec<u8>, KeyError> {
        let key = match self.key(&sealed.key_id) {
            Some(k) => k,
            None => {
                // Sealed by a rotation this process has not seen yet.
                self.reload()?;
                self.key(&sealed.key_id)
                    .ok_or_else(|| KeyError::UnknownKey(sealed.key_id.clone()))?
            }
        };
        let corrupt = || KeyError::Corrupt(key.id.clone());
        let bytes = B64.decode(&sealed.text).map_err(|_| corrupt())?;
        if bytes.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, ct) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut buf = ct.to_vec();
        let plain = key
            .aead()?
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| corrupt())?;
        Ok(plain.to_vec())
    }

    /// Appends a new key to the file and makes it the one new seals use; answers its id.
    pub fn add_key(&self) -> Result<String, KeyError> {
        let Source::File(path) = &self.source else {
            return Err(KeyError::NotPossible(format!(
                "the sealing keys come from {ENV}: append a new key there (`sluice keys generate` \
                 makes one), give the server and this command the new value, then run \
                 `sluice keys rotate` again"
            )));
        };
        self.reload()?;
        let key = Key::new(rand::random());
        let mut keys = self
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .clone();
        keys.push(key.clone());
        super::replace_private_file(path, render(&keys).as_bytes()).map_err(|source| {
            KeyError::Io {
                path: path.clone(),
                source,
            }
        })?;
        self.reload()?;
        Ok(key.id)
    }

    /// Drops from the file every key but the newest that no row uses; answers their ids.
    pub fn prune(&self, in_use: &[String]) -> Result<Vec<String>, KeyError> {
        let Source::File(path) = &self.source else {
            return Ok(Vec::new());
        };
        self.reload()?;
        let keys = self
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .clone();
        let Some(newest) = keys.last().map(|k| k.id.clone()) else {
            return Ok(Vec::new());
        };
        let (kept, dropped): (Vec<Key>, Vec<Key>) = keys
            .into_iter()
            .partition(|k| k.id == newest || in_use.contains(&k.id));
        if dropped.is_empty() {
            return Ok(Vec::new());
        }
        super::replace_private_file(path, render(&kept).as_bytes()).map_err(|source| {
            KeyError::Io {
                path: path.clone(),
                source,
            }
        })?;
        self.reload()?;
        Ok(dropped.into_iter().map(|k| k.id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_context() {
        let ring = Keyring::of(&[[1; 32], [2; 32]]);
        let s = ring.seal(b"egress_ips.settings:1", b"private key").unwrap();
        assert_eq!(s.key_id, Key::new([2; 32]).id);
        assert!(!s.text.contains("private"));
        assert_eq!(
            ring.open_sealed(b"egress_ips.settings:1", &s).unwrap(),
            b"private key"
        );
        // Another row's context, a flipped byte, another key: refused.
        assert!(matches!(
            ring.open_sealed(b"egress_ips.settings:2", &s),
            Err(KeyError::Corrupt(_))
        ));
        let mut bytes = B64.decode(&s.text).unwrap();
        bytes[NONCE_LEN] ^= 1;
        let flipped = Sealed {
            text: B64.encode(bytes),
            ..s.clone()
        };
        assert!(
            ring.open_sealed(b"egress_ips.settings:1", &flipped)
                .is_err()
        );
        let other = Keyring::of(&[[3; 32]]);
        assert!(matches!(
            other.open_sealed(b"egress_ips.settings:1", &s),
            Err(KeyError::UnknownKey(_))
        ));
        // Two seals of one value differ (fresh nonces).
        assert_ne!(
            ring.seal(b"c", b"v").unwrap().text,
            ring.seal(b"c", b"v").unwrap().text
        );
    }

    #[test]
    fn the_file_is_made_private_rotated_and_pruned() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let ring = Keyring::open_file(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let first = ring.current_id().unwrap();
        let old = ring.seal(b"c", b"secret").unwrap();
        // Another process (the rotation) adds a key: this one seals under it at once and
        // still opens the old value.
        let other = Keyring::open_file(&path).unwrap();
        let second = other.add_key().unwrap();
        assert_ne!(first, second);
        assert_eq!(ring.seal(b"c", b"x").unwrap().key_id, second);
        assert_eq!(ring.open_sealed(b"c", &old).unwrap(), b"secret");
        // A key still used is kept; once unused it is dropped; the newest always stays.
        assert!(
            other
                .prune(std::slice::from_ref(&first))
                .unwrap()
                .is_empty()
        );
        assert_eq!(other.prune(&[]).unwrap(), vec![first.clone()]);
        assert_eq!(other.ids(), vec![second.clone()]);
        let sealed_new = other.seal(b"c", b"y").unwrap();
        assert_eq!(ring.open_sealed(b"c", &sealed_new).unwrap(), b"y");
        // A tampered file is refused with the line named.
        std::fs::write(&path, format!("{first} {}\n", B64.encode([9u8; 32]))).unwrap();
        let e = Keyring::open_file(&path).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("does not match"), "{e}");
    }

    #[test]
    fn keys_from_the_environment_parse_newest_last() {
        let a = generate();
        let b = generate();
        let keys = parse_env(&format!("{a}, {b}")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].id, decode_key(&b).unwrap().id);
        assert!(parse_env("not-base64!").is_err());
        assert!(parse_env(&B64.encode([0u8; 16])).is_err());
        assert!(parse_env(" , ").is_err());
    }
}
