//! gRPC clients and the proxy's own errors: a gRPC client reads the call's outcome
//! from `grpc-status` and `grpc-message`, not from the HTTP status, so an error the
//! proxy makes (a 502, a 504, a filter failure) reaches it as a gRPC status.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::error::Generated;
use crate::body::{self, ProxyBody};

/// Whether a request with `headers` is a gRPC call (`content-type: application/grpc`,
/// or `application/grpc+proto` and the like).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
                && matches!(ct.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// Turns `resp`, when the proxy made it itself, into what a gRPC client expects: a
/// "trailers-only" answer (`200`, no body) whose `grpc-status` is the HTTP status's
/// gRPC code (gRPC's own mapping: 502, 503, 504 and 429 are `UNAVAILABLE`, 14) and
/// whose `grpc-message` is the error's text. Any other response is left as it is.
pub fn answer_errors_as_grpc(resp: &mut Response<ProxyBody>) {
    let Some(Generated(text)) = resp.extensions().get::<Generated>().copied() else {
        return;
    };
    let code: u16 = match resp.status() {
        StatusCode::BAD_REQUEST => 13,  // INTERNAL
        StatusCode::UNAUTHORIZED => 16, // UNAUTHENTICATED
        StatusCode::FORBIDDEN => 7,     // PERMISSION_DENIED
        StatusCode::NOT_FOUND => 12,    // UNIMPLEMENTED
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => 14, // UNAVAILABLE
        _ => 2,                         // UNKNOWN
    };
    let mut grpc = Response::new(body::empty());
    let headers = grpc.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    // The texts are short ASCII without `%` or control characters: valid as they are
    // in a grpc-message (which is percent-encoded).
    if let Ok(message) = HeaderValue::from_str(text.trim_end()) {
        headers.insert("grpc-message", message);
    }
    *resp = grpc;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::error_response;

    #[test]
    fn grpc_content_types_are_told_apart() {
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), grpc, "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn a_proxy_error_becomes_a_grpc_status_and_an_upstream_answer_does_not() {
        let mut resp = error_response(StatusCode::BAD_GATEWAY, "upstream unreachable\n");
        answer_errors_as_grpc(&mut resp);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["grpc-message"], "upstream unreachable");
        assert_eq!(resp.headers()["content-type"], "application/grpc");

        let mut upstream = Response::new(body::empty());
        *upstream.status_mut() = StatusCode::BAD_GATEWAY;
        answer_errors_as_grpc(&mut upstream);
        assert_eq!(upstream.status(), 502, "not the proxy's: relayed as it is");
    }
}
