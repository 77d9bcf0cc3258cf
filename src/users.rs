//! Users: the rules for user names, passwords, roles and account status, shared by the API,
//! the CLI and the settings.

use rand::RngExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Length of generated passwords.
pub const GENERATED_PASSWORD_LEN: usize = 20;

/// Longest user name: Linux account names (useradd) stop at 32 characters.
pub const MAX_USERNAME_LEN: usize = 32;

/// Accounts and groups the managed image (Debian bookworm with OpenSSH's server) already has,
/// and a few every Linux system reserves: a user named so would collide inside their host.
pub const RESERVED_USERNAMES: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nogroup",
    "_apt",
    "sshd",
    "adm",
    "tty",
    "disk",
    "kmem",
    "dialout",
    "fax",
    "voice",
    "cdrom",
    "floppy",
    "tape",
    "sudo",
    "audio",
    "dip",
    "operator",
    "src",
    "shadow",
    "utmp",
    "video",
    "sasl",
    "plugdev",
    "staff",
    "users",
    "messagebus",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "systemd-journal",
    "polkitd",
    "halt",
    "shutdown",
    "wheel",
    "input",
    "kvm",
    "render",
    "netdev",
    "crontab",
];

/// A user name is 3-32 characters of `[a-z0-9._-]`, starts with a letter, and is not an
/// account the host image already has (it becomes the Linux account name inside the user's
/// hosts).
pub fn validate_username(s: &str) -> Result<(), String> {
    let len = s.chars().count();
    if !(3..=MAX_USERNAME_LEN).contains(&len) {
        return Err(format!("must be 3 to {MAX_USERNAME_LEN} characters"));
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lower-case letter".into());
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may contain only a-z, 0-9, '.', '_' and '-'".into());
    }
    if RESERVED_USERNAMES.contains(&s) {
        return Err(format!(
            "`{s}` is reserved: the host image has an account or group of that name"
        ));
    }
    Ok(())
}

/// A password is 8-128 characters.
pub fn validate_password(s: &str) -> Result<(), String> {
    let len = s.chars().count();
    if !(8..=128).contains(&len) {
        return Err("must be 8 to 128 characters".into());
    }
    Ok(())
}

/// A random password of [`GENERATED_PASSWORD_LEN`] letters and digits (about 119 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..GENERATED_PASSWORD_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// What an account may do: administer Sluice, or use its own hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// Account status. `expired` is set by the expiry sweep once `expires_at` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Disabled,
    Expired,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
            UserStatus::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(UserStatus::Active),
            "disabled" => Some(UserStatus::Disabled),
            "expired" => Some(UserStatus::Expired),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["abc", "alice", "a.b_c-9", &"a".repeat(32), "admin"] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "1abc",
            "Alice",
            "al ice",
            "al@ce",
            "",
            &"a".repeat(33),
            ".abc",
            "root",
            "sshd",
            "nobody",
            "www-data",
        ] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_passwords_are_valid_and_distinct() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), GENERATED_PASSWORD_LEN);
        assert!(validate_password(&a).is_ok());
        assert_ne!(a, b);
    }
}
