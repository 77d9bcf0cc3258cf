//! Events: the audit trail, read with filters.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Caller, Core, OpResult};
use crate::auth::Ability;
use crate::store::{
    self, PageRequest,
    events::{EventFilter, EventRow},
};

/// An event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    pub id: Uuid,
    /// Who: `admin:NAME`, `user:NAME`, `token:NAME`, `login:NAME` or `system`.
    pub actor: String,
    /// What, such as `user.created` or `host.start_requested`.
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub user_id: Option<Uuid>,
    pub host_id: Option<Uuid>,
    pub source_ip: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<EventRow> for Event {
    fn from(e: EventRow) -> Self {
        Event {
            id: e.id,
            actor: e.actor,
            action: e.action,
            target_type: e.target_type,
            target_id: e.target_id,
            user_id: e.user_id,
            host_id: e.host_id,
            source_ip: e.source_ip,
            details: e.details.0,
            created_at: e.created_at,
        }
    }
}

/// Events, newest first.
pub async fn list(
    core: &Core,
    caller: &Caller,
    filter: &EventFilter,
    page: PageRequest,
) -> OpResult<(Vec<Event>, i64)> {
    caller.require(Ability::EventRead)?;
    let mut db = core.store.acquire().await?;
    let (rows, total) = store::events::list(db.conn(), filter, page).await?;
    Ok((rows.into_iter().map(Event::from).collect(), total))
}
