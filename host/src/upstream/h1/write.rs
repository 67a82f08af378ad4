//! The request side: the head encoded into the connection's write buffer, then the
//! body framed by length or chunked, written as the socket takes it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use http::{Method, header, request};
use http_body::Body;

use super::{Conn, H1Error};
use crate::body::ProxyBody;

/// Body bytes gathered before they are written: the head and a whole small body go out
/// in one write; a larger body in pieces of about this size.
const GATHER: usize = 64 * 1024;

/// How the body is delimited on the wire.
enum Framing {
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request being written: its head (already in the write buffer) and what is left
/// of its body.
pub(super) struct Writer {
    /// `None` once the body has ended (its last bytes may still be in the buffer).
    body: Option<ProxyBody>,
    framing: Framing,
}

impl Writer {
    /// Encodes `head` into `wbuf` with the framing header its body needs, and returns
    /// the writer of that body.
    pub(super) fn start(
        head: &request::Parts,
        body: ProxyBody,
        wbuf: &mut BytesMut,
    ) -> Result<Writer, H1Error> {
        wbuf.clear();
        wbuf.reserve(512);
        wbuf.put_slice(head.method.as_str().as_bytes());
        wbuf.put_u8(b' ');
        match head.uri.path_and_query() {
            Some(pq) if head.method != Method::CONNECT => wbuf.put_slice(pq.as_str().as_bytes()),
            _ => match head.uri.authority() {
                Some(a) => wbuf.put_slice(a.as_str().as_bytes()),
                None => wbuf.put_u8(b'/'),
            },
        }
        wbuf.put_slice(b" HTTP/1.1\r\n");
        for (name, value) in &head.headers {
            // The framing is this hop's: chosen below.
            if name == header::TRANSFER_ENCODING {
                continue;
            }
            put_field(wbuf, name, value);
        }
        let (body, framing) = if body.is_end_stream() {
            // Sent with the headers it has: a `Content-Length: 0` stays, none is added.
            (None, Framing::Length(0))
        } else if head.headers.contains_key(header::CONTENT_LENGTH) {
            let length =
                crate::body::declared_length(&head.headers).ok_or(H1Error::RequestLengthInvalid)?;
            (Some(body), Framing::Length(length))
        } else if let Some(length) = body.size_hint().exact() {
            wbuf.put_slice(b"content-length: ");
            wbuf.put_slice(itoa::Buffer::new().format(length).as_bytes());
            wbuf.put_slice(b"\r\n");
            (Some(body), Framing::Length(length))
        } else if matches!(head.method, Method::GET | Method::HEAD | Method::CONNECT) {
            // Almost never with a body, and an upstream may refuse a chunked one: as
            // hyper's client did, such a body of unknown length is not sent. (An
            // HTTP/3 GET whose stream end comes a packet after its head is one.)
            (None, Framing::Length(0))
        } else {
            wbuf.put_slice(b"transfer-encoding: chunked\r\n");
            (Some(body), Framing::Chunked)
        };
        wbuf.put_slice(b"\r\n");
        Ok(Writer { body, framing })
    }

    /// Writes what it can: `Ready(Ok)` once the whole request is written, `Pending`
    /// while the socket or the body has nothing more for now.
    pub(super) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Conn,
    ) -> Poll<Result<(), H1Error>> {
        loop {
            let gathered = self.gather(cx, &mut conn.wbuf)?;
            while conn.wbuf.has_remaining() {
                match conn.io.poll_write_some(cx, &conn.wbuf) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(H1Error::Io(std::io::ErrorKind::WriteZero.into())));
                    }
                    Poll::Ready(Ok(n)) => conn.wbuf.advance(n),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if let Poll::Ready(Err(e)) = conn.io.poll_flush_tls(cx) {
                return Poll::Ready(Err(e.into()));
            }
            if self.body.is_none() {
                return Poll::Ready(Ok(()));
            }
            if gathered.is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Moves the body's ready frames into `wbuf`, framed, until it holds [`GATHER`]
    /// bytes: `Pending` when the body had nothing more for now.
    fn gather(&mut self, cx: &mut Context<'_>, wbuf: &mut BytesMut) -> Result<Poll<()>, H1Error> {
        while wbuf.len() < GATHER {
            let Some(body) = self.body.as_mut() else {
                return Ok(Poll::Ready(()));
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Ok(Poll::Pending),
                Poll::Ready(None) => {
                    self.end(wbuf, None)?;
                    continue;
                }
                Poll::Ready(Some(Err(e))) => return Err(H1Error::RequestBody(e)),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => match &mut self.framing {
                    Framing::Length(left) => {
                        let len = data.len() as u64;
                        if len > *left {
                            return Err(H1Error::RequestLength("longer"));
                        }
                        *left -= len;
                        wbuf.put_slice(&data);
                    }
                    Framing::Chunked => {
                        put_hex(wbuf, data.len());
                        wbuf.put_slice(b"\r\n");
                        wbuf.put_slice(&data);
                        wbuf.put_slice(b"\r\n");
                    }
                },
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.end(wbuf, Some(&trailers))?;
                    }
                }
            }
        }
        Ok(Poll::Ready(()))
    }

    /// The body's end: the last chunk (with `trailers`, which only chunked framing can
    /// carry), or the check that the declared length was sent.
    fn end(
        &mut self,
        wbuf: &mut BytesMut,
        trailers: Option<&http::HeaderMap>,
    ) -> Result<(), H1Error> {
        self.body = None;
        match self.framing {
            Framing::Length(0) => Ok(()),
            Framing::Length(_) => Err(H1Error::RequestLength("shorter")),
            Framing::Chunked => {
                wbuf.put_slice(b"0\r\n");
                for (name, value) in trailers.into_iter().flatten() {
                    put_field(wbuf, name, value);
                }
                wbuf.put_slice(b"\r\n");
                Ok(())
            }
        }
    }
}

/// One `name: value` line, of the head or of the trailers.
pub(crate) fn put_field(wbuf: &mut BytesMut, name: &http::HeaderName, value: &http::HeaderValue) {
    wbuf.put_slice(name.as_str().as_bytes());
    wbuf.put_slice(b": ");
    wbuf.put_slice(value.as_bytes());
    wbuf.put_slice(b"\r\n");
}

/// `n` in lower-case hexadecimal, as a chunk's size line has it.
pub(crate) fn put_hex(wbuf: &mut BytesMut, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        wbuf.put_u8(b"0123456789abcdef"[(n >> (i * 4)) & 0xf]);
    }
}
