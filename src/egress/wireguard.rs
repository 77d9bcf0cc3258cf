//! A WireGuard tunnel: boringtun's noise state machine between the host's TUN (inside its
//! namespace) and a UDP socket in Sluice's own namespace, talking to the provider's endpoint.
//! Timers are driven every 100 ms, so handshakes, rekeys and keepalives happen on time.
//!
//! Each direction runs on a task of its own, so both cores work, and moves packets in batches
//! through buffers allocated once per session: from the TUN with its offloads on (one read
//! hands over a whole TCP burst, split here into packets) and out as one UDP send of many
//! equal-sized datagrams (UDP GSO, quinn-udp); in, many datagrams per receive (recvmmsg and
//! UDP GRO), decrypted, and written to the TUN coalesced again once the socket is drained (or
//! a batch is full). The noise state is shared under a lock taken per packet, never across an
//! await.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
/// Packets one read from the TUN may split into (a 64 KiB burst of 1420-byte segments is 47).
const BATCH: usize = tun_rs::IDEAL_BATCH_SIZE;
/// Room for one packet and WireGuard's 32 bytes of header and tag, with padding.
const SLOT: usize = super::tun::MTU as usize + 64;
/// UDP receive buffers per batch, each holding many coalesced datagrams (GRO).
const RECV_BUFFERS: usize = 4;
/// Most datagrams sent in one UDP GSO burst. They leave back to back, unpaced: a userspace
/// server reading one datagram per system call (Debian's wireguard-go) dropped bursts of 64
/// from its socket buffer and TCP inside the tunnel collapsed to a quarter; with 8 the bench
/// measured the best throughput against both its servers (16 was close behind).
const GSO_SEGMENTS: usize = 8;
/// The socket's receive buffer (forced past the system's default maximum where Sluice may):
/// room for bursts from the endpoint while the other direction has the core. The send buffer
/// keeps its default, so a bulk upload does not queue more in front of everything else.
const RECEIVE_BUFFER: usize = 4 << 20;
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
    /// Connections and datagram flows refused for their destination (a proxy egress's
    /// internal addresses).
    pub refused_destinations: AtomicU64,
}

/// Why a tunnel stopped.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("the host's TUN device is gone: {0}")]
    Tun(std::io::Error),
    #[error("UDP socket error: {0}")]
    Udp(std::io::Error),
}

/// The tunnel's shared parts: the noise state, the socket and its batching state, the TUN.
struct Shared {
    tunn: Mutex<Tunn>,
    udp: UdpSocket,
    state: quinn_udp::UdpSocketState,
    tun: Arc<tun_rs::AsyncDevice>,
    /// Whether the TUN carries virtio headers (offloads on): reads and writes go in batches.
    offload: bool,
    endpoint: SocketAddr,
    counters: Arc<Counters>,
}

impl Shared {
    fn tunn(&self) -> std::sync::MutexGuard<'_, Tunn> {
        self.tunn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `contents` to the endpoint: one datagram, or, with `segment`, equal-sized
    /// datagrams of that length (the last may be shorter) in one system call. A lost
    /// datagram is WireGuard's to recover; only a broken socket is an error.
    async fn send(&self, contents: &[u8], segment: Option<usize>) {
        let transmit = quinn_udp::Transmit {
            destination: self.endpoint,
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        loop {
            if self.udp.writable().await.is_err() {
                return;
            }
            match self.udp.try_io(tokio::io::Interest::WRITABLE, || {
                self.state.send((&self.udp).into(), &transmit)
            }) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "udp send");
                    return;
                }
            }
        }
    }

    /// Records the time of the last handshake.
    fn note_handshake(&self, tunn: &Tunn) {
        if let (Some(since), ..) = tunn.stats() {
            let at = time::OffsetDateTime::now_utc() - since;
            self.counters
                .last_handshake
                .store(at.unix_timestamp().max(0) as u64, Ordering::Relaxed);
        }
    }
}

/// The datagram boringtun makes of a `len`-byte packet: its 16 bytes of header and 16 of tag
/// around the packet, unpadded (at most SLOT). A guess that is too long would end every GSO
/// batch after one datagram.
fn sealed_len(len: usize) -> usize {
    32 + len
}

/// Datagrams being gathered for one UDP GSO send: equal-sized ones back to back, ended by a
/// shorter one or a different size.
struct Gather {
    buf: Vec<u8>,
    segment: usize,
    count: usize,
    max: usize,
}

impl Gather {
    fn new(max_segments: usize) -> Gather {
        let max = max_segments.clamp(1, GSO_SEGMENTS);
        Gather {
            buf: Vec::with_capacity(max * SLOT),
            segment: 0,
            count: 0,
            max,
        }
    }

    /// Whether a datagram of `len` bytes can join the batch (else it must be sent first).
    fn fits(&self, len: usize) -> bool {
        self.count == 0
            || (self.count < self.max
                && len <= self.segment
                && self.buf.len().is_multiple_of(self.segment))
    }

    /// Room for the next datagram, at most SLOT bytes; `commit` says how long it was.
    fn room(&mut self) -> &mut [u8] {
        let at = self.buf.len();
        self.buf.resize(at + SLOT, 0);
        &mut self.buf[at..]
    }

    fn commit(&mut self, len: usize) {
        let at = self.buf.len() - SLOT;
        self.buf.truncate(at + len);
        if self.count == 0 {
            self.segment = len;
        }
        self.count += 1;
    }

    fn abandon(&mut self) {
        let at = self.buf.len() - SLOT;
        self.buf.truncate(at);
    }

    async fn flush(&mut self, shared: &Shared) {
        if self.count > 0 {
            shared.send(&self.buf, Some(self.segment)).await;
        }
        self.buf.clear();
        self.count = 0;
        self.segment = 0;
    }
}

/// The host's packets out: read from the TUN (a batch at a time with offloads), encrypt,
/// send in GSO batches.
async fn outgoing(shared: Arc<Shared>) -> Result<(), TunnelError> {
    let mut original = vec![0u8; tun_rs::VIRTIO_NET_HDR_LEN + BUF];
    let mut packets = vec![vec![0u8; BUF.min(SLOT + 64)]; if shared.offload { BATCH } else { 1 }];
    let mut sizes = vec![0usize; packets.len()];
    let mut gather = Gather::new(shared.state.max_gso_segments());
    loop {
        let n = if shared.offload {
            shared
                .tun
                .recv_multiple(&mut original, &mut packets, &mut sizes, 0)
                .await
                .map_err(TunnelError::Tun)?
        } else {
            sizes[0] = shared
                .tun
                .recv(&mut packets[0])
                .await
                .map_err(TunnelError::Tun)?;
            1
        };
        let mut bytes = 0u64;
        for (packet, &len) in packets.iter().zip(&sizes).take(n) {
            bytes += len as u64;
            if !gather.fits(sealed_len(len)) {
                gather.flush(&shared).await;
            }
            let result = {
                let room = gather.room();
                match shared.tunn().encapsulate(&packet[..len], room) {
                    TunnResult::WriteToNetwork(b) => Ok(b.len()),
                    TunnResult::Err(e) => Err(Some(e)),
                    _ => Err(None),
                }
            };
            match result {
                Ok(len) if gather.count == 0 || len <= gather.segment => {
                    gather.commit(len);
                    if len < gather.segment || gather.count >= gather.max {
                        gather.flush(&shared).await;
                    }
                }
                Ok(len) => {
                    // Longer than the batch's datagrams (no session yet: a handshake went
                    // instead): sent on its own.
                    let at = gather.buf.len() - SLOT;
                    let one = gather.buf[at..at + len].to_vec();
                    gather.abandon();
                    gather.flush(&shared).await;
                    shared.send(&one, None).await;
                }
                Err(e) => {
                    gather.abandon();
                    if let Some(e) = e {
                        tracing::debug!(?e, "encapsulate");
                    }
                }
            }
        }
        gather.flush(&shared).await;
        shared
            .counters
            .tx_packets
            .fetch_add(n as u64, Ordering::Relaxed);
        shared.counters.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The endpoint's datagrams in: many per receive, decrypted, written to the TUN (coalesced
/// again with offloads).
async fn incoming(shared: Arc<Shared>) -> Result<(), TunnelError> {
    let header = if shared.offload {
        tun_rs::VIRTIO_NET_HDR_LEN
    } else {
        0
    };
    let mut datagrams = vec![vec![0u8; BUF]; RECV_BUFFERS];
    let mut metas = vec![quinn_udp::RecvMeta::default(); RECV_BUFFERS];
    // Decrypted packets, each after room for the TUN's virtio header.
    let mut packets: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; header + SLOT]).collect();
    let mut gro = tun_rs::GROTable::default();
    let mut reply = vec![0u8; SLOT];
    // Packets decrypted and not yet written. Everything queued on the socket is taken before
    // the TUN is written (up to a batch): without UDP GRO on the path (veth, many NICs) one
    // receive holds only RECV_BUFFERS datagrams, and the kernel's cost is per TUN write.
    let mut ready = 0;
    loop {
        let received = {
            let mut slices: Vec<IoSliceMut<'_>> =
                datagrams.iter_mut().map(|d| IoSliceMut::new(d)).collect();
            shared.udp.try_io(tokio::io::Interest::READABLE, || {
                shared
                    .state
                    .recv((&shared.udp).into(), &mut slices, &mut metas)
            })
        };
        let count = match received {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::debug!(error = %e, "udp receive");
                }
                write_packets(&shared, &mut packets, ready, header, &mut gro).await?;
                ready = 0;
                // Fails only when the socket cannot be polled at all: the session ends.
                shared.udp.readable().await.map_err(TunnelError::Udp)?;
                continue;
            }
        };
        for (meta, data) in metas.iter().zip(&datagrams).take(count) {
            if meta.addr != shared.endpoint {
                continue;
            }
            let stride = meta.stride.max(1);
            for datagram in data[..meta.len].chunks(stride) {
                if ready == packets.len() {
                    write_packets(&shared, &mut packets, ready, header, &mut gro).await?;
                    ready = 0;
                }
                let slot = &mut packets[ready];
                slot.resize(header + SLOT, 0);
                let base = slot[header..].as_ptr() as usize;
                // Where in the slot the packet landed and how long it is, and what must go
                // back to the endpoint (handshake messages, packets held during one).
                let (decrypted, replies) = {
                    let mut tunn = shared.tunn();
                    let mut replies = Vec::new();
                    let decrypted =
                        match tunn.decapsulate(Some(meta.addr.ip()), datagram, &mut slot[header..])
                        {
                            TunnResult::WriteToTunnelV4(p, _)
                            | TunnResult::WriteToTunnelV6(p, _) => {
                                Some((p.as_ptr() as usize - base, p.len()))
                            }
                            TunnResult::WriteToNetwork(b) => {
                                replies.push(b.to_vec());
                                None
                            }
                            TunnResult::Err(e) => {
                                tracing::debug!(?e, "decapsulate");
                                None
                            }
                            TunnResult::Done => None,
                        };
                    if !replies.is_empty() {
                        // Flush packets queued while the handshake was under way.
                        while let TunnResult::WriteToNetwork(b) =
                            tunn.decapsulate(None, &[], &mut reply)
                        {
                            replies.push(b.to_vec());
                        }
                    }
                    if decrypted.is_none() {
                        // Not a data packet: perhaps a handshake completed.
                        shared.note_handshake(&tunn);
                    }
                    (decrypted, replies)
                };
                if let Some((at, len)) = decrypted {
                    slot.copy_within(header + at..header + at + len, header);
                    slot.truncate(header + len);
                    ready += 1;
                }
                for r in replies {
                    shared.send(&r, None).await;
                }
            }
        }
    }
}

/// Writes the first `ready` packets to the TUN.
async fn write_packets(
    shared: &Shared,
    packets: &mut [Vec<u8>],
    ready: usize,
    header: usize,
    gro: &mut tun_rs::GROTable,
) -> Result<(), TunnelError> {
    if ready == 0 {
        return Ok(());
    }
    let bytes: u64 = packets[..ready]
        .iter()
        .map(|p| (p.len() - header) as u64)
        .sum();
    shared
        .counters
        .rx_packets
        .fetch_add(ready as u64, Ordering::Relaxed);
    shared.counters.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
    if shared.offload {
        shared
            .tun
            .send_multiple(gro, &mut packets[..ready], header)
            .await
            .map_err(TunnelError::Tun)?;
    } else {
        for p in &packets[..ready] {
            shared.tun.send(p).await.map_err(TunnelError::Tun)?;
        }
    }
    Ok(())
}

/// Sets the socket's receive buffer to RECEIVE_BUFFER: forced (CAP_NET_ADMIN, which Sluice
/// has as root), else as far as the system's maximum allows. A refusal leaves the default.
fn grow_receive_buffer(udp: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let result = setsockopt(udp, sockopt::RcvBufForce, &RECEIVE_BUFFER)
        .or_else(|_| setsockopt(udp, sockopt::RcvBuf, &RECEIVE_BUFFER));
    if let Err(e) = result {
        tracing::debug!(error = %e, "UDP receive buffer");
    }
}

/// Runs the tunnel until `stop` is cancelled or the TUN goes away. `offload`: the TUN was
/// opened with its offloads on (tun::open_offloaded).
pub async fn run(
    peer: Peer,
    tun: Arc<tun_rs::AsyncDevice>,
    offload: bool,
    udp: UdpSocket,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> Result<(), TunnelError> {
    let index = rand::random::<u32>() >> 8;
    let tunn = Tunn::new(
        peer.private,
        peer.public,
        peer.preshared,
        Some(KEEPALIVE_SECS),
        index,
        None,
    );
    grow_receive_buffer(&udp);
    let state = quinn_udp::UdpSocketState::new((&udp).into()).map_err(TunnelError::Udp)?;
    let shared = Arc::new(Shared {
        tunn: Mutex::new(tunn),
        udp,
        state,
        tun,
        offload,
        endpoint: peer.endpoint,
        counters,
    });
    let mut out = vec![0u8; BUF];
    // Start the handshake at once rather than on the first packet.
    let first = match shared.tunn().format_handshake_initiation(&mut out, false) {
        TunnResult::WriteToNetwork(b) => Some(b.to_vec()),
        _ => None,
    };
    if let Some(b) = first {
        shared.send(&b, None).await;
    }
    let mut up = tokio::spawn(outgoing(shared.clone()));
    let mut down = tokio::spawn(incoming(shared.clone()));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            r = &mut up => break r.unwrap_or(Ok(())),
            r = &mut down => break r.unwrap_or(Ok(())),
            _ = tick.tick() => {
                let timers = match shared.tunn().update_timers(&mut out) {
                    TunnResult::WriteToNetwork(b) => Some(b.to_vec()),
                    TunnResult::Err(e) => {
                        tracing::debug!(?e, "timers");
                        None
                    }
                    _ => None,
                };
                if let Some(b) = timers {
                    shared.send(&b, None).await;
                }
            }
        }
    };
    // Both directions end with the session, so the TUN closes when this returns.
    up.abort();
    down.abort();
    let _ = up.await;
    let _ = down.await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tunnels' worth of noise state, handshaken, so that data packets can be sealed.
    fn handshaken() -> (Tunn, Tunn) {
        let key = || StaticSecret::from(rand::random::<[u8; 32]>());
        let (a, b) = (key(), key());
        let mut client = Tunn::new(a.clone(), PublicKey::from(&b), None, None, 1, None);
        let mut server = Tunn::new(b, PublicKey::from(&a), None, None, 2, None);
        let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
        let TunnResult::WriteToNetwork(init) = client.format_handshake_initiation(&mut buf, false)
        else {
            panic!("no initiation")
        };
        let TunnResult::WriteToNetwork(response) = server.decapsulate(None, init, &mut out) else {
            panic!("no response")
        };
        let response = response.to_vec();
        let mut reply = vec![0u8; 2048];
        let _ = client.decapsulate(None, &response, &mut reply);
        (client, server)
    }

    #[test]
    fn the_sealed_length_is_what_boringtun_makes_for_every_packet_size() {
        let (mut client, _) = handshaken();
        let mut out = vec![0u8; SLOT];
        for len in [20, 40, 52, 100, 576, 1279, 1280, 1419, 1420] {
            let mut packet = vec![0u8; len];
            packet[0] = 0x45;
            match client.encapsulate(&packet, &mut out) {
                TunnResult::WriteToNetwork(b) => assert_eq!(b.len(), sealed_len(len), "{len}"),
                _ => panic!("{len}: not sealed"),
            }
        }
    }

    #[test]
    fn full_sized_packets_gather_into_one_send() {
        let (mut client, _) = handshaken();
        let mut g = Gather::new(64);
        let packet = vec![0x45u8; 1420];
        for _ in 0..GSO_SEGMENTS {
            assert!(g.fits(sealed_len(packet.len())));
            let TunnResult::WriteToNetwork(b) = client.encapsulate(&packet, g.room()) else {
                panic!("not sealed")
            };
            let len = b.len();
            g.commit(len);
        }
        assert_eq!(g.count, GSO_SEGMENTS, "equal datagrams, one send");
        assert!(
            !g.fits(sealed_len(packet.len())),
            "a burst stops at GSO_SEGMENTS"
        );
    }

    #[tokio::test]
    async fn the_tunnel_socket_gets_its_receive_buffer() {
        use nix::sys::socket::{getsockopt, sockopt};
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let before = getsockopt(&udp, sockopt::RcvBuf).unwrap();
        grow_receive_buffer(&udp);
        let after = getsockopt(&udp, sockopt::RcvBuf).unwrap();
        if nix::unistd::geteuid().is_root() {
            // Forced past the system's maximum (the kernel reports twice what was set).
            assert!(after >= RECEIVE_BUFFER, "{before} -> {after}");
        } else {
            assert!(after >= before, "{before} -> {after}");
        }
    }

    #[test]
    fn a_gather_takes_equal_datagrams_and_ends_on_a_shorter_one() {
        let mut g = Gather::new(64);
        assert!(g.fits(1452));
        g.room()[..1452].fill(1);
        g.commit(1452);
        assert!(g.fits(1452), "equal ones join");
        assert!(!g.fits(1500), "a longer one cannot");
        assert!(g.fits(100), "a shorter one ends the batch");
        g.room()[..100].fill(2);
        g.commit(100);
        assert_eq!(g.buf.len(), 1552);
        assert!(!g.fits(1452), "nothing follows a shorter one");
        let mut one = Gather::new(1);
        one.room();
        one.commit(80);
        assert!(!one.fits(80), "a socket without GSO sends one at a time");
    }
}
