//! Bounded per-flow queues for datagram flows. ipstack hands each UDP flow its packets through
//! an unbounded channel, so a flow whose reader falls behind (a resolver flooded with
//! queries, a proxy slower than the container) would grow Sluice's memory without limit. A
//! [`Drained`] flow reads ipstack's queue as fast as it fills into a bounded one of its own,
//! dropping datagrams when that is full, as a congested network would.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

/// Datagrams one flow may have waiting.
pub const DEPTH: usize = 64;
/// The largest datagram read off a flow.
const MAX_DATAGRAM: usize = 65_535;

/// A datagram flow read through a bounded queue; writes go straight to the flow.
pub struct Drained<F> {
    queue: mpsc::Receiver<Vec<u8>>,
    write: WriteHalf<F>,
    /// Datagrams dropped because the queue was full.
    pub dropped: Arc<AtomicU64>,
    _reader: AbortOnDropHandle<()>,
}

/// Starts draining `flow` into a queue of `depth` datagrams.
pub fn drain<F>(flow: F, depth: usize) -> Drained<F>
where
    F: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, write) = tokio::io::split(flow);
    let (tx, queue) = mpsc::channel(depth.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let n = match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match tx.try_send(buf[..n].to_vec()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    Drained {
        queue,
        write,
        dropped,
        _reader: AbortOnDropHandle::new(reader),
    }
}

impl<F> AsyncRead for Drained<F> {
    /// One datagram per read (cut to the buffer if larger); end of file when the flow ends.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.queue.poll_recv(cx) {
            Poll::Ready(Some(d)) => {
                let n = d.len().min(buf.remaining());
                buf.put_slice(&d[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(None) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F: AsyncWrite> AsyncWrite for Drained<F> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_reader_that_falls_behind_drops_datagrams_instead_of_growing() {
        let (mut peer, flow) = tokio::io::duplex(1 << 20);
        let mut drained = drain(flow, 4);
        // Ten datagrams arrive while nobody reads (a duplex joins writes; send them apart).
        for i in 0..10u8 {
            peer.write_all(&[i; 8]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(drained.dropped.load(Ordering::Relaxed), 6);
        let mut buf = [0u8; 64];
        for i in 0..4u8 {
            let n = drained.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[i; 8]);
        }
        // Writes pass straight through.
        drained.write_all(b"answer").await.unwrap();
        let n = peer.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"answer");
        // The flow's end is the queue's end.
        drop(peer);
        assert_eq!(drained.read(&mut buf).await.unwrap(), 0);
    }
}
