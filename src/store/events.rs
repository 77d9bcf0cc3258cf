//! The `events` table: the audit trail of every change.

use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Conn, PageRequest, Result};
use crate::on_conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub user_id: Option<Uuid>,
    pub host_id: Option<Uuid>,
    pub source_ip: Option<String>,
    pub details: Json<serde_json::Value>,
    pub created_at: OffsetDateTime,
}

/// Filters of the event list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub user_id: Option<Uuid>,
    pub host_id: Option<Uuid>,
    pub action: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

pub async fn insert(c: Conn<'_>, e: &EventRow) -> Result<()> {
    on_conn!(c, |c| {
        sqlx::query(
        "INSERT INTO events (id, actor, action, target_type, target_id, user_id, host_id, source_ip, details, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    )
    .bind(e.id)
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target_type)
    .bind(&e.target_id)
    .bind(e.user_id)
    .bind(e.host_id)
    .bind(&e.source_ip)
    .bind(&e.details)
    .bind(e.created_at)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Events, newest first.
pub async fn list(c: Conn<'_>, f: &EventFilter, page: PageRequest) -> Result<(Vec<EventRow>, i64)> {
    const WHERE: &str = "WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR host_id = $2)
        AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR created_at <= $5)";
    let sql = format!(
        "SELECT id, actor, action, target_type, target_id, user_id, host_id, source_ip, details, created_at
         FROM events {WHERE} ORDER BY id DESC LIMIT $6 OFFSET $7"
    );
    let count = format!("SELECT COUNT(*) FROM events {WHERE}");
    on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql))
            .bind(f.user_id)
            .bind(f.host_id)
            .bind(&f.action)
            .bind(f.since)
            .bind(f.until)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *c)
            .await?;
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .bind(f.user_id)
            .bind(f.host_id)
            .bind(&f.action)
            .bind(f.since)
            .bind(f.until)
            .fetch_one(&mut *c)
            .await?;
        Ok((rows, total))
    })
}

/// Events with ids above `after` (ids are UUIDv7, so in time order), oldest first, at most
/// `limit`.
pub async fn after(c: Conn<'_>, after: Uuid, limit: i64) -> Result<Vec<EventRow>> {
    Ok(on_conn!(c, |c| {
        sqlx::query_as::<_, EventRow>(
        "SELECT id, actor, action, target_type, target_id, user_id, host_id, source_ip, details, created_at
         FROM events WHERE id > $1 ORDER BY id LIMIT $2"
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *c)
    .await
    })?)
}
