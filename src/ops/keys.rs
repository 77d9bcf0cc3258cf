//! The install's own keys, operated from the machine that holds them (the CLI): rotating the
//! sealing key under which stored secrets are encrypted, and the JWT secret. Both work while
//! the server runs; each is an audit event.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use super::{Caller, Core, OpError, OpResult};
use crate::events::{self, NewEvent};
use crate::store;

/// A sealing key and the rows sealed under it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyUse {
    pub key_id: String,
    pub current: bool,
    pub rows: i64,
}

/// What a rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    /// The key new seals use from now on.
    pub key_id: String,
    /// Rows sealed again under it.
    pub resealed: u64,
    /// Keys no row used any more, dropped from the key file.
    pub dropped: Vec<String>,
}

/// The sealing keys, oldest first, with how many rows each seals.
pub async fn list(core: &Core, caller: &Caller) -> OpResult<Vec<KeyUse>> {
    caller.require_local()?;
    let keys = core.store.keys();
    let current = keys.current_id().map_err(store::StoreError::from)?;
    let mut db = core.store.acquire().await?;
    let used = store::egress::key_use(db.conn()).await?;
    Ok(keys
        .ids()
        .into_iter()
        .map(|id| KeyUse {
            rows: used.iter().find(|(k, _)| *k == id).map_or(0, |(_, n)| *n),
            current: id == current,
            key_id: id,
        })
        .collect())
}

/// Adds a sealing key (for keys from the environment: uses the newest given), seals every row
/// again under it, and drops keys no row uses any more. The running server seals under the new
/// key from its next write and opens the rows sealed here at once.
pub async fn rotate(core: &Core, caller: &Caller) -> OpResult<Rotation> {
    caller.require_local()?;
    let keys = core.store.keys();
    let key_id = if keys.from_env() {
        keys.current_id().map_err(store::StoreError::from)?
    } else {
        keys.add_key().map_err(store::StoreError::from)?
    };
    let mut tx = core.store.begin().await?;
    let resealed = store::egress::reseal(tx.conn(), keys).await?;
    let in_use: Vec<String> = store::egress::key_use(tx.conn())
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "keys.sealing_rotated", "install")
            .source(caller.source.clone())
            .details(json!({"key_id": key_id, "resealed": resealed})),
    )
    .await?;
    tx.commit().await?;
    core.store.checkpoint().await?;
    let dropped = keys.prune(&in_use).map_err(store::StoreError::from)?;
    Ok(Rotation {
        key_id,
        resealed,
        dropped,
    })
}

/// Replaces the JWT secret in `data_dir`: every login issued before is refused from the
/// server's next request on. API tokens are not affected. `server` is where the secret of the
/// server running on `data_dir` comes from, when one runs: a server signing with
/// `ADMIN_JWT_SECRET` would go on accepting every old login, so the rotation is refused then
/// (as it is when this process has the variable).
pub async fn rotate_jwt(
    core: &Core,
    caller: &Caller,
    data_dir: &Path,
    server: Option<crate::keys::jwt::Source>,
) -> OpResult<()> {
    caller.require_local()?;
    if server == Some(crate::keys::jwt::Source::Environment) {
        return Err(OpError::Unavailable(
            "the running server signs logins with ADMIN_JWT_SECRET from its own environment, so \
             a new jwt_secret file would change nothing: change ADMIN_JWT_SECRET there and \
             restart the server"
                .into(),
        ));
    }
    if std::env::var("ADMIN_JWT_SECRET").is_ok_and(|v| !v.is_empty()) {
        return Err(OpError::Unavailable(
            "the JWT secret is set by ADMIN_JWT_SECRET: change it there and restart the server"
                .into(),
        ));
    }
    crate::keys::jwt::rotate(data_dir).map_err(store::StoreError::from)?;
    let mut db = core.store.acquire().await?;
    events::record(
        db.conn(),
        NewEvent::new(caller.actor(), "keys.jwt_rotated", "install").source(caller.source.clone()),
    )
    .await?;
    Ok(())
}
