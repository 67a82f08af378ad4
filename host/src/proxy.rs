//! The phase driver: route, request filters, upstream, response filters, log.
//!
//! STUB: the server calls [`handle`] for every request; the real driver replaces it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

use crate::snapshot::Snapshot;

/// The body type of every response the proxy sends downstream.
pub type ProxyBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What the server knows of the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub client: SocketAddr,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// The listener's name.
    pub listener: Arc<str>,
    /// The negotiated TLS version (`"TLSv1.3"`), or `None` for plain text.
    pub tls_version: Option<&'static str>,
    /// The client certificate's verified subject, if one was presented.
    pub client_subject: Option<Arc<str>>,
}

/// Serves one request against `snapshot` (pinned by the caller for the whole request).
pub async fn handle(
    _snapshot: Arc<Snapshot>,
    _conn: &ConnInfo,
    _req: http::Request<hyper::body::Incoming>,
) -> http::Response<ProxyBody> {
    let body = Full::new(Bytes::from_static(b"no route\n"))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = http::Response::new(body);
    *resp.status_mut() = http::StatusCode::NOT_FOUND;
    resp
}
