//! The response body, read straight from its connection, which goes back to the pool
//! when the body has ended cleanly.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::read::{self, Decoded, Framing};
use super::write::Writer;
use super::{Conn, H1Error, Home};

/// A response body streaming from an HTTP/1.1 upstream connection. While the request's
/// body is still being written (the upstream answered early), reading this body also
/// writes it.
pub struct H1Body {
    /// `None` once the body has ended or failed.
    conn: Option<Conn>,
    /// What is left of the request, if anything.
    writer: Option<Writer>,
    framing: Framing,
    /// Whether the response lets the connection carry another request.
    keep_alive: bool,
    home: Option<Home>,
}

impl H1Body {
    /// The body of a response read from `conn` with `head`'s framing; `writer`, the
    /// request still being written.
    pub(super) fn new(conn: Conn, writer: Option<Writer>, head: &read::Head, home: Home) -> Self {
        let mut body = Self {
            conn: Some(conn),
            writer,
            framing: head.1,
            keep_alive: head.2,
            home: Some(home),
        };
        // A body that is empty may never be polled: the connection goes back now.
        if body.framing == Framing::Empty {
            body.finish();
        }
        body
    }

    /// The body ended: the connection goes back to its pool if it may carry another
    /// request (the request was written whole and nothing unasked followed).
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take())
            && self.keep_alive
            && self.writer.is_none()
            && conn.rbuf.is_empty()
        {
            home.pool.put_back_h1(home.index, conn);
        }
    }

    /// The body failed: the connection is closed.
    fn fail(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.conn = None;
        self.framing = Framing::Empty;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(w) = this.writer.as_mut() {
                match w.poll_send(cx, conn) {
                    Poll::Ready(Ok(())) => this.writer = None,
                    Poll::Ready(Err(e)) => return this.fail(e),
                    Poll::Pending => {}
                }
            }
            match &mut this.framing {
                Framing::Empty => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) if !conn.rbuf.is_empty() => {
                    let n = conn
                        .rbuf
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let data = conn.rbuf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        // Back to the pool before the last bytes go on: the consumer
                        // may stop polling once the length is reached.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(state) => match read::decode_chunked(state, &mut conn.rbuf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End(trailers)) => {
                        this.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::More) => {}
                    Err(e) => return this.fail(e),
                },
                Framing::Close if !conn.rbuf.is_empty() => {
                    let data = conn.rbuf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Length(_) | Framing::Close => {}
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.framing == Framing::Close => {
                    // The end of a body delimited by the close: the connection is done.
                    this.conn = None;
                    this.framing = Framing::Empty;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return this.fail(H1Error::ClosedInBody),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Empty
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Chunked(_) | Framing::Close => SizeHint::default(),
        }
    }
}
