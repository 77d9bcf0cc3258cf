//! The `api_tokens` table: scoped API tokens, stored only as hashes.

use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Conn, PageRequest, Result};
use crate::on_conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub token_hash: String,
    pub prefix: String,
    pub abilities: Json<Vec<String>>,
    pub created_by: String,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    /// The token that minted this one, if a token did; revoking it deletes this one too.
    pub parent_id: Option<Uuid>,
}

const SELECT: &str = "SELECT id, name, token_hash, prefix, abilities, created_by, expires_at, last_used_at, created_at, parent_id FROM api_tokens";

pub async fn insert(c: Conn<'_>, t: &TokenRow) -> Result<()> {
    on_conn!(c, |c| {
        sqlx::query(
        "INSERT INTO api_tokens (id, name, token_hash, prefix, abilities, created_by, expires_at, last_used_at, created_at, parent_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    )
    .bind(t.id)
    .bind(&t.name)
    .bind(&t.token_hash)
    .bind(&t.prefix)
    .bind(&t.abilities)
    .bind(&t.created_by)
    .bind(t.expires_at)
    .bind(t.last_used_at)
    .bind(t.created_at)
    .bind(t.parent_id)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

pub async fn get_by_hash(c: Conn<'_>, hash: &str) -> Result<Option<TokenRow>> {
    let sql = format!("{SELECT} WHERE token_hash = $1");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, TokenRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(hash)
    .fetch_optional(&mut *c)
    .await)?)
}

pub async fn get(c: Conn<'_>, id: Uuid) -> Result<Option<TokenRow>> {
    let sql = format!("{SELECT} WHERE id = $1");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, TokenRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await)?)
}

pub async fn list(c: Conn<'_>, page: PageRequest) -> Result<(Vec<TokenRow>, i64)> {
    let sql = format!("{SELECT} ORDER BY id LIMIT $1 OFFSET $2");
    on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, TokenRow>(sqlx::AssertSqlSafe(sql))
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *c)
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&mut *c)
            .await?;
        Ok((rows, total))
    })
}

pub async fn touch(c: Conn<'_>, id: Uuid, now: OffsetDateTime) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Deletes a token and returns it; `None` when there is no such token.
pub async fn delete(c: Conn<'_>, id: Uuid) -> Result<Option<TokenRow>> {
    let sql = "DELETE FROM api_tokens WHERE id = $1
         RETURNING id, name, token_hash, prefix, abilities, created_by, expires_at, last_used_at, created_at, parent_id";
    Ok(on_conn!(c, |c| sqlx::query_as::<_, TokenRow>(sql)
        .bind(id)
        .fetch_optional(&mut *c)
        .await)?)
}
