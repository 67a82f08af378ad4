//! The body type of every message the proxy relays or makes, and its constructors.
//!
//! A leaf module: the upstream layer, `echo@internal`, the `http_call` caller and the
//! phase driver all speak [`ProxyBody`] without depending on one another.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Why a body stopped streaming (a connection error, a filter that answered while it
/// streamed, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request and response the proxy sends: boxed once, unsynchronised
/// (a request never leaves its worker thread).
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The length a message declares for its body (`Content-Length`), if it declares one
/// that parses.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of `bytes`, already whole (a filter's local response, a buffered call).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `body` (of any error type convertible to [`BoxError`]) as a [`ProxyBody`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}
