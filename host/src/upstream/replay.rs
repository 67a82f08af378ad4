//! A request sent again: its head and whole body kept from the first attempt, and
//! each attempt rebuilt from them.

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;

use super::{ATTEMPT_HEADER, UpstreamError};
use crate::body::{self, ProxyBody};

/// A copy of `req`'s head (method, URI, version, headers).
pub fn clone_head(req: &Request<ProxyBody>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    head
}

/// A request body of declared `length`, read whole (and no further than declared).
pub async fn read_whole(body: ProxyBody, length: u64) -> Result<Bytes, UpstreamError> {
    let mut body = std::pin::pin!(body);
    let mut whole = bytes::BytesMut::with_capacity(length as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| UpstreamError::RequestBody { source })?;
        if let Ok(data) = frame.into_data() {
            if (whole.len() + data.len()) as u64 > length {
                return Err(UpstreamError::RequestBody {
                    source: "the body is longer than its Content-Length".into(),
                });
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

/// Attempt number `attempt` of a request: its head, and its body again. A retry says
/// which attempt it is (`x-portcullis-attempt: 2`), for the upstream's logs.
pub fn rebuild(head: &Request<()>, body: &Bytes, attempt: u32) -> Request<ProxyBody> {
    let body = if body.is_empty() {
        body::empty()
    } else {
        body::full(body.clone())
    };
    let mut req = Request::new(body);
    *req.method_mut() = head.method().clone();
    *req.uri_mut() = head.uri().clone();
    *req.version_mut() = head.version();
    *req.headers_mut() = head.headers().clone();
    if attempt > 1 {
        req.headers_mut()
            .insert(ATTEMPT_HEADER, http::HeaderValue::from(attempt));
    }
    req
}
