//! The proxy's own host key: ed25519, made on first start and kept in the data directory
//! (mode 0600), so users' known_hosts entries stay valid across restarts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::ssh_key::{Algorithm, LineEnding, PrivateKey};

/// File name of the key inside the data directory.
pub const FILE: &str = "ssh_proxy_host_ed25519_key";

/// Reads the proxy's host key, making it first when there is none.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<PrivateKey> {
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
            std::io::Error::other(format!(
                "{} is not an OpenSSH private key: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
                .map_err(|e| std::io::Error::other(format!("cannot make a host key: {e}")))?;
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| std::io::Error::other(format!("cannot encode the host key: {e}")))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(text.as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// The `known_hosts` line that pins `key` for `host` on `port`.
pub fn known_hosts_line(key: &PrivateKey, host: &str, port: u16) -> String {
    let mut public = key.public_key().clone();
    public.set_comment("");
    let public = public.to_openssh().unwrap_or_default();
    if port == 22 {
        format!("{host} {}", public.trim())
    } else {
        format!("[{host}]:{port} {}", public.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let line = known_hosts_line(&a, "sluice.test", 2222);
        assert!(
            line.starts_with("[sluice.test]:2222 ssh-ed25519 AAAA"),
            "{line}"
        );
        assert_eq!(line.split(' ').count(), 3);
    }
}
