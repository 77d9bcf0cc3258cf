//! The `recordings` table: the index of recorded terminal sessions (the casts themselves are
//! gzip files under `<data dir>/recordings`).

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Conn, PageRequest, Result};
use crate::on_conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecordingRow {
    pub id: Uuid,
    pub session_id: Uuid,
    pub host_id: Uuid,
    pub short_id: String,
    pub username: String,
    /// `ssh` or `browser`.
    pub kind: String,
    /// The file's name in the recordings directory.
    pub file: String,
    /// `recording`, `stored` or `failed`.
    pub status: String,
    pub with_input: bool,
    /// Size of the compressed cast.
    pub bytes: i64,
    pub started_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
    /// Whether it stopped at its size cap while the session went on.
    pub truncated: bool,
}

const SELECT: &str = "SELECT id, session_id, host_id, short_id, username, kind, file, status, with_input, bytes, started_at, ended_at, truncated FROM recordings";

pub async fn insert(c: Conn<'_>, r: &RecordingRow) -> Result<()> {
    on_conn!(c, |c| {
        sqlx::query(
        "INSERT INTO recordings (id, session_id, host_id, short_id, username, kind, file, status, with_input, bytes, started_at, ended_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    )
    .bind(r.id)
    .bind(r.session_id)
    .bind(r.host_id)
    .bind(&r.short_id)
    .bind(&r.username)
    .bind(&r.kind)
    .bind(&r.file)
    .bind(&r.status)
    .bind(r.with_input)
    .bind(r.bytes)
    .bind(r.started_at)
    .bind(r.ended_at)
    .execute(&mut *c)
    .await
    .map(|_| ())
    })?;
    Ok(())
}

/// Marks a recording ended with its outcome, size, and whether it stopped at its cap.
pub async fn finish(
    c: Conn<'_>,
    id: Uuid,
    status: &str,
    bytes: i64,
    truncated: bool,
    ended_at: OffsetDateTime,
) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE recordings SET status = $2, bytes = $3, ended_at = $4, truncated = $5 WHERE id = $1"
    )
    .bind(id)
    .bind(status)
    .bind(bytes)
    .bind(ended_at)
    .bind(truncated)
    .execute(&mut *c)
    .await
    .map(|_| ()))?;
    Ok(())
}

pub async fn get(c: Conn<'_>, id: Uuid) -> Result<Option<RecordingRow>> {
    let sql = format!("{SELECT} WHERE id = $1");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, RecordingRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await)?)
}

/// Newest first, optionally one host's.
pub async fn list(
    c: Conn<'_>,
    host_id: Option<Uuid>,
    page: PageRequest,
) -> Result<(Vec<RecordingRow>, i64)> {
    let sql =
        format!("{SELECT} WHERE ($1 IS NULL OR host_id = $1) ORDER BY id DESC LIMIT $2 OFFSET $3");
    on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, RecordingRow>(sqlx::AssertSqlSafe(sql))
            .bind(host_id)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *c)
            .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM recordings WHERE ($1 IS NULL OR host_id = $1)",
        )
        .bind(host_id)
        .fetch_one(&mut *c)
        .await?;
        Ok((rows, total))
    })
}

/// Marks recordings left `recording` by a process that is gone as failed, ended `now`;
/// answers how many.
pub async fn fail_unfinished(c: Conn<'_>, now: OffsetDateTime) -> Result<u64> {
    Ok(on_conn!(c, |c| sqlx::query(
        "UPDATE recordings SET status = 'failed', ended_at = $1 WHERE status = 'recording'"
    )
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?)
}

/// Deletes the rows of recordings that ended before `cutoff`; answers their files.
pub async fn delete_ended_before(c: Conn<'_>, cutoff: OffsetDateTime) -> Result<Vec<String>> {
    on_conn!(c, |c| {
        let files: Vec<String> =
            sqlx::query_scalar("SELECT file FROM recordings WHERE ended_at < $1")
                .bind(cutoff)
                .fetch_all(&mut *c)
                .await?;
        sqlx::query("DELETE FROM recordings WHERE ended_at < $1")
            .bind(cutoff)
            .execute(&mut *c)
            .await?;
        Ok(files)
    })
}

/// Bytes on disk of every recording that has ended.
pub async fn ended_bytes(c: Conn<'_>) -> Result<i64> {
    let total: Option<i64> = on_conn!(c, |c| sqlx::query_scalar(
        "SELECT CAST(SUM(bytes) AS BIGINT) FROM recordings WHERE status <> 'recording'"
    )
    .fetch_one(&mut *c)
    .await)?;
    Ok(total.unwrap_or(0))
}

/// The recording that ended first, of those that have.
pub async fn oldest_ended(c: Conn<'_>) -> Result<Option<RecordingRow>> {
    let sql = format!("{SELECT} WHERE status <> 'recording' ORDER BY ended_at, id LIMIT 1");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, RecordingRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .fetch_optional(&mut *c)
    .await)?)
}

/// Removes one recording's row.
pub async fn delete(c: Conn<'_>, id: Uuid) -> Result<bool> {
    let n = on_conn!(c, |c| sqlx::query("DELETE FROM recordings WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}
