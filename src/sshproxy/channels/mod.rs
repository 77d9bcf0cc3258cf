//! Channels, one file per kind: how each is opened on the other side and bridged.
//! `pump` moves bytes for the kinds that are plain byte streams.

pub mod agent;
pub mod direct_tcpip;
pub mod forwarded_tcpip;
pub mod pump;
pub mod session;

/// Each channel's receive window on both sides of the proxy: large, so a bulk transfer is
/// never waiting for a window adjustment across two hops. Memory does not follow it (russh
/// reopens the window as data arrives, not as it is read): a channel's unread data is bounded
/// by [`BUFFERED_MESSAGES`] packets of [`MAX_PACKET`], and when a channel's queue is full the
/// connection's reader waits, which stops the sender (TCP backpressure) instead of growing
/// Sluice. Channels per connection and per account are capped (`limits.rs`).
pub const WINDOW: u32 = 8 * 1024 * 1024;
/// Largest data packet the proxy accepts, on both sides (OpenSSH sends up to 32 KiB; the
/// proxy's own sends up to this, so a chunk from one side crosses as one packet).
pub const MAX_PACKET: u32 = 64 * 1024;
/// Messages queued per channel before the connection's reader waits (backpressure): at most
/// 256 KiB of a channel's data waits in Sluice.
pub const BUFFERED_MESSAGES: usize = 4;
