//! `/v1/admin/tokens`: scoped API tokens for automation. The token is answered once; a caller
//! can grant only abilities it holds itself.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, JsonBody, Paging, can, parse_id};
use super::layers::check;
use super::users::future_time;
use crate::auth::tokens;
use crate::events::{self, NewEvent};
use crate::store::{self, tokens::TokenRow};

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

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateToken {
    pub name: Option<String>,
    /// `resource:action` abilities, or `*`.
    pub abilities: Option<Vec<String>>,
    /// RFC 3339 time in the future; absent for a token that does not expire.
    pub expires_at: Option<String>,
}

/// Create an API token. Limited to 10 a minute per caller.
#[utoipa::path(post, path = "/v1/admin/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = Data<CreatedToken>), (status = 403), (status = 422), (status = 429)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Admin<can::TokenWrite>,
    JsonBody(req): JsonBody<CreateToken>,
) -> ApiResult<(StatusCode, axum::Json<Data<CreatedToken>>)> {
    check(&state.limits.token_create, &caller.principal.rate_key())?;
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
        return Err(ApiError::invalid(errs));
    }
    let grantable = caller.principal.grantable();
    if let Some(a) = abilities.iter().find(|a| !a.granted_by(&grantable)) {
        return Err(ApiError::Forbidden(format!(
            "cannot grant {a}: a token can only grant abilities it holds"
        )));
    }
    let mut tx = state.store.begin().await?;
    // A token minting a token: the new one lives no longer than its parent, and goes with it.
    let (parent_id, expires_at) = match &caller.principal {
        crate::auth::Principal::Token { id, .. } => {
            let parent = store::tokens::get(tx.conn(), *id)
                .await?
                .ok_or(ApiError::Unauthorized("the token was revoked".into()))?;
            let expires_at = match (parent.expires_at, expires_at) {
                (Some(limit), Some(asked)) if asked > limit => {
                    return Err(ApiError::field(
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
            .source(caller.source())
            .details(json!({"name": row.name, "abilities": row.abilities.0, "prefix": row.prefix})),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        data(CreatedToken {
            info: row.into(),
            token: plain,
        }),
    ))
}

/// List API tokens.
#[utoipa::path(get, path = "/v1/admin/tokens", tag = "tokens",
    params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<Token>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Admin<can::TokenWrite>,
    paging: Paging,
) -> ApiResult<axum::Json<Page<Token>>> {
    let mut db = state.store.acquire().await?;
    let (rows, total) = store::tokens::list(db.conn(), paging.req).await?;
    Ok(page(
        &paging,
        rows.into_iter().map(Token::from).collect(),
        total,
    ))
}

/// Revoke an API token, and every token it minted, down the line.
#[utoipa::path(delete, path = "/v1/admin/tokens/{id}", tag = "tokens", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Admin<can::TokenWrite>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "token")?;
    let mut tx = state.store.begin().await?;
    let Some(row) = store::tokens::delete(tx.conn(), id).await? else {
        return Err(ApiError::NotFound("token"));
    };
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "token.revoked", "token")
            .target(id)
            .source(caller.source())
            .details(json!({"name": row.name, "prefix": row.prefix})),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
