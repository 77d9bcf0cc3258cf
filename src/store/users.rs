//! The `users` table: accounts, both administrators and users.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Conn, PageRequest, Result};
use crate::on_conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub role: String,
    pub password_hash: String,
    pub status: String,
    pub expires_at: Option<OffsetDateTime>,
    pub token_version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str =
    "id, username, role, password_hash, status, expires_at, token_version, created_at, updated_at";

pub async fn insert(c: Conn<'_>, u: &UserRow) -> Result<()> {
    on_conn!(c, |c| {
        sqlx::query(
        "INSERT INTO users (id, username, role, password_hash, status, expires_at, token_version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    )
    .bind(u.id)
    .bind(&u.username)
    .bind(&u.role)
    .bind(&u.password_hash)
    .bind(&u.status)
    .bind(u.expires_at)
    .bind(u.token_version)
    .bind(u.created_at)
    .bind(u.updated_at)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

pub async fn get(c: Conn<'_>, id: Uuid) -> Result<Option<UserRow>> {
    let sql = select("WHERE id = $1");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, UserRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await)?)
}

pub async fn get_by_username(c: Conn<'_>, username: &str) -> Result<Option<UserRow>> {
    let sql = select("WHERE username = $1");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, UserRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(username)
    .fetch_optional(&mut *c)
    .await)?)
}

fn select(tail: &str) -> String {
    format!("SELECT {COLUMNS} FROM users {tail}")
}

/// Accounts of `role`, oldest first.
pub async fn list(c: Conn<'_>, role: &str, page: PageRequest) -> Result<(Vec<UserRow>, i64)> {
    search(c, role, None, page).await
}

/// Accounts of a role whose name contains `q` (all without it), oldest first.
pub async fn search(
    c: Conn<'_>,
    role: &str,
    q: Option<&str>,
    page: PageRequest,
) -> Result<(Vec<UserRow>, i64)> {
    // User names are [a-z0-9._-]: a search is lower case, and LIKE's own wildcards are
    // escaped.
    let pattern = q.map(|q| {
        let q = q
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{q}%")
    });
    const WHERE: &str = "WHERE role = $1 AND ($2 IS NULL OR username LIKE $2 ESCAPE '\\')";
    let sql = select(&format!("{WHERE} ORDER BY id LIMIT $3 OFFSET $4"));
    let count = format!("SELECT COUNT(*) FROM users {WHERE}");
    on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
            .bind(role)
            .bind(&pattern)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *c)
            .await?;
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .bind(role)
            .bind(&pattern)
            .fetch_one(&mut *c)
            .await?;
        Ok((rows, total))
    })
}

/// Sets the status; any change away from `active` also revokes outstanding login tokens.
pub async fn set_status(c: Conn<'_>, id: Uuid, status: &str, now: OffsetDateTime) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE users SET status = $2, updated_at = $3,
             token_version = token_version + CASE WHEN $2 = 'active' THEN 0 ELSE 1 END
         WHERE id = $1"
    )
    .bind(id)
    .bind(status)
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Replaces the password hash and revokes outstanding login tokens.
pub async fn set_password(c: Conn<'_>, id: Uuid, hash: &str, now: OffsetDateTime) -> Result<()> {
    on_conn!(c, |c| {
        sqlx::query(
        "UPDATE users SET password_hash = $2, updated_at = $3, token_version = token_version + 1 WHERE id = $1"
    )
    .bind(id)
    .bind(hash)
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Ends every login token of an account (its generation moves on).
pub async fn revoke_logins(c: Conn<'_>, id: Uuid, now: OffsetDateTime) -> Result<()> {
    on_conn!(c, |c| {
        sqlx::query(
            "UPDATE users SET token_version = token_version + 1, updated_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Sets or clears the expiry. An account that had expired becomes active again, since its
/// new expiry is in the future or absent.
pub async fn set_expiry(
    c: Conn<'_>,
    id: Uuid,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE users SET expires_at = $2, updated_at = $3,
             status = CASE WHEN status = 'expired' THEN 'active' ELSE status END
         WHERE id = $1"
    )
    .bind(id)
    .bind(expires_at)
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn delete(c: Conn<'_>, id: Uuid) -> Result<bool> {
    let done = on_conn!(c, |c| sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done > 0)
}

/// Marks every active account whose expiry has passed as `expired` (revoking its tokens) and
/// returns those accounts.
pub async fn expire_due(c: Conn<'_>, now: OffsetDateTime) -> Result<Vec<(Uuid, String)>> {
    Ok(on_conn!(c, |c| sqlx::query_as::<_, (Uuid, String)>(
        "UPDATE users SET status = 'expired', token_version = token_version + 1, updated_at = $1
         WHERE status = 'active' AND expires_at IS NOT NULL AND expires_at <= $1
         RETURNING id, username"
    )
    .bind(now)
    .fetch_all(&mut *c)
    .await)?)
}

/// Number of accounts per role.
pub async fn count_by_role(c: Conn<'_>, role: &str) -> Result<i64> {
    Ok(on_conn!(c, |c| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM users WHERE role = $1"
    )
    .bind(role)
    .fetch_one(&mut *c)
    .await)?)
}
