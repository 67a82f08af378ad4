//! The filter-cost scenario's http-wasm guest (for Traefik), written with the
//! `http-wasm-guest` crate only: the same work as the proxy-wasm filter beside it — it
//! reads one request header (`x-api-key`) and adds one response header
//! (`x-bench-seen: yes` or `no`).
//!
//! The response header is added while handling the request: an http-wasm host lets a
//! guest change response headers after the next handler only when the guest buffers the
//! whole response (`buffer_response`), which would cost far more than the header. Added
//! before, it sits in the response's header map and goes out with the upstream's.

use http_wasm_guest::host::{Request, Response};
use http_wasm_guest::{Guest, register};

/// The handler: stateless, so one instance serves every request.
struct Seen;

impl Guest for Seen {
    fn handle_request(&self, request: &Request, response: &Response) -> (bool, i32) {
        let value: &[u8] = if request.header.get(b"x-api-key").is_some() {
            b"yes"
        } else {
            b"no"
        };
        response.header.add(b"x-bench-seen", value);
        (true, 0)
    }
}

fn main() {
    register(Seen);
}
