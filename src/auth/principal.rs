//! The authenticated caller, and the authenticator that turns credentials into one.

use time::OffsetDateTime;
use uuid::Uuid;

use std::sync::Arc;

use super::jwt::TOKEN_TTL_SECS;
use super::{Ability, AuthError, password, tokens};
use crate::store::{self, Store};
use crate::users::{Role, UserStatus};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A logged-in account (administrator or user).
    Account {
        id: Uuid,
        username: String,
        role: Role,
        /// The login token presented, when the caller came with one.
        login: Option<LoginRef>,
    },
    /// An API token with its abilities.
    Token {
        id: Uuid,
        name: String,
        abilities: Vec<Ability>,
    },
    /// The operator at the server's own shell (the CLI), who can read the database anyway.
    Local { user: String },
    /// A user who proved a host's password at a short link or a bootstrap: acts as that
    /// host's owner, and appears in events by the door they came through (`entry:k3x9m2qa`).
    Entrant { user_id: Uuid, door: String },
}

impl Principal {
    /// How the caller appears in events: `admin:alice`, `user:bob`, `token:ci-deploy`.
    pub fn actor(&self) -> String {
        match self {
            Principal::Account { username, role, .. } => format!("{}:{username}", role.as_str()),
            Principal::Token { name, .. } => format!("token:{name}"),
            Principal::Local { user } => format!("cli:{user}"),
            Principal::Entrant { door, .. } => door.clone(),
        }
    }

    /// The key that rate limits count against.
    pub fn rate_key(&self) -> String {
        match self {
            Principal::Account { id, .. } => format!("account:{id}"),
            Principal::Token { id, .. } => format!("token:{id}"),
            Principal::Local { .. } => "local".into(),
            Principal::Entrant { user_id, .. } => format!("account:{user_id}"),
        }
    }

    /// Whether the caller may use an admin route that needs `ability`. Administrators may use
    /// all; tokens what they were given; users none.
    pub fn can(&self, ability: Ability) -> bool {
        match self {
            Principal::Account { role, .. } => *role == Role::Admin,
            Principal::Token { abilities, .. } => ability.granted_by(abilities),
            Principal::Local { .. } => true,
            Principal::Entrant { .. } => false,
        }
    }

    /// The abilities a caller could hand on to a token it creates.
    pub fn grantable(&self) -> Vec<Ability> {
        match self {
            Principal::Account {
                role: Role::Admin, ..
            } => vec![Ability::All],
            Principal::Account { .. } | Principal::Entrant { .. } => vec![],
            Principal::Token { abilities, .. } => abilities.clone(),
            Principal::Local { .. } => vec![Ability::All],
        }
    }

    /// The account id when the caller is a user (not an administrator or a token).
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Principal::Account {
                id,
                role: Role::User,
                ..
            } => Some(*id),
            Principal::Entrant { user_id, .. } => Some(*user_id),
            _ => None,
        }
    }
}

/// Which login token a caller presented: its id (absent on tokens issued before logins had
/// ids) and when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRef {
    pub jti: Option<Uuid>,
    pub expires_at: OffsetDateTime,
    /// The account's token generation the login carries.
    pub ver: i64,
    /// The signing secret it was checked with ([`super::jwt::JwtKeys::fingerprint`]).
    pub key: [u8; 8],
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct Login {
    pub token: String,
    pub role: Role,
    pub expires_in: i64,
    pub user_id: Uuid,
}

/// Turns credentials into principals.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    /// The signing secret, followed as `sluice keys rotate-jwt` replaces it.
    jwt: Arc<crate::keys::jwt::JwtSecret>,
}

/// How stale `last_used_at` may get before a use writes it again.
const TOUCH_INTERVAL_SECS: i64 = 60;

impl Authenticator {
    pub fn new(store: Store, jwt: Arc<crate::keys::jwt::JwtSecret>) -> Self {
        Self { store, jwt }
    }

    /// The caller behind a bearer credential: an API token (`sl_...`) or a login JWT.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, AuthError> {
        let now = crate::clock::now();
        let mut db = self.store.acquire().await?;
        if tokens::looks_like_token(bearer) {
            let row = store::tokens::get_by_hash(db.conn(), &tokens::hash(bearer))
                .await?
                .ok_or(AuthError::Invalid)?;
            token_live(row.expires_at, now)?;
            if row
                .last_used_at
                .is_none_or(|t| (now - t).whole_seconds() >= TOUCH_INTERVAL_SECS)
            {
                store::tokens::touch(db.conn(), row.id, now).await?;
            }
            let abilities = row
                .abilities
                .0
                .iter()
                .filter_map(|a| Ability::parse(a))
                .collect();
            return Ok(Principal::Token {
                id: row.id,
                name: row.name,
                abilities,
            });
        }
        let keys = self.jwt.keys();
        let claims = keys.verify(bearer)?;
        let (user, role) = login_holds(
            db.conn(),
            claims.sub,
            &claims.role,
            claims.ver,
            claims.jti,
            now,
        )
        .await?;
        Ok(Principal::Account {
            id: user.id,
            username: user.username,
            role,
            login: Some(LoginRef {
                jti: claims.jti,
                expires_at: OffsetDateTime::from_unix_timestamp(claims.exp)
                    .map_err(|_| AuthError::Invalid)?,
                ver: claims.ver,
                key: keys.fingerprint(),
            }),
        })
    }

    /// Whether what `principal` was authenticated with still holds, for what outlives the
    /// request that presented it (a browser terminal, a desktop): the same checks as
    /// [`Self::authenticate`], from what the principal remembers. A login ends with its
    /// logout, its expiry, a password change or any other bump of the account's generation, a
    /// change of role, the account's disabling or expiry, and a rotation of the signing
    /// secret; an API token with its revocation or expiry. Other principals hold.
    pub async fn still_holds(&self, principal: &Principal) -> Result<(), AuthError> {
        let now = crate::clock::now();
        let mut db = self.store.acquire().await?;
        match principal {
            Principal::Account {
                id,
                role,
                login: Some(login),
                ..
            } => {
                if login.key != self.jwt.keys().fingerprint() || login.expires_at <= now {
                    return Err(AuthError::Invalid);
                }
                login_holds(db.conn(), *id, role.as_str(), login.ver, login.jti, now)
                    .await
                    .map(|_| ())
            }
            Principal::Account { login: None, .. } => Ok(()),
            Principal::Token { id, .. } => {
                let row = store::tokens::get(db.conn(), *id)
                    .await?
                    .ok_or(AuthError::Invalid)?;
                token_live(row.expires_at, now)
            }
            Principal::Local { .. } | Principal::Entrant { .. } => Ok(()),
        }
    }

    /// Checks a user name and password and issues a login token. Unknown names cost the same
    /// time as wrong passwords.
    pub async fn login(&self, username: &str, pw: &str) -> Result<Login, AuthError> {
        let mut db = self.store.acquire().await?;
        let user = store::users::get_by_username(db.conn(), username).await?;
        drop(db);
        let Some(user) = user else {
            password::verify_decoy(pw).await?;
            return Err(AuthError::Invalid);
        };
        if !password::verify(pw, &user.password_hash).await? {
            return Err(AuthError::Invalid);
        }
        check_active(&user.status, user.expires_at, crate::clock::now())?;
        let role = Role::parse(&user.role).ok_or(AuthError::Invalid)?;
        let token = self
            .jwt
            .keys()
            .issue(user.id, role.as_str(), user.token_version)?;
        Ok(Login {
            token,
            role,
            expires_in: TOKEN_TTL_SECS,
            user_id: user.id,
        })
    }
}

/// An API token that has not expired.
fn token_live(expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Result<(), AuthError> {
    match expires_at {
        Some(t) if t <= now => Err(AuthError::Invalid),
        _ => Ok(()),
    }
}

/// What a login (already verified against the signing keys) rests on in the database: the
/// account exists with the role and token generation the login carries, the login was not
/// revoked, and the account is active. Answers the account and its role.
async fn login_holds(
    mut c: store::Conn<'_>,
    account: Uuid,
    role: &str,
    ver: i64,
    jti: Option<Uuid>,
    now: OffsetDateTime,
) -> Result<(store::users::UserRow, Role), AuthError> {
    let user = store::users::get(c.reborrow(), account)
        .await?
        .ok_or(AuthError::Invalid)?;
    let parsed = Role::parse(&user.role).ok_or(AuthError::Invalid)?;
    if user.token_version != ver || parsed.as_str() != role {
        return Err(AuthError::Invalid);
    }
    if let Some(jti) = jti
        && store::logins::is_revoked(c, jti).await?
    {
        return Err(AuthError::Invalid);
    }
    check_active(&user.status, user.expires_at, now)?;
    Ok((user, parsed))
}

fn check_active(
    status: &str,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), AuthError> {
    match UserStatus::parse(status) {
        Some(UserStatus::Active) if expires_at.is_none_or(|t| t > now) => Ok(()),
        Some(UserStatus::Disabled) => Err(AuthError::Inactive("disabled")),
        _ => Err(AuthError::Inactive("expired")),
    }
}
