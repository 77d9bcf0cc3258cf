//! The `tasks` table: the durable queue of long operations, claimed by the worker.

use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Conn, PageRequest, Result};
use crate::on_conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub id: Uuid,
    pub kind: String,
    pub host_id: Option<Uuid>,
    pub status: String,
    pub progress: Option<String>,
    pub error: Option<String>,
    pub payload: Json<serde_json::Value>,
    pub attempts: i64,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, kind, host_id, status, progress, error, payload, attempts, created_by, created_at, started_at, finished_at";

/// Filters of the task list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<String>,
    pub host_id: Option<Uuid>,
    pub kind: Option<String>,
}

pub async fn insert(c: Conn<'_>, t: &TaskRow) -> Result<()> {
    on_conn!(c, |c| {
        sqlx::query(
        "INSERT INTO tasks (id, kind, host_id, status, progress, error, payload, attempts, created_by,
             created_at, started_at, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    )
    .bind(t.id)
    .bind(&t.kind)
    .bind(t.host_id)
    .bind(&t.status)
    .bind(&t.progress)
    .bind(&t.error)
    .bind(&t.payload)
    .bind(t.attempts)
    .bind(&t.created_by)
    .bind(t.created_at)
    .bind(t.started_at)
    .bind(t.finished_at)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

pub async fn get(c: Conn<'_>, id: Uuid) -> Result<Option<TaskRow>> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, TaskRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await)?)
}

/// Tasks, newest first.
pub async fn list(c: Conn<'_>, f: &TaskFilter, page: PageRequest) -> Result<(Vec<TaskRow>, i64)> {
    const WHERE: &str = "WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR host_id = $2) AND ($3 IS NULL OR kind = $3)";
    let sql = format!("SELECT {COLUMNS} FROM tasks {WHERE} ORDER BY id DESC LIMIT $4 OFFSET $5");
    let count = format!("SELECT COUNT(*) FROM tasks {WHERE}");
    on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, TaskRow>(sqlx::AssertSqlSafe(sql))
            .bind(&f.status)
            .bind(f.host_id)
            .bind(&f.kind)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *c)
            .await?;
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .bind(&f.status)
            .bind(f.host_id)
            .bind(&f.kind)
            .fetch_one(&mut *c)
            .await?;
        Ok((rows, total))
    })
}

/// Claims the oldest queued task whose host has no task running, marking it running.
/// The `status = 'queued'` guard makes a lost race claim nothing.
pub async fn claim_next(c: Conn<'_>, now: OffsetDateTime) -> Result<Option<TaskRow>> {
    let sql = format!(
        "UPDATE tasks SET status = 'running', started_at = $1, attempts = attempts + 1,
             progress = 'started', error = NULL
         WHERE id = (
             SELECT t.id FROM tasks t
             WHERE t.status = 'queued'
               AND (t.host_id IS NULL OR NOT EXISTS (
                   SELECT 1 FROM tasks r WHERE r.host_id = t.host_id AND r.status = 'running'))
             ORDER BY t.id LIMIT 1)
           AND status = 'queued'
         RETURNING {COLUMNS}"
    );
    Ok(on_conn!(c, |c| sqlx::query_as::<_, TaskRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(now)
    .fetch_optional(&mut *c)
    .await)?)
}

pub async fn set_progress(c: Conn<'_>, id: Uuid, message: &str) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE tasks SET progress = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(message)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Records the outcome of a running task.
pub async fn finish(c: Conn<'_>, id: Uuid, error: Option<&str>, now: OffsetDateTime) -> Result<()> {
    let status = if error.is_some() {
        "failed"
    } else {
        "succeeded"
    };
    on_conn!(c, |c| sqlx::query(
        "UPDATE tasks SET status = $2, error = $3, finished_at = $4,
             progress = CASE WHEN $3 IS NULL THEN 'done' ELSE progress END
         WHERE id = $1"
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Puts tasks left `running` by a previous process back in the queue; returns how many.
pub async fn requeue_running(c: Conn<'_>) -> Result<u64> {
    Ok(on_conn!(c, |c| {
        sqlx::query(
        "UPDATE tasks SET status = 'queued', progress = 'requeued after restart' WHERE status = 'running'"
    )
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?)
}

/// Whether a host has a task queued or running.
pub async fn host_busy(c: Conn<'_>, host_id: Uuid) -> Result<bool> {
    let n: i64 = on_conn!(c, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM tasks WHERE host_id = $1 AND status IN ('queued', 'running')"
    )
    .bind(host_id)
    .fetch_one(&mut *c)
    .await)?;
    Ok(n > 0)
}

/// Number of tasks with `status`, counting only those created at or after `since` when given.
pub async fn count(c: Conn<'_>, status: &str, since: Option<OffsetDateTime>) -> Result<i64> {
    Ok(on_conn!(c, |c| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM tasks WHERE status = $1 AND ($2 IS NULL OR created_at >= $2)"
    )
    .bind(status)
    .bind(since)
    .fetch_one(&mut *c)
    .await)?)
}

/// The newest unfinished task of a host, if any.
pub async fn open_for_host(c: Conn<'_>, host_id: Uuid) -> Result<Option<TaskRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks WHERE host_id = $1 AND status IN ('queued', 'running')
         ORDER BY id DESC LIMIT 1"
    );
    Ok(on_conn!(c, |c| sqlx::query_as::<_, TaskRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(host_id)
    .fetch_optional(&mut *c)
    .await)?)
}
