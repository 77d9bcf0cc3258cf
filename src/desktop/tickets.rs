//! Desktop tickets: what lets a browser's WebSocket into a desktop. A signed-in viewer (the
//! dashboard or portal session, or an API caller) asks for one; it is bound to one host and
//! to that viewer, lives 30 seconds and opens one connection. Only a hash of it is kept, and
//! in memory only: a restart voids every ticket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::ops::Caller;

/// How long a ticket may wait to be used.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Outstanding tickets, whoever asked: a bound on memory.
const MAX_OUTSTANDING: usize = 10_000;
/// Tickets one viewer (an account or a token) may hold at once: a browser asks for one per
/// desktop it opens, and uses it within seconds.
const MAX_PER_VIEWER: usize = 16;

/// A ticket's promise: this viewer may open this host's desktop.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub host_id: Uuid,
    pub viewer: Caller,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("the desktop ticket is unknown, used or expired: open the desktop again")]
    Invalid,
    #[error("too many desktop tickets are outstanding; try again in a few seconds")]
    Busy,
    #[error("you have too many desktop tickets outstanding: open one, or wait half a minute")]
    TooManyForViewer,
}

/// The outstanding tickets of this process.
pub struct Tickets {
    ttl: Duration,
    live: Mutex<HashMap<[u8; 32], Ticket>>,
}

impl Default for Tickets {
    fn default() -> Self {
        Self::with_ttl(TICKET_TTL)
    }
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tickets {
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// A new ticket for `viewer` into `host_id`'s desktop.
    pub fn issue(&self, host_id: Uuid, viewer: Caller) -> Result<String, TicketError> {
        let raw: [u8; 32] = rand::random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, t| t.expires > now);
        if live.len() >= MAX_OUTSTANDING {
            return Err(TicketError::Busy);
        }
        // One viewer cannot take the whole budget from the others.
        let mine = viewer.principal.rate_key();
        if live
            .values()
            .filter(|t| t.viewer.principal.rate_key() == mine)
            .count()
            >= MAX_PER_VIEWER
        {
            return Err(TicketError::TooManyForViewer);
        }
        live.insert(
            key(&token),
            Ticket {
                host_id,
                viewer,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// Uses a ticket for `host_id`: it is gone afterwards, whether it fitted or not.
    pub fn redeem(&self, token: &str, host_id: Uuid) -> Result<Ticket, TicketError> {
        let ticket = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(token))
            .ok_or(TicketError::Invalid)?;
        if ticket.expires <= Instant::now() || ticket.host_id != host_id {
            return Err(TicketError::Invalid);
        }
        Ok(ticket)
    }

    /// Tickets not yet used or expired.
    pub fn outstanding(&self) -> usize {
        let now = Instant::now();
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|t| t.expires > now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::ops::Face;

    fn viewer() -> Caller {
        Caller::new(
            Principal::Local {
                user: "root".into(),
            },
            None,
            Face::Web,
        )
    }

    #[test]
    fn a_ticket_opens_one_connection_to_its_host() {
        let t = Tickets::default();
        let (h1, h2) = (Uuid::now_v7(), Uuid::now_v7());
        let a = t.issue(h1, viewer()).unwrap();
        assert!(a.len() >= 43, "256 bits");
        assert_eq!(t.redeem(&a, h1).unwrap().host_id, h1);
        assert_eq!(
            t.redeem(&a, h1).unwrap_err(),
            TicketError::Invalid,
            "reused"
        );
        let b = t.issue(h1, viewer()).unwrap();
        assert_eq!(t.redeem(&b, h2).unwrap_err(), TicketError::Invalid);
        assert_eq!(
            t.redeem(&b, h1).unwrap_err(),
            TicketError::Invalid,
            "a ticket tried on another host is spent"
        );
        assert_eq!(t.redeem("made-up", h1).unwrap_err(), TicketError::Invalid);
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn an_expired_ticket_is_refused() {
        let t = Tickets::with_ttl(Duration::from_millis(20));
        let h = Uuid::now_v7();
        let a = t.issue(h, viewer()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(t.redeem(&a, h).unwrap_err(), TicketError::Invalid);
    }

    #[test]
    fn one_viewer_cannot_take_every_ticket() {
        let t = Tickets::default();
        let h = Uuid::now_v7();
        for _ in 0..MAX_PER_VIEWER {
            t.issue(h, viewer()).unwrap();
        }
        assert_eq!(t.issue(h, viewer()), Err(TicketError::TooManyForViewer));
        let other = Caller::new(
            Principal::Token {
                id: Uuid::now_v7(),
                name: "other".into(),
                abilities: vec![],
            },
            None,
            Face::Api,
        );
        assert!(t.issue(h, other).is_ok());
    }
}
