//! The [`HttpCaller`] a snapshot gives its filters: `http_call` reaches the snapshot's
//! upstreams by their config name (and `echo@internal`), and gRPC callouts its
//! upstreams (which must speak HTTP/2: `protocol: h2c`, or `h2` over TLS).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::body;
use crate::config::ECHO_UPSTREAM;
use crate::upstream::{Upstream, echo};
use crate::wasm::{CallFuture, HttpCaller, StreamFuture};

/// Sends filters' calls to the upstreams of one snapshot.
pub struct UpstreamCaller {
    upstreams: HashMap<String, Arc<Upstream>>,
}

impl UpstreamCaller {
    /// A caller reaching `upstreams` (by name).
    pub fn new(upstreams: HashMap<String, Arc<Upstream>>) -> Self {
        Self { upstreams }
    }
}

impl HttpCaller for UpstreamCaller {
    fn call(&self, upstream: &str, request: http::Request<Bytes>, timeout: Duration) -> CallFuture {
        if upstream == ECHO_UPSTREAM {
            return Box::pin(async move {
                let peer = ([127, 0, 0, 1], 0).into();
                let response = echo::respond(request.map(body::full), peer, "http_call")
                    .await
                    .map_err(|e| e.to_string())?;
                let (head, body) = response.into_parts();
                let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
                Ok(http::Response::from_parts(head, body))
            });
        }
        let target = self.upstreams.get(upstream).cloned();
        let name = upstream.to_string();
        Box::pin(async move {
            let Some(u) = target else {
                return Err(format!("no upstream is named `{name}`"));
            };
            u.call(request, timeout).await.map_err(|e| e.to_string())
        })
    }

    fn knows(&self, upstream: &str) -> bool {
        self.upstreams.contains_key(upstream)
    }

    fn open(&self, upstream: &str, request: http::Request<body::ProxyBody>) -> StreamFuture {
        let target = self.upstreams.get(upstream).cloned();
        let name = upstream.to_string();
        Box::pin(async move {
            let Some(u) = target else {
                return Err(format!("no upstream is named `{name}`"));
            };
            u.forward(request, None).await.1.map_err(|e| e.to_string())
        })
    }
}
