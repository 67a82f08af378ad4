//! The request head: parsed once (`httparse`), checked by the guard's framing rules,
//! and made into the `http::request::Parts` the proxy is handed.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HeaderName, HeaderValue, UPGRADE};
use http::{HeaderMap, Method, Uri, Version, request};

use crate::server::guard::{BodyFraming, STACK_HEADERS, body_framing};
use crate::upstream::h1::field_spans;

/// Fields a request head gets on its way upstream beyond those it came with: the three
/// `X-Forwarded-*` and one a filter sets.
const ADDED_ON_THE_WAY: usize = 4;

/// What the start of the read buffer holds.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request and unpacked at once: a box would be an allocation per request"
)]
pub(super) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A head this connection serves, taken out of the buffer.
    Head(Head),
    /// A head hyper serves (after the guard has looked at it again): one that is
    /// refused, does not parse, or asks for what only hyper does here (an upgrade,
    /// `CONNECT`, `Expect: 100-continue`).
    Elsewhere,
}

/// A request head, with what the connection needs to know of it.
pub(super) struct Head {
    pub parts: request::Parts,
    pub body: BodyFraming,
    /// Whether the client lets the connection carry another request after this one.
    pub keep_alive: bool,
}

/// Parses the head at the start of `rbuf` under the listener's limits, taking it out
/// of the buffer when it is one this connection serves.
pub(super) fn parse(rbuf: &mut BytesMut, max_bytes: usize, max_headers: usize) -> Parsed {
    // Offsets of the fields in the head, to take names and values from its copy.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); STACK_HEADERS];
    if max_headers > STACK_HEADERS {
        // A listener allowing more fields than fit on the stack: rare, hyper's.
        return Parsed::Elsewhere;
    }
    let (len, method, path, version, count, framing) = {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(rbuf, &mut fields[..max_headers]) {
            Ok(httparse::Status::Complete(len)) if len <= max_bytes => len,
            Ok(httparse::Status::Partial) if rbuf.len() <= max_bytes => return Parsed::Partial,
            _ => return Parsed::Elsewhere,
        };
        let framing = match body_framing(&req) {
            Ok(BodyFraming::Tunnel) | Err(_) => return Parsed::Elsewhere,
            Ok(framing) => framing,
        };
        let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
            return Parsed::Elsewhere;
        };
        let count = field_spans(rbuf, req.headers, &mut spans);
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::Elsewhere;
        };
        let path = (path.as_ptr() as usize - rbuf.as_ptr() as usize, path.len());
        (len, method, path, version, count, framing)
    };
    // The head in an allocation of its own (as the upstream client copies its response
    // heads): the values share it, and may outlive the request by far (an HTTP/2
    // upstream's HPACK table), where a slice would keep the whole read buffer alive.
    let bytes = Bytes::copy_from_slice(rbuf.get(..len).unwrap_or_default());
    let Some(head) = build(&bytes, method, path, version, &spans[..count], framing) else {
        return Parsed::Elsewhere;
    };
    rbuf.advance(len);
    Parsed::Head(head)
}

/// The request of the head copied to `bytes`, or `None` for one hyper should see.
fn build(
    bytes: &Bytes,
    method: Method,
    (path_at, path_len): (usize, usize),
    version: u8,
    spans: &[(u32, u32, u32, u32)],
    body: BodyFraming,
) -> Option<Head> {
    let uri = Uri::from_maybe_shared(bytes.slice(path_at..path_at + path_len)).ok()?;
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut keep_alive = version == Version::HTTP_11;
    let mut saw_close = false;
    let mut saw_length = false;
    // Room for what the proxy adds on the way (`X-Forwarded-For`, `-Proto`, `-Host`)
    // and a filter's header or two: a map built full grew (a reallocation and a
    // rehash of every field) on every proxied request.
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_ON_THE_WAY);
    for &(ns, ne, vs, ve) in spans {
        let name = HeaderName::from_bytes(bytes.get(ns as usize..ne as usize)?).ok()?;
        let value = bytes.get(vs as usize..ve as usize)?;
        if name == CONTENT_LENGTH {
            // The framing check allowed only identical lengths: one goes on (as hyper
            // did).
            if saw_length {
                continue;
            }
            saw_length = true;
        } else if name == CONNECTION {
            if saw_close || has_token(value, b"close") {
                saw_close = true;
                keep_alive = false;
            } else if version == Version::HTTP_10 && has_token(value, b"keep-alive") {
                keep_alive = true;
            }
        } else if name == UPGRADE || (name == EXPECT && value.eq_ignore_ascii_case(b"100-continue"))
        {
            return None;
        }
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(value)).ok()?;
        headers.append(name, value);
    }
    let mut parts = request::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Some(Head {
        parts,
        body,
        keep_alive,
    })
}

/// Whether the comma-separated list `value` has `token` (case-insensitive).
pub(super) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}
