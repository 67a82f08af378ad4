//! [`Exchange`]: where the driver sends a request the filters let through.

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};

use super::{ConnInfo, ProxyError};
use crate::body::ProxyBody;
use crate::config::Metadata;
use crate::snapshot::RouteUpstream;
use crate::upstream::{UpstreamError, echo};

/// The far side of a route: its upstream pool or `echo@internal` when serving, the
/// described answer under test. The driver hands it the request with its head prepared
/// (hop-by-hop headers out, `X-Forwarded-*` in) and its body streaming through the
/// request filters, and prepares the response head it gets back.
pub trait Exchange {
    /// The upstream's name as configured (`echo@internal` included), for the access
    /// log and the metrics.
    fn name(&self) -> &str;

    /// The upstream's `metadata` (filters read it as `cluster_metadata`), if it has
    /// one: a route to one configured upstream.
    fn metadata(&self) -> Option<Metadata> {
        None
    }

    /// The exchange that takes `req`, asked once the request filters have run (so a
    /// filter may steer it): itself, or for a route that splits its requests, the
    /// upstream chosen for this one.
    fn resolve(&self, _req: &Request<ProxyBody>) -> &Self {
        self
    }

    /// Sends `req`, which came from `conn` on route `route`, and returns the answer
    /// with its body streaming, beside the target it went to last (`host:port`), if
    /// any.
    fn send(
        &self,
        req: Request<ProxyBody>,
        conn: &ConnInfo,
        route: &str,
    ) -> impl Future<Output = (Option<Arc<str>>, Result<Response<ProxyBody>, ProxyError>)>;
}

impl Exchange for RouteUpstream {
    fn name(&self) -> &str {
        RouteUpstream::name(self)
    }

    fn metadata(&self) -> Option<Metadata> {
        match self {
            RouteUpstream::Pool(u) => Some(u.config().metadata.clone()),
            _ => None,
        }
    }

    fn resolve(&self, req: &Request<ProxyBody>) -> &Self {
        match self {
            RouteUpstream::Split(split) => split.choose(req.headers()).unwrap_or(self),
            _ => self,
        }
    }

    async fn send(
        &self,
        req: Request<ProxyBody>,
        conn: &ConnInfo,
        route: &str,
    ) -> (Option<Arc<str>>, Result<Response<ProxyBody>, ProxyError>) {
        match self {
            RouteUpstream::Echo => {
                let answer = echo::respond(req, conn.client, route).await;
                (None, answer.map_err(ProxyError::from))
            }
            RouteUpstream::Pool(upstream) => {
                // A gRPC call's deadline bounds the whole call, within the upstream's
                // own request timeout (which still bounds the wait for the head).
                let grpc_timeout = super::grpc::timeout(req.headers());
                let deadline = grpc_timeout.map(|t| tokio::time::Instant::now() + t);
                let forward = upstream.forward(req, Some(conn.client.ip()));
                let (target, result) = match deadline {
                    None => forward.await,
                    Some(at) => match tokio::time::timeout_at(at, forward).await {
                        Ok(done) => done,
                        Err(_) => {
                            let timeout = UpstreamError::Timeout {
                                target: upstream.config().name.clone(),
                                timeout: grpc_timeout.unwrap_or_default(),
                            };
                            (None, Err(timeout))
                        }
                    },
                };
                let result = match deadline {
                    Some(at) => result.map(|r| r.map(|b| super::grpc::with_deadline(b, at))),
                    None => result,
                };
                let target = target.map(|t| t.as_str().into());
                let result = result.map_err(|e| match e {
                    // The client's body, read whole to be retryable, failed: its fault.
                    UpstreamError::RequestBody { source } => ProxyError::DownstreamBody(source),
                    e => ProxyError::from(e),
                });
                (target, result)
            }
            // Resolved before sending; a split has no target of its own.
            RouteUpstream::Split(_) => (None, Err(UpstreamError::NoTarget.into())),
        }
    }
}
