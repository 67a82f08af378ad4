//! What a VM's store holds: the VM's own bookkeeping and, for the length of one
//! callback, the stream the callback is about.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use wasmtime::{Memory, ResourceLimiter, TypedFunc};

use super::StreamInfo;
use super::worker::VmSignal;

/// The foreign function by which a stream context opts out of the response phase
/// (docs/filters-abi.md); Portcullis-only, other hosts answer NOT_FOUND.
pub(crate) const SKIP_RESPONSE_PHASE: &str = "portcullis_skip_response_phase";
/// The foreign function that reads several headers of one map in one host call (see
/// [`abi::headers::values_into`](super::abi::headers::values_into)); the SDK falls
/// back to one `proxy_get_header_map_value` per header on other hosts.
pub(crate) const GET_HEADER_VALUES: &str = "portcullis_get_header_values";
/// The foreign function by which a guest registers its landing buffer (address and
/// capacity, two little-endian u32s): a value the host hands back for a call whose
/// return slots hold exactly that pair is written there instead of into memory from
/// the guest's allocator (docs/filters-abi.md).
pub(crate) const LANDING: &str = "portcullis_landing";

/// proxy-wasm status codes returned by host functions.
/// proxy-wasm's `WasmResult`: what a host function tells the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

impl From<Status> for i32 {
    fn from(s: Status) -> i32 {
        s as i32
    }
}

/// Which ABI generation a module speaks, from its `proxy_abi_version_*` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AbiVersion {
    /// `proxy_abi_version_0_1_0`.
    V0_1_0,
    /// `proxy_abi_version_0_2_0`.
    V0_2_0,
    /// `proxy_abi_version_0_2_1`.
    V0_2_1,
    /// `proxy_abi_version_0_2_100`: Higress's variant, 0.2.1 plus host functions of
    /// its own (docs/filters-abi.md says which are offered).
    V0_2_100,
    /// Not proxy-wasm: the module imports `http_handler`, the http-wasm ABI
    /// (`super::httpwasm`).
    HttpWasm,
}

/// A response a filter asked the host to send instead of going on.
#[derive(Debug, Clone)]
pub(crate) struct LocalReply {
    pub status: u16,
    pub details: String,
    pub body: Bytes,
    pub headers: Vec<(String, Vec<u8>)>,
    pub grpc_status: i32,
}

/// An `http_call` the guest made during a callback, dispatched once it returns.
#[derive(Debug)]
pub(crate) struct PendingCall {
    pub token: u32,
    /// The context the host was running when the guest made it: the stream whose
    /// dispatch loop delivers the answer. The call itself belongs to the root context,
    /// as on Envoy, which gets `on_http_call_response`.
    pub context: u32,
    pub upstream: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub timeout: Duration,
}

/// A foreign function's answer still on its way (see [`super::foreign::Answer::Later`]),
/// or a Redis call's, awaited once the callback returns and delivered to `context`
/// with `proxy_on_foreign_function` (a Redis reply: `proxy_on_redis_call_response`).
pub(crate) struct PendingForeign {
    pub token: u32,
    /// The context that made the call, which gets the answer.
    pub context: u32,
    pub answer: Deferred,
}

/// What a [`PendingForeign`] waits for.
pub(crate) enum Deferred {
    /// A foreign function's answer.
    Foreign(super::foreign::ForeignFuture),
    /// A Redis reply (see [`super::redis`]).
    Redis(super::redis::RedisFuture),
}

/// What a callout answered, readable during the callback that delivers it: an
/// `http_call`'s response (maps 6/7, buffer 4), or one event of a gRPC callout — its
/// initial metadata (map 4), a message (buffer 5), its trailing metadata (map 5) or
/// its status (`proxy_get_status`).
#[derive(Debug, Default)]
pub(crate) struct CallResponse {
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// A gRPC status and message, during `on_grpc_close`.
    pub status: Option<(u32, String)>,
}

/// The body bytes a callback sees: the chunk as it arrived, shared and not copied,
/// until a filter writes to it or bytes a filter held are joined to it. Most filters
/// never look at a body they are called for, so most chunks are never copied.
#[derive(Debug, Clone)]
pub(crate) enum BodyBuf {
    /// The bytes as they came.
    Shared(Bytes),
    /// Bytes the host owns: written by a filter, or several chunks joined.
    Owned(Vec<u8>),
}

impl Default for BodyBuf {
    fn default() -> Self {
        BodyBuf::Shared(Bytes::new())
    }
}

impl BodyBuf {
    /// The bytes, to read.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            BodyBuf::Shared(b) => b,
            BodyBuf::Owned(v) => v,
        }
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// The bytes, to write: copied once, the first time.
    pub fn to_mut(&mut self) -> &mut Vec<u8> {
        if let BodyBuf::Shared(b) = self {
            // No copy when nothing else holds the chunk and it was made from a `Vec`.
            *self = BodyBuf::Owned(Vec::from(std::mem::take(b)));
        }
        match self {
            BodyBuf::Owned(v) => v,
            // As `Cow::to_mut`: made owned just above.
            BodyBuf::Shared(_) => unreachable!(),
        }
    }

    /// `self` followed by `next`; no copy when `self` is empty.
    pub fn join(mut self, next: BodyBuf) -> BodyBuf {
        if self.is_empty() {
            return next;
        }
        self.to_mut().extend_from_slice(next.as_slice());
        self
    }

    /// The bytes as a `Bytes`, without a copy.
    pub fn into_bytes(self) -> Bytes {
        match self {
            BodyBuf::Shared(b) => b,
            BodyBuf::Owned(v) => Bytes::from(v),
        }
    }
}

/// What one stream exposes to host functions. The chain owns it and moves it into a
/// VM's store for the length of each callback, so host functions reach it without
/// locks or copies.
#[derive(Default)]
pub(crate) struct StreamIo {
    pub info: Option<StreamInfo>,
    /// The stream's ABI trace, when `POST /filters/trace` asked for one.
    pub trace: Option<Arc<super::trace::StreamTrace>>,
    pub request: Option<http::request::Parts>,
    pub response: Option<http::response::Parts>,
    pub request_trailers: Option<HeaderMap>,
    pub response_trailers: Option<HeaderMap>,
    pub request_body: BodyBuf,
    pub response_body: BodyBuf,
    /// Values set with `set_property`, visible to every filter of the stream. A
    /// list: a stream has a few at most, and an empty `HashMap` costs a random seed.
    pub properties: Vec<(String, Vec<u8>)>,
    /// Set by `send_local_response`.
    pub local_reply: Option<LocalReply>,
    /// Set by `continue_stream` / `close_stream` while a context was paused.
    pub resumed: bool,
    /// Set when the running context calls the foreign function
    /// [`SKIP_RESPONSE_PHASE`]: it wants no response-phase callbacks.
    pub skip_response: bool,
    pub closed: bool,
    /// What the proxy told the chain besides `info` (`HttpFilters::set_upstream_and_peer`).
    pub cluster: Option<Arc<str>>,
    /// The metadata of the route's upstream (`cluster_metadata`), by dotted path.
    pub cluster_metadata: Option<crate::config::Metadata>,
    /// The verified client certificate's subject (mTLS).
    pub peer_subject: Option<Arc<str>>,
    /// The target the request was sent to, `host:port` (`upstream.address`).
    pub upstream_address: Option<Arc<str>>,
    /// Envoy's response flags of the exchange (`response.flags`).
    pub response_flags: u64,
    /// When the chain started, right after the request head was read (`request.time`).
    pub started: Option<SystemTime>,
    /// The stream is complete (`on_done` / `on_log` run): `request.duration` is known.
    pub completed: bool,
    /// Body bytes that reached the chain so far, request and response.
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    /// The request's `content-length` and header bytes once its header phase ended,
    /// for the callbacks after it (`request.size`, `request.total_size`).
    pub request_head: Option<(Option<u64>, u64)>,
    /// The response's status and header bytes once its header phase ended, for the
    /// callbacks after it (`on_log` reads `response.code`).
    pub response_code: Option<u16>,
    pub response_head_bytes: u64,
    /// Why a filter answered locally (its `send_local_response` details).
    pub code_details: Option<String>,
    /// What the stream's http-wasm filters keep between calls; made by the first.
    pub httpwasm: Option<Box<super::httpwasm::Pending>>,
    /// A fused response entry (`fuse::RESPOND`) is running and its body callback has
    /// not yet been shown what a body callback sees: the whole body, waiting here.
    pub respond_body: Option<BodyBuf>,
    /// The response head has gone downstream for the running body callback of a
    /// response whose body came whole with it ([`StreamIo::response_head`]).
    pub head_gone: bool,
    /// What a shadow filter's header writes replaced, while its callback runs.
    pub journal: super::abi::headers::journal::Journal,
}

impl StreamIo {
    /// The response head as header callbacks see it: not in a body callback, for
    /// which it has gone downstream (where the body came whole with the head, the
    /// head stays in place for the next filter's header callback, hidden).
    #[inline]
    pub fn response_head(&self) -> Option<&http::response::Parts> {
        self.response.as_ref().filter(|_| !self.head_gone)
    }

    /// Shows the running filter what its response body callback sees: the whole body
    /// in its buffer, the head gone downstream. Once per fused entry (at its mark,
    /// `fuse::MARK`); nothing when its body callback never ran.
    pub fn enter_body_part(&mut self) {
        if let Some(body) = self.respond_body.take() {
            self.response_body = body;
            self.head_gone = true;
        }
    }
}

/// The store data of one VM.
pub(crate) struct HostState {
    pub plugin_name: Arc<str>,
    pub root_id: Arc<str>,
    pub plugin_config: Arc<[u8]>,
    pub memory: Option<Memory>,
    pub malloc: Option<TypedFunc<u32, u32>>,
    pub limits: Limiter,
    /// Epoch ticks the running callback may still run for: a tick is counted only
    /// when the guest is running as it passes, so time the thread spends descheduled
    /// (or, for `async: true`, serving other requests) is not charged to the guest.
    pub ticks_left: u64,
    /// A wall-clock backstop, far beyond the tick budget: `backstop` after the first
    /// tick the callback sees (set then, so that a callback that ends within a tick,
    /// as nearly all do, never reads the clock).
    pub deadline: Option<Instant>,
    /// How long the running callback may take in wall time at most.
    pub backstop: Duration,
    pub next_context: u32,
    /// The context the host called into for the running callback (a stream or the
    /// root). Host calls act on the stream data moved in for it (`io`), so
    /// `set_effective_context` has nothing to move.
    pub running_context: u32,
    pub io: Box<StreamIo>,
    pub tick_period: Option<Duration>,
    pub pending_calls: Vec<PendingCall>,
    /// gRPC calls and streams the guest started during a callback, opened once it
    /// returns (as `pending_calls`).
    pub pending_grpc: Vec<super::grpc::PendingGrpc>,
    /// Foreign calls answered later, awaited once the callback returns (as
    /// `pending_calls`).
    pub pending_foreign: Vec<PendingForeign>,
    /// The gRPC callouts still live, by token: dropping one cancels it.
    pub grpc: HashMap<u32, super::grpc::Handle>,
    /// Counts callout tokens; the low two bits of a token say its kind, as on Envoy.
    pub next_token: u32,
    /// The upstreams callouts reach (the plugin's, shared with it).
    pub callers: super::calls::CallerCell,
    pub call_response: Option<CallResponse>,
    /// A deferred foreign call's answer, during the `on_foreign_function` that
    /// delivers it (buffer `CallData`), or a Redis reply during the
    /// `on_redis_call_response` that delivers it (buffer `RedisCallResponse`).
    pub call_data: Option<Vec<u8>>,
    /// The timeout each Redis cluster's `proxy_redis_init` gave, by name.
    pub redis_timeouts: HashMap<String, Duration>,
    /// Wakes this VM's root task (timers, queues).
    pub signal: Arc<VmSignal>,
    /// The guest's last error-level log line: why `on_configure` refused, if it says.
    pub last_error_log: Option<String>,
    /// Where host calls build a value before handing it to the guest; kept between
    /// calls so that the common path allocates nothing.
    pub scratch: Vec<u8>,
    /// The guest's landing buffer ([`LANDING`]): its address and capacity.
    pub landing: Option<(u32, u32)>,
    /// Callbacks run on a fiber (the filter is `async: true`): host calls must enter
    /// the guest again through a nested fiber, and the deadline yields.
    pub on_fiber: bool,
    /// The header names the guest writes, parsed once.
    pub header_names: super::abi::headers::NameCache,
    /// The host extensions `proxy_call_foreign_function` reaches.
    pub extensions: super::Extensions,
    /// The http-wasm features the guest enabled (`enable_features`).
    pub http_features: u32,
}

impl HostState {
    /// A fresh callout token of `kind` (`grpc::HTTP_CALL`, `GRPC_CALL`, `GRPC_STREAM`):
    /// as on Envoy, the kind is in the low two bits, so tokens of different kinds
    /// never collide (the SDKs keep calls and streams apart by token).
    pub fn next_callout(&mut self, kind: u32) -> u32 {
        let token = self.upcoming_callout(kind);
        self.next_token = token & !3;
        token
    }

    /// Queues a deferred answer for the running context (delivered once the callback
    /// returns, see `calls::dispatch`); returns its token.
    pub fn defer(&mut self, answer: Deferred) -> u32 {
        let token = self.next_callout(super::grpc::HTTP_CALL);
        let context = self.running_context;
        self.pending_foreign.push(PendingForeign {
            token,
            context,
            answer,
        });
        token
    }

    /// The token [`HostState::next_callout`] will give next, without taking it.
    pub fn upcoming_callout(&self, kind: u32) -> u32 {
        (self.next_token.wrapping_add(4).max(4) & !3) | kind
    }
}

/// Caps a VM's linear memory; a guest growing past it traps and is counted as a
/// memory failure.
pub(crate) struct Limiter {
    pub max_memory: usize,
    pub hit: bool,
}

/// The error a memory grow past the limit traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
pub(crate) struct MemoryLimitExceeded(pub usize);

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = true;
            return Err(wasmtime::Error::new(MemoryLimitExceeded(self.max_memory)));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl LocalReply {
    /// The response this reply describes. To a gRPC call (`grpc`) it is what Envoy
    /// sends: a trailers-only answer (`200`, `content-type: application/grpc`, no
    /// body) whose `grpc-status` is the filter's, else the HTTP status's gRPC code, and
    /// whose `grpc-message` is the body; a gRPC client reads nothing else. To any
    /// other request the gRPC status is ignored, as on Envoy.
    pub fn into_response(self, grpc: bool) -> http::Response<Bytes> {
        let status = http::StatusCode::from_u16(self.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = http::Response::new(if grpc {
            Bytes::new()
        } else {
            self.body.clone()
        });
        *r.status_mut() = status;
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_bytes(&v),
            ) {
                // Past `http`'s limit of distinct names `append` panics: the rest are
                // dropped, as invalid ones are.
                let _ = r.headers_mut().try_append(k, v);
            }
        }
        if grpc {
            use crate::grpc_status as g;
            *r.status_mut() = http::StatusCode::OK;
            let h = r.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            h.remove(http::header::CONTENT_LENGTH);
            if !h.contains_key("grpc-status") {
                let code = u16::try_from(self.grpc_status).unwrap_or_else(|_| g::of_http(status));
                h.insert("grpc-status", http::HeaderValue::from(code));
            }
            if !self.body.is_empty() {
                h.insert("grpc-message", g::message(&self.body));
            }
        }
        r
    }
}
