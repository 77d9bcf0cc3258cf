//! A byte pipe between two channels (direct-tcpip, forwarded-tcpip, agent): data, end of file
//! and close cross in both directions; the pipe ends when both sides closed or either went away.

use std::sync::Arc;

use russh::{Channel, ChannelId, ChannelMsg};

use crate::sshproxy::registry::Meter;

/// Moves bytes between `a` and `b` until both are done.
pub async fn pump<A, B>(a: Channel<A>, b: Channel<B>, meter: Arc<Meter>)
where
    A: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
    B: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let (mut ar, aw) = a.split();
    let (mut br, bw) = b.split();
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        tokio::select! {
            m = ar.wait(), if a_open => match m {
                Some(ChannelMsg::Data { data }) => {
                    meter.touch();
                    if bw.data_bytes(data).await.is_err() { break; }
                }
                Some(ChannelMsg::Eof) => { let _ = bw.eof().await; }
                Some(ChannelMsg::Close) | None => { a_open = false; let _ = bw.close().await; }
                Some(_) => {}
            },
            m = br.wait(), if b_open => match m {
                Some(ChannelMsg::Data { data }) => {
                    meter.touch();
                    if aw.data_bytes(data).await.is_err() { break; }
                }
                Some(ChannelMsg::Eof) => { let _ = aw.eof().await; }
                Some(ChannelMsg::Close) | None => { b_open = false; let _ = aw.close().await; }
                Some(_) => {}
            },
        }
    }
    let _ = aw.close().await;
    let _ = bw.close().await;
}
