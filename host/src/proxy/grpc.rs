//! gRPC clients and the proxy's own errors: a gRPC client reads the call's outcome
//! from `grpc-status` and `grpc-message`, not from the HTTP status, so an error the
//! proxy makes (a 502, a 504, a filter failure) reaches it as a gRPC status. And the
//! call's deadline (`grpc-timeout`): the proxy gives up on the call when it passes,
//! and tells the client `DEADLINE_EXCEEDED`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use super::error::Generated;
use crate::body::{self, BoxError, ProxyBody};

use crate::grpc_status::DEADLINE_EXCEEDED;

pub use crate::grpc_status::is_grpc;

/// Turns `resp`, when the proxy made it itself, into what a gRPC client expects: a
/// "trailers-only" answer (`200`, no body) whose `grpc-status` is the HTTP status's
/// gRPC code (gRPC's own mapping: 502, 503, 504 and 429 are `UNAVAILABLE`, 14) and
/// whose `grpc-message` is the error's text. Any other response is left as it is.
pub fn answer_errors_as_grpc(resp: &mut Response<ProxyBody>) {
    let Some(Generated(text)) = resp.extensions().get::<Generated>().copied() else {
        return;
    };
    let code = crate::grpc_status::of_http(resp.status());
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

/// The deadline a gRPC call with `headers` asks for (`grpc-timeout`: at most 8
/// digits and a unit, `H` `M` `S` `m` `u` `n`); `None` for other requests and for a
/// value that is not one (the call then has none, as gRPC servers treat it).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    if !is_grpc(headers) {
        return None;
    }
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `body`, ended at `deadline` if it has not ended by then: the stream to the
/// upstream is dropped (it sees the call cancelled) and the client gets trailers with
/// `grpc-status: 4` (`DEADLINE_EXCEEDED`).
pub fn with_deadline(body: ProxyBody, deadline: tokio::time::Instant) -> ProxyBody {
    body::boxed(Deadline {
        inner: Some(body),
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
    })
}

struct Deadline {
    /// `None` once the deadline struck.
    inner: Option<ProxyBody>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.inner = None;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(DEADLINE_EXCEEDED));
        trailers.insert(
            "grpc-message",
            HeaderValue::from_static("deadline exceeded"),
        );
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::error_response;
    use http::StatusCode;

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

        let mut late = error_response(StatusCode::GATEWAY_TIMEOUT, "upstream timeout\n");
        answer_errors_as_grpc(&mut late);
        assert_eq!(late.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit_and_junk_is_none() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert("grpc-timeout", v);
            }
            timeout(&h)
        };
        assert_eq!(with("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(with("3M"), Some(Duration::from_secs(180)));
        assert_eq!(with("5S"), Some(Duration::from_secs(5)));
        assert_eq!(with("250m"), Some(Duration::from_millis(250)));
        assert_eq!(with("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(with("7n"), Some(Duration::from_nanos(7)));
        for junk in ["", "S", "5", "5s", "123456789S", "-5S", "5 S", "٥S"] {
            assert_eq!(with(junk), None, "{junk:?}");
        }
        let mut plain = HeaderMap::new();
        plain.insert("grpc-timeout", HeaderValue::from_static("5S"));
        assert_eq!(timeout(&plain), None, "not a gRPC call");
    }
}
