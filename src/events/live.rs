//! Live events: one poller reads new events from the database, where every process writes
//! them (the CLI's included), and fans them out over a bounded broadcast channel. A subscriber
//! that falls further behind than the channel holds is told so and must resume from its last
//! id; nothing grows without bound. An event's id is a UUIDv7: the poller reads a short window
//! back from now every round, so a transaction that commits an older id late is still seen,
//! and it remembers what it sent within that window, so nothing is sent twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::events::EventRow;
use crate::store::{self, Store};

/// How often the poller looks.
const EVERY: Duration = Duration::from_millis(250);
/// How far back each round reads: longer than any transaction that writes an event.
const WINDOW: Duration = Duration::from_secs(10);
/// Events a subscriber may fall behind by before it is cut off.
pub const CAPACITY: usize = 1024;
/// Rows read per query.
const BATCH: i64 = 500;

/// The fan-out of new events.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<EventRow>>,
}

/// The smallest UUIDv7 of a Unix time in milliseconds: ids above it were made at or after it.
pub fn lower_bound(unix_ms: u64) -> Uuid {
    Uuid::from_u128((u128::from(unix_ms) << 80) | (0x7 << 76))
}

/// The Unix time in milliseconds a UUIDv7 was made at.
fn millis(id: Uuid) -> u64 {
    (id.as_u128() >> 80) as u64
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Hub {
    /// Starts the poller, which stops with `stop`.
    pub fn start(store: Store, stop: CancellationToken) -> Hub {
        let (tx, _) = broadcast::channel(CAPACITY);
        let hub = Hub { tx: tx.clone() };
        tokio::spawn(async move {
            // What was sent within the window, by id; the first round only learns.
            let mut sent: HashSet<Uuid> = HashSet::new();
            let mut first = true;
            loop {
                if let Err(e) = round(&store, &tx, &mut sent, first).await {
                    tracing::warn!(error = %e, "reading new events failed");
                } else {
                    first = false;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(EVERY) => {}
                }
            }
        });
        hub
    }

    /// New events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRow>> {
        self.tx.subscribe()
    }
}

async fn round(
    store: &Store,
    tx: &broadcast::Sender<Arc<EventRow>>,
    sent: &mut HashSet<Uuid>,
    learn_only: bool,
) -> store::Result<()> {
    let floor = now_ms().saturating_sub(WINDOW.as_millis() as u64);
    sent.retain(|id| millis(*id) >= floor);
    let mut cursor = lower_bound(floor);
    let mut db = store.acquire().await?;
    loop {
        let rows = store::events::after(db.conn(), cursor, BATCH).await?;
        let n = rows.len();
        for row in rows {
            cursor = row.id;
            if sent.insert(row.id) && !learn_only {
                // No subscriber is not an error: the event is simply not wanted now.
                let _ = tx.send(Arc::new(row));
            }
        }
        if (n as i64) < BATCH {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_bound_orders_below_every_id_made_from_that_millisecond_on() {
        let now = now_ms();
        let id = Uuid::now_v7();
        assert!(lower_bound(now.saturating_sub(1)) < id);
        assert!(lower_bound(now + 60_000) > id);
        assert_eq!(lower_bound(1234).get_version_num(), 7);
        assert_eq!(millis(lower_bound(1234)), 1234);
        let later = lower_bound(millis(id));
        assert!(later <= id);
    }
}
