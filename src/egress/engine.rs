//! The egress engine: one data-plane session per host, attached to the host's network
//! namespace. A session owns the host's TUN; detaching (or the engine dying) closes it, and
//! the host is left with no route at all.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::settings::EgressSettings;
use super::wireguard::{self, Counters, Peer};
use super::{proxy, tun};
use crate::netns::NetNs;

/// Why a host could not be attached to its egress.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("invalid egress settings: {0}")]
    Settings(String),
    #[error("cannot make the TUN device in the host's namespace: {0}")]
    Tun(std::io::Error),
    #[error("cannot open the tunnel's UDP socket: {0}")]
    Udp(std::io::Error),
    /// Stored proxy settings this engine cannot use (validation keeps them out of the API,
    /// but a database edited by hand or written by another release can hold them).
    #[error("the proxy egress cannot be used: {0}")]
    UnusableProxy(String),
}

struct Session {
    egress_id: Uuid,
    stop: CancellationToken,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl Session {
    fn info(&self) -> SessionInfo {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.counters;
        SessionInfo {
            egress_id: self.egress_id,
            tx_packets: c.tx_packets.load(Relaxed),
            rx_packets: c.rx_packets.load(Relaxed),
            tx_bytes: c.tx_bytes.load(Relaxed),
            rx_bytes: c.rx_bytes.load(Relaxed),
            last_handshake: c.last_handshake.load(Relaxed),
            refused_destinations: c.refused_destinations.load(Relaxed),
        }
    }
}

/// A live session, as reported.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub egress_id: Uuid,
    /// Packets and bytes from the host into the egress (tx) and back (rx), since it started.
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Unix seconds of the last handshake, 0 if none yet.
    pub last_handshake: u64,
    /// Connections refused for their destination since the session started.
    pub refused_destinations: u64,
}

/// All sessions of this process.
#[derive(Default)]
pub struct Engine {
    sessions: Mutex<HashMap<Uuid, Session>>,
    /// One test at a time per egress: two throwaway sessions on one key would fight over the
    /// server's idea of where the peer is.
    tests: Mutex<HashMap<Uuid, Arc<Mutex<()>>>>,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches host `host_id` (whose namespace is `ns`) to an egress, replacing any session
    /// it had: the old TUN closes before the new one opens, so nothing flows outside either.
    pub async fn attach(
        &self,
        host_id: Uuid,
        ns: &NetNs,
        egress_id: Uuid,
        settings: &EgressSettings,
    ) -> Result<(), EgressError> {
        let mut sessions = self.sessions.lock().await;
        if let Some(old) = sessions.remove(&host_id) {
            stop_session(old).await;
        }
        let session = match settings {
            EgressSettings::Wireguard(w) => {
                let peer = Peer::from_settings(w)
                    .await
                    .map_err(EgressError::Settings)?;
                let address = w.peer_address.parse().map_err(|_| {
                    EgressError::Settings(format!("bad peer address {}", w.peer_address))
                })?;
                // A proxy egress this host had (or a stopped Sluice left) redirects its TCP.
                proxy::redirect::clear(ns).await;
                let (device, offload) = tun::open_offloaded(ns, address)
                    .await
                    .map_err(EgressError::Tun)?;
                let udp = UdpSocket::bind(("0.0.0.0", 0))
                    .await
                    .map_err(EgressError::Udp)?;
                let counters = Arc::new(Counters::default());
                let stop = CancellationToken::new();
                let task = tokio::spawn({
                    let (counters, stop) = (counters.clone(), stop.clone());
                    async move {
                        match wireguard::run(peer, Arc::new(device), offload, udp, counters, stop)
                            .await
                        {
                            Ok(()) => tracing::info!(host = %host_id, "egress detached"),
                            Err(e) => {
                                tracing::warn!(host = %host_id, error = %e, "egress session ended")
                            }
                        }
                    }
                });
                Session {
                    egress_id,
                    stop,
                    task,
                    counters,
                }
            }
            EgressSettings::Proxy {
                proxy_config,
                dns_server,
                allowed_ranges,
            } => {
                let stop = CancellationToken::new();
                let counters = Arc::new(Counters::default());
                let task = start_proxy(
                    ns,
                    proxy_config,
                    dns_server,
                    allowed_ranges,
                    stop.clone(),
                    counters.clone(),
                    host_id,
                )
                .await?;
                Session {
                    egress_id,
                    stop,
                    task,
                    counters,
                }
            }
        };
        tracing::info!(host = %host_id, egress = %egress_id, "egress attached");
        sessions.insert(host_id, session);
        Ok(())
    }

    /// Ends a host's session, if any; its TUN and route disappear.
    pub async fn detach(&self, host_id: Uuid) {
        let session = self.sessions.lock().await.remove(&host_id);
        if let Some(s) = session {
            stop_session(s).await;
        }
    }

    /// Ends every session (Sluice is stopping; the hosts fail closed until it is back).
    pub async fn detach_all(&self) {
        let sessions: Vec<Session> = self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        for s in sessions {
            stop_session(s).await;
        }
    }

    /// The host's live session, if it has one.
    pub async fn session(&self, host_id: Uuid) -> Option<SessionInfo> {
        let sessions = self.sessions.lock().await;
        sessions
            .get(&host_id)
            .filter(|s| !s.task.is_finished())
            .map(Session::info)
    }

    /// Every live session, by host.
    pub async fn sessions(&self) -> Vec<(Uuid, SessionInfo)> {
        let sessions = self.sessions.lock().await;
        sessions
            .iter()
            .filter(|(_, s)| !s.task.is_finished())
            .map(|(h, s)| (*h, s.info()))
            .collect()
    }
}

/// A data plane of its own for an egress, in a fresh namespace that holds nothing else: what
/// the egress test probes through. It ends when dropped.
pub struct Throwaway {
    pub ns: NetNs,
    stop: CancellationToken,
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Engine {
    /// Waits until no other test of `egress_id` runs; holds it off while the guard lives.
    pub async fn test_turn(&self, egress_id: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .tests
            .lock()
            .await
            .entry(egress_id)
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Brings up `settings`' data plane in a throwaway namespace.
    pub async fn throwaway(&self, settings: &EgressSettings) -> Result<Throwaway, EgressError> {
        let w = match settings {
            EgressSettings::Wireguard(w) => w,
            EgressSettings::Proxy {
                proxy_config,
                dns_server,
                allowed_ranges,
            } => {
                let ns = NetNs::create().await.map_err(EgressError::Tun)?;
                let stop = CancellationToken::new();
                start_proxy(
                    &ns,
                    proxy_config,
                    dns_server,
                    allowed_ranges,
                    stop.clone(),
                    Arc::default(),
                    Uuid::nil(),
                )
                .await?;
                return Ok(Throwaway { ns, stop });
            }
        };
        let peer = Peer::from_settings(w)
            .await
            .map_err(EgressError::Settings)?;
        let address = w
            .peer_address
            .parse()
            .map_err(|_| EgressError::Settings(format!("bad peer address {}", w.peer_address)))?;
        let ns = NetNs::create().await.map_err(EgressError::Tun)?;
        let (device, offload) = tun::open_offloaded(&ns, address)
            .await
            .map_err(EgressError::Tun)?;
        let udp = UdpSocket::bind(("0.0.0.0", 0))
            .await
            .map_err(EgressError::Udp)?;
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                if let Err(e) =
                    wireguard::run(peer, Arc::new(device), offload, udp, Arc::default(), stop).await
                {
                    tracing::debug!(error = %e, "throwaway tunnel ended");
                }
            }
        });
        Ok(Throwaway { ns, stop })
    }
}

/// Opens the TUN in `ns` and runs a proxy data plane on it until `stop`.
async fn start_proxy(
    ns: &NetNs,
    config: &super::settings::ProxyConfig,
    dns_server: &str,
    allowed_ranges: &[ipnet::IpNet],
    stop: CancellationToken,
    counters: Arc<Counters>,
    host_id: Uuid,
) -> Result<JoinHandle<()>, EgressError> {
    let outbound = proxy::Outbound::from_config(config).map_err(EgressError::UnusableProxy)?;
    let destinations = super::destinations::Destinations::allowing(allowed_ranges.to_vec());
    let dns: std::net::IpAddr = dns_server
        .parse()
        .map_err(|_| EgressError::Settings(format!("bad DNS server {dns_server}")))?;
    let address = proxy::TUN_ADDRESS
        .parse()
        .map_err(|_| EgressError::Settings("bad proxy TUN address".into()))?;
    let device = tun::open(ns, address).await.map_err(EgressError::Tun)?;
    // TCP on the kernel's stack where the rules can be written; else on the TUN's.
    let redirect = if proxy::redirect::available() {
        match proxy::redirect::install(ns).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::warn!(host = %host_id, error = %e, "proxy egress: TCP stays on the userspace stack");
                None
            }
        }
    } else {
        None
    };
    Ok(tokio::spawn(async move {
        match proxy::run(
            Arc::new(device),
            redirect,
            outbound,
            destinations,
            dns,
            counters,
            stop,
        )
        .await
        {
            Ok(()) => tracing::info!(host = %host_id, "proxy egress detached"),
            Err(e) => tracing::warn!(host = %host_id, error = %e, "proxy egress session ended"),
        }
    }))
}

async fn stop_session(s: Session) {
    s.stop.cancel();
    // Waiting for the task closes the TUN before anything else happens to the namespace.
    let _ = s.task.await;
}
