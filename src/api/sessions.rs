//! `/v1/admin/sessions`: who is connected through the SSH proxy right now, and ending a
//! session. Translation only: `ops::sessions` holds the rules.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::AppState;
use super::envelope::{Data, data};
use super::error::ApiResult;
use super::extract::{Admin, can, parse_id};
use crate::ops::sessions as ops;
use crate::sshproxy::registry::SessionInfo;

/// Live SSH sessions, oldest first.
#[utoipa::path(get, path = "/v1/admin/sessions", tag = "sessions",
    responses((status = 200, body = Data<Vec<SessionInfo>>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Admin<can::HostRead>,
) -> ApiResult<axum::Json<Data<Vec<SessionInfo>>>> {
    Ok(data(ops::list(&state, &caller.caller())?))
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
    ops::end(&state, &caller.caller(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
