//! gRPC status codes, and the HTTP statuses they stand for: shared by the proxy (its
//! own errors told to gRPC clients as statuses) and the wasm host (the outcome of a
//! filter's gRPC callout, a filter's local reply to a gRPC call). A leaf: it imports
//! nothing of the crate.

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

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

/// Whether a request with `headers` is a gRPC call (`content-type: application/grpc`,
/// or `application/grpc+proto` and the like).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
                && matches!(ct.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// `text` as a `grpc-message` value: percent-encoded as gRPC says (every byte outside
/// printable ASCII, and `%`), one trailing newline dropped as Envoy does.
pub fn message(text: &[u8]) -> HeaderValue {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // Only printable ASCII is left: always a valid header value.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_percent_encoded_without_its_trailing_newline() {
        assert_eq!(message(b"denied by probe\n"), "denied by probe");
        assert_eq!(
            message("100% für dich\r\n".as_bytes()),
            "100%25 f%C3%BCr dich%0D"
        );
    }
}
