//! Channels, one file per kind: how each is opened on the other side and bridged.
//! `pump` moves bytes for the kinds that are plain byte streams.

pub mod agent;
pub mod direct_tcpip;
pub mod forwarded_tcpip;
pub mod pump;
pub mod session;
