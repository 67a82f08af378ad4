//! The HTTP/1 request-head guard: an I/O wrapper between the socket and hyper that
//! follows the request framing of the byte stream, so that every request head can be
//! checked before hyper sees it. Most HTTP/1.1 is served by [`super::h1`], which
//! applies the same rules ([`body_framing`], the limits) to its own parse; hyper,
//! under the guard, serves what `h1` hands it (HTTP/2, upgrades, refused heads).
//!
//! Why not rely on hyper alone: hyper silently drops `Content-Length` when
//! `Transfer-Encoding` is also present, whereas RFC 9112 §6.1 (and our contract) wants
//! 400 and the connection closed; and hyper answers an oversized head with a bodiless
//! 431 and closes while the client may still be sending, which the client often sees
//! as a connection reset. The guard instead hands hyper a small stand-in head for a
//! rejected request (the handler answers it, with a body, by its index on the
//! connection), stops reading, and has the connection drain the client's remaining
//! bytes before closing ("lingering close").
//!
//! It also times heads: the first byte of a head starts the header-read timer, a
//! complete head stops it ([`ConnState::head_started`] / [`ConnState::head_done`]).
//!
//! HTTP/2 (the prior-knowledge preface) and anything the parser does not understand
//! pass through untouched: hyper then handles (or refuses) them itself.

mod framing;

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::state::ConnState;
pub(crate) use super::state::{Reject, Stream};
pub(crate) use framing::{BodyFraming, Framing, H2_PREFACE, STACK_HEADERS, body_framing};

/// The head hyper is given in place of a rejected one: bodiless, so the stream stays
/// in sync, and asking to close.
const STAND_IN_HEAD: &[u8] =
    b"GET / HTTP/1.1\r\nhost: rejected.invalid\r\nconnection: close\r\n\r\n";

/// How much the guard reads from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Where a guard leaves its stream when dropped while its connection parks (see
/// [`ConnState::set_parked`]); the connection takes it back from there.
pub(crate) type ParkSlot<I> = Rc<RefCell<Option<I>>>;

/// The guard around a connection's byte stream (see the module docs).
pub(crate) struct Guard<I: Stream + 'static> {
    io: Option<I>,
    state: Rc<ConnState>,
    framing: Framing,
    /// Read from the socket, not yet examined.
    input: BytesMut,
    /// Examined, ready for hyper.
    output: BytesMut,
    /// The socket reported end of stream.
    eof: bool,
    /// The last read found nothing, with nothing buffered, between requests.
    read_idle: bool,
    /// Written since the last completed flush.
    unflushed: bool,
    park: ParkSlot<I>,
}

impl<I: Stream + 'static> Guard<I> {
    /// The guard of a new connection.
    pub(crate) fn new(io: I, state: Rc<ConnState>, park: ParkSlot<I>) -> Self {
        let framing = Framing::new(state.limits().max_header_bytes, state.limits().max_headers);
        Self::with(io, state, park, framing, BytesMut::new())
    }

    /// The guard of a connection that resumes after parking, `input` being the bytes
    /// that woke it (the start of its next request).
    pub(crate) fn resume(io: I, state: Rc<ConnState>, park: ParkSlot<I>, input: BytesMut) -> Self {
        let limits = state.limits();
        let framing = Framing::resume(
            limits.max_header_bytes,
            limits.max_headers,
            state.requests(),
        );
        let mut guard = Self::with(io, state, park, framing, input);
        guard.process();
        guard
    }

    fn with(
        io: I,
        state: Rc<ConnState>,
        park: ParkSlot<I>,
        framing: Framing,
        input: BytesMut,
    ) -> Self {
        Self {
            io: Some(io),
            state,
            framing,
            input,
            output: BytesMut::new(),
            eof: false,
            read_idle: false,
            unflushed: false,
            park,
        }
    }

    /// Tells the connection whether hyper is at rest (see [`ConnState::set_at_rest`]).
    fn set_read_idle(&mut self, idle: bool) {
        self.read_idle = idle;
        self.state.set_at_rest(idle && !self.unflushed);
    }

    /// Something was written: hyper is not at rest until it is flushed.
    fn note_written(&mut self) {
        self.unflushed = true;
        self.state.set_at_rest(false);
    }

    fn io(&mut self) -> io::Result<Pin<&mut I>> {
        match self.io.as_mut() {
            Some(io) => Ok(Pin::new(io)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Tells the watchdog whether the client is taking what is written.
    fn note_write(&self, blocked: bool) {
        if blocked {
            self.state.write_blocked();
        } else {
            self.state.wrote();
        }
    }

    /// Runs the framing over what has been read, moving what may go to hyper into
    /// `output` and recording rejections.
    fn process(&mut self) {
        if self.state.is_passthrough() {
            self.framing.passthrough();
        }
        let events = self
            .framing
            .feed(&mut self.input, &mut self.output, self.eof);
        if events.head_started {
            self.state.head_started();
        }
        for _ in 0..events.heads {
            self.state.head_done();
        }
        if let Some((index, why)) = events.rejected {
            self.state.reject(index, why);
            self.output.extend_from_slice(STAND_IN_HEAD);
            self.state.head_done();
        }
        if events.passthrough {
            self.state.passthrough();
        }
    }
}

impl<I: Stream + 'static> AsyncRead for Guard<I> {
    #[expect(
        unsafe_code,
        reason = "reads into spare capacity without zeroing it first"
    )]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.set_read_idle(false);
        loop {
            if !this.output.is_empty() {
                let n = buf.remaining().min(this.output.len());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.framing.is_holding() {
                // After a rejection nothing more is read: the connection closes once
                // the answer is out, and the lingering close drains the rest.
                return Poll::Pending;
            }
            if this.framing.is_passthrough() && this.input.is_empty() {
                if this.input.capacity() > 0 {
                    // From here on hyper reads into its own buffer: give ours back
                    // (an idle HTTP/2 connection would hold them for its lifetime).
                    this.input = BytesMut::new();
                    this.output = BytesMut::new();
                }
                if this.eof {
                    return Poll::Ready(Ok(()));
                }
                return this.io()?.poll_read(cx, buf);
            }
            if this.eof {
                // Hand hyper whatever is left (it reports a truncated head itself).
                if this.input.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let rest = this.input.split();
                this.output.unsplit(rest);
                continue;
            }
            // Read straight into the spare capacity of `input`: no zeroed scratch
            // buffer and no copy out of one (the profile showed an 8 KiB memset per
            // poll as a third of the proxy's instructions).
            this.input.reserve(READ_CHUNK);
            let filled = {
                let Some(io) = this.io.as_mut() else {
                    return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
                };
                let mut rb = ReadBuf::uninit(this.input.spare_capacity_mut());
                match Pin::new(io).poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        // Hyper waits for the next head, and has had every head
                        // read so far: it holds nothing the connection would lose
                        // by dropping it.
                        let idle = this.input.is_empty()
                            && this.framing.at_head()
                            && this.framing.heads() == this.state.requests();
                        this.set_read_idle(idle);
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                rb.filled().len()
            };
            if filled == 0 {
                this.eof = true;
            } else {
                // SAFETY: `poll_read` initialised the first `filled` bytes of the spare
                // capacity (`ReadBuf` guarantees `filled <= initialised`).
                unsafe { this.input.set_len(this.input.len() + filled) };
            }
            this.process();
        }
    }
}

impl<I: Stream + 'static> AsyncWrite for Guard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.note_written();
        self.io()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.note_written();
        let res = self.io()?.poll_write_vectored(cx, bufs);
        self.note_write(res.is_pending());
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = self.io()?.poll_flush(cx);
        if self.unflushed && matches!(res, Poll::Ready(Ok(()))) {
            // Hyper flushes its own buffer into the stream before flushing the
            // stream: it holds nothing unwritten now.
            self.unflushed = false;
            let idle = self.read_idle;
            self.set_read_idle(idle);
        }
        res
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io()?.poll_shutdown(cx)
    }
}

impl<I: Stream + 'static> Drop for Guard<I> {
    fn drop(&mut self) {
        if self.state.is_parked() {
            // Hyper is dropped at rest: the connection keeps the stream alone.
            *self.park.borrow_mut() = self.io.take();
            return;
        }
        // A rejected connection is closed by the connection task only once the client's
        // remaining bytes are drained; closing with unread data would send a reset
        // that can destroy the error response before the client reads it. So is one
        // refused mid-body, or closed by a drain (see `ConnState::closes_lingering`).
        if (self.framing.is_holding() || self.state.closes_lingering())
            && let Some(io) = self.io.take()
        {
            self.state.linger(Box::new(io));
        }
    }
}
