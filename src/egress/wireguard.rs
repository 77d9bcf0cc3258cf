//! A WireGuard tunnel: boringtun's noise state machine between the host's TUN (inside its
//! namespace) and a UDP socket in Sluice's own namespace, talking to the provider's endpoint.
//! Timers are driven every 100 ms, so handshakes, rekeys and keepalives happen on time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::settings::WireguardSettings;

/// Largest datagram or packet handled (with room for WireGuard's overhead).
const BUF: usize = 65536;
/// How often the noise timers are driven.
const TICK: Duration = Duration::from_millis(100);
/// Keepalive, so NAT state on the way to the endpoint stays up.
const KEEPALIVE_SECS: u16 = 25;

/// Keys and peer of a tunnel, decoded.
pub struct Peer {
    pub private: StaticSecret,
    pub public: PublicKey,
    pub preshared: Option<[u8; 32]>,
    pub endpoint: SocketAddr,
}

fn key(b64: &str, what: &str) -> Result<[u8; 32], String> {
    B64.decode(b64.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{what} is not base64 of 32 bytes"))
}

impl Peer {
    /// Decodes the stored settings and resolves the endpoint (from Sluice's own namespace:
    /// the endpoint is the provider's server, not a destination of the host).
    pub async fn from_settings(w: &WireguardSettings) -> Result<Peer, String> {
        let endpoint = tokio::net::lookup_host(&w.endpoint)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", w.endpoint))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{} has no IPv4 address", w.endpoint))?;
        Ok(Peer {
            private: StaticSecret::from(key(&w.private_key, "the private key")?),
            public: PublicKey::from(key(&w.public_key, "the server's public key")?),
            preshared: w
                .preshared_key
                .as_deref()
                .map(|k| key(k, "the preshared key"))
                .transpose()?,
            endpoint,
        })
    }
}

/// Counters of a running tunnel.
#[derive(Debug, Default)]
pub struct Counters {
    pub tx_packets: AtomicU64,
    pub rx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Unix seconds of the last completed handshake (0: none yet).
    pub last_handshake: AtomicU64,
}

/// Where packets come from and go to on the host side. The TUN in production; tests may use
/// anything that moves whole IP packets.
pub trait PacketIo: Send + Sync + 'static {
    fn recv<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<usize>> + Send + 'a>>;
    fn send<'a>(
        &'a self,
        packet: &'a [u8],
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<usize>> + Send + 'a>>;
}

impl PacketIo for tun_rs::AsyncDevice {
    fn recv<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<usize>> + Send + 'a>> {
        Box::pin(tun_rs::AsyncDevice::recv(self, buf))
    }
    fn send<'a>(
        &'a self,
        packet: &'a [u8],
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<usize>> + Send + 'a>> {
        Box::pin(tun_rs::AsyncDevice::send(self, packet))
    }
}

/// Why a tunnel stopped.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("the host's TUN device is gone: {0}")]
    Tun(std::io::Error),
    #[error("UDP socket error: {0}")]
    Udp(std::io::Error),
}

/// Runs the tunnel until `stop` is cancelled or the TUN goes away.
pub async fn run(
    peer: Peer,
    tun: Arc<dyn PacketIo>,
    udp: UdpSocket,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> Result<(), TunnelError> {
    let index = rand::random::<u32>() >> 8;
    let mut tunn = Tunn::new(
        peer.private,
        peer.public,
        peer.preshared,
        Some(KEEPALIVE_SECS),
        index,
        None,
    );
    let endpoint = peer.endpoint;
    let mut from_tun = vec![0u8; BUF];
    let mut from_net = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Start the handshake at once rather than on the first packet.
    if let TunnResult::WriteToNetwork(b) = tunn.format_handshake_initiation(&mut out, false) {
        udp.send_to(b, endpoint).await.map_err(TunnelError::Udp)?;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            n = tun.recv(&mut from_tun) => {
                let n = n.map_err(TunnelError::Tun)?;
                counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                counters.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                match tunn.encapsulate(&from_tun[..n], &mut out) {
                    TunnResult::WriteToNetwork(b) => {
                        // A lost datagram is WireGuard's to recover; keep going.
                        let _ = udp.send_to(b, endpoint).await;
                    }
                    TunnResult::Err(e) => tracing::debug!(?e, "encapsulate"),
                    _ => {}
                }
            }
            r = udp.recv_from(&mut from_net) => {
                let (n, from) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(error = %e, "udp receive");
                        continue;
                    }
                };
                if from != endpoint {
                    continue;
                }
                let mut result = tunn.decapsulate(Some(from.ip()), &from_net[..n], &mut out);
                loop {
                    match result {
                        TunnResult::WriteToNetwork(b) => {
                            let _ = udp.send_to(b, endpoint).await;
                            // Flush packets queued while the handshake was under way.
                            result = tunn.decapsulate(None, &[], &mut out);
                        }
                        TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                            counters.rx_packets.fetch_add(1, Ordering::Relaxed);
                            counters.rx_bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
                            tun.send(p).await.map_err(TunnelError::Tun)?;
                            break;
                        }
                        TunnResult::Err(e) => {
                            tracing::debug!(?e, "decapsulate");
                            break;
                        }
                        TunnResult::Done => break,
                    }
                }
                if let (Some(since), ..) = tunn.stats() {
                    let at = time::OffsetDateTime::now_utc() - since;
                    counters.last_handshake.store(at.unix_timestamp().max(0) as u64, Ordering::Relaxed);
                }
            }
            _ = tick.tick() => {
                match tunn.update_timers(&mut out) {
                    TunnResult::WriteToNetwork(b) => {
                        let _ = udp.send_to(b, endpoint).await;
                    }
                    TunnResult::Err(e) => tracing::debug!(?e, "timers"),
                    _ => {}
                }
            }
        }
    }
}
