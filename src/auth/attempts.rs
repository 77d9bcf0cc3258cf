//! Password attempts: who may try a password now. Every face that checks a password (API
//! login, short links, bootstrap, the SSH proxy, a user changing their password) asks here
//! first and reports the outcome, so one budget covers them all:
//!
//! - per source address, across every account and short id ([`PER_SOURCE`]);
//! - per target (an account or a short id) and source ([`PER_TARGET_SOURCE`]), so one address
//!   cannot keep guessing at one host;
//! - per target across sources, with a larger budget ([`PER_TARGET`]): once a target has
//!   drawn that many failures, addresses with a failure on record (at it or anywhere, or an
//!   attempt still being checked) are held off it, so a spread-out attack slows to one guess
//!   per fresh address; an address with a clean record still gets its try, so no number of
//!   addresses can keep a target's owner out from their own.
//!
//! An attempt takes its failure slot *before* the password is checked (so a burst of parallel
//! guesses cannot all slip in before the first one fails) and gives it back only on success.
//! An attempt dropped without an outcome (the client went away mid-check) counts as failed.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One budget: `max` failures within `window` lock the key for `lockout`.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max: usize,
    pub window: Duration,
    pub lockout: Duration,
}

/// Failures from one address, whatever it tries: five in five minutes lock it out for five.
pub const PER_SOURCE: Budget = Budget {
    max: 5,
    window: Duration::from_secs(300),
    lockout: Duration::from_secs(300),
};
/// Failures from one address at one account or short id: five in fifteen minutes lock that
/// pair for fifteen.
pub const PER_TARGET_SOURCE: Budget = Budget {
    max: 5,
    window: Duration::from_secs(900),
    lockout: Duration::from_secs(900),
};
/// Failures at one account or short id from anywhere: after fifty in fifteen minutes, for
/// fifteen, only addresses with a clean record may try it.
pub const PER_TARGET: Budget = Budget {
    max: 50,
    window: Duration::from_secs(900),
    lockout: Duration::from_secs(900),
};

/// Keys kept before stale ones are swept.
const SWEEP_ABOVE: usize = 100_000;

/// A sliding-window failure counter with lockout, per key, where an attempt in flight holds
/// a slot.
pub struct Lockouts<K> {
    budget: Budget,
    state: Mutex<HashMap<K, Entry>>,
}

#[derive(Default)]
struct Entry {
    failures: VecDeque<Instant>,
    pending: usize,
    locked_until: Option<Instant>,
}

impl<K: Hash + Eq + Clone> Lockouts<K> {
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            state: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `key` stays locked out, if it is.
    pub fn locked(&self, key: &K) -> Option<Duration> {
        let now = Instant::now();
        self.lock()
            .get(key)
            .and_then(|e| e.locked_until)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Whether `key` has nothing on record but the one attempt it has just reserved: no
    /// failure within the window, no other attempt being checked, no lockout. Asked after the
    /// reservation, under the same lock as every reservation, so a burst of parallel attempts
    /// from one key sees each other.
    fn clean_but_one(&self, key: &K) -> bool {
        let now = Instant::now();
        self.lock().get(key).is_none_or(|e| {
            e.pending <= 1
                && e.locked_until.is_none_or(|u| u <= now)
                && e.failures
                    .back()
                    .is_none_or(|t| now.duration_since(*t) >= self.budget.window)
        })
    }

    /// Takes a failure slot for `key`, or answers how long to wait.
    fn reserve(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let b = self.budget;
        let mut state = self.lock();
        if state.len() > SWEEP_ABOVE {
            state.retain(|_, e| {
                e.pending > 0
                    || e.locked_until.is_some_and(|u| u > now)
                    || e.failures
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < b.window)
            });
        }
        let e = state.entry(key.clone()).or_default();
        if let Some(wait) = e.locked_until.and_then(|u| u.checked_duration_since(now))
            && !wait.is_zero()
        {
            return Err(wait);
        }
        while e
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= b.window)
        {
            e.failures.pop_front();
        }
        if e.failures.len() + e.pending >= b.max {
            // Full of attempts still being checked: the answer comes within a second or two.
            return Err(Duration::from_secs(1));
        }
        e.pending += 1;
        Ok(())
    }

    /// Settles a reservation: a failure stays counted (and may lock), a success is given back.
    /// Answers the lockout a failure triggered.
    fn settle(&self, key: &K, failed: bool) -> Option<Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        let e = state.entry(key.clone()).or_default();
        e.pending = e.pending.saturating_sub(1);
        if !failed {
            return None;
        }
        e.failures.push_back(now);
        if e.failures.len() >= self.budget.max {
            e.failures.clear();
            e.locked_until = Some(now + self.budget.lockout);
            return Some(self.budget.lockout);
        }
        None
    }
}

/// What a password is tried against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A Sluice account, by user name (lower-cased).
    Account(String),
    /// A host, by short id.
    Host(String),
}

impl Target {
    pub fn account(name: &str) -> Self {
        // Bounded: a megabyte of user name must not become a megabyte of key.
        Target::Account(name.chars().take(64).collect::<String>().to_lowercase())
    }
    pub fn host(short_id: &str) -> Self {
        Target::Host(short_id.chars().take(16).collect())
    }
    /// What kind of thing is tried, for metrics (never which one).
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Account(_) => "account",
            Target::Host(_) => "host",
        }
    }
}

/// The password-attempt budgets of one Sluice.
pub struct Attempts {
    by_source: Lockouts<IpAddr>,
    by_target_source: Lockouts<(Target, IpAddr)>,
    by_target: Lockouts<Target>,
}

impl Default for Attempts {
    fn default() -> Self {
        Self::new(PER_SOURCE, PER_TARGET_SOURCE, PER_TARGET)
    }
}

/// Why an attempt may not be made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// How long to wait before trying again.
    pub retry_after: Duration,
}

impl Refused {
    /// Whole seconds, rounded up, for a Retry-After header.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

impl Attempts {
    pub fn new(source: Budget, target_source: Budget, target: Budget) -> Self {
        Self {
            by_source: Lockouts::new(source),
            by_target_source: Lockouts::new(target_source),
            by_target: Lockouts::new(target),
        }
    }

    /// How long `source` stays locked out everywhere, if it is.
    pub fn source_locked(&self, source: IpAddr) -> Option<Duration> {
        self.by_source.locked(&source)
    }

    /// Takes a failure slot in every budget `source` trying `target` falls under, or says how
    /// long to wait. `None` as source (no peer address known) uses the target budget only.
    pub fn begin(&self, source: Option<IpAddr>, target: Target) -> Result<Attempt<'_>, Refused> {
        let refused = |retry_after| {
            crate::metrics::METRICS.refused_locked.inc();
            Refused { retry_after }
        };
        if let Some(ip) = source {
            self.by_source.reserve(&ip).map_err(refused)?;
            if let Err(wait) = self.by_target_source.reserve(&(target.clone(), ip)) {
                self.by_source.settle(&ip, false);
                return Err(refused(wait));
            }
        }
        // A clean address: nothing on record anywhere but this very attempt.
        let clean = source.is_some_and(|ip| {
            self.by_source.clean_but_one(&ip)
                && self.by_target_source.clean_but_one(&(target.clone(), ip))
        });
        let in_target_budget = match self.by_target.reserve(&target) {
            Ok(()) => true,
            // The target is under attack: a clean address still gets its try (its own budgets
            // above still count it), outside the exhausted target budget.
            Err(_) if clean => false,
            Err(wait) => {
                if let Some(ip) = source {
                    self.by_source.settle(&ip, false);
                    self.by_target_source.settle(&(target.clone(), ip), false);
                }
                return Err(refused(wait));
            }
        };
        Ok(Attempt {
            attempts: self,
            source,
            target,
            in_target_budget,
            settled: false,
        })
    }
}

/// An attempt in flight; report how it went with [`Attempt::succeeded`] or
/// [`Attempt::failed`]. Dropped unsettled, it counts as failed.
pub struct Attempt<'a> {
    attempts: &'a Attempts,
    source: Option<IpAddr>,
    target: Target,
    /// Whether it holds a slot of the target's budget (a clean address's try at a target
    /// under attack does not).
    in_target_budget: bool,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was right: the slots are given back.
    pub fn succeeded(mut self) {
        self.settle(false);
    }

    /// The password (or the name) was wrong. Answers the lockout this failure triggered for
    /// the caller, if any.
    pub fn failed(mut self) -> Option<Duration> {
        self.settle(true)
    }

    fn settle(&mut self, failed: bool) -> Option<Duration> {
        if self.settled {
            return None;
        }
        self.settled = true;
        let a = self.attempts;
        let mut locked = if self.in_target_budget {
            a.by_target.settle(&self.target, failed)
        } else {
            None
        };
        if let Some(ip) = self.source {
            let pair = a
                .by_target_source
                .settle(&(self.target.clone(), ip), failed);
            let src = a.by_source.settle(&ip, failed);
            locked = [locked, pair, src].into_iter().flatten().max();
        }
        if failed {
            let target = crate::metrics::TargetLabels {
                target: self.target.kind(),
            };
            let m = &*crate::metrics::METRICS;
            m.password_failures.get_or_create(&target).inc();
            if locked.is_some() {
                m.lockouts.get_or_create(&target).inc();
            }
        }
        locked
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.settle(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, n]))
    }

    fn small() -> Attempts {
        let b = |max| Budget {
            max,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(30),
        };
        Attempts::new(b(5), b(3), b(10))
    }

    #[test]
    fn failures_lock_the_source_across_targets() {
        let a = small();
        for n in 0..4 {
            a.begin(ip(1), Target::host(&format!("host{n}")))
                .unwrap()
                .failed();
        }
        assert!(
            a.begin(ip(1), Target::host("other"))
                .unwrap()
                .failed()
                .is_some()
        );
        assert!(a.begin(ip(1), Target::account("alice")).is_err());
        assert!(a.source_locked(ip(1).unwrap()).is_some());
        // Another address is untouched.
        a.begin(ip(2), Target::account("alice"))
            .unwrap()
            .succeeded();
    }

    #[test]
    fn one_source_locking_a_target_leaves_its_owner_a_way_in() {
        let a = small();
        for _ in 0..3 {
            a.begin(ip(1), Target::host("k3x9m2qa")).unwrap().failed();
        }
        assert!(a.begin(ip(1), Target::host("k3x9m2qa")).is_err());
        a.begin(ip(2), Target::host("k3x9m2qa"))
            .unwrap()
            .succeeded();
    }

    #[test]
    fn many_sources_at_one_target_hold_off_failing_addresses_but_not_its_owner() {
        let a = small();
        for n in 0..10 {
            a.begin(ip(10 + n), Target::account("alice"))
                .unwrap()
                .failed();
        }
        // Every address that failed at it is held off for the lockout...
        let refused = a.begin(ip(10), Target::account("alice")).err().unwrap();
        assert!(refused.retry_after > Duration::from_secs(1));
        // ...and so is one that failed elsewhere...
        a.begin(ip(50), Target::account("bob")).unwrap().failed();
        assert!(a.begin(ip(50), Target::account("alice")).is_err());
        // ...while an address with a clean record gets its try: the owner is not locked out
        // by how many addresses the attack has.
        a.begin(ip(99), Target::account("alice"))
            .unwrap()
            .succeeded();
        a.begin(ip(99), Target::account("alice"))
            .unwrap()
            .succeeded();
        // A clean address that fails is held off from then on; attempts in flight from one
        // address count against it too.
        a.begin(ip(98), Target::account("alice")).unwrap().failed();
        assert!(a.begin(ip(98), Target::account("alice")).is_err());
        let in_flight = a.begin(ip(97), Target::account("alice")).unwrap();
        assert!(a.begin(ip(97), Target::account("alice")).is_err());
        in_flight.succeeded();
        // A burst from a fresh address: only one of its attempts is heard at a target under
        // attack, however they interleave.
        let burst: Vec<_> = (0..4)
            .map(|_| a.begin(ip(96), Target::account("alice")))
            .collect();
        assert_eq!(burst.iter().filter(|b| b.is_ok()).count(), 1);
    }

    #[test]
    fn slots_are_taken_before_the_check_and_given_back_on_success() {
        let a = small();
        let in_flight: Vec<_> = (0..5)
            .map(|n| a.begin(ip(1), Target::host(&format!("h{n}"))).unwrap())
            .collect();
        // Five checks in flight fill the source's budget: a sixth waits.
        let refused = a.begin(ip(1), Target::host("h9")).err().unwrap();
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        for attempt in in_flight {
            attempt.succeeded();
        }
        a.begin(ip(1), Target::host("h9")).unwrap().succeeded();
    }

    #[test]
    fn an_attempt_dropped_unsettled_counts_as_failed() {
        let a = small();
        for n in 0..5 {
            drop(a.begin(ip(1), Target::account(&format!("bob{n}"))).unwrap());
        }
        assert!(a.source_locked(ip(1).unwrap()).is_some());
    }
}
