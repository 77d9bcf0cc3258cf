//! `/v1/admin/tokens`: scoped API tokens for automation. The token is answered once.
//! Translation only (and the creation rate limit): the rules are in `ops::tokens`.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::ApiResult;
use super::extract::{Admin, JsonBody, Paging, can, parse_id};
use super::layers::check;
use crate::ops::tokens as ops;
pub use crate::ops::tokens::{CreateToken, CreatedToken, Token};

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
    let made = ops::create(&state, &caller.caller(), req).await?;
    Ok((StatusCode::CREATED, data(made)))
}

/// List API tokens.
#[utoipa::path(get, path = "/v1/admin/tokens", tag = "tokens",
    params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<Token>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Admin<can::TokenWrite>,
    paging: Paging,
) -> ApiResult<axum::Json<Page<Token>>> {
    let (rows, total) = ops::list(&state, &caller.caller(), paging.req).await?;
    Ok(page(&paging, rows, total))
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
    ops::revoke(&state, &caller.caller(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
