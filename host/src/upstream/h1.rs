//! Our own HTTP/1.1 client for pooled upstream connections.
//!
//! Why not hyper's `client::conn::http1`: it runs each connection as a task of its own
//! and hands every request to it, and every response head and body chunk back, through
//! channels. On the proxy's common path (a keep-alive request, its response) that was
//! the largest single cost left above nginx: ~14k instructions a request, of ~50k, in
//! the hand-offs, the extra task wake-ups and the response parse. Here the request's
//! own task writes the head, streams the body, reads and parses the response head
//! (`httparse`; the head copied out of the read buffer once, the values sharing that
//! copy), and the response body reads straight from the socket; the connection goes
//! back to the pool when that body ends.
//!
//! What stays on hyper: HTTP/2 (its multiplexing is worth a task), and a request that
//! asks to switch protocols (`Upgrade`): its connection becomes the tunnel's, which
//! hyper's `OnUpgrade` hands over. Both are in [`super::pool`].
//!
//! The framing follows RFC 9112 and what hyper's client did, so that a request is sent
//! byte for byte as before (see [`write`]):
//! - a request without a body (one that has ended already) is sent with the headers it
//!   has; one with `Content-Length` with that length; one whose length the body knows
//!   gets `Content-Length`; any other is sent chunked (`Transfer-Encoding` from the
//!   client is hop-by-hop and was removed before), except after `GET`, `HEAD` and
//!   `CONNECT`, which go without it;
//! - a response is framed as §6.3 says (see [`read`]): none after `HEAD`, `1xx`, `204`
//!   and `304`; chunked by `Transfer-Encoding`; else by `Content-Length`; else until
//!   the connection closes. `1xx` heads before the final one are skipped.
//! - The request body is written while the response is read: an upstream may answer
//!   before it has read the whole body (a 413, say), and the response then streams
//!   while the rest of the body is written. A connection is pooled again only when
//!   both are done, the response allowed it (`Connection`, the version) and nothing
//!   was left over.

mod body;
mod read;
mod write;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use http::{Method, Request, Response};

pub use body::H1Body;
/// The chunked decoder, which the server's own HTTP/1.1 connection reads request
/// bodies with too.
pub(crate) use read::{Chunk, Decoded, decode_chunked, field_spans};
/// Head fields and chunk sizes as the server writes them too.
pub(crate) use write::{put_field, put_hex};

use super::limits::Open;
use super::pool::Pool;
use crate::body::{BoxError, ProxyBody};
use crate::tls::connector::MaybeTls;

/// Why an exchange on an HTTP/1.1 connection failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The upstream closed the connection before the whole response head arrived.
    #[error("connection closed before the response head")]
    ClosedBeforeHead,
    /// The upstream closed the connection before the response body's declared end.
    #[error("connection closed before the response body ended")]
    ClosedInBody,
    /// The response head does not parse.
    #[error("malformed response head: {0}")]
    Head(&'static str),
    /// The response head does not follow HTTP/1.1's grammar.
    #[error("malformed response head: {0}")]
    Parse(httparse::Error),
    /// The response head is longer than [`read::MAX_HEAD`].
    #[error("response head over {} bytes", read::MAX_HEAD)]
    HeadTooLarge,
    /// A chunked response body does not follow the chunked coding.
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    /// The upstream switched protocols though the request did not ask it to.
    #[error("101 Switching Protocols to a request that did not ask for it")]
    UnexpectedSwitch,
    /// The request's body failed while it was sent.
    #[error("request body: {0}")]
    RequestBody(BoxError),
    /// The request's body is not the length its `Content-Length` declares.
    #[error("request body {0} than its Content-Length")]
    RequestLength(&'static str),
    /// The request's `Content-Length` does not parse.
    #[error("request Content-Length is not a length")]
    RequestLengthInvalid,
    /// Reading or writing the connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// An HTTP/1.1 connection to a target: idle in the pool, or carrying one exchange.
pub struct Conn {
    io: MaybeTls,
    /// Read and not yet parsed.
    rbuf: BytesMut,
    /// Encoded and not yet written; its allocation is kept from request to request.
    wbuf: BytesMut,
    /// Counted by the circuit breaker while the connection is open.
    _open: Option<Open>,
}

/// Where a connection goes back when its exchange is over: its pool and target.
pub struct Home {
    /// The worker's pool.
    pub pool: Arc<Pool>,
    /// The target's index in the upstream.
    pub index: usize,
}

impl Conn {
    /// A new connection over `io`, counted in `open` while it lives.
    pub fn new(io: MaybeTls, open: Option<Open>) -> Self {
        Self {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            _open: open,
        }
    }

    /// Whether an idle connection can take a request: the upstream has not closed it
    /// (or sent anything unasked). The socket is only read when the reactor saw it
    /// become readable, so a live idle connection costs no system call here.
    pub fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        // Ready means closed, reset, or bytes no request asked for.
        self.io.poll_read_buf(&mut cx, &mut self.rbuf).is_pending()
    }

    /// The connection's stream and its count in the circuit breaker, for a request
    /// hyper sends on it (see [`super::pool`]).
    pub fn into_parts(self) -> (MaybeTls, Option<Open>) {
        (self.io, self._open)
    }

    /// Reads more of the response into the read buffer: the count read, 0 at the end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.io.poll_read_buf(cx, &mut self.rbuf)
    }
}

/// Sends `req` on `conn` and returns the response head, its body streaming from the
/// connection, which goes back `home` when that body has ended.
///
/// `req` must be in origin form (or authority form for `CONNECT`) with `Host` set.
pub async fn exchange(
    mut conn: Conn,
    req: Request<ProxyBody>,
    home: Home,
) -> Result<Response<H1Body>, H1Error> {
    let (head, body) = req.into_parts();
    let mut writer = Some(write::Writer::start(&head, body, &mut conn.wbuf)?);
    let no_body = head.method == Method::HEAD;
    let head = std::future::poll_fn(|cx| {
        if let Some(w) = writer.as_mut() {
            match w.poll_send(cx, &mut conn) {
                Poll::Ready(Ok(())) => writer = None,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        loop {
            if let Some(head) = read::parse_head(&mut conn.rbuf, no_body)? {
                if head.0.status.is_informational() {
                    if head.0.status == http::StatusCode::SWITCHING_PROTOCOLS {
                        return Poll::Ready(Err(H1Error::UnexpectedSwitch));
                    }
                    // `100 Continue`, `103 Early Hints`: the final head follows.
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(H1Error::ClosedBeforeHead)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            }
        }
    })
    .await?;
    let body = H1Body::new(conn, writer, &head, home);
    Ok(Response::from_parts(head.0, body))
}

impl MaybeTls {
    /// Reads what is there into `buf`, growing it as needed: the count read, 0 at the
    /// end of the stream.
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < read::MIN_READ {
            buf.reserve(read::READ_SIZE);
        }
        match self {
            MaybeTls::Plain(s) => tokio_util::io::poll_read_buf(Pin::new(s.inner_mut()), cx, buf),
            MaybeTls::Tls(s) => tokio_util::io::poll_read_buf(Pin::new(s.inner_mut()), cx, buf),
        }
    }

    /// Writes some of `buf`: the count written.
    fn poll_write_some(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        use tokio::io::AsyncWrite;
        match self {
            MaybeTls::Plain(s) => Pin::new(s.inner_mut()).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.inner_mut()).poll_write(cx, buf),
        }
    }

    /// Pushes out what the TLS session holds (nothing to do for plain TCP).
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use tokio::io::AsyncWrite;
        match self {
            MaybeTls::Plain(_) => Poll::Ready(Ok(())),
            MaybeTls::Tls(s) => Pin::new(s.inner_mut()).poll_flush(cx),
        }
    }
}
