//! Password hashing with argon2id, off the async executor and under one global gate: at most
//! [`gate_size`] hashes run at once, whoever asks (logins, short links, bootstrap, SSH
//! passwords, new passwords), so a flood of guesses cannot take every core. A caller that
//! waits longer than [`GATE_WAIT`] for its turn is told Sluice is busy. Callers never hold a
//! database connection while they wait or hash.

use std::sync::LazyLock;
use std::time::Duration;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use super::AuthError;

/// How long a caller waits for a hashing slot before it is answered "busy".
pub const GATE_WAIT: Duration = Duration::from_secs(10);

/// Hashes that may run at once: one core is always left for everything else.
pub fn gate_size() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

static GATE: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(gate_size()));

/// Runs `work` on a blocking thread once a slot of the gate is free.
async fn gated<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    let _permit = tokio::time::timeout(GATE_WAIT, GATE.acquire())
        .await
        .map_err(|_| AuthError::Busy)?
        .map_err(|_| AuthError::Busy)?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Hashes a password into a PHC string.
pub async fn hash(password: &str) -> Result<String, AuthError> {
    let password = password.to_owned();
    gated(move || hash_blocking(&password)).await?
}

/// Hashes a password on the calling thread (first start and the CLI, outside any flood).
pub fn hash_blocking(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`. A malformed hash never matches.
pub async fn verify(password: &str, phc: &str) -> Result<bool, AuthError> {
    let (password, phc) = (password.to_owned(), phc.to_owned());
    gated(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), phc.as_str())
            .is_ok()
    })
    .await
}

/// Spends the time of a failed verification, for an unknown account or short id, so that a
/// wrong name costs as much as a wrong password.
pub async fn verify_decoy(password: &str) -> Result<(), AuthError> {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let password = password.to_owned();
    gated(move || {
        let decoy = DECOY
            .get_or_init(|| hash_blocking(&crate::users::generate_password()).unwrap_or_default());
        let _ = Argon2::default().verify_password(password.as_bytes(), decoy.as_str());
    })
    .await
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = super::hash("correct horse").await.unwrap();
        let b = super::hash("correct horse").await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(super::verify("correct horse", &a).await.unwrap());
        assert!(!super::verify("wrong horse", &a).await.unwrap());
        assert!(!super::verify("x", "not a hash").await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_hashes_run_at_once_than_the_gate_allows() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..6)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                tokio::spawn(super::gated(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for j in jobs {
            j.await.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= super::gate_size());
    }
}
