//! Switched connections. Once an upstream answers an upgrade (`Upgrade: websocket`, or
//! any other protocol) with `101 Switching Protocols`, and the `101` has gone to the
//! client, hyper hands over both byte streams; a tunnel copies between them, both ways,
//! until both sides have closed, one fails, or neither has sent a byte for the route's
//! `upgrade_idle_timeout`.
//!
//! A tunnel runs as a task of its own on the worker, and the connection that switched
//! waits for its tunnels before it ends, so that a switched connection still counts as
//! open (in `portcullis_connections_open`, against the per-IP limit, and in the drain
//! at shutdown, which gives it the `drain_timeout` to finish).

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics;
use crate::snapshot::Snapshot;

/// A protocol switch the client asked for and the upstream accepted, waiting for
/// hyper to hand over the two streams.
pub(super) struct Switch<T> {
    client: OnUpgrade,
    upstream: OnUpgrade,
    route: Arc<str>,
    idle_timeout: Duration,
    /// Held while the tunnel runs (the request's in-flight token).
    _hold: T,
}

impl<T: 'static> Switch<T> {
    /// The switch of a `101` response `resp` to a request of route `route` that asked
    /// for one (`client`: its side, taken from the request). `snapshot` is the one the
    /// request was served by, for the route's idle timeout; `hold` is kept until the
    /// tunnel ends, and given back when there is nothing to join: the request asked for
    /// no switch, or the `101` did not come from an upstream (a filter's answer).
    pub(super) fn agreed<B>(
        client: Option<OnUpgrade>,
        resp: &mut http::Response<B>,
        snapshot: Option<&Snapshot>,
        route: Option<&Arc<str>>,
        hold: T,
    ) -> Result<Self, T> {
        let (Some(client), Some(snapshot), Some(route)) = (client, snapshot, route) else {
            return Err(hold);
        };
        let Some(idle_timeout) = snapshot
            .config
            .routes
            .iter()
            .find(|r| *r.name == **route)
            .map(|r| r.upgrade_idle_timeout)
        else {
            return Err(hold);
        };
        let Some(upstream) = resp.extensions_mut().remove::<OnUpgrade>() else {
            return Err(hold);
        };
        Ok(Self {
            client,
            upstream,
            route: Arc::clone(route),
            idle_timeout,
            _hold: hold,
        })
    }

    /// Waits for both streams, then copies between them until the tunnel ends.
    async fn run(self) {
        let (client, upstream) = match tokio::try_join!(self.client, self.upstream) {
            Ok(both) => both,
            Err(e) => {
                // The client left before its `101` was written, or the upstream's
                // connection failed as it switched.
                tracing::debug!(route = %self.route, "protocol switch failed: {e}");
                return;
            }
        };
        metrics::global().upgrade_opened(&self.route);
        let last = Cell::new(Instant::now());
        let mut client = Watched {
            io: TokioIo::new(client),
            last: &last,
        };
        let mut upstream = Watched {
            io: TokioIo::new(upstream),
            last: &last,
        };
        let reason = tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                Ok(_) => "closed",
                Err(e) => {
                    tracing::debug!(route = %self.route, "switched connection failed: {e}");
                    "error"
                }
            },
            () = idle(&last, self.idle_timeout) => "idle_timeout",
        };
        metrics::global().upgrade_closed(&self.route, reason);
    }
}

/// The tunnels of one connection: one for an HTTP/1.1 upgrade (after which the
/// connection carries nothing else), any number for HTTP/2 streams.
#[derive(Default)]
pub(super) struct Tunnels(RefCell<Vec<tokio::task::JoinHandle<()>>>);

impl Tunnels {
    /// Starts the tunnel of `switch` on this worker.
    pub(super) fn start<T: 'static>(&self, switch: Switch<T>) {
        let mut tasks = self.0.borrow_mut();
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::task::spawn_local(switch.run()));
    }

    /// Completes once every tunnel started so far has ended.
    pub(super) async fn finished(&self) {
        let tasks = std::mem::take(&mut *self.0.borrow_mut());
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Completes once nothing has been read for `timeout` since `last`.
async fn idle(last: &Cell<Instant>, timeout: Duration) {
    loop {
        let deadline = last.get() + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// A stream that records when it last read a byte.
struct Watched<'a, I> {
    io: I,
    last: &'a Cell<Instant>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<'_, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.last.set(Instant::now());
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<'_, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A client connection's stream, marked `Send` so that hyper can hand it over in an
/// [`hyper::upgrade::Upgraded`] (whose stream must be `Send`), although the guard in it
/// shares its connection's state by `Rc`.
pub(super) struct WorkerLocal<I>(pub(super) I);

#[expect(
    unsafe_code,
    reason = "hyper's upgrades require a Send stream; this one never leaves its thread"
)]
// SAFETY: the stream never leaves the worker thread that accepted it: the connection
// is served on the worker's current-thread runtime (in its `LocalSet`), hyper keeps the
// stream in the connection future and, on a switch, passes it through a oneshot channel
// to the request's `OnUpgrade`, which the tunnel awaits in a task of the same
// `LocalSet` (`spawn_local`). Nothing sends it, or the `Upgraded` holding it, to
// another thread, so the `Rc` inside is only ever touched by the thread that made it.
unsafe impl<I> Send for WorkerLocal<I> {}

impl<I: AsyncRead + Unpin> AsyncRead for WorkerLocal<I> {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WorkerLocal<I> {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
