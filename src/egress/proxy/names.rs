//! Names resolved at the egress. A proxy egress's resolver answers a host's A queries with
//! synthetic addresses from [`POOL`], one per name, and a connection to such an address is
//! dialled through the proxy by that name (a SOCKS5 domain, `CONNECT name:port`, the name
//! field of Shadowsocks, Trojan and VMess), so the proxy resolves it where the traffic
//! leaves, and no lookup of the host's names is ever made anywhere else.
//!
//! The pool is 198.19.0.0/16, the upper half of the range set aside for benchmarks (RFC 2544),
//! which no host on the internet uses. Per host the map is bounded ([`CAPACITY`] names; the
//! least recently used goes first when it is full) and expiring (a name neither looked up nor
//! connected to for [`IDLE`] is forgotten). Addresses are handed out in turn around the whole
//! pool, so an address comes back to another name only after every other one has been given
//! out, long after the answer's [`TTL`]; an address the map no longer holds is refused, never
//! guessed.
//!
//! Pure state with the clock passed in, so it is tested without a network.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first address of the pool; the pool is its /16.
const BASE: u32 = u32::from_be_bytes([198, 19, 0, 0]);
/// Addresses in the pool.
const SIZE: u32 = 1 << 16;
/// The synthetic addresses, as a range.
pub const POOL: ipnet::Ipv4Net = ipnet::Ipv4Net::new_assert(Ipv4Addr::new(198, 19, 0, 0), 16);
/// Names one host's map holds at most.
pub const CAPACITY: usize = 4096;
/// A name neither looked up nor connected to for this long is forgotten.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// The TTL of a synthetic answer, in seconds: short, so a name in use is asked again (and
/// kept) well within [`IDLE`].
pub const TTL: u32 = 60;
/// The longest name taken (a DNS name's presentation form, without the final dot).
const MAX_NAME: usize = 253;

/// Whether `ip` is one of the synthetic addresses.
pub fn in_pool(ip: Ipv4Addr) -> bool {
    u32::from(ip) & !(SIZE - 1) == BASE
}

/// A host name fit to be dialled by name: letters, digits, `-` and `_` in dot-separated labels
/// of 1 to 63, at most 253 in all; lowercased, without the final dot. Anything else (an
/// escaped byte, a space, an empty label) is not a name any proxy protocol can carry safely.
pub fn host_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let plain = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    plain.then(|| name.to_ascii_lowercase())
}

/// One host's names and their synthetic addresses.
pub struct Names {
    map: Mutex<Map>,
}

impl Default for Names {
    fn default() -> Self {
        Names::new(CAPACITY, IDLE)
    }
}

struct Entry {
    name: Box<str>,
    /// When the entry was last used, and its place in `Map::order`.
    used: Instant,
    tick: u64,
}

struct Map {
    by_name: HashMap<Box<str>, u32>,
    /// Offsets into the pool.
    by_offset: HashMap<u32, Entry>,
    /// Entries by last use (tick, offset): the first is the least recently used.
    order: BTreeSet<(u64, u32)>,
    tick: u64,
    /// The offset handed out next (if free).
    next: u32,
    capacity: usize,
    idle: Duration,
}

impl Names {
    /// A map of at most `capacity` names (at most the pool's size, less two), forgetting those
    /// unused for `idle`.
    pub fn new(capacity: usize, idle: Duration) -> Names {
        Names {
            map: Mutex::new(Map {
                by_name: HashMap::new(),
                by_offset: HashMap::new(),
                order: BTreeSet::new(),
                tick: 0,
                next: 1,
                capacity: capacity.clamp(1, SIZE as usize - 2),
                idle,
            }),
        }
    }

    /// The synthetic address of `name` (a [`host_name`]), given it now if it has none.
    pub fn address_for(&self, name: &str, now: Instant) -> Ipv4Addr {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.expire(now);
        if let Some(&offset) = map.by_name.get(name) {
            map.touch(offset, now);
            return Ipv4Addr::from(BASE + offset);
        }
        if map.by_offset.len() >= map.capacity
            && let Some(&(_, oldest)) = map.order.first()
        {
            map.remove(oldest);
        }
        let offset = map.free_offset();
        let name: Box<str> = name.into();
        map.by_name.insert(name.clone(), offset);
        map.tick += 1;
        let tick = map.tick;
        map.order.insert((tick, offset));
        map.by_offset.insert(
            offset,
            Entry {
                name,
                used: now,
                tick,
            },
        );
        Ipv4Addr::from(BASE + offset)
    }

    /// The name `ip` stands for, if it is a synthetic address the map still holds; using it
    /// keeps it.
    pub fn name_of(&self, ip: Ipv4Addr, now: Instant) -> Option<String> {
        if !in_pool(ip) {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.expire(now);
        let offset = u32::from(ip) - BASE;
        let name = map.by_offset.get(&offset)?.name.to_string();
        map.touch(offset, now);
        Some(name)
    }

    /// Names held now.
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_offset
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Map {
    fn touch(&mut self, offset: u32, now: Instant) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.by_offset.get_mut(&offset) {
            self.order.remove(&(entry.tick, offset));
            entry.tick = tick;
            entry.used = now;
            self.order.insert((tick, offset));
        }
    }

    fn remove(&mut self, offset: u32) {
        if let Some(entry) = self.by_offset.remove(&offset) {
            self.order.remove(&(entry.tick, offset));
            self.by_name.remove(&entry.name);
        }
    }

    /// Forgets the entries unused for `idle`: the oldest first, so it stops at the first kept.
    fn expire(&mut self, now: Instant) {
        while let Some(&(_, offset)) = self.order.first() {
            let stale = self
                .by_offset
                .get(&offset)
                .is_none_or(|e| now.saturating_duration_since(e.used) >= self.idle);
            if !stale {
                break;
            }
            self.remove(offset);
        }
    }

    /// The next free offset after the last one handed out, skipping the pool's first and
    /// last address. There is one: the map holds fewer than the pool's size less two.
    fn free_offset(&mut self) -> u32 {
        loop {
            let offset = self.next;
            self.next = if self.next + 1 >= SIZE - 1 {
                1
            } else {
                self.next + 1
            };
            if !self.by_offset.contains_key(&offset) {
                return offset;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_address_and_the_address_leads_back_to_it() {
        let names = Names::default();
        let now = Instant::now();
        let a = names.address_for("echo.lab.test", now);
        let b = names.address_for("other.lab.test", now);
        assert!(in_pool(a) && in_pool(b) && a != b);
        assert_eq!(names.address_for("echo.lab.test", now), a);
        assert_eq!(names.name_of(a, now).as_deref(), Some("echo.lab.test"));
        assert_eq!(names.name_of(b, now).as_deref(), Some("other.lab.test"));
        // An address of the pool that was never handed out, or one outside it, is nobody's.
        assert_eq!(names.name_of(Ipv4Addr::new(198, 19, 200, 1), now), None);
        assert_eq!(names.name_of(Ipv4Addr::new(192, 0, 2, 1), now), None);
        assert!(!in_pool(Ipv4Addr::new(198, 18, 1, 1)));
        assert!(!in_pool(Ipv4Addr::new(198, 20, 0, 1)));
        assert!(POOL.contains(&a) && POOL.contains(&b));
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn the_map_is_bounded_and_the_least_recently_used_name_goes_first() {
        let names = Names::new(3, IDLE);
        let now = Instant::now();
        let a = names.address_for("a.test", now);
        let b = names.address_for("b.test", now);
        names.address_for("c.test", now);
        // a is used again (a connection to it), so b is now the oldest.
        assert!(names.name_of(a, now).is_some());
        names.address_for("d.test", now);
        assert_eq!(names.len(), 3);
        assert_eq!(names.name_of(b, now), None, "b was evicted");
        assert_eq!(names.name_of(a, now).as_deref(), Some("a.test"));
        // A flood of names leaves the map at its bound.
        let big = Names::default();
        for i in 0..3 * CAPACITY {
            big.address_for(&format!("n{i}.flood.test"), now);
        }
        assert_eq!(big.len(), CAPACITY);
    }

    #[test]
    fn names_unused_for_the_idle_time_expire() {
        let names = Names::new(16, Duration::from_secs(60));
        let t0 = Instant::now();
        let a = names.address_for("a.test", t0);
        let b = names.address_for("b.test", t0);
        // b is used at 50 s; at 70 s a has been idle 70 s, b 20 s.
        assert!(names.name_of(b, t0 + Duration::from_secs(50)).is_some());
        let t1 = t0 + Duration::from_secs(70);
        assert_eq!(names.name_of(a, t1), None, "a expired");
        assert_eq!(names.name_of(b, t1).as_deref(), Some("b.test"));
        assert_eq!(names.len(), 1);
        // Asked again, an expired name gets a new address: the old one is not reused soon.
        let a2 = names.address_for("a.test", t1);
        assert_ne!(a2, a);
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn addresses_go_round_the_whole_pool_before_one_is_reused() {
        let names = Names::new(2, IDLE);
        let now = Instant::now();
        let first = names.address_for("first.test", now);
        let mut seen = std::collections::HashSet::new();
        seen.insert(first);
        // Every name after it gets a fresh address until the pool (less its ends) is used up.
        for i in 1..(SIZE - 2) {
            let ip = names.address_for(&format!("n{i}.test"), now);
            assert!(
                seen.insert(ip),
                "{ip} was handed out twice within one round"
            );
        }
        assert!(!seen.contains(&Ipv4Addr::new(198, 19, 0, 0)));
        assert!(!seen.contains(&Ipv4Addr::new(198, 19, 255, 255)));
        // The next round starts again at the beginning.
        assert_eq!(names.address_for("again.test", now), first);
    }

    #[test]
    fn only_plain_host_names_are_taken() {
        assert_eq!(
            host_name("Echo.Lab.Test.").as_deref(),
            Some("echo.lab.test")
        );
        assert_eq!(
            host_name("_dmarc.x-y.test").as_deref(),
            Some("_dmarc.x-y.test")
        );
        for bad in [
            "",
            ".",
            "a..b",
            "a b.test",
            "evil.test\r\nHost: x",
            "a\\000.test",
            &"a".repeat(64),
            &format!("{}.test", vec!["a".repeat(60); 5].join(".")),
        ] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
    }
}
