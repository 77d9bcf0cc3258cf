//! The overview an operator's front page shows: counts of users, hosts by status, egresses and
//! tasks, and the control plane's view of its engine.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::{Caller, Core, OpResult};
use crate::auth::Ability;
use crate::hosts::HostStatus;
use crate::store;
use crate::users::Role;

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub users: i64,
    pub hosts: HostStats,
    pub egress_ips: i64,
    pub tasks: TaskStats,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HostStats {
    pub total: i64,
    /// Count per status; every status is present.
    pub by_status: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskStats {
    pub queued: i64,
    pub running: i64,
    /// Tasks created in the last 24 hours that failed.
    pub failed_last_24h: i64,
}

/// Counts of users, hosts by status, egresses and tasks.
pub async fn stats(core: &Core, caller: &Caller) -> OpResult<Stats> {
    caller.require(Ability::HostRead)?;
    let mut db = core.store.acquire().await?;
    let users = store::users::count_by_role(db.conn(), Role::User.as_str()).await?;
    let mut by_status: BTreeMap<String, i64> = HostStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for (status, n) in store::hosts::count_by_status(db.conn()).await? {
        by_status.insert(status, n);
    }
    let egress_ips = store::egress::count(db.conn()).await?;
    let day_ago = crate::clock::now() - time::Duration::hours(24);
    let tasks = TaskStats {
        queued: store::tasks::count(db.conn(), "queued", None).await?,
        running: store::tasks::count(db.conn(), "running", None).await?,
        failed_last_24h: store::tasks::count(db.conn(), "failed", Some(day_ago)).await?,
    };
    Ok(Stats {
        users,
        hosts: HostStats {
            total: by_status.values().sum(),
            by_status,
        },
        egress_ips,
        tasks,
    })
}

/// The control plane's view of itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// The container engine and the managed image.
    pub docker: crate::runtime::RuntimeStatus,
    pub hosts: HostStats,
    /// Tasks waiting and running.
    pub tasks: TaskStats,
}

/// Docker reachability and version, the managed image, host counts and the task backlog.
pub async fn status(core: &Core, caller: &Caller) -> OpResult<Status> {
    let docker = core.runtime.status().await;
    let Stats { hosts, tasks, .. } = stats(core, caller).await?;
    Ok(Status {
        docker,
        hosts,
        tasks,
    })
}
