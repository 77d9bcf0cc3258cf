//! Events: the audit trail, read with filters, and followed live (resumable from the last id
//! a client saw).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use futures::Stream;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Caller, Core, OpError, OpResult};
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

/// Events a resuming client is sent before the live ones; with more missed, the stream ends
/// after them and the client resumes again from the last it got.
pub const BACKLOG_MAX: i64 = 1000;

/// What a live stream yields.
#[derive(Debug)]
pub enum Live {
    Event(Box<Event>),
    /// The client fell behind (too slow, or too much missed): resume from the last id.
    FellBehind,
}

fn wanted(f: &EventFilter, e: &EventRow) -> bool {
    f.user_id.is_none_or(|u| e.user_id == Some(u))
        && f.host_id.is_none_or(|h| e.host_id == Some(h))
        && f.action.as_ref().is_none_or(|a| &e.action == a)
}

struct Follow {
    backlog: VecDeque<EventRow>,
    then_end: bool,
    sent: HashSet<Uuid>,
    rx: broadcast::Receiver<Arc<EventRow>>,
    filter: EventFilter,
    done: bool,
}

/// Events as they happen, matching `filter` (user, host, action); after `last`, the ones
/// missed since it first.
pub async fn live(
    core: &Core,
    caller: &Caller,
    filter: EventFilter,
    last: Option<Uuid>,
) -> OpResult<impl Stream<Item = Live> + Send + 'static + use<>> {
    caller.require(Ability::EventRead)?;
    let hub = core.events.clone().ok_or_else(|| {
        OpError::Unavailable("live events are served by the running server".into())
    })?;
    // Subscribe first: nothing committed between the backlog read and now is lost.
    let rx = hub.subscribe();
    let (backlog, then_end) = match last {
        None => (VecDeque::new(), false),
        Some(last) => {
            let mut db = core.store.acquire().await?;
            let rows = store::events::after(db.conn(), last, BACKLOG_MAX).await?;
            let full = rows.len() as i64 == BACKLOG_MAX;
            (
                rows.into_iter().filter(|r| wanted(&filter, r)).collect(),
                full,
            )
        }
    };
    let sent = backlog.iter().map(|r| r.id).collect();
    let state = Follow {
        backlog,
        then_end,
        sent,
        rx,
        filter,
        done: false,
    };
    Ok(futures::stream::unfold(state, |mut st| async move {
        if let Some(row) = st.backlog.pop_front() {
            return Some((Live::Event(Box::new(row.into())), st));
        }
        if st.done {
            return None;
        }
        if st.then_end {
            st.done = true;
            return Some((Live::FellBehind, st));
        }
        loop {
            match st.rx.recv().await {
                Ok(row) => {
                    if st.sent.contains(&row.id) || !wanted(&st.filter, &row) {
                        continue;
                    }
                    return Some((Live::Event(Box::new(EventRow::clone(&row).into())), st));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    st.done = true;
                    return Some((Live::FellBehind, st));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }))
}

/// Records an event of an operator's local command that changes no row (a backup, a restore).
pub async fn record_local(
    core: &Core,
    caller: &Caller,
    action: &'static str,
    details: serde_json::Value,
) -> OpResult<()> {
    caller.require_local()?;
    let mut db = core.store.acquire().await?;
    crate::events::record(
        db.conn(),
        crate::events::NewEvent::new(caller.actor(), action, "install")
            .source(caller.source.clone())
            .details(details),
    )
    .await?;
    Ok(())
}
