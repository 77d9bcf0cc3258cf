//! Events: the audit trail. Every change writes one (who, what, which user or host, when,
//! details without secrets), in the same transaction as the change itself.

pub mod live;

use serde_json::Value;
use uuid::Uuid;

use crate::store::events::EventRow;
use crate::store::{self, Conn};

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub actor: String,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub user_id: Option<Uuid>,
    pub host_id: Option<Uuid>,
    pub source_ip: Option<String>,
    pub details: Value,
}

impl NewEvent {
    /// An event by `actor` doing `action` on a target of `target_type`.
    pub fn new(actor: impl Into<String>, action: &'static str, target_type: &'static str) -> Self {
        Self {
            actor: actor.into(),
            action,
            target_type,
            target_id: None,
            user_id: None,
            host_id: None,
            source_ip: None,
            details: Value::Object(Default::default()),
        }
    }

    pub fn target(mut self, id: impl ToString) -> Self {
        self.target_id = Some(id.to_string());
        self
    }

    pub fn user(mut self, id: Option<Uuid>) -> Self {
        self.user_id = id;
        self
    }

    pub fn host(mut self, id: Uuid) -> Self {
        self.host_id = Some(id);
        self
    }

    pub fn source(mut self, ip: Option<String>) -> Self {
        self.source_ip = ip;
        self
    }

    /// Details; callers pass only non-secret fields.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// The actor name of Sluice's own background work.
pub const SYSTEM: &str = "system";

/// Writes an event.
pub async fn record(c: Conn<'_>, e: NewEvent) -> store::Result<()> {
    let row = EventRow {
        id: Uuid::now_v7(),
        actor: e.actor,
        action: e.action.to_string(),
        target_type: e.target_type.to_string(),
        target_id: e.target_id,
        user_id: e.user_id,
        host_id: e.host_id,
        source_ip: e.source_ip,
        details: sqlx::types::Json(e.details),
        created_at: crate::clock::now(),
    };
    store::events::insert(c, &row).await
}

/// Writes an event on its own, outside any change's transaction (a login, a session's end).
/// The event is an audit record of something that already happened, so a failure to write it
/// is logged rather than returned.
pub async fn record_alone(store: &store::Store, e: NewEvent) {
    let action = e.action;
    let written = async {
        let mut db = store.acquire().await?;
        record(db.conn(), e).await
    };
    if let Err(err) = written.await {
        tracing::warn!(error = %err, action, "cannot record an event");
    }
}
