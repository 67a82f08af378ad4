//! Switched connections. Once an upstream answers an upgrade (`Upgrade: websocket`, or
//! any other protocol) with `101 Switching Protocols`, and the `101` has gone to the
//! client, hyper hands over both byte streams; a tunnel copies between them, both ways,
//! until both sides have closed, one fails, or neither has sent a byte for the route's
//! `upgrade_idle_timeout`.
//!
//! A WebSocket over HTTP/2 (RFC 8441: an extended CONNECT with `:protocol websocket`)
//! goes upstream as the HTTP/1.1 upgrade it stands for; the client gets `200` for the
//! upstream's `101`, and its side of the tunnel is the HTTP/2 stream.
//!
//! A tunnel runs as a task of its own on the worker, and the connection that switched
//! waits for its tunnels before it ends, so that a switched connection still counts as
//! open (in `portcullis_connections_open`, against the per-IP limit, and in the drain
//! at shutdown, which gives it the `drain_timeout` to finish).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::ProxyBody;
use crate::l4::relay::relay;
use crate::metrics;
use crate::proxy;

/// A protocol switch a request asked for, taken from it before it is driven.
pub(super) struct Asked {
    /// The client's side, which hyper hands over once the answer is written.
    client: OnUpgrade,
    /// An HTTP/2 extended CONNECT (RFC 8441), which the upstream got as an HTTP/1.1
    /// upgrade and whose client expects a `200`.
    extended: bool,
}

impl Asked {
    /// What `req` asks to switch to, if anything: an HTTP/1.1 upgrade, or an HTTP/2
    /// extended CONNECT, which is turned into the HTTP/1.1 upgrade it stands for (see
    /// [`from_extended_connect`]) so that routes, filters and upstreams see what an
    /// HTTP/1.1 client would have sent.
    pub(super) fn take<B>(req: &mut Request<B>) -> Option<Asked> {
        let extended = from_extended_connect(req);
        proxy::requested_upgrade(req.version(), req.headers())?;
        Some(Asked {
            client: hyper::upgrade::on(req),
            extended,
        })
    }
}

/// Settles the answer `resp` to a request that asked for `asked` (`outcome` says which
/// route served it):
/// on an upstream's `101` to a request that asked to switch, the switch to start
/// (holding `hold` until it ends), with `resp` made what the client expects (a `200`
/// for an extended CONNECT). A `101` nothing can be joined to (the request asked for
/// no switch, or a filter answered it) and a `2xx` without a switch to an extended
/// CONNECT (its client would take it for an open tunnel) become `502`.
pub(super) fn settle<T: 'static>(
    asked: Option<Asked>,
    resp: &mut Response<ProxyBody>,
    outcome: &proxy::Outcome,
    hold: &mut Option<T>,
) -> Option<Switch<T>> {
    let extended = asked.as_ref().is_some_and(|a| a.extended);
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if extended && status.is_success() {
            tracing::debug!(
                "an upstream answered a WebSocket over HTTP/2 {status} without switching"
            );
            *resp = upstream_unreachable();
        }
        return None;
    }
    let joined = asked
        .zip(outcome.route.as_ref())
        .and_then(|(asked, route)| {
            let idle_timeout = outcome.upgrade_idle_timeout?;
            let upstream = resp.extensions_mut().remove::<OnUpgrade>()?;
            Some(Switch {
                client: asked.client,
                upstream,
                route: Arc::clone(route),
                idle_timeout,
                _hold: hold.take(),
            })
        });
    match joined {
        Some(switch) => {
            if extended {
                // RFC 8441 §5: the stream is open with a 2xx; the HTTP/1.1 handshake's
                // proof of the key is the proxy's business, not the client's.
                *resp.status_mut() = StatusCode::OK;
                resp.headers_mut().remove("sec-websocket-accept");
            }
            Some(switch)
        }
        None => {
            tracing::debug!("a 101 answered a request that asked for no switch");
            *resp = upstream_unreachable();
            None
        }
    }
}

fn upstream_unreachable() -> Response<ProxyBody> {
    proxy::error_response(StatusCode::BAD_GATEWAY, "upstream unreachable\n")
}

/// RFC 8441: turns an HTTP/2 extended CONNECT (`:protocol`) into the HTTP/1.1 upgrade
/// it stands for: `GET` with `Connection: upgrade`, `Upgrade: PROTOCOL` and, for a
/// WebSocket, a fresh `Sec-WebSocket-Key` (HTTP/2 has none). Returns whether it did.
fn from_extended_connect<B>(req: &mut Request<B>) -> bool {
    if req.version() != Version::HTTP_2 || req.method() != Method::CONNECT {
        return false;
    }
    let Some(protocol) = req.extensions_mut().remove::<hyper::ext::Protocol>() else {
        return false;
    };
    let Ok(upgrade) = HeaderValue::from_str(protocol.as_str()) else {
        return false;
    };
    *req.method_mut() = Method::GET;
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
    if protocol.as_str().eq_ignore_ascii_case("websocket") {
        headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
    }
    true
}

/// A `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1).
fn websocket_key() -> HeaderValue {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    HeaderValue::from_str(&key)
        .unwrap_or_else(|_| HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="))
}

/// A protocol switch the client asked for and the upstream accepted, waiting for
/// hyper to hand over the two streams.
pub(super) struct Switch<T> {
    client: OnUpgrade,
    upstream: OnUpgrade,
    route: Arc<str>,
    idle_timeout: Duration,
    /// Held while the tunnel runs (the request's in-flight token).
    _hold: Option<T>,
}

impl<T: 'static> Switch<T> {
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
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        // tokio's default buffer size, as before the relay was shared with L4.
        let relayed = relay(&mut client, &mut upstream, self.idle_timeout, 8 * 1024).await;
        let reason = relayed.reason;
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
