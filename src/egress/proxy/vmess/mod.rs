//! VMess outbound (AEAD headers, alterId 0), written here because no maintained crate
//! exposes a client: `protocol.rs` holds the key schedule and chunk codec as pure code, this
//! file turns them into a byte stream over any transport (TCP, or TLS over TCP).
//!
//! The request header goes out at connect, so a destination that speaks first (an SSH server)
//! is reached without waiting for the container to write. The response header is read with
//! the first answer, because v2ray sends it only once the destination has said something.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

pub mod protocol;

pub use protocol::{Command, Security};

use super::outbound::Target;
use protocol::{Frame, Framer, MAX_CHUNK_PAYLOAD, Randomness, Session};

/// Opens a VMess request to `target` over `transport`, already connected to the server. For
/// [`Command::Udp`] each write (up to 16 KiB) travels as one datagram and each read answers
/// one, given a buffer as large as the datagram.
pub async fn connect<S>(
    mut transport: S,
    uuid: &[u8; 16],
    security: Security,
    command: Command,
    target: &Target,
) -> std::io::Result<VmessStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (head, session) =
        protocol::request(uuid, security, command, target, now, &Randomness::fresh());
    transport.write_all(&head).await?;
    transport.flush().await?;
    Ok(VmessStream::new(transport, session))
}

/// Where the answer stands.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Waiting for the sealed length of the response header.
    Length,
    /// Waiting for the sealed response header of this many bytes.
    Header(usize),
    /// Body chunks (or, for `zero`, the raw stream).
    Body,
    /// The server ended its side.
    Ended,
}

/// A byte stream to the destination through a VMess server.
pub struct VmessStream<S> {
    transport: S,
    session: Session,
    reply: Reply,
    /// Bytes from the server not yet decoded.
    received: BytesMut,
    /// Decoded bytes not yet read by the caller.
    plain: BytesMut,
    reader: Framer,
    writer: Framer,
    /// Encoded bytes not yet accepted by the transport.
    outgoing: Vec<u8>,
    sent: usize,
    write_closed: bool,
}

impl<S> std::fmt::Debug for VmessStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmessStream")
            .field("reply", &self.reply)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> VmessStream<S> {
    fn new(transport: S, session: Session) -> Self {
        VmessStream {
            transport,
            reader: session.response_body(),
            writer: session.request_body(),
            session,
            reply: Reply::Length,
            received: BytesMut::with_capacity(32 * 1024),
            plain: BytesMut::new(),
            outgoing: Vec::with_capacity(MAX_CHUNK_PAYLOAD + 128),
            sent: 0,
            write_closed: false,
        }
    }

    /// Decodes what `received` holds; true if that moved anything forward.
    fn decode(&mut self) -> std::io::Result<bool> {
        match self.reply {
            Reply::Length => {
                if self.received.len() < Session::RESPONSE_LENGTH_LEN {
                    return Ok(false);
                }
                let mut block = self.received.split_to(Session::RESPONSE_LENGTH_LEN);
                self.reply = Reply::Header(self.session.response_length(&mut block)?);
            }
            Reply::Header(len) => {
                if self.received.len() < len {
                    return Ok(false);
                }
                let mut block = self.received.split_to(len);
                self.session.response_header(&mut block)?;
                self.reply = Reply::Body;
            }
            Reply::Body if self.session.security() == Security::Zero => {
                if self.received.is_empty() {
                    return Ok(false);
                }
                self.plain = self.received.split();
            }
            Reply::Body => match self.reader.open(&mut self.received)? {
                Frame::Incomplete => return Ok(false),
                Frame::Data(payload) => self.plain = payload,
                Frame::End => self.reply = Reply::Ended,
            },
            Reply::Ended => return Ok(false),
        }
        Ok(true)
    }

    /// Writes out everything encoded so far.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n =
                ready!(Pin::new(&mut self.transport).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn encode(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.session.security() == Security::Zero {
            self.outgoing.extend_from_slice(data);
        } else {
            self.writer.seal(data, &mut self.outgoing)?;
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for VmessStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if matches!(this.reply, Reply::Ended) {
                return Poll::Ready(Ok(()));
            }
            if this.decode()? {
                continue;
            }
            this.received.reserve(32 * 1024);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.transport),
                cx,
                &mut this.received
            ))?;
            if n == 0 {
                // The server closed without an end chunk: the end, unless it cut a chunk short.
                if !this.received.is_empty() {
                    return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
                }
                this.reply = Reply::Ended;
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for VmessStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.write_closed {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        // An empty chunk would end the stream: an empty write writes nothing.
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_CHUNK_PAYLOAD);
        this.encode(&buf[..n])?;
        // The bytes are ours now; what the transport does not take yet goes with the next
        // write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.transport).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if !this.write_closed {
            this.write_closed = true;
            if this.session.security() != Security::Zero {
                this.writer.seal(&[], &mut this.outgoing)?;
            }
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.transport).poll_shutdown(cx)
    }
}
