//! A host's Linux account: the uid (and gid, the same number) it runs as, unique on the
//! machine, drawn from a range Sluice owns (`SLUICE_HOST_UIDS`). A uid of its own gives each
//! tenant its own per-user kernel budgets (inotify instances, processes, pipe buffers, keys)
//! and keeps one tenant's processes out of another's reach; it is stored with the host, so it
//! stays the same across rebuilds, restarts and restores.

use std::fmt;
use std::str::FromStr;

/// The uids Sluice gives hosts' accounts, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

/// The default range: far above the accounts a machine makes for its people (from 1000) and
/// below 65534 (`nobody`), so that under a Docker daemon with `userns-remap` (65536
/// subordinate ids by default) every host's uid is still mapped.
pub const DEFAULT: UidRange = UidRange {
    first: 20_000,
    last: 59_999,
};

/// The lowest first uid accepted: below it live the machine's own system and human accounts.
pub const MIN_FIRST: u32 = 1_000;
/// The highest last uid accepted under the kernel's 32-bit ids (`-1` means "no change").
pub const MAX_LAST: u32 = u32::MAX - 2;
/// The uid (and gid) hosts' accounts had before each got its own; homes made then are
/// re-owned to the host's uid at its next start.
pub const LEGACY_UID: u32 = 1000;

impl Default for UidRange {
    fn default() -> Self {
        DEFAULT
    }
}

impl UidRange {
    /// How many hosts the range can hold.
    pub fn len(&self) -> u64 {
        u64::from(self.last) - u64::from(self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }

    /// The lowest uid of the range not in `taken` (sorted ascending; values outside the
    /// range are ignored), or `None` when every uid is taken.
    pub fn first_free(&self, taken: &[u32]) -> Option<u32> {
        let mut candidate = self.first;
        for &uid in taken {
            if uid < candidate {
                continue;
            }
            if uid > candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        self.contains(candidate).then_some(candidate)
    }
}

impl fmt::Display for UidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for UidRange {
    type Err = String;

    /// `FIRST-LAST`, such as `20000-59999`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not FIRST-LAST, such as 20000-59999"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{}` is not a uid", v.trim()))
        };
        let (first, last) = (parse(a)?, parse(b)?);
        if first < MIN_FIRST {
            return Err(format!(
                "the range must start at {MIN_FIRST} or above, clear of the machine's own accounts"
            ));
        }
        if last < first {
            return Err(format!("{last} is below {first}"));
        }
        if last > MAX_LAST {
            return Err(format!("the range must end at {MAX_LAST} or below"));
        }
        if (first..=last).contains(&65_534) {
            return Err("the range must not hold 65534 (nobody)".into());
        }
        Ok(Self { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_free_uid_fills_gaps_and_stops_at_the_end() {
        let r: UidRange = "20000-20003".parse().unwrap();
        assert_eq!(r.first_free(&[]), Some(20000));
        assert_eq!(r.first_free(&[20000, 20001]), Some(20002));
        assert_eq!(r.first_free(&[20000, 20002]), Some(20001));
        assert_eq!(r.first_free(&[1000, 19999, 20001]), Some(20000));
        assert_eq!(r.first_free(&[20000, 20001, 20002, 20003]), None);
        assert_eq!(r.first_free(&[20000, 20001, 20002, 20003, 20004]), None);
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn a_range_is_checked_when_read() {
        assert_eq!("20000-59999".parse::<UidRange>(), Ok(DEFAULT));
        assert_eq!(DEFAULT.to_string(), "20000-59999");
        for bad in [
            "",
            "20000",
            "a-b",
            "999-2000",
            "3000-2000",
            "60000-70000",
            "1000-",
        ] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad}");
        }
        assert_eq!(
            "70000-70000".parse::<UidRange>().map(|r| r.len()),
            Ok(1),
            "a range above nobody is fine"
        );
    }
}
