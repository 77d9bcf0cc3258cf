//! SSH proxy: the one port (:2222) users reach their hosts through. A connection's login
//! picks the host and proves the person (login.rs); the proxy then logs in to the host's own
//! sshd from inside the container's network namespace (upstream.rs) and bridges every channel
//! (channels/). Around that: the proxy's host key (hostkey.rs), per-source limits
//! (limits.rs), one-time entry credentials (credentials.rs) and the live-session registry
//! (registry.rs), and the terminal in the browser as a session like the others (browser.rs).
//! This file accepts connections and watches each one's clock: login time,
//! idle time and total length.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::keys::ssh_key::PrivateKey;
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::SshSettings;
use crate::runtime::HostRuntime;
use crate::store::Store;

pub mod browser;
pub mod channels;
pub mod credentials;
pub mod hostkey;
pub mod limits;
pub mod login;
pub mod registry;
pub mod server;
pub mod upstream;

use crate::auth::attempts::Attempts;
use credentials::EntryCredentials;
use limits::ConnectionCounter;
use registry::{Meter, Metered, Sessions};

/// How long a session being ended may take to say goodbye before its socket is cut.
const GOODBYE: Duration = Duration::from_secs(3);
/// How often live sessions are checked against what their login rested on.
const REVALIDATE_EVERY: Duration = Duration::from_secs(3);
/// Connections not yet logged in, across all sources: each costs a key exchange and a
/// handshake timer, so a flood of them is capped whoever sends it.
pub const MAX_UNAUTHENTICATED: usize = 512;
/// New connections per source: a burst, then a steady rate, together under the 20 a second
/// that ssh-audit's DHEat test (CVE-2002-20001) deems safe. A key-exchange flood from one
/// address is turned away at accept, before any key exchange.
const NEW_PER_SOURCE_BURST: u32 = 16;
const NEW_PER_SOURCE_PER_SECOND: u32 = 5;
/// What a throttled client reads before the connection closes (OpenSSH shows lines sent
/// before the version string only in debug output; the log says more).
const THROTTLED: &[u8] =
    b"Too many new connections from your address; try again in a few seconds\r\n";

/// What the proxy offers: only algorithms without known weaknesses. No 2048-bit groups
/// (group14, and group exchange, whose moduli russh may pick at 2048 bits), no SHA-1, only
/// encrypt-then-MAC MACs, and no chacha20-poly1305 (with a peer that lacks strict kex it is
/// open to Terrapin, CVE-2023-48795); AES-GCM comes first. The strict-kex markers and
/// ext-info stay.
fn preferred_algorithms() -> russh::Preferred {
    use russh::{cipher, kex, mac};
    use std::borrow::Cow;
    const KEX: &[kex::Name] = &[
        kex::MLKEM768X25519_SHA256,
        kex::CURVE25519,
        kex::CURVE25519_PRE_RFC_8731,
        kex::DH_G16_SHA512,
        kex::DH_G18_SHA512,
        kex::EXTENSION_SUPPORT_AS_SERVER,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ];
    const CIPHERS: &[cipher::Name] = &[
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
        cipher::AES_256_CTR,
        cipher::AES_192_CTR,
        cipher::AES_128_CTR,
    ];
    const MACS: &[mac::Name] = &[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM];
    russh::Preferred {
        kex: Cow::Borrowed(KEX),
        cipher: Cow::Borrowed(CIPHERS),
        mac: Cow::Borrowed(MACS),
        ..russh::Preferred::DEFAULT
    }
}

/// The SSH proxy and what the API shares with it.
pub struct Proxy {
    pub(crate) store: Store,
    pub(crate) runtime: Arc<dyn HostRuntime>,
    pub settings: SshSettings,
    pub credentials: EntryCredentials,
    pub sessions: Arc<Sessions>,
    /// Password-attempt budgets, shared with the API's login, short-link and bootstrap.
    attempts: Arc<Attempts>,
    connections: ConnectionCounter,
    /// Channels open per account, across its connections.
    account_channels: limits::AccountChannels,
    /// Slots of connections still in their handshake or login.
    unauthenticated: Arc<tokio::sync::Semaphore>,
    /// New connections per source address.
    new_connections: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    host_key: PrivateKey,
    config: Arc<russh::server::Config>,
    /// Base URL of the web API, for the hint on stopped hosts.
    public_url: Option<String>,
    /// Where terminal sessions are recorded, when the install records them.
    recorder: std::sync::OnceLock<Arc<crate::recordings::Recorder>>,
    /// What re-checks the sign-ins browser terminals and desktops rest on.
    viewers: std::sync::OnceLock<crate::auth::Authenticator>,
}

impl Proxy {
    pub fn new(
        store: Store,
        runtime: Arc<dyn HostRuntime>,
        settings: SshSettings,
        host_key: PrivateKey,
        public_url: Option<String>,
        attempts: Arc<Attempts>,
    ) -> Arc<Self> {
        let config = russh::server::Config {
            server_id: SshId::Standard("SSH-2.0-Sluice".into()),
            methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
            auth_rejection_time: Duration::from_secs(1),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key.clone()],
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
            nodelay: true,
            window_size: channels::WINDOW,
            maximum_packet_size: channels::MAX_PACKET,
            channel_buffer_size: channels::BUFFERED_MESSAGES,
            max_auth_attempts: 6,
            preferred: preferred_algorithms(),
            ..Default::default()
        };
        Arc::new(Self {
            store,
            runtime,
            connections: ConnectionCounter::new(settings.max_connections_per_source),
            account_channels: limits::AccountChannels::new(
                settings.max_channels_per_account as usize,
            ),
            unauthenticated: Arc::new(tokio::sync::Semaphore::new(MAX_UNAUTHENTICATED)),
            new_connections: governor::RateLimiter::keyed(
                governor::Quota::per_second(
                    std::num::NonZeroU32::new(NEW_PER_SOURCE_PER_SECOND)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                )
                .allow_burst(
                    std::num::NonZeroU32::new(NEW_PER_SOURCE_BURST)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                ),
            ),
            settings,
            credentials: EntryCredentials::default(),
            sessions: Arc::default(),
            attempts,
            host_key,
            config: Arc::new(config),
            public_url,
            recorder: std::sync::OnceLock::new(),
            viewers: std::sync::OnceLock::new(),
        })
    }

    /// Ends browser terminals and desktops when their viewer's sign-in ends, checked by
    /// `auth` (the API's own authenticator).
    pub fn check_viewers_with(&self, auth: crate::auth::Authenticator) {
        let _ = self.viewers.set(auth);
    }

    /// Records terminal sessions from now on.
    pub fn record_with(&self, recorder: Arc<crate::recordings::Recorder>) {
        let _ = self.recorder.set(recorder);
    }

    /// The recorder, when the install records sessions.
    pub fn recorder(&self) -> Option<&Arc<crate::recordings::Recorder>> {
        self.recorder.get()
    }

    /// The channel budget of a new connection of `account`: its own, and its account's.
    pub(crate) fn channel_budget(&self, account: uuid::Uuid) -> limits::ChannelBudget {
        limits::ChannelBudget::new(
            self.settings.max_channels as usize,
            self.account_channels.of(account),
            self.settings.max_channels_per_account as usize,
        )
    }

    /// The `known_hosts` line pinning the proxy's key as `host:port`.
    pub fn known_hosts_line(&self, host: &str, port: u16) -> String {
        hostkey::known_hosts_line(&self.host_key, host, port)
    }

    /// The short-link command for a host, when the public URL is known.
    pub fn entry_command(&self, short_id: &str) -> Option<String> {
        self.public_url.as_ref().map(|u| {
            format!(
                "curl -sSf {}/entry/{short_id} | bash",
                u.trim_end_matches('/')
            )
        })
    }

    /// Accepts connections on `listener` until `stop` is cancelled; live sessions are then
    /// told Sluice is stopping.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        let mut accepted: u64 = 0;
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "SSH accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            accepted = accepted.wrapping_add(1);
            if accepted.is_multiple_of(1024) {
                // Forget sources whose budget has refilled, so the map stays bounded.
                self.new_connections.retain_recent();
            }
            if self.new_connections.check_key(&peer.ip()).is_err() {
                tracing::debug!(source = %peer.ip(), "SSH connections arriving too fast from one source: refused");
                let _ = tcp.try_write(THROTTLED);
                drop(tcp);
                continue;
            }
            let Some(slot) = self.connections.acquire(peer.ip()) else {
                tracing::warn!(source = %peer.ip(), "too many SSH connections from one source: refused");
                drop(tcp);
                continue;
            };
            let Ok(unauthenticated) = self.unauthenticated.clone().try_acquire_owned() else {
                tracing::warn!(
                    max = MAX_UNAUTHENTICATED,
                    "too many SSH connections still logging in: refused"
                );
                drop(tcp);
                continue;
            };
            let proxy = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                proxy.connection(tcp, peer, stop, unauthenticated).await;
                drop(slot);
            });
        }
    }

    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        stop: CancellationToken,
        unauthenticated: tokio::sync::OwnedSemaphorePermit,
    ) {
        let mut unauthenticated = Some(unauthenticated);
        let _ = tcp.set_nodelay(true);
        let meter = Meter::new();
        let handler = server::ClientConn::new(self.clone(), peer, meter.clone());
        let upstream = handler.upstream.clone();
        let session = handler.session.clone();
        let stream = Metered::new(tcp, meter.clone());
        let handshake = self.settings.handshake_timeout();
        let running = match tokio::time::timeout(
            handshake,
            russh::server::run_stream(self.config.clone(), stream, handler),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(source = %peer, error = %e, "SSH connection failed before the handshake");
                return;
            }
            Err(_) => return,
        };
        let handle = running.handle();
        tokio::pin!(running);
        let started = Instant::now();
        let mut ending: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut running => break,
                reason = meter.ended(), if ending.is_none() => {
                    tracing::info!(source = %peer, %reason, "ending SSH session");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        handle.disconnect(russh::Disconnect::ByApplication, reason, "en".into()),
                    ).await;
                    ending = Some(Instant::now());
                }
                _ = stop.cancelled(), if ending.is_none() => meter.end("Sluice is shutting down"),
                _ = tick.tick() => {
                    if unauthenticated.is_some() && meter.authed_at().is_some() {
                        // Logged in: no longer counted among the connections logging in.
                        unauthenticated = None;
                    }
                    if let Some(t) = ending {
                        if t.elapsed() >= GOODBYE {
                            meter.cut();
                        }
                        continue;
                    }
                    if let Some(reason) = self.overdue(&meter, started, &upstream) {
                        meter.end(reason);
                    }
                }
            }
        }
        if let Some(up) = upstream.get() {
            up.close().await;
        }
        if let Some(info) = session.get() {
            self.record_end(info, &meter, "ssh.session_closed").await;
        }
    }

    /// Checks every live session's ground (account, host, the password or key it logged in
    /// with) every [`REVALIDATE_EVERY`], whoever changed it (API, CLI, expiry sweep), and
    /// ends the sessions that lost it, with the reason.
    pub async fn revalidate(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(REVALIDATE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Sessions of one account on one host share one read of their ground.
            let mut by_ground: std::collections::HashMap<_, Vec<_>> = Default::default();
            for (info, proof) in self.sessions.proofs() {
                by_ground
                    .entry((info.user_id, info.host_id))
                    .or_default()
                    .push((info, proof));
            }
            for ((user_id, host_id), sessions) in by_ground {
                let ground = match login::Ground::load(&self.store, user_id, host_id).await {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot re-check live sessions");
                        continue;
                    }
                };
                for (info, proof) in sessions {
                    let mut refusal = ground.refuses(&proof);
                    if refusal.is_none()
                        && let login::Proof::Browser { viewer } = &proof
                        && let Some(auth) = self.viewers.get()
                    {
                        match auth.still_holds(viewer).await {
                            Ok(()) => {}
                            Err(crate::auth::AuthError::Store(e)) => {
                                tracing::warn!(error = %e, "cannot re-check a viewer's sign-in");
                            }
                            Err(_) => {
                                refusal = Some(format!(
                                    "the sign-in of {} ended (signed out, password changed, keys rotated or token revoked)",
                                    viewer.actor()
                                ));
                            }
                        }
                    }
                    if let Some(reason) = refusal {
                        tracing::info!(session = %info.id, host = %info.short_id, %reason, "session no longer allowed");
                        self.sessions.end(info.id, &reason);
                    }
                }
            }
        }
    }

    /// The audit record of a session that ended: how long, how many bytes, and why. `action`:
    /// `ssh.session_closed`, or `desktop.closed` for a desktop.
    pub(crate) async fn record_end(
        &self,
        info: &registry::SessionInfo,
        meter: &Meter,
        action: &'static str,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let seconds = meter
            .authed_at()
            .map(|t| t.elapsed().as_secs())
            .unwrap_or(0);
        let kind = action.split('.').next().unwrap_or("ssh");
        let event =
            crate::events::NewEvent::new(format!("{kind}:{}", info.short_id), action, "host")
                .target(info.host_id)
                .host(info.host_id)
                .user(Some(info.user_id))
                .source(
                    info.source
                        .parse::<SocketAddr>()
                        .ok()
                        .map(|a| a.ip().to_string()),
                )
                .details(serde_json::json!({
                    "session_id": info.id,
                    "short_id": info.short_id,
                    "seconds": seconds,
                    "bytes_in": meter.bytes_in.load(Relaxed),
                    "bytes_out": meter.bytes_out.load(Relaxed),
                    "reason": meter.end_reason(),
                }));
        crate::events::record_alone(&self.store, event).await;
    }

    /// Why the connection must end now, if it must.
    fn overdue(
        &self,
        meter: &Meter,
        started: Instant,
        upstream: &std::sync::OnceLock<Arc<upstream::Upstream>>,
    ) -> Option<String> {
        let Some(authed) = meter.authed_at() else {
            return (started.elapsed() >= self.settings.handshake_timeout()).then(|| {
                format!(
                    "login not completed within {} s",
                    self.settings.handshake_timeout_secs
                )
            });
        };
        if let Some(limit) = self.settings.max_session()
            && authed.elapsed() >= limit
        {
            return Some(format!(
                "session reached its maximum length of {}; log in again",
                human(limit)
            ));
        }
        if let Some(limit) = self.settings.idle_timeout()
            && meter.idle_for() >= limit
        {
            return Some(format!("session idle for {}; log in again", human(limit)));
        }
        if let Some(conn) = upstream.get().and_then(|u| u.connected())
            && conn.handle.is_closed()
        {
            return Some("the host closed the connection (it stopped or restarted)".into());
        }
        None
    }
}

/// "90 s", "5 min", "2 h".
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}
