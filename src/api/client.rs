//! Who is at the other end of an HTTP request, decided once per request by the server loop:
//! the TCP peer and whether the connection is TLS, or, only when the peer is one of the
//! trusted proxies (`SLUICE_TRUSTED_PROXIES`), the client named in `X-Forwarded-For` and the
//! scheme in `X-Forwarded-Proto`. Anyone else's forwarding headers are ignored, so a client
//! cannot pick the address its attempts are counted against.
//!
//! The server loop records the decision as the request's `ConnectInfo` (so every handler,
//! rate limit and audit event sees the believed address) and as a [`Client`] extension.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

/// The request's client as believed, and the scheme it used to reach Sluice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub addr: SocketAddr,
    pub https: bool,
}

impl Client {
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request that arrived from `peer` (over TLS or not) with `headers`.
    pub fn client(&self, peer: SocketAddr, tls: bool, headers: &HeaderMap) -> Client {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let direct = Client {
            addr: peer,
            https: tls,
        };
        if !self.trusts(peer.ip()) {
            return direct;
        }
        // X-Forwarded-For lists the hops from the client on; each proxy appends the address
        // it heard from. Read from the right, the first address that is not a trusted proxy
        // is the client; an entry that is not an address ends the walk at the last hop
        // believed.
        let mut client = peer.ip();
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                None => break,
            }
        }
        let https = match headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_ascii_lowercase())
        {
            Some(p) if p == "https" => true,
            Some(p) if p == "http" => false,
            _ => tls,
        };
        Client {
            addr: SocketAddr::new(client.to_canonical(), 0),
            https,
        }
    }
}

/// An `X-Forwarded-For` entry: an address, possibly bracketed or with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// Parses `SLUICE_TRUSTED_PROXIES` entries: CIDRs or single addresses.
pub fn parse_trusted(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or CIDR (e.g. 10.0.0.0/8)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let t = TrustedProxies::new(vec![parse_trusted("10.0.0.0/8").unwrap()]);
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = t.client(peer("192.0.2.1:5000"), false, &h);
        assert_eq!(c.addr, peer("192.0.2.1:5000"));
        assert!(!c.https);
        // With no proxies configured nobody is trusted, loopback included.
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(peer("127.0.0.1:1"), true, &h),
            Client {
                addr: peer("127.0.0.1:1"),
                https: true
            }
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_scheme() {
        let t = TrustedProxies::new(vec![
            parse_trusted("10.0.0.0/8").unwrap(),
            parse_trusted("127.0.0.1").unwrap(),
        ]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.1.2.3"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = t.client(peer("127.0.0.1:4000"), false, &h);
        // 10.1.2.3 is another trusted hop; 198.51.100.7 is the first untrusted from the right:
        // whatever the client wrote before it (203.0.113.9) is not believed.
        assert_eq!(c.addr.ip(), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert!(c.https);
        // No header: the proxy itself.
        let c = t.client(peer("10.9.9.9:1"), false, &HeaderMap::new());
        assert_eq!(c.addr.ip(), "10.9.9.9".parse::<IpAddr>().unwrap());
        // Garbage ends the walk at the last believed hop.
        let h = headers(&[("x-forwarded-for", "nonsense, 10.1.2.3")]);
        let c = t.client(peer("10.9.9.9:1"), false, &h);
        assert_eq!(c.addr.ip(), "10.1.2.3".parse::<IpAddr>().unwrap());
        // IPv4-mapped peers count as their IPv4 address.
        let c = t.client(
            peer("[::ffff:127.0.0.1]:1"),
            false,
            &headers(&[("x-forwarded-for", "[2001:db8::1]:443")]),
        );
        assert_eq!(c.addr.ip(), "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn entries_parse_as_cidrs_or_addresses() {
        assert!(parse_trusted("10.0.0.0/8").is_ok());
        assert!(parse_trusted("::1").is_ok());
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert!(parse_trusted("proxy.example").is_err());
    }
}
