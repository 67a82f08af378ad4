//! The request body, read straight from the connection: `Content-Length` bytes, or
//! the chunked coding (the upstream client's decoder).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::{Reading, Shared, Stream, Wire};
use crate::body::BoxError;
use crate::upstream::h1::{Decoded, decode_chunked};

/// Why a request body failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    /// The client closed the connection before the body's end.
    #[error("connection closed before the request body ended")]
    Closed,
    /// The body broke earlier, or belongs to a request that is over.
    #[error("request body no longer readable")]
    Gone,
}

impl<I: Stream + 'static> Wire<I> {
    /// The next frame of request `seq`'s body.
    pub(super) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        seq: u64,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if seq != self.seq {
            return Poll::Ready(Some(Err(Box::new(BodyError::Gone))));
        }
        loop {
            match &mut self.body {
                Reading::Done => return Poll::Ready(None),
                Reading::Failed => return Poll::Ready(Some(Err(Box::new(BodyError::Gone)))),
                Reading::Length(left) if !self.rbuf.is_empty() => {
                    let n = self
                        .rbuf
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    if *left == 0 {
                        self.body = Reading::Done;
                    }
                    let data = self.rbuf.split_to(n).freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Reading::Length(_) => {}
                Reading::Chunked(state) => match decode_chunked(state, &mut self.rbuf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End(trailers)) => {
                        self.body = Reading::Done;
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::More) => {}
                    Err(e) => {
                        self.body = Reading::Failed;
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                },
            }
            if self.eof {
                self.body = Reading::Failed;
                return Poll::Ready(Some(Err(Box::new(BodyError::Closed))));
            }
            match std::task::ready!(self.poll_fill(cx)) {
                Ok(_) => {}
                Err(e) => {
                    self.body = Reading::Failed;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }
}

/// A request's body as the proxy is handed it: nothing (a head without one), or the
/// connection's, read as the consumer asks.
pub(super) struct WireBody<I: Stream + 'static> {
    /// `None` for a request without a body.
    wire: Option<Shared<I>>,
    seq: u64,
}

impl<I: Stream + 'static> WireBody<I> {
    /// The body of a request that has none.
    pub(super) fn empty() -> Self {
        Self { wire: None, seq: 0 }
    }

    /// The body of request `seq`, read from `wire`.
    pub(super) fn new(wire: Shared<I>, seq: u64) -> Self {
        Self {
            wire: Some(wire),
            seq,
        }
    }
}

#[expect(
    unsafe_code,
    reason = "a request body must be Send; this one never leaves its worker thread"
)]
// SAFETY: as for `tunnel::WorkerLocal`: the connection is served on its worker's
// current-thread runtime, and the request body (with the `Rc` it holds) stays in the
// futures of that worker — the proxy driver, the upstream exchange, tasks spawned on
// that same runtime — so the `Rc` is only ever touched by the thread that made it.
unsafe impl<I: Stream + 'static> Send for WireBody<I> {}

impl<I: Stream + 'static> Body for WireBody<I> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &self.wire {
            None => Poll::Ready(None),
            Some(wire) => wire.borrow_mut().poll_body(cx, self.seq),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.wire.as_ref().is_none_or(|w| {
            w.try_borrow()
                .is_ok_and(|w| w.seq == self.seq && w.body == Reading::Done)
        })
    }

    fn size_hint(&self) -> SizeHint {
        let left = self.wire.as_ref().and_then(|w| {
            let w = w.try_borrow().ok()?;
            match w.body {
                _ if w.seq != self.seq => None,
                Reading::Done => Some(0),
                Reading::Length(n) => Some(n),
                Reading::Chunked(_) | Reading::Failed => None,
            }
        });
        match (self.wire.is_none(), left) {
            (true, _) => SizeHint::with_exact(0),
            (false, Some(n)) => SizeHint::with_exact(n),
            (false, None) => SizeHint::default(),
        }
    }
}
