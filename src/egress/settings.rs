//! Egress settings: the flat API input (cloud-cli-proxy's field names), its validation into
//! typed WireGuard or sing-box-style proxy settings, and the masked view.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::MASK;
use crate::validation::FieldErrors;

/// Shadowsocks ciphers Sluice accepts.
pub const SHADOWSOCKS_METHODS: &[&str] = &[
    "aes-128-gcm",
    "aes-256-gcm",
    "chacha20-ietf-poly1305",
    "2022-blake3-aes-128-gcm",
    "2022-blake3-aes-256-gcm",
    "2022-blake3-chacha20-poly1305",
];

/// VMess body securities Sluice accepts.
pub const VMESS_SECURITIES: &[&str] = &["auto", "none", "zero", "aes-128-gcm", "chacha20-poly1305"];

/// Egress fields as the API takes them, for create and for partial update alike.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct EgressInput {
    /// Name shown to operators, 1-100 characters.
    pub label: Option<String>,
    /// The exit IP address the egress is declared to have; the egress test compares it.
    pub ip_address: Option<String>,
    /// Who sells the egress (free text, up to 100 characters).
    pub provider: Option<String>,
    /// `wireguard` or `proxy`.
    pub tunnel_type: Option<String>,
    /// WireGuard server endpoint, `host:port`.
    pub wg_endpoint: Option<String>,
    /// WireGuard server public key, base64 of 32 bytes.
    pub wg_public_key: Option<String>,
    /// Optional preshared key, base64 of 32 bytes.
    pub wg_preshared_key: Option<String>,
    /// Routed networks: a list of CIDRs, or one string with one CIDR or several separated by
    /// commas (as cloud-cli-proxy documents it); default `0.0.0.0/0`.
    #[serde(default, deserialize_with = "cidr_list")]
    #[schema(value_type = Option<CidrList>)]
    pub wg_allowed_ips: Option<Vec<String>>,
    /// DNS server reachable through the tunnel.
    pub wg_dns_server: Option<String>,
    /// The client's tunnel address, CIDR (for example `10.64.0.2/32`).
    pub wg_peer_address: Option<String>,
    /// Client private key, base64 of 32 bytes; generated when absent.
    pub wg_private_key: Option<String>,
    /// DNS server of a proxy egress, reached over TCP through the proxy (default 1.1.1.1).
    pub proxy_dns_server: Option<String>,
    /// Internal ranges a proxy egress may still take hosts to: by default connections to
    /// loopback, private (RFC 1918, CGNAT, unique local), link-local (cloud metadata such as
    /// 169.254.169.254), multicast and reserved addresses are refused. A list of CIDRs, or one
    /// string with several separated by commas; `[]` allows none again.
    #[serde(default, deserialize_with = "cidr_list")]
    #[schema(value_type = Option<CidrList>)]
    pub proxy_allowed_ranges: Option<Vec<String>>,
    /// sing-box outbound object of type `socks`, `http`, `shadowsocks`, `vmess` or `trojan`.
    #[schema(value_type = Option<Object>)]
    pub proxy_config: Option<Value>,
}

/// `wg_allowed_ips` as the API takes it: `"0.0.0.0/0"`, `"10.0.0.0/8, 192.168.0.0/16"` or
/// `["0.0.0.0/0"]`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CidrList {
    /// One CIDR, or several separated by commas.
    One(String),
    Many(Vec<String>),
}

fn cidr_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a CIDR string (commas between several) or a list of CIDR strings")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
            ))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(c) = a.next_element::<String>()? {
                out.push(c);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_option(V)
}

/// `proxy_allowed_ranges` checked: each a CIDR, at most 64, written in canonical form.
fn allowed_ranges(given: Option<&[String]>, errs: &mut FieldErrors) -> Vec<IpNet> {
    let given = given.unwrap_or_default();
    if given.len() > 64 {
        errs.add("proxy_allowed_ranges", "at most 64 ranges");
        return vec![];
    }
    let mut out = Vec::new();
    for r in given {
        match r.trim().parse::<IpNet>() {
            Ok(n) => out.push(n.trunc()),
            Err(_) => errs.add(
                "proxy_allowed_ranges",
                format!("`{r}` is not a CIDR range such as 10.0.0.0/8"),
            ),
        }
    }
    out
}

/// Stored settings of an egress (secrets included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "tunnel_type", rename_all = "lowercase")]
pub enum EgressSettings {
    Wireguard(WireguardSettings),
    Proxy {
        proxy_config: ProxyConfig,
        /// DNS server the engine asks (over TCP, through the proxy); default 1.1.1.1.
        #[serde(default = "default_proxy_dns")]
        dns_server: String,
        /// Internal ranges (private, link-local, loopback...) hosts may still reach through
        /// the proxy; every other internal address is refused (destinations.rs).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allowed_ranges: Vec<IpNet>,
    },
}

/// The DNS server a proxy egress resolves through when none is given.
pub const DEFAULT_PROXY_DNS: &str = "1.1.1.1";

fn default_proxy_dns() -> String {
    DEFAULT_PROXY_DNS.into()
}

impl EgressSettings {
    pub fn tunnel_type(&self) -> &'static str {
        match self {
            EgressSettings::Wireguard(_) => "wireguard",
            EgressSettings::Proxy { .. } => "proxy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireguardSettings {
    pub endpoint: String,
    pub public_key: String,
    pub preshared_key: Option<String>,
    pub allowed_ips: Vec<String>,
    pub dns_server: String,
    pub peer_address: String,
    pub private_key: String,
    pub client_public_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsSettings {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

/// A proxy outbound in sing-box's format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProxyConfig {
    Socks {
        server: String,
        server_port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
    Http {
        server: String,
        server_port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<TlsSettings>,
    },
    Shadowsocks {
        server: String,
        server_port: u16,
        method: String,
        password: String,
    },
    Vmess {
        server: String,
        server_port: u16,
        uuid: String,
        security: String,
        alter_id: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<TlsSettings>,
    },
    Trojan {
        server: String,
        server_port: u16,
        password: String,
        tls: TlsSettings,
    },
}

impl ProxyConfig {
    /// The secret-free view: passwords and uuids replaced by [`MASK`].
    pub fn masked(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            for key in ["password", "uuid"] {
                if m.contains_key(key) {
                    m.insert(key.into(), Value::String(MASK.into()));
                }
            }
        }
        v
    }
}

/// A validated egress, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEgress {
    pub label: String,
    pub ip_address: String,
    pub provider: String,
    pub settings: EgressSettings,
}

/// The stored egress as an input, so that an update can overlay it.
pub fn to_input(
    label: &str,
    ip_address: &str,
    provider: &str,
    settings: &EgressSettings,
) -> EgressInput {
    let mut input = EgressInput {
        label: Some(label.into()),
        ip_address: Some(ip_address.into()),
        provider: Some(provider.into()),
        tunnel_type: Some(settings.tunnel_type().into()),
        ..Default::default()
    };
    match settings {
        EgressSettings::Wireguard(w) => {
            input.wg_endpoint = Some(w.endpoint.clone());
            input.wg_public_key = Some(w.public_key.clone());
            input.wg_preshared_key = w.preshared_key.clone();
            input.wg_allowed_ips = Some(w.allowed_ips.clone());
            input.wg_dns_server = Some(w.dns_server.clone());
            input.wg_peer_address = Some(w.peer_address.clone());
            input.wg_private_key = Some(w.private_key.clone());
        }
        EgressSettings::Proxy {
            proxy_config,
            dns_server,
            allowed_ranges,
        } => {
            input.proxy_config = serde_json::to_value(proxy_config).ok();
            input.proxy_dns_server = Some(dns_server.clone());
            input.proxy_allowed_ranges =
                Some(allowed_ranges.iter().map(ToString::to_string).collect());
        }
    }
    input
}

/// Overlays the fields present in `update` on `base`. A secret sent back as [`MASK`] keeps the
/// stored value, so a client may round-trip what it read, but only while it would go to the
/// same peer: for a proxy the same type, server, port and TLS name; for WireGuard the same
/// endpoint and server key. Re-pointed elsewhere, a masked secret is refused (422 naming the
/// field): the old secret must never reach a new server because a client echoed a mask.
pub fn overlay(mut base: EgressInput, update: EgressInput) -> Result<EgressInput, FieldErrors> {
    let mut errs = FieldErrors::new();
    let wg_same_peer = update
        .wg_endpoint
        .as_ref()
        .is_none_or(|e| Some(e.trim()) == base.wg_endpoint.as_deref().map(str::trim))
        && update
            .wg_public_key
            .as_ref()
            .is_none_or(|k| Some(k.trim()) == base.wg_public_key.as_deref().map(str::trim));
    let mut keep_secret = |field: &str, new: Option<String>, old: Option<String>| match new {
        Some(v) if v == MASK => {
            if !wg_same_peer {
                errs.add(
                    field,
                    "the endpoint or server key changed: give the secret again (a masked value \
                     is kept only for the same peer)",
                );
            }
            old
        }
        other => other,
    };
    macro_rules! take {
        ($($f:ident),*) => { $( if update.$f.is_some() { base.$f = update.$f; } )* };
    }
    let switching_type = update.tunnel_type.is_some() && update.tunnel_type != base.tunnel_type;
    if switching_type {
        // A different tunnel type starts from nothing but the common fields.
        base = EgressInput {
            label: base.label,
            ip_address: base.ip_address,
            provider: base.provider,
            ..Default::default()
        };
    }
    if update.wg_private_key.is_some() {
        base.wg_private_key = keep_secret(
            "wg_private_key",
            update.wg_private_key,
            base.wg_private_key.take(),
        );
    }
    if update.wg_preshared_key.is_some() {
        base.wg_preshared_key = keep_secret(
            "wg_preshared_key",
            update.wg_preshared_key,
            base.wg_preshared_key.take(),
        );
    }
    if let Some(Value::Object(mut new)) = update.proxy_config.clone() {
        let old = match &base.proxy_config {
            Some(Value::Object(old)) => Some(old),
            _ => None,
        };
        let same_peer = old.is_some_and(|old| same_proxy_peer(old, &new));
        for key in ["password", "uuid"] {
            if new.get(key) != Some(&Value::String(MASK.into())) {
                continue;
            }
            match old.and_then(|o| o.get(key)).filter(|_| same_peer) {
                Some(v) => {
                    new.insert(key.into(), v.clone());
                }
                None => errs.add(
                    format!("proxy_config.{key}"),
                    "the type, server, port or TLS name changed: give the secret again (a \
                     masked value is kept only for the same server)",
                ),
            }
        }
        base.proxy_config = Some(Value::Object(new));
    } else if update.proxy_config.is_some() {
        base.proxy_config = update.proxy_config;
    }
    take!(
        label,
        ip_address,
        provider,
        tunnel_type,
        wg_endpoint,
        wg_public_key,
        wg_allowed_ips,
        wg_dns_server,
        wg_peer_address,
        proxy_dns_server,
        proxy_allowed_ranges
    );
    if errs.is_empty() { Ok(base) } else { Err(errs) }
}

/// Whether two sing-box outbounds go to the same peer: type, server, port and TLS name.
fn same_proxy_peer(old: &Map<String, Value>, new: &Map<String, Value>) -> bool {
    let tls_name = |m: &Map<String, Value>| {
        m.get("tls")
            .and_then(|t| t.get("server_name"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let trimmed = |m: &Map<String, Value>, k: &str| match m.get(k) {
        Some(Value::String(s)) => Value::String(s.trim().to_ascii_lowercase()),
        Some(other) => other.clone(),
        None => Value::Null,
    };
    // TLS on (1) and verified (1): a secret goes on only where it is at least as protected as
    // before, so switching TLS off or to `insecure` asks for the secret again.
    let protection = |m: &Map<String, Value>| {
        let tls = m.get("tls");
        let on = tls.and_then(|t| t.get("enabled")) == Some(&Value::Bool(true));
        let verified = tls.and_then(|t| t.get("insecure")) != Some(&Value::Bool(true));
        (on, on && verified)
    };
    let (old_on, old_verified) = protection(old);
    let (new_on, new_verified) = protection(new);
    ["type", "server", "server_port"]
        .iter()
        .all(|k| trimmed(old, k) == trimmed(new, k))
        && tls_name(old) == tls_name(new)
        && (new_on || !old_on)
        && (new_verified || !old_verified)
}

/// Validates a complete input, naming every bad field. Generates the WireGuard client key pair
/// when no private key is given.
pub fn validate(input: EgressInput) -> Result<ValidEgress, FieldErrors> {
    let mut errs = FieldErrors::new();

    let label =
        crate::validation::display_name(input.label.as_deref().unwrap_or_default(), 100, true)
            .unwrap_or_else(|m| {
                errs.add("label", m);
                String::new()
            });
    let ip_address = match input.ip_address.as_deref().map(str::trim) {
        None | Some("") => {
            errs.add(
                "ip_address",
                "is required: the egress's declared exit IP address",
            );
            String::new()
        }
        Some(s) => match s.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                errs.add("ip_address", "must be an IPv4 or IPv6 address");
                String::new()
            }
        },
    };
    let provider =
        crate::validation::display_name(input.provider.as_deref().unwrap_or_default(), 100, false)
            .unwrap_or_else(|m| {
                errs.add("provider", m);
                String::new()
            });

    let settings = match input.tunnel_type.as_deref() {
        Some("wireguard") => {
            validate_wireguard(&input_wg(&input), &mut errs).map(EgressSettings::Wireguard)
        }
        Some("proxy") => match &input.proxy_config {
            Some(v) => {
                let dns_server = match input.proxy_dns_server.as_deref().map(str::trim) {
                    None | Some("") => Some(DEFAULT_PROXY_DNS.to_string()),
                    Some(d) if d.parse::<std::net::Ipv4Addr>().is_ok() => Some(d.to_string()),
                    Some(_) => {
                        errs.add("proxy_dns_server", "must be an IPv4 address");
                        None
                    }
                };
                let allowed_ranges =
                    allowed_ranges(input.proxy_allowed_ranges.as_deref(), &mut errs);
                validate_proxy(v, &mut errs)
                    .zip(dns_server)
                    .map(|(proxy_config, dns_server)| EgressSettings::Proxy {
                        proxy_config,
                        dns_server,
                        allowed_ranges,
                    })
            }
            None => {
                errs.add(
                    "proxy_config",
                    "is required for tunnel_type proxy: a sing-box outbound object",
                );
                None
            }
        },
        Some(_) => {
            errs.add("tunnel_type", "must be wireguard or proxy");
            None
        }
        None => {
            errs.add("tunnel_type", "is required: wireguard or proxy");
            None
        }
    };
    match settings {
        Some(settings) if errs.is_empty() => Ok(ValidEgress {
            label,
            ip_address,
            provider,
            settings,
        }),
        _ => Err(errs),
    }
}

struct WgInput<'a> {
    endpoint: Option<&'a str>,
    public_key: Option<&'a str>,
    preshared_key: Option<&'a str>,
    allowed_ips: Option<&'a [String]>,
    dns_server: Option<&'a str>,
    peer_address: Option<&'a str>,
    private_key: Option<&'a str>,
}

fn input_wg(i: &EgressInput) -> WgInput<'_> {
    WgInput {
        endpoint: i.wg_endpoint.as_deref(),
        public_key: i.wg_public_key.as_deref(),
        preshared_key: i.wg_preshared_key.as_deref().filter(|s| !s.is_empty()),
        allowed_ips: i.wg_allowed_ips.as_deref(),
        dns_server: i.wg_dns_server.as_deref(),
        peer_address: i.wg_peer_address.as_deref(),
        private_key: i.wg_private_key.as_deref().filter(|s| !s.is_empty()),
    }
}

fn validate_wireguard(i: &WgInput<'_>, errs: &mut FieldErrors) -> Option<WireguardSettings> {
    let before = errs.0.len();
    match i.endpoint {
        None => errs.add(
            "wg_endpoint",
            "is required: host:port of the WireGuard server",
        ),
        Some(e) => errs.check("wg_endpoint", check_host_port(e)),
    }
    match i.public_key {
        None => errs.add("wg_public_key", "is required: base64 of 32 bytes"),
        Some(k) => errs.check("wg_public_key", check_key(k)),
    }
    if let Some(k) = i.preshared_key {
        errs.check("wg_preshared_key", check_key(k));
    }
    let allowed_ips: Vec<String> = match i.allowed_ips {
        None => vec!["0.0.0.0/0".into()],
        Some([]) => {
            errs.add("wg_allowed_ips", "must list at least one CIDR");
            vec![]
        }
        Some(list) => list
            .iter()
            .filter_map(|c| match c.trim().parse::<IpNet>() {
                Ok(n) => Some(n.to_string()),
                Err(_) => {
                    errs.add(
                        "wg_allowed_ips",
                        format!("`{c}` is not a CIDR such as 0.0.0.0/0"),
                    );
                    None
                }
            })
            .collect(),
    };
    let dns_server = match i.dns_server {
        None => {
            errs.add(
                "wg_dns_server",
                "is required: an IPv4 address reachable through the tunnel",
            );
            String::new()
        }
        Some(s) => match s.trim().parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => ip.to_string(),
            _ => {
                errs.add("wg_dns_server", "must be an IPv4 address");
                String::new()
            }
        },
    };
    let peer_address = match i.peer_address {
        None => {
            errs.add(
                "wg_peer_address",
                "is required: the client's tunnel address as IPv4 CIDR",
            );
            String::new()
        }
        Some(s) => match s.trim().parse::<IpNet>() {
            Ok(IpNet::V4(n)) => n.to_string(),
            _ => {
                errs.add(
                    "wg_peer_address",
                    "must be an IPv4 CIDR such as 10.64.0.2/32",
                );
                String::new()
            }
        },
    };
    let private_key = match i.private_key {
        Some(k) => {
            errs.check("wg_private_key", check_key(k));
            k.trim().to_string()
        }
        None => generate_private_key(),
    };
    if errs.0.len() != before {
        return None;
    }
    let client_public_key = public_key_of(&private_key)?;
    Some(WireguardSettings {
        endpoint: i.endpoint.unwrap_or_default().trim().to_string(),
        public_key: i.public_key.unwrap_or_default().trim().to_string(),
        preshared_key: i.preshared_key.map(|s| s.trim().to_string()),
        allowed_ips,
        dns_server,
        peer_address,
        private_key,
        client_public_key,
    })
}

/// A new random WireGuard private key, base64.
pub fn generate_private_key() -> String {
    let bytes: [u8; 32] = rand::random();
    B64.encode(x25519_dalek::StaticSecret::from(bytes).to_bytes())
}

/// The public key of a base64 private key.
pub fn public_key_of(private_key: &str) -> Option<String> {
    let raw: [u8; 32] = B64.decode(private_key.trim()).ok()?.try_into().ok()?;
    let secret = x25519_dalek::StaticSecret::from(raw);
    Some(B64.encode(x25519_dalek::PublicKey::from(&secret).as_bytes()))
}

fn check_key(k: &str) -> Result<(), String> {
    match B64.decode(k.trim()) {
        Ok(b) if b.len() == 32 => Ok(()),
        _ => Err("must be base64 of 32 bytes (a WireGuard key)".into()),
    }
}

fn check_host(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && (h.parse::<IpAddr>().is_ok()
            || h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            }));
    if ok {
        Ok(())
    } else {
        Err("must be a host name or IP address".into())
    }
}

fn check_host_port(s: &str) -> Result<(), String> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p)) => (h, p),
            None => return Err("must be host:port, with IPv6 as [addr]:port".into()),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p),
            _ => return Err("must be host:port".into()),
        }
    };
    check_host(host)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("port must be 1 to 65535".into()),
    }
}

/// Reads a sing-box outbound, checking each type's fields.
fn validate_proxy(v: &Value, errs: &mut FieldErrors) -> Option<ProxyConfig> {
    let Value::Object(m) = v else {
        errs.add("proxy_config", "must be a sing-box outbound object");
        return None;
    };
    let before = errs.0.len();
    let f = |k: &str| format!("proxy_config.{k}");
    let kind = m.get("type").and_then(Value::as_str).unwrap_or_default();
    let allowed: &[&str] = match kind {
        "socks" => &["version", "username", "password"],
        "http" => &["username", "password", "tls"],
        "shadowsocks" => &["method", "password"],
        "vmess" => &["uuid", "security", "alter_id", "tls"],
        "trojan" => &["password", "tls"],
        _ => {
            errs.add(
                f("type"),
                "must be one of socks, http, shadowsocks, vmess, trojan",
            );
            return None;
        }
    };
    for key in m.keys() {
        let common = ["type", "tag", "server", "server_port"];
        if !common.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
            errs.add(f(key), format!("is not a setting of a {kind} outbound"));
        }
    }
    let server = match m.get("server").and_then(Value::as_str) {
        Some(s) => {
            errs.check(&f("server"), check_host(s.trim()));
            s.trim().to_string()
        }
        None => {
            errs.add(f("server"), "is required: host name or IP of the proxy");
            String::new()
        }
    };
    let server_port = match m.get("server_port").and_then(Value::as_u64) {
        Some(p @ 1..=65535) => p as u16,
        _ => {
            errs.add(f("server_port"), "is required: a port from 1 to 65535");
            0
        }
    };
    let opt_str = |errs: &mut FieldErrors, key: &str| -> Option<String> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                errs.add(f(key), "must be a non-empty string");
                None
            }
        }
    };
    let req_str = |errs: &mut FieldErrors, key: &str, what: &str| -> String {
        match m.get(key) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                errs.add(f(key), format!("is required: {what}"));
                String::new()
            }
        }
    };
    let config = match kind {
        "socks" => {
            if let Some(v) = m.get("version")
                && v.as_str() != Some("5")
            {
                errs.add(f("version"), "only SOCKS version \"5\" is supported");
            }
            let username = opt_str(errs, "username");
            let password = opt_str(errs, "password");
            if username.is_some() != password.is_some() {
                errs.add(f("password"), "username and password go together");
            }
            ProxyConfig::Socks {
                server,
                server_port,
                username,
                password,
            }
        }
        "http" => {
            let username = opt_str(errs, "username");
            let password = opt_str(errs, "password");
            if username.is_some() != password.is_some() {
                errs.add(f("password"), "username and password go together");
            }
            let tls = validate_tls(m, errs, false);
            ProxyConfig::Http {
                server,
                server_port,
                username,
                password,
                tls,
            }
        }
        "shadowsocks" => {
            let method = req_str(errs, "method", "a cipher name");
            let password = req_str(errs, "password", "the shared password");
            if !method.is_empty() && !SHADOWSOCKS_METHODS.contains(&method.as_str()) {
                errs.add(
                    f("method"),
                    format!("must be one of {}", SHADOWSOCKS_METHODS.join(", ")),
                );
            }
            if let Some(len) = match method.as_str() {
                "2022-blake3-aes-128-gcm" => Some(16),
                "2022-blake3-aes-256-gcm" | "2022-blake3-chacha20-poly1305" => Some(32),
                _ => None,
            } && B64.decode(&password).map(|k| k.len()) != Ok(len)
            {
                errs.add(
                    f("password"),
                    format!("a {method} password is base64 of a {len}-byte key"),
                );
            }
            ProxyConfig::Shadowsocks {
                server,
                server_port,
                method,
                password,
            }
        }
        "vmess" => {
            let uuid = req_str(errs, "uuid", "the user id (UUID)");
            if !uuid.is_empty() && uuid::Uuid::parse_str(&uuid).is_err() {
                errs.add(f("uuid"), "must be a UUID");
            }
            let security = opt_str(errs, "security").unwrap_or_else(|| "auto".into());
            if !VMESS_SECURITIES.contains(&security.as_str()) {
                errs.add(
                    f("security"),
                    format!("must be one of {}", VMESS_SECURITIES.join(", ")),
                );
            }
            let alter_id = match m.get("alter_id") {
                None | Some(Value::Null) => 0,
                Some(v) if v.as_u64() == Some(0) => 0,
                Some(_) => {
                    errs.add(f("alter_id"), "must be 0: only VMess AEAD is supported");
                    0
                }
            };
            let tls = validate_tls(m, errs, false);
            ProxyConfig::Vmess {
                server,
                server_port,
                uuid,
                security,
                alter_id,
                tls,
            }
        }
        _ => {
            let password = req_str(errs, "password", "the trojan password");
            let tls = validate_tls(m, errs, true);
            ProxyConfig::Trojan {
                server: server.clone(),
                server_port,
                password,
                tls: tls.unwrap_or(TlsSettings {
                    enabled: true,
                    server_name: Some(server),
                    insecure: false,
                    alpn: vec![],
                }),
            }
        }
    };
    if errs.0.len() != before {
        return None;
    }
    Some(config)
}

fn validate_tls(
    m: &Map<String, Value>,
    errs: &mut FieldErrors,
    required: bool,
) -> Option<TlsSettings> {
    let tls = match m.get("tls") {
        None | Some(Value::Null) => {
            if required {
                errs.add(
                    "proxy_config.tls",
                    "is required: {\"enabled\": true, \"server_name\": ...}",
                );
            }
            return None;
        }
        Some(Value::Object(t)) => t,
        Some(_) => {
            errs.add("proxy_config.tls", "must be an object");
            return None;
        }
    };
    for key in tls.keys() {
        if !["enabled", "server_name", "insecure", "alpn"].contains(&key.as_str()) {
            errs.add(format!("proxy_config.tls.{key}"), "is not a TLS setting");
        }
    }
    let enabled = match tls.get("enabled") {
        Some(Value::Bool(b)) => *b,
        None => false,
        Some(_) => {
            errs.add("proxy_config.tls.enabled", "must be true or false");
            false
        }
    };
    if required && !enabled {
        errs.add(
            "proxy_config.tls.enabled",
            "must be true: this protocol runs over TLS",
        );
    }
    let server_name = match tls.get("server_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            errs.check("proxy_config.tls.server_name", check_host(s));
            Some(s.clone())
        }
        Some(_) => {
            errs.add("proxy_config.tls.server_name", "must be a host name");
            None
        }
    };
    let insecure = match tls.get("insecure") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errs.add("proxy_config.tls.insecure", "must be true or false");
            false
        }
    };
    let alpn = match tls.get("alpn") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            errs.add("proxy_config.tls.alpn", "must be a list of strings");
            vec![]
        }
    };
    Some(TlsSettings {
        enabled,
        server_name,
        insecure,
        alpn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> String {
        B64.encode([7u8; 32])
    }

    fn wg() -> EgressInput {
        EgressInput {
            label: Some("wg-1".into()),
            ip_address: Some("203.0.113.10".into()),
            tunnel_type: Some("wireguard".into()),
            wg_endpoint: Some("198.51.100.2:51820".into()),
            wg_public_key: Some(key()),
            wg_dns_server: Some("10.64.0.1".into()),
            wg_peer_address: Some("10.64.0.2/32".into()),
            ..Default::default()
        }
    }

    #[test]
    fn wireguard_generates_a_client_key_pair_when_none_is_given() {
        let v = validate(wg()).unwrap();
        let EgressSettings::Wireguard(w) = v.settings else {
            panic!("not wireguard")
        };
        assert_eq!(w.allowed_ips, vec!["0.0.0.0/0"]);
        assert_eq!(public_key_of(&w.private_key).unwrap(), w.client_public_key);
        assert_ne!(w.client_public_key, key());
    }

    #[test]
    fn allowed_ips_come_as_a_string_a_comma_list_or_a_list() {
        let parse = |v: Value| -> Result<Option<Vec<String>>, String> {
            serde_json::from_value::<EgressInput>(serde_json::json!({ "wg_allowed_ips": v }))
                .map(|i| i.wg_allowed_ips)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            parse("0.0.0.0/0".into()).unwrap(),
            Some(vec!["0.0.0.0/0".into()])
        );
        assert_eq!(
            parse("10.0.0.0/8, 192.168.0.0/16".into()).unwrap(),
            Some(vec!["10.0.0.0/8".into(), "192.168.0.0/16".into()])
        );
        assert_eq!(
            parse(serde_json::json!(["0.0.0.0/0"])).unwrap(),
            Some(vec!["0.0.0.0/0".into()])
        );
        assert_eq!(parse(Value::Null).unwrap(), None);
        let missing: EgressInput = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(missing.wg_allowed_ips, None);
        let err = parse(serde_json::json!(5)).unwrap_err();
        assert!(err.contains("CIDR"), "{err}");
        // An empty string lists nothing, which validation refuses by name.
        let mut i = wg();
        i.wg_allowed_ips = parse("".into()).unwrap();
        let errs = validate(i).unwrap_err();
        assert!(errs.0.contains_key("wg_allowed_ips"), "{errs:?}");
    }

    #[test]
    fn wireguard_errors_name_every_field() {
        let mut i = wg();
        i.wg_endpoint = Some("nohostport".into());
        i.wg_public_key = Some("short".into());
        i.wg_allowed_ips = Some(vec!["10.0.0.0/33".into()]);
        i.wg_dns_server = None;
        i.wg_peer_address = Some("10.64.0.2".into());
        let e = validate(i).unwrap_err();
        for field in [
            "wg_endpoint",
            "wg_public_key",
            "wg_allowed_ips",
            "wg_dns_server",
            "wg_peer_address",
        ] {
            assert!(e.0.contains_key(field), "{field} missing in {e:?}");
        }
    }

    #[test]
    fn proxy_types_check_their_fields() {
        let cases = [
            (
                json!({"type": "socks", "server": "192.0.2.1", "server_port": 1080}),
                None,
            ),
            (
                json!({"type": "socks", "server": "192.0.2.1", "server_port": 0}),
                Some("proxy_config.server_port"),
            ),
            (
                json!({"type": "socks", "server": "192.0.2.1", "server_port": 1080, "version": "4"}),
                Some("proxy_config.version"),
            ),
            (
                json!({"type": "http", "server": "proxy.example", "server_port": 3128, "tls": {"enabled": true}}),
                None,
            ),
            (
                json!({"type": "shadowsocks", "server": "192.0.2.1", "server_port": 8388, "method": "aes-256-gcm", "password": "pw"}),
                None,
            ),
            (
                json!({"type": "shadowsocks", "server": "192.0.2.1", "server_port": 8388, "method": "rc4-md5", "password": "pw"}),
                Some("proxy_config.method"),
            ),
            (
                json!({"type": "shadowsocks", "server": "192.0.2.1", "server_port": 8388, "method": "2022-blake3-aes-128-gcm", "password": "pw"}),
                Some("proxy_config.password"),
            ),
            (
                json!({"type": "vmess", "server": "192.0.2.1", "server_port": 443, "uuid": "b831381d-6324-4d53-ad4f-8cda48b30811"}),
                None,
            ),
            (
                json!({"type": "vmess", "server": "192.0.2.1", "server_port": 443, "uuid": "nope"}),
                Some("proxy_config.uuid"),
            ),
            (
                json!({"type": "vmess", "server": "192.0.2.1", "server_port": 443, "uuid": "b831381d-6324-4d53-ad4f-8cda48b30811", "alter_id": 64}),
                Some("proxy_config.alter_id"),
            ),
            (
                json!({"type": "trojan", "server": "192.0.2.1", "server_port": 443, "password": "pw", "tls": {"enabled": true, "server_name": "t.example", "insecure": true}}),
                None,
            ),
            (
                json!({"type": "trojan", "server": "192.0.2.1", "server_port": 443, "password": "pw"}),
                Some("proxy_config.tls"),
            ),
            (
                json!({"type": "vless", "server": "192.0.2.1", "server_port": 443}),
                Some("proxy_config.type"),
            ),
            (
                json!({"type": "socks", "server": "192.0.2.1", "server_port": 1080, "bogus": 1}),
                Some("proxy_config.bogus"),
            ),
        ];
        for (cfg, field) in cases {
            let input = EgressInput {
                label: Some("p".into()),
                ip_address: Some("203.0.113.20".into()),
                tunnel_type: Some("proxy".into()),
                proxy_config: Some(cfg.clone()),
                ..Default::default()
            };
            match (validate(input), field) {
                (Ok(_), None) => {}
                (Err(e), Some(f)) => assert!(e.0.contains_key(f), "{cfg}: {e:?}"),
                (got, want) => panic!("{cfg}: got {got:?}, wanted error on {want:?}"),
            }
        }
    }

    #[test]
    fn masked_secrets_round_trip_through_an_update() {
        let input = EgressInput {
            label: Some("ss".into()),
            ip_address: Some("203.0.113.20".into()),
            tunnel_type: Some("proxy".into()),
            proxy_config: Some(
                json!({"type": "shadowsocks", "server": "192.0.2.1", "server_port": 8388, "method": "aes-256-gcm", "password": "s3cret"}),
            ),
            ..Default::default()
        };
        let v = validate(input).unwrap();
        let EgressSettings::Proxy { proxy_config, .. } = &v.settings else {
            panic!()
        };
        let masked = proxy_config.masked();
        assert_eq!(masked["password"], MASK);
        let base = to_input(&v.label, &v.ip_address, &v.provider, &v.settings);
        // Re-pointed (another port, another server, TLS name or type): the mask is refused.
        for (key, value) in [
            ("server_port", json!(8389)),
            ("server", json!("192.0.2.99")),
            ("type", json!("socks")),
        ] {
            let mut change = masked.clone();
            change[key] = value;
            let errs = overlay(
                base.clone(),
                EgressInput {
                    proxy_config: Some(change),
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert!(
                errs.0.contains_key("proxy_config.password"),
                "{key}: {errs:?}"
            );
        }
        // The same server with another cipher keeps the secret.
        let mut change = masked.clone();
        change["method"] = json!("aes-128-gcm");
        let merged = overlay(
            base,
            EgressInput {
                proxy_config: Some(change),
                ..Default::default()
            },
        )
        .unwrap();
        let v2 = validate(merged).unwrap();
        let EgressSettings::Proxy { proxy_config, .. } = v2.settings else {
            panic!()
        };
        assert_eq!(
            proxy_config,
            ProxyConfig::Shadowsocks {
                server: "192.0.2.1".into(),
                server_port: 8388,
                method: "aes-128-gcm".into(),
                password: "s3cret".into()
            }
        );
    }

    #[test]
    fn a_masked_secret_is_not_kept_when_tls_is_turned_off_or_made_insecure() {
        let input = EgressInput {
            label: Some("trojan".into()),
            ip_address: Some("203.0.113.20".into()),
            tunnel_type: Some("proxy".into()),
            proxy_config: Some(
                json!({"type": "trojan", "server": "192.0.2.1", "server_port": 443,
                "password": "s3cret", "tls": {"enabled": true, "server_name": "t.example"}}),
            ),
            ..Default::default()
        };
        let v = validate(input).unwrap();
        let base = to_input(&v.label, &v.ip_address, &v.provider, &v.settings);
        let EgressSettings::Proxy { proxy_config, .. } = &v.settings else {
            panic!()
        };
        let masked = proxy_config.masked();
        let with_tls = |tls: Value| {
            let mut c = masked.clone();
            c["tls"] = tls;
            overlay(
                base.clone(),
                EgressInput {
                    proxy_config: Some(c),
                    ..Default::default()
                },
            )
        };
        for weaker in [
            json!({"enabled": false, "server_name": "t.example"}),
            json!({"enabled": true, "server_name": "t.example", "insecure": true}),
        ] {
            let errs = with_tls(weaker.clone()).unwrap_err();
            assert!(
                errs.0.contains_key("proxy_config.password"),
                "{weaker}: {errs:?}"
            );
        }
        // As protected as before: the secret is kept.
        let same =
            with_tls(json!({"enabled": true, "server_name": "t.example", "insecure": false}));
        assert!(same.is_ok(), "{same:?}");
    }

    #[test]
    fn allowed_ranges_are_cidrs_kept_in_canonical_form() {
        let input = |ranges: Value| EgressInput {
            label: Some("s".into()),
            ip_address: Some("203.0.113.20".into()),
            tunnel_type: Some("proxy".into()),
            proxy_config: Some(
                json!({"type": "socks", "server": "192.0.2.1", "server_port": 1080}),
            ),
            proxy_allowed_ranges: serde_json::from_value::<EgressInput>(
                json!({"proxy_allowed_ranges": ranges}),
            )
            .unwrap()
            .proxy_allowed_ranges,
            ..Default::default()
        };
        let v = validate(input(json!("10.1.2.3/8, 192.168.0.0/16"))).unwrap();
        let EgressSettings::Proxy { allowed_ranges, .. } = &v.settings else {
            panic!()
        };
        let shown: Vec<String> = allowed_ranges.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.168.0.0/16"]);
        let errs = validate(input(json!(["10.0.0.0/33"]))).unwrap_err();
        assert!(errs.0.contains_key("proxy_allowed_ranges"), "{errs:?}");
    }
}
