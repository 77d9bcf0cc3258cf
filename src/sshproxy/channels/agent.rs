//! Agent forwarding (`ssh -A`), only when the operator enabled it and the client asked for
//! it on a session: the container's sshd opens an agent channel, which is opened towards the
//! client's agent and bridged.

use std::sync::Arc;

use russh::client::{ChannelOpenHandle, Msg};

use super::pump::pump;
use crate::sshproxy::registry::Meter;

pub async fn open(
    down: russh::server::Handle,
    up: russh::Channel<Msg>,
    reply: ChannelOpenHandle,
    meter: Arc<Meter>,
) {
    match down.channel_open_agent().await {
        Ok(ch) => {
            reply.accept().await;
            pump(ch, up, meter).await;
        }
        Err(_) => reply.reject(russh::ChannelOpenFailure::ConnectFailed).await,
    }
}
