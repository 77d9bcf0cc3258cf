//! Hosts: a user's container, as the control plane sees it. Short ids, resource bounds and
//! access commands live here, the status machine in `status.rs`; the runtime module makes them real.

use rand::RngExt;

pub mod account;
mod status;
pub use status::{HostStatus, StatusConflict};

/// Characters of a short id: lower case, without the look-alikes 0/o, 1/l/i.
pub const SHORT_ID_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
pub const SHORT_ID_LEN: usize = 8;

/// A new random short id, such as `k3x9m2qa`.
pub fn generate_short_id() -> String {
    let mut rng = rand::rng();
    (0..SHORT_ID_LEN)
        .map(|_| SHORT_ID_ALPHABET[rng.random_range(0..SHORT_ID_ALPHABET.len())] as char)
        .collect()
}

/// Whether `s` has the shape of a short id.
pub fn is_short_id(s: &str) -> bool {
    s.len() == SHORT_ID_LEN && s.bytes().all(|b| SHORT_ID_ALPHABET.contains(&b))
}

/// Resource bounds of a host, with defaults.
pub const MEMORY_MB_DEFAULT: i64 = 1024;
pub const MEMORY_MB_RANGE: (i64, i64) = (64, 65536);
pub const CPUS_DEFAULT: f64 = 1.0;
pub const CPUS_RANGE: (f64, f64) = (0.1, 64.0);
pub const PIDS_DEFAULT: i64 = 512;
/// A desktop host's default process limit: its browser alone runs hundreds of threads, and
/// the limit counts threads.
pub const DESKTOP_PIDS_DEFAULT: i64 = 4096;
pub const PIDS_RANGE: (i64, i64) = (32, 65536);

/// The commands an operator and a user get to reach a host.
pub fn access_commands(
    base_url: &str,
    ssh_host: &str,
    ssh_port: u16,
    short_id: &str,
) -> (String, String) {
    (
        format!("curl -sSf {base_url}/entry/{short_id} | bash"),
        format!("ssh -p {ssh_port} {short_id}@{ssh_host}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_have_the_documented_shape() {
        for _ in 0..100 {
            let s = generate_short_id();
            assert!(is_short_id(&s), "{s}");
        }
        assert!(!is_short_id("k3x9m2q0"));
        assert!(!is_short_id("k3x9m2q"));
    }
}
