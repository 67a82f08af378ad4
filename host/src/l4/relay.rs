//! Copying between two byte streams, both ways, until both sides have closed, one
//! fails, or neither has sent a byte for an idle timeout: what a switched HTTP
//! connection (a WebSocket) and a `tcp_routes` connection both are once set up.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a relay ended, and what it carried.
#[derive(Debug, Clone, Copy)]
pub struct Relayed {
    /// `closed` (both sides finished), `idle_timeout` or `error`: the `reason` label
    /// of the metrics.
    pub reason: &'static str,
    /// Bytes from the first stream to the second (client to upstream).
    pub sent: u64,
    /// Bytes from the second stream to the first (upstream to client).
    pub received: u64,
}

/// Copies between `a` and `b` with buffers of `buffer` bytes each way until the relay
/// ends (see the module documentation). Half-closes are passed on: a side that ends
/// its writing has the other side's write end shut down, and the relay goes on the
/// other way.
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle_timeout: Duration, buffer: usize) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let last = Cell::new(Instant::now());
    let sent = Cell::new(0);
    let received = Cell::new(0);
    let mut a = Watched {
        io: a,
        last: &last,
        read: &sent,
    };
    let mut b = Watched {
        io: b,
        last: &last,
        read: &received,
    };
    let reason = tokio::select! {
        copied = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, buffer, buffer) => match copied {
            Ok(_) => "closed",
            Err(e) => {
                tracing::debug!("relay failed: {e}");
                "error"
            }
        },
        () = idle(&last, idle_timeout) => "idle_timeout",
    };
    Relayed {
        reason,
        sent: sent.get(),
        received: received.get(),
    }
}

/// Completes once nothing has been read for `timeout` since `last`.
pub async fn idle(last: &Cell<Instant>, timeout: Duration) {
    loop {
        let deadline = last.get() + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// A stream that records when it last read a byte, and how many it read.
struct Watched<'a, I: ?Sized> {
    io: &'a mut I,
    last: &'a Cell<Instant>,
    read: &'a Cell<u64>,
}

impl<I: AsyncRead + Unpin + ?Sized> AsyncRead for Watched<'_, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut *this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.last.set(Instant::now());
            this.read.set(this.read.get() + n as u64);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin + ?Sized> AsyncWrite for Watched<'_, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_go_both_ways_and_are_counted() {
        let (mut client, mut near) = tokio::io::duplex(64);
        let (mut far, mut server) = tokio::io::duplex(64);
        let peers = async move {
            client
                .write_all(b"hello")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut got = [0u8; 5];
            server
                .read_exact(&mut got)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&got, b"hello");
            server
                .write_all(b"hi")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut got = [0u8; 2];
            client
                .read_exact(&mut got)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        };
        let (done, ()) = tokio::join!(
            relay(&mut near, &mut far, Duration::from_secs(5), 16),
            peers
        );
        assert_eq!((done.reason, done.sent, done.received), ("closed", 5, 2));
    }

    #[tokio::test]
    async fn silence_ends_it() {
        let (_client, mut near) = tokio::io::duplex(64);
        let (mut far, _server) = tokio::io::duplex(64);
        let started = Instant::now();
        let done = relay(&mut near, &mut far, Duration::from_millis(200), 16).await;
        assert_eq!(done.reason, "idle_timeout");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
