//! User accounts: list, read, create, enable or disable, delete (their hosts go by tasks),
//! rotate the password, set the expiry. Administrators are not users here: they are managed
//! from the server's shell (`sluice admin`).

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Caller, Core, OpError, OpResult};
use crate::auth::{Ability, password};
use crate::events::{self, NewEvent};
use crate::hosts::HostStatus;
use crate::store::users::UserRow;
use crate::store::{self, Conn, PageRequest};
use crate::tasks::{self, Kind};
use crate::users::{self as rules, Role, UserStatus};
use crate::validation::FieldErrors;

/// A user account.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub status: UserStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<UserRow> for User {
    fn from(u: UserRow) -> Self {
        User {
            id: u.id,
            username: u.username,
            status: UserStatus::parse(&u.status).unwrap_or(UserStatus::Disabled),
            expires_at: u.expires_at,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A user just created; `password` is present only when Sluice generated it, and only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema, JsonSchema)]
pub struct CreateUser {
    /// 3-50 characters of `[a-z0-9._-]`, starting with a letter.
    pub username: Option<String>,
    /// 8-128 characters; generated (and answered once) when absent.
    pub password: Option<String>,
    /// RFC 3339 time in the future, or absent for no expiry.
    pub expires_at: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema, JsonSchema)]
pub struct UpdateUser {
    /// `active` or `disabled`.
    pub status: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetExpiry {
    /// RFC 3339 time in the future, or `null` for no expiry. Required.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
}

/// Distinguishes an explicit `null` (Some(None)) from an absent field (None).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewPassword {
    /// The new 20-character password, shown only in this answer.
    pub password: String,
}

/// Parses an RFC 3339 time that must lie in the future.
pub fn future_time(s: &str) -> Result<OffsetDateTime, String> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339)
        .map_err(|_| "must be an RFC 3339 time such as 2030-01-31T12:00:00Z".to_string())?;
    let t = crate::clock::truncate(t);
    if t <= crate::clock::now() {
        return Err("must be in the future".into());
    }
    Ok(t)
}

/// A user account (not an administrator) by id.
pub async fn find_user(c: Conn<'_>, id: Uuid) -> OpResult<UserRow> {
    match store::users::get(c, id).await? {
        Some(u) if u.role == Role::User.as_str() => Ok(u),
        _ => Err(OpError::NotFound("user")),
    }
}

/// User accounts, oldest first.
pub async fn list(core: &Core, caller: &Caller, page: PageRequest) -> OpResult<(Vec<User>, i64)> {
    search(core, caller, None, page).await
}

/// User accounts whose name contains `q`, oldest first.
pub async fn search(
    core: &Core,
    caller: &Caller,
    q: Option<&str>,
    page: PageRequest,
) -> OpResult<(Vec<User>, i64)> {
    caller.require(Ability::UserRead)?;
    let q = q.map(str::trim).filter(|q| !q.is_empty());
    let mut db = core.store.acquire().await?;
    let (rows, total) = store::users::search(db.conn(), Role::User.as_str(), q, page).await?;
    Ok((rows.into_iter().map(User::from).collect(), total))
}

/// One user account.
pub async fn get(core: &Core, caller: &Caller, id: Uuid) -> OpResult<User> {
    caller.require(Ability::UserRead)?;
    let mut db = core.store.acquire().await?;
    Ok(find_user(db.conn(), id).await?.into())
}

/// One user account named by its id or its user name (as an operator types it).
pub async fn lookup(core: &Core, caller: &Caller, key: &str) -> OpResult<User> {
    caller.require(Ability::UserRead)?;
    let key = key.trim();
    let mut db = core.store.acquire().await?;
    let row = match Uuid::parse_str(key) {
        Ok(id) => find_user(db.conn(), id).await?,
        Err(_) => match store::users::get_by_username(db.conn(), key).await? {
            Some(u) if u.role == Role::User.as_str() => u,
            _ => return Err(OpError::NotFound("user")),
        },
    };
    Ok(row.into())
}

/// Creates a user account; a password is generated (and answered once) when none is given.
pub async fn create(core: &Core, caller: &Caller, req: CreateUser) -> OpResult<CreatedUser> {
    caller.require(Ability::UserWrite)?;
    let mut errs = FieldErrors::new();
    let username = req.username.unwrap_or_default();
    errs.check("username", rules::validate_username(&username));
    if let Some(p) = &req.password {
        errs.check("password", rules::validate_password(p));
    }
    let expires_at = match req.expires_at.as_deref() {
        None => None,
        Some(s) => match future_time(s) {
            Ok(t) => Some(t),
            Err(m) => {
                errs.add("expires_at", m);
                None
            }
        },
    };
    if !errs.is_empty() {
        return Err(OpError::Invalid(errs));
    }
    let generated = req.password.is_none();
    let plain = req.password.unwrap_or_else(rules::generate_password);
    let now = crate::clock::now();
    let row = UserRow {
        id: Uuid::now_v7(),
        username: username.clone(),
        role: Role::User.as_str().into(),
        password_hash: password::hash(&plain).await?,
        status: UserStatus::Active.as_str().into(),
        expires_at,
        token_version: 0,
        created_at: now,
        updated_at: now,
    };
    let mut tx = core.store.begin().await?;
    store::users::insert(tx.conn(), &row)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict(_) => {
                OpError::Conflict(format!("username `{username}` is taken"))
            }
            other => other.into(),
        })?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "user.created", "user")
            .target(row.id)
            .user(Some(row.id))
            .source(caller.source.clone())
            .details(json!({"username": row.username, "expires_at": expires_at.map(|t| t.format(&Rfc3339).unwrap_or_default())})),
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedUser {
        user: row.into(),
        password: generated.then_some(plain),
    })
}

/// Enables or disables an account (`active` or `disabled`). Disabling revokes the user's login
/// tokens and ends their sessions; an expired account cannot be enabled before its expiry moves.
pub async fn set_status(core: &Core, caller: &Caller, id: Uuid, req: UpdateUser) -> OpResult<User> {
    caller.require(Ability::UserWrite)?;
    let status = match req.status.as_deref() {
        Some("active") => UserStatus::Active,
        Some("disabled") => UserStatus::Disabled,
        _ => return Err(OpError::field("status", "must be active or disabled")),
    };
    let mut tx = core.store.begin().await?;
    let user = find_user(tx.conn(), id).await?;
    if status == UserStatus::Active && user.expires_at.is_some_and(|t| t <= crate::clock::now()) {
        return Err(OpError::field(
            "status",
            "the account has expired: set a new expiry first",
        ));
    }
    store::users::set_status(tx.conn(), id, status.as_str(), crate::clock::now()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "user.updated", "user")
            .target(id)
            .user(Some(id))
            .source(caller.source.clone())
            .details(json!({"status": status.as_str(), "previous": user.status})),
    )
    .await?;
    let user = find_user(tx.conn(), id).await?;
    tx.commit().await?;
    Ok(user.into())
}

/// Deletes a user account; each of their hosts gets a `delete` task (answered).
pub async fn delete(core: &Core, caller: &Caller, id: Uuid) -> OpResult<Vec<Uuid>> {
    caller.require(Ability::UserWrite)?;
    let actor = caller.actor();
    let mut tx = core.store.begin().await?;
    let user = find_user(tx.conn(), id).await?;
    let hosts = store::hosts::ids_of_user(tx.conn(), id).await?;
    let mut task_ids = Vec::with_capacity(hosts.len());
    let now = crate::clock::now();
    for host in &hosts {
        store::hosts::set_status(tx.conn(), *host, HostStatus::Deleting, None, now).await?;
        task_ids.push(tasks::enqueue(tx.conn(), Kind::Delete, *host, json!({}), &actor).await?);
    }
    store::users::delete(tx.conn(), id).await?;
    events::record(
        tx.conn(),
        NewEvent::new(actor, "user.deleted", "user")
            .target(id)
            .user(Some(id))
            .source(caller.source.clone())
            .details(
                json!({"username": user.username, "hosts": hosts.len(), "task_ids": task_ids}),
            ),
    )
    .await?;
    tx.commit().await?;
    if !task_ids.is_empty() {
        core.queue.wake();
    }
    Ok(task_ids)
}

/// Replaces a user's password with a generated one, answered once; revokes login tokens.
pub async fn rotate_password(core: &Core, caller: &Caller, id: Uuid) -> OpResult<NewPassword> {
    caller.require(Ability::UserWrite)?;
    let plain = rules::generate_password();
    let hash = password::hash(&plain).await?;
    let mut tx = core.store.begin().await?;
    let user = find_user(tx.conn(), id).await?;
    store::users::set_password(tx.conn(), id, &hash, crate::clock::now()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "user.password_rotated", "user")
            .target(id)
            .user(Some(id))
            .source(caller.source.clone())
            .details(json!({"username": user.username})),
    )
    .await?;
    tx.commit().await?;
    Ok(NewPassword { password: plain })
}

/// Sets (`Some`) or clears (`None`) a user's expiry.
pub async fn set_expiry(core: &Core, caller: &Caller, id: Uuid, req: SetExpiry) -> OpResult<User> {
    caller.require(Ability::UserWrite)?;
    let expires_at = match req.expires_at {
        None => {
            return Err(OpError::field(
                "expires_at",
                "is required: an RFC 3339 time in the future, or null",
            ));
        }
        Some(None) => None,
        Some(Some(s)) => Some(future_time(&s).map_err(|m| OpError::field("expires_at", m))?),
    };
    let mut tx = core.store.begin().await?;
    find_user(tx.conn(), id).await?;
    store::users::set_expiry(tx.conn(), id, expires_at, crate::clock::now()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "user.expiry_set", "user")
            .target(id)
            .user(Some(id))
            .source(caller.source.clone())
            .details(
                json!({"expires_at": expires_at.map(|t| t.format(&Rfc3339).unwrap_or_default())}),
            ),
    )
    .await?;
    let user = find_user(tx.conn(), id).await?;
    tx.commit().await?;
    Ok(user.into())
}
