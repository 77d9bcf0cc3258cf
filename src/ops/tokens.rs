//! API tokens: create (a caller grants only abilities it holds; a token's child lives no longer
//! than it and is revoked with it), list (never the secrets), revoke.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use uuid::Uuid;

use super::users::future_time;
use super::{Caller, Core, OpError, OpResult};
use crate::auth::{Ability, tokens};
use crate::events::{self, NewEvent};
use crate::store::{self, PageRequest, tokens::TokenRow};

/// An API token (without its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct Token {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the token, to tell tokens apart.
    pub prefix: String,
    pub abilities: Vec<String>,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The token that minted this one, if a token did: revoking that one revokes this one.
    pub parent_id: Option<Uuid>,
}

impl From<TokenRow> for Token {
    fn from(t: TokenRow) -> Self {
        Token {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            abilities: t.abilities.0,
            created_by: t.created_by,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            created_at: t.created_at,
            parent_id: t.parent_id,
        }
    }
}

/// A token just created; `token` is shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: Token,
    pub token: String,
}

#[derive(Debug, Default, Deserialize, ToSchema, JsonSchema)]
pub struct CreateToken {
    pub name: Option<String>,
    /// `resource:action` abilities, or `*`.
    pub abilities: Option<Vec<String>>,
    /// RFC 3339 time in the future; absent for a token that does not expire.
    pub expires_at: Option<String>,
}

/// Creates a token, answered once.
pub async fn create(core: &Core, caller: &Caller, req: CreateToken) -> OpResult<CreatedToken> {
    caller.require(Ability::TokenWrite)?;
    let name = req.name.unwrap_or_default();
    let (abilities, mut errs) =
        match tokens::validate(&name, req.abilities.as_deref().unwrap_or_default()) {
            Ok(a) => (a, crate::validation::FieldErrors::new()),
            Err(e) => (vec![], e),
        };
    let expires_at = match req.expires_at.as_deref().map(future_time) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(m)) => {
            errs.add("expires_at", m);
            None
        }
    };
    if !errs.is_empty() {
        return Err(OpError::Invalid(errs));
    }
    let grantable = caller.principal.grantable();
    if let Some(a) = abilities.iter().find(|a| !a.granted_by(&grantable)) {
        return Err(OpError::Forbidden(format!(
            "cannot grant {a}: a token can only grant abilities it holds"
        )));
    }
    let mut tx = core.store.begin().await?;
    // A token minting a token: the new one lives no longer than its parent, and goes with it.
    let (parent_id, expires_at) = match &caller.principal {
        crate::auth::Principal::Token { id, .. } => {
            let parent = store::tokens::get(tx.conn(), *id)
                .await?
                .ok_or(OpError::Auth(crate::auth::AuthError::Invalid))?;
            let expires_at = match (parent.expires_at, expires_at) {
                (Some(limit), Some(asked)) if asked > limit => {
                    return Err(OpError::field(
                        "expires_at",
                        format!(
                            "must not be later than the expiry of the token creating it ({})",
                            limit.format(&Rfc3339).unwrap_or_default()
                        ),
                    ));
                }
                (Some(limit), None) => Some(limit),
                (_, asked) => asked,
            };
            (Some(*id), expires_at)
        }
        _ => (None, expires_at),
    };
    let (row, plain) = tokens::issue(
        tx.conn(),
        &name,
        &abilities,
        expires_at,
        &caller.actor(),
        parent_id,
    )
    .await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "token.created", "token")
            .target(row.id)
            .source(caller.source.clone())
            .details(json!({"name": row.name, "abilities": row.abilities.0, "prefix": row.prefix})),
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedToken {
        info: row.into(),
        token: plain,
    })
}

/// Tokens, without their secrets.
pub async fn list(core: &Core, caller: &Caller, page: PageRequest) -> OpResult<(Vec<Token>, i64)> {
    caller.require(Ability::TokenWrite)?;
    let mut db = core.store.acquire().await?;
    let (rows, total) = store::tokens::list(db.conn(), page).await?;
    Ok((rows.into_iter().map(Token::from).collect(), total))
}

/// Revokes a token, and every token it minted, down the line.
pub async fn revoke(core: &Core, caller: &Caller, id: Uuid) -> OpResult<()> {
    caller.require(Ability::TokenWrite)?;
    let mut tx = core.store.begin().await?;
    let Some(row) = store::tokens::delete(tx.conn(), id).await? else {
        return Err(OpError::NotFound("token"));
    };
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "token.revoked", "token")
            .target(id)
            .source(caller.source.clone())
            .details(json!({"name": row.name, "prefix": row.prefix})),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
