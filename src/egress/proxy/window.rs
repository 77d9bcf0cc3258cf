//! TCP flow control between a container and the userspace stack. ipstack acknowledges the
//! container's data as soon as it arrives and queues it for the relay without limit, and the
//! window it advertises does not shrink with that queue: a container uploading faster than
//! its proxy takes would pile its upload up in Sluice's memory. This module puts the
//! container's own TCP back in charge, from the packets alone:
//!
//! - each flow's backlog (bytes ipstack took that the relay has not read yet) is counted:
//!   new payload bytes in from the container, bytes out to the relay;
//! - every segment to the container has its window clamped to what is left of
//!   [`MAX_BACKLOG`], so a well-behaved sender stops when the relay falls behind;
//! - when the relay frees room after the window was (nearly) closed, a window update is sent
//!   to the container at once (it would otherwise wait for its persist timer);
//! - new data beyond the backlog and the window in flight (a sender that ignores the window)
//!   is dropped before ipstack sees it, as a congested router would; TCP sends it again.
//!
//! Pure packet logic, no I/O: the TUN loop calls [`Windows::inbound`] and
//! [`Windows::outbound`], the relay [`FlowWindow::consumed`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Bytes of one flow that may wait in Sluice for its proxy.
pub const MAX_BACKLOG: u64 = 1 << 20;
/// What may still arrive once the window is clamped: ipstack advertises at most 64 KiB.
const IN_FLIGHT: u64 = 64 * 1024;
/// Below this the window counts as closed, and reopening it is announced.
const NEARLY_CLOSED: u64 = 4 * 1460;

/// A TCP flow as the container sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub container: SocketAddrV4,
    pub remote: SocketAddrV4,
}

/// The fields of an IPv4 TCP segment this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    /// Where the TCP header starts.
    tcp_at: usize,
    payload_len: u32,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

fn parse(p: &[u8]) -> Option<Segment> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 6 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    if ihl < 20 || total < ihl + 20 {
        return None;
    }
    let t = &p[ihl..total];
    let data_at = usize::from(t[12] >> 4) * 4;
    if data_at < 20 || data_at > t.len() {
        return None;
    }
    let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
    let word = |o: usize| u32::from_be_bytes([t[o], t[o + 1], t[o + 2], t[o + 3]]);
    Some(Segment {
        src: SocketAddrV4::new(ip(12), u16::from_be_bytes([t[0], t[1]])),
        dst: SocketAddrV4::new(ip(16), u16::from_be_bytes([t[2], t[3]])),
        seq: word(4),
        ack: word(8),
        flags: t[13],
        tcp_at: ihl,
        payload_len: (t.len() - data_at) as u32,
    })
}

/// RFC 1624: the checksum after one 16-bit word changed from `old` to `new`.
fn adjust_checksum(sum: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ones_complement_sum(data: &[u8], mut s: u32) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u32::from(w);
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A bare ACK from `from` to `to` with `seq`, `ack` and `window`, checksums filled in.
fn bare_ack(from: SocketAddrV4, to: SocketAddrV4, seq: u32, ack: u32, window: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&from.ip().octets());
    p[16..20].copy_from_slice(&to.ip().octets());
    let ip_sum = fold(ones_complement_sum(&p[..20], 0));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&from.port().to_be_bytes());
    t[2..4].copy_from_slice(&to.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = ACK;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&from.ip().octets());
    pseudo.extend_from_slice(&to.ip().octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let sum = fold(ones_complement_sum(
        &p[20..],
        ones_complement_sum(&pseudo, 0),
    ));
    p[36..38].copy_from_slice(&sum.to_be_bytes());
    p
}

#[derive(Default)]
struct FlowState {
    /// The end of the highest payload taken in, once any was.
    high: Option<u32>,
    /// (seq, ack) of the next bare ACK towards the container, from the last segment sent.
    next_ack: Option<(u32, u32)>,
    /// The stack sent FIN or RST: no more updates.
    ended: bool,
    window_closed: bool,
}

/// One flow's backlog.
pub struct FlowWindow {
    key: FlowKey,
    taken: AtomicU64,
    read: AtomicU64,
    state: Mutex<FlowState>,
}

impl FlowWindow {
    fn backlog(&self) -> u64 {
        self.taken
            .load(Ordering::Relaxed)
            .saturating_sub(self.read.load(Ordering::Relaxed))
    }

    fn room(&self) -> u64 {
        MAX_BACKLOG.saturating_sub(self.backlog())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlowState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The relay took `n` bytes. Answers a window update for the container when this
    /// reopened a window that was (nearly) closed.
    pub fn consumed(&self, n: usize) -> Option<Vec<u8>> {
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        let room = self.room();
        let mut st = self.lock();
        if !st.window_closed || st.ended || room < MAX_BACKLOG / 2 {
            return None;
        }
        let (seq, ack) = st.next_ack?;
        st.window_closed = false;
        let window = room.min(u64::from(u16::MAX)) as u16;
        Some(bare_ack(
            self.key.remote,
            self.key.container,
            seq,
            ack,
            window,
        ))
    }
}

/// The flows of one host's stack.
#[derive(Default)]
pub struct Windows {
    flows: Mutex<HashMap<FlowKey, Weak<FlowWindow>>>,
}

/// A registered flow; dropping it forgets the flow.
pub struct Registered {
    pub window: Arc<FlowWindow>,
    windows: Arc<Windows>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.windows.lock().remove(&self.window.key);
    }
}

impl Windows {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FlowKey, Weak<FlowWindow>>> {
        self.flows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, key: &FlowKey) -> Option<Arc<FlowWindow>> {
        self.lock().get(key).and_then(Weak::upgrade)
    }

    /// Starts counting the flow the relay took from the stack.
    pub fn register(self: &Arc<Self>, key: FlowKey) -> Registered {
        let window = Arc::new(FlowWindow {
            key,
            taken: AtomicU64::new(0),
            read: AtomicU64::new(0),
            state: Mutex::default(),
        });
        self.lock().insert(key, Arc::downgrade(&window));
        Registered {
            window,
            windows: self.clone(),
        }
    }

    /// A packet from the container: whether the stack may have it. New data beyond the
    /// backlog and what may be in flight is refused.
    pub fn inbound(&self, packet: &[u8]) -> bool {
        let Some(s) = parse(packet) else {
            return true;
        };
        if s.payload_len == 0 {
            return true;
        }
        let key = FlowKey {
            container: s.src,
            remote: s.dst,
        };
        let Some(flow) = self.find(&key) else {
            // Not taken by the relay yet: its first bytes fit in the stack's own window.
            return true;
        };
        let end = s.seq.wrapping_add(s.payload_len);
        let mut st = flow.lock();
        let new = match st.high {
            None => s.payload_len,
            Some(high) => {
                let ahead = end.wrapping_sub(high) as i32;
                if ahead > 0 {
                    (ahead as u32).min(s.payload_len)
                } else {
                    0
                }
            }
        };
        if new == 0 {
            return true; // a retransmission: it fills a gap, or the stack drops it
        }
        if flow.backlog() + u64::from(new) > MAX_BACKLOG + IN_FLIGHT {
            return false;
        }
        flow.taken.fetch_add(u64::from(new), Ordering::Relaxed);
        st.high = Some(end);
        true
    }

    /// A packet from the stack to the container: answers it with its window clamped to the
    /// flow's room, when that changes it (the common case, plenty of room, copies nothing).
    pub fn outbound(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let s = parse(packet)?;
        let key = FlowKey {
            container: s.dst,
            remote: s.src,
        };
        let flow = self.find(&key)?;
        let room = {
            // Room is read under the lock `consumed` takes after counting, so a read that
            // frees room either shows here or sees the window marked closed, and announces it.
            let mut st = flow.lock();
            let room = flow.room();
            if s.flags & (FIN | RST) != 0 {
                st.ended = true;
            }
            if s.flags & SYN == 0 && s.flags & ACK != 0 {
                st.next_ack = Some((s.seq.wrapping_add(s.payload_len), s.ack));
            }
            if room < NEARLY_CLOSED {
                st.window_closed = true;
            }
            room
        };
        let at = s.tcp_at + 14;
        let old = u16::from_be_bytes([packet[at], packet[at + 1]]);
        let new = u64::from(old).min(room) as u16;
        if new == old {
            return None;
        }
        let mut out = packet.to_vec();
        out[at..at + 2].copy_from_slice(&new.to_be_bytes());
        let sum_at = s.tcp_at + 16;
        let sum = u16::from_be_bytes([out[sum_at], out[sum_at + 1]]);
        let sum = adjust_checksum(sum, old, new);
        out[sum_at..sum_at + 2].copy_from_slice(&sum.to_be_bytes());
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    const C: &str = "10.255.255.2:40000";
    const R: &str = "192.0.2.80:80";

    /// A data segment from the container: a bare ACK's headers with a payload added.
    fn data(seq: u32, len: usize) -> Vec<u8> {
        let mut p = bare_ack(addr(C), addr(R), seq, 1, 65535);
        p.extend(std::iter::repeat_n(0xab, len));
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p
    }

    /// The TCP checksum of `p` recomputed from scratch is what the packet carries.
    fn checksum_holds(p: &[u8]) -> bool {
        let t = &p[20..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
        fold(ones_complement_sum(t, ones_complement_sum(&pseudo, 0))) == 0
    }

    #[test]
    fn bare_acks_are_well_formed() {
        let p = bare_ack(addr(R), addr(C), 7, 9, 1234);
        let s = parse(&p).unwrap();
        assert_eq!(
            (s.src, s.dst, s.seq, s.ack, s.flags),
            (addr(R), addr(C), 7, 9, ACK)
        );
        assert_eq!(s.payload_len, 0);
        assert!(checksum_holds(&p));
        assert_eq!(
            fold(ones_complement_sum(&p[..20], 0)),
            0,
            "IPv4 header checksum"
        );
    }

    #[test]
    fn the_window_closes_as_the_backlog_fills_and_reopens_with_an_update() {
        let windows = Arc::new(Windows::default());
        let flow = windows.register(FlowKey {
            container: addr(C),
            remote: addr(R),
        });
        // The container sends a mebibyte the relay does not read.
        let mut seq = 1000u32;
        for _ in 0..(MAX_BACKLOG / 1000) {
            assert!(windows.inbound(&data(seq, 1000)));
            seq = seq.wrapping_add(1000);
        }
        // The stack's ACK to it now offers (almost) no window, checksum kept right.
        let acked = seq;
        let ack = bare_ack(addr(R), addr(C), 1, acked, 65535);
        let ack = windows.outbound(&ack).expect("the window is clamped");
        let window = u16::from_be_bytes([ack[34], ack[35]]);
        assert!(u64::from(window) < NEARLY_CLOSED, "{window}");
        assert!(checksum_holds(&ack));
        // A retransmission passes; new data beyond what may be in flight is dropped.
        assert!(windows.inbound(&data(seq.wrapping_sub(1000), 1000)));
        let mut refused = 0;
        for _ in 0..100 {
            if !windows.inbound(&data(seq, 1000)) {
                refused += 1;
            } else {
                seq = seq.wrapping_add(1000);
            }
        }
        assert!(refused > 0);
        assert!(flow.window.backlog() <= MAX_BACKLOG + IN_FLIGHT);
        // The relay reads a little: no update yet. Then most of it: one update, window open.
        assert!(flow.window.consumed(1000).is_none());
        let update = flow.window.consumed(900_000).expect("a window update");
        let s = parse(&update).unwrap();
        // It repeats the stack's last acknowledgement: only the window is news.
        assert_eq!((s.src, s.dst, s.seq, s.ack), (addr(R), addr(C), 1, acked));
        assert!(u16::from_be_bytes([update[34], update[35]]) > 30_000);
        assert!(checksum_holds(&update));
        assert!(flow.window.consumed(10).is_none(), "announced once");
    }

    #[test]
    fn unknown_flows_and_other_packets_pass_untouched() {
        let windows = Windows::default();
        assert!(windows.inbound(&data(1, 100)));
        let ack = bare_ack(addr(R), addr(C), 1, 1, 65535);
        assert!(windows.outbound(&ack).is_none());
        assert!(windows.inbound(&[0x60; 40]), "IPv6 is not this module's");
        assert!(windows.inbound(&[]));
    }

    #[test]
    fn checksum_adjustment_matches_a_full_recount() {
        let mut p = bare_ack(addr(R), addr(C), 42, 43, 65535);
        let sum = u16::from_be_bytes([p[36], p[37]]);
        p[34..36].copy_from_slice(&1u16.to_be_bytes());
        let adjusted = adjust_checksum(sum, 65535, 1);
        p[36..38].copy_from_slice(&adjusted.to_be_bytes());
        assert!(checksum_holds(&p));
    }
}
