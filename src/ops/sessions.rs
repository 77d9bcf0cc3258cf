//! Live SSH sessions: who is connected through the SSH proxy now, and ending one (the client
//! is told why, then its connection is cut). Sessions live in the process that runs the proxy.

use serde_json::json;
use uuid::Uuid;

use super::{Caller, Core, OpError, OpResult};
use crate::auth::Ability;
use crate::events::{self, NewEvent};
use crate::sshproxy::registry::{SessionInfo, Sessions};

fn registry(core: &Core) -> OpResult<&Sessions> {
    core.sessions
        .as_deref()
        .ok_or_else(|| OpError::ServerOnly("live sessions are held by the running server".into()))
}

/// Live sessions, oldest first.
pub fn list(core: &Core, caller: &Caller) -> OpResult<Vec<SessionInfo>> {
    caller.require(Ability::HostRead)?;
    Ok(registry(core)?.list())
}

/// Ends a live session and records who ended it.
pub async fn end(core: &Core, caller: &Caller, id: Uuid) -> OpResult<SessionInfo> {
    caller.require(Ability::HostWrite)?;
    let info = registry(core)?
        .end(id, "session ended by an administrator")
        .ok_or(OpError::NotFound("session"))?;
    let mut db = core.store.acquire().await?;
    events::record(
        db.conn(),
        NewEvent::new(caller.actor(), "ssh.session_ended", "host")
            .target(info.host_id)
            .host(info.host_id)
            .user(Some(info.user_id))
            .source(caller.source.clone())
            .details(
                json!({"session_id": id, "short_id": info.short_id, "username": info.username}),
            ),
    )
    .await?;
    Ok(info)
}
