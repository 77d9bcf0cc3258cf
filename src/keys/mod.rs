//! Sluice's own keys, kept beside the database and never in it: the sealing keys that encrypt
//! every stored secret at rest (`sealing.rs`), and the secret that signs login tokens
//! (`jwt.rs`). A copy of the database alone opens no secret; the data directory's key files
//! (or the environment) are the other half.

pub mod jwt;
pub mod sealing;

pub use sealing::{Keyring, Sealed};

/// A key file or a sealed value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot use {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Format(String),
    #[error(
        "a stored secret is sealed with key {0}, which this install does not have \
         (sealing.keys lost or replaced, or SLUICE_SEALING_KEYS without it)"
    )]
    UnknownKey(String),
    #[error("a stored secret does not open with its key {0}: the row or the key was altered")]
    Corrupt(String),
    #[error("{0}")]
    NotPossible(String),
}

/// A cheap identity of a file's contents (inode, length, modification time; nothing while it
/// is missing), to notice that a watched file (a key file, a certificate) was replaced or
/// rewritten without reading it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStamp(Option<(u64, u64, Option<std::time::SystemTime>)>);

impl FileStamp {
    pub fn of(path: &std::path::Path) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp(
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.ino(), m.len(), m.modified().ok())),
        )
    }
}

/// Writes `contents` to `path` readable by its owner only, atomically (a temporary file in the
/// same directory, then a rename), so a reader sees the old file or the new one, never half.
pub fn replace_private_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
