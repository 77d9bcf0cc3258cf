//! Bindings: which egress a host leaves through. One egress per host; a WireGuard egress is
//! one peer and so carries one host. A live host is moved onto a new binding (or off a removed
//! one) by a task.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Caller, Core, OpError, OpResult, uuid_field};
use crate::auth::Ability;
use crate::events::{self, NewEvent};
use crate::store::hosts::{BindingRow, HostRow};
use crate::store::{self, Conn};
use crate::tasks::{self, Kind};
use crate::validation::FieldErrors;

/// A host's binding to an egress.
#[derive(Debug, Serialize, ToSchema)]
pub struct Binding {
    pub id: Uuid,
    pub host_id: Uuid,
    pub egress_ip_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The task that moves a running host onto the egress, if one was queued.
    pub task_id: Option<Uuid>,
}

/// Bind a host to an egress.
#[derive(Debug, Deserialize, ToSchema, JsonSchema)]
pub struct CreateBinding {
    pub host_id: Option<String>,
    pub egress_ip_id: Option<String>,
}

/// A WireGuard egress is one peer with one tunnel address: it carries one host at a time.
/// A refused binding write in the words of the rule it broke: the database's own hold of a
/// WireGuard egress to one host (two binds at once that both passed [`one_host_per_peer`]),
/// or the host's one binding.
pub(crate) fn binding_conflict(e: store::StoreError, short_id: &str) -> OpError {
    match e {
        store::StoreError::Conflict(c) if store::hosts::is_exclusive_binding(&c) => {
            OpError::Conflict(
                "this WireGuard egress already carries a host: a WireGuard peer has one tunnel address, so it serves one host".into(),
            )
        }
        store::StoreError::Conflict(_) => {
            OpError::Conflict(format!("host {short_id} is already bound"))
        }
        other => other.into(),
    }
}

pub fn one_host_per_peer(tunnel_type: &str, bound: &[String]) -> OpResult<()> {
    if tunnel_type == "wireguard" && !bound.is_empty() {
        return Err(OpError::Conflict(format!(
            "this WireGuard egress already carries host {}: a WireGuard peer has one tunnel address, so it serves one host",
            bound.join(", ")
        )));
    }
    Ok(())
}

/// Queues the task that moves a live host (running or being made) onto its current binding;
/// a host that is not live attaches when it starts.
pub async fn move_if_live(c: Conn<'_>, host: &HostRow, actor: &str) -> store::Result<Option<Uuid>> {
    if !host.status.is_live() {
        return Ok(None);
    }
    tasks::enqueue(c, Kind::BindEgress, host.id, json!({}), actor)
        .await
        .map(Some)
}

/// Binds a host to an egress; a running host is moved onto it by a task.
pub async fn bind(core: &Core, caller: &Caller, req: CreateBinding) -> OpResult<Binding> {
    caller.require(Ability::HostWrite)?;
    let mut errs = FieldErrors::new();
    let host_id = uuid_field(&mut errs, "host_id", req.host_id.as_deref());
    let egress_id = uuid_field(&mut errs, "egress_ip_id", req.egress_ip_id.as_deref());
    let mut tx = core.store.begin().await?;
    let host = match host_id {
        Some(id) => store::hosts::get(tx.conn(), id).await?,
        None => None,
    };
    if host_id.is_some() && host.is_none() {
        errs.add("host_id", "no such host");
    }
    let egress = match egress_id {
        Some(eid) => store::egress::get(tx.conn(), core.store.keys(), eid).await?,
        None => None,
    };
    if egress_id.is_some() && egress.is_none() {
        errs.add("egress_ip_id", "no such egress");
    }
    let (Some(host), Some(egress_ip_id)) = (host.filter(|_| errs.is_empty()), egress_id) else {
        return Err(OpError::Invalid(errs));
    };
    if let Some(current) = host.egress_ip_id {
        return Err(OpError::Conflict(format!(
            "host {} is already bound to egress {current}: delete that binding first",
            host.short_id
        )));
    }
    host.status
        .may_change()
        .map_err(|why| OpError::Conflict(format!("host {} {why}", host.short_id)))?;
    if let Some(e) = &egress {
        let bound = store::egress::bound_hosts(tx.conn(), e.id).await?;
        one_host_per_peer(&e.tunnel_type, &bound)?;
    }
    let row = BindingRow {
        id: Uuid::now_v7(),
        host_id: host.id,
        egress_ip_id,
        created_at: crate::clock::now(),
    };
    store::hosts::insert_binding(tx.conn(), &row)
        .await
        .map_err(|e| binding_conflict(e, &host.short_id))?;
    let task_id = move_if_live(tx.conn(), &host, &caller.actor()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "binding.created", "binding")
            .target(row.id)
            .host(host.id)
            .user(host.user_id)
            .source(caller.source.clone())
            .details(json!({"short_id": host.short_id, "egress_ip_id": egress_ip_id, "task_id": task_id})),
    )
    .await?;
    tx.commit().await?;
    if task_id.is_some() {
        core.queue.wake();
    }
    Ok(Binding {
        id: row.id,
        host_id: row.host_id,
        egress_ip_id,
        created_at: row.created_at,
        task_id,
    })
}

/// Removes a binding. A live host loses its egress (and so all outside traffic) through the
/// task answered; `None` when the host was not live.
pub async fn unbind(
    core: &Core,
    caller: &Caller,
    id: Uuid,
) -> OpResult<Option<super::hosts::TaskQueued>> {
    caller.require(Ability::HostWrite)?;
    let mut tx = core.store.begin().await?;
    let Some(binding) = store::hosts::get_binding(tx.conn(), id).await? else {
        return Err(OpError::NotFound("binding"));
    };
    let host = store::hosts::get(tx.conn(), binding.host_id)
        .await?
        .ok_or(OpError::NotFound("host"))?;
    store::hosts::delete_binding(tx.conn(), id).await?;
    let task_id = move_if_live(tx.conn(), &host, &caller.actor()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "binding.deleted", "binding")
            .target(id)
            .host(host.id)
            .user(host.user_id)
            .source(caller.source.clone())
            .details(json!({"short_id": host.short_id, "egress_ip_id": binding.egress_ip_id, "task_id": task_id})),
    )
    .await?;
    tx.commit().await?;
    if task_id.is_some() {
        core.queue.wake();
    }
    Ok(task_id.map(|task_id| super::hosts::TaskQueued {
        task_id,
        host_id: host.id,
    }))
}
