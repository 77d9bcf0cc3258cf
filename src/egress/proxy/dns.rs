//! DNS of a proxy egress: queries the container sends to its resolver address are answered
//! here, each one asked over TCP (two-byte length prefix) of the egress's DNS server through
//! the proxy. Nothing is ever resolved from Sluice's own namespace.
//!
//! Queries of one flow are answered concurrently, up to [`PER_FLOW`] at once and
//! [`in_flight_budget`] across every host; a query beyond either is dropped, as an overloaded
//! resolver would (the client asks again). The flow is read through a bounded queue
//! (queue.rs), so a flood costs a bounded amount of memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore};

use super::outbound::Outbound;

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(8);
/// Queries of one flow being answered at once.
pub const PER_FLOW: usize = 16;
/// A DNS message over UDP is at most this long; longer "queries" are not DNS.
const MAX_QUERY: usize = 4096;

/// Queries being answered at once across all hosts (each holds a socket to a proxy).
pub fn in_flight_budget() -> usize {
    (super::descriptor_budget() / 8).clamp(64, 4096)
}

static IN_FLIGHT: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(in_flight_budget())));

/// Answers the queries of one UDP flow to the resolver, until the flow ends.
pub async fn serve<F>(flow: F, outbound: Outbound, server: IpAddr)
where
    F: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, write) = tokio::io::split(flow);
    let write = Arc::new(Mutex::new(write));
    let per_flow = Arc::new(Semaphore::new(PER_FLOW));
    // Dropped with this function: answers still being looked up end with the flow.
    let mut answering = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; MAX_QUERY];
    loop {
        while answering.try_join_next().is_some() {}
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (Ok(mine), Ok(global)) = (
            per_flow.clone().try_acquire_owned(),
            IN_FLIGHT.clone().try_acquire_owned(),
        ) else {
            tracing::debug!("proxy egress: DNS queries beyond the cap, one was dropped");
            continue;
        };
        let query = buf[..n].to_vec();
        let (outbound, write) = (outbound.clone(), write.clone());
        answering.spawn(async move {
            let _permits = (mine, global);
            match tokio::time::timeout(QUERY_TIMEOUT, ask(&outbound, server, &query)).await {
                Ok(Ok(answer)) => {
                    let _ = write.lock().await.write_all(&answer).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "DNS through the proxy failed"),
                Err(_) => tracing::debug!("DNS through the proxy timed out"),
            }
        });
    }
}

async fn ask(outbound: &Outbound, server: IpAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut s = outbound.connect(SocketAddr::new(server, 53)).await?;
    let mut msg = Vec::with_capacity(query.len() + 2);
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(query);
    s.write_all(&msg).await?;
    s.flush().await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut answer).await?;
    Ok(answer)
}
