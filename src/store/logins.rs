//! The `revoked_logins` table: login tokens ended by a logout before their expiry.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Conn, Result};
use crate::on_conn;

/// Revokes one login token until `expires_at` (a second revocation changes nothing).
pub async fn revoke(c: Conn<'_>, jti: Uuid, expires_at: OffsetDateTime) -> Result<()> {
    on_conn!(c, |c| {
        sqlx::query(
            "INSERT INTO revoked_logins (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Whether a login token was revoked.
pub async fn is_revoked(c: Conn<'_>, jti: Uuid) -> Result<bool> {
    let found: Option<(Uuid,)> = on_conn!(c, |c| {
        sqlx::query_as("SELECT jti FROM revoked_logins WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&mut *c)
            .await
    })?;
    Ok(found.is_some())
}

/// Forgets revocations of tokens that have expired anyway.
pub async fn purge(c: Conn<'_>, now: OffsetDateTime) -> Result<u64> {
    Ok(on_conn!(c, |c| {
        sqlx::query("DELETE FROM revoked_logins WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
    })?)
}
