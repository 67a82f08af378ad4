//! Our own HTTP/1.1 server connection, for the common path: each request head parsed
//! once, into the `http::Request` the proxy is handed; its body read straight from
//! the connection; the response written from this task; requests served in order,
//! one after another, for as long as the connection is kept alive.
//!
//! Why not hyper's `server::conn::http1` alone: the guard must see every head before
//! hyper (hyper's framing and limit answers are not ours, see [`super::guard`]), so
//! each head was parsed twice, and hyper's dispatcher added its own layers. Here the
//! guard's rules (`guard::body_framing`, the limits) are applied to the one parse.
//!
//! What stays on hyper, handed the rest of the connection with the bytes not yet
//! consumed (through a guard resumed on them, exactly as a parked connection resumes):
//! HTTP/2 (the preface), a request that asks to switch protocols (`Upgrade`, whose
//! `OnUpgrade` the tunnel needs) or for a tunnel (`CONNECT`), `Expect: 100-continue`,
//! and any head that is refused or does not parse, so that its answer is the one the
//! guard and hyper give. The connection stays hyper's until it parks.

mod body;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod head;
mod write;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use http::{HeaderValue, Request};

use super::conn::handle;
use super::guard::{BodyFraming, H2_PREFACE, ParkSlot, Stream};
use super::state::ConnState;
use super::tunnel::Tunnels;
use crate::app::App;
use crate::proxy::ConnInfo;
use crate::upstream::h1::Chunk;
use body::WireBody;
use head::Parsed;

/// How much the connection reads from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// How the connection ended.
pub(super) enum Ended {
    /// It is closed (or closes lingering once dropped).
    Closed,
    /// Hyper serves the rest: the stream is back in the park slot, these bytes are
    /// what was read of it and not consumed.
    Hyper(BytesMut),
}

/// What a connection's requests are served with.
pub(super) struct Ctx<'a> {
    pub app: &'a Arc<App>,
    pub info: &'a Rc<ConnInfo>,
    pub state: &'a Rc<ConnState>,
    pub tunnels: &'a Tunnels,
    /// `Alt-Svc` for every response (a listener that serves HTTP/3 too).
    pub alt_svc: Option<&'a HeaderValue>,
}

/// Where the body of the request being served is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Read whole (or there is none).
    Done,
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Broken (malformed, or the client closed in it): the connection closes.
    Failed,
}

/// The connection's stream and buffers, shared by the loop and the request body.
pub(super) struct Wire<I: Stream + 'static> {
    /// `None` once handed to hyper.
    io: Option<I>,
    /// Read and not yet consumed.
    rbuf: BytesMut,
    /// The response's encoding buffer, kept from response to response.
    wbuf: BytesMut,
    /// The client closed its side.
    eof: bool,
    body: Reading,
    /// The request being served (counted from 1): a body of an earlier request,
    /// should something still hold it, reads nothing more.
    seq: u64,
    state: Rc<ConnState>,
    park: ParkSlot<I>,
}

/// A connection's [`Wire`], as the loop and the request body share it.
pub(super) type Shared<I> = Rc<RefCell<Wire<I>>>;

impl<I: Stream + 'static> Wire<I> {
    /// The wire of `io`, with `input` read from it already.
    pub(super) fn new(io: I, input: BytesMut, state: Rc<ConnState>, park: ParkSlot<I>) -> Self {
        Self {
            io: Some(io),
            rbuf: input,
            wbuf: BytesMut::new(),
            eof: false,
            body: Reading::Done,
            seq: 0,
            state,
            park,
        }
    }

    /// Reads more into the read buffer: the count read, 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let res = tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.rbuf);
        if let Poll::Ready(Ok(0)) = res {
            self.eof = true;
        }
        res
    }

    /// The next request head: `Ready(None)` when hyper is to serve what follows,
    /// `Ready(Some(Err))` when the connection ended between requests.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<head::Head>, ()>> {
        loop {
            if !self.rbuf.is_empty() {
                self.state.head_started();
                if self.seq == 0 && self.state.requests() == 0 {
                    // A new connection may be HTTP/2 with prior knowledge.
                    let n = self.rbuf.len().min(H2_PREFACE.len());
                    if self.rbuf[..n] == H2_PREFACE[..n] && (n == H2_PREFACE.len() || self.eof) {
                        return Poll::Ready(Ok(None));
                    }
                    if self.rbuf[..n] == H2_PREFACE[..n] {
                        if let Err(()) = std::task::ready!(self.poll_more(cx)) {
                            return Poll::Ready(Ok(None));
                        }
                        continue;
                    }
                }
                let limits = self.state.limits();
                match head::parse(&mut self.rbuf, limits.max_header_bytes, limits.max_headers) {
                    Parsed::Head(head) => return Poll::Ready(Ok(Some(head))),
                    Parsed::Elsewhere => return Poll::Ready(Ok(None)),
                    Parsed::Partial if self.eof => return Poll::Ready(Ok(None)),
                    Parsed::Partial => {}
                }
            } else if self.eof {
                return Poll::Ready(Err(()));
            }
            match self.poll_fill(cx) {
                Poll::Pending => {
                    // Waiting for a head with nothing read and everything written:
                    // nothing here that the connection would lose by parking.
                    self.state.set_at_rest(self.rbuf.is_empty());
                    return Poll::Pending;
                }
                Poll::Ready(Ok(_)) => self.state.set_at_rest(false),
                Poll::Ready(Err(_)) if self.rbuf.is_empty() => return Poll::Ready(Err(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(None)),
            }
        }
    }

    /// Reads more of a head that may be the HTTP/2 preface: `Err` at the end of the
    /// stream or on an error (hyper then sees what there is).
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        match std::task::ready!(self.poll_fill(cx)) {
            Ok(n) if n > 0 => Poll::Ready(Ok(())),
            _ => Poll::Ready(Err(())),
        }
    }

    /// Starts reading the body of the next request, framed as `body`: its number.
    fn start(&mut self, body: BodyFraming) -> u64 {
        self.seq += 1;
        self.body = match body {
            BodyFraming::Length(n) => Reading::Length(n),
            BodyFraming::Chunked => Reading::Chunked(Chunk::Size),
            BodyFraming::None | BodyFraming::Tunnel => Reading::Done,
        };
        self.seq
    }

    /// Gives the stream back to the park slot for hyper, with what was read of it.
    fn hand_off(&mut self) -> BytesMut {
        *self.park.borrow_mut() = self.io.take();
        std::mem::take(&mut self.rbuf)
    }

    /// Writes all of `buf` (advancing it), telling the watchdog whether the client
    /// takes it.
    fn poll_write_all(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<()>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        while buf.has_remaining() {
            match Pin::new(&mut *io).poll_write(cx, buf) {
                Poll::Pending => {
                    self.state.write_blocked();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.state.wrote();
                    buf.advance(n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Whether the client has closed the connection, watched while a request whose
    /// body has been read is served. What arrives meanwhile (the next, pipelined
    /// request) is kept, up to a head's worth.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> bool {
        while self.body == Reading::Done && !self.eof {
            if self.rbuf.len() > self.state.limits().max_header_bytes {
                return false;
            }
            match self.poll_fill(cx) {
                Poll::Pending => return false,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => return true,
            }
        }
        self.eof && self.body == Reading::Done
    }

    /// Whether the request body has been read whole, reading what is left of it when
    /// that is already here (a consumer that stopped early, a filter that answered
    /// first): otherwise the connection closes after the response.
    fn finish_body(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // A bound on what is read and thrown away: past it, closing is cheaper.
        let mut budget = 64 * 1024;
        loop {
            match self.poll_body(&mut cx, self.seq) {
                Poll::Ready(None) => return true,
                Poll::Ready(Some(Ok(frame))) => {
                    let n = frame.data_ref().map_or(0, |d| d.len());
                    if n >= budget {
                        return false;
                    }
                    budget -= n;
                }
                Poll::Ready(Some(Err(_))) | Poll::Pending => return false,
            }
        }
    }
}

impl<I: Stream + 'static> Drop for Wire<I> {
    fn drop(&mut self) {
        if self.state.is_parked() {
            // Dropped at rest: the connection keeps the stream alone.
            if let Some(io) = self.io.take() {
                *self.park.borrow_mut() = Some(io);
            }
            return;
        }
        if self.state.closes_lingering()
            && let Some(io) = self.io.take()
        {
            self.state.linger(Box::new(io));
        }
    }
}

/// Serves requests on `wire` until the connection ends or hyper is to take over.
pub(super) async fn serve<I: Stream + 'static>(ctx: Ctx<'_>, wire: Shared<I>) -> Ended {
    loop {
        let next = std::future::poll_fn(|cx| wire.borrow_mut().poll_head(cx)).await;
        let head = match next {
            Ok(Some(head)) => head,
            Ok(None) => return Ended::Hyper(wire.borrow_mut().hand_off()),
            Err(()) => {
                // The client closed its idle connection: close ours.
                let _ = std::future::poll_fn(|cx| wire.borrow_mut().poll_shutdown(cx)).await;
                return Ended::Closed;
            }
        };
        let exchange = write::Exchange {
            head: head.parts.method == http::Method::HEAD,
            version: head.parts.version,
            keep_alive: head.keep_alive,
        };
        let body = match head.body {
            BodyFraming::None | BodyFraming::Tunnel => {
                wire.borrow_mut().start(head.body);
                WireBody::empty()
            }
            framing => {
                let seq = wire.borrow_mut().start(framing);
                WireBody::new(Rc::clone(&wire), seq)
            }
        };
        let req = Request::from_parts(head.parts, body);
        let handled = handle(
            Arc::clone(ctx.app),
            Rc::clone(ctx.info),
            Rc::clone(ctx.state),
            ctx.tunnels,
            req,
        );
        let mut handled = std::pin::pin!(handled);
        let resp = std::future::poll_fn(|cx| {
            if let Poll::Ready(resp) = handled.as_mut().poll(cx) {
                return Poll::Ready(Some(resp));
            }
            if wire.borrow_mut().poll_closed(cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        let Some(mut resp) = resp else {
            // The client closed while its request was served: the request is dropped
            // (its upstream exchange with it), as hyper did.
            tracing::debug!("the client closed before its response");
            return Ended::Closed;
        };
        if let Some(value) = ctx.alt_svc {
            resp.headers_mut()
                .insert(http::header::ALT_SVC, value.clone());
        }
        let keep = write::respond(&wire, resp, &exchange).await;
        let keep = match keep {
            Ok(keep) => {
                let mut w = wire.borrow_mut();
                let read_whole = w.finish_body();
                if keep && !read_whole {
                    // The client may still be sending the body: a close now would
                    // reset the connection under the answer it has yet to read.
                    ctx.state.close_lingering();
                }
                keep && read_whole
            }
            Err(e) => {
                tracing::debug!("connection ended: {e}");
                return Ended::Closed;
            }
        };
        if !keep {
            if !ctx.state.closes_lingering() {
                let _ = std::future::poll_fn(|cx| wire.borrow_mut().poll_shutdown(cx)).await;
            }
            return Ended::Closed;
        }
    }
}
