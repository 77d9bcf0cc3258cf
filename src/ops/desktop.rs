//! Desktop operations: who may open a host's desktop (its owner, or an operator with
//! `host:write`; the host must be a running desktop host), the single-use ticket that lets
//! that person's browser connect, and the check made again when the ticket is used.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Caller, Core, OpError, OpResult};
use crate::desktop::tickets::{TICKET_TTL, TicketError};
use crate::store::hosts::HostRow;

/// A ticket into a host's desktop.
#[derive(Debug, Serialize, ToSchema)]
pub struct DesktopTicket {
    /// Single use, bound to this host and to the caller.
    pub ticket: String,
    /// Seconds left to use it.
    pub expires_in: u64,
    /// Where the WebSocket (RFB, as noVNC speaks it) connects, ticket included.
    pub websocket: String,
    /// The desktop's page (noVNC), which asks for its own ticket.
    pub page: String,
}

/// The host a caller may open a desktop of: one they may open a terminal into (so running),
/// in desktop mode.
pub async fn host(core: &Core, caller: &Caller, id: Uuid) -> OpResult<HostRow> {
    let host = super::hosts::terminal(core, caller, id).await?;
    if !host.desktop {
        return Err(OpError::Conflict(format!(
            "host {} is not a desktop host: rebuild it with desktop: true",
            host.short_id
        )));
    }
    Ok(host)
}

/// The path prefix of a host's desktop for this caller: the portal's for a user, the admin's
/// otherwise.
pub fn base_path(caller: &Caller, host_id: Uuid) -> String {
    let side = if caller.principal.user_id().is_some() {
        "user"
    } else {
        "admin"
    };
    format!("/v1/{side}/hosts/{host_id}/vnc")
}

/// Issues a ticket into a host's desktop for the caller.
pub async fn ticket(core: &Core, caller: &Caller, id: Uuid) -> OpResult<DesktopTicket> {
    let host = host(core, caller, id).await?;
    let ticket = core
        .desktop_tickets
        .issue(host.id, caller.clone())
        .map_err(|e| match e {
            TicketError::Busy => OpError::Busy(5),
            TicketError::TooManyForViewer => OpError::Busy(30),
            TicketError::Invalid => OpError::Internal(e.to_string()),
        })?;
    let base = base_path(caller, host.id);
    Ok(DesktopTicket {
        websocket: format!("{base}/websockify?ticket={ticket}"),
        page: format!("{base}/"),
        ticket,
        expires_in: TICKET_TTL.as_secs(),
    })
}

/// Uses a ticket for a host's desktop: answers the host and the viewer the ticket was issued
/// to, after checking again that the viewer may still open it.
pub async fn redeem(core: &Core, token: &str, id: Uuid) -> OpResult<(HostRow, Caller)> {
    let ticket = core
        .desktop_tickets
        .redeem(token, id)
        .map_err(|e| OpError::Forbidden(e.to_string()))?;
    let host = host(core, &ticket.viewer, id).await?;
    Ok((host, ticket.viewer))
}
