//! Tasks: the queue of long operations, read for polling and inspection.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Caller, Core, OpError, OpResult};
use crate::auth::Ability;
use crate::store::{
    self, PageRequest,
    tasks::{TaskFilter, TaskRow},
};

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

/// One task.
pub async fn get(core: &Core, caller: &Caller, id: Uuid) -> OpResult<Task> {
    caller.require(Ability::TaskRead)?;
    let mut db = core.store.acquire().await?;
    let task = store::tasks::get(db.conn(), id)
        .await?
        .ok_or(OpError::NotFound("task"))?;
    Ok(task.into())
}

/// Tasks, newest first. A status or kind that no task can have is refused, naming the field.
pub async fn list(
    core: &Core,
    caller: &Caller,
    filter: &TaskFilter,
    page: PageRequest,
) -> OpResult<(Vec<Task>, i64)> {
    caller.require(Ability::TaskRead)?;
    let mut errs = crate::validation::FieldErrors::new();
    if let Some(s) = &filter.status
        && !crate::tasks::STATUSES.contains(&s.as_str())
    {
        errs.add(
            "status",
            format!("must be one of {}", crate::tasks::STATUSES.join(", ")),
        );
    }
    if let Some(k) = &filter.kind
        && crate::tasks::Kind::parse(k).is_none()
    {
        errs.add(
            "kind",
            format!(
                "must be one of {}",
                crate::tasks::Kind::ALL.map(|k| k.as_str()).join(", ")
            ),
        );
    }
    errs.into_result(())?;
    let mut db = core.store.acquire().await?;
    let (rows, total) = store::tasks::list(db.conn(), filter, page).await?;
    Ok((rows.into_iter().map(Task::from).collect(), total))
}
