//! The HTTP server loop under the API router: hyper's HTTP/1.1, with what a public listener
//! needs and `axum::serve` does not give: a global cap on open connections (beyond it, new
//! ones wait in the kernel's backlog instead of taking descriptors), a deadline for a
//! request's headers that also closes idle keep-alive connections (slowloris, or a thousand
//! sockets opened and left silent), a deadline for a client to take what it is sent (one that
//! stops reading a long answer or an event stream is cut off, not buffered for), and a
//! graceful stop.

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
    /// Longest a write may wait for the client to read: past it the connection is closed.
    pub write_stall: Duration,
}

/// A connection that fails a write the client has not taken within `limit`: the kernel's
/// send buffer is full and stays full, so the client has stopped reading.
struct StallGuard<IO> {
    io: IO,
    limit: Duration,
    stalled_since: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> StallGuard<IO> {
    fn new(io: IO, limit: Duration) -> Self {
        Self {
            io,
            limit,
            stalled_since: None,
        }
    }

    /// After a write returned Pending: fails once the stall outlasts the limit.
    fn check_stall(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        let limit = self.limit;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

impl<IO: AsyncRead + Unpin> AsyncRead for StallGuard<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StallGuard<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.io).poll_write(cx, buf) {
            std::task::Poll::Pending => self.check_stall(cx),
            done => {
                self.stalled_since = None;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            std::task::Poll::Pending => self.check_stall(cx),
            done => {
                self.stalled_since = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.io).poll_flush(cx) {
            std::task::Poll::Pending => self.check_stall(cx).map_ok(drop),
            done => {
                self.stalled_since = None;
                done
            }
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How connections are secured and whose forwarding headers are believed.
#[derive(Clone, Default)]
pub struct Frontend {
    /// HTTPS on every connection when set.
    pub tls: Option<super::tls::Tls>,
    pub trusted: super::client::TrustedProxies,
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets open requests finish
/// (up to [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    frontend: Frontend,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let acceptor = frontend.tls.as_ref().map(|t| t.acceptor());
    let trusted = Arc::new(frontend.trusted);
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
        let conn = Conn {
            app: app.clone(),
            http: http.clone(),
            peer,
            trusted: trusted.clone(),
            limits,
            stop: stop.clone(),
            slot: ConnectionSlot(Arc::new(slot)),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => conn.serve(tcp, false).await,
                Some(acceptor) => {
                    // The handshake shares the deadline for request headers: a client that
                    // opens a socket and says nothing holds it no longer over TLS.
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => conn.serve(tls, true).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// An accepted connection's place under the HTTP connection cap, carried by each of its
/// requests: a request upgraded to a WebSocket (a terminal, a desktop) keeps it for as long as
/// the socket lives, though hyper's connection ends at the upgrade.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// A WebSocket upgrade with its connection's place under the cap, for the socket to hold.
pub struct HeldUpgrade {
    pub upgrade: axum::extract::ws::WebSocketUpgrade,
    pub slot: Option<ConnectionSlot>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for HeldUpgrade {
    type Rejection = axum::extract::ws::rejection::WebSocketUpgradeRejection;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let slot = parts.extensions.get::<ConnectionSlot>().cloned();
        let upgrade = axum::extract::ws::WebSocketUpgrade::from_request_parts(parts, state).await?;
        Ok(HeldUpgrade { upgrade, slot })
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    app: Router,
    http: hyper::server::conn::http1::Builder,
    peer: SocketAddr,
    trusted: Arc<super::client::TrustedProxies>,
    limits: ServerLimits,
    stop: CancellationToken,
    slot: ConnectionSlot,
}

impl Conn {
    async fn serve<IO>(self, io: IO, tls: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            app,
            http,
            peer,
            trusted,
            limits,
            stop,
            slot,
        } = self;
        let service = app.map_request(move |mut req: hyper::Request<Incoming>| {
            let client = trusted.client(peer, tls, req.headers());
            req.extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(client.addr));
            req.extensions_mut().insert(client);
            req.extensions_mut().insert(slot.clone());
            req.map(Body::new)
        });
        let conn = http
            .serve_connection(
                TokioIo::new(StallGuard::new(io, limits.write_stall)),
                TowerToHyperService::new(service),
            )
            .with_upgrades();
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
    }
}
