//! Login tokens: HS256 JWTs naming the account, its role and its generation counter.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AuthError;

/// Lifetime of a login token.
pub const TOKEN_TTL_SECS: i64 = 12 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Account id.
    pub sub: Uuid,
    /// `admin` or `user`.
    pub role: String,
    /// The account's token generation; a bump revokes every older token.
    pub ver: i64,
    pub iat: i64,
    pub exp: i64,
    /// This login's id, by which a logout revokes it alone. (Tokens issued before logins had
    /// ids lack it; a logout then revokes every login of the account.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<Uuid>,
}

/// Signs and checks login tokens with one secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    fingerprint: [u8; 8],
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest([b"sluice-jwt-key:".as_slice(), secret].concat());
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&digest[..8]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            fingerprint,
        }
    }

    /// Which secret these keys are (a hash of it, never the secret): a login checked with
    /// other keys was signed before a rotation.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// A token for an account, valid for [`TOKEN_TTL_SECS`].
    pub fn issue(&self, sub: Uuid, role: &str, ver: i64) -> Result<String, AuthError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub,
            role: role.to_string(),
            ver,
            iat: now,
            exp: now + TOKEN_TTL_SECS,
            jti: Some(Uuid::new_v4()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| AuthError::Invalid)
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|_| AuthError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_their_secret() {
        let a = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let b = JwtKeys::new(b"fedcba9876543210fedcba9876543210");
        let id = Uuid::now_v7();
        let t = a.issue(id, "admin", 3).unwrap();
        let c = a.verify(&t).unwrap();
        assert_eq!((c.sub, c.role.as_str(), c.ver), (id, "admin", 3));
        let again = a.verify(&a.issue(id, "admin", 3).unwrap()).unwrap();
        assert!(c.jti.is_some() && again.jti.is_some() && c.jti != again.jti);
        assert!(b.verify(&t).is_err());
        assert!(a.verify("garbage").is_err());
    }
}
