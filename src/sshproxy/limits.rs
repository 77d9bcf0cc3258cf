//! Limits on what one source address may do to the proxy: simultaneous connections, and
//! failed logins (five within five minutes lock the address out for five minutes).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures within [`FAILURE_WINDOW`] that lock a source out.
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// How long a source stays locked out.
pub const LOCKOUT: Duration = Duration::from_secs(300);

/// A sliding-window failure counter with lockout, per key.
pub struct Lockouts<K> {
    max: usize,
    window: Duration,
    lockout: Duration,
    state: Mutex<HashMap<K, Entry>>,
}

#[derive(Default)]
struct Entry {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl<K: std::hash::Hash + Eq + Clone> Lockouts<K> {
    pub fn new(max: usize, window: Duration, lockout: Duration) -> Self {
        Self {
            max,
            window,
            lockout,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// How long `key` stays locked out, if it is.
    pub fn locked(&self, key: &K) -> Option<Duration> {
        let now = Instant::now();
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .get(key)
            .and_then(|e| e.locked_until)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Counts a failure; answers the lockout it triggered, if any.
    pub fn fail(&self, key: &K) -> Option<Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() > 100_000 {
            let window = self.window;
            state.retain(|_, e| {
                e.locked_until.is_some_and(|u| u > now)
                    || e.failures
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        let e = state.entry(key.clone()).or_default();
        while e
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            e.failures.pop_front();
        }
        e.failures.push_back(now);
        if e.failures.len() >= self.max {
            e.failures.clear();
            e.locked_until = Some(now + self.lockout);
            return Some(self.lockout);
        }
        None
    }
}

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
    fn five_failures_lock_the_key_and_others_are_untouched() {
        let l = Lockouts::new(5, Duration::from_secs(60), Duration::from_secs(30));
        for _ in 0..4 {
            assert_eq!(l.fail(&"a"), None);
        }
        assert!(l.locked(&"a").is_none());
        assert_eq!(l.fail(&"a"), Some(Duration::from_secs(30)));
        assert!(l.locked(&"a").is_some());
        assert!(l.locked(&"b").is_none());
    }

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
