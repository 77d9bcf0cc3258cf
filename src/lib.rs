//! Sluice: a self-hosted container host and egress-tunnel manager.
//!
//! One binary, `sluice`. This library holds every component; `main.rs` only parses the
//! command line and hands over. See ARCHITECTURE.md for the map.

pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod desktop;
pub mod egress;
pub mod events;
pub mod hosts;
pub mod keys;
pub mod mcp;
pub mod metrics;
pub mod netns;
pub mod ops;
pub mod probe;
pub mod recordings;
pub mod runtime;
pub mod sshproxy;
pub mod store;
pub mod tasks;
pub mod users;
pub mod validation;
pub mod web;
