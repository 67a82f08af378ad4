//! The [`HttpCaller`] a snapshot gives its filters: `http_call` reaches the snapshot's
//! upstreams by their config name (and `echo@internal`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::{CallFuture, HttpCaller};
use crate::body;
use crate::config::ECHO_UPSTREAM;
use crate::upstream::{Upstream, echo};

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
    fn call(
        &self,
        upstream: &str,
        request: http::Request<Bytes>,
        _timeout: Duration,
    ) -> CallFuture {
        let target = self.upstreams.get(upstream).cloned();
        let echo = upstream == ECHO_UPSTREAM;
        let name = upstream.to_string();
        Box::pin(async move {
            let request = request.map(body::full);
            let response = if echo {
                let peer = ([127, 0, 0, 1], 0).into();
                echo::respond(request, peer, "http_call")
                    .await
                    .map_err(|e| e.to_string())?
            } else {
                let Some(u) = target else {
                    return Err(format!("no upstream is named `{name}`"));
                };
                let (_, r) = u.forward(request).await;
                r.map_err(|e| e.to_string())?.map(body::boxed)
            };
            let (head, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(http::Response::from_parts(head, body))
        })
    }
}
