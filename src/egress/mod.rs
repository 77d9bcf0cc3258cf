//! Egress: the ways out that hosts are bound to. This module owns what an egress *is*: its
//! WireGuard or proxy settings, their validation, secret masking, and client key generation.
//! The data plane: `engine.rs` keeps one session per host, `tun.rs` makes the host's TUN in
//! its namespace, `wireguard.rs` runs a WireGuard tunnel over boringtun.

pub mod destinations;
pub mod engine;
pub mod proxy;
pub mod settings;
pub mod tun;
pub mod wireguard;

pub use settings::{EgressInput, EgressSettings, ProxyConfig, ValidEgress, WireguardSettings};

/// What a masked secret reads back as. Sending it back in an update keeps the stored value.
pub const MASK: &str = "********";
