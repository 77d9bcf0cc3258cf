//! `/v1/admin/tasks`: the queue of long operations, for polling and inspection.

use axum::extract::{Path, State};
use axum::http::request::Parts;
use uuid::Uuid;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, Paging, can, parse_id, query_map};
use crate::ops::tasks as ops;
pub use crate::ops::tasks::Task;
use crate::store::tasks::TaskFilter;
use crate::validation::FieldErrors;

/// `?status`, `?host_id` and `?kind`; the domain decides which statuses and kinds exist.
pub struct TaskQuery(TaskFilter);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TaskQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = query_map(parts);
        let mut errs = FieldErrors::new();
        let mut f = TaskFilter {
            status: q.get("status").cloned(),
            kind: q.get("kind").cloned(),
            ..Default::default()
        };
        if let Some(h) = q.get("host_id") {
            match Uuid::parse_str(h) {
                Ok(id) => f.host_id = Some(id),
                Err(_) => errs.add("host_id", "must be a UUID"),
            }
        }
        errs.into_result(TaskQuery(f)).map_err(ApiError::invalid)
    }
}

/// List tasks, newest first.
#[utoipa::path(get, path = "/v1/admin/tasks", tag = "tasks",
    params(("status" = Option<String>, Query), ("host_id" = Option<Uuid>, Query), ("kind" = Option<String>, Query),
        ("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<Task>), (status = 422)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Admin<can::TaskRead>,
    TaskQuery(filter): TaskQuery,
    paging: Paging,
) -> ApiResult<axum::Json<Page<Task>>> {
    let (rows, total) = ops::list(&state, &caller.caller(), &filter, paging.req).await?;
    Ok(page(&paging, rows, total))
}

/// Read a task.
#[utoipa::path(get, path = "/v1/admin/tasks/{id}", tag = "tasks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Task>), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Admin<can::TaskRead>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Task>>> {
    let id = parse_id(&id, "task")?;
    Ok(data(ops::get(&state, &caller.caller(), id).await?))
}
