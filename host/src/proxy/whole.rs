//! Bodies collected whole for the http-wasm filters that read them (`buffer_request`,
//! `buffer_response`; see `crate::wasm`'s http-wasm host). Only a chain holding such a
//! filter comes here.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;

use crate::body::{BoxError, ProxyBody};

/// The whole of `body`.
pub(super) async fn collect(body: ProxyBody) -> Result<Bytes, BoxError> {
    Ok(body.collect().await?.to_bytes())
}

/// A body a filter rewrote goes with its own length, not the one its sender declared.
pub(super) fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
}
