//! Time as Sluice stores it: UTC, truncated to whole seconds, so that every backend orders
//! and compares stored times the same way (SQLite keeps them as RFC 3339 text).

use time::OffsetDateTime;

/// The current time in UTC, truncated to whole seconds.
pub fn now() -> OffsetDateTime {
    truncate(OffsetDateTime::now_utc())
}

/// A time converted to UTC and truncated to whole seconds.
pub fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    let utc = t.to_offset(time::UtcOffset::UTC);
    utc.replace_nanosecond(0).unwrap_or(utc)
}

/// Serde helpers for RFC 3339 times in API bodies.
pub mod rfc3339 {
    pub use time::serde::rfc3339::*;
}
