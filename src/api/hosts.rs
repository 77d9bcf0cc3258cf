//! `/v1/admin/hosts` and `/v1/admin/bindings`: users' containers, their lifecycle (each step a
//! queued task), and the egress each is bound to. Translation only: the rules are in
//! `ops::hosts` and `ops::bindings`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, JsonBody, Paging, can, parse_id, query_map};
use crate::ops::Public;
use crate::ops::bindings::{self, Binding, CreateBinding};
pub use crate::ops::desktop::DesktopTicket;
use crate::ops::hosts::{self as host_ops, LOG_TAIL_MAX};
pub use crate::ops::hosts::{
    Access, CreateHost, CreatedHost, Host, HostLogs, RebuildRequest, SshPassword, TaskQueued,
};
use crate::tasks::Kind;

/// Where users reach Sluice, as access commands show it: the SSH host name (the configured
/// public host, or the request's Host header without its port) and the base URL of short
/// links (the configured public URL, or `http://` and the request's Host header).
pub struct PublicHost(pub Public);

impl std::ops::Deref for PublicHost {
    type Target = Public;
    fn deref(&self) -> &Public {
        &self.0
    }
}

fn safe_host(h: &str) -> bool {
    !h.is_empty()
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
}

impl FromRequestParts<AppState> for PublicHost {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| safe_host(h));
        let ssh_host = match (&state.public_host, header) {
            (Some(h), _) => h.clone(),
            (None, Some(host)) => {
                if host.starts_with('[') {
                    host.split(']')
                        .next()
                        .map(|h| format!("{h}]"))
                        .unwrap_or_default()
                } else {
                    host.split(':').next().unwrap_or(host).to_string()
                }
            }
            (None, None) => "localhost".into(),
        };
        // The scheme the request came in with: TLS here, or what a trusted proxy says.
        let scheme = parts
            .extensions
            .get::<crate::api::client::Client>()
            .map_or("http", |c| c.scheme());
        let base_url = match (&state.public_url, header) {
            (Some(u), _) => u.clone(),
            (None, Some(host)) => format!("{scheme}://{host}"),
            (None, None) => format!("{scheme}://{ssh_host}"),
        };
        Ok(PublicHost(Public { ssh_host, base_url }))
    }
}

/// `?user_id` of the host list, validated.
pub struct HostQuery {
    user_id: Option<Uuid>,
    status: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for HostQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = query_map(parts);
        let user_id = q
            .get("user_id")
            .map(|v| Uuid::parse_str(v).map_err(|_| ApiError::field("user_id", "must be a UUID")))
            .transpose()?;
        Ok(HostQuery {
            user_id,
            status: q.get("status").cloned(),
        })
    }
}

/// A host row as answered, with access commands for this request's public address.
pub fn view(state: &AppState, row: crate::store::hosts::HostRow, ph: &PublicHost) -> Host {
    Host::view(state, row, &ph.0)
}

/// List hosts.
#[utoipa::path(get, path = "/v1/admin/hosts", tag = "hosts",
    params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query), ("user_id" = Option<Uuid>, Query),
        ("status" = Option<String>, Query, description = "only hosts in this status")),
    responses((status = 200, body = Page<Host>), (status = 422)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Admin<can::HostRead>,
    ph: PublicHost,
    paging: Paging,
    HostQuery { user_id, status }: HostQuery,
) -> ApiResult<axum::Json<Page<Host>>> {
    let filter = host_ops::HostFilter { user_id, status };
    let (rows, total) = host_ops::list(&state, &caller.caller(), filter, paging.req).await?;
    let views = rows.into_iter().map(|h| view(&state, h, &ph)).collect();
    Ok(page(&paging, views, total))
}

/// Create a host for a user; answers 202 with the creation task and the SSH password.
#[utoipa::path(post, path = "/v1/admin/hosts", tag = "hosts", request_body = CreateHost,
    responses((status = 202, body = Data<CreatedHost>), (status = 422)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    ph: PublicHost,
    JsonBody(req): JsonBody<CreateHost>,
) -> ApiResult<(StatusCode, axum::Json<Data<CreatedHost>>)> {
    let made = host_ops::create(&state, &caller.caller(), req).await?;
    Ok((
        StatusCode::ACCEPTED,
        data(CreatedHost {
            host: view(&state, made.host, &ph),
            task_id: made.task_id,
            ssh_password: made.ssh_password,
        }),
    ))
}

/// Read a host.
#[utoipa::path(get, path = "/v1/admin/hosts/{id}", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Host>), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Admin<can::HostRead>,
    ph: PublicHost,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Host>>> {
    let id = parse_id(&id, "host")?;
    let row = host_ops::get(&state, &caller.caller(), id).await?;
    Ok(data(view(&state, row, &ph)))
}

type Queued = (StatusCode, axum::Json<Data<TaskQueued>>);

/// Queues a body-less lifecycle step on behalf of an administrator.
async fn admin_step(
    state: &AppState,
    caller: &Admin<can::HostWrite>,
    id: &str,
    kind: Kind,
) -> ApiResult<Queued> {
    let id = parse_id(id, "host")?;
    let queued = host_ops::step(state, &caller.caller(), id, kind, json!({})).await?;
    Ok((StatusCode::ACCEPTED, data(queued)))
}

/// Delete a host: its container, volume and files, through a task.
#[utoipa::path(delete, path = "/v1/admin/hosts/{id}", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 202, body = Data<TaskQueued>), (status = 404)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<Queued> {
    admin_step(&state, &caller, &id, Kind::Delete).await
}

/// Start a host.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/start", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 202, body = Data<TaskQueued>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<Queued> {
    admin_step(&state, &caller, &id, Kind::Start).await
}

/// Stop a host.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/stop", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 202, body = Data<TaskQueued>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<Queued> {
    admin_step(&state, &caller, &id, Kind::Stop).await
}

/// Rebuild a host's container; the home volume survives unless `wipe_home` is true.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/rebuild", tag = "hosts", params(("id" = Uuid, Path)),
    request_body = RebuildRequest,
    responses((status = 202, body = Data<TaskQueued>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn rebuild(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RebuildRequest>,
) -> ApiResult<Queued> {
    let id = parse_id(&id, "host")?;
    let queued = host_ops::rebuild(&state, &caller.caller(), id, req).await?;
    Ok((StatusCode::ACCEPTED, data(queued)))
}

/// A single-use ticket (30 s) into a desktop host's desktop, bound to the host and the
/// caller: its `websocket` is where noVNC (or any RFB-over-WebSocket client) connects.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/vnc/ticket", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 201, body = Data<DesktopTicket>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn desktop_ticket(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<Data<DesktopTicket>>)> {
    let id = parse_id(&id, "host")?;
    let ticket = crate::ops::desktop::ticket(&state, &caller.caller(), id).await?;
    Ok((StatusCode::CREATED, data(ticket)))
}

/// Replace a host's SSH password with a generated one, answered once.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/rotate-ssh-password", tag = "hosts",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<SshPassword>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn rotate_ssh_password(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<SshPassword>>> {
    let id = parse_id(&id, "host")?;
    Ok(data(
        host_ops::rotate_ssh_password(&state, &caller.caller(), id).await?,
    ))
}

/// Bind a host to an egress (one egress per host). A running host is moved onto it by a task.
#[utoipa::path(post, path = "/v1/admin/bindings", tag = "bindings", request_body = CreateBinding,
    responses((status = 201, body = Data<Binding>), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn bind(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    JsonBody(req): JsonBody<CreateBinding>,
) -> ApiResult<(StatusCode, axum::Json<Data<Binding>>)> {
    let binding = bindings::bind(&state, &caller.caller(), req).await?;
    Ok((StatusCode::CREATED, data(binding)))
}

/// Remove a binding. A running host loses its egress (and so all outside traffic) through a
/// task.
#[utoipa::path(delete, path = "/v1/admin/bindings/{id}", tag = "bindings", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 202, body = Data<TaskQueued>), (status = 404)), security(("bearer" = [])))]
pub async fn unbind(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id, "binding")?;
    Ok(
        match bindings::unbind(&state, &caller.caller(), id).await? {
            Some(queued) => (StatusCode::ACCEPTED, data(queued)).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    )
}

/// Stop a host and refuse starts and logins until it is unsuspended.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/suspend", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 202, body = Data<TaskQueued>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn suspend(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<Queued> {
    admin_step(&state, &caller, &id, Kind::Suspend).await
}

/// Lift a suspension: the host becomes `stopped`, and can be started again.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/unsuspend", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Host>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn unsuspend(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    ph: PublicHost,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Host>>> {
    let id = parse_id(&id, "host")?;
    let row = host_ops::unsuspend(&state, &caller.caller(), id).await?;
    Ok(data(view(&state, row, &ph)))
}

/// `?tail` of the logs route, validated (default 100).
pub struct LogTail(u32);

impl<S: Send + Sync> FromRequestParts<S> for LogTail {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match query_map(parts).get("tail") {
            None => Ok(LogTail(100)),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=LOG_TAIL_MAX).contains(&n) => Ok(LogTail(n)),
                _ => Err(ApiError::field(
                    "tail",
                    format!("must be a whole number from 1 to {LOG_TAIL_MAX}"),
                )),
            },
        }
    }
}

/// Read the last `tail` lines (default 100, at most 1000) of a host's container output.
#[utoipa::path(get, path = "/v1/admin/hosts/{id}/logs", tag = "hosts",
    params(("id" = Uuid, Path), ("tail" = Option<u32>, Query)),
    responses((status = 200, body = Data<HostLogs>), (status = 404), (status = 409), (status = 422)),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Admin<can::HostRead>,
    Path(id): Path<String>,
    LogTail(tail): LogTail,
) -> ApiResult<axum::Json<Data<HostLogs>>> {
    let id = parse_id(&id, "host")?;
    Ok(data(
        host_ops::logs(&state, &caller.caller(), id, tail).await?,
    ))
}
