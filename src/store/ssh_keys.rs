//! The `ssh_keys` table: users' public keys.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Conn, PageRequest, Result};
use crate::on_conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SshKeyRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub key_type: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: OffsetDateTime,
}

pub async fn insert(c: Conn<'_>, k: &SshKeyRow) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "INSERT INTO ssh_keys (id, user_id, name, key_type, public_key, fingerprint, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )
    .bind(k.id)
    .bind(k.user_id)
    .bind(&k.name)
    .bind(&k.key_type)
    .bind(&k.public_key)
    .bind(&k.fingerprint)
    .bind(k.created_at)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn list(c: Conn<'_>, user_id: Uuid, page: PageRequest) -> Result<(Vec<SshKeyRow>, i64)> {
    on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, SshKeyRow>(
            "SELECT id, user_id, name, key_type, public_key, fingerprint, created_at
             FROM ssh_keys WHERE user_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
        )
        .bind(user_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&mut *c)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ssh_keys WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *c)
            .await?;
        Ok((rows, total))
    })
}

/// Deletes a key of a user and returns it; `None` when the user has no such key.
pub async fn delete(c: Conn<'_>, user_id: Uuid, id: Uuid) -> Result<Option<SshKeyRow>> {
    Ok(on_conn!(c, |c| sqlx::query_as::<_, SshKeyRow>(
        "DELETE FROM ssh_keys WHERE id = $1 AND user_id = $2
         RETURNING id, user_id, name, key_type, public_key, fingerprint, created_at"
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(&mut *c)
    .await)?)
}

/// Every public key of a user, oldest first.
pub async fn public_keys(c: Conn<'_>, user_id: Uuid) -> Result<Vec<String>> {
    Ok(on_conn!(c, |c| sqlx::query_scalar::<_, String>(
        "SELECT public_key FROM ssh_keys WHERE user_id = $1 ORDER BY id"
    )
    .bind(user_id)
    .fetch_all(&mut *c)
    .await)?)
}
