//! Limits on what one source address and one account may do to the proxy: simultaneous
//! connections per source, and channels open at once per connection and per account (each
//! channel buffers a bounded number of bytes, so these bound the memory one tenant can pin).
//! (Failed logins are counted by `auth::attempts`, shared with the API.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

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

/// Channels every account may have open at once, across its connections: one semaphore per
/// account with channels open, forgotten when the account has none.
pub struct AccountChannels {
    max: usize,
    open: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
}

impl AccountChannels {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::default(),
        }
    }

    /// The budget of `account`, shared by all its connections.
    pub fn of(&self, account: Uuid) -> Arc<Semaphore> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        // Accounts with nothing open and no connection holding their budget are forgotten.
        open.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < self.max);
        open.entry(account)
            .or_insert_with(|| Arc::new(Semaphore::new(self.max)))
            .clone()
    }
}

/// The channel budgets one connection draws from: its own and its account's.
#[derive(Clone)]
pub struct ChannelBudget {
    connection: Arc<Semaphore>,
    per_connection: usize,
    account: Arc<Semaphore>,
    per_account: usize,
}

/// One open channel's place in both budgets; dropping it frees them.
#[derive(Debug)]
pub struct ChannelSlot {
    _connection: OwnedSemaphorePermit,
    _account: OwnedSemaphorePermit,
}

impl ChannelBudget {
    pub fn new(per_connection: usize, account: Arc<Semaphore>, per_account: usize) -> Self {
        Self {
            connection: Arc::new(Semaphore::new(per_connection)),
            per_connection,
            account,
            per_account,
        }
    }

    /// A place for one more channel, or the sentence telling the client why not.
    pub fn take(&self) -> Result<ChannelSlot, String> {
        let connection = self.connection.clone().try_acquire_owned().map_err(|_| {
            format!(
                "too many channels: a connection may have {} open at once",
                self.per_connection
            )
        })?;
        let account = self.account.clone().try_acquire_owned().map_err(|_| {
            format!(
                "too many channels: an account may have {} open at once across its connections",
                self.per_account
            )
        })?;
        Ok(ChannelSlot {
            _connection: connection,
            _account: account,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_capped_per_connection_and_per_account_and_freed() {
        let accounts = AccountChannels::new(3);
        let alice = Uuid::now_v7();
        let one = ChannelBudget::new(2, accounts.of(alice), 3);
        let two = ChannelBudget::new(2, accounts.of(alice), 3);
        let a = one.take().unwrap();
        let b = one.take().unwrap();
        assert!(one.take().unwrap_err().contains("a connection may have 2"));
        let c = two.take().unwrap();
        assert!(two.take().unwrap_err().contains("an account may have 3"));
        // Another account has its own budget.
        let bob = ChannelBudget::new(2, accounts.of(Uuid::now_v7()), 3);
        assert!(bob.take().is_ok());
        drop(a);
        let d = two.take().unwrap();
        // An account with nothing open and no connection is forgotten.
        drop((one, two, bob, b, c, d));
        let _ = accounts.of(Uuid::now_v7());
        assert_eq!(accounts.open.lock().unwrap().len(), 1);
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
