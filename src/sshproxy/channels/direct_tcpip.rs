//! direct-tcpip (`ssh -L`): the client asks for a connection to host:port; the container's
//! sshd dials it, so the destination is resolved and reached from inside the container (and
//! through its egress), never from the control plane.

use std::sync::Arc;

use russh::ChannelOpenFailure;
use russh::server::{ChannelOpenHandle, Msg};

use super::pump::pump;
use crate::sshproxy::upstream::Upstream;

/// Opens the same channel upstream, then accepts the client's and bridges them; a refusal
/// upstream reaches the client with its reason.
pub async fn open(
    upstream: Arc<Upstream>,
    down: russh::Channel<Msg>,
    reply: ChannelOpenHandle,
    target: (String, u32),
    origin: (String, u32),
) {
    let up = match upstream.get().await {
        Ok(up) => up,
        Err(e) => {
            return reply
                .reject(ChannelOpenFailure::Other {
                    code: 2,
                    reason: e.to_string(),
                })
                .await;
        }
    };
    match up
        .handle
        .channel_open_direct_tcpip(target.0.clone(), target.1, origin.0, origin.1)
        .await
    {
        Ok(ch) => {
            reply.accept().await;
            pump(down, ch, upstream.meter.clone()).await;
        }
        Err(e) => {
            let reason = format!(
                "the host could not connect to {}:{}: {e}",
                target.0, target.1
            );
            reply
                .reject(ChannelOpenFailure::Other { code: 2, reason })
                .await;
        }
    }
}
