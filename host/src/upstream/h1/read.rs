//! The response side: the head parsed from the read buffer, and the body's framing
//! decoded from it (RFC 9112 §6.3 and §7.1).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, response};

use super::H1Error;

/// The longest response head read (hyper's client allowed ~400 KiB; nginx's default
/// `proxy_buffer_size` is 4–8 KiB, so upstreams rarely come near this).
pub const MAX_HEAD: usize = 64 * 1024;

/// The most header fields in a response head (hyper's default).
const MAX_HEADERS: usize = 100;

/// The read buffer grows by this much when less than [`MIN_READ`] is free.
pub const READ_SIZE: usize = 16 * 1024;

/// Below this much free room the read buffer grows before a read.
pub const MIN_READ: usize = 4 * 1024;

/// The longest chunk-size line (with extensions) or trailer section.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (`HEAD`, `204`, `304`), or none left.
    Empty,
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`, in the given state.
    Chunked(Chunk),
    /// Until the connection closes.
    Close,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data: the bytes still to come.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// In the trailer section, after the last chunk.
    Trailers,
}

/// A parsed response head: its parts, its body's framing, and whether the connection
/// may carry another request after it.
pub struct Head(pub response::Parts, pub Framing, pub bool);

/// Parses a response head from the start of `rbuf` and takes it out: `None` while it
/// is incomplete. `no_body`: the request was `HEAD`.
pub fn parse_head(rbuf: &mut BytesMut, no_body: bool) -> Result<Option<Head>, H1Error> {
    if rbuf.is_empty() {
        return Ok(None);
    }
    // Field positions in the head, to take the names and values from its bytes once
    // they are copied out of the buffer (one copy of the head, none per value).
    // Offsets fit in `u32` (the head is at most `MAX_HEAD`): a smaller array to zero.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, version, reason, count) = {
        // Left uninitialised, as hyper's parser does: httparse writes what it parses.
        let mut fields =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            rbuf,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if rbuf.len() > MAX_HEAD => {
                return Err(H1Error::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Head("too many fields")),
            Err(e) => return Err(H1Error::Parse(e)),
        };
        if len > MAX_HEAD {
            return Err(H1Error::HeadTooLarge);
        }
        let base = rbuf.as_ptr() as usize;
        let count = field_spans(rbuf, res.headers, &mut spans);
        let reason = res.reason.map(|r| (r.as_ptr() as usize - base, r.len()));
        (
            len,
            res.code.unwrap_or(0),
            res.version.unwrap_or(1),
            reason,
            count,
        )
    };
    // The head in an allocation of its own, not a slice of the read buffer: the
    // header values share it, and they may outlive the exchange by far. An HTTP/2
    // client connection's HPACK table keeps the values it indexes (`date`, `server`,
    // `content-type`, ...) for as long as the connection is open, and a slice would
    // keep the whole 16 KiB buffer it was read into (and every response after it in
    // that buffer) alive with them, idle connection after idle connection.
    let bytes = Bytes::copy_from_slice(rbuf.get(..len).unwrap_or_default());
    rbuf.advance(len);
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Head("invalid status"))?;
    let mut headers = HeaderMap::with_capacity(count);
    for &(ns, ne, vs, ve) in spans.get(..count).unwrap_or_default() {
        let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
        let (Some(name), Some(value)) = (bytes.get(ns..ne), bytes.get(vs..ve)) else {
            return Err(H1Error::Head("field out of the head"));
        };
        let name = HeaderName::from_bytes(name).map_err(|_| H1Error::Head("invalid field name"))?;
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(value))
            .map_err(|_| H1Error::Head("invalid field value"))?;
        headers.append(name, value);
    }
    let mut parts = response::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // A reason other than the status's own goes downstream as it came (hyper's
    // extension, which its server writes).
    if let Some((at, n)) = reason
        && let Some(reason) = bytes.get(at..at + n)
        && Some(reason) != status.canonical_reason().map(str::as_bytes)
        && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(bytes.slice_ref(reason))
    {
        parts.extensions.insert(reason);
    }
    let keep_alive = keeps_alive(parts.version, &headers);
    let framing = framing(status, no_body, &headers)?;
    parts.headers = headers;
    Ok(Some(Head(parts, framing, keep_alive)))
}

/// Where each of the parsed `fields` of the head at the start of `buf` lies in it:
/// (name start, name end, value start, value end) into `spans`; the count written.
/// Offsets fit in `u32`: a head is far shorter.
pub fn field_spans(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    spans: &mut [(u32, u32, u32, u32)],
) -> usize {
    let base = buf.as_ptr() as usize;
    let at = |p: *const u8| (p as usize - base) as u32;
    let mut count = 0;
    for (span, field) in spans.iter_mut().zip(fields) {
        let (name, value) = (at(field.name.as_ptr()), at(field.value.as_ptr()));
        *span = (
            name,
            name + field.name.len() as u32,
            value,
            value + field.value.len() as u32,
        );
        count += 1;
    }
    count
}

/// RFC 9112 §6.3: how the body of a response with `status` and `headers` is delimited.
fn framing(status: StatusCode, no_body: bool, headers: &HeaderMap) -> Result<Framing, H1Error> {
    if no_body
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // Chunked only when it is the final coding; otherwise the body runs to the
        // close. Either way `Content-Length` does not count.
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => Framing::Chunked(Chunk::Size),
            _ => Framing::Close,
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n =
                parse_decimal(part.trim_ascii()).ok_or(H1Error::Head("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Head("conflicting Content-Length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// Whether the connection may carry another request after this response: HTTP/1.1
/// unless it says `close`, HTTP/1.0 only when it says `keep-alive`.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers.get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if version == Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// A decimal length of at most 19 digits, nothing else.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// What the chunked decoder made of the buffer.
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The body ended, with these trailers (none when the section was empty).
    End(Option<HeaderMap>),
    /// More must be read first.
    More,
}

/// Decodes the next piece of a chunked body from `rbuf`, moving `state` on.
pub fn decode_chunked(state: &mut Chunk, rbuf: &mut BytesMut) -> Result<Decoded, H1Error> {
    loop {
        match *state {
            Chunk::Size => {
                let Some(eol) = find_crlf(rbuf) else {
                    return more(rbuf, "chunk-size line too long");
                };
                let line = rbuf.get(..eol).unwrap_or_default();
                // Extensions (`;name=value`) are allowed and ignored.
                let digits = line
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                let size = parse_hex(digits).ok_or(H1Error::Chunked("invalid chunk size"))?;
                rbuf.advance(eol + 2);
                *state = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if rbuf.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = rbuf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let data = rbuf.split_to(n).freeze();
                let left = left - n as u64;
                *state = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                return Ok(Decoded::Data(data));
            }
            Chunk::DataEnd => {
                if rbuf.len() < 2 {
                    return Ok(Decoded::More);
                }
                if rbuf.get(..2) != Some(b"\r\n") {
                    return Err(H1Error::Chunked("no CRLF after a chunk"));
                }
                rbuf.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailers => {
                if rbuf.starts_with(b"\r\n") {
                    rbuf.advance(2);
                    return Ok(Decoded::End(None));
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let (len, trailers) = match httparse::parse_headers(rbuf, &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut map = HeaderMap::with_capacity(fields.len());
                        for f in fields.iter() {
                            if let (Ok(name), Ok(value)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) {
                                map.append(name, value);
                            }
                        }
                        (len, map)
                    }
                    Ok(httparse::Status::Partial) => return more(rbuf, "trailers too long"),
                    Err(_) => return Err(H1Error::Chunked("malformed trailers")),
                };
                rbuf.advance(len);
                return Ok(Decoded::End(Some(trailers)));
            }
        }
    }
}

/// `More`, unless the buffer already holds more than a line may be long.
fn more(rbuf: &BytesMut, what: &'static str) -> Result<Decoded, H1Error> {
    if rbuf.len() > MAX_CHUNK_LINE {
        Err(H1Error::Chunked(what))
    } else {
        Ok(Decoded::More)
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A chunk size: at most 15 hex digits, nothing else.
fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        Some(n << 4 | u64::from((b as char).to_digit(16)?))
    })
}
