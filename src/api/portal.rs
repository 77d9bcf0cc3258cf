//! `/v1/user/...`: what a user may do for themselves. Another user's host is a 404, never a
//! 403, so ids do not leak.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::ApiResult;
use super::extract::{JsonBody, Paging, UserCaller, parse_id};
use super::hosts::{DesktopTicket, Host, PublicHost, RebuildRequest, TaskQueued, view};
use crate::ops::hosts as host_ops;

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePassword {
    pub old_password: Option<String>,
    /// 8-128 characters.
    pub new_password: Option<String>,
}

/// Change my password. Every login token issued before stops working, this caller's included.
#[utoipa::path(post, path = "/v1/user/change-password", tag = "user portal", request_body = ChangePassword,
    responses((status = 204), (status = 422), (status = 429)), security(("bearer" = [])))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: UserCaller,
    JsonBody(req): JsonBody<ChangePassword>,
) -> ApiResult<StatusCode> {
    crate::ops::account::change_password(
        &state,
        &caller.caller(),
        req.old_password.as_deref().unwrap_or_default(),
        req.new_password.as_deref().unwrap_or_default(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List my hosts.
#[utoipa::path(get, path = "/v1/user/hosts", tag = "user portal",
    params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<Host>)), security(("bearer" = [])))]
pub async fn list_hosts(
    State(state): State<AppState>,
    caller: UserCaller,
    ph: PublicHost,
    paging: Paging,
) -> ApiResult<axum::Json<Page<Host>>> {
    let (rows, total) =
        host_ops::list(&state, &caller.caller(), Default::default(), paging.req).await?;
    let views = rows.into_iter().map(|h| view(&state, h, &ph)).collect();
    Ok(page(&paging, views, total))
}

/// Read one of my hosts.
#[utoipa::path(get, path = "/v1/user/hosts/{id}", tag = "user portal", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Host>), (status = 404)), security(("bearer" = [])))]
pub async fn get_host(
    State(state): State<AppState>,
    caller: UserCaller,
    ph: PublicHost,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Host>>> {
    let id = parse_id(&id, "host")?;
    let row = host_ops::get(&state, &caller.caller(), id).await?;
    Ok(data(view(&state, row, &ph)))
}

/// A single-use ticket (30 s) into one of my desktop hosts' desktop.
#[utoipa::path(post, path = "/v1/user/hosts/{id}/vnc/ticket", tag = "user portal", params(("id" = Uuid, Path)),
    responses((status = 201, body = Data<DesktopTicket>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn desktop_ticket(
    State(state): State<AppState>,
    caller: UserCaller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<Data<DesktopTicket>>)> {
    let id = parse_id(&id, "host")?;
    let ticket = crate::ops::desktop::ticket(&state, &caller.caller(), id).await?;
    Ok((StatusCode::CREATED, data(ticket)))
}

/// Rebuild one of my hosts.
#[utoipa::path(post, path = "/v1/user/hosts/{id}/rebuild", tag = "user portal", params(("id" = Uuid, Path)),
    request_body = RebuildRequest,
    responses((status = 202, body = Data<TaskQueued>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn rebuild_host(
    State(state): State<AppState>,
    caller: UserCaller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RebuildRequest>,
) -> ApiResult<(StatusCode, axum::Json<Data<TaskQueued>>)> {
    let id = parse_id(&id, "host")?;
    let queued = host_ops::rebuild(&state, &caller.caller(), id, req).await?;
    Ok((StatusCode::ACCEPTED, data(queued)))
}
