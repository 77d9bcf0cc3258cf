//! Proxy outbounds: a TCP connection to the proxy server, dialled from Sluice's own namespace,
//! turned into a stream to the destination the container asked for. SOCKS5 through
//! tokio-socks; Shadowsocks (AEAD and 2022 ciphers) through the shadowsocks crate; written
//! here where no maintained client exists: HTTP CONNECT (a request line, an optional
//! basic-auth header, a status line to check; optionally over TLS), Trojan (TLS, then a
//! one-line request) and VMess (`vmess/`, optionally over TLS).

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::egress::settings::ProxyConfig;

/// How long reaching the proxy and its answer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a flow goes: an address, or a name the proxy resolves (a host's name lookups are
/// answered with synthetic addresses, names.rs, and connections to those are dialled by
/// name, so names are resolved at the egress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    /// A host name (ASCII, at most 253 bytes, as the resolver took it) and a port.
    Name(String, u16),
}

impl Target {
    pub fn port(&self) -> u16 {
        match self {
            Target::Addr(a) => a.port(),
            Target::Name(_, port) => *port,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => a.fmt(f),
            Target::Name(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

impl From<SocketAddr> for Target {
    fn from(a: SocketAddr) -> Target {
        Target::Addr(a)
    }
}

impl Target {
    /// The address in the shadowsocks crate's form.
    pub(super) fn shadowsocks(&self) -> shadowsocks::relay::socks5::Address {
        use shadowsocks::relay::socks5::Address;
        match self {
            Target::Addr(a) => Address::SocketAddress(*a),
            Target::Name(name, port) => Address::DomainNameAddress(name.clone(), *port),
        }
    }
}

/// A byte stream to a destination, through the proxy.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
pub type BoxStream = Pin<Box<dyn Stream>>;

/// A dialler for one proxy egress.
#[derive(Debug, Clone)]
pub enum Outbound {
    Socks {
        server: (String, u16),
        auth: Option<(String, String)>,
    },
    Http {
        server: (String, u16),
        auth: Option<(String, String)>,
        tls: Option<super::tls::Tls>,
    },
    Shadowsocks {
        server: (String, u16),
        config: std::sync::Arc<shadowsocks::ServerConfig>,
    },
    Trojan {
        server: (String, u16),
        /// hex(SHA-224(password)), the first line of every request.
        key: String,
        tls: super::tls::Tls,
    },
    Vmess {
        server: (String, u16),
        uuid: [u8; 16],
        security: super::vmess::Security,
        tls: Option<super::tls::Tls>,
    },
}

impl Outbound {
    /// The dialler for `config`, or why these settings cannot be used.
    pub fn from_config(config: &ProxyConfig) -> Result<Outbound, String> {
        let pair = |u: &Option<String>, p: &Option<String>| match (u, p) {
            (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
            _ => None,
        };
        match config {
            ProxyConfig::Socks {
                server,
                server_port,
                username,
                password,
            } => Ok(Outbound::Socks {
                server: (server.clone(), *server_port),
                auth: pair(username, password),
            }),
            ProxyConfig::Http {
                server,
                server_port,
                username,
                password,
                tls,
            } => Ok(Outbound::Http {
                server: (server.clone(), *server_port),
                auth: pair(username, password),
                tls: tls_for(tls, server)?,
            }),
            ProxyConfig::Shadowsocks {
                server,
                server_port,
                method,
                password,
            } => {
                let kind: shadowsocks::crypto::CipherKind = method
                    .parse()
                    .map_err(|_| format!("unknown shadowsocks method {method}"))?;
                let addr = shadowsocks::ServerAddr::DomainName(server.clone(), *server_port);
                let config = shadowsocks::ServerConfig::new(addr, password.clone(), kind)
                    .map_err(|e| format!("the shadowsocks password is not a valid key ({e})"))?;
                Ok(Outbound::Shadowsocks {
                    server: (server.clone(), *server_port),
                    config: std::sync::Arc::new(config),
                })
            }
            ProxyConfig::Trojan {
                server,
                server_port,
                password,
                tls,
            } => {
                use sha2::Digest;
                Ok(Outbound::Trojan {
                    server: (server.clone(), *server_port),
                    key: hex::encode(sha2::Sha224::digest(password.as_bytes())),
                    tls: super::tls::Tls::new(tls, server)?,
                })
            }
            ProxyConfig::Vmess {
                server,
                server_port,
                uuid,
                security,
                alter_id: _,
                tls,
            } => Ok(Outbound::Vmess {
                server: (server.clone(), *server_port),
                uuid: *uuid::Uuid::parse_str(uuid)
                    .map_err(|_| "the vmess uuid is not a UUID".to_string())?
                    .as_bytes(),
                security: super::vmess::Security::parse(security)
                    .ok_or_else(|| format!("unknown vmess security {security}"))?,
                tls: tls_for(tls, server)?,
            }),
        }
    }

    /// A stream to `target` through the proxy.
    pub async fn connect(&self, target: &Target) -> std::io::Result<BoxStream> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner(target))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    async fn connect_inner(&self, target: &Target) -> std::io::Result<BoxStream> {
        match self {
            Outbound::Socks { server, auth } => {
                let tcp = TcpStream::connect((server.0.as_str(), server.1)).await?;
                tcp.set_nodelay(true)?;
                // A name goes in the request as a domain (address type 3): the server resolves.
                let to = match target {
                    Target::Addr(a) => tokio_socks::TargetAddr::Ip(*a),
                    Target::Name(name, port) => {
                        tokio_socks::TargetAddr::Domain(name.as_str().into(), *port)
                    }
                };
                let s = match auth {
                    Some((u, p)) => {
                        tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(
                            tcp, to, u, p,
                        )
                        .await
                    }
                    None => tokio_socks::tcp::Socks5Stream::connect_with_socket(tcp, to).await,
                }
                .map_err(|e| std::io::Error::other(format!("socks5: {e}")))?;
                Ok(Box::pin(s))
            }
            Outbound::Shadowsocks { server, config } => {
                let tcp = TcpStream::connect((server.0.as_str(), server.1)).await?;
                tcp.set_nodelay(true)?;
                let context = shadowsocks::context::Context::new_shared(
                    shadowsocks::config::ServerType::Local,
                );
                let s = shadowsocks::ProxyClientStream::from_stream(
                    context,
                    tcp,
                    config,
                    target.shadowsocks(),
                );
                Ok(Box::pin(s))
            }
            Outbound::Trojan { .. } => self.trojan(TrojanCommand::Connect, target).await,
            Outbound::Http { server, auth, tls } => {
                let tcp = TcpStream::connect((server.0.as_str(), server.1)).await?;
                tcp.set_nodelay(true)?;
                match tls {
                    Some(tls) => http_connect(tls.connect(tcp).await?, target, auth).await,
                    None => http_connect(tcp, target, auth).await,
                }
            }
            Outbound::Vmess { .. } => self.vmess(super::vmess::Command::Tcp, target).await,
        }
    }

    /// A Trojan request of `command` for `target`: the key line, the command, the address and
    /// CRLF, then the payload (for UDP, framed datagrams).
    pub(super) async fn trojan(
        &self,
        command: TrojanCommand,
        target: &Target,
    ) -> std::io::Result<BoxStream> {
        let Outbound::Trojan { server, key, tls } = self else {
            return Err(std::io::Error::other("not a Trojan outbound"));
        };
        let tcp = TcpStream::connect((server.0.as_str(), server.1)).await?;
        tcp.set_nodelay(true)?;
        let mut s = tls.connect(tcp).await?;
        let mut req = Vec::with_capacity(96);
        req.extend_from_slice(key.as_bytes());
        req.extend_from_slice(b"\r\n");
        req.push(command as u8);
        push_socks_address(&mut req, target);
        req.extend_from_slice(b"\r\n");
        s.write_all(&req).await?;
        s.flush().await?;
        Ok(Box::pin(s))
    }

    /// A VMess request of `command` to `target`; other outbounds have none.
    pub(super) async fn vmess(
        &self,
        command: super::vmess::Command,
        target: &Target,
    ) -> std::io::Result<BoxStream> {
        let Outbound::Vmess {
            server,
            uuid,
            security,
            tls,
        } = self
        else {
            return Err(std::io::Error::other("not a VMess outbound"));
        };
        let tcp = TcpStream::connect((server.0.as_str(), server.1)).await?;
        tcp.set_nodelay(true)?;
        use super::vmess::connect;
        Ok(match tls {
            Some(tls) => {
                let s = tls.connect(tcp).await?;
                Box::pin(connect(s, uuid, *security, command, target).await?)
            }
            None => Box::pin(connect(tcp, uuid, *security, command, target).await?),
        })
    }
}

/// What a Trojan request asks for.
#[derive(Debug, Clone, Copy)]
pub(super) enum TrojanCommand {
    Connect = 1,
    UdpAssociate = 3,
}

/// An address in SOCKS5 form (type, address, port), as SOCKS5 UDP and Trojan both write it:
/// 1 and four bytes, 4 and sixteen, or 3, a length and a name.
pub(super) fn push_socks_address(out: &mut Vec<u8>, target: &Target) {
    match target {
        Target::Addr(SocketAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
        }
        Target::Addr(SocketAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
        Target::Name(name, _) => {
            // Names come from the resolver, which takes none longer than 253 bytes.
            let name = &name.as_bytes()[..name.len().min(255)];
            out.push(3);
            out.push(name.len() as u8);
            out.extend_from_slice(name);
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
}

/// The TLS client for an outbound whose TLS is optional; `None` unless it is enabled.
fn tls_for(
    settings: &Option<crate::egress::settings::TlsSettings>,
    server: &str,
) -> Result<Option<super::tls::Tls>, String> {
    match settings {
        Some(t) if t.enabled => super::tls::Tls::new(t, server).map(Some),
        _ => Ok(None),
    }
}

/// The longest line taken from an HTTP proxy's answer.
const MAX_LINE: u64 = 8 * 1024;

/// Reads one line of at most [`MAX_LINE`] bytes: a peer cannot make Sluice buffer more.
async fn read_line_limited<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let n = reader.take(MAX_LINE).read_line(line).await?;
    if n as u64 == MAX_LINE && !line.ends_with('\n') {
        return Err(std::io::Error::other(
            "http proxy answered a line longer than 8 KiB",
        ));
    }
    Ok(n)
}

/// Asks an HTTP proxy, over `s`, for a tunnel to `target` (`CONNECT name:port` for a name,
/// which the proxy resolves).
async fn http_connect<S: Stream + 'static>(
    mut s: S,
    target: &Target,
    auth: &Option<(String, String)>,
) -> std::io::Result<BoxStream> {
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    read_line_limited(&mut reader, &mut line).await?;
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(std::io::Error::other(format!(
            "http proxy refused CONNECT: {}",
            line.trim()
        )));
    }
    // Headers up to the empty line; bounded so a broken proxy cannot feed us forever.
    for _ in 0..100 {
        line.clear();
        if read_line_limited(&mut reader, &mut line).await? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    // A destination that speaks first may already have said something, in the same read as
    // the proxy's answer: the reader keeps it, and hands it on first.
    Ok(Box::pin(reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_http_proxy_cannot_feed_an_endless_line() {
        let mut ok = BufReader::new(&b"HTTP/1.1 200 OK\r\nrest"[..]);
        let mut line = String::new();
        read_line_limited(&mut ok, &mut line).await.unwrap();
        assert_eq!(line, "HTTP/1.1 200 OK\r\n");
        let endless = vec![b'a'; 1 << 20];
        let mut r = BufReader::new(&endless[..]);
        let mut line = String::new();
        assert!(read_line_limited(&mut r, &mut line).await.is_err());
        assert_eq!(line.len() as u64, MAX_LINE);
    }
}
