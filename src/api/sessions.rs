//! `/v1/admin/sessions`: who is connected through the SSH proxy right now, and ending a
//! session (the client is told why, then its connection is cut).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use super::AppState;
use super::envelope::{Data, data};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, can, parse_id};
use crate::events::{self, NewEvent};
use crate::sshproxy::registry::SessionInfo;

/// Live SSH sessions, oldest first.
#[utoipa::path(get, path = "/v1/admin/sessions", tag = "sessions",
    responses((status = 200, body = Data<Vec<SessionInfo>>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Admin<can::HostRead>,
) -> Json<Data<Vec<SessionInfo>>> {
    data(state.ssh.sessions.list())
}

/// End a live SSH session.
#[utoipa::path(delete, path = "/v1/admin/sessions/{id}", tag = "sessions", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn end(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "session")?;
    let info = state
        .ssh
        .sessions
        .end(id, "session ended by an administrator")
        .ok_or(ApiError::NotFound("session"))?;
    let mut db = state.store.acquire().await?;
    events::record(
        db.conn(),
        NewEvent::new(caller.actor(), "ssh.session_ended", "host")
            .target(info.host_id)
            .host(info.host_id)
            .user(Some(info.user_id))
            .source(caller.source())
            .details(
                json!({"session_id": id, "short_id": info.short_id, "username": info.username}),
            ),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
