//! The phase driver: route, request filters, upstream, response filters, log.
//!
//! ```text
//! request ─▶ route ──(none)──────────────────────────────▶ 404 no route
//!              │
//!              ▼
//!        request_headers (chain order) ──(Respond)────────▶ local response ─┐
//!              │                                                          │
//!              ▼                                                          │
//!        forward: hop-by-hop out, X-Forwarded-* in                        │
//!              │                                                          │
//!              ▼                                                          │
//!        upstream / echo@internal ──(connect/timeout)──▶ 502 / 504 ──┐     │
//!              │                                                  │     │
//!              ▼                                                  ▼     │
//!        response_headers (reverse order) ◀───────────────────────┘     │
//!              │                                                          │
//!              ▼                                                          ▼
//!        finish (on_log / on_done) ─▶ access log + metrics ─▶ response streams
//! ```
//!
//! Bodies stream in both directions: the driver handles heads only and never holds a
//! whole body.

mod error;
mod forward;
mod observe;

pub use error::{ErrorSource, ProxyError, text_response};
pub use observe::Outcome;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::router::Candidate;
use crate::snapshot::{RouteUpstream, Snapshot};
use crate::upstream::echo;
use crate::wasm::{Decision, HttpFilters, StreamInfo};

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
///
/// The response carries an [`Outcome`] in its extensions (route, upstream, target,
/// error side) for the access log.
pub async fn handle(
    snapshot: Arc<Snapshot>,
    conn: &ConnInfo,
    req: Request<hyper::body::Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let (mut head, body) = req.into_parts();
    let mut outcome = Outcome::default();

    let Some(route) = snapshot.route(&conn.listener, &Candidate::from_parts(&head)) else {
        return observe::done(
            ProxyError::NoRoute.to_response(),
            Some(&ProxyError::NoRoute),
            outcome,
            conn,
            started,
        );
    };
    outcome.route = Some(route.name.clone());
    outcome.upstream = Some(route.upstream.name().into());

    let body: ProxyBody = body.map_err(Into::into).boxed_unsync();
    let mut filters = HttpFilters::new(
        &route.filters,
        StreamInfo {
            client: conn.client,
            local: conn.local,
            listener: conn.listener.clone(),
            route: route.name.clone(),
            tls_version: conn.tls_version,
        },
    );

    if let Decision::Respond(local) = filters
        .request_headers(&mut head, body.is_end_stream())
        .await
    {
        filters.finish().await;
        outcome.local = true;
        return observe::done(full_response(local), None, outcome, conn, started);
    }

    forward::prepare_request(&mut head, conn);
    let req = Request::from_parts(head, body);
    let result = match &route.upstream {
        RouteUpstream::Echo => echo::respond(req, conn.client, &route.name).await,
        RouteUpstream::Pool(upstream) => {
            let (target, result) = upstream.forward(req).await;
            outcome.target = target.map(|t| t.as_str().into());
            result.map_err(ProxyError::from).map(|resp| {
                let (mut head, body) = resp.into_parts();
                forward::prepare_response(&mut head);
                Response::from_parts(head, body.map_err(Into::into).boxed_unsync())
            })
        }
    };
    let (resp, error) = match result {
        Ok(resp) => (resp, None),
        Err(e) => (e.to_response(), Some(e)),
    };

    let (mut head, body) = resp.into_parts();
    let resp = match filters
        .response_headers(&mut head, body.is_end_stream())
        .await
    {
        Decision::Continue => Response::from_parts(head, body),
        Decision::Respond(local) => {
            outcome.local = true;
            full_response(local)
        }
    };
    // on_log runs once the head is decided; when body phases arrive it moves to the
    // end of the response body.
    filters.finish().await;
    observe::done(resp, error.as_ref(), outcome, conn, started)
}

/// An empty body.
pub fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A filter's local response, with its buffered body.
fn full_response(resp: Response<Bytes>) -> Response<ProxyBody> {
    resp.map(|b| Full::new(b).map_err(|never| match never {}).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The server may run `handle` on a multi-threaded executor (hyper's HTTP/2 spawns
    /// per-stream futures): keep the driver's future `Send`.
    #[allow(dead_code)]
    fn handle_future_is_send(
        snapshot: Arc<Snapshot>,
        conn: &ConnInfo,
        req: Request<hyper::body::Incoming>,
    ) {
        assert_send(&handle(snapshot, conn, req));
    }
}
