//! RFB, the VNC protocol, where Sluice stands in the middle of a desktop connection. Toward
//! the desktop's VNC server Sluice is the client and answers VNC authentication with the
//! host's password ([`login`]); toward the browser (noVNC) it is the server and asks for no
//! authentication, the browser having proved itself with a ticket ([`Greeting`], a state
//! machine without I/O). After both handshakes the two sides stand at the same point (the
//! browser's ClientInit comes next) and bytes pass unchanged; the browser's messages are
//! followed ([`ClientMessages`]) only to tell a person's input from the viewer's own
//! requests, for the idle timeout.

use des::Des;
use des::cipher::{BlockEncrypt, KeyInit};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version Sluice speaks on both sides.
pub const VERSION: &[u8; 12] = b"RFB 003.008\n";
const SEC_NONE: u8 = 1;
const SEC_VNC_AUTH: u8 = 2;
/// Longest failure reason read from a VNC server.
const MAX_REASON: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RfbError {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected protocol: {0}")]
    Protocol(String),
    #[error("the VNC server refused: {0}")]
    Refused(String),
}

/// The answer to a VNC authentication challenge: the challenge encrypted with DES under the
/// password (its first 8 bytes, each bit-reversed, as the protocol has it).
pub fn vnc_auth_response(password: &str, challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, b) in key.iter_mut().zip(password.bytes()) {
        *k = b.reverse_bits();
    }
    let cipher = Des::new(&key.into());
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(block.into());
    }
    out
}

fn check_version(v: &[u8]) -> Result<(), RfbError> {
    let minor = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.strip_prefix("RFB 003."))
        .and_then(|s| s.strip_suffix('\n'))
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m >= 8 => Ok(()),
        _ => Err(RfbError::Protocol(format!(
            "version {:?} (3.8 is needed)",
            String::from_utf8_lossy(v)
        ))),
    }
}

async fn read_reason<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let Ok(len) = s.read_u32().await else {
        return String::new();
    };
    let mut buf = vec![0u8; len.min(MAX_REASON) as usize];
    match s.read_exact(&mut buf).await {
        Ok(_) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => String::new(),
    }
}

/// Logs in to a VNC server as its client: version 3.8, then VNC authentication with
/// `password` (or none, where the server asks for none). Afterwards the server waits for the
/// client's ClientInit.
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    password: &str,
) -> Result<(), RfbError> {
    let mut version = [0u8; 12];
    s.read_exact(&mut version).await?;
    check_version(&version)?;
    s.write_all(VERSION).await?;
    let n = s.read_u8().await?;
    if n == 0 {
        return Err(RfbError::Refused(read_reason(s).await));
    }
    let mut types = vec![0u8; usize::from(n)];
    s.read_exact(&mut types).await?;
    if types.contains(&SEC_VNC_AUTH) {
        s.write_all(&[SEC_VNC_AUTH]).await?;
        let mut challenge = [0u8; 16];
        s.read_exact(&mut challenge).await?;
        s.write_all(&vnc_auth_response(password, &challenge))
            .await?;
    } else if types.contains(&SEC_NONE) {
        s.write_all(&[SEC_NONE]).await?;
    } else {
        return Err(RfbError::Protocol(format!(
            "security types {types:?} offer neither VNC authentication nor none"
        )));
    }
    match s.read_u32().await? {
        0 => Ok(()),
        _ => {
            let reason = read_reason(s).await;
            Err(RfbError::Refused(if reason.is_empty() {
                "authentication failed".into()
            } else {
                reason
            }))
        }
    }
}

/// Sluice's side of the browser's handshake. [`VERSION`] goes out first; each chunk from the
/// browser is fed in, and the answer says what to send back and, once done, which bytes
/// already belong to the session.
#[derive(Debug, Default)]
pub struct Greeting {
    buf: Vec<u8>,
    version_seen: bool,
}

/// What to do after feeding the browser's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Greeted {
    /// Send these bytes (maybe none) and read more.
    More(Vec<u8>),
    /// Send these bytes; the handshake is over and `rest` is the session's first bytes.
    Done { send: Vec<u8>, rest: Vec<u8> },
}

impl Greeting {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<Greeted, RfbError> {
        self.buf.extend_from_slice(data);
        let mut send = Vec::new();
        if !self.version_seen {
            if self.buf.len() < VERSION.len() {
                return Ok(Greeted::More(send));
            }
            let version: Vec<u8> = self.buf.drain(..VERSION.len()).collect();
            check_version(&version)?;
            self.version_seen = true;
            // One security type: none. The ticket was the browser's proof.
            send.extend([1, SEC_NONE]);
        }
        let Some(&choice) = self.buf.first() else {
            return Ok(Greeted::More(send));
        };
        if choice != SEC_NONE {
            return Err(RfbError::Protocol(format!(
                "the browser chose security type {choice}, which was not offered"
            )));
        }
        send.extend(0u32.to_be_bytes());
        let rest = self.buf.split_off(1);
        Ok(Greeted::Done { send, rest })
    }
}

/// How long a client message is, from as much of its start as has arrived.
#[derive(Debug, PartialEq, Eq)]
enum Length {
    Known(usize),
    NeedMore,
    Unknown,
}

fn u16_at(h: &[u8], i: usize) -> usize {
    usize::from(u16::from_be_bytes([h[i], h[i + 1]]))
}

fn message_length(h: &[u8]) -> Length {
    use Length::*;
    let need = |n: usize, f: &dyn Fn() -> Length| if h.len() < n { NeedMore } else { f() };
    match h[0] {
        0 => Known(20),                                // SetPixelFormat
        2 => need(4, &|| Known(4 + 4 * u16_at(h, 2))), // SetEncodings
        3 => Known(10),                                // FramebufferUpdateRequest
        4 => Known(8),                                 // KeyEvent
        5 => Known(6),                                 // PointerEvent
        6 => need(8, &|| {
            // ClientCutText; a negative length is the extended clipboard's.
            let len = i32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            Known(8 + len.unsigned_abs() as usize)
        }),
        150 => Known(10),                                 // EnableContinuousUpdates
        248 => need(9, &|| Known(9 + usize::from(h[8]))), // ClientFence
        250 => Known(4),                                  // xvp
        251 => need(8, &|| Known(8 + 16 * usize::from(h[6]))), // SetDesktopSize
        255 => need(2, &|| match h[1] {
            0 => Known(12), // QEMU extended key event
            1 => need(4, &|| match u16_at(h, 2) {
                0 | 1 => Known(4),
                2 => Known(10),
                _ => Unknown,
            }),
            _ => Unknown,
        }),
        _ => Unknown,
    }
}

/// Whether a message of this start is a person's doing: keys, the pointer, the clipboard,
/// a resize.
fn is_input(h: &[u8]) -> bool {
    match h[0] {
        4 | 5 | 6 | 251 => true,
        255 => h.get(1) == Some(&0),
        _ => false,
    }
}

/// Follows the browser's messages to the VNC server to tell input from the viewer's own
/// requests. Holds at most a message header, whatever the message's length. A message it
/// does not know ends the following: from then on every byte counts as input, so a session
/// is never ended as idle by mistake.
#[derive(Debug, Default)]
pub struct ClientMessages {
    head: Vec<u8>,
    /// Bytes of the current message still to pass.
    skip: usize,
    lost: bool,
}

impl ClientMessages {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes from the browser (after the handshake, from its ClientInit on); answers
    /// whether they held input.
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        let mut input = false;
        while !data.is_empty() {
            if self.lost {
                return true;
            }
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            self.head.push(data[0]);
            data = &data[1..];
            match message_length(&self.head) {
                Length::NeedMore => {}
                Length::Unknown => {
                    self.lost = true;
                    return true;
                }
                Length::Known(total) => {
                    input |= is_input(&self.head);
                    self.skip = total.saturating_sub(self.head.len());
                    self.head.clear();
                }
            }
        }
        input
    }

    /// Skips the ClientInit (one byte: the shared flag) that opens the browser's side.
    pub fn after_client_init() -> Self {
        Self {
            skip: 1,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vnc_auth_answer_matches_a_known_vector() {
        // `openssl enc -des-ecb -nopad` of the challenge 00..0f under "password" with each
        // key byte bit-reversed (0e86ceceeef64e26).
        let challenge: [u8; 16] = core::array::from_fn(|i| i as u8);
        let a = vnc_auth_response("password", &challenge);
        assert_eq!(hex::encode(a), "b866924125c8eebb9debc1db61c538e2");
        // Only the first 8 characters count.
        assert_eq!(a, vnc_auth_response("password-longer", &challenge));
        assert_ne!(a, vnc_auth_response("passwore", &challenge));
    }

    #[test]
    fn the_greeting_offers_none_and_hands_over_the_rest() {
        let mut g = Greeting::new();
        assert_eq!(g.feed(b"RFB 003").unwrap(), Greeted::More(vec![]));
        assert_eq!(g.feed(b".008\n").unwrap(), Greeted::More(vec![1, SEC_NONE]));
        // The choice and the ClientInit in one chunk.
        assert_eq!(
            g.feed(&[SEC_NONE, 1]).unwrap(),
            Greeted::Done {
                send: vec![0, 0, 0, 0],
                rest: vec![1]
            }
        );
        let mut g = Greeting::new();
        let out = g.feed(b"RFB 003.008\n\x01").unwrap();
        assert_eq!(
            out,
            Greeted::Done {
                send: vec![1, SEC_NONE, 0, 0, 0, 0],
                rest: vec![]
            }
        );
    }

    #[test]
    fn the_greeting_refuses_old_versions_and_other_security_types() {
        assert!(Greeting::new().feed(b"RFB 003.003\n").is_err());
        assert!(Greeting::new().feed(b"HTTP/1.1 200").is_err());
        let mut g = Greeting::new();
        g.feed(b"RFB 003.008\n").unwrap();
        assert!(g.feed(&[SEC_VNC_AUTH]).is_err());
    }

    #[test]
    fn input_is_told_from_requests_across_chunk_boundaries() {
        let mut m = ClientMessages::after_client_init();
        // ClientInit, then SetEncodings with 3 encodings and an update request: no input.
        let mut bytes = vec![1u8, 2, 0, 0, 3];
        bytes.extend([0u8; 12]);
        bytes.extend([3u8, 1, 0, 0, 0, 0, 4, 0, 3, 0]);
        assert!(!m.feed(&bytes));
        // A key event split in two.
        assert!(m.feed(&[4, 1, 0]));
        assert!(
            !m.feed(&[0, 0, 0, 0, 0x61]),
            "the rest of the same key event"
        );
        // A pointer event.
        assert!(m.feed(&[5, 0, 0, 10, 0, 20]));
        // A fence (payload of 4) and an update request.
        let mut fence = vec![248u8, 0, 0, 0, 0, 0, 0, 0, 4, 9, 9, 9, 9];
        fence.extend([3u8, 1, 0, 0, 0, 0, 4, 0, 3, 0]);
        assert!(!m.feed(&fence));
        // A large clipboard passes without being held.
        let mut cut = vec![6u8, 0, 0, 0];
        cut.extend(100_000u32.to_be_bytes());
        assert!(m.feed(&cut));
        assert!(!m.feed(&vec![b'x'; 100_000]));
        assert!(m.head.is_empty() && m.skip == 0);
        // A resize is input; a QEMU key event too.
        let mut resize = vec![251u8, 0, 5, 0, 3, 0, 1, 0];
        resize.extend([0u8; 16]);
        assert!(m.feed(&resize));
        assert!(m.feed(&[255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 30]));
        assert!(!m.feed(&[3, 1, 0, 0, 0, 0, 4, 0, 3, 0]));
    }

    #[test]
    fn an_unknown_message_makes_everything_input() {
        let mut m = ClientMessages::new();
        assert!(m.feed(&[77, 1, 2]));
        assert!(m.feed(&[3, 1, 0, 0, 0, 0, 4, 0, 3, 0]));
    }
}
