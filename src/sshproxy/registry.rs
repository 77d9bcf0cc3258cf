//! Live sessions: who is connected to which host, since when, and how many bytes crossed,
//! with a way to end one. Each connection's socket is wrapped in a [`Metered`] stream that
//! counts bytes and can be cut, so ending a session never depends on the client's good will.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use utoipa::ToSchema;
use uuid::Uuid;

/// Byte counts and the cut switch of one connection, shared by its stream and the registry.
#[derive(Default)]
pub struct Meter {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    cut: AtomicBool,
    reader: Mutex<Option<Waker>>,
    /// Channel traffic (not keepalives) seen last, in ms since `origin`.
    last_activity_ms: AtomicU64,
    origin: Option<Instant>,
    /// Wakes whoever waits for the session to be ended (`end` was called).
    ended: Notify,
    end_reason: Mutex<Option<String>>,
    authed_at: std::sync::OnceLock<Instant>,
}

impl Meter {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Some(Instant::now()),
            ..Default::default()
        })
    }

    /// Closes the socket under the session: reads see end of file from now on.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Some(w) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }

    /// Asks the connection to end with `reason` shown to the client.
    pub fn end(&self, reason: impl Into<String>) {
        *self.end_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.into());
        self.ended.notify_one();
    }

    /// Waits until [`Meter::end`] is called; answers the reason.
    pub async fn ended(&self) -> String {
        loop {
            if let Some(r) = self.end_reason() {
                return r;
            }
            self.ended.notified().await;
        }
    }

    /// Why the session was ended by Sluice, if it was (otherwise the client left).
    pub fn end_reason(&self) -> Option<String> {
        self.end_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notes that the client logged in.
    pub fn authenticated(&self) {
        let _ = self.authed_at.set(Instant::now());
        self.touch();
    }

    /// When the client logged in, if it did.
    pub fn authed_at(&self) -> Option<Instant> {
        self.authed_at.get().copied()
    }

    /// Notes traffic on a channel (for the idle timeout).
    pub fn touch(&self) {
        if let Some(o) = self.origin {
            self.last_activity_ms
                .store(o.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// How long since the last channel traffic.
    pub fn idle_for(&self) -> std::time::Duration {
        let Some(o) = self.origin else {
            return std::time::Duration::ZERO;
        };
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        o.elapsed()
            .saturating_sub(std::time::Duration::from_millis(last))
    }
}

/// A stream that counts bytes into a [`Meter`] and reads end of file once the meter is cut.
pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, meter: Arc<Meter>) -> Self {
        Self { inner, meter }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.meter.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        *self.meter.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.meter.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.meter.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.meter.bytes_out.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A live session as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionInfo {
    pub id: Uuid,
    /// The account that logged in.
    pub username: String,
    pub user_id: Uuid,
    pub host_id: Uuid,
    pub short_id: String,
    /// `password`, `publickey` or `entry` (a one-time entry credential).
    pub method: String,
    /// The client's address and port.
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
}

struct Live {
    info: SessionInfo,
    meter: Arc<Meter>,
    proof: super::login::Proof,
}

/// The proxy's live sessions.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<Uuid, Live>>,
}

/// A registered session; dropping it removes the session from the registry.
pub struct Registered {
    id: Uuid,
    sessions: Arc<Sessions>,
}

impl Sessions {
    pub fn register(
        self: &Arc<Self>,
        info: SessionInfo,
        meter: Arc<Meter>,
        proof: super::login::Proof,
    ) -> Registered {
        let id = info.id;
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Live { info, meter, proof });
        Registered {
            id,
            sessions: self.clone(),
        }
    }

    /// Registers a session unless its account already has `max` live ones (checked and added
    /// under one lock, so concurrent logins cannot overshoot); otherwise the sentence saying so.
    pub fn register_within(
        self: &Arc<Self>,
        info: SessionInfo,
        meter: Arc<Meter>,
        proof: super::login::Proof,
        max: usize,
    ) -> Result<Registered, String> {
        let id = info.id;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let of_account = live
            .values()
            .filter(|l| l.info.user_id == info.user_id && l.meter.end_reason().is_none())
            .count();
        if of_account >= max {
            return Err(format!(
                "account {} already has {max} live sessions, the most one account may have: end one first",
                info.username
            ));
        }
        live.insert(id, Live { info, meter, proof });
        Ok(Registered {
            id,
            sessions: self.clone(),
        })
    }

    /// Every live session, oldest first, with current byte counts. A session already told to
    /// end is not listed: it is on its way out (its bridge closes it within moments), and an
    /// administrator who just ended it sees it gone.
    pub fn list(&self) -> Vec<SessionInfo> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<SessionInfo> = live
            .values()
            .filter(|l| l.meter.end_reason().is_none())
            .map(|l| {
                let mut i = l.info.clone();
                i.bytes_in = l.meter.bytes_in.load(Ordering::Relaxed);
                i.bytes_out = l.meter.bytes_out.load(Ordering::Relaxed);
                i
            })
            .collect();
        all.sort_by_key(|i| i.id);
        all
    }

    /// Ends a session with `reason`; false when there is no such session.
    pub fn end(&self, id: Uuid, reason: &str) -> Option<SessionInfo> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let l = live.get(&id)?;
        l.meter.end(reason);
        Some(l.info.clone())
    }

    /// Ends every session of `host_id` (the host stopped or was deleted).
    pub fn end_host(&self, host_id: Uuid, reason: &str) -> usize {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for l in live.values().filter(|l| l.info.host_id == host_id) {
            l.meter.end(reason);
            n += 1;
        }
        n
    }

    /// Every live session with what its login rested on, for [`super::Proxy::revalidate`].
    pub fn proofs(&self) -> Vec<(SessionInfo, super::login::Proof)> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.values()
            .map(|l| (l.info.clone(), l.proof.clone()))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}
