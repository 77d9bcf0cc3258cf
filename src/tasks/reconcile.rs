//! The reconciler: at start and every 30 s, brings the runtime back in line with the
//! database. Containers with no host row are removed; hosts that should run but whose
//! container is gone or stopped get a start task (which fails into `error` with the reason if
//! they cannot come back); running hosts whose egress data plane is not attached (after a
//! restart of Sluice) get it attached again; hosts of disabled or expired users are stopped. Hosts with a task
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
use crate::runtime::{HostRuntime, Observed};
use crate::store::{self, Store};
use crate::users::UserStatus;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub orphans_removed: usize,
    pub restarts_queued: usize,
    pub stops_queued: usize,
    pub reattaches_queued: usize,
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
    let observed: HashMap<Uuid, Observed> = runtime
        .observe()
        .await?
        .into_iter()
        .map(|o| (o.host_id, o))
        .collect();
    let hosts = {
        let mut db = store.acquire().await?;
        store::hosts::reconcile_view(db.conn()).await?
    };
    let mut report = Report::default();

    // Containers of this install whose host is gone.
    for host_id in observed.keys() {
        if hosts.iter().any(|(id, ..)| id == host_id) {
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

    for (host_id, status, owner, egress) in &hosts {
        if *status != HostStatus::Running {
            continue;
        }
        let owner_active = owner.as_deref() == Some(UserStatus::Active.as_str());
        let seen = observed.get(host_id);
        let running = seen.is_some_and(|o| o.running);
        let attached = seen.is_some_and(|o| o.egress_attached);
        let kind = match (owner_active, running, egress.is_some() && !attached) {
            (false, ..) => Kind::Stop,
            (true, false, _) => Kind::Start,
            // Running without its data plane (Sluice restarted): attach it again.
            (true, true, true) => Kind::BindEgress,
            (true, true, false) => continue,
        };
        let mut tx = store.begin().await?;
        if store::tasks::host_busy(tx.conn(), *host_id).await? {
            continue;
        }
        let task_id = enqueue(tx.conn(), kind, *host_id, json!({}), events::SYSTEM).await?;
        let (action, why) = match kind {
            Kind::Stop => ("host.stop_requested", "the owner's account is not active"),
            Kind::BindEgress => (
                "host.bind_requested",
                "the egress data plane is not attached",
            ),
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
            Kind::BindEgress => report.reattaches_queued += 1,
            _ => report.restarts_queued += 1,
        }
    }
    if report.restarts_queued + report.stops_queued + report.reattaches_queued > 0 {
        queue.wake();
    }
    Ok(report)
}
