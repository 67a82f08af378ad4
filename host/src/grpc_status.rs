//! gRPC status codes, and the HTTP statuses they stand for: shared by the proxy (its
//! own errors told to gRPC clients as statuses) and the wasm host (the outcome of a
//! filter's gRPC callout). A leaf: it imports nothing of the crate.

use http::StatusCode;

/// The caller cancelled the call.
pub const CANCELLED: u16 = 1;
/// No status, or an answer that is no gRPC.
pub const UNKNOWN: u16 = 2;
/// The call's deadline passed.
pub const DEADLINE_EXCEEDED: u16 = 4;
/// A message over a size limit.
pub const RESOURCE_EXHAUSTED: u16 = 8;
/// A broken exchange or protocol.
pub const INTERNAL: u16 = 13;
/// The service could not be reached.
pub const UNAVAILABLE: u16 = 14;

/// The gRPC status an HTTP status stands for: gRPC's own mapping (502, 503, 504 and
/// 429 are `UNAVAILABLE`), except that a 504 is the call's deadline passing,
/// `DEADLINE_EXCEEDED`, as on Envoy.
pub fn of_http(status: StatusCode) -> u16 {
    match status {
        StatusCode::BAD_REQUEST => INTERNAL,
        StatusCode::UNAUTHORIZED => 16, // UNAUTHENTICATED
        StatusCode::FORBIDDEN => 7,     // PERMISSION_DENIED
        StatusCode::NOT_FOUND => 12,    // UNIMPLEMENTED
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE => UNAVAILABLE,
        // The call's deadline: `grpc-timeout`, or the upstream's request timeout
        // when that came first.
        StatusCode::GATEWAY_TIMEOUT => DEADLINE_EXCEEDED,
        _ => UNKNOWN,
    }
}
