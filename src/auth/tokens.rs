//! API tokens: `sl_` followed by 43 characters of base64url (32 random bytes). Only the
//! SHA-256 of a token is stored; the token itself is shown once.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "sl_";

/// A new random token.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether a bearer credential has the shape of an API token (rather than a JWT).
pub fn looks_like_token(s: &str) -> bool {
    s.starts_with(PREFIX)
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The first characters of a token, safe to list so an operator can tell tokens apart.
pub fn display_prefix(token: &str) -> String {
    token.chars().take(PREFIX.len() + 6).collect()
}

/// Checks a token's name and abilities, naming what is wrong.
pub fn validate(
    name: &str,
    abilities: &[String],
) -> Result<Vec<super::Ability>, crate::validation::FieldErrors> {
    let mut errs = crate::validation::FieldErrors::new();
    errs.check(
        "name",
        crate::validation::display_name(name, 100, true).map(drop),
    );
    if abilities.is_empty() {
        errs.add("abilities", "must list at least one ability");
    }
    let mut parsed = Vec::new();
    for a in abilities {
        match super::Ability::parse(a) {
            Some(a) if !parsed.contains(&a) => parsed.push(a),
            Some(_) => {}
            None => errs.add(
                "abilities",
                format!(
                    "`{a}` is not an ability (known: {})",
                    super::Ability::ALL.map(|a| a.as_str()).join(", ")
                ),
            ),
        }
    }
    errs.into_result(parsed)
}

/// Stores a new token and returns its row and its plain value (to show once).
pub async fn issue(
    c: crate::store::Conn<'_>,
    name: &str,
    abilities: &[super::Ability],
    expires_at: Option<time::OffsetDateTime>,
    created_by: &str,
    parent_id: Option<uuid::Uuid>,
) -> crate::store::Result<(crate::store::tokens::TokenRow, String)> {
    let plain = generate();
    let row = crate::store::tokens::TokenRow {
        id: uuid::Uuid::now_v7(),
        name: name.trim().to_string(),
        token_hash: hash(&plain),
        prefix: display_prefix(&plain),
        abilities: sqlx::types::Json(abilities.iter().map(|a| a.as_str().to_string()).collect()),
        created_by: created_by.to_string(),
        expires_at,
        last_used_at: None,
        created_at: crate::clock::now(),
        parent_id,
    };
    crate::store::tokens::insert(c, &row).await?;
    Ok((row, plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let a = generate();
        assert!(looks_like_token(&a));
        assert_eq!(a.len(), 3 + 43);
        assert_ne!(a, generate());
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), a);
        assert_eq!(display_prefix(&a).len(), 9);
    }
}
