//! The data plane of a proxy egress: the host's TUN feeds a userspace TCP/IP stack (ipstack);
//! each TCP flow the container opens is dialled through the proxy from Sluice's namespace
//! (outbound.rs), A queries to the resolver address are answered with synthetic addresses
//! that are dialled by name, so the proxy resolves them (names.rs), other DNS queries are
//! answered through the proxy (dns.rs), and other UDP flows get an association through the proxy where its protocol
//! carries UDP (udp.rs). Everything else (UDP the proxy cannot carry, ICMP, IPv6) is dropped:
//! it leaves through the proxy or not at all. Flows per host are capped, all hosts' flows
//! share a global budget, datagram flows are read through bounded queues (queue.rs), and
//! idle flows time out, so no container, nor all of them together, can exhaust the control
//! plane.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use ipstack::{IpStack, IpStackConfig, IpStackStream, TcpConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::destinations::Destinations;
use super::wireguard::Counters;

pub mod dns;
pub mod names;
pub mod outbound;
pub mod queue;
pub mod redirect;
pub mod tls;
pub mod udp;
pub mod vmess;
pub mod window;

pub use outbound::{Outbound, Target};

/// The container's address on its TUN when bound to a proxy egress.
pub const TUN_ADDRESS: &str = "10.255.255.2/24";
/// The resolver address written into the container's resolv.conf; the engine answers it.
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 53);
/// TCP flows one host may have open at once through its proxy.
pub const MAX_TCP_FLOWS: usize = 1024;
/// DNS flows one host may have open at once.
pub const MAX_DNS_FLOWS: usize = 64;
/// Other UDP flows (associations through the proxy) one host may have open at once.
pub const MAX_UDP_FLOWS: usize = 256;
/// A TCP flow with no traffic for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(2 * 3600);
/// A UDP flow (DNS or other) with no traffic for this long is forgotten.
pub const UDP_IDLE: Duration = Duration::from_secs(30);

/// Descriptors the proxy data plane may hold across all hosts: a quarter of the open-files
/// limit (read once; Sluice raises the soft limit to the hard one at start), within bounds.
pub fn descriptor_budget() -> usize {
    static BUDGET: LazyLock<usize> = LazyLock::new(|| {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        usize::try_from(soft / 4)
            .unwrap_or(usize::MAX)
            .clamp(256, 65_536)
    });
    *BUDGET
}

/// Flows (TCP connections and UDP associations, each a socket to a proxy) open at once
/// across all hosts: one container within its own caps, times many hosts, still cannot take
/// every descriptor Sluice has.
static FLOWS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(descriptor_budget())));

/// A slot of the host's own cap and one of the global budget, or none.
fn flow_slot(host: &Arc<Semaphore>) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let mine = host.clone().try_acquire_owned().ok()?;
    let global = FLOWS.clone().try_acquire_owned().ok()?;
    Some((mine, global))
}

/// The TUN as ipstack wants it: one packet per read or write, with TCP flow control
/// (window.rs) applied on the way in and out.
struct TunIo {
    device: Arc<tun_rs::AsyncDevice>,
    windows: Arc<window::Windows>,
    counters: Arc<Counters>,
}

impl AsyncRead for TunIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let dst = buf.initialize_unfilled();
            match self.device.poll_recv(cx, dst) {
                Poll::Ready(Ok(n)) => {
                    // Data a flow has no room for is dropped here; the container resends it.
                    if !self.windows.inbound(&dst[..n]) {
                        continue;
                    }
                    buf.advance(n);
                    self.counters.tx_packets.fetch_add(1, Relaxed);
                    self.counters.tx_bytes.fetch_add(n as u64, Relaxed);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for TunIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let sent = match self.windows.outbound(buf) {
            Some(clamped) => self.device.poll_send(cx, &clamped).map_ok(|_| buf.len()),
            None => self.device.poll_send(cx, buf),
        };
        if let Poll::Ready(Ok(n)) = &sent {
            self.counters.rx_packets.fetch_add(1, Relaxed);
            self.counters.rx_bytes.fetch_add(*n as u64, Relaxed);
        }
        sent
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs the stack on `device` until `stop` is cancelled; flows end with it. With `redirect`
/// (redirect.rs), the container's TCP arrives there on the kernel's stack; without it, TCP
/// is taken off the TUN by the userspace stack like everything else.
pub async fn run(
    device: Arc<tun_rs::AsyncDevice>,
    redirect: Option<tokio::net::TcpListener>,
    outbound: Outbound,
    destinations: Destinations,
    dns_server: IpAddr,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut config = IpStackConfig::default();
    config
        .mtu(super::tun::MTU)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tcp = TcpConfig::default();
    tcp.timeout = TCP_IDLE;
    config.with_tcp_config(tcp);
    config.udp_timeout(UDP_IDLE);
    let windows = Arc::new(window::Windows::default());
    let mut stack = IpStack::new(
        config,
        TunIo {
            device: device.clone(),
            windows: windows.clone(),
            counters: counters.clone(),
        },
    );
    let resolver = SocketAddr::new(IpAddr::V4(RESOLVER), 53);
    let tcp_flows = Arc::new(Semaphore::new(MAX_TCP_FLOWS));
    let dns_flows = Arc::new(Semaphore::new(MAX_DNS_FLOWS));
    let udp_flows = Arc::new(Semaphore::new(MAX_UDP_FLOWS));
    let carries_udp = outbound.carries_udp();
    // This host's names and their synthetic addresses, for as long as the session lasts.
    let names = Arc::new(names::Names::default());
    let allowed = |peer: SocketAddr| {
        let target = target_of(peer, &names, &destinations);
        if target.is_none() && !matches!(peer, SocketAddr::V4(a) if names::in_pool(*a.ip())) {
            counters.refused_destinations.fetch_add(1, Relaxed);
        }
        target
    };
    // Flows are children of this token: they end with the session.
    let flows = stop.child_token();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            s = stack.accept() => match s {
                Ok(s) => s,
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            },
            Some(conn) = accept(redirect.as_ref()) => {
                let Some(flow) = KernelFlow::admit(conn, &allowed, &tcp_flows) else {
                    continue;
                };
                let (outbound, end, counters) = (outbound.clone(), flows.clone(), counters.clone());
                tokio::spawn(async move {
                    tokio::select! { _ = flow.relay(outbound, counters) => {}, _ = end.cancelled() => {} }
                });
                continue;
            }
        };
        match stream {
            IpStackStream::Tcp(flow) => {
                let Some(target) = allowed(flow.peer_addr()) else {
                    continue; // an internal address, or a synthetic one no name holds: refused
                };
                let Some(permit) = flow_slot(&tcp_flows) else {
                    tracing::debug!("proxy egress: flow limit reached, a connection was dropped");
                    continue; // dropped: the container sees a reset
                };
                let (outbound, end) = (outbound.clone(), flows.clone());
                let flow_window = match (flow.local_addr(), flow.peer_addr()) {
                    (SocketAddr::V4(container), SocketAddr::V4(remote)) => {
                        Some(windows.register(window::FlowKey { container, remote }))
                    }
                    _ => None,
                };
                let device = device.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let relay = async {
                        match outbound.connect(&target).await {
                            Ok(up) => {
                                let window = flow_window.as_ref().map(|r| (&*r.window, &*device));
                                let (from_container, to_container) = tokio::io::split(flow);
                                relay(
                                    from_container,
                                    to_container,
                                    up,
                                    Meter::Stack(window),
                                    Meter::Stack(None),
                                )
                                .await
                            }
                            Err(e) => tracing::debug!(%target, error = %e, "proxy refused a flow"),
                        }
                    };
                    tokio::select! { _ = relay => {}, _ = end.cancelled() => {} }
                });
            }
            IpStackStream::Udp(flow) if flow.peer_addr() == resolver => {
                let Ok(permit) = dns_flows.clone().try_acquire_owned() else {
                    continue;
                };
                let (outbound, end, names) = (outbound.clone(), flows.clone(), names.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let flow = queue::drain(flow, queue::DEPTH);
                    tokio::select! {
                        _ = dns::serve(flow, outbound, dns_server, names) => {}
                        _ = end.cancelled() => {}
                    }
                });
            }
            IpStackStream::Udp(flow) if carries_udp => {
                let Some(target) = allowed(flow.peer_addr()) else {
                    continue;
                };
                let Some(permit) = flow_slot(&udp_flows) else {
                    tracing::debug!("proxy egress: UDP flow limit reached, a flow was dropped");
                    continue;
                };
                let (outbound, end) = (outbound.clone(), flows.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let flow = queue::drain(flow, queue::DEPTH);
                    let relay = async {
                        match outbound.associate(&target).await {
                            Ok(a) => udp::relay(flow, a, UDP_IDLE).await,
                            Err(e) => {
                                tracing::debug!(%target, error = %e, "proxy refused a UDP flow")
                            }
                        }
                    };
                    tokio::select! { _ = relay => {}, _ = end.cancelled() => {} }
                });
            }
            // UDP the proxy cannot carry, ICMP and anything else: dropped, never sent anywhere.
            _ => {}
        }
    }
    flows.cancel();
    // The stack goes first; then the flows are given a moment to end (each holds its slot
    // until its stream is dropped, and an ipstack stream's drop waits on the stream's own
    // task), so they end while the runtime still runs rather than as it is torn down.
    // Bounded: such a drop can also block for good, and the session must still end.
    drop(stack);
    let _ = tokio::time::timeout(FLOW_DRAIN, async {
        for (slots, n) in [
            (&tcp_flows, MAX_TCP_FLOWS),
            (&dns_flows, MAX_DNS_FLOWS),
            (&udp_flows, MAX_UDP_FLOWS),
        ] {
            let _ = slots.acquire_many(n as u32).await;
        }
    })
    .await;
    Ok(())
}

/// The next connection on the redirect listener, if there is one; never, without it.
async fn accept(listener: Option<&tokio::net::TcpListener>) -> Option<tokio::net::TcpStream> {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    match listener.accept().await {
        Ok((conn, _)) => Some(conn),
        Err(e) => {
            // Out of descriptors, most likely: wait a moment rather than spin.
            tracing::debug!(error = %e, "proxy egress: accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Bytes each way of a kernel TCP flow's copies: large, so a bulk transfer takes few system
/// calls, and bounded with the flow count ([`MAX_TCP_FLOWS`] per host).
const KERNEL_BUFFER: usize = 64 * 1024;

/// A TCP connection of the container, taken by the redirect listener, with its slots.
struct KernelFlow {
    conn: tokio::net::TcpStream,
    target: Target,
    _slots: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl KernelFlow {
    /// The flow, if it may go: it was redirected (not a connection to the listener itself
    /// or anything else on loopback), its synthetic address still names something, and the
    /// host's cap and the global budget have room (two descriptors: this one and the
    /// proxy's). Otherwise it is closed here, which the container sees as a refusal.
    fn admit(
        conn: tokio::net::TcpStream,
        allowed: &impl Fn(SocketAddr) -> Option<Target>,
        host: &Arc<Semaphore>,
    ) -> Option<KernelFlow> {
        let dst = match redirect::original_destination(&conn) {
            Ok(dst) if !dst.ip().is_loopback() => dst,
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "proxy egress: a connection without its destination");
                return None;
            }
        };
        let target = allowed(SocketAddr::V4(dst))?;
        let mine = host.clone().try_acquire_owned().ok();
        let global = FLOWS.clone().try_acquire_many_owned(2).ok();
        let (Some(mine), Some(global)) = (mine, global) else {
            tracing::debug!("proxy egress: flow limit reached, a connection was refused");
            return None;
        };
        let _ = conn.set_nodelay(true);
        Some(KernelFlow {
            conn,
            target,
            _slots: (mine, global),
        })
    }

    /// Dials the target through the proxy and moves bytes both ways until both sides are
    /// done, either side stays silent past [`HALF_CLOSED_IDLE`] once the other finished, or
    /// both stay silent past [`TCP_IDLE`].
    async fn relay(self, outbound: Outbound, counters: Arc<Counters>) {
        let up = match outbound.connect(&self.target).await {
            Ok(up) => up,
            Err(e) => {
                tracing::debug!(target = %self.target, error = %e, "proxy refused a flow");
                return;
            }
        };
        let (from_container, to_container) = self.conn.into_split();
        relay(
            from_container,
            to_container,
            up,
            Meter::Kernel(&counters.tx_bytes),
            Meter::Kernel(&counters.rx_bytes),
        )
        .await;
    }
}

/// Where a flow to `peer` is dialled: by name when `peer` is a synthetic address the host was
/// given for a name; `None` for a synthetic address no name holds (expired, or never given),
/// and for an internal address the egress does not allow (loopback, private, link-local such
/// as cloud metadata: destinations.rs), which are refused rather than sent anywhere.
fn target_of(
    peer: SocketAddr,
    names: &names::Names,
    destinations: &Destinations,
) -> Option<Target> {
    match peer {
        SocketAddr::V4(a) if names::in_pool(*a.ip()) => {
            match names.name_of(*a.ip(), std::time::Instant::now()) {
                Some(name) => Some(Target::Name(name, a.port())),
                None => {
                    tracing::debug!(%peer, "proxy egress: a synthetic address no name holds");
                    None
                }
            }
        }
        peer if destinations.permits(peer.ip()) => Some(Target::Addr(peer)),
        peer => {
            tracing::debug!(%peer, "proxy egress: an internal address, refused");
            None
        }
    }
}

/// How long a stopped session waits for its flows to end.
const FLOW_DRAIN: Duration = Duration::from_secs(3);

/// How long a half-closed flow may stay silent before it is closed: the side that is done
/// gets this long for the other to finish (proxies do not always pass a half-close on).
const HALF_CLOSED_IDLE: Duration = Duration::from_secs(30);

/// How long the container may stay silent on a new connection before an outbound that sends
/// its request with the first payload (Shadowsocks) is made to send it alone, so that a
/// destination that speaks first (SSH, SMTP) hears the request and answers.
const FIRST_WRITE_WAIT: Duration = Duration::from_millis(50);

/// Which stack a flow's container side is on, and so how one direction's bytes are read and
/// accounted.
#[derive(Clone, Copy)]
enum Meter<'a> {
    /// The userspace stack (32 KiB reads): bytes taken off a flow with a registered window
    /// may owe the container a window update.
    Stack(Option<(&'a window::FlowWindow, &'a tun_rs::AsyncDevice)>),
    /// A kernel socket ([`KERNEL_BUFFER`] reads): bytes are added to the host's counter.
    Kernel(&'a std::sync::atomic::AtomicU64),
}

/// Copies `from` to `to` until end of file, noting the time of each chunk in `last`. With
/// `nudge`, an empty write goes to `to` if `from` says nothing for [`FIRST_WRITE_WAIT`].
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    last: &std::sync::Mutex<std::time::Instant>,
    mut nudge: bool,
    meter: Meter<'_>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let size = match meter {
        Meter::Stack(_) => 32 * 1024,
        Meter::Kernel(_) => KERNEL_BUFFER,
    };
    let mut buf = vec![0u8; size];
    loop {
        // Re-polled every second: ipstack closes a flow on a reset from the container without
        // waking its reader, and a fresh poll sees the end.
        let n = loop {
            let wait = if nudge {
                FIRST_WRITE_WAIT
            } else {
                Duration::from_secs(1)
            };
            match tokio::time::timeout(wait, from.read(&mut buf)).await {
                Ok(r) => break r?,
                Err(_) if nudge => {
                    // An empty write: write_all would skip it.
                    let _nothing: usize = to.write(&[]).await?;
                    to.flush().await?;
                }
                Err(_) => {}
            }
            nudge = false;
        };
        nudge = false;
        if n == 0 {
            return Ok(());
        }
        // Taken off the stack: the flow has room again, which the container may need telling.
        if let Meter::Stack(Some((w, device))) = meter
            && let Some(update) = w.consumed(n)
        {
            let _ = device.send(&update).await;
        }
        to.write_all(&buf[..n]).await?;
        // Framing outbounds (VMess, TLS) may hold the tail of a write until flushed.
        to.flush().await?;
        if let Meter::Kernel(count) = meter {
            count.fetch_add(n as u64, Relaxed);
        }
        *last.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    }
}

/// Waits for `rest` (the direction still open) until it ends or stays silent too long.
async fn finish(
    rest: impl std::future::Future<Output = ()>,
    last: &std::sync::Mutex<std::time::Instant>,
) {
    tokio::pin!(rest);
    loop {
        tokio::select! {
            _ = &mut rest => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let idle = last.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                if idle >= HALF_CLOSED_IDLE {
                    return;
                }
            }
        }
    }
}

/// Moves bytes both ways between the container's side of a flow and its proxied stream `up`,
/// `out` and `back` metering each direction, until both are done or one side stays silent
/// past [`HALF_CLOSED_IDLE`] once the other finished. When the destination ends, the container
/// gets its FIN (retried: ipstack sends it only once its in-flight data is acknowledged, and
/// does not always wake the closer when that happens). A kernel flow also ends when both
/// directions stay silent past [`TCP_IDLE`]; ipstack times its own flows out after as long.
async fn relay<R, W>(
    mut from_container: R,
    mut to_container: W,
    up: outbound::BoxStream,
    out: Meter<'_>,
    back: Meter<'_>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut from_dest, mut to_dest) = tokio::io::split(up);
    let (sent, received) = (
        std::sync::Mutex::new(std::time::Instant::now()),
        std::sync::Mutex::new(std::time::Instant::now()),
    );
    let outgoing = async {
        let _ = pump(&mut from_container, &mut to_dest, &sent, true, out).await;
        let _ = to_dest.shutdown().await;
    };
    let incoming = async {
        let _ = pump(&mut from_dest, &mut to_container, &received, false, back).await;
        for _ in 0..300 {
            if tokio::time::timeout(Duration::from_millis(100), to_container.shutdown())
                .await
                .is_ok()
            {
                break;
            }
        }
    };
    let idle = async {
        if matches!(out, Meter::Stack(_)) {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let quiet = |m: &std::sync::Mutex<std::time::Instant>| {
                m.lock().unwrap_or_else(|e| e.into_inner()).elapsed() >= TCP_IDLE
            };
            if quiet(&sent) && quiet(&received) {
                return;
            }
        }
    };
    tokio::pin!(outgoing, incoming);
    tokio::select! {
        _ = &mut outgoing => finish(incoming, &received).await,
        _ = &mut incoming => finish(outgoing, &sent).await,
        _ = idle => {}
    }
}
