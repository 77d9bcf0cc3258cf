//! Where a proxy egress may take a host: anywhere on the internet, never to the places that
//! belong to the machines around the proxy. A proxy that runs beside Sluice (or in the same
//! cloud) would otherwise dial, for any tenant who asks, the cloud's metadata service
//! (169.254.169.254), the private network it sits in, or its own loopback. Addresses in those
//! ranges are refused unless the egress lists them as allowed (an operator whose proxy is meant
//! to reach a private network). Pure: the data plane asks [`Destinations::permits`] per flow.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is internal, or `None` when it is an ordinary internet address.
pub fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() || a == 0 => "this network",
        _ if ip.is_private() => "private (RFC 1918)",
        (100, 64..=127) => "shared address space (CGNAT)",
        _ if ip.is_link_local() => "link-local (cloud metadata)",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, _) => "reserved",
        (192, 0) if c == 0 => "IETF protocol assignments",
        _ => return None,
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let first = ip.segments()[0];
    Some(match first {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "this network",
        _ if ip.is_multicast() => "multicast",
        f if f & 0xfe00 == 0xfc00 => "unique local (private)",
        f if f & 0xffc0 == 0xfe80 => "link-local",
        f if f & 0xffc0 == 0xfec0 => "site-local",
        _ => {
            // NAT64 (64:ff9b::/96) and IPv4-compatible addresses carry an IPv4 address.
            let s = ip.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == [0, 0, 0, 0, 0, 0] {
                let o = ip.octets();
                return internal_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            return None;
        }
    })
}

/// One egress's policy: internal addresses are refused, but for the ranges it allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    allowed: Vec<IpNet>,
}

impl Destinations {
    pub fn allowing(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// Whether a host may be taken to `ip` through the proxy.
    pub fn permits(&self, ip: IpAddr) -> bool {
        internal(ip).is_none() || self.allowed.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_and_the_internet_is_not() {
        let none = Destinations::default();
        for refused in [
            "127.0.0.1",
            "127.5.6.7",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "169.254.169.254",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.192",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(!none.permits(ip(refused)), "{refused} was permitted");
            assert!(internal(ip(refused)).is_some(), "{refused}");
        }
        for open in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.0.2.1",
            "198.18.20.80",
            "203.0.113.10",
            "2001:4860:4860::8888",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert!(none.permits(ip(open)), "{open} was refused");
        }
    }

    #[test]
    fn an_allowed_range_opens_only_itself() {
        let d = Destinations::allowing(vec!["10.99.0.0/30".parse().unwrap()]);
        assert!(d.permits(ip("10.99.0.1")));
        assert!(!d.permits(ip("10.99.0.4")));
        assert!(!d.permits(ip("169.254.169.254")));
        assert_eq!(
            internal(ip("169.254.169.254")),
            Some("link-local (cloud metadata)")
        );
    }
}
