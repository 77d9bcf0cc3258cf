//! SSH keys of a user: `/v1/admin/users/{id}/ssh-keys...` for administrators and
//! `/v1/user/ssh-keys...` for the user themselves. Translation only: `ops::ssh_keys` holds the
//! rules.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::ApiResult;
use super::extract::{Admin, JsonBody, Paging, UserCaller, can, parse_id};
use crate::ops::ssh_keys as ops;
pub use crate::ops::ssh_keys::{AddKey, GenerateKey, GeneratedKey, SshKey};

/// List a user's SSH keys.
#[utoipa::path(get, path = "/v1/admin/users/{id}/ssh-keys", tag = "ssh keys",
    params(("id" = Uuid, Path), ("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<SshKey>), (status = 404)), security(("bearer" = [])))]
pub async fn admin_list(
    State(state): State<AppState>,
    caller: Admin<can::UserRead>,
    Path(id): Path<String>,
    paging: Paging,
) -> ApiResult<axum::Json<Page<SshKey>>> {
    let id = parse_id(&id, "user")?;
    let (rows, total) = ops::list(&state, &caller.caller(), id, paging.req).await?;
    Ok(page(&paging, rows, total))
}

/// Add a public key to a user.
#[utoipa::path(post, path = "/v1/admin/users/{id}/ssh-keys", tag = "ssh keys",
    params(("id" = Uuid, Path)), request_body = AddKey,
    responses((status = 201, body = Data<SshKey>), (status = 404), (status = 409), (status = 422)),
    security(("bearer" = [])))]
pub async fn admin_add(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AddKey>,
) -> ApiResult<(StatusCode, axum::Json<Data<SshKey>>)> {
    let id = parse_id(&id, "user")?;
    let key = ops::add(&state, &caller.caller(), id, req).await?;
    Ok((StatusCode::CREATED, data(key)))
}

/// Generate an ed25519 key pair for a user; the private key is answered once.
#[utoipa::path(post, path = "/v1/admin/users/{id}/ssh-keys/generate", tag = "ssh keys",
    params(("id" = Uuid, Path)), request_body = GenerateKey,
    responses((status = 201, body = Data<GeneratedKey>), (status = 404)), security(("bearer" = [])))]
pub async fn admin_generate(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<GenerateKey>,
) -> ApiResult<(StatusCode, axum::Json<Data<GeneratedKey>>)> {
    let id = parse_id(&id, "user")?;
    let key = ops::generate(&state, &caller.caller(), id, req).await?;
    Ok((StatusCode::CREATED, data(key)))
}

/// Remove a key from a user.
#[utoipa::path(delete, path = "/v1/admin/users/{id}/ssh-keys/{key_id}", tag = "ssh keys",
    params(("id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn admin_delete(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "user")?;
    let key_id = parse_id(&key_id, "ssh key")?;
    ops::delete(&state, &caller.caller(), id, key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List my SSH keys.
#[utoipa::path(get, path = "/v1/user/ssh-keys", tag = "user portal",
    params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<SshKey>)), security(("bearer" = [])))]
pub async fn user_list(
    State(state): State<AppState>,
    caller: UserCaller,
    paging: Paging,
) -> ApiResult<axum::Json<Page<SshKey>>> {
    let (rows, total) = ops::list(&state, &caller.caller(), caller.id, paging.req).await?;
    Ok(page(&paging, rows, total))
}

/// Add a public key to my account.
#[utoipa::path(post, path = "/v1/user/ssh-keys", tag = "user portal", request_body = AddKey,
    responses((status = 201, body = Data<SshKey>), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn user_add(
    State(state): State<AppState>,
    caller: UserCaller,
    JsonBody(req): JsonBody<AddKey>,
) -> ApiResult<(StatusCode, axum::Json<Data<SshKey>>)> {
    let key = ops::add(&state, &caller.caller(), caller.id, req).await?;
    Ok((StatusCode::CREATED, data(key)))
}

/// Generate an ed25519 key pair for my account; the private key is answered once.
#[utoipa::path(post, path = "/v1/user/ssh-keys/generate", tag = "user portal", request_body = GenerateKey,
    responses((status = 201, body = Data<GeneratedKey>)), security(("bearer" = [])))]
pub async fn user_generate(
    State(state): State<AppState>,
    caller: UserCaller,
    JsonBody(req): JsonBody<GenerateKey>,
) -> ApiResult<(StatusCode, axum::Json<Data<GeneratedKey>>)> {
    let key = ops::generate(&state, &caller.caller(), caller.id, req).await?;
    Ok((StatusCode::CREATED, data(key)))
}

/// Remove one of my keys.
#[utoipa::path(delete, path = "/v1/user/ssh-keys/{key_id}", tag = "user portal",
    params(("key_id" = Uuid, Path)), responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn user_delete(
    State(state): State<AppState>,
    caller: UserCaller,
    Path(key_id): Path<String>,
) -> ApiResult<StatusCode> {
    let key_id = parse_id(&key_id, "ssh key")?;
    ops::delete(&state, &caller.caller(), caller.id, key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
