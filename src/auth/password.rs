//! Password hashing with argon2id, off the async executor.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use super::AuthError;

/// Hashes a password into a PHC string.
pub async fn hash(password: &str) -> Result<String, AuthError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?
}

/// Hashes a password on the calling thread.
pub fn hash_blocking(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`. A malformed hash never matches.
pub async fn verify(password: &str, phc: &str) -> bool {
    let (password, phc) = (password.to_owned(), phc.to_owned());
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), phc.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// Spends the time of a failed verification, for an unknown account, so that a wrong user
/// name costs as much as a wrong password.
pub async fn verify_decoy(password: &str) {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let password = password.to_owned();
    let _ = tokio::task::spawn_blocking(move || {
        let decoy = DECOY
            .get_or_init(|| hash_blocking(&crate::users::generate_password()).unwrap_or_default());
        Argon2::default().verify_password(password.as_bytes(), decoy.as_str())
    })
    .await;
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = super::hash("correct horse").await.unwrap();
        let b = super::hash("correct horse").await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(super::verify("correct horse", &a).await);
        assert!(!super::verify("wrong horse", &a).await);
        assert!(!super::verify("x", "not a hash").await);
    }
}
