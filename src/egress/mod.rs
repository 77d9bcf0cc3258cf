//! Egress: the ways out that hosts are bound to. This module owns what an egress *is*: its
//! WireGuard or proxy settings, their validation, secret masking, and client key generation.
//! The data plane that carries traffic lands here as the egress engine.

pub mod settings;

pub use settings::{EgressInput, EgressSettings, ProxyConfig, ValidEgress, WireguardSettings};

/// What a masked secret reads back as. Sending it back in an update keeps the stored value.
pub const MASK: &str = "********";
