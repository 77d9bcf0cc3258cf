//! Tasks: durable long operations. Requests queue a task row in the same transaction as their
//! change; the worker claims queued tasks (one at a time per host), drives the host runtime,
//! records progress and outcome, and moves the host's status. Periodic housekeeping (account
//! expiry) runs here too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken as CancelToken;
use uuid::Uuid;

use crate::events::{self, NewEvent};
use crate::hosts::HostStatus;
use crate::runtime::{EgressSpec, HostRuntime, HostSpec, Progress, RuntimeError};
use crate::store::tasks::TaskRow;
use crate::store::{self, Conn, Store, StoreError};

pub mod reconcile;

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Start,
    Stop,
    Rebuild,
    Delete,
    BindEgress,
    Suspend,
}

impl Kind {
    /// The event recorded when this step is asked for.
    pub fn requested_action(self) -> &'static str {
        match self {
            Kind::Start => "host.start_requested",
            Kind::Stop => "host.stop_requested",
            Kind::Rebuild => "host.rebuild_requested",
            Kind::Delete => "host.delete_requested",
            Kind::Create => "host.create_requested",
            Kind::BindEgress => "host.bind_requested",
            Kind::Suspend => "host.suspend_requested",
        }
    }

    pub const ALL: [Kind; 7] = [
        Kind::Create,
        Kind::Start,
        Kind::Stop,
        Kind::Rebuild,
        Kind::Delete,
        Kind::BindEgress,
        Kind::Suspend,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Start => "start",
            Kind::Stop => "stop",
            Kind::Rebuild => "rebuild",
            Kind::Delete => "delete",
            Kind::BindEgress => "bind_egress",
            Kind::Suspend => "suspend",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Task statuses.
pub const STATUSES: [&str; 4] = ["queued", "running", "succeeded", "failed"];

/// Queues a task for a host; the caller commits it with its change and then calls
/// [`Queue::wake`].
pub async fn enqueue(
    c: Conn<'_>,
    kind: Kind,
    host_id: Uuid,
    payload: Value,
    actor: &str,
) -> store::Result<Uuid> {
    let id = Uuid::now_v7();
    let row = TaskRow {
        id,
        kind: kind.as_str().into(),
        host_id: Some(host_id),
        status: "queued".into(),
        progress: Some("queued".into()),
        error: None,
        payload: sqlx::types::Json(payload),
        attempts: 0,
        created_by: actor.into(),
        created_at: crate::clock::now(),
        started_at: None,
        finished_at: None,
    };
    store::tasks::insert(c, &row).await?;
    Ok(id)
}

/// Why a task failed, as its row and event tell it (runtime failures in their short form;
/// the full detail is logged where it happens).
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure {
    #[error("host no longer exists")]
    HostGone,
    #[error("unknown task kind `{0}`")]
    UnknownKind(String),
    #[error("{}", .0.summary())]
    Runtime(RuntimeError),
    #[error("the database failed: {0}")]
    Store(#[from] StoreError),
}

/// Wakes the worker when tasks are queued.
#[derive(Clone, Default)]
pub struct Queue {
    notify: Arc<Notify>,
}

impl Queue {
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// How many tasks run at once, and how transient runtime failures are retried.
const CONCURRENCY: usize = 4;
const MAX_ATTEMPTS: u32 = 4;
const POLL: Duration = Duration::from_secs(2);

/// The task worker.
pub struct Worker {
    store: Store,
    runtime: Arc<dyn HostRuntime>,
    queue: Queue,
}

impl Worker {
    pub fn new(store: Store, runtime: Arc<dyn HostRuntime>, queue: Queue) -> Self {
        Self {
            store,
            runtime,
            queue,
        }
    }

    /// Puts tasks interrupted by a previous process back in the queue. Call before [`run`].
    ///
    /// [`run`]: Worker::run
    pub async fn recover(&self) -> store::Result<u64> {
        let mut db = self.store.acquire().await?;
        store::tasks::requeue_running(db.conn()).await
    }

    /// Runs until `stop` is cancelled, with up to [`CONCURRENCY`] tasks in flight.
    pub async fn run(self: Arc<Self>, stop: CancelToken) {
        let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let claimed = {
                match self.store.acquire().await {
                    Ok(mut db) => store::tasks::claim_next(db.conn(), crate::clock::now()).await,
                    Err(e) => Err(e),
                }
            };
            match claimed {
                Ok(Some(task)) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.execute(task).await;
                        drop(permit);
                        me.queue.wake();
                    });
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim a task"),
            }
            drop(permit);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.queue.notify.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn execute(&self, task: TaskRow) {
        let kind = Kind::parse(&task.kind);
        tracing::info!(task = %task.id, kind = %task.kind, host = ?task.host_id, "task started");
        let started = std::time::Instant::now();
        let outcome = match (kind, task.host_id) {
            (Some(kind), Some(host_id)) => self.run_host_task(&task, kind, host_id).await,
            _ => Err(TaskFailure::UnknownKind(task.kind.clone())),
        };
        let error = outcome.err().map(|e| e.to_string());
        crate::metrics::task_done(
            kind.map_or("unknown", |_| task.kind.as_str()),
            error.is_none(),
            started.elapsed().as_secs_f64(),
        );
        match &error {
            None => tracing::info!(task = %task.id, "task succeeded"),
            Some(e) => tracing::warn!(task = %task.id, error = %e, "task failed"),
        }
        if let Err(e) = self.finish(&task, error.as_deref()).await {
            tracing::error!(task = %task.id, error = %e, "cannot record task outcome");
        }
    }

    async fn finish(&self, task: &TaskRow, error: Option<&str>) -> store::Result<()> {
        let mut tx = self.store.begin().await?;
        store::tasks::finish(tx.conn(), task.id, error, crate::clock::now()).await?;
        let action = if error.is_some() {
            "task.failed"
        } else {
            "task.succeeded"
        };
        let mut ev = NewEvent::new(events::SYSTEM, action, "task")
            .target(task.id)
            .details(json!({"kind": task.kind, "error": error}));
        if let Some(h) = task.host_id {
            ev = ev.host(h);
        }
        events::record(tx.conn(), ev).await?;
        tx.commit().await
    }

    async fn run_host_task(
        &self,
        task: &TaskRow,
        kind: Kind,
        host_id: Uuid,
    ) -> Result<(), TaskFailure> {
        let spec = host_spec(&self.store, host_id)
            .await
            .map_err(TaskFailure::from)?;
        let Some(spec) = spec else {
            // The host is gone: deleting it again has nothing to do; anything else cannot run.
            return match kind {
                Kind::Delete => Ok(()),
                _ => Err(TaskFailure::HostGone),
            };
        };
        if let Some(s) = HostStatus::during(kind) {
            self.set_host_status(host_id, s, None)
                .await
                .map_err(TaskFailure::from)?;
        }
        let progress = TaskProgress {
            store: self.store.clone(),
            task_id: task.id,
        };
        let wipe_home = task.payload.0.get("wipe_home").and_then(Value::as_bool) == Some(true);
        let mut attempt = 1;
        let result = loop {
            let r = match kind {
                Kind::Create => self.runtime.create(&spec, &progress).await,
                Kind::Start => self.runtime.start(&spec, &progress).await,
                Kind::Stop | Kind::Suspend => self.runtime.stop(&spec, &progress).await,
                Kind::Rebuild => self.runtime.rebuild(&spec, wipe_home, &progress).await,
                Kind::Delete => self.runtime.delete(&spec, &progress).await,
                Kind::BindEgress => self.runtime.bind_egress(&spec, &progress).await,
            };
            match r {
                Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                    let backoff = Duration::from_millis(500 * 2u64.pow(attempt));
                    tracing::warn!(task = %task.id, host = %host_id, error = %e, "retrying");
                    progress
                        .report(&format!("retrying in {backoff:?} after: {}", e.summary()))
                        .await;
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let outcome = match (&result, kind, HostStatus::after(kind)) {
            (Ok(()), Kind::Delete, _) => self.remove_host(&spec).await.map_err(TaskFailure::from),
            (Ok(()), _, Some(HostStatus::Running)) => self
                .host_running(
                    host_id,
                    matches!(kind, Kind::Create | Kind::Rebuild).then_some(spec.desktop),
                )
                .await
                .map_err(TaskFailure::from),
            (Ok(()), _, Some(next)) => self
                .set_host_status(host_id, next, None)
                .await
                .map_err(TaskFailure::from),
            (Ok(()), _, None) => Ok(()),
            (Err(e), ..) => {
                // The detail (Docker's message, paths) is for the log; rows and answers get
                // the short reason.
                tracing::error!(task = %task.id, host = %host_id, kind = kind.as_str(), error = %e, "host task failed");
                Err(TaskFailure::Runtime(e.clone()))
            }
        };
        if let Err(reason) = &outcome {
            let reason = format!("{} failed: {reason}", kind.as_str());
            if let Err(e) = self
                .set_host_status(host_id, HostStatus::FAILED, Some(&reason))
                .await
            {
                tracing::error!(host = %host_id, error = %e, "cannot mark host as failed");
            }
        }
        outcome
    }

    async fn set_host_status(
        &self,
        host_id: Uuid,
        status: HostStatus,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut db = self.store.acquire().await?;
        store::hosts::set_status(db.conn(), host_id, status, reason, crate::clock::now()).await
    }

    /// Marks a host running; after a create or rebuild (`new_container`: whether it is a
    /// desktop), records the image it now runs.
    async fn host_running(
        &self,
        host_id: Uuid,
        new_container: Option<bool>,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        let now = crate::clock::now();
        store::hosts::set_status(tx.conn(), host_id, HostStatus::Running, None, now).await?;
        if let Some(desktop) = new_container
            && let Some(image) = self.runtime.image(crate::runtime::image::Kind::of(desktop))
        {
            store::hosts::set_image(tx.conn(), host_id, &image).await?;
        }
        tx.commit().await
    }

    async fn remove_host(&self, spec: &HostSpec) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        store::hosts::delete(tx.conn(), spec.id).await?;
        events::record(
            tx.conn(),
            NewEvent::new(events::SYSTEM, "host.deleted", "host")
                .target(spec.id)
                .host(spec.id)
                .details(json!({"short_id": spec.short_id})),
        )
        .await?;
        tx.commit().await
    }
}

/// What the runtime needs to know about a host, from the database; `None` when it is gone.
pub async fn host_spec(store: &Store, host_id: Uuid) -> store::Result<Option<HostSpec>> {
    let mut db = store.acquire().await?;
    let Some(h) = store::hosts::get(db.conn(), host_id).await? else {
        return Ok(None);
    };
    let egress = match h.egress_ip_id {
        Some(eid) => store::egress::get(db.conn(), store.keys(), eid)
            .await?
            .map(|e| EgressSpec {
                id: e.id,
                ip_address: e.ip_address,
                settings: e.settings.0,
            }),
        None => None,
    };
    let owner_keys = match h.user_id {
        Some(uid) => store::ssh_keys::public_keys(db.conn(), uid).await?,
        None => vec![],
    };
    Ok(Some(HostSpec {
        owner_keys,
        id: h.id,
        short_id: h.short_id,
        username: h.username,
        memory_mb: h.memory_mb,
        cpus: h.cpus,
        pids_limit: h.pids_limit,
        egress,
        desktop: h.desktop,
        account_uid: h.account_uid.and_then(|u| u32::try_from(u).ok()),
    }))
}

struct TaskProgress {
    store: Store,
    task_id: Uuid,
}

#[async_trait]
impl Progress for TaskProgress {
    async fn report(&self, message: &str) {
        let r = match self.store.acquire().await {
            Ok(mut db) => store::tasks::set_progress(db.conn(), self.task_id, message).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!(task = %self.task_id, error = %e, "cannot record task progress");
        }
    }
}

/// Marks accounts whose expiry has passed as expired, every `every`, until `stop`.
pub async fn expiry_sweep(store: Store, every: Duration, stop: CancelToken) {
    loop {
        if let Err(e) = expire_once(&store).await {
            tracing::warn!(error = %e, "account expiry sweep failed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass of the expiry sweep; returns how many accounts expired.
pub async fn expire_once(store: &Store) -> store::Result<usize> {
    let mut tx = store.begin().await?;
    let expired = store::users::expire_due(tx.conn(), crate::clock::now()).await?;
    // Revocations of login tokens that have expired anyway are no longer needed.
    store::logins::purge(tx.conn(), crate::clock::now()).await?;
    for (id, username) in &expired {
        events::record(
            tx.conn(),
            NewEvent::new(events::SYSTEM, "user.expired", "user")
                .target(id)
                .user(Some(*id))
                .details(json!({"username": username})),
        )
        .await?;
    }
    tx.commit().await?;
    if !expired.is_empty() {
        tracing::info!(count = expired.len(), "accounts expired");
    }
    Ok(expired.len())
}
