//! DNS of a proxy egress: queries the container sends to its resolver address are answered
//! here, each one asked over TCP (two-byte length prefix) of the egress's DNS server through
//! the proxy. Nothing is ever resolved from Sluice's own namespace.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::outbound::Outbound;

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(8);

/// Answers the queries of one UDP flow to the resolver, until the flow ends.
pub async fn serve(mut flow: ipstack::IpStackUdpStream, outbound: Outbound, server: IpAddr) {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match flow.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let query = buf[..n].to_vec();
        match tokio::time::timeout(QUERY_TIMEOUT, ask(&outbound, server, &query)).await {
            Ok(Ok(answer)) => {
                if flow.write_all(&answer).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "DNS through the proxy failed"),
            Err(_) => tracing::debug!("DNS through the proxy timed out"),
        }
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
