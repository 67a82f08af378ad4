//! The response: its head encoded as hyper's server encoded it (the framing header the
//! body needs, `Date`, `Connection` as the client's version and the keep-alive
//! decision want), then its body framed by length, chunked, or to the close, written
//! as the socket takes it.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderMap, Response, StatusCode, Version};
use http_body::Body;

use super::head::has_token;
use super::{Shared, Stream};
use crate::server::conn::TrackedBody;
use crate::upstream::h1::{put_field, put_hex};

/// Body bytes gathered before they are written: the head and a whole small body go out
/// in one write; a larger body in pieces of about this size.
const GATHER: usize = 64 * 1024;

/// A write buffer larger than this after a response is not kept for the next one.
const KEEP_WBUF: usize = 16 * 1024;

/// What the response's framing depends on in its request.
pub(super) struct Exchange {
    /// The request was `HEAD`: no body follows the head.
    pub head: bool,
    pub version: Version,
    /// The client lets the connection carry another request.
    pub keep_alive: bool,
}

/// How the response body is delimited on the wire.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Encoder {
    /// This many more bytes (none: no body is written at all).
    Length(u64),
    /// The chunked coding, with the trailer fields its `Trailer` header declared.
    Chunked(Vec<HeaderName>),
    /// Until the connection closes.
    Close,
}

/// Writes `resp` on `wire`; returns whether the connection may carry another request.
pub(super) async fn respond<I: Stream + 'static>(
    wire: &Shared<I>,
    resp: Response<TrackedBody>,
    exchange: &Exchange,
) -> io::Result<bool> {
    let (mut parts, body) = resp.into_parts();
    let mut wbuf = std::mem::take(&mut wire.borrow_mut().wbuf);
    wbuf.clear();
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| Bytes::copy_from_slice(r.as_bytes()));
    let length = if body.is_end_stream() {
        None
    } else {
        Some(body.size_hint().exact())
    };
    let (mut encoder, keep) = encode_head(
        &mut parts.status,
        &parts.headers,
        reason.as_deref(),
        length,
        exchange,
        &mut wbuf,
    );
    drop(parts);
    // A response without a body on the wire does not poll the one it has.
    let mut body = (encoder != Encoder::Length(0)).then_some(body);
    let written = std::future::poll_fn(|cx| {
        loop {
            let mut waiting = false;
            while let Some(b) = body.as_mut().filter(|_| wbuf.len() < GATHER) {
                match Pin::new(b).poll_frame(cx) {
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                    Poll::Ready(None) => {
                        encoder.end(&mut wbuf, None)?;
                        body = None;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => encoder.data(&mut wbuf, &data)?,
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                encoder.end(&mut wbuf, Some(&trailers))?;
                                body = None;
                            }
                        }
                    },
                }
            }
            let mut w = wire.borrow_mut();
            std::task::ready!(w.poll_write_all(cx, &mut wbuf))?;
            if body.is_none() || waiting {
                std::task::ready!(w.poll_flush(cx))?;
                return if body.is_none() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
        }
    })
    .await;
    // The response's end (its in-flight count, its access line) before the next.
    drop(body);
    if wbuf.capacity() <= KEEP_WBUF {
        wire.borrow_mut().wbuf = wbuf;
    }
    written.map(|()| keep && encoder != Encoder::Close)
}

/// Encodes the head of a response with `status` and `headers` into `wbuf`, its body
/// `length` long (`None`: no body; `Some(None)`: of unknown length): the body's
/// encoder, and whether the connection may carry another request after it.
pub(super) fn encode_head(
    status: &mut StatusCode,
    headers: &HeaderMap,
    reason: Option<&[u8]>,
    length: Option<Option<u64>>,
    exchange: &Exchange,
    wbuf: &mut BytesMut,
) -> (Encoder, bool) {
    let empty = HeaderMap::new();
    let (headers, length) = if status.is_informational() {
        // No `1xx` is sent as a final answer (a `101` without a switch was made a 502
        // before): hyper answered 500, as this does.
        *status = StatusCode::INTERNAL_SERVER_ERROR;
        (&empty, None)
    } else {
        (headers, length)
    };
    let status = *status;
    let v10 = exchange.version == Version::HTTP_10;
    let no_content = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let can_chunk = !v10 && !exchange.head && !no_content;
    let mut keep = exchange.keep_alive;

    wbuf.reserve(256 + headers.len() * 32);
    if !v10 && status == StatusCode::OK && reason.is_none() {
        wbuf.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        wbuf.put_slice(if v10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        wbuf.put_slice(status.as_str().as_bytes());
        wbuf.put_u8(b' ');
        let canonical = status.canonical_reason().unwrap_or("<none>").as_bytes();
        wbuf.put_slice(reason.unwrap_or(canonical));
        wbuf.put_slice(b"\r\n");
    }

    let mut encoder = None;
    let mut wrote_date = false;
    let mut said_close = false;
    let mut said_keep_alive = false;
    let mut trailer_fields = Vec::new();
    for (name, value) in headers {
        match *name {
            header::CONTENT_LENGTH => {
                if encoder.is_some() {
                    continue;
                }
                let declared = value.to_str().ok().and_then(|v| v.trim().parse().ok());
                encoder = match (length, declared) {
                    (Some(Some(n)), _) | (Some(None), Some(n)) => Some(Encoder::Length(n)),
                    // Without a body, the length is kept for a `HEAD` only.
                    (None, _) if exchange.head => Some(Encoder::Length(0)),
                    (None, _) | (Some(None), None) => continue,
                };
            }
            header::TRANSFER_ENCODING => {
                if !can_chunk || encoder.is_some() {
                    continue;
                }
                encoder = Some(Encoder::Chunked(Vec::new()));
                if !has_token(value.as_bytes(), b"chunked") {
                    wbuf.put_slice(b"transfer-encoding: ");
                    wbuf.put_slice(value.as_bytes());
                    wbuf.put_slice(b", chunked\r\n");
                    continue;
                }
            }
            header::CONNECTION => {
                said_close |= has_token(value.as_bytes(), b"close");
                said_keep_alive |= has_token(value.as_bytes(), b"keep-alive");
            }
            header::DATE => wrote_date = true,
            header::TRAILER => {
                if !can_chunk {
                    continue;
                }
                if let Ok(names) = value.to_str() {
                    trailer_fields.extend(
                        names
                            .split(',')
                            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
                    );
                }
            }
            _ => {}
        }
        put_field(wbuf, name, value);
    }
    let mut encoder = match (encoder, length) {
        (Some(encoder), _) => encoder,
        (None, Some(None)) if can_chunk => {
            wbuf.put_slice(b"transfer-encoding: chunked\r\n");
            Encoder::Chunked(Vec::new())
        }
        (None, Some(None)) => Encoder::Close,
        (None, None | Some(Some(0))) => {
            if !no_content && !exchange.head {
                wbuf.put_slice(b"content-length: 0\r\n");
            }
            Encoder::Length(0)
        }
        (None, Some(Some(n))) => {
            if !no_content {
                wbuf.put_slice(b"content-length: ");
                wbuf.put_slice(itoa::Buffer::new().format(n).as_bytes());
                wbuf.put_slice(b"\r\n");
            }
            Encoder::Length(n)
        }
    };
    if exchange.head || no_content {
        encoder = Encoder::Length(0);
    }
    if let Encoder::Chunked(fields) = &mut encoder {
        *fields = trailer_fields;
    }
    keep &= !said_close && encoder != Encoder::Close;
    if !keep && !said_close {
        wbuf.put_slice(b"connection: close\r\n");
    } else if keep && v10 && !said_keep_alive {
        wbuf.put_slice(b"connection: keep-alive\r\n");
    }
    if !wrote_date {
        wbuf.put_slice(b"date: ");
        put_date(wbuf);
        wbuf.put_slice(b"\r\n");
    }
    wbuf.put_slice(b"\r\n");
    (encoder, keep)
}

impl Encoder {
    /// Frames `data` into `wbuf`.
    fn data(&mut self, wbuf: &mut BytesMut, data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Length(left) => {
                let len = data.len() as u64;
                if len > *left {
                    return Err(io::Error::other("response body longer than its length"));
                }
                *left -= len;
                wbuf.put_slice(data);
            }
            Encoder::Chunked(_) if data.is_empty() => {}
            Encoder::Chunked(_) => {
                put_hex(wbuf, data.len());
                wbuf.put_slice(b"\r\n");
                wbuf.put_slice(data);
                wbuf.put_slice(b"\r\n");
            }
            Encoder::Close => wbuf.put_slice(data),
        }
        Ok(())
    }

    /// The body's end: the last chunk, with the declared `trailers`.
    fn end(&mut self, wbuf: &mut BytesMut, trailers: Option<&HeaderMap>) -> io::Result<()> {
        match self {
            Encoder::Length(0) | Encoder::Close => Ok(()),
            Encoder::Length(_) => Err(io::Error::other("response body shorter than its length")),
            Encoder::Chunked(fields) => {
                wbuf.put_slice(b"0\r\n");
                for (name, value) in trailers.into_iter().flatten() {
                    if fields.contains(name) {
                        put_field(wbuf, name, value);
                    }
                }
                wbuf.put_slice(b"\r\n");
                Ok(())
            }
        }
    }
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// The current time as an HTTP date (RFC 9110 §5.6.7).
fn put_date(wbuf: &mut BytesMut) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *at = secs;
            }
        }
        wbuf.put_slice(text);
    });
}
