//! Probes: the three checks that prove an egress, run through a given network path.
//!
//! - connectivity: an HTTP request to the probe URL succeeds (latency reported);
//! - exit IP: the IP echo services see the egress's declared address (a different address
//!   fails; the declared one is never rewritten);
//! - DNS leak: a whoami name resolved through the egress's DNS path is answered with the
//!   resolver address the authoritative server saw; any such address that is Sluice's own
//!   direct address (the host's own path) is a leak. Through a proxy egress, whose names are
//!   resolved by the proxy itself, the A answer must be a synthetic address (no lookup was
//!   made on the way), and the whoami TXT query goes through the proxy where it carries it.
//!
//! Sockets are made inside the path's network namespace, so the probes take exactly the route
//! the host's processes take. Names are resolved through the path's DNS server only.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa::ToSchema;

use crate::netns::NetNs;

/// What to probe, from the settings (`SLUICE_PROBE_URL`, `SLUICE_PROBE_IP_URLS`,
/// `SLUICE_PROBE_DNS_NAME`).
#[derive(Debug, Clone)]
pub struct Targets {
    /// Fetched for the connectivity check (http://).
    pub url: String,
    /// IP echo services (http://), each answering the caller's address as text.
    pub ip_urls: Vec<String>,
    /// A whoami name; a leading `*.` is replaced by a random label for each test.
    pub dns_name: String,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            url: "http://api.ipify.org/".into(),
            ip_urls: vec![
                "http://api.ipify.org/".into(),
                "http://ifconfig.me/ip".into(),
            ],
            dns_name: "o-o.myaddr.l.google.com".into(),
        }
    }
}

/// A network path: where sockets are made, and which DNS server names go to.
#[derive(Debug, Clone)]
pub struct Path {
    /// `None`: Sluice's own namespace.
    pub ns: Option<NetNs>,
    /// `None`: the system's resolver (only for Sluice's own path).
    pub dns: Option<IpAddr>,
    /// Whether the path's resolver answers A queries with synthetic addresses that the egress
    /// dials by name (a proxy egress: names are resolved by the proxy).
    pub names_at_egress: bool,
}

impl Path {
    /// The path through an egress's data plane in namespace `ns`: names go to the resolver a
    /// host behind that egress uses (the WireGuard egress's DNS server, or the proxy engine's
    /// resolver address, answered through the proxy).
    pub fn through(ns: NetNs, egress: &crate::egress::EgressSettings) -> Path {
        let (dns, names_at_egress) = match egress {
            crate::egress::EgressSettings::Wireguard(w) => (w.dns_server.parse().ok(), false),
            crate::egress::EgressSettings::Proxy { .. } => {
                (Some(crate::egress::proxy::RESOLVER.into()), true)
            }
        };
        Path {
            ns: Some(ns),
            dns,
            names_at_egress,
        }
    }

    /// Sluice's own, direct path.
    pub fn direct() -> Path {
        Path {
            ns: None,
            dns: None,
            names_at_egress: false,
        }
    }
}

const STEP: Duration = Duration::from_secs(8);
/// The most of a probe target's answer that is read.
const MAX_RESPONSE: u64 = 64 * 1024;

/// The outcome of the three checks.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    /// `passed` when every check passed, else `failed`.
    pub status: &'static str,
    pub checks: Checks,
    /// A host's check only: connections its proxy egress refused for their destination
    /// (internal addresses it does not allow) since the egress was attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_destinations: Option<u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub tested_at: time::OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Checks {
    pub connectivity: Connectivity,
    pub exit_ip: ExitIp,
    pub dns_leak: DnsLeak,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Connectivity {
    pub passed: bool,
    pub url: String,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExitIp {
    pub passed: bool,
    /// The declared exit address.
    pub expected: String,
    /// What the echo services saw (the first answer).
    pub observed: Option<String>,
    /// Each service's answer.
    pub sources: Vec<EchoAnswer>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EchoAnswer {
    pub url: String,
    pub observed: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DnsLeak {
    pub passed: bool,
    /// The name queried.
    pub name: String,
    /// Resolver addresses the authoritative server saw.
    pub resolvers: Vec<String>,
    /// Those that are Sluice's own direct address: queries that left outside the egress.
    pub leaked: Vec<String>,
    /// Sluice's own address on its direct path, when it could be learnt.
    pub direct_address: Option<String>,
    /// Whether names are resolved by the egress itself (a proxy egress): the path's resolver
    /// answered the A query with a synthetic address without asking anyone, and connections
    /// to that address are dialled through the proxy by name.
    pub resolved_at_egress: bool,
    /// The synthetic address the A query was answered with, when names are resolved at the
    /// egress.
    pub synthetic_address: Option<String>,
    /// What else was learnt, when the check passed anyway (a proxy that carries no DNS
    /// queries of other types).
    pub detail: Option<String>,
    pub error: Option<String>,
}

/// Runs the three checks through `path`, comparing with `expected` (the declared exit IP).
/// `direct` is Sluice's own path, used to learn which resolver addresses would be leaks.
pub async fn run(targets: &Targets, path: &Path, direct: &Path, expected: &str) -> Report {
    let deadline = Duration::from_secs(30);
    let (connectivity, exit_ip, dns_leak) = tokio::join!(
        tokio::time::timeout(deadline, connectivity(targets, path)),
        tokio::time::timeout(deadline, exit_ip(targets, path, expected)),
        tokio::time::timeout(deadline, dns_leak(targets, path, direct)),
    );
    let connectivity = connectivity.unwrap_or_else(|_| Connectivity {
        passed: false,
        url: targets.url.clone(),
        latency_ms: None,
        error: Some("timed out".into()),
    });
    let exit_ip = exit_ip.unwrap_or_else(|_| ExitIp {
        passed: false,
        expected: expected.into(),
        observed: None,
        sources: vec![],
        error: Some("timed out".into()),
    });
    let dns_leak = dns_leak.unwrap_or_else(|_| DnsLeak {
        passed: false,
        name: targets.dns_name.clone(),
        resolvers: vec![],
        leaked: vec![],
        direct_address: None,
        resolved_at_egress: false,
        synthetic_address: None,
        detail: None,
        error: Some("timed out".into()),
    });
    let mut dns_leak = dns_leak;
    require_resolution_at_egress(&mut dns_leak, &connectivity, &targets.url);
    let passed = connectivity.passed && exit_ip.passed && dns_leak.passed;
    Report {
        status: if passed { "passed" } else { "failed" },
        checks: Checks {
            connectivity,
            exit_ip,
            dns_leak,
        },
        tested_at: crate::clock::now(),
        refused_destinations: None,
    }
}

async fn connectivity(targets: &Targets, path: &Path) -> Connectivity {
    let started = Instant::now();
    match http_get(path, &targets.url).await {
        Ok((status, _)) if (200..400).contains(&status) => Connectivity {
            passed: true,
            url: targets.url.clone(),
            latency_ms: Some(started.elapsed().as_millis() as u64),
            error: None,
        },
        Ok((status, _)) => Connectivity {
            passed: false,
            url: targets.url.clone(),
            latency_ms: Some(started.elapsed().as_millis() as u64),
            error: Some(format!("HTTP status {status}")),
        },
        Err(e) => Connectivity {
            passed: false,
            url: targets.url.clone(),
            latency_ms: None,
            error: Some(e),
        },
    }
}

/// Asks each echo service for the caller's address.
async fn observe_address(targets: &Targets, path: &Path) -> Vec<EchoAnswer> {
    let mut answers = Vec::new();
    for url in &targets.ip_urls {
        let answer = match http_get(path, url).await {
            Ok((200, body)) => match body.trim().parse::<IpAddr>() {
                Ok(ip) => EchoAnswer {
                    url: url.clone(),
                    observed: Some(ip.to_string()),
                    error: None,
                },
                Err(_) => EchoAnswer {
                    url: url.clone(),
                    observed: None,
                    error: Some("the answer is not an IP address".into()),
                },
            },
            Ok((status, _)) => EchoAnswer {
                url: url.clone(),
                observed: None,
                error: Some(format!("HTTP status {status}")),
            },
            Err(e) => EchoAnswer {
                url: url.clone(),
                observed: None,
                error: Some(e),
            },
        };
        answers.push(answer);
    }
    answers
}

async fn exit_ip(targets: &Targets, path: &Path, expected: &str) -> ExitIp {
    let sources = observe_address(targets, path).await;
    let seen: Vec<&String> = sources.iter().filter_map(|a| a.observed.as_ref()).collect();
    let expected_ip = expected.parse::<IpAddr>().ok();
    let passed = !seen.is_empty()
        && seen
            .iter()
            .all(|s| s.parse::<IpAddr>().ok() == expected_ip && expected_ip.is_some());
    let error = if seen.is_empty() {
        Some("no echo service answered".into())
    } else if !passed {
        Some(format!(
            "the egress exits from {} but is declared as {expected}",
            seen.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        None
    };
    ExitIp {
        passed,
        expected: expected.into(),
        observed: seen.first().map(|s| s.to_string()),
        sources,
        error,
    }
}

async fn dns_leak(targets: &Targets, path: &Path, direct: &Path) -> DnsLeak {
    let name = match targets.dns_name.strip_prefix("*.") {
        Some(rest) => format!("sl{:016x}.{rest}", rand::random::<u64>()),
        None => targets.dns_name.clone(),
    };
    // Sluice's own direct address: what a leaked query would come from.
    let direct_address = observe_address(targets, direct)
        .await
        .into_iter()
        .find_map(|a| a.observed);
    let mut resolvers = Vec::new();
    let mut errors = Vec::new();
    // Through a proxy egress the A answer is the name's synthetic address (names.rs); any
    // other address there means something else answered.
    let mut synthetic = None;
    let mut real_a = None;
    for qtype in [RecordType::TXT, RecordType::A] {
        match resolve(path, &name, qtype).await {
            Ok(answers) => {
                for a in answers {
                    if path.names_at_egress && qtype == RecordType::A {
                        match a.parse() {
                            Ok(ip) if crate::egress::proxy::names::in_pool(ip) => {
                                synthetic = Some(a)
                            }
                            _ => real_a = Some(a),
                        }
                        continue;
                    }
                    if !resolvers.contains(&a) {
                        resolvers.push(a);
                    }
                }
            }
            Err(e) => errors.push(format!("{qtype}: {e}")),
        }
    }
    let leaked: Vec<String> = resolvers
        .iter()
        .filter(|r| Some(*r) == direct_address.as_ref())
        .cloned()
        .collect();
    let resolved_at_egress = path.names_at_egress && synthetic.is_some() && real_a.is_none();
    let mut detail = None;
    let (passed, error) = if !leaked.is_empty() {
        (
            false,
            Some("DNS queries reached the authoritative server from Sluice's own address".into()),
        )
    } else if path.names_at_egress && !resolved_at_egress {
        let why = match (&real_a, errors.is_empty()) {
            (Some(a), _) => format!(
                "the host's resolver answered {name} with {a}, not a synthetic address: names are not resolved at the egress"
            ),
            (None, false) => errors.join("; "),
            (None, true) => "the host's resolver gave no address".into(),
        };
        (false, Some(why))
    } else if resolvers.is_empty() && !resolved_at_egress {
        (
            false,
            Some(if errors.is_empty() {
                "the whoami name had no answer".into()
            } else {
                errors.join("; ")
            }),
        )
    } else {
        if resolved_at_egress && resolvers.is_empty() {
            detail = Some(format!(
                "names are resolved by the proxy; queries of other types through it failed ({})",
                if errors.is_empty() {
                    "no answer".to_string()
                } else {
                    errors.join("; ")
                }
            ));
        }
        (true, None)
    };
    DnsLeak {
        passed,
        name,
        resolvers,
        leaked,
        direct_address,
        resolved_at_egress,
        synthetic_address: synthetic,
        detail,
        error,
    }
}

/// A synthetic A answer is given without asking anyone, so on its own it proves nothing about
/// the proxy. Where no query went through the proxy either (it refused them, or it is down),
/// the DNS check passes only if the connectivity check reached the probe URL's host by name,
/// which the proxy resolved to connect.
fn require_resolution_at_egress(dns: &mut DnsLeak, connectivity: &Connectivity, url: &str) {
    if !(dns.passed && dns.resolved_at_egress && dns.resolvers.is_empty()) {
        return;
    }
    let host = split_http_url(url).map_or("", |(_, host, ..)| host);
    let by_name = !host.is_empty() && host.parse::<IpAddr>().is_err();
    if connectivity.passed && by_name {
        dns.detail = dns
            .detail
            .take()
            .map(|d| format!("{d}; {host} was reached by name through the proxy"));
        return;
    }
    dns.passed = false;
    dns.detail = None;
    dns.error = Some(if by_name {
        format!(
            "nothing was resolved at the egress: the proxy carried no DNS query and {host} was not reached through it"
        )
    } else {
        "nothing was resolved at the egress: the proxy carried no DNS query, and the probe URL names no host to reach by name".into()
    });
}

/// Sends one DNS query to the path's server over UDP; answers A addresses and TXT strings.
pub async fn resolve(path: &Path, name: &str, qtype: RecordType) -> Result<Vec<String>, String> {
    let qname = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .map_err(|e| format!("bad name {name}: {e}"))?;
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(hickory_proto::op::Query::query(qname, qtype));
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let sock = match &path.ns {
        Some(ns) => ns.bind_udp().await,
        None => tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await,
    }
    .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let server = SocketAddr::new(
        path.dns.ok_or("this path has no DNS server of its own")?,
        53,
    );
    let mut buf = vec![0u8; 4096];
    for _attempt in 0..2 {
        sock.send_to(&bytes, server)
            .await
            .map_err(|e| format!("DNS query to {server} failed: {e}"))?;
        let Ok(r) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await
        else {
            continue;
        };
        let (n, _) = r.map_err(|e| format!("DNS answer from {server} failed: {e}"))?;
        let resp = Message::from_vec(&buf[..n]).map_err(|e| format!("bad DNS answer: {e}"))?;
        if resp.metadata.id != msg.metadata.id {
            continue;
        }
        let code = resp.metadata.response_code;
        if code != hickory_proto::op::ResponseCode::NoError {
            return Err(format!("{server} answered {code}"));
        }
        return Ok(resp
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).to_string())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect());
    }
    Err(format!("no DNS answer from {server}"))
}

/// An http:// probe URL's authority, host, port (80 if none) and request target.
fn split_http_url(url: &str) -> Result<(&str, &str, u16, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// probe URLs are supported"))?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{url}: bad port"))?),
        None => (authority, 80),
    };
    Ok((authority, host, port, target))
}

/// A minimal HTTP/1.1 GET over a socket made in the path's namespace; answers the status and
/// body. The host name resolves through the path's DNS server.
async fn http_get(path: &Path, url: &str) -> Result<(u16, String), String> {
    let (authority, host, port, target) = split_http_url(url)?;
    let ip = match (host.parse::<IpAddr>(), path.dns) {
        (Ok(ip), _) => ip,
        (Err(_), Some(_)) => resolve(path, host, RecordType::A)
            .await?
            .iter()
            .find_map(|a| a.parse::<IpAddr>().ok())
            .ok_or_else(|| format!("{host} has no address"))?,
        (Err(_), None) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .map(|a| a.ip())
            .find(IpAddr::is_ipv4)
            .ok_or_else(|| format!("{host} has no IPv4 address"))?,
    };
    let addr = SocketAddr::new(ip, port);
    let mut stream = match &path.ns {
        Some(ns) => ns.connect_tcp(addr, STEP).await,
        None => tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("timed out"))),
    }
    .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: sluice-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    // Echo services answer a few bytes: anything past this is cut off, not buffered.
    let mut resp = Vec::new();
    tokio::time::timeout(
        STEP,
        (&mut stream).take(MAX_RESPONSE).read_to_end(&mut resp),
    )
    .await
    .map_err(|_| format!("{url}: no answer within {} s", STEP.as_secs()))?
    .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Keeps a report as the egress's last test result, with an `egress.tested` event.
pub async fn record(
    store: &crate::store::Store,
    egress_id: uuid::Uuid,
    label: &str,
    actor: &str,
    source: Option<String>,
    report: &Report,
) -> crate::store::Result<()> {
    let value = serde_json::to_value(report).unwrap_or(serde_json::Value::Null);
    let mut tx = store.begin().await?;
    crate::store::egress::set_last_test(tx.conn(), egress_id, &value).await?;
    crate::events::record(
        tx.conn(),
        crate::events::NewEvent::new(actor, "egress.tested", "egress_ip")
            .target(egress_id)
            .source(source)
            .details(serde_json::json!({
                "label": label,
                "status": report.status,
                "exit_ip": report.checks.exit_ip.observed,
                "resolvers": report.checks.dns_leak.resolvers,
            })),
    )
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic_only() -> DnsLeak {
        DnsLeak {
            passed: true,
            name: "sl1.whoami.test".into(),
            resolvers: vec![],
            leaked: vec![],
            direct_address: None,
            resolved_at_egress: true,
            synthetic_address: Some("198.19.0.1".into()),
            detail: Some("names are resolved by the proxy; queries of other types through it failed (TXT: refused)".into()),
            error: None,
        }
    }

    fn reached(passed: bool) -> Connectivity {
        Connectivity {
            passed,
            url: String::new(),
            latency_ms: None,
            error: None,
        }
    }

    #[test]
    fn a_synthetic_answer_alone_does_not_pass_the_dns_check() {
        // The proxy is down: nothing went through it.
        let mut dns = synthetic_only();
        require_resolution_at_egress(&mut dns, &reached(false), "http://echo.lab.test/");
        assert!(!dns.passed);
        assert!(
            dns.error
                .as_deref()
                .unwrap()
                .contains("echo.lab.test was not reached")
        );
        // Reached, but by address: the proxy resolved nothing.
        let mut dns = synthetic_only();
        require_resolution_at_egress(&mut dns, &reached(true), "http://192.0.2.1:8080/");
        assert!(!dns.passed, "{:?}", dns.error);
    }

    #[test]
    fn a_host_reached_by_name_through_the_proxy_proves_it_resolves() {
        let mut dns = synthetic_only();
        require_resolution_at_egress(&mut dns, &reached(true), "http://echo.lab.test:443/");
        assert!(dns.passed);
        assert!(
            dns.detail
                .unwrap()
                .contains("echo.lab.test was reached by name")
        );
        // A query the proxy carried is proof enough on its own.
        let mut dns = synthetic_only();
        dns.resolvers = vec!["203.0.113.53".into()];
        require_resolution_at_egress(&mut dns, &reached(false), "http://192.0.2.1/");
        assert!(dns.passed);
    }
}
