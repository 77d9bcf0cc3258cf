//! `/v1/admin/users`: user accounts (create, list, read, enable/disable, delete, rotate the
//! password, set the expiry). Translation only: the rules are in `ops::users`.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::ApiResult;
use super::extract::{Admin, JsonBody, Paging, can, parse_id};
use crate::ops::users as ops;
pub use crate::ops::users::{CreateUser, CreatedUser, NewPassword, SetExpiry, UpdateUser, User};

/// List user accounts.
#[utoipa::path(get, path = "/v1/admin/users", tag = "users",
    params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<User>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Admin<can::UserRead>,
    paging: Paging,
) -> ApiResult<axum::Json<Page<User>>> {
    let (rows, total) = ops::list(&state, &caller.caller(), paging.req).await?;
    Ok(page(&paging, rows, total))
}

/// Create a user account.
#[utoipa::path(post, path = "/v1/admin/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = Data<CreatedUser>), (status = 409), (status = 422)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    JsonBody(req): JsonBody<CreateUser>,
) -> ApiResult<(StatusCode, axum::Json<Data<CreatedUser>>)> {
    let made = ops::create(&state, &caller.caller(), req).await?;
    Ok((StatusCode::CREATED, data(made)))
}

/// Read a user account.
#[utoipa::path(get, path = "/v1/admin/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<User>), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Admin<can::UserRead>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<User>>> {
    let id = parse_id(&id, "user")?;
    Ok(data(ops::get(&state, &caller.caller(), id).await?))
}

/// Enable or disable a user account. Disabling revokes the user's login tokens.
#[utoipa::path(patch, path = "/v1/admin/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    request_body = UpdateUser,
    responses((status = 200, body = Data<User>), (status = 404), (status = 422)), security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateUser>,
) -> ApiResult<axum::Json<Data<User>>> {
    let id = parse_id(&id, "user")?;
    Ok(data(
        ops::set_status(&state, &caller.caller(), id, req).await?,
    ))
}

/// Delete a user account (204, as cloud-cli-proxy documents). Their hosts are deleted in the
/// background: each gets a `delete` task, visible under `/v1/admin/tasks` and in the events.
#[utoipa::path(delete, path = "/v1/admin/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "user")?;
    ops::delete(&state, &caller.caller(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a user's password with a generated one, answered once. Revokes login tokens.
#[utoipa::path(post, path = "/v1/admin/users/{id}/rotate-password", tag = "users",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<NewPassword>), (status = 404)), security(("bearer" = [])))]
pub async fn rotate_password(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<NewPassword>>> {
    let id = parse_id(&id, "user")?;
    Ok(data(
        ops::rotate_password(&state, &caller.caller(), id).await?,
    ))
}

/// Set or clear a user's expiry.
#[utoipa::path(put, path = "/v1/admin/users/{id}/expiry", tag = "users",
    params(("id" = Uuid, Path)), request_body = SetExpiry,
    responses((status = 200, body = Data<User>), (status = 404), (status = 422)), security(("bearer" = [])))]
pub async fn set_expiry(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SetExpiry>,
) -> ApiResult<axum::Json<Data<User>>> {
    let id = parse_id(&id, "user")?;
    Ok(data(
        ops::set_expiry(&state, &caller.caller(), id, req).await?,
    ))
}
