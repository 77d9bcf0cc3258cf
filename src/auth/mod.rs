//! Auth: who is calling and what they may do. Passwords (argon2id), login tokens (JWT HS256
//! with a per-account generation counter), scoped API tokens, and SSH public keys. HTTP
//! concerns (headers, status codes) stay in the api module's layers.

pub mod abilities;
pub mod attempts;
pub mod jwt;
pub mod password;
pub mod principal;
pub mod sshkey;
pub mod tokens;

pub use abilities::Ability;
pub use principal::{Authenticator, LoginRef, Principal};

/// Why a credential was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials")]
    Missing,
    #[error("invalid or expired credentials")]
    Invalid,
    #[error("account is {0}")]
    Inactive(&'static str),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// Every password-hashing slot stayed taken for too long.
    #[error("Sluice is busy checking passwords; try again in a moment")]
    Busy,
}
