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
use crate::snapshot::{Route, RouteUpstream, Snapshot};
use crate::upstream::echo;
use crate::wasm::{Decision, FilteredBody, HttpFilters, LocalSlot, StreamInfo};

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
    let (mut resp, outcome) = handle_with_outcome(snapshot, conn, req).await;
    resp.extensions_mut().insert(outcome);
    resp
}

/// [`handle`], returning the [`Outcome`] beside the response rather than in its
/// extensions: the server's path, which spares a map allocation per request.
pub async fn handle_with_outcome(
    snapshot: Arc<Snapshot>,
    conn: &ConnInfo,
    req: Request<hyper::body::Incoming>,
) -> (Response<ProxyBody>, Outcome) {
    let (mut head, body) = req.into_parts();
    let started = Instant::now();
    let mut outcome = Outcome::default();
    crate::tls::set_client_subject(&mut head.headers, conn.client_subject.as_deref());

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
    if route.filters.is_empty() {
        // No filter to run: no chain, no shared state, no response phase to wait for.
        forward::prepare_request(&mut head, conn);
        let (resp, error) =
            match exchange(route, Request::from_parts(head, body), conn, &mut outcome).await {
                Ok(resp) => (resp, None),
                Err(e) => (e.to_response(), Some(e)),
            };
        return observe::done(resp, error.as_ref(), outcome, conn, started);
    }
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
    filters.set_upstream_and_peer(route.upstream.name().into(), conn.client_subject.clone());

    if let Decision::Respond(local) = filters
        .request_headers(&mut head, body.is_end_stream())
        .await
    {
        filters.finish().await;
        outcome.local = true;
        return observe::done(full_response(local), None, outcome, conn, started);
    }

    // Body phases run as the bodies stream; the chain finishes (on_log) when the last
    // of the driver and the body wrappers lets go of it.
    let with_filters = !filters.is_empty();
    let filters = filters.into_shared();
    let local = LocalSlot::default();
    let body = if with_filters {
        FilteredBody::request(body, filters.clone(), local.clone()).boxed_unsync()
    } else {
        body
    };
    forward::prepare_request(&mut head, conn);
    let result = exchange(route, Request::from_parts(head, body), conn, &mut outcome).await;
    // A filter that answered while the request body streamed aborted the upstream
    // exchange; the chain already ran the response phase on its answer.
    if let Some(answer) = local.lock().ok().and_then(|mut l| l.take()) {
        outcome.local = true;
        return observe::done(full_response(answer), None, outcome, conn, started);
    }
    let (resp, error) = match result {
        Ok(resp) => (resp, None),
        Err(e) => (e.to_response(), Some(e)),
    };

    let (mut head, body) = resp.into_parts();
    let decision = filters
        .lock()
        .await
        .response_headers(&mut head, body.is_end_stream())
        .await;
    let resp = match decision {
        Decision::Continue if with_filters => {
            Response::from_parts(head, FilteredBody::response(body, filters).boxed_unsync())
        }
        Decision::Continue => Response::from_parts(head, body),
        Decision::Respond(local) => {
            outcome.local = true;
            full_response(local)
        }
    };
    observe::done(resp, error.as_ref(), outcome, conn, started)
}

/// Sends the prepared request to the route's upstream (or answers it with the echo)
/// and prepares the response head to go downstream.
async fn exchange(
    route: &Route,
    req: Request<ProxyBody>,
    conn: &ConnInfo,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    match &route.upstream {
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
    }
}

/// An empty body.
pub fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A filter's local response, with its buffered body.
fn full_response(resp: Response<Bytes>) -> Response<ProxyBody> {
    resp.map(|b| Full::new(b).map_err(|never| match never {}).boxed_unsync())
}
