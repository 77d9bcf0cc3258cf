//! The `egress_ips` table: egresses an operator can bind hosts to, with their tunnel settings
//! (secrets included; the API masks them).

use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Conn, PageRequest, Result};
use crate::egress::EgressSettings;
use crate::on_conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EgressRow {
    pub id: Uuid,
    pub label: String,
    pub ip_address: String,
    pub provider: String,
    pub tunnel_type: String,
    pub settings: Json<EgressSettings>,
    pub last_test: Option<Json<serde_json::Value>>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const SELECT: &str = "SELECT id, label, ip_address, provider, tunnel_type, settings, last_test, created_at, updated_at FROM egress_ips";

pub async fn insert(c: Conn<'_>, e: &EgressRow) -> Result<()> {
    on_conn!(c, |c| {
        sqlx::query(
        "INSERT INTO egress_ips (id, label, ip_address, provider, tunnel_type, settings, last_test, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    )
    .bind(e.id)
    .bind(&e.label)
    .bind(&e.ip_address)
    .bind(&e.provider)
    .bind(&e.tunnel_type)
    .bind(&e.settings)
    .bind(&e.last_test)
    .bind(e.created_at)
    .bind(e.updated_at)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

pub async fn get(c: Conn<'_>, id: Uuid) -> Result<Option<EgressRow>> {
    let sql = format!("{SELECT} WHERE id = $1");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, EgressRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await)?)
}

pub async fn list(c: Conn<'_>, page: PageRequest) -> Result<(Vec<EgressRow>, i64)> {
    let sql = format!("{SELECT} ORDER BY id LIMIT $1 OFFSET $2");
    on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, EgressRow>(sqlx::AssertSqlSafe(sql))
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *c)
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM egress_ips")
            .fetch_one(&mut *c)
            .await?;
        Ok((rows, total))
    })
}

/// Writes every mutable column of `e`.
pub async fn update(c: Conn<'_>, e: &EgressRow) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE egress_ips SET label = $2, ip_address = $3, provider = $4, tunnel_type = $5,
             settings = $6, updated_at = $7
         WHERE id = $1"
    )
    .bind(e.id)
    .bind(&e.label)
    .bind(&e.ip_address)
    .bind(&e.provider)
    .bind(&e.tunnel_type)
    .bind(&e.settings)
    .bind(e.updated_at)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn delete(c: Conn<'_>, id: Uuid) -> Result<bool> {
    let n = on_conn!(c, |c| sqlx::query("DELETE FROM egress_ips WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Short ids of the hosts bound to an egress.
pub async fn bound_hosts(c: Conn<'_>, id: Uuid) -> Result<Vec<String>> {
    Ok(on_conn!(c, |c| sqlx::query_scalar::<_, String>(
        "SELECT h.short_id FROM bindings b JOIN hosts h ON h.id = b.host_id
         WHERE b.egress_ip_id = $1 ORDER BY h.short_id"
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await)?)
}

pub async fn count(c: Conn<'_>) -> Result<i64> {
    Ok(on_conn!(c, |c| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM egress_ips"
    )
    .fetch_one(&mut *c)
    .await)?)
}

/// Ids of the hosts bound to an egress.
pub async fn bound_host_ids(c: Conn<'_>, id: Uuid) -> Result<Vec<Uuid>> {
    Ok(on_conn!(c, |c| sqlx::query_scalar::<_, Uuid>(
        "SELECT host_id FROM bindings WHERE egress_ip_id = $1 ORDER BY host_id"
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await)?)
}

/// Keeps the outcome of the last egress test.
pub async fn set_last_test(c: Conn<'_>, id: Uuid, report: &serde_json::Value) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE egress_ips SET last_test = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(Json(report))
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}
