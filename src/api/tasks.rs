//! `/v1/admin/tasks`: the queue of long operations, for polling and inspection.

use axum::extract::{Path, State};
use axum::http::request::Parts;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, Paging, can, parse_id, query_map};
use crate::store::{
    self,
    tasks::{TaskFilter, TaskRow},
};
use crate::tasks::{Kind, STATUSES};
use crate::validation::FieldErrors;

/// A task.
#[derive(Debug, Serialize, ToSchema)]
pub struct Task {
    pub id: Uuid,
    /// create, start, stop, rebuild, delete, bind_egress.
    pub kind: String,
    pub host_id: Option<Uuid>,
    /// queued, running, succeeded, failed.
    pub status: String,
    /// The latest progress message.
    pub progress: Option<String>,
    pub error: Option<String>,
    pub attempts: i64,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Seconds from start to finish (or to now, while running).
    pub duration_secs: Option<i64>,
}

impl From<TaskRow> for Task {
    fn from(t: TaskRow) -> Self {
        let duration_secs = t
            .started_at
            .map(|s| (t.finished_at.unwrap_or_else(crate::clock::now) - s).whole_seconds());
        Task {
            id: t.id,
            kind: t.kind,
            host_id: t.host_id,
            status: t.status,
            progress: t.progress,
            error: t.error,
            attempts: t.attempts,
            created_by: t.created_by,
            created_at: t.created_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
            duration_secs,
        }
    }
}

/// `?status`, `?host_id` and `?kind`, validated.
pub struct TaskQuery(TaskFilter);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TaskQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = query_map(parts);
        let mut errs = FieldErrors::new();
        let mut f = TaskFilter::default();
        if let Some(s) = q.get("status") {
            if STATUSES.contains(&s.as_str()) {
                f.status = Some(s.clone());
            } else {
                errs.add("status", format!("must be one of {}", STATUSES.join(", ")));
            }
        }
        if let Some(k) = q.get("kind") {
            match Kind::parse(k) {
                Some(k) => f.kind = Some(k.as_str().into()),
                None => errs.add(
                    "kind",
                    format!(
                        "must be one of {}",
                        Kind::ALL.map(|k| k.as_str()).join(", ")
                    ),
                ),
            }
        }
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
    _: Admin<can::TaskRead>,
    TaskQuery(filter): TaskQuery,
    paging: Paging,
) -> ApiResult<axum::Json<Page<Task>>> {
    let mut db = state.store.acquire().await?;
    let (rows, total) = store::tasks::list(db.conn(), &filter, paging.req).await?;
    Ok(page(
        &paging,
        rows.into_iter().map(Task::from).collect(),
        total,
    ))
}

/// Read a task.
#[utoipa::path(get, path = "/v1/admin/tasks/{id}", tag = "tasks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Task>), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _: Admin<can::TaskRead>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Task>>> {
    let id = parse_id(&id, "task")?;
    let mut db = state.store.acquire().await?;
    let task = store::tasks::get(db.conn(), id)
        .await?
        .ok_or(ApiError::NotFound("task"))?;
    Ok(data(task.into()))
}
