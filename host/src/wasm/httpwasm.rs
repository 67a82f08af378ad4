//! The http-wasm host (the `http-handler` ABI of <https://http-wasm.io>, the ABI of
//! Traefik's plugins): a module that imports `http_handler` runs in the same chain, VM
//! slots and sandbox as proxy-wasm filters, through two exports instead of proxy-wasm's
//! callbacks.
//!
//! To the chain an http-wasm filter is a headers-only filter: `handle_request` runs in
//! the request-headers phase and `handle_response` in the response-headers phase, only
//! when `handle_request` asked for the next handler. A guest that does not ask for it
//! answers itself: the status, response headers and body it set become a local reply.
//! Bodies are whole or nothing: a guest that enabled `buffer_request` /
//! `buffer_response` while starting gets the whole body (the proxy collects it before
//! the phase, see [`HttpFilters::set_request_body`](super::HttpFilters)), else reads an
//! empty one. The host functions are in `httpwasm/abi.rs`; what a stream keeps for its
//! http-wasm filters is [`Pending`], made only for a request that reaches one, so a
//! chain of proxy-wasm filters pays nothing for it.

mod abi;

use bytes::Bytes;
use http::HeaderMap;

use super::state::{BodyBuf, LocalReply, StreamIo};

pub(crate) use abi::link;

/// The import module that marks an http-wasm guest.
pub(crate) const IMPORT_MODULE: &str = "http_handler";

/// `enable_features` bits: buffer the request body, buffer the response body.
pub(crate) const BUFFER_REQUEST: u32 = 1;
pub(crate) const BUFFER_RESPONSE: u32 = 2;
/// The features this host offers (not `trailers`, 4).
pub(crate) const SUPPORTED: u32 = BUFFER_REQUEST | BUFFER_RESPONSE;

/// What one stream keeps for its http-wasm filters between their calls.
#[derive(Default, Clone)]
pub(crate) struct Pending {
    /// The status a guest set while handling the request (its reply's, if it answers).
    status: Option<u16>,
    /// Response headers a guest set while handling the request: its reply's, or added
    /// to the upstream's response when it goes on.
    headers: HeaderMap,
    /// The response body a guest wrote while handling the request (its reply's).
    reply_body: Option<Vec<u8>>,
    /// The request body, collected whole, when a filter of the chain buffers it.
    request_body: Option<BodyBuf>,
    request_changed: bool,
    /// The response body, collected whole, when a filter of the chain buffers it.
    response_body: Option<BodyBuf>,
    response_changed: bool,
    /// Where the running guest's `read_body` is, per body; reset for every call.
    read_at: [usize; 2],
    /// Whether the running guest wrote the body yet, per body: its first write
    /// replaces the body, the next ones append (as the ABI says).
    wrote: [bool; 2],
}

fn body(b: &Option<BodyBuf>) -> Option<&[u8]> {
    b.as_ref().map(BodyBuf::as_slice)
}

/// Whether a call changed what the stream keeps (`now` against `before`): what a
/// shadow http-wasm filter would have modified.
pub(crate) fn differs(now: Option<&Pending>, before: Option<&Pending>) -> bool {
    let empty = Pending::default();
    let (a, b) = (now.unwrap_or(&empty), before.unwrap_or(&empty));
    a.status != b.status
        || a.headers != b.headers
        || a.reply_body != b.reply_body
        || body(&a.request_body) != body(&b.request_body)
        || body(&a.response_body) != body(&b.response_body)
}

/// The stream's [`Pending`], made on first use.
fn pending(io: &mut StreamIo) -> &mut Pending {
    io.httpwasm.get_or_insert_with(Box::default)
}

/// Readies the stream for one guest call: reads start at the bodies' beginnings and a
/// first write replaces.
pub(crate) fn before_call(io: &mut StreamIo) {
    if let Some(p) = io.httpwasm.as_deref_mut() {
        p.read_at = [0, 0];
        p.wrote = [false, false];
    }
}

/// What `handle_request` returned (`ctx << 32 | next`): the chain's action (always go
/// on; an answer is a local reply) and the request context to hand to
/// `handle_response`. Without `next` the guest answered: its reply is set and its
/// response phase skipped.
pub(crate) fn request_handled(io: &mut StreamIo, returned: u64) -> u32 {
    if returned & 1 == 0 {
        let p = pending(io);
        let status = p.status.take().unwrap_or(200);
        let headers = std::mem::take(&mut p.headers)
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        let body = p.reply_body.take().map(Bytes::from).unwrap_or_default();
        io.local_reply = Some(LocalReply {
            status,
            details: "http_wasm_response".into(),
            body,
            headers,
            grpc_status: -1,
        });
        io.skip_response = true;
    }
    0
}

/// The request context `handle_request` returned.
pub(crate) fn request_context(returned: u64) -> u32 {
    (returned >> 32) as u32
}

/// Whether the response is the proxy's own error (`handle_response`'s `is_error`).
pub(crate) fn is_error(io: &StreamIo) -> u32 {
    u32::from(io.response_flags != 0)
}

/// Adds the response headers http-wasm guests set while handling the request to the
/// response about to go through the response phase.
pub(crate) fn response_arrived(io: &mut StreamIo) {
    let Some(p) = io.httpwasm.as_deref_mut() else {
        return;
    };
    let headers = std::mem::take(&mut p.headers);
    if let (Some(resp), false) = (io.response.as_mut(), headers.is_empty()) {
        let mut last = None;
        for (name, value) in headers {
            // `None` repeats the previous name (HeaderMap's iteration of many values).
            if let Some(n) = name {
                last = Some(n);
            }
            if let Some(n) = &last {
                let _ = resp.headers.try_append(n.clone(), value);
            }
        }
    }
}

/// Hands the collected request body to the chain's http-wasm filters.
pub(crate) fn set_request_body(io: &mut StreamIo, body: Bytes) {
    pending(io).request_body = Some(BodyBuf::Shared(body));
}

/// The collected request body after the request phase, and whether a filter changed it.
pub(crate) fn take_request_body(io: &mut StreamIo) -> Option<(Bytes, bool)> {
    let p = io.httpwasm.as_deref_mut()?;
    let body = p.request_body.take()?;
    Some((body.into_bytes(), std::mem::take(&mut p.request_changed)))
}

/// Hands the collected response body to the chain's http-wasm filters.
pub(crate) fn set_response_body(io: &mut StreamIo, body: Bytes) {
    pending(io).response_body = Some(BodyBuf::Shared(body));
}

/// The collected response body after the response phase, and whether a filter changed
/// it.
pub(crate) fn take_response_body(io: &mut StreamIo) -> Option<(Bytes, bool)> {
    let p = io.httpwasm.as_deref_mut()?;
    let body = p.response_body.take()?;
    Some((body.into_bytes(), std::mem::take(&mut p.response_changed)))
}
