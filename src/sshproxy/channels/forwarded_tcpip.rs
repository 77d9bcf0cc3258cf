//! forwarded-tcpip (`ssh -R`): the listener lives in the container (the client's tcpip-forward
//! request is passed to its sshd); each connection it accepts comes back as a channel that
//! is opened towards the client, but only for a forward the client asked for.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use russh::client::{ChannelOpenHandle, Msg};

use super::pump::pump;
use crate::sshproxy::registry::Meter;

/// The forwards the client requested, as (address, port) the container listens on.
#[derive(Default)]
pub struct Requested(Mutex<HashSet<(String, u32)>>);

impl Requested {
    pub fn add(&self, address: &str, port: u32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((address.to_string(), port));
    }
    pub fn remove(&self, address: &str, port: u32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(address.to_string(), port));
    }
    pub fn contains(&self, address: &str, port: u32) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(address.to_string(), port))
    }
}

/// Bridges a connection the container's listener accepted to the client.
pub async fn open(
    down: russh::server::Handle,
    up: russh::Channel<Msg>,
    reply: ChannelOpenHandle,
    listener: (String, u32),
    origin: (String, u32),
    meter: Arc<Meter>,
) {
    match down
        .channel_open_forwarded_tcpip(listener.0, listener.1, origin.0, origin.1)
        .await
    {
        Ok(ch) => {
            reply.accept().await;
            pump(ch, up, meter).await;
        }
        Err(_) => reply.reject(russh::ChannelOpenFailure::ConnectFailed).await,
    }
}
