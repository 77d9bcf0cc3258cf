//! The HTTP server loop under the API router: hyper's HTTP/1.1, with what a public listener
//! needs and `axum::serve` does not give: a global cap on open connections (beyond it, new
//! ones wait in the kernel's backlog instead of taking descriptors), a deadline for a
//! request's headers that also closes idle keep-alive connections (slowloris, or a thousand
//! sockets opened and left silent), and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long connections being served get to finish once Sluice stops.
const DRAIN: Duration = Duration::from_secs(10);

/// Bounds of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and the longest a keep-alive
    /// connection may sit idle between requests.
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets open requests finish
/// (up to [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut at_cap_logged = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                at_cap_logged = false;
                slot
            }
            Err(_) => {
                if !at_cap_logged {
                    tracing::warn!(
                        max = limits.max_connections,
                        "HTTP connection cap reached: new connections wait"
                    );
                    at_cap_logged = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    s = slots.clone().acquire_owned() => match s {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or similar: back off rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req.map(Body::new)
            });
        let conn = http
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .with_upgrades();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "HTTP connection ended");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn.as_mut()).await;
                }
            }
            drop(slot);
        });
    }
}
