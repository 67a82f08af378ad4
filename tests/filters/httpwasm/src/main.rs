//! One http-wasm guest, written with the `http-wasm-guest` crate only, whose `mode`
//! (its config, `{"mode": "..."}` as JSON) picks what it does — the behaviours
//! Traefik documents for its plugins:
//!
//! - `headers`: reads `x-user` and sets `x-hw-user` on the request, removes
//!   `x-remove-me`, copies method, URI, protocol and source address into `x-hw-info`,
//!   adds `x-hw-seen: yes` to the response before `next` and `x-hw-status` after it.
//! - `rewrite`: rewrites a URI under `/old/` to `/new/`, and the method to what
//!   `x-hw-method` says.
//! - `body`: buffers both bodies; replaces `cat` by `dog` in the request body and
//!   upper-cases the response body.
//! - `deny`: without `x-token: secret` answers 403 itself (no `next`).
//! - `hostile`: traps on `x-trap`, spins forever on `x-spin`, else goes on.

use http_wasm_guest::host::{admin, feature, log, Request, Response};
use http_wasm_guest::{register, Guest};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Headers,
    Rewrite,
    Body,
    Deny,
    Hostile,
}

struct Plugin(Mode);

fn mode(config: &[u8]) -> Mode {
    let text = String::from_utf8_lossy(config);
    let value = text
        .split("\"mode\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("");
    match value {
        "rewrite" => Mode::Rewrite,
        "body" => Mode::Body,
        "deny" => Mode::Deny,
        "hostile" => Mode::Hostile,
        _ => Mode::Headers,
    }
}

impl Guest for Plugin {
    fn handle_request(&self, request: &Request, response: &Response) -> (bool, i32) {
        match self.0 {
            Mode::Headers => {
                let user = request.header.get(b"x-user");
                let user: &[u8] = user.as_deref().unwrap_or(b"anonymous");
                request.header.set(b"x-hw-user", user);
                request.header.remove(b"x-remove-me");
                let mut info = Vec::new();
                for part in [
                    request.method(),
                    request.uri(),
                    request.version(),
                    request.source_addr(),
                ] {
                    if !info.is_empty() {
                        info.push(b' ');
                    }
                    info.extend_from_slice(&part);
                }
                request.header.set(b"x-hw-info", &info);
                let names = request.header.names().len().to_string();
                request.header.set(b"x-hw-names", names.as_bytes());
                response.header.add(b"x-hw-seen", b"yes");
                if log::enabled(0) {
                    log::write(0, b"http-wasm headers: request seen");
                }
                (true, 7)
            }
            Mode::Rewrite => {
                let uri = request.uri();
                if let Some(rest) = uri.strip_prefix(b"/old/".as_slice()) {
                    let mut new = b"/new/".to_vec();
                    new.extend_from_slice(rest);
                    request.set_uri(&new);
                }
                if let Some(m) = request.header.get(b"x-hw-method") {
                    request.set_method(&m);
                }
                (true, 0)
            }
            Mode::Body => {
                let body = request.body.read();
                let text = String::from_utf8_lossy(&body).replace("cat", "dog");
                request.body.write(text.as_bytes());
                (true, 0)
            }
            Mode::Deny => {
                if request.header.get(b"x-token").as_deref() == Some(b"secret".as_slice()) {
                    return (true, 0);
                }
                response.set_status(403);
                response.header.set(b"content-type", b"text/plain");
                response.body.write(b"denied by http-wasm\n");
                (false, 0)
            }
            Mode::Hostile => {
                if request.header.get(b"x-trap").is_some() {
                    panic!("asked to trap");
                }
                if request.header.get(b"x-spin").is_some() {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                (true, 0)
            }
        }
    }

    fn handle_response(
        &self,
        req_ctx: i32,
        _request: &Request,
        response: &Response,
        _is_error: bool,
    ) {
        match self.0 {
            Mode::Headers => {
                let status = response.status().to_string();
                response.header.set(b"x-hw-status", status.as_bytes());
                response
                    .header
                    .set(b"x-hw-ctx", req_ctx.to_string().as_bytes());
            }
            Mode::Body => {
                let body = response.body.read();
                response.body.write(&body.to_ascii_uppercase());
                response.header.set(b"x-hw-body", b"upper");
            }
            _ => {}
        }
    }
}

fn main() {
    let mode = mode(&admin::config());
    if mode == Mode::Body {
        admin::enable(feature::BufferRequest | feature::BufferResponse);
    }
    register(Plugin(mode));
}
