//! Limits on what one source address may do to the proxy: simultaneous connections. (Failed
//! logins are counted by `auth::attempts`, shared with the API.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts open connections per source address.
#[derive(Clone)]
pub struct ConnectionCounter {
    max: u32,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// One counted connection; dropping it frees the slot.
pub struct ConnectionSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl ConnectionCounter {
    pub fn new(max: u32) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for a new connection from `ip`, unless it has `max` open already.
    pub fn acquire(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_are_capped_and_freed() {
        let c = ConnectionCounter::new(2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = c.acquire(ip).unwrap();
        let _b = c.acquire(ip).unwrap();
        assert!(c.acquire(ip).is_none());
        assert!(c.acquire([127, 0, 0, 2].into()).is_some());
        drop(a);
        assert!(c.acquire(ip).is_some());
    }
}
