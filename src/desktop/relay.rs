//! The desktop relay: a browser's WebSocket, already admitted by its ticket, joined to the
//! desktop's VNC server by a socket Sluice opens inside the container's network namespace
//! (nothing is published, no bridge exists). Sluice logs in to the VNC server with the host's
//! password and greets the browser without one (rfb.rs), then passes bytes both ways. Nothing
//! of the browser's request reaches the container. The connection is a live session like an
//! SSH one (method `desktop`): listed, ended by an administrator, checked again against its
//! account and host, bound by the proxy's idle (no input from the person) and maximum
//! lengths, and audited when it opens and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::rfb::{self, ClientMessages, Greeted, Greeting};
use crate::runtime::VNC_PORT;
use crate::sshproxy::Proxy;
use crate::sshproxy::browser::Viewer;
use crate::sshproxy::registry::Meter;
use crate::store::hosts::HostRow;

/// How long each handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Largest chunk read from the VNC server per WebSocket message.
const CHUNK: usize = 64 * 1024;

/// Closes the socket with a reason the page shows (WebSocket close reasons are at most 123
/// bytes).
async fn close(ws: &mut WebSocket, code: u16, reason: &str) {
    let mut reason: String = reason.chars().take(120).collect();
    while reason.len() > 123 {
        reason.pop();
    }
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// 1000: normal; 1011: the server could not go on.
const NORMAL: u16 = 1000;
const FAILED: u16 = 1011;

impl Proxy {
    /// Relays a desktop into `host` for `viewer` until either side ends it.
    pub async fn desktop(self: Arc<Self>, mut ws: WebSocket, host: HostRow, viewer: Viewer) {
        let (Some(user_id), Some(username)) = (host.user_id, host.username.clone()) else {
            return close(&mut ws, FAILED, "the host has no owner").await;
        };
        let vnc = match self.connect_vnc(&host).await {
            Ok(s) => s,
            Err(reason) => return close(&mut ws, FAILED, &reason).await,
        };
        let rest = match greet(&mut ws).await {
            Ok(rest) => rest,
            Err(reason) => {
                tracing::info!(host = %host.short_id, %reason, "a desktop viewer failed the handshake");
                return close(&mut ws, FAILED, &reason).await;
            }
        };
        let live = self
            .open_viewer_session(
                &host,
                user_id,
                username,
                "desktop",
                &viewer,
                "desktop.opened",
            )
            .await;
        let live = match live {
            Ok(live) => live,
            Err(reason) => return close(&mut ws, FAILED, &reason).await,
        };
        let reason = self.splice(ws, vnc, rest, &live.meter).await;
        self.close_viewer_session(live, reason, "desktop.closed")
            .await;
    }

    /// A logged-in connection to the host's VNC server, or why there is none.
    async fn connect_vnc(&self, host: &HostRow) -> Result<tokio::net::TcpStream, String> {
        let spec = match crate::tasks::host_spec(&self.store, host.id).await {
            Ok(Some(spec)) => spec,
            Ok(None) => return Err("no such host".into()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a host for its desktop");
                return Err("the database is unavailable".into());
            }
        };
        let endpoint = self.runtime.desktop_endpoint(&spec).await.map_err(|e| {
            tracing::warn!(host = %host.short_id, error = %e, "no desktop endpoint");
            e.summary()
        })?;
        let addr: SocketAddr = ([127, 0, 0, 1], VNC_PORT).into();
        let mut s = endpoint
            .netns
            .connect_tcp(addr, Duration::from_secs(5))
            .await
            .map_err(|e| {
                tracing::warn!(host = %host.short_id, error = %e, "the desktop's VNC server is unreachable");
                "the desktop is not answering: rebuild the host if this lasts".to_string()
            })?;
        let _ = s.set_nodelay(true);
        match tokio::time::timeout(HANDSHAKE, rfb::login(&mut s, &endpoint.password)).await {
            Ok(Ok(())) => Ok(s),
            Ok(Err(e)) => {
                tracing::warn!(host = %host.short_id, error = %e, "the desktop's VNC server refused Sluice");
                Err("the desktop refused Sluice's login: rebuild the host".into())
            }
            Err(_) => Err("the desktop did not answer in time".into()),
        }
    }

    /// Moves bytes until one side ends or the session must end; answers why it ended.
    async fn splice(
        &self,
        ws: WebSocket,
        vnc: tokio::net::TcpStream,
        first: Vec<u8>,
        meter: &Arc<Meter>,
    ) -> String {
        let (mut to_browser, mut from_browser) = ws.split();
        let (mut from_vnc, mut to_vnc) = vnc.into_split();
        let mut messages = ClientMessages::after_client_init();
        let authed = Instant::now();
        let settings = &self.settings;
        let reason = {
            let up = async {
                if !first.is_empty() {
                    if messages.feed(&first) {
                        meter.touch();
                    }
                    if to_vnc.write_all(&first).await.is_err() {
                        return "the desktop closed the connection".to_string();
                    }
                }
                while let Some(msg) = from_browser.next().await {
                    match msg {
                        Ok(Message::Binary(bytes)) => {
                            if messages.feed(&bytes) {
                                meter.touch();
                            }
                            meter.bytes_in.fetch_add(bytes.len() as u64, Relaxed);
                            if to_vnc.write_all(&bytes).await.is_err() {
                                return "the desktop closed the connection".to_string();
                            }
                        }
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                "the browser closed the desktop".to_string()
            };
            let down = async {
                // Read straight into the buffer each message then owns: no copy.
                let mut buf = bytes::BytesMut::with_capacity(CHUNK);
                loop {
                    buf.reserve(CHUNK);
                    match from_vnc.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return "the desktop closed the connection".to_string(),
                        Ok(n) => {
                            meter.bytes_out.fetch_add(n as u64, Relaxed);
                            let chunk = buf.split().freeze();
                            if to_browser.send(Message::Binary(chunk)).await.is_err() {
                                return "the browser went away".to_string();
                            }
                        }
                    }
                }
            };
            let watch = async {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    if settings
                        .max_session()
                        .is_some_and(|l| authed.elapsed() >= l)
                    {
                        return "session reached its maximum length; open it again".to_string();
                    }
                    if settings
                        .idle_timeout()
                        .is_some_and(|l| meter.idle_for() >= l)
                    {
                        return "session idle too long; open it again".to_string();
                    }
                }
            };
            tokio::select! {
                r = up => r,
                r = down => r,
                r = watch => {
                    meter.end(r.clone());
                    r
                }
                r = meter.ended() => r,
            }
        };
        if let Ok(mut ws) = to_browser.reunite(from_browser) {
            close(&mut ws, NORMAL, &reason).await;
        }
        reason
    }
}

/// Sluice's side of the browser's RFB handshake; answers the session's first bytes.
async fn greet(ws: &mut WebSocket) -> Result<Vec<u8>, String> {
    let run = async {
        ws.send(Message::Binary(bytes::Bytes::from_static(rfb::VERSION)))
            .await
            .map_err(|_| "the browser went away".to_string())?;
        let mut greeting = Greeting::new();
        loop {
            let data = match ws.recv().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    return Err("the browser went away".to_string());
                }
                Some(Ok(_)) => continue,
            };
            match greeting.feed(&data).map_err(|e| e.to_string())? {
                Greeted::More(send) => {
                    if !send.is_empty() {
                        ws.send(Message::Binary(send.into()))
                            .await
                            .map_err(|_| "the browser went away".to_string())?;
                    }
                }
                Greeted::Done { send, rest } => {
                    ws.send(Message::Binary(send.into()))
                        .await
                        .map_err(|_| "the browser went away".to_string())?;
                    return Ok(rest);
                }
            }
        }
    };
    tokio::time::timeout(HANDSHAKE, run)
        .await
        .unwrap_or_else(|_| Err("the browser did not complete the handshake in time".into()))
}
