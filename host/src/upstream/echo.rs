//! `echo@internal`: a built-in upstream answering every request with 200 and a JSON
//! object of what it received. It stands where an upstream would, so the headers it
//! shows are those after the request filters ran and the proxy's forwarding headers
//! were added. The body is counted as it streams, never held.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use crate::body::{self, BoxError, ProxyBody};

/// The request body failed while the echo read it: the client went away, or a filter
/// answered while the body streamed.
#[derive(Debug, thiserror::Error)]
#[error("reading the request body failed: {0}")]
pub struct EchoError(#[source] pub BoxError);

/// Answers `req` with the JSON description of it; `client` is the downstream peer and
/// `route` the route's name.
pub async fn respond(
    req: Request<ProxyBody>,
    client: SocketAddr,
    route: &str,
) -> Result<Response<ProxyBody>, EchoError> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(EchoError)?;
        if let Some(data) = frame.data_ref() {
            body_bytes += data.len() as u64;
        }
    }
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let joined = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_string(), Value::String(joined));
    }
    let doc = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body_bytes": body_bytes,
        "client_address": client.to_string(),
        "route": route,
    });
    let mut text = doc.to_string();
    text.push('\n');
    let len = text.len();
    let mut resp = Response::new(body::full(Bytes::from(text)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    // As a real upstream's response has: the response phase sees it, and a filtered
    // body (whose length the filters may change) still goes out with its length
    // unless a filter that rewrites the body removes it, as on Envoy.
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    Ok(resp)
}
