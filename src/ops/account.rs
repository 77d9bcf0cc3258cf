//! The caller's own credential, as ../shared/reference/002 conventions have it: who it belongs
//! to (`GET /v1/user`), revoking it (`POST /v1/auth/logout`: a login token alone, or the API
//! token), and a narrower, expiring API token traded for an administrator's password (login
//! with `abilities`).

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Caller, Core, OpError, OpResult};
use crate::auth::jwt::TOKEN_TTL_SECS;
use crate::auth::{Ability, LoginRef, Principal, tokens};
use crate::events::{self, NewEvent};
use crate::store;
use crate::users::Role;

/// Who a credential belongs to and what it may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// `account` (a login) or `token` (an API token).
    pub kind: &'static str,
    /// The account's or the token's id.
    pub id: Uuid,
    /// The account's user name, or the token's name.
    pub name: String,
    /// `admin` or `user`, for an account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// What the credential may do on admin routes (`*` is everything).
    pub abilities: Vec<String>,
    /// When the credential stops working, if it does.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// The caller's identity.
pub async fn whoami(core: &Core, caller: &Caller) -> OpResult<Me> {
    Ok(match &caller.principal {
        Principal::Account {
            id,
            username,
            role,
            login,
        } => Me {
            kind: "account",
            id: *id,
            name: username.clone(),
            role: Some(*role),
            abilities: caller
                .principal
                .grantable()
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
            expires_at: login.map(|l| l.expires_at),
        },
        Principal::Token {
            id,
            name,
            abilities,
        } => {
            let mut db = core.store.acquire().await?;
            let row = store::tokens::get(db.conn(), *id)
                .await?
                .ok_or(OpError::Auth(crate::auth::AuthError::Invalid))?;
            Me {
                kind: "token",
                id: *id,
                name: name.clone(),
                role: None,
                abilities: abilities.iter().map(|a| a.as_str().to_string()).collect(),
                expires_at: row.expires_at,
            }
        }
        Principal::Local { .. } | Principal::Entrant { .. } => {
            return Err(OpError::Forbidden(
                "only logins and API tokens have an identity here".into(),
            ));
        }
    })
}

/// Revokes the credential the caller presented: a login token alone (every login of the
/// account for tokens issued before logins had ids), or the API token with what it minted.
pub async fn logout(core: &Core, caller: &Caller) -> OpResult<()> {
    let mut tx = core.store.begin().await?;
    let now = crate::clock::now();
    let (target, details) = match &caller.principal {
        Principal::Account {
            id,
            login: Some(LoginRef {
                jti, expires_at, ..
            }),
            ..
        } => {
            match jti {
                Some(jti) => store::logins::revoke(tx.conn(), *jti, *expires_at).await?,
                None => store::users::revoke_logins(tx.conn(), *id, now).await?,
            }
            (
                id.to_string(),
                json!({"kind": "login", "all_logins": jti.is_none()}),
            )
        }
        Principal::Token { id, name, .. } => {
            store::tokens::delete(tx.conn(), *id).await?;
            (id.to_string(), json!({"kind": "token", "name": name}))
        }
        _ => {
            return Err(OpError::Forbidden(
                "only logins and API tokens can log out".into(),
            ));
        }
    };
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "auth.logout", "credential")
            .target(target)
            .user(caller.principal.user_id())
            .source(caller.source.clone())
            .details(details),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Checks abilities asked for at login, before the password is checked.
pub fn parse_abilities(asked: &[String]) -> OpResult<Vec<Ability>> {
    Ok(tokens::validate("login", asked)?)
}

/// A narrower, expiring API token for an administrator who just proved their password:
/// `abilities` only, for as long as a login lasts.
pub async fn scoped_token(
    core: &Core,
    admin: &Principal,
    abilities: &[Ability],
    source: Option<String>,
) -> OpResult<(String, OffsetDateTime)> {
    let Principal::Account {
        username,
        role: Role::Admin,
        ..
    } = admin
    else {
        return Err(OpError::field(
            "abilities",
            "only administrators hold abilities; leave it out for a user's login",
        ));
    };
    let expires_at = crate::clock::now() + time::Duration::seconds(TOKEN_TTL_SECS);
    let actor = admin.actor();
    let name = format!("login:{username}");
    let mut tx = core.store.begin().await?;
    let (row, plain) =
        tokens::issue(tx.conn(), &name, abilities, Some(expires_at), &actor, None).await?;
    events::record(
        tx.conn(),
        NewEvent::new(actor, "token.created", "token")
            .target(row.id)
            .source(source)
            .details(json!({"name": row.name, "abilities": row.abilities.0, "prefix": row.prefix, "via": "login"})),
    )
    .await?;
    tx.commit().await?;
    Ok((plain, expires_at))
}

/// Changes the caller's own password (a user's), after checking the current one against the
/// attempt budget every password door shares. Every login token issued before stops working.
pub async fn change_password(core: &Core, caller: &Caller, old: &str, new: &str) -> OpResult<()> {
    let Some(me) = caller.principal.user_id() else {
        return Err(OpError::Forbidden(
            "only a user changes their own password here".into(),
        ));
    };
    let mut errs = crate::validation::FieldErrors::new();
    if old.is_empty() {
        errs.add("old_password", "is required");
    }
    errs.check("new_password", crate::users::validate_password(new));
    if !errs.is_empty() {
        return Err(OpError::Invalid(errs));
    }
    let mut db = core.store.acquire().await?;
    let user = store::users::get(db.conn(), me)
        .await?
        .ok_or(OpError::NotFound("user"))?;
    drop(db);
    let ip = caller.source.as_deref().and_then(|s| s.parse().ok());
    let attempt = core
        .attempts
        .begin(ip, crate::auth::attempts::Target::account(&user.username))
        .map_err(|r| OpError::Busy(r.retry_after_secs()))?;
    if !crate::auth::password::verify(old, &user.password_hash).await? {
        attempt.failed();
        return Err(OpError::field(
            "old_password",
            "is not your current password",
        ));
    }
    attempt.succeeded();
    let hash = crate::auth::password::hash(new).await?;
    let mut tx = core.store.begin().await?;
    store::users::set_password(tx.conn(), me, &hash, crate::clock::now()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "user.password_changed", "user")
            .target(me)
            .user(Some(me))
            .source(caller.source.clone()),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
