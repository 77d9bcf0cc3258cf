//! The `hosts` and `bindings` tables: users' containers and the egress each is bound to.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Conn, PageRequest, Result};
use crate::hosts::HostStatus;
use crate::on_conn;

/// A host with its owner's name and its binding, as one row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HostRow {
    pub id: Uuid,
    pub short_id: String,
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    pub status: HostStatus,
    pub status_reason: Option<String>,
    pub memory_mb: i64,
    pub cpus: f64,
    pub pids_limit: i64,
    pub ssh_password_hash: String,
    /// The managed image the container was last made from.
    pub image: Option<String>,
    /// Whether the host runs (or, after its next rebuild, will run) the desktop image.
    pub desktop: bool,
    /// The uid (and gid) of the owner's account inside the container, unique on the machine;
    /// `None` only for a host made before uids were per host, until the next start gives it one.
    pub account_uid: Option<i64>,
    pub binding_id: Option<Uuid>,
    pub egress_ip_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A new host.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub id: Uuid,
    pub short_id: String,
    pub user_id: Uuid,
    pub status: HostStatus,
    pub memory_mb: i64,
    pub cpus: f64,
    pub pids_limit: i64,
    pub ssh_password_hash: String,
    pub desktop: bool,
    pub account_uid: u32,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BindingRow {
    pub id: Uuid,
    pub host_id: Uuid,
    pub egress_ip_id: Uuid,
    pub created_at: OffsetDateTime,
}

const SELECT: &str = "SELECT h.id, h.short_id, h.user_id, u.username, h.status, h.status_reason,
        h.memory_mb, h.cpus, h.pids_limit, h.ssh_password_hash, h.image, h.desktop, h.account_uid, b.id AS binding_id, b.egress_ip_id,
        h.created_at, h.updated_at
    FROM hosts h LEFT JOIN users u ON u.id = h.user_id LEFT JOIN bindings b ON b.host_id = h.id";

pub async fn insert(c: Conn<'_>, h: &NewHost) -> Result<()> {
    on_conn!(c, |c| {
        sqlx::query(
        "INSERT INTO hosts (id, short_id, user_id, status, status_reason, memory_mb, cpus, pids_limit,
             ssh_password_hash, desktop, account_uid, created_at, updated_at)
         VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10, $11, $11)"
    )
    .bind(h.id)
    .bind(&h.short_id)
    .bind(h.user_id)
    .bind(h.status)
    .bind(h.memory_mb)
    .bind(h.cpus)
    .bind(h.pids_limit)
    .bind(&h.ssh_password_hash)
    .bind(h.desktop)
    .bind(i64::from(h.account_uid))
    .bind(h.created_at)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

pub async fn get(c: Conn<'_>, id: Uuid) -> Result<Option<HostRow>> {
    let sql = format!("{SELECT} WHERE h.id = $1");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, HostRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await)?)
}

/// The host with this short id.
pub async fn get_by_short_id(c: Conn<'_>, short_id: &str) -> Result<Option<HostRow>> {
    let sql = format!("{SELECT} WHERE h.short_id = $1");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, HostRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(short_id)
    .fetch_optional(&mut *c)
    .await)?)
}

/// Every host of a user, oldest first.
pub async fn of_user(c: Conn<'_>, user_id: Uuid) -> Result<Vec<HostRow>> {
    let sql = format!("{SELECT} WHERE h.user_id = $1 ORDER BY h.id");
    Ok(on_conn!(c, |c| sqlx::query_as::<_, HostRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(user_id)
    .fetch_all(&mut *c)
    .await)?)
}

/// Hosts, oldest first; only those of `user_id` when given.
pub async fn list(
    c: Conn<'_>,
    user_id: Option<Uuid>,
    status: Option<&str>,
    page: PageRequest,
) -> Result<(Vec<HostRow>, i64)> {
    let sql = format!(
        "{SELECT} WHERE ($1 IS NULL OR h.user_id = $1) AND ($2 IS NULL OR h.status = $2) \
         ORDER BY h.id LIMIT $3 OFFSET $4"
    );
    on_conn!(c, |c| {
        let rows = sqlx::query_as::<_, HostRow>(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(status)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *c)
            .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM hosts WHERE ($1 IS NULL OR user_id = $1) \
             AND ($2 IS NULL OR status = $2)",
        )
        .bind(user_id)
        .bind(status)
        .fetch_one(&mut *c)
        .await?;
        Ok((rows, total))
    })
}

/// Ids of a user's hosts.
pub async fn ids_of_user(c: Conn<'_>, user_id: Uuid) -> Result<Vec<Uuid>> {
    Ok(on_conn!(c, |c| sqlx::query_scalar::<_, Uuid>(
        "SELECT id FROM hosts WHERE user_id = $1 ORDER BY id"
    )
    .bind(user_id)
    .fetch_all(&mut *c)
    .await)?)
}

/// Sets status and reason (the reason is cleared when `None`).
pub async fn set_status(
    c: Conn<'_>,
    id: Uuid,
    status: HostStatus,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE hosts SET status = $2, status_reason = $3, updated_at = $4 WHERE id = $1"
    )
    .bind(id)
    .bind(status)
    .bind(reason)
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn set_ssh_password(
    c: Conn<'_>,
    id: Uuid,
    hash: &str,
    now: OffsetDateTime,
) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE hosts SET ssh_password_hash = $2, updated_at = $3 WHERE id = $1"
    )
    .bind(id)
    .bind(hash)
    .bind(now)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn delete(c: Conn<'_>, id: Uuid) -> Result<bool> {
    let n = on_conn!(c, |c| sqlx::query("DELETE FROM hosts WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Host counts per status.
pub async fn count_by_status(c: Conn<'_>) -> Result<Vec<(String, i64)>> {
    Ok(on_conn!(c, |c| sqlx::query_as::<_, (String, i64)>(
        "SELECT status, COUNT(*) FROM hosts GROUP BY status"
    )
    .fetch_all(&mut *c)
    .await)?)
}

/// The unique index that holds a WireGuard egress to one host.
pub const EXCLUSIVE_BINDING: &str = "bindings_exclusive_egress";

/// Whether a unique-constraint refusal is [`EXCLUSIVE_BINDING`]'s (by its name on PostgreSQL,
/// by its column in SQLite's message).
pub fn is_exclusive_binding(constraint: &str) -> bool {
    constraint == EXCLUSIVE_BINDING || constraint.contains("bindings.exclusive_egress_id")
}

/// Writes a binding. One to a WireGuard egress also claims the egress (a unique index: a second
/// host's binding is a [`super::StoreError::Conflict`] naming [`EXCLUSIVE_BINDING`]).
pub async fn insert_binding(c: Conn<'_>, b: &BindingRow) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "INSERT INTO bindings (id, host_id, egress_ip_id, created_at, exclusive_egress_id)
         VALUES ($1, $2, $3, $4,
            (SELECT id FROM egress_ips WHERE id = $3 AND tunnel_type = 'wireguard'))"
    )
    .bind(b.id)
    .bind(b.host_id)
    .bind(b.egress_ip_id)
    .bind(b.created_at)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn get_binding(c: Conn<'_>, id: Uuid) -> Result<Option<BindingRow>> {
    Ok(on_conn!(c, |c| sqlx::query_as::<_, BindingRow>(
        "SELECT id, host_id, egress_ip_id, created_at FROM bindings WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await)?)
}

pub async fn delete_binding(c: Conn<'_>, id: Uuid) -> Result<bool> {
    let n = on_conn!(c, |c| sqlx::query("DELETE FROM bindings WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

pub async fn short_id_taken(c: Conn<'_>, short_id: &str) -> Result<bool> {
    let n: i64 = on_conn!(c, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM hosts WHERE short_id = $1"
    )
    .bind(short_id)
    .fetch_one(&mut *c)
    .await)?;
    Ok(n > 0)
}

/// Sets whether a host runs the desktop image (taking effect at its next rebuild).
pub async fn set_desktop(c: Conn<'_>, id: Uuid, desktop: bool) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE hosts SET desktop = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(desktop)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn set_image(c: Conn<'_>, id: Uuid, image: &str) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE hosts SET image = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(image)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// What the reconciler needs of every host: id, status, the owner's account status, and the
/// bound egress.
pub async fn reconcile_view(
    c: Conn<'_>,
) -> Result<Vec<(Uuid, HostStatus, Option<String>, Option<Uuid>)>> {
    Ok(on_conn!(c, |c| {
        sqlx::query_as::<_, (Uuid, HostStatus, Option<String>, Option<Uuid>)>(
            "SELECT h.id, h.status, u.status, b.egress_ip_id FROM hosts h
             LEFT JOIN users u ON u.id = h.user_id LEFT JOIN bindings b ON b.host_id = h.id
             ORDER BY h.id",
        )
        .fetch_all(&mut *c)
        .await
    })?)
}

/// Holds, until the transaction ends, the right to give out account uids, so two hosts made
/// at once never draw the same one (SQLite's write transactions are already one at a time).
pub async fn lock_account_uids(c: Conn<'_>) -> Result<()> {
    if let Conn::Postgres(c) = c {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sluice.hosts.account_uid'))")
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// The account uids hosts hold within `range`, ascending.
pub async fn account_uids_in(
    c: Conn<'_>,
    range: crate::hosts::account::UidRange,
) -> Result<Vec<u32>> {
    let rows: Vec<(i64,)> = on_conn!(c, |c| sqlx::query_as(
        "SELECT account_uid FROM hosts WHERE account_uid >= $1 AND account_uid <= $2
         ORDER BY account_uid"
    )
    .bind(i64::from(range.first))
    .bind(i64::from(range.last))
    .fetch_all(&mut *c)
    .await)?;
    Ok(rows
        .into_iter()
        .filter_map(|(u,)| u32::try_from(u).ok())
        .collect())
}

/// Hosts that have no account uid yet (made before uids were per host), oldest first.
pub async fn without_account_uid(c: Conn<'_>) -> Result<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = on_conn!(c, |c| sqlx::query_as(
        "SELECT id FROM hosts WHERE account_uid IS NULL ORDER BY id"
    )
    .fetch_all(&mut *c)
    .await)?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Gives a host its account uid (`None` takes it away, as before uids were per host).
pub async fn set_account_uid(c: Conn<'_>, id: Uuid, uid: Option<u32>) -> Result<()> {
    on_conn!(c, |c| sqlx::query(
        "UPDATE hosts SET account_uid = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(uid.map(i64::from))
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}
