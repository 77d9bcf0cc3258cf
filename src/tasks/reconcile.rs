//! The reconciler: at start and every 30 s, brings the runtime back in line with the
//! database. Containers with no host row are removed; hosts that should run but whose
//! container is gone or stopped get a start task (which fails into `error` with the reason if
//! they cannot come back); hosts of disabled or expired users are stopped. Hosts with a task
//! queued or running are left to that task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Kind, Queue, enqueue};
use crate::events::{self, NewEvent};
use crate::hosts::HostStatus;
use crate::runtime::HostRuntime;
use crate::store::{self, Store};
use crate::users::UserStatus;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub orphans_removed: usize,
    pub restarts_queued: usize,
    pub stops_queued: usize,
}

/// Runs [`once`] now and every `every`, until `stop`.
pub async fn run(
    store: Store,
    runtime: Arc<dyn HostRuntime>,
    queue: Queue,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        match once(&store, runtime.as_ref(), &queue).await {
            Ok(r) if r != Report::default() => tracing::info!(?r, "reconciled"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reconcile pass failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Why a pass could not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("runtime: {0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// One reconcile pass.
pub async fn once(
    store: &Store,
    runtime: &dyn HostRuntime,
    queue: &Queue,
) -> Result<Report, ReconcileError> {
    let observed: HashMap<Uuid, bool> = runtime
        .observe()
        .await?
        .into_iter()
        .map(|o| (o.host_id, o.running))
        .collect();
    let hosts = {
        let mut db = store.acquire().await?;
        store::hosts::reconcile_view(db.conn()).await?
    };
    let mut report = Report::default();

    // Containers of this install whose host is gone.
    for host_id in observed.keys() {
        if hosts.iter().any(|(id, _, _)| id == host_id) {
            continue;
        }
        runtime.remove_orphan(*host_id).await?;
        let mut db = store.acquire().await?;
        events::record(
            db.conn(),
            NewEvent::new(events::SYSTEM, "host.orphan_removed", "host")
                .target(host_id)
                .host(*host_id),
        )
        .await?;
        report.orphans_removed += 1;
    }

    for (host_id, status, owner) in &hosts {
        if status != HostStatus::Running.as_str() {
            continue;
        }
        let owner_active = owner.as_deref() == Some(UserStatus::Active.as_str());
        let running = observed.get(host_id).copied().unwrap_or(false);
        let kind = match (owner_active, running) {
            (false, _) => Kind::Stop,
            (true, false) => Kind::Start,
            (true, true) => continue,
        };
        let mut tx = store.begin().await?;
        if store::tasks::host_busy(tx.conn(), *host_id).await? {
            continue;
        }
        let task_id = enqueue(tx.conn(), kind, *host_id, json!({}), events::SYSTEM).await?;
        let (action, why) = match kind {
            Kind::Stop => ("host.stop_requested", "the owner's account is not active"),
            _ => ("host.start_requested", "the container is gone or stopped"),
        };
        events::record(
            tx.conn(),
            NewEvent::new(events::SYSTEM, action, "host")
                .target(host_id)
                .host(*host_id)
                .details(json!({"task_id": task_id, "reason": why})),
        )
        .await?;
        tx.commit().await?;
        match kind {
            Kind::Stop => report.stops_queued += 1,
            _ => report.restarts_queued += 1,
        }
    }
    if report.restarts_queued + report.stops_queued > 0 {
        queue.wake();
    }
    Ok(report)
}
