//! One-time entry credentials: short-lived passwords the entry and bootstrap flows hand to
//! `ssh`, each good for one login to one host within two minutes. Kept in memory only (the
//! API and the proxy share the process); a restart voids them, which is what a user expects
//! of a two-minute password.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngExt;
use uuid::Uuid;

/// How long an entry credential stays valid.
pub const ENTRY_CREDENTIAL_TTL: Duration = Duration::from_secs(120);
/// At most this many unexpired credentials are kept; the oldest go first.
const MAX_LIVE: usize = 10_000;
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

struct Issued {
    host_id: Uuid,
    expires: Instant,
}

/// The live one-time credentials, keyed by their SHA-256 (the plain text is never kept).
#[derive(Default)]
pub struct EntryCredentials {
    live: Mutex<HashMap<[u8; 32], Issued>>,
}

fn digest(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

impl EntryCredentials {
    /// A new credential for `host_id`.
    pub fn issue(&self, host_id: Uuid) -> String {
        let mut rng = rand::rng();
        let secret: String = (0..32)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, i| i.expires > now);
        if live.len() >= MAX_LIVE
            && let Some(oldest) = live.iter().min_by_key(|(_, i)| i.expires).map(|(k, _)| *k)
        {
            live.remove(&oldest);
        }
        live.insert(
            digest(&secret),
            Issued {
                host_id,
                expires: now + ENTRY_CREDENTIAL_TTL,
            },
        );
        secret
    }

    /// Whether `secret` is a live credential for `host_id`; a match is used up.
    pub fn redeem(&self, host_id: Uuid, secret: &str) -> bool {
        let key = digest(secret);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        match live.get(&key) {
            Some(i) if i.host_id == host_id && i.expires > Instant::now() => {
                live.remove(&key);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_works_once_and_only_for_its_host() {
        let c = EntryCredentials::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let s = c.issue(a);
        assert_eq!(s.len(), 32);
        assert!(!c.redeem(b, &s), "another host");
        assert!(c.redeem(a, &s));
        assert!(!c.redeem(a, &s), "used up");
        assert!(!c.redeem(a, "not-issued"));
    }
}
