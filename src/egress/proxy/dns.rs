//! DNS of a proxy egress: queries the container sends to its resolver address are answered
//! here. A and AAAA queries for a host name are answered at once, without asking anyone: A
//! with the name's synthetic address (names.rs), which the engine dials through the proxy by
//! name, so the proxy resolves it; AAAA with no address (the container has no IPv6). A
//! reverse lookup of a synthetic address answers its name. Every other query is asked over
//! TCP (two-byte length prefix) of the egress's DNS server through the proxy. Nothing is ever
//! resolved from Sluice's own namespace.
//!
//! Queries of one flow are answered concurrently, up to [`PER_FLOW`] at once and
//! [`in_flight_budget`] across every host; a query beyond either is dropped, as an overloaded
//! resolver would (the client asks again). The flow is read through a bounded queue
//! (queue.rs), so a flood costs a bounded amount of memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::names::{self, Names};
use super::outbound::{Outbound, Target};

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(8);
/// Queries of one flow being answered at once.
pub const PER_FLOW: usize = 16;
/// A DNS message over UDP is at most this long; longer "queries" are not DNS.
const MAX_QUERY: usize = 4096;

/// Queries being answered at once across all hosts (each holds a socket to a proxy).
pub fn in_flight_budget() -> usize {
    (super::descriptor_budget() / 8).clamp(64, 4096)
}

static IN_FLIGHT: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(in_flight_budget())));

/// Answers the queries of one UDP flow to the resolver, until the flow ends.
pub async fn serve<F>(flow: F, outbound: Outbound, server: IpAddr, names: Arc<Names>)
where
    F: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, write) = tokio::io::split(flow);
    let write = Arc::new(Mutex::new(write));
    let per_flow = Arc::new(Semaphore::new(PER_FLOW));
    // Dropped with this function: answers still being looked up end with the flow.
    let mut answering = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; MAX_QUERY];
    loop {
        while answering.try_join_next().is_some() {}
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(answer) = answer_locally(&buf[..n], &names, std::time::Instant::now()) {
            let _ = write.lock().await.write_all(&answer).await;
            continue;
        }
        let (Ok(mine), Ok(global)) = (
            per_flow.clone().try_acquire_owned(),
            IN_FLIGHT.clone().try_acquire_owned(),
        ) else {
            tracing::debug!("proxy egress: DNS queries beyond the cap, one was dropped");
            continue;
        };
        let query = buf[..n].to_vec();
        let (outbound, write) = (outbound.clone(), write.clone());
        answering.spawn(async move {
            let _permits = (mine, global);
            let answer =
                match tokio::time::timeout(QUERY_TIMEOUT, ask(&outbound, server, &query)).await {
                    Ok(Ok(answer)) => Some(answer),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "DNS through the proxy failed");
                        server_failure(&query)
                    }
                    Err(_) => {
                        tracing::debug!("DNS through the proxy timed out");
                        server_failure(&query)
                    }
                };
            // A query the proxy could not carry is told so at once (SERVFAIL), rather than
            // left to time out in the container.
            if let Some(answer) = answer {
                let _ = write.lock().await.write_all(&answer).await;
            }
        });
    }
}

async fn ask(outbound: &Outbound, server: IpAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut s = outbound
        .connect(&Target::Addr(SocketAddr::new(server, 53)))
        .await?;
    let mut msg = Vec::with_capacity(query.len() + 2);
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(query);
    s.write_all(&msg).await?;
    s.flush().await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut answer).await?;
    Ok(answer)
}

/// The answer to `query` when it is one Sluice gives itself: an A or AAAA query (class IN)
/// for a host name, or a reverse lookup of a synthetic address. `None`: ask the DNS server.
pub fn answer_locally(query: &[u8], names: &Names, now: std::time::Instant) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    if req.metadata.message_type != MessageType::Query
        || req.metadata.op_code != OpCode::Query
        || req.queries.len() != 1
    {
        return None;
    }
    let q = &req.queries[0];
    if q.query_class() != DNSClass::IN {
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = ResponseCode::NoError;
    resp.add_query(q.clone());
    match q.query_type() {
        RecordType::A => {
            let name = names::host_name(&q.name().to_ascii())?;
            let ip = names.address_for(&name, now);
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                names::TTL,
                RData::A(A(ip)),
            ));
        }
        // No address: the container has no IPv6, so it goes on with the A answer.
        RecordType::AAAA => {
            names::host_name(&q.name().to_ascii())?;
        }
        RecordType::PTR => {
            let ip = reverse_address(q.name())?;
            if !names::in_pool(ip) {
                return None;
            }
            match names
                .name_of(ip, now)
                .and_then(|n| Name::from_ascii(format!("{n}.")).ok())
            {
                Some(target) => {
                    resp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        names::TTL,
                        RData::PTR(PTR(target)),
                    ));
                }
                None => resp.metadata.response_code = ResponseCode::NXDomain,
            }
        }
        _ => return None,
    }
    resp.to_vec().ok()
}

/// A SERVFAIL answer to `query`, when it is a DNS query at all.
fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::error_msg(
        req.metadata.id,
        req.metadata.op_code,
        ResponseCode::ServFail,
    );
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_queries(req.queries);
    resp.to_vec().ok()
}

/// The IPv4 address a `d.c.b.a.in-addr.arpa.` name stands for.
fn reverse_address(name: &Name) -> Option<std::net::Ipv4Addr> {
    let text = name.to_ascii().to_ascii_lowercase();
    let rest = text
        .strip_suffix(".in-addr.arpa.")
        .or_else(|| text.strip_suffix(".in-addr.arpa"))?;
    let mut octets = [0u8; 4];
    let mut parts = rest.split('.');
    for slot in octets.iter_mut().rev() {
        *slot = parts.next()?.parse().ok()?;
    }
    parts
        .next()
        .is_none()
        .then(|| std::net::Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(names: &Names, name: &str, qtype: RecordType) -> Option<Message> {
        let mut q = Message::query();
        q.metadata.id = 4242;
        q.metadata.recursion_desired = true;
        q.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).unwrap(),
            qtype,
        ));
        let answer = answer_locally(&q.to_vec().unwrap(), names, std::time::Instant::now())?;
        Some(Message::from_vec(&answer).unwrap())
    }

    #[test]
    fn a_queries_get_a_synthetic_address_and_its_reverse_the_name() {
        let names = Names::default();
        let a = ask(&names, "Echo.Lab.Test.", RecordType::A).unwrap();
        assert_eq!(a.metadata.id, 4242);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        let ip = match &a.answers[..] {
            [r] => match &r.data {
                RData::A(A(ip)) => *ip,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert!(names::in_pool(ip));
        assert_eq!(
            names.name_of(ip, std::time::Instant::now()).as_deref(),
            Some("echo.lab.test")
        );
        let [o1, o2, o3, o4] = ip.octets();
        let ptr = ask(
            &names,
            &format!("{o4}.{o3}.{o2}.{o1}.in-addr.arpa."),
            RecordType::PTR,
        )
        .unwrap();
        match &ptr.answers[..] {
            [r] => assert_eq!(
                r.data,
                RData::PTR(PTR(Name::from_ascii("echo.lab.test.").unwrap()))
            ),
            other => panic!("{other:?}"),
        }
        // A synthetic address nobody holds is no name; other addresses are asked upstream.
        let none = ask(&names, "9.9.19.198.in-addr.arpa.", RecordType::PTR).unwrap();
        assert_eq!(none.metadata.response_code, ResponseCode::NXDomain);
        assert!(ask(&names, "1.2.0.192.in-addr.arpa.", RecordType::PTR).is_none());
    }

    #[test]
    fn aaaa_has_no_address_and_other_types_go_upstream() {
        let names = Names::default();
        let aaaa = ask(&names, "echo.lab.test.", RecordType::AAAA).unwrap();
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        for qtype in [RecordType::TXT, RecordType::MX, RecordType::SRV] {
            assert!(ask(&names, "echo.lab.test.", qtype).is_none(), "{qtype:?}");
        }
        // Not DNS at all: asked upstream as before (where it fails on its own).
        assert!(answer_locally(b"nonsense", &names, std::time::Instant::now()).is_none());
        assert!(names.is_empty(), "nothing was given an address");
        // A query the proxy could not carry is answered SERVFAIL, with its id and question.
        let mut q = Message::query();
        q.metadata.id = 7;
        q.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("x.test.").unwrap(),
            RecordType::TXT,
        ));
        let fail = Message::from_vec(&server_failure(&q.to_vec().unwrap()).unwrap()).unwrap();
        assert_eq!(fail.metadata.id, 7);
        assert_eq!(fail.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(fail.queries, q.queries);
        assert!(server_failure(b"nonsense").is_none());
    }
}
