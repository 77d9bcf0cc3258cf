//! Backups: one archive holding a consistent online snapshot of the database (SQLite's
//! `VACUUM INTO`, PostgreSQL's `pg_dump`) and the data directory's own files (sealing keys,
//! JWT secret, the SSH proxy's host key, the install id, every host's keys), with a manifest
//! of SHA-256 checksums; and its restore, which checks every checksum before it writes
//! anything, refuses while a server runs on the data directory, and refuses to replace an
//! existing install unless forced. A restored install starts, logs in with the same
//! credentials, and re-attaches its hosts (the install id is the backup's).
//!
//! The archive holds the sealing keys beside the sealed database, so it opens every secret:
//! it is written 0600 and belongs where the keys themselves would. Made without keys (for an
//! off-site copy), it leaves out the sealing keys and the JWT secret; its restore then needs
//! the install's sealing keys put in place (or `SLUICE_SEALING_KEYS`) first.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a backup or restore could not do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(String),
    #[error("{0}")]
    Tool(String),
    /// The archive is not one this version can restore, or it was altered.
    #[error("{0}")]
    BadArchive(String),
    /// A running server or an existing install stands in the way.
    #[error("{0}")]
    Conflict(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";

/// The archive's table of contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub sluice_version: String,
    pub created_at: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    pub instance_id: Option<String>,
    /// Whether the sealing keys and the JWT secret are in it (archives made before this field
    /// always held them).
    #[serde(default = "included")]
    pub keys_included: bool,
    pub files: Vec<Entry>,
}

fn included() -> bool {
    true
}

/// The data directory's keys an archive made without keys leaves out.
pub const KEY_FILES: [&str; 2] = ["sealing.keys", "jwt_secret"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Data directory files a backup leaves out: the database (snapshotted instead), the lock,
/// and the first start's one-time admin password.
fn skipped(name: &str) -> bool {
    matches!(name, "lock" | "admin-password")
        || name.starts_with("sluice.db")
        || name.starts_with(".backup-")
        || name.contains(".tmp")
}

fn backend_of(url: &str) -> Result<&'static str, BackupError> {
    if url.starts_with("sqlite:") {
        Ok("sqlite")
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok("postgres")
    } else {
        Err(BackupError::Database(format!(
            "DATABASE_URL `{}` is not sqlite:// or postgres://",
            crate::store::redact_url(url)
        )))
    }
}

/// A PostgreSQL URL without its password, and the password (for `PGPASSWORD`, so it never
/// shows on a command line).
fn split_password(url: &str) -> (String, Option<String>) {
    match crate::store::url_password(url) {
        // Without the ':' before the password, too.
        Some(pw) => (
            format!("{}{}", &url[..pw.start - 1], &url[pw.end..]),
            Some(percent_decode(&url[pw])),
        ),
        None => (url.to_string(), None),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pg_tool(tool: &str, url: &str) -> std::process::Command {
    let (bare, password) = split_password(url);
    let mut cmd = std::process::Command::new(tool);
    cmd.arg("--dbname").arg(bare);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    cmd
}

fn run_tool(mut cmd: std::process::Command, what: &str) -> Result<(), BackupError> {
    let out = cmd.output().map_err(|e| {
        BackupError::Tool(format!(
            "{what}: cannot run it ({e}); install Debian's postgresql-client"
        ))
    })?;
    if !out.status.success() {
        return Err(BackupError::Tool(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}

/// Regular files under `dir`, as paths relative to it.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), BackupError> {
    let here = dir.join(rel);
    for entry in std::fs::read_dir(&here).map_err(io(&here))? {
        let entry = entry.map_err(io(&here))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if rel.as_os_str().is_empty() && skipped(&name) {
            continue;
        }
        let kind = entry.file_type().map_err(io(&entry.path()))?;
        let path = rel.join(&name);
        if kind.is_dir() {
            walk(dir, &path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// A private staging directory in the data directory, removed when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(parent: &Path) -> Result<Staging, BackupError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = parent.join(format!(".backup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(io(&path))?;
        Ok(Staging(path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a backup made.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub path: PathBuf,
    pub backend: String,
    pub files: usize,
    pub bytes: u64,
    /// Whether the sealing keys and the JWT secret are in it.
    pub keys_included: bool,
}

/// Snapshots the database at `url` and the files of `data_dir` into `output` (0600); without
/// `with_keys`, the sealing keys and the JWT secret stay out.
pub async fn create(
    data_dir: &Path,
    url: &str,
    output: &Path,
    with_keys: bool,
) -> Result<Created, BackupError> {
    let backend = backend_of(url)?;
    if !data_dir.join("instance_id").exists() {
        return Err(BackupError::Conflict(format!(
            "{} holds no Sluice install (no instance_id): check SLUICE_DATA_DIR",
            data_dir.display()
        )));
    }
    let staging = Staging::new(data_dir)?;
    let snapshot = match backend {
        "sqlite" => {
            use sqlx::Connection;
            use std::str::FromStr;
            let path = staging.0.join("sluice.db");
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(|e| BackupError::Database(e.to_string()))?;
            let mut c = sqlx::SqliteConnection::connect_with(&opts)
                .await
                .map_err(|e| BackupError::Database(e.to_string()))?;
            // One transaction's view of the whole database, while the server writes on.
            sqlx::query("VACUUM INTO $1")
                .bind(path.to_string_lossy().into_owned())
                .execute(&mut c)
                .await
                .map_err(|e| BackupError::Database(format!("VACUUM INTO: {e}")))?;
            path
        }
        _ => {
            let path = staging.0.join("sluice.pgdump");
            let mut cmd = pg_tool("pg_dump", url);
            cmd.args(["--format=custom", "--no-owner", "--no-privileges", "--file"])
                .arg(&path);
            run_tool(cmd, "pg_dump")?;
            path
        }
    };
    let mut files: Vec<(String, PathBuf)> = vec![(
        format!(
            "database/{}",
            snapshot.file_name().unwrap_or_default().to_string_lossy()
        ),
        snapshot.clone(),
    )];
    let mut rel = Vec::new();
    walk(data_dir, Path::new(""), &mut rel)?;
    if !with_keys {
        rel.retain(|r| !KEY_FILES.iter().any(|k| r.as_os_str() == *k));
    }
    rel.sort();
    files.extend(
        rel.into_iter()
            .map(|r| (format!("data/{}", r.display()), data_dir.join(r))),
    );

    let mut entries = Vec::new();
    for (name, path) in &files {
        let (size, sha256) = sha256_file(path)?;
        entries.push(Entry {
            path: name.clone(),
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        sluice_version: env!("CARGO_PKG_VERSION").into(),
        created_at: crate::clock::now()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        backend: backend.into(),
        instance_id: std::fs::read_to_string(data_dir.join("instance_id"))
            .ok()
            .map(|s| s.trim().to_string()),
        keys_included: with_keys,
        files: entries,
    };

    // Written beside the output, then renamed: a half-written archive never has its name.
    let tmp = output.with_extension(format!("tmp{}", std::process::id()));
    let result = write_archive(&tmp, &files, &manifest);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, output).map_err(io(output))?;
    let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    Ok(Created {
        path: output.to_path_buf(),
        backend: backend.into(),
        files: files.len(),
        bytes,
        keys_included: with_keys,
    })
}

fn write_archive(
    path: &Path,
    files: &[(String, PathBuf)],
    manifest: &Manifest,
) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, src) in files {
        let mut f = std::fs::File::open(src).map_err(io(src))?;
        tar.append_file(name, &mut f).map_err(io(src))?;
    }
    let json =
        serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::BadArchive(e.to_string()))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(crate::clock::now().unix_timestamp().max(0) as u64);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, json.as_slice())
        .map_err(io(path))?;
    let gz = tar.into_inner().map_err(io(path))?;
    let mut file = gz.finish().map_err(io(path))?;
    file.flush().map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub backend: String,
    pub created_at: String,
    pub files: usize,
    pub instance_id: Option<String>,
    /// Whether the keys came from the archive (otherwise they were in place already).
    pub keys_included: bool,
}

/// Whether an install lives in `data_dir` or in the database at `url` already. Keys put in
/// place for an archive made without them (`keys_placed`) are no install of their own.
async fn install_present(data_dir: &Path, url: &str, keys_placed: bool) -> bool {
    let files = ["instance_id", "sealing.keys", "jwt_secret", "sluice.db"]
        .iter()
        .filter(|f| !(keys_placed && KEY_FILES.contains(f)))
        .any(|f| data_dir.join(f).exists());
    files
        || !url.starts_with("sqlite:")
            && crate::store::Store::probe(url)
                .await
                .is_ok_and(|p| p.is_some_and(|pending| pending == 0))
}

/// Restores `archive` into `data_dir` and the database at `url`.
pub async fn restore(
    archive: &Path,
    data_dir: &Path,
    url: &str,
    force: bool,
) -> Result<Restored, BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    let backend = backend_of(url)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io(data_dir))?;
    // The server's own lock: none may run while its files and database are replaced, and
    // none may start before the restore is done.
    let lock_path = data_dir.join("lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| {
            BackupError::Conflict(format!(
                "a sluice serve is running on {}: stop it before restoring",
                data_dir.display()
            ))
        })?;

    let staging = Staging::new(data_dir)?;
    let manifest = unpack(archive, &staging.0)?;
    if manifest.backend != backend {
        return Err(BackupError::Conflict(format!(
            "the backup is of a {} database and DATABASE_URL is {}: restore into the same kind",
            manifest.backend, backend
        )));
    }
    if !manifest.keys_included
        && !data_dir.join("sealing.keys").exists()
        && std::env::var_os("SLUICE_SEALING_KEYS").is_none()
    {
        return Err(BackupError::Conflict(format!(
            "the backup was made --without-keys: put the install's sealing.keys in {} (or set \
             SLUICE_SEALING_KEYS) before restoring, or its egress secrets cannot be opened",
            data_dir.display()
        )));
    }
    if !force && install_present(data_dir, url, !manifest.keys_included).await {
        return Err(BackupError::Conflict(format!(
            "an install is already in {} or its database: restoring replaces it; say --force to do so",
            data_dir.display()
        )));
    }

    // The database first: if it fails, the data directory is untouched.
    let snapshot = manifest
        .files
        .iter()
        .find(|e| e.path.starts_with("database/"))
        .ok_or_else(|| BackupError::BadArchive("the backup holds no database".into()))?;
    let snapshot = staging.0.join(&snapshot.path);
    match backend {
        "sqlite" => {
            use std::str::FromStr;
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(|e| BackupError::Database(e.to_string()))?;
            let target = opts.get_filename().to_path_buf();
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", target.display()));
            }
            let tmp = target.with_extension("db.restoring");
            std::fs::copy(&snapshot, &tmp).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &target).map_err(io(&target))?;
        }
        _ => {
            let mut cmd = pg_tool("pg_restore", url);
            cmd.args([
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
            ])
            .arg(&snapshot);
            run_tool(cmd, "pg_restore")?;
        }
    }
    let mut count = 1;
    for e in &manifest.files {
        let Some(rel) = e.path.strip_prefix("data/") else {
            continue;
        };
        let from = staging.0.join(&e.path);
        let to = data_dir.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io(parent))?;
        }
        let tmp = to.with_extension("restoring");
        std::fs::copy(&from, &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &to).map_err(io(&to))?;
        count += 1;
    }
    Ok(Restored {
        backend: manifest.backend,
        created_at: manifest.created_at,
        files: count,
        instance_id: manifest.instance_id,
        keys_included: manifest.keys_included,
    })
}

/// Unpacks an archive into `into`, checking that every file is the manifest's, byte for byte,
/// with nothing missing and nothing extra.
fn unpack(archive: &Path, into: &Path) -> Result<Manifest, BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |why: String| BackupError::BadArchive(format!("{}: {why}", archive.display()));
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut manifest: Option<Manifest> = None;
    let mut seen: Vec<(String, u64, String)> = Vec::new();
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if name == MANIFEST {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| bad(e.to_string()))?;
            manifest =
                Some(serde_json::from_str(&text).map_err(|e| bad(format!("manifest: {e}")))?);
            continue;
        }
        // Only plain relative paths under the two roots: nothing may land outside `into`.
        let safe = (name.starts_with("data/") || name.starts_with("database/"))
            && Path::new(&name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe || !entry.header().entry_type().is_file() {
            return Err(bad(format!("unexpected entry {name}")));
        }
        let dest = into.join(&name);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(io(&dest))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|e| bad(e.to_string()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io(&dest))?;
            size += n as u64;
        }
        seen.push((name, size, hex::encode(h.finalize())));
    }
    let manifest = manifest.ok_or_else(|| bad("no manifest: not a Sluice backup".into()))?;
    if manifest.format != FORMAT {
        return Err(bad(format!(
            "backup format {} (this Sluice reads {FORMAT})",
            manifest.format
        )));
    }
    let mut want: Vec<(String, u64, String)> = manifest
        .files
        .iter()
        .map(|e| (e.path.clone(), e.size, e.sha256.clone()))
        .collect();
    want.sort();
    seen.sort();
    if want != seen {
        let differs = want
            .iter()
            .find(|w| !seen.contains(w))
            .map(|w| w.0.clone())
            .or_else(|| seen.iter().find(|s| !want.contains(s)).map(|s| s.0.clone()))
            .unwrap_or_default();
        return Err(bad(format!(
            "{differs} does not match the manifest's checksum: the archive is damaged or altered"
        )));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_command_line() {
        let (bare, pw) = split_password("postgres://sluice:p%40ss%3Aw@db:5432/sluice");
        assert_eq!(bare, "postgres://sluice@db:5432/sluice");
        assert_eq!(pw.as_deref(), Some("p@ss:w"));
        assert_eq!(
            split_password("postgres://u@h/db"),
            ("postgres://u@h/db".into(), None)
        );
    }

    #[test]
    fn only_the_install_files_are_taken() {
        for name in [
            "lock",
            "admin-password",
            "sluice.db",
            "sluice.db-wal",
            ".backup-12",
            "sealing.keys.tmp1",
        ] {
            assert!(skipped(name), "{name}");
        }
        for name in ["sealing.keys", "jwt_secret", "instance_id", "hosts"] {
            assert!(!skipped(name), "{name}");
        }
    }
}
