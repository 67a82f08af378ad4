//! The fuzz target of what the ABI decodes from guest memory: header maps in the
//! proxy-wasm pair format, header keys and values, `get_header_values` arguments and
//! property paths. The fuzzer's bytes are a script of host calls on one stream; after
//! each, what the guest would read back must agree with what was written. The script
//! runs again as a shadow filter's callback: once its journal is settled, the stream's
//! head must be as it was, names in the same order.

use std::sync::Arc;

use http::{HeaderMap, Request, Response};

use super::headers::{self, Edit, journal};
use super::properties;
use super::types::MapType;
use crate::wasm::memory::{decode_pairs, encode_pairs_into};
use crate::wasm::state::{CallResponse, HostState, Limiter, Status, StreamIo};

/// Host calls one input may make: enough to build and rewrite several maps.
const MAX_CALLS: usize = 64;

/// How many distinct header names one script may add in bulk, in all.
const NAMES_PER_SCRIPT: usize = 40_000;

/// How many keys of a map are read back one by one after each call.
const READ_BACK_KEYS: usize = 512;

/// The fuzzer's bytes, read front to back; reads past the end give nothing.
struct Script<'a>(&'a [u8]);

impl<'a> Script<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    /// A length-prefixed run of bytes (one length byte, or two for `long`), cut short
    /// at the end of the input.
    fn bytes(&mut self, long: bool) -> &'a [u8] {
        let mut n = usize::from(self.byte().unwrap_or(0));
        if long {
            n = n << 8 | usize::from(self.byte().unwrap_or(0));
        }
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// A stream in the request phase with a response and trailers present, and an
/// `http_call` answer being delivered: every map the ABI names exists.
pub(crate) fn stream() -> HostState {
    let (request, ()) = Request::get("http://example.com/a?b=c")
        .header("user-agent", "fuzz")
        .header("x-request-id", "1")
        .body(())
        .unwrap_or_default()
        .into_parts();
    let (response, ()) = Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(())
        .unwrap_or_default()
        .into_parts();
    let io = StreamIo {
        request: Some(request),
        response: Some(response),
        request_trailers: Some(HeaderMap::new()),
        response_trailers: Some(HeaderMap::new()),
        ..StreamIo::default()
    };
    HostState {
        plugin_name: "fuzz".into(),
        root_id: "".into(),
        plugin_config: Arc::new([]),
        memory: None,
        malloc: None,
        limits: Limiter {
            max_memory: 0,
            hit: false,
        },
        ticks_left: 0,
        deadline: None,
        backstop: std::time::Duration::ZERO,
        next_context: 1,
        running_context: 0,
        io: Box::new(io),
        tick_period: None,
        pending_calls: Vec::new(),
        pending_grpc: Vec::new(),
        pending_foreign: Vec::new(),
        call_data: None,
        redis_timeouts: Default::default(),
        grpc: Default::default(),
        next_token: 0,
        callers: Default::default(),
        call_response: Some(CallResponse {
            headers: vec![(":status".into(), b"200".to_vec())],
            body: Default::default(),
            trailers: Vec::new(),
            status: None,
        }),
        signal: Default::default(),
        last_error_log: None,
        scratch: Vec::new(),
        landing: None,
        on_fiber: false,
        header_names: Default::default(),
        extensions: Default::default(),
        http_features: 0,
    }
}

/// Runs the script `data` of host calls on one stream (see the module docs); panics
/// when a read disagrees with a write.
pub(crate) fn host_calls(data: &[u8]) {
    run(&mut stream(), data);
    let mut s = stream();
    let before = head(&s.io);
    s.io.journal.start();
    run(&mut s, data);
    journal::settle(&mut s.io);
    assert_eq!(
        head(&s.io),
        before,
        "a shadow filter's writes were not all put back"
    );
}

/// Everything of the stream a filter's header writes can change, in iteration order.
pub(crate) fn head(io: &StreamIo) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = &io.request {
        out.push(format!("{} {}", r.method, r.uri));
        out.extend(r.headers.iter().map(|(k, v)| format!("{k}: {v:?}")));
    }
    if let Some(r) = &io.response {
        out.push(r.status.to_string());
        out.extend(r.headers.iter().map(|(k, v)| format!("{k}: {v:?}")));
    }
    for t in [&io.request_trailers, &io.response_trailers] {
        out.push("--".into());
        out.extend(t.iter().flatten().map(|(k, v)| format!("{k}: {v:?}")));
    }
    out
}

fn run(s: &mut HostState, data: &[u8]) {
    let mut script = Script(data);
    // Enough names to fill a header map past `http`'s limit once: more only makes an
    // input slow (a script of such calls took seconds, and libFuzzer's timeout in a
    // debug build), not more searching.
    let mut names_left = NAMES_PER_SCRIPT;
    for _ in 0..MAX_CALLS {
        let Some(op) = script.byte() else {
            return;
        };
        let raw_ty = u32::from(script.byte().unwrap_or(0) % 9);
        let Ok(ty) = MapType::from_raw(raw_ty) else {
            continue;
        };
        match op % 8 {
            0 => {
                let encoded = script.bytes(true);
                if let Some(pairs) = decode_pairs(encoded) {
                    round_trip(&pairs);
                    headers::set_pairs(s, ty, pairs);
                }
            }
            1 | 2 => {
                let (key, value) = (script.bytes(false), script.bytes(false));
                let how = if op % 8 == 1 {
                    Edit::Add
                } else {
                    Edit::Replace
                };
                let status = headers::edit(s, ty, key, value, how);
                if status == Status::Ok && how == Edit::Replace && writable(ty, key) {
                    let read = headers::value(s, ty, key);
                    assert_eq!(read, Ok(value), "replaced {key:?} in {ty:?}");
                }
            }
            3 => {
                let key = script.bytes(false);
                let status = headers::edit(s, ty, key, &[], Edit::Remove);
                if status == Status::Ok && writable(ty, key) {
                    let read = headers::value(s, ty, key);
                    assert_eq!(read, Err(Status::NotFound), "removed {key:?} in {ty:?}");
                }
            }
            4 => {
                let names = script.bytes(true);
                let mut args = raw_ty.to_le_bytes().to_vec();
                args.extend_from_slice(names);
                let mut out = Vec::new();
                let _ = headers::values_into(s, &args, &mut out);
            }
            5 => {
                let path = script.bytes(false);
                let mut out = Vec::new();
                let read = properties::get_into(s, path, &mut out).map(|()| out);
                // The SDKs join a path's segments with NUL (and may end it with one);
                // Envoy's names use '.'.
                let trimmed = path.strip_suffix(&[0]).unwrap_or(path);
                let dotted: Vec<u8> = trimmed
                    .iter()
                    .map(|b| if *b == 0 { b'.' } else { *b })
                    .collect();
                let mut out = Vec::new();
                let again = properties::get_into(s, &dotted, &mut out).map(|()| out);
                assert_eq!(read, again, "property {path:?} read as {dotted:?}");
            }
            6 => {
                let (path, value) = (script.bytes(false), script.bytes(false));
                properties::set(s, path, value.to_vec());
                let mut out = Vec::new();
                let read = properties::get_into(s, path, &mut out).map(|()| out);
                assert_eq!(read, Ok(value.to_vec()), "property {path:?} as set");
            }
            _ => {
                // Many distinct names in one call: a guest may add as many as it likes.
                let count = (usize::from(script.byte().unwrap_or(0)) * 128).min(names_left);
                names_left -= count;
                for i in 0..count {
                    let name = format!("x-fuzz-{i}");
                    headers::edit(s, ty, name.as_bytes(), b"v", Edit::Add);
                }
            }
        }
        reads_back(s, ty);
    }
}

/// Whether a successful write of `key` to map `ty` is seen by a read: callout answers
/// are read-only, and pseudo-headers are a view of the request line or status.
fn writable(ty: MapType, key: &[u8]) -> bool {
    let read_only = matches!(
        ty,
        MapType::CallHeaders
            | MapType::CallTrailers
            | MapType::GrpcInitialMetadata
            | MapType::GrpcTrailingMetadata
    );
    !read_only && key.first() != Some(&b':')
}

/// What the guest would decode from `pairs` as the host encodes them is `pairs`.
fn round_trip(pairs: &[(String, Vec<u8>)]) {
    let mut encoded = Vec::new();
    encode_pairs_into(&mut encoded, || {
        pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))
    });
    assert_eq!(decode_pairs(&encoded).as_deref(), Some(pairs));
}

/// Map `ty` as the guest reads it whole decodes, and each of its keys reads alone.
fn reads_back(s: &HostState, ty: MapType) {
    let mut encoded = Vec::new();
    if headers::pairs_into(s, ty, &mut encoded).is_err() {
        return;
    }
    let Some(pairs) = decode_pairs(&encoded) else {
        panic!("{ty:?} encoded as {encoded:?} does not decode");
    };
    // Each listed key reads alone; of a map filled in bulk, the first few hundred
    // (a check of every key after every call made such an input take seconds).
    for (key, _) in pairs.iter().take(READ_BACK_KEYS) {
        let read = headers::value(s, ty, key.as_bytes());
        assert!(
            read.is_ok(),
            "{key:?} of {ty:?} listed but reads as {read:?}"
        );
    }
}
