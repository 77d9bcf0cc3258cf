//! `/v1/admin/dashboard/stats` and `/v1/admin/status`: the counts an operator's front page
//! shows. Translation only: `ops::overview` collects them.

use axum::extract::State;

use super::AppState;
use super::envelope::{Data, data};
use super::error::ApiResult;
use super::extract::{Admin, can};
use crate::ops::overview as ops;
pub use crate::ops::overview::{HostStats, Stats, Status, TaskStats};

/// Counts of users, hosts by status, egresses (`egress_ips`, the reference's name) and tasks.
#[utoipa::path(get, path = "/v1/admin/dashboard/stats", tag = "dashboard",
    responses((status = 200, body = Data<Stats>)), security(("bearer" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Admin<can::HostRead>,
) -> ApiResult<axum::Json<Data<Stats>>> {
    Ok(data(ops::stats(&state, &caller.caller()).await?))
}

/// Docker reachability and version, the managed image, host counts and the task backlog.
#[utoipa::path(get, path = "/v1/admin/status", tag = "dashboard",
    responses((status = 200, body = Data<Status>)), security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    caller: Admin<can::HostRead>,
) -> ApiResult<axum::Json<Data<Status>>> {
    Ok(data(ops::status(&state, &caller.caller()).await?))
}
