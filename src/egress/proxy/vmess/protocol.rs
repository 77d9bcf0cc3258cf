//! VMess AEAD (alterId 0) as pure functions and state machines, with no I/O: the key schedule,
//! the sealed request header, the response header and the body's chunk codec. The stream in
//! `mod.rs` drives them; tests drive them directly.
//!
//! Wire format, client to server: auth id (16) | sealed header length (2+16) | connection
//! nonce (8) | sealed header (n+16) | body chunks. Server to client: sealed response header
//! length (2+16) | sealed response header (n+16) | body chunks. Each chunk is a masked 2-byte
//! size, then the sealed payload, then random padding; an empty payload ends the direction.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};

use aws_lc_rs::aead::{AES_128_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, EncryptingKey, UnboundCipherKey};
use sha2::Digest;
use shake::digest::{ExtendableOutput, Update, XofReader};

use super::super::outbound::Target;

/// A VMess protocol failure: the server's answer did not authenticate or made no sense.
#[derive(Debug, thiserror::Error)]
pub enum VmessError {
    #[error(
        "vmess: the server's {0} did not authenticate (wrong uuid, or not a VMess AEAD server)"
    )]
    Unauthentic(&'static str),
    #[error("vmess: the response header belongs to another request")]
    WrongResponse,
    #[error("vmess: a chunk of {0} bytes is shorter than its own overhead")]
    ShortChunk(usize),
    #[error("vmess: a chunk is too large to send")]
    TooLarge,
}

impl From<VmessError> for std::io::Error {
    fn from(e: VmessError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// The body cipher, as the request header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Aes128Gcm,
    Chacha20Poly1305,
    /// Chunked and length-masked, not encrypted.
    None,
    /// Not even chunked: the body is the raw stream (sing-box's and v2ray's "zero").
    Zero,
}

impl Security {
    /// The cipher for a sing-box `security` value; `auto` is AES-128-GCM, as v2ray and
    /// sing-box pick on x86-64 and arm64.
    pub fn parse(name: &str) -> Option<Security> {
        match name {
            "auto" | "aes-128-gcm" => Some(Security::Aes128Gcm),
            "chacha20-poly1305" => Some(Security::Chacha20Poly1305),
            "none" => Some(Security::None),
            "zero" => Some(Security::Zero),
            _ => None,
        }
    }

    /// The number the header carries: "zero" travels as "none" without chunking.
    fn wire(self) -> u8 {
        match self {
            Security::Aes128Gcm => 3,
            Security::Chacha20Poly1305 => 4,
            Security::None | Security::Zero => 5,
        }
    }

    /// Request options: chunked stream, masked lengths, and padding where the body is sealed.
    fn options(self) -> u8 {
        const CHUNK_STREAM: u8 = 0x01;
        const CHUNK_MASKING: u8 = 0x04;
        const GLOBAL_PADDING: u8 = 0x08;
        match self {
            Security::Aes128Gcm | Security::Chacha20Poly1305 => {
                CHUNK_STREAM | CHUNK_MASKING | GLOBAL_PADDING
            }
            Security::None => CHUNK_STREAM | CHUNK_MASKING,
            Security::Zero => 0,
        }
    }
}

/// The command key of a user: MD5 of the UUID's bytes and a constant every VMess peer uses.
pub fn command_key(uuid: &[u8; 16]) -> [u8; 16] {
    let mut h = md5::Md5::new();
    Digest::update(&mut h, uuid);
    Digest::update(&mut h, b"c48619fe-8f02-49e0-b9e9-edf763e17e21");
    h.finalize().into()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// HMAC whose hash function is itself an HMAC chain: `keys[0]` over SHA-256, each further key
/// wrapping the previous layer (the "VMess AEAD KDF" construction). Depths here are at most
/// four, so the recursion's 2^depth hash calls are a few dozen.
fn nested_hmac(keys: &[&[u8]], message: &[u8]) -> [u8; 32] {
    let Some((key, inner)) = keys.split_last() else {
        return sha256(&[message]);
    };
    // Every layer has SHA-256's 64-byte block; a longer key is first hashed by the layer below.
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&nested_hmac(inner, key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8, rest: &[u8]| {
        let mut v: Vec<u8> = block.iter().map(|b| b ^ byte).collect();
        v.extend_from_slice(rest);
        v
    };
    let inner_hash = nested_hmac(inner, &pad(0x36, message));
    nested_hmac(inner, &pad(0x5c, &inner_hash))
}

/// VMess's key derivation: `key` through HMACs keyed by "VMess AEAD KDF" and then `path`.
pub fn kdf(key: &[u8], path: &[&[u8]]) -> [u8; 32] {
    let mut keys: Vec<&[u8]> = Vec::with_capacity(path.len() + 1);
    keys.push(b"VMess AEAD KDF");
    keys.extend_from_slice(path);
    nested_hmac(&keys, key)
}

fn kdf16(key: &[u8], path: &[&[u8]]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(&kdf(key, path)[..16]);
    k
}

fn kdf12(key: &[u8], path: &[&[u8]]) -> [u8; 12] {
    let mut k = [0u8; 12];
    k.copy_from_slice(&kdf(key, path)[..12]);
    k
}

fn aes_gcm(key: &[u8; 16]) -> LessSafeKey {
    // A 16-byte key is always valid for AES-128-GCM.
    LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).unwrap_or_else(|_| unreachable!()))
}

fn seal(key: &LessSafeKey, nonce: [u8; 12], aad: &[u8], data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(data);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[start..],
        )
        // Only fails for inputs far beyond a u16-sized chunk.
        .unwrap_or_else(|_| unreachable!());
    out.extend_from_slice(tag.as_ref());
}

fn open<'a>(
    key: &LessSafeKey,
    nonce: [u8; 12],
    aad: &[u8],
    data: &'a mut [u8],
    what: &'static str,
) -> Result<&'a mut [u8], VmessError> {
    key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
        .map_err(|_| VmessError::Unauthentic(what))
}

/// The AuthID: the time, 4 random bytes and their CRC32, encrypted as one AES block under a
/// key derived from the command key. The server finds the user by it and refuses replays and
/// clocks more than two minutes apart.
fn auth_id(cmd_key: &[u8; 16], unix_time: u64, random: [u8; 4]) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[..8].copy_from_slice(&unix_time.to_be_bytes());
    block[8..12].copy_from_slice(&random);
    let crc = crc32fast::hash(&block[..12]);
    block[12..].copy_from_slice(&crc.to_be_bytes());
    let key = kdf16(cmd_key, &[b"AES Auth ID Encryption"]);
    // AES-128 with a 16-byte key in ECB mode over exactly one block cannot fail.
    let cipher = UnboundCipherKey::new(&AES_128, &key)
        .and_then(EncryptingKey::ecb)
        .unwrap_or_else(|_| unreachable!());
    let _ = cipher.encrypt(&mut block);
    block
}

fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// What one VMess connection needs from the randomness source.
#[derive(Debug, Clone)]
pub struct Randomness {
    pub body_key: [u8; 16],
    pub body_iv: [u8; 16],
    pub response_auth: u8,
    pub padding_len: u8,
    pub padding: [u8; 15],
    pub auth_random: [u8; 4],
    pub connection_nonce: [u8; 8],
}

impl Randomness {
    pub fn fresh() -> Randomness {
        Randomness {
            body_key: rand::random(),
            body_iv: rand::random(),
            response_auth: rand::random(),
            padding_len: rand::random::<u8>() % 16,
            padding: rand::random(),
            auth_random: rand::random(),
            connection_nonce: rand::random(),
        }
    }
}

/// What a request asks the server to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A TCP connection: the body is a byte stream.
    Tcp = 1,
    /// UDP to one destination: each body chunk is one datagram.
    Udp = 2,
}

/// The keys of one connection's two directions.
#[derive(Debug, Clone)]
pub struct Session {
    security: Security,
    request_key: [u8; 16],
    request_iv: [u8; 16],
    response_key: [u8; 16],
    response_iv: [u8; 16],
    response_auth: u8,
}

/// Builds the opening bytes of a request to `target`, and the session that reads the answer
/// and frames the body.
pub fn request(
    uuid: &[u8; 16],
    security: Security,
    command: Command,
    target: &Target,
    unix_time: u64,
    r: &Randomness,
) -> (Vec<u8>, Session) {
    let mut header = Vec::with_capacity(64);
    header.push(1); // version
    header.extend_from_slice(&r.body_iv);
    header.extend_from_slice(&r.body_key);
    header.push(r.response_auth);
    header.push(security.options());
    header.push((r.padding_len << 4) | security.wire());
    header.push(0); // reserved
    header.push(command as u8);
    header.extend_from_slice(&target.port().to_be_bytes());
    // Address types: 1 IPv4, 2 a name (length, then the name; the server resolves it), 3 IPv6.
    match target {
        Target::Addr(SocketAddr::V4(a)) => {
            header.push(1);
            header.extend_from_slice(&a.ip().octets());
        }
        Target::Addr(SocketAddr::V6(a)) => {
            header.push(3);
            header.extend_from_slice(&a.ip().octets());
        }
        Target::Name(name, _) => {
            let name = &name.as_bytes()[..name.len().min(255)];
            header.push(2);
            header.push(name.len() as u8);
            header.extend_from_slice(name);
        }
    }
    header.extend_from_slice(&r.padding[..usize::from(r.padding_len)]);
    let check = fnv1a32(&header);
    header.extend_from_slice(&check.to_be_bytes());

    let cmd_key = command_key(uuid);
    let id = auth_id(&cmd_key, unix_time, r.auth_random);
    let nonce = r.connection_nonce;
    let path = |label: &'static [u8]| -> [&[u8]; 3] { [label, &id, &nonce] };
    let mut out = Vec::with_capacity(16 + 18 + 8 + header.len() + 16);
    out.extend_from_slice(&id);
    // The header's length is short: at most 1+16+16+5+2+257+15+4.
    let len = u16::try_from(header.len()).unwrap_or(u16::MAX);
    seal(
        &aes_gcm(&kdf16(&cmd_key, &path(b"VMess Header AEAD Key_Length"))),
        kdf12(&cmd_key, &path(b"VMess Header AEAD Nonce_Length")),
        &id,
        &len.to_be_bytes(),
        &mut out,
    );
    out.extend_from_slice(&nonce);
    seal(
        &aes_gcm(&kdf16(&cmd_key, &path(b"VMess Header AEAD Key"))),
        kdf12(&cmd_key, &path(b"VMess Header AEAD Nonce")),
        &id,
        &header,
        &mut out,
    );

    let half = |x: &[u8; 16]| {
        let mut k = [0u8; 16];
        k.copy_from_slice(&sha256(&[x])[..16]);
        k
    };
    let session = Session {
        security,
        request_key: r.body_key,
        request_iv: r.body_iv,
        response_key: half(&r.body_key),
        response_iv: half(&r.body_iv),
        response_auth: r.response_auth,
    };
    (out, session)
}

impl Session {
    pub fn security(&self) -> Security {
        self.security
    }

    /// The framer for what the client sends.
    pub fn request_body(&self) -> Framer {
        Framer::new(self.security, &self.request_key, &self.request_iv)
    }

    /// The framer for what the server sends.
    pub fn response_body(&self) -> Framer {
        Framer::new(self.security, &self.response_key, &self.response_iv)
    }

    /// Bytes of the sealed response header's length block.
    pub const RESPONSE_LENGTH_LEN: usize = 2 + 16;

    /// Opens the response header's length block: how many bytes the header itself takes.
    pub fn response_length(&self, block: &mut [u8]) -> Result<usize, VmessError> {
        let key = aes_gcm(&kdf16(&self.response_key, &[b"AEAD Resp Header Len Key"]));
        let nonce = kdf12(&self.response_iv, &[b"AEAD Resp Header Len IV"]);
        let plain = open(&key, nonce, &[], block, "response header length")?;
        if plain.len() != 2 {
            return Err(VmessError::Unauthentic("response header length"));
        }
        Ok(usize::from(u16::from_be_bytes([plain[0], plain[1]])) + 16)
    }

    /// Opens the response header and checks it answers this request.
    pub fn response_header(&self, block: &mut [u8]) -> Result<(), VmessError> {
        let key = aes_gcm(&kdf16(&self.response_key, &[b"AEAD Resp Header Key"]));
        let nonce = kdf12(&self.response_iv, &[b"AEAD Resp Header IV"]);
        let plain = open(&key, nonce, &[], block, "response header")?;
        // auth byte, options, command, command length; a command (dynamic port) is ignored.
        if plain.len() < 4 || plain[0] != self.response_auth {
            return Err(VmessError::WrongResponse);
        }
        Ok(())
    }
}

/// The largest payload one chunk carries.
pub const MAX_CHUNK_PAYLOAD: usize = 16 * 1024;

/// One direction's chunk codec: masked sizes and padding lengths come from SHAKE128 of the IV,
/// nonces count up from the IV, the body is sealed with the request's cipher.
pub struct Framer {
    cipher: Option<LessSafeKey>,
    iv: [u8; 16],
    count: u16,
    mask: Option<shake::Shake128Reader>,
    padding: bool,
    /// The size and padding of a chunk whose size has been read but not its body.
    pending: Option<(usize, usize)>,
}

impl std::fmt::Debug for Framer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framer")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// What a framer found at the front of its input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not a whole chunk yet.
    Incomplete,
    /// A chunk's payload.
    Data(BytesMut),
    /// The sender's end of stream.
    End,
}

impl Framer {
    fn new(security: Security, key: &[u8; 16], iv: &[u8; 16]) -> Framer {
        let cipher = match security {
            Security::Aes128Gcm => Some(aes_gcm(key)),
            Security::Chacha20Poly1305 => {
                // The 32-byte key is MD5(key) | MD5(MD5(key)).
                let first: [u8; 16] = md5::Md5::digest(key).into();
                let second: [u8; 16] = md5::Md5::digest(first).into();
                let mut k = [0u8; 32];
                k[..16].copy_from_slice(&first);
                k[16..].copy_from_slice(&second);
                Some(LessSafeKey::new(
                    UnboundKey::new(&CHACHA20_POLY1305, &k).unwrap_or_else(|_| unreachable!()),
                ))
            }
            Security::None | Security::Zero => None,
        };
        let options = security.options();
        let mask = (options & 0x04 != 0).then(|| {
            let mut shake = shake::Shake128::default();
            shake.update(iv);
            shake.finalize_xof()
        });
        Framer {
            cipher,
            iv: *iv,
            count: 0,
            mask,
            padding: options & 0x08 != 0,
            pending: None,
        }
    }

    fn next_mask(&mut self) -> u16 {
        let mut b = [0u8; 2];
        if let Some(m) = &mut self.mask {
            m.read(&mut b);
        }
        u16::from_be_bytes(b)
    }

    fn next_nonce(&mut self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n.copy_from_slice(&self.iv[..12]);
        n[..2].copy_from_slice(&self.count.to_be_bytes());
        self.count = self.count.wrapping_add(1);
        n
    }

    fn overhead(&self) -> usize {
        if self.cipher.is_some() { 16 } else { 0 }
    }

    /// Appends one chunk carrying `payload` (at most [`MAX_CHUNK_PAYLOAD`]) to `out`; an
    /// empty payload is the end-of-stream chunk.
    pub fn seal(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), VmessError> {
        if payload.len() > MAX_CHUNK_PAYLOAD {
            return Err(VmessError::TooLarge);
        }
        let padding = if self.padding {
            usize::from(self.next_mask() % 64)
        } else {
            0
        };
        let size = payload.len() + self.overhead() + padding;
        let size = u16::try_from(size).map_err(|_| VmessError::TooLarge)?;
        let mask = self.next_mask();
        out.extend_from_slice(&(size ^ mask).to_be_bytes());
        let nonce = self.next_nonce();
        match &self.cipher {
            Some(key) => seal(key, nonce, &[], payload, out),
            None => out.extend_from_slice(payload),
        }
        let pad: [u8; 64] = rand::random();
        out.extend_from_slice(&pad[..padding]);
        Ok(())
    }

    /// Takes one chunk from the front of `input`, if it holds a whole one. The size bytes are
    /// taken as soon as they arrive, and the chunk's body once all of it has.
    pub fn open(&mut self, input: &mut BytesMut) -> Result<Frame, VmessError> {
        let (size, padding) = match self.pending {
            Some(p) => p,
            None => {
                if input.len() < 2 {
                    return Ok(Frame::Incomplete);
                }
                let padding = if self.padding {
                    usize::from(self.next_mask() % 64)
                } else {
                    0
                };
                let size = u16::from_be_bytes([input[0], input[1]]) ^ self.next_mask();
                input.advance(2);
                let p = (usize::from(size), padding);
                self.pending = Some(p);
                p
            }
        };
        if input.len() < size {
            return Ok(Frame::Incomplete);
        }
        self.pending = None;
        if size < self.overhead() + padding {
            return Err(VmessError::ShortChunk(size));
        }
        let mut body = input.split_to(size);
        if size == self.overhead() + padding {
            return Ok(Frame::End);
        }
        body.truncate(size - padding);
        let nonce = self.next_nonce();
        if let Some(key) = &self.cipher {
            let len = open(key, nonce, &[], &mut body, "body")?.len();
            body.truncate(len);
        }
        Ok(Frame::Data(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kdf_matches_nested_hmac_computed_independently() {
        // From Python's hmac module with a digestmod that is itself an HMAC chain.
        let hex = |b: [u8; 32]| hex::encode(b);
        assert_eq!(
            hex(kdf(b"key", &[])),
            "385e28ac08671660f62ac976f5e64a31827aea172eff77cb2b046c52de9c08b0"
        );
        assert_eq!(
            hex(kdf(b"key", &[b"AES Auth ID Encryption"])),
            "ffe9b1a9952b7c91b33c21540d8522207e7706c52fa3a95891f69efb3b88e087"
        );
        let key: Vec<u8> = (0..16).collect();
        assert_eq!(
            hex(kdf(
                &key,
                &[b"VMess Header AEAD Key", &[0u8; 16], b"12345678"]
            )),
            "1174527af1e2207239b2bef843b54c24c8a19ce4500eda9d2078fa1b3dd4d6c3"
        );
    }

    #[test]
    fn fnv1a_matches_its_reference_values() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    fn session(security: Security) -> Session {
        let target = Target::Addr("192.0.2.7:443".parse().unwrap());
        request(
            &[7u8; 16],
            security,
            Command::Tcp,
            &target,
            1_700_000_000,
            &Randomness::fresh(),
        )
        .1
    }

    #[test]
    fn chunks_round_trip_when_they_arrive_a_byte_at_a_time() {
        for security in [
            Security::Aes128Gcm,
            Security::Chacha20Poly1305,
            Security::None,
        ] {
            let s = session(security);
            let (mut tx, mut rx) = (s.request_body(), s.request_body());
            let messages: Vec<Vec<u8>> = vec![
                b"hello".to_vec(),
                vec![0xab; MAX_CHUNK_PAYLOAD],
                (0..=255).collect(),
            ];
            let mut wire = Vec::new();
            for m in &messages {
                tx.seal(m, &mut wire).unwrap();
            }
            tx.seal(&[], &mut wire).unwrap();
            let mut input = BytesMut::new();
            let mut got = Vec::new();
            let mut ended = false;
            for b in wire {
                input.extend_from_slice(&[b]);
                loop {
                    match rx.open(&mut input).unwrap() {
                        Frame::Incomplete => break,
                        Frame::Data(d) => got.push(d.to_vec()),
                        Frame::End => ended = true,
                    }
                }
            }
            assert_eq!(got, messages, "{security:?}");
            assert!(ended && input.is_empty(), "{security:?}");
        }
    }

    #[test]
    fn a_tampered_chunk_is_refused_and_the_directions_use_different_keys() {
        let s = session(Security::Aes128Gcm);
        let mut wire = Vec::new();
        s.request_body().seal(b"payload", &mut wire).unwrap();
        let mut other = BytesMut::from(&wire[..]);
        // The response direction cannot read the request direction's chunks: its size mask
        // differs (a nonsense size) or, if the size happens to fit, its key does.
        assert!(!matches!(
            s.response_body().open(&mut other),
            Ok(Frame::Data(_))
        ));
        // The first byte after the size is ciphertext: flipping it must fail authentication.
        wire[2] ^= 1;
        let mut tampered = BytesMut::from(&wire[..]);
        assert!(matches!(
            s.request_body().open(&mut tampered),
            Err(VmessError::Unauthentic("body"))
        ));
    }

    #[test]
    fn a_chunk_larger_than_the_limit_is_refused() {
        let mut tx = session(Security::Aes128Gcm).request_body();
        let mut out = Vec::new();
        assert!(tx.seal(&vec![0; MAX_CHUNK_PAYLOAD + 1], &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn the_auth_id_carries_the_time_and_a_valid_checksum() {
        let cmd = command_key(&[1u8; 16]);
        let id = auth_id(&cmd, 1_700_000_000, [1, 2, 3, 4]);
        let key = kdf16(&cmd, &[b"AES Auth ID Encryption"]);
        let dec =
            aws_lc_rs::cipher::DecryptingKey::ecb(UnboundCipherKey::new(&AES_128, &key).unwrap())
                .unwrap();
        let mut block = id;
        dec.decrypt(&mut block, aws_lc_rs::cipher::DecryptionContext::None)
            .unwrap();
        assert_eq!(&block[..8], &1_700_000_000u64.to_be_bytes());
        assert_eq!(&block[8..12], &[1, 2, 3, 4]);
        assert_eq!(
            u32::from_be_bytes(block[12..].try_into().unwrap()),
            crc32fast::hash(&block[..12])
        );
    }
}
