//! Docker's user-namespace remapping (`dockerd --userns-remap=default`): whether the engine
//! remaps, and which host ids a container's ids map to (the `dockremap` ranges of /etc/subuid
//! and /etc/subgid). Under it, a container's root is an unprivileged id on the machine, so the
//! few files Sluice gives a container's root (the sshd host key, the VNC password) belong to
//! that id, and hosts' account uids must fall inside the mapped range.

/// How the engine maps a container's ids onto the machine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// The machine's uid of the container's root (uid 0).
    pub uid_base: u32,
    /// The machine's gid of the container's root group.
    pub gid_base: u32,
    /// How many ids are mapped (container ids 0 to size - 1).
    pub size: u32,
}

/// The user Docker creates for `--userns-remap=default`, whose subordinate ranges it uses.
pub const DEFAULT_USER: &str = "dockremap";

/// Whether the engine's security options (`docker info`) say it remaps user namespaces.
pub fn remapping(security_options: &[String]) -> bool {
    security_options
        .iter()
        .any(|o| o.split(',').any(|kv| kv == "name=userns"))
}

/// The first range of `user` in an /etc/subuid-style file: (start, count).
pub fn subordinate(text: &str, user: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (name, start, count) = (f.next()?, f.next()?, f.next()?);
        (name == user).then_some((start.parse().ok()?, count.parse().ok()?))
    })
}

impl IdMap {
    /// The map of `--userns-remap=default`, from the machine's subordinate id files.
    pub fn of_default_user() -> Result<IdMap, String> {
        let read = |path: &str| {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            subordinate(&text, DEFAULT_USER).ok_or_else(|| {
                format!(
                    "the engine remaps user namespaces, but {path} has no range for \
                     {DEFAULT_USER}: Sluice supports --userns-remap=default"
                )
            })
        };
        let (uid_base, uids) = read("/etc/subuid")?;
        let (gid_base, gids) = read("/etc/subgid")?;
        Ok(IdMap {
            uid_base,
            gid_base,
            size: uids.min(gids),
        })
    }

    /// Whether a container uid is mapped (and so usable for an account).
    pub fn maps(&self, uid: u32) -> bool {
        uid < self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_s_remapping_and_the_default_ranges_are_read() {
        assert!(remapping(&[
            "name=seccomp,profile=default".into(),
            "name=userns".into()
        ]));
        assert!(!remapping(&["name=seccomp,profile=default".into()]));
        let subuid = "alice:165536:65536\ndockremap:100000:65536\n";
        assert_eq!(subordinate(subuid, "dockremap"), Some((100000, 65536)));
        assert_eq!(subordinate(subuid, "bob"), None);
        assert_eq!(subordinate("dockremap:x:1", "dockremap"), None);
        let m = IdMap {
            uid_base: 100000,
            gid_base: 100000,
            size: 65536,
        };
        assert!(m.maps(59_999) && !m.maps(65_536));
    }
}
