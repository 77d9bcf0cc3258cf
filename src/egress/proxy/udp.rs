//! UDP of a proxy egress: each UDP flow the container opens (one source port to one
//! destination) gets its own association through the proxy, where the protocol carries UDP:
//! SOCKS5 UDP ASSOCIATE (written here: tokio-socks has none), Shadowsocks UDP (the
//! shadowsocks crate's ProxySocket), Trojan's UDP ASSOCIATE (address, length, CRLF, payload
//! per datagram) and VMess's UDP command (one datagram per chunk). HTTP CONNECT and VMess
//! "zero" carry none: their flows are dropped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::outbound::{
    BoxStream, CONNECT_TIMEOUT, Outbound, Target, TrojanCommand, push_socks_address,
};

/// The largest datagram relayed; a TUN of MTU 1420 cannot carry more anyway.
const MAX_DATAGRAM: usize = 2048;

/// One association: datagrams to and from a single destination through the proxy.
pub enum Association {
    /// The relay socket and the SOCKS5 header for the destination; the control connection
    /// lives as long as the association (the server ends it when that closes).
    Socks {
        socket: UdpSocket,
        header: Vec<u8>,
        _control: TcpStream,
    },
    Shadowsocks {
        socket: shadowsocks::relay::udprelay::ProxySocket<shadowsocks::net::UdpSocket>,
        target: shadowsocks::relay::socks5::Address,
    },
    /// A VMess UDP request: each write and each read is one whole datagram.
    Vmess(BoxStream),
    /// A Trojan UDP ASSOCIATE: datagrams framed on the stream, for the one destination.
    Trojan { stream: BoxStream, target: Target },
}

impl Outbound {
    /// Whether this outbound can carry UDP at all.
    pub fn carries_udp(&self) -> bool {
        match self {
            Outbound::Socks { .. } | Outbound::Shadowsocks { .. } | Outbound::Trojan { .. } => true,
            Outbound::Vmess { security, .. } => *security != super::vmess::Security::Zero,
            Outbound::Http { .. } => false,
        }
    }

    /// Opens an association to `target`.
    pub async fn associate(&self, target: &Target) -> std::io::Result<Association> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.associate_inner(target))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    async fn associate_inner(&self, target: &Target) -> std::io::Result<Association> {
        match self {
            Outbound::Socks { server, auth } => {
                let mut control = TcpStream::connect((server.0.as_str(), server.1)).await?;
                control.set_nodelay(true)?;
                let relay = socks_udp_associate(&mut control, auth).await?;
                // A server that answers "anywhere" means its own address.
                let relay = if relay.ip().is_unspecified() {
                    SocketAddr::new(control.peer_addr()?.ip(), relay.port())
                } else {
                    relay
                };
                let any = match relay {
                    SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                };
                let socket = UdpSocket::bind((any, 0)).await?;
                socket.connect(relay).await?;
                let mut header = vec![0, 0, 0];
                push_socks_address(&mut header, target);
                Ok(Association::Socks {
                    socket,
                    header,
                    _control: control,
                })
            }
            Outbound::Shadowsocks { config, .. } => {
                let context = shadowsocks::context::Context::new_shared(
                    shadowsocks::config::ServerType::Local,
                );
                let socket =
                    shadowsocks::relay::udprelay::ProxySocket::connect(context, config).await?;
                Ok(Association::Shadowsocks {
                    socket,
                    target: target.shadowsocks(),
                })
            }
            Outbound::Vmess { .. } => Ok(Association::Vmess(
                self.vmess(super::vmess::Command::Udp, target).await?,
            )),
            Outbound::Trojan { .. } => Ok(Association::Trojan {
                stream: self.trojan(TrojanCommand::UdpAssociate, target).await?,
                target: target.clone(),
            }),
            Outbound::Http { .. } => Err(std::io::Error::other("this proxy carries no UDP")),
        }
    }
}

/// Greets a SOCKS5 server on `control`, logs in if asked, and requests UDP ASSOCIATE:
/// answers the relay address the server gives.
async fn socks_udp_associate(
    control: &mut TcpStream,
    auth: &Option<(String, String)>,
) -> std::io::Result<SocketAddr> {
    let refused = |what: &str| std::io::Error::other(format!("socks5: {what}"));
    let method = if auth.is_some() { 2 } else { 0 };
    control.write_all(&[5, 1, method]).await?;
    let mut reply = [0u8; 2];
    control.read_exact(&mut reply).await?;
    if reply != [5, method] {
        return Err(refused("the server refused our login method"));
    }
    if let Some((user, pass)) = auth {
        let (u, p) = (user.as_bytes(), pass.as_bytes());
        let (Ok(ul), Ok(pl)) = (u8::try_from(u.len()), u8::try_from(p.len())) else {
            return Err(refused("user or password longer than 255 bytes"));
        };
        let mut login = vec![1, ul];
        login.extend_from_slice(u);
        login.push(pl);
        login.extend_from_slice(p);
        control.write_all(&login).await?;
        control.read_exact(&mut reply).await?;
        if reply[1] != 0 {
            return Err(refused("wrong user or password"));
        }
    }
    // UDP ASSOCIATE from an address not known in advance: 0.0.0.0:0.
    control.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    let mut head = [0u8; 4];
    control.read_exact(&mut head).await?;
    if head[0] != 5 || head[1] != 0 {
        return Err(refused(&format!(
            "the server refused UDP ASSOCIATE (reply {})",
            head[1]
        )));
    }
    let ip = match head[3] {
        1 => {
            let mut a = [0u8; 4];
            control.read_exact(&mut a).await?;
            IpAddr::from(a)
        }
        4 => {
            let mut a = [0u8; 16];
            control.read_exact(&mut a).await?;
            IpAddr::from(a)
        }
        _ => return Err(refused("the relay address is not an IP address")),
    };
    let mut port = [0u8; 2];
    control.read_exact(&mut port).await?;
    Ok(SocketAddr::new(ip, u16::from_be_bytes(port)))
}

/// Strips a SOCKS5 UDP header (no fragments) off `packet`: the payload's offset.
fn socks_payload_offset(packet: &[u8]) -> Option<usize> {
    if packet.len() < 4 || packet[2] != 0 {
        return None; // too short, or a fragment: dropped
    }
    let offset = match packet[3] {
        1 => 4 + 4 + 2,
        4 => 4 + 16 + 2,
        3 => 4 + 1 + usize::from(*packet.get(4)?) + 2,
        _ => return None,
    };
    (packet.len() >= offset).then_some(offset)
}

/// Moves datagrams both ways between a container's UDP flow and its association, until the
/// flow is idle for `idle` or either side fails.
pub async fn relay<F>(mut flow: F, association: Association, idle: Duration)
where
    F: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut back = vec![0u8; MAX_DATAGRAM + 512];
    match association {
        Association::Socks {
            socket,
            header,
            _control: mut control,
        } => {
            let mut packet = header.clone();
            let mut probe = [0u8; 1];
            loop {
                tokio::select! {
                    r = tokio::time::timeout(idle, flow.read(&mut out)) => {
                        let Ok(Ok(n @ 1..)) = r else { return };
                        packet.truncate(header.len());
                        packet.extend_from_slice(&out[..n]);
                        if socket.send(&packet).await.is_err() {
                            return;
                        }
                    }
                    r = socket.recv(&mut back) => {
                        let Ok(n) = r else { return };
                        if let Some(at) = socks_payload_offset(&back[..n])
                            && flow.write_all(&back[at..n]).await.is_err()
                        {
                            return;
                        }
                    }
                    // The server closing the control connection ends the association.
                    _ = control.read(&mut probe) => return,
                }
            }
        }
        Association::Shadowsocks { socket, target } => loop {
            tokio::select! {
                r = tokio::time::timeout(idle, flow.read(&mut out)) => {
                    let Ok(Ok(n @ 1..)) = r else { return };
                    if socket.send(&target, &out[..n]).await.is_err() {
                        return;
                    }
                }
                r = socket.recv(&mut back) => {
                    let Ok((n, _, _)) = r else { return };
                    if flow.write_all(&back[..n]).await.is_err() {
                        return;
                    }
                }
            }
        },
        Association::Trojan { stream, target } => {
            let (mut from_server, mut to_server) = tokio::io::split(stream);
            let (mut from_flow, mut to_flow) = tokio::io::split(flow);
            // Each direction a loop of its own: a framed read must not be cut in half.
            let up = async {
                let mut packet = Vec::with_capacity(MAX_DATAGRAM + 32);
                loop {
                    let Ok(Ok(n @ 1..)) =
                        tokio::time::timeout(idle, from_flow.read(&mut out)).await
                    else {
                        return;
                    };
                    packet.clear();
                    push_socks_address(&mut packet, &target);
                    // n is at most MAX_DATAGRAM.
                    packet.extend_from_slice(&(n as u16).to_be_bytes());
                    packet.extend_from_slice(b"\r\n");
                    packet.extend_from_slice(&out[..n]);
                    if to_server.write_all(&packet).await.is_err()
                        || to_server.flush().await.is_err()
                    {
                        return;
                    }
                }
            };
            let down = async {
                while let Ok(n) = read_trojan_datagram(&mut from_server, &mut back).await {
                    if to_flow.write_all(&back[..n]).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! { _ = up => {}, _ = down => {} }
        }
        Association::Vmess(stream) => {
            let (mut from_server, mut to_server) = tokio::io::split(stream);
            loop {
                tokio::select! {
                    r = tokio::time::timeout(idle, flow.read(&mut out)) => {
                        let Ok(Ok(n @ 1..)) = r else { return };
                        if to_server.write_all(&out[..n]).await.is_err()
                            || to_server.flush().await.is_err()
                        {
                            return;
                        }
                    }
                    r = from_server.read(&mut back) => {
                        let Ok(n @ 1..) = r else { return };
                        if flow.write_all(&back[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Reads one framed Trojan datagram into `buf`: its length. Datagrams larger than `buf` are
/// refused (the stream cannot be resynchronised after one).
async fn read_trojan_datagram<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut kind = [0u8; 1];
    from.read_exact(&mut kind).await?;
    let skip = match kind[0] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            from.read_exact(&mut len).await?;
            usize::from(len[0])
        }
        _ => return Err(std::io::Error::other("trojan: unknown address type")),
    };
    // Address, port, length, CRLF.
    let mut head = vec![0u8; skip + 2 + 2 + 2];
    from.read_exact(&mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[skip + 2], head[skip + 3]]));
    if len > buf.len() {
        return Err(std::io::Error::other("trojan: datagram too large"));
    }
    from.read_exact(&mut buf[..len]).await?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trojan_datagrams_are_read_whole_whatever_their_address_type() {
        let mut wire = Vec::new();
        for (addr, payload) in [
            ("192.0.2.9:53", &b"first"[..]),
            ("[2001:db8::1]:53", &b"second"[..]),
        ] {
            push_socks_address(&mut wire, &Target::Addr(addr.parse().unwrap()));
            wire.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(payload);
        }
        // A name is written as SOCKS5's domain form: 3, its length, the name, the port.
        let mut named = Vec::new();
        push_socks_address(&mut named, &Target::Name("abc".into(), 53));
        assert_eq!(named, [3, 3, b'a', b'b', b'c', 0, 53]);
        wire.extend_from_slice(&named);
        wire.extend_from_slice(&[0, 1, b'\r', b'\n', b'!']);
        let mut r = &wire[..];
        let mut buf = [0u8; 64];
        let n = read_trojan_datagram(&mut r, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"first");
        let n = read_trojan_datagram(&mut r, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"second");
        let n = read_trojan_datagram(&mut r, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"!");
        assert!(read_trojan_datagram(&mut r, &mut buf).await.is_err());
        let mut big = Vec::new();
        push_socks_address(&mut big, &Target::Addr("192.0.2.9:53".parse().unwrap()));
        big.extend_from_slice(&100u16.to_be_bytes());
        let mut r = &big[..];
        assert!(read_trojan_datagram(&mut r, &mut [0u8; 64]).await.is_err());
    }

    #[test]
    fn socks_udp_headers_are_stripped_and_fragments_dropped() {
        let mut p = vec![0, 0, 0];
        push_socks_address(&mut p, &Target::Addr("192.0.2.9:53".parse().unwrap()));
        let at = p.len();
        p.extend_from_slice(b"answer");
        assert_eq!(socks_payload_offset(&p), Some(at));
        let mut frag = p.clone();
        frag[2] = 1;
        assert_eq!(socks_payload_offset(&frag), None);
        let mut v6 = vec![0, 0, 0];
        push_socks_address(&mut v6, &Target::Addr("[2001:db8::1]:53".parse().unwrap()));
        assert_eq!(socks_payload_offset(&v6), Some(22));
        assert_eq!(socks_payload_offset(&[0, 0, 0, 1, 192]), None);
        let name = [0, 0, 0, 3, 3, b'a', b'b', b'c', 0, 53, b'x'];
        assert_eq!(socks_payload_offset(&name), Some(10));
    }
}
