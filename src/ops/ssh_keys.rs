//! SSH keys of a user: list, add a public key, generate a pair (the private key answered
//! once, never kept), delete. A user manages their own keys; operators need `user:read` or
//! `user:write`, and act only on user accounts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::users::find_user;
use super::{Caller, Core, OpError, OpResult};
use crate::auth::{Ability, sshkey};
use crate::events::{self, NewEvent};
use crate::store::{self, PageRequest, ssh_keys::SshKeyRow};

/// A public key of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct SshKey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, ...
    pub key_type: String,
    pub public_key: String,
    /// `SHA256:...`
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<SshKeyRow> for SshKey {
    fn from(k: SshKeyRow) -> Self {
        SshKey {
            id: k.id,
            user_id: k.user_id,
            name: k.name,
            key_type: k.key_type,
            public_key: k.public_key,
            fingerprint: k.fingerprint,
            created_at: k.created_at,
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema, JsonSchema)]
pub struct AddKey {
    /// One OpenSSH public key line.
    pub public_key: Option<String>,
    /// A name for the key (default: the key's comment).
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema, JsonSchema)]
pub struct GenerateKey {
    /// A name for the key (default `generated`).
    pub name: Option<String>,
}

/// A generated key pair; the private key is shown only here and not kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct GeneratedKey {
    #[serde(flatten)]
    pub key: SshKey,
    pub private_key: String,
}

fn key_name(name: Option<String>, fallback: &str) -> OpResult<String> {
    let name = name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| fallback.to_string());
    crate::validation::display_name(&name, 100, true).map_err(|m| OpError::field("name", m))
}

/// Whether the caller may see (`write`: change) `user_id`'s keys: the user themselves, or an
/// operator with the ability, on an existing user account.
async fn may_manage(core: &Core, caller: &Caller, user_id: Uuid, write: bool) -> OpResult<()> {
    if caller.principal.user_id() == Some(user_id) {
        return Ok(());
    }
    if caller.principal.user_id().is_some() {
        return Err(OpError::NotFound("user"));
    }
    caller.require(if write {
        Ability::UserWrite
    } else {
        Ability::UserRead
    })?;
    let mut db = core.store.acquire().await?;
    find_user(db.conn(), user_id).await.map(drop)
}

/// A user's keys.
pub async fn list(
    core: &Core,
    caller: &Caller,
    user_id: Uuid,
    page: PageRequest,
) -> OpResult<(Vec<SshKey>, i64)> {
    may_manage(core, caller, user_id, false).await?;
    let mut db = core.store.acquire().await?;
    let (rows, total) = store::ssh_keys::list(db.conn(), user_id, page).await?;
    Ok((rows.into_iter().map(SshKey::from).collect(), total))
}

async fn insert_key(
    core: &Core,
    caller: &Caller,
    user_id: Uuid,
    name: String,
    parsed: sshkey::ParsedKey,
    action: &'static str,
) -> OpResult<SshKey> {
    let row = SshKeyRow {
        id: Uuid::now_v7(),
        user_id,
        name,
        key_type: parsed.key_type,
        public_key: parsed.public_key,
        fingerprint: parsed.fingerprint,
        created_at: crate::clock::now(),
    };
    let mut tx = core.store.begin().await?;
    find_user(tx.conn(), user_id).await?;
    store::ssh_keys::insert(tx.conn(), &row)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict(_) => OpError::Conflict(format!(
                "this key ({}) is already registered for the user",
                row.fingerprint
            )),
            other => other.into(),
        })?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), action, "ssh_key")
            .target(row.id)
            .user(Some(user_id))
            .source(caller.source.clone())
            .details(
                json!({"name": row.name, "fingerprint": row.fingerprint, "key_type": row.key_type}),
            ),
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Adds a public key (one OpenSSH line) to a user.
pub async fn add(core: &Core, caller: &Caller, user_id: Uuid, req: AddKey) -> OpResult<SshKey> {
    may_manage(core, caller, user_id, true).await?;
    let parsed = sshkey::parse(req.public_key.as_deref().unwrap_or_default())
        .map_err(|m| OpError::field("public_key", m))?;
    let fallback = if parsed.comment.is_empty() {
        "key".to_string()
    } else {
        parsed.comment.clone()
    };
    let name = key_name(req.name, &fallback)?;
    insert_key(core, caller, user_id, name, parsed, "ssh_key.added").await
}

/// Generates an ed25519 pair for a user; the private key is answered once and not kept.
pub async fn generate(
    core: &Core,
    caller: &Caller,
    user_id: Uuid,
    req: GenerateKey,
) -> OpResult<GeneratedKey> {
    may_manage(core, caller, user_id, true).await?;
    let name = key_name(req.name, "generated")?;
    let (private_key, parsed) = sshkey::generate(&name).map_err(OpError::Internal)?;
    let key = insert_key(core, caller, user_id, name, parsed, "ssh_key.generated").await?;
    Ok(GeneratedKey { key, private_key })
}

/// Removes a key of a user.
pub async fn delete(core: &Core, caller: &Caller, user_id: Uuid, key_id: Uuid) -> OpResult<()> {
    may_manage(core, caller, user_id, true).await?;
    let mut tx = core.store.begin().await?;
    let Some(row) = store::ssh_keys::delete(tx.conn(), user_id, key_id).await? else {
        return Err(OpError::NotFound("ssh key"));
    };
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "ssh_key.deleted", "ssh_key")
            .target(key_id)
            .user(Some(user_id))
            .source(caller.source.clone())
            .details(json!({"name": row.name, "fingerprint": row.fingerprint})),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
