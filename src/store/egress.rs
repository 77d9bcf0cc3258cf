//! The `egress_ips` table: egresses an operator can bind hosts to, with their tunnel settings.
//!
//! The settings carry secrets (keys, passwords, uuids), so they are stored sealed: the
//! `secrets` column holds them encrypted under the install's sealing key named in `key_id`
//! (see `keys::sealing`), bound to the row's id, and the `settings` column only says so. Rows
//! read here come back opened; rows written here go in sealed. A row from before sealing is
//! sealed at the next start ([`seal_clear_rows`]).

use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Conn, PageRequest, Result, StoreError};
use crate::egress::EgressSettings;
use crate::keys::{Keyring, Sealed};
use crate::on_conn;

#[derive(Debug, Clone)]
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

/// A row as the database holds it, settings sealed.
#[derive(sqlx::FromRow)]
struct Stored {
    id: Uuid,
    label: String,
    ip_address: String,
    provider: String,
    tunnel_type: String,
    settings: Json<serde_json::Value>,
    secrets: Option<String>,
    key_id: Option<String>,
    last_test: Option<Json<serde_json::Value>>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

const SELECT: &str = "SELECT id, label, ip_address, provider, tunnel_type, settings, secrets, key_id, last_test, created_at, updated_at FROM egress_ips";

/// What a sealed row's `settings` column says in place of the settings.
fn placeholder() -> Json<serde_json::Value> {
    Json(serde_json::json!({"sealed": "the settings are in `secrets`, sealed under `key_id`"}))
}

/// The associated data of a row's sealed settings: the table, column and row id.
fn context(id: Uuid) -> Vec<u8> {
    let mut c = b"egress_ips.settings:".to_vec();
    c.extend_from_slice(id.as_bytes());
    c
}

fn seal(keys: &Keyring, id: Uuid, settings: &EgressSettings) -> Result<Sealed> {
    let plain = serde_json::to_vec(settings).map_err(|e| StoreError::Decode(e.to_string()))?;
    Ok(keys.seal(&context(id), &plain)?)
}

fn open(keys: &Keyring, s: Stored) -> Result<EgressRow> {
    let settings: EgressSettings = match (s.secrets, s.key_id) {
        (Some(text), Some(key_id)) => {
            let plain = keys.open_sealed(&context(s.id), &Sealed { key_id, text })?;
            serde_json::from_slice(&plain)
        }
        // Written before sealing; sealed at the next start.
        _ => serde_json::from_value(s.settings.0),
    }
    .map_err(|e| StoreError::Decode(format!("egress {}: {e}", s.id)))?;
    Ok(EgressRow {
        id: s.id,
        label: s.label,
        ip_address: s.ip_address,
        provider: s.provider,
        tunnel_type: s.tunnel_type,
        settings: Json(settings),
        last_test: s.last_test,
        created_at: s.created_at,
        updated_at: s.updated_at,
    })
}

pub async fn insert(c: Conn<'_>, keys: &Keyring, e: &EgressRow) -> Result<()> {
    let sealed = seal(keys, e.id, &e.settings.0)?;
    on_conn!(c, |c| {
        sqlx::query(
        "INSERT INTO egress_ips (id, label, ip_address, provider, tunnel_type, settings, secrets, key_id, last_test, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )
    .bind(e.id)
    .bind(&e.label)
    .bind(&e.ip_address)
    .bind(&e.provider)
    .bind(&e.tunnel_type)
    .bind(placeholder())
    .bind(&sealed.text)
    .bind(&sealed.key_id)
    .bind(&e.last_test)
    .bind(e.created_at)
    .bind(e.updated_at)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

pub async fn get(c: Conn<'_>, keys: &Keyring, id: Uuid) -> Result<Option<EgressRow>> {
    let sql = format!("{SELECT} WHERE id = $1");
    let row = on_conn!(c, |c| sqlx::query_as::<_, Stored>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *c)
        .await)?;
    row.map(|r| open(keys, r)).transpose()
}

pub async fn list(c: Conn<'_>, keys: &Keyring, page: PageRequest) -> Result<(Vec<EgressRow>, i64)> {
    let sql = format!("{SELECT} ORDER BY id LIMIT $1 OFFSET $2");
    let (rows, total) = on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, Stored>(sqlx::AssertSqlSafe(sql))
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *c)
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM egress_ips")
            .fetch_one(&mut *c)
            .await?;
        Ok::<_, StoreError>((rows, total))
    })?;
    let rows = rows
        .into_iter()
        .map(|r| open(keys, r))
        .collect::<Result<Vec<_>>>()?;
    Ok((rows, total))
}

/// Writes every mutable column of `e`, the settings sealed again.
pub async fn update(c: Conn<'_>, keys: &Keyring, e: &EgressRow) -> Result<()> {
    let sealed = seal(keys, e.id, &e.settings.0)?;
    on_conn!(c, |c| {
        sqlx::query(
            "UPDATE egress_ips SET label = $2, ip_address = $3, provider = $4, tunnel_type = $5,
                 settings = $6, secrets = $7, key_id = $8, updated_at = $9
             WHERE id = $1",
        )
        .bind(e.id)
        .bind(&e.label)
        .bind(&e.ip_address)
        .bind(&e.provider)
        .bind(&e.tunnel_type)
        .bind(placeholder())
        .bind(&sealed.text)
        .bind(&sealed.key_id)
        .bind(e.updated_at)
        .execute(&mut *c)
        .await?;
        // The egress's bindings claim it exactly when it is WireGuard: a switch to WireGuard
        // with two hosts bound is a Conflict naming hosts::EXCLUSIVE_BINDING.
        sqlx::query(
            "UPDATE bindings SET exclusive_egress_id =
                (SELECT id FROM egress_ips WHERE id = $1 AND tunnel_type = 'wireguard')
             WHERE egress_ip_id = $1",
        )
        .bind(e.id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
    })?;
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

/// Seals the settings of rows written before sealing (clear in `settings`); answers how many.
pub async fn seal_clear_rows(c: Conn<'_>, keys: &Keyring) -> Result<u64> {
    let sql = format!("{SELECT} WHERE secrets IS NULL");
    on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, Stored>(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *c)
            .await?;
        let mut n = 0;
        for r in rows {
            let row = open(keys, r)?;
            let sealed = seal(keys, row.id, &row.settings.0)?;
            n += sqlx::query(
                "UPDATE egress_ips SET settings = $2, secrets = $3, key_id = $4
                 WHERE id = $1 AND secrets IS NULL",
            )
            .bind(row.id)
            .bind(placeholder())
            .bind(&sealed.text)
            .bind(&sealed.key_id)
            .execute(&mut *c)
            .await?
            .rows_affected();
        }
        Ok(n)
    })
}

/// Seals again, under the newest key, every row sealed under another; answers how many. A
/// row changed meanwhile (by the server) is already under the newest key and left alone.
pub async fn reseal(c: Conn<'_>, keys: &Keyring) -> Result<u64> {
    let current = keys.current_id()?;
    let sql = format!("{SELECT} WHERE key_id <> $1");
    on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, Stored>(sqlx::AssertSqlSafe(sql))
            .bind(&current)
            .fetch_all(&mut *c)
            .await?;
        let mut n = 0;
        for r in rows {
            let (old_key, old_text) = (r.key_id.clone(), r.secrets.clone());
            let row = open(keys, r)?;
            let sealed = seal(keys, row.id, &row.settings.0)?;
            n += sqlx::query(
                "UPDATE egress_ips SET secrets = $2, key_id = $3
                 WHERE id = $1 AND key_id = $4 AND secrets = $5",
            )
            .bind(row.id)
            .bind(&sealed.text)
            .bind(&sealed.key_id)
            .bind(old_key)
            .bind(old_text)
            .execute(&mut *c)
            .await?
            .rows_affected();
        }
        Ok(n)
    })
}

/// The sealing keys rows are sealed under, with how many rows each.
pub async fn key_use(c: Conn<'_>) -> Result<Vec<(String, i64)>> {
    Ok(on_conn!(c, |c| {
        sqlx::query_as::<_, (String, i64)>(
        "SELECT key_id, COUNT(*) FROM egress_ips WHERE key_id IS NOT NULL GROUP BY key_id ORDER BY key_id"
    )
    .fetch_all(&mut *c)
    .await
    })?)
}

/// What monitoring sees of each egress, without opening its secrets: id, label, tunnel type,
/// last test.
pub async fn summaries(
    c: Conn<'_>,
) -> Result<Vec<(Uuid, String, String, Option<Json<serde_json::Value>>)>> {
    Ok(on_conn!(c, |c| sqlx::query_as::<
        _,
        (Uuid, String, String, Option<Json<serde_json::Value>>),
    >(
        "SELECT id, label, tunnel_type, last_test FROM egress_ips ORDER BY id"
    )
    .fetch_all(&mut *c)
    .await)?)
}
