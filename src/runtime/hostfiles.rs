//! Sluice's files for one host, under `<data dir>/hosts/<host id>/`:
//!
//! - `etc/` is mounted read-only at /etc/sluice in the container: the sshd host key, the
//!   `authorized_keys` (the host's internal key and the owner's keys), and `account`.
//! - `resolv.conf` is mounted read-only at /etc/resolv.conf.
//! - `internal_key` is the private key the SSH proxy logs in with; it never enters the container.
//! - `etc/vnc_password` (root-only) is the desktop's VNC password: the desktop image makes its
//!   X server's password file from it, and Sluice answers the browser's VNC handshake itself.
//!
//! Keys are made once, when the host is first created, and kept, so rebuilds keep the host key
//! the SSH proxy pins.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::auth::sshkey;

/// Where a host's files live.
#[derive(Debug, Clone)]
pub struct HostFiles {
    pub root: PathBuf,
}

impl HostFiles {
    pub fn new(data_dir: &Path, host_id: uuid::Uuid) -> Self {
        Self {
            root: data_dir.join("hosts").join(host_id.to_string()),
        }
    }

    pub fn etc(&self) -> PathBuf {
        self.root.join("etc")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }
    pub fn internal_key(&self) -> PathBuf {
        self.root.join("internal_key")
    }
    pub fn host_key_pub(&self) -> PathBuf {
        self.etc().join("ssh_host_ed25519_key.pub")
    }
    pub fn vnc_password(&self) -> PathBuf {
        self.etc().join("vnc_password")
    }

    /// Writes everything the container needs: keys (made once), the account, the authorized
    /// keys and the resolver configuration. Safe to call again. `container_root` is the
    /// machine's uid and gid of the container's root under Docker's `userns-remap`: everything
    /// under `etc/` is given to it, since sshd's strict modes accept only files and
    /// directories its own root owns (the machine's root is `nobody` in there).
    pub fn prepare(
        &self,
        account: &super::Account,
        owner_keys: &[String],
        nameserver: &str,
        container_root: Option<(u32, u32)>,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(self.etc())?;
        set_mode(&self.root, 0o700)?;
        set_mode(&self.etc(), 0o755)?;
        let host_key = self.etc().join("ssh_host_ed25519_key");
        if !host_key.exists() {
            let (private, public) =
                sshkey::generate("sluice-host").map_err(std::io::Error::other)?;
            write_file(&host_key, private.as_bytes(), 0o600)?;
            write_file(&self.host_key_pub(), public.public_key.as_bytes(), 0o644)?;
        }
        if !self.internal_key().exists() {
            let (private, public) =
                sshkey::generate("sluice-proxy").map_err(std::io::Error::other)?;
            write_file(&self.internal_key(), private.as_bytes(), 0o600)?;
            write_file(
                &self.root.join("internal_key.pub"),
                public.public_key.as_bytes(),
                0o644,
            )?;
        }
        if !self.vnc_password().exists() {
            // VNC authentication uses at most 8 characters.
            let password = crate::users::generate_password();
            let password: String = password.chars().take(8).collect();
            write_file(&self.vnc_password(), password.as_bytes(), 0o600)?;
        }
        if let Some((uid, gid)) = container_root {
            for owned in [
                self.etc(),
                host_key.clone(),
                self.host_key_pub(),
                self.vnc_password(),
            ] {
                std::os::unix::fs::chown(owned, Some(uid), Some(gid))?;
            }
        }
        let internal_pub = std::fs::read_to_string(self.root.join("internal_key.pub"))?;
        let mut authorized = String::new();
        authorized.push_str(internal_pub.trim());
        authorized.push('\n');
        for k in owner_keys {
            authorized.push_str(k.trim());
            authorized.push('\n');
        }
        replace_file(
            &self.etc().join("authorized_keys"),
            authorized.as_bytes(),
            0o644,
            container_root,
        )?;
        replace_file(
            &self.etc().join("account"),
            format!("SLUICE_USER={}\nSLUICE_UID={}\n", account.name, account.uid).as_bytes(),
            0o644,
            container_root,
        )?;
        self.write_resolv_conf(nameserver)
    }

    /// Points the host's resolver at `nameserver`. Written in place, since the file is
    /// bind-mounted on its own.
    pub fn write_resolv_conf(&self, nameserver: &str) -> std::io::Result<()> {
        write_file(
            &self.resolv_conf(),
            format!("# managed by Sluice\nnameserver {nameserver}\noptions timeout:2 attempts:2\n")
                .as_bytes(),
            0o644,
        )
    }

    /// Removes every file of the host.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

/// Replaces a file of `etc/` (a directory bind mount, which sees a renamed-in file) with a new
/// one of `mode`, owned by `owner` when given: written beside it, then renamed over it, so
/// sshd never reads half a file and the machine's root never writes into a file it does not
/// own.
fn replace_file(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, data, mode)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
    }
    std::fs::rename(&tmp, path)
}

/// Writes a file in place (keeping its inode, so bind mounts see the change) with `mode`.
fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)?;
    set_mode(path, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn keys_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let f = HostFiles::new(dir.path(), uuid::Uuid::now_v7());
        let alice = crate::runtime::Account {
            name: "alice".into(),
            uid: 20_000,
        };
        f.prepare(
            &alice,
            &["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7zX9 me".into()],
            "127.0.0.1",
            None,
        )
        .unwrap();
        let key = std::fs::read_to_string(f.host_key_pub()).unwrap();
        let internal = std::fs::read(f.internal_key()).unwrap();
        let vnc = std::fs::read_to_string(f.vnc_password()).unwrap();
        assert_eq!(vnc.len(), 8, "VNC passwords are 8 characters");
        f.prepare(&alice, &[], "10.64.0.1", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(f.etc().join("account")).unwrap(),
            "SLUICE_USER=alice\nSLUICE_UID=20000\n"
        );
        assert_eq!(std::fs::read_to_string(f.vnc_password()).unwrap(), vnc);
        assert_eq!(
            std::fs::metadata(f.vnc_password()).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_to_string(f.host_key_pub()).unwrap(), key);
        assert_eq!(std::fs::read(f.internal_key()).unwrap(), internal);
        let meta = std::fs::metadata(f.etc().join("ssh_host_ed25519_key")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(f.internal_key()).unwrap().mode() & 0o777,
            0o600
        );
        let auth = std::fs::read_to_string(f.etc().join("authorized_keys")).unwrap();
        assert_eq!(auth.lines().count(), 1, "owner keys replaced: {auth}");
        assert!(
            std::fs::read_to_string(f.resolv_conf())
                .unwrap()
                .contains("nameserver 10.64.0.1")
        );
        f.remove().unwrap();
        assert!(!f.root.exists());
        f.remove().unwrap();
    }
}
