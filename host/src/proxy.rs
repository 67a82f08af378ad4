//! The phase driver: route, request filters, upstream, response filters, log.
//!
//! ```text
//! request ─▶ route ──(none)──────────────────────────────▶ 404 no route
//!              │  └──(Content-Length over max_request_body)─▶ 413
//!              ▼
//!        request_headers (chain order) ──(Respond)────────▶ local response ─┐
//!              │                  └──────(filter failed)──▶ 500 ────────────┤
//!              ▼                                                          │
//!        forward: hop-by-hop out, X-Forwarded-* in                        │
//!              │                                                          │
//!              ▼                                                          │
//!        exchange: upstream (or split) / echo@internal ─▶ 502/503/504 ─┐│
//!              │   (a copy to the route's mirror, fire and forget)     ││
//!              │                                                       ││
//!              ▼                                                       ▼│
//!        response_headers (reverse order) ◀─────────────────────────────┘│
//!              │                                                          │
//!              ▼                                                          ▼
//!        finish (on_log / on_done) ─▶ access log + metrics ─▶ response streams
//! ```
//!
//! (Every error on the way, with its cause: docs/phases.md.)
//!
//! [`drive`] is the one walk through these phases: the server runs it against the
//! serving snapshot ([`handle`]), and the filter test kit (`portcullis filter-test`)
//! against a route of its own whose [`Exchange`] is the answer the test describes.
//! Bodies stream in both directions: the driver handles heads only and never holds a
//! whole body.

mod error;
mod exchange;
mod forward;
mod grpc;
mod limit;
mod observe;
mod trace;
mod whole;

pub use error::{ErrorSource, ProxyError, error_response};
pub use exchange::Exchange;
pub use forward::requested_upgrade;
pub use grpc::{answer_errors_as_grpc, is_grpc};
pub use observe::{Outcome, Timing};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, request};
use http_body::Body;
use http_body_util::BodyExt;

use crate::body::{self, ProxyBody};
use crate::router::Candidate;
use crate::snapshot::{Route, Snapshot};
use crate::wasm::{Decision, FilteredBody, HttpFilters, LocalSlot, SharedFilters, StreamInfo};

/// What the server knows of the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub client: SocketAddr,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// The listener's name.
    pub listener: Arc<str>,
    /// The negotiated TLS version (`"TLSv1.3"`, see [`crate::tls::version_name`]), or
    /// `None` for plain text.
    pub tls_version: Option<&'static str>,
    /// The client certificate's verified subject, if one was presented.
    pub client_subject: Option<Arc<str>>,
}

/// A request driven through its phases: the response head (its body streams through
/// the response filters as it is sent), what happened, and the route's filter chain.
pub struct Driven {
    /// What the client gets.
    pub response: Response<ProxyBody>,
    /// What the driver did, for the access log.
    pub outcome: Outcome,
    /// The chain, while its bodies still stream: it finishes (`on_log`) in the
    /// background once the last holder drops it, or when awaited by whoever takes it
    /// out (the test kit, which reports what `on_log` logged). `None` without filters
    /// or once the chain has finished.
    pub chain: Option<SharedFilters>,
}

/// Serves one request against `snapshot` (pinned by the caller for the whole request).
///
/// The response carries an [`Outcome`] in its extensions (route, upstream, target)
/// for the access log.
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
pub async fn handle_with_outcome<B>(
    snapshot: Arc<Snapshot>,
    conn: &ConnInfo,
    req: Request<B>,
) -> (Response<ProxyBody>, Outcome)
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    let mut req = req.map(body::boxed);
    // No `tracing:`: this branch, and a look in the extensions before the filters and
    // the upstream, is all tracing costs a request.
    let (trace_id, span) = match snapshot.tracer() {
        Some(tracer) => {
            let (id, span) = tracer.start(req.headers_mut());
            (Some(id), span)
        }
        None => (None, None),
    };
    let traced = span.map(|span| {
        req.extensions_mut().insert(span.clone());
        (span, trace::RequestAttrs::of(&req, conn))
    });
    let routes = |head: &request::Parts| {
        let candidate = Candidate::from_parts(head).with_client(conn.client.ip());
        snapshot.route(&conn.listener, &candidate)
    };
    let mut driven = drive(routes, conn, req).await;
    driven.outcome.trace_id = trace_id;
    if let Some((span, attrs)) = traced {
        trace::finish(&span, attrs, &driven.response, &driven.outcome);
    }
    (driven.response, driven.outcome)
}

/// Runs `req` through every phase: `route` picks its route (after the client's
/// certificate subject is set, so that no client can route by a forged one), then
/// the route's filters, its upstream (the route's [`Exchange`]) and the response
/// filters.
pub async fn drive<'r, U, R>(route: R, conn: &ConnInfo, req: Request<ProxyBody>) -> Driven
where
    U: Exchange + 'r,
    R: FnOnce(&request::Parts) -> Option<&'r Route<U>>,
{
    let (mut head, body) = req.into_parts();
    let mut outcome = Outcome::default();
    // The access log's timing breakdown and filter outcomes, only when it writes them.
    let mut timing = crate::access_log::detailed().then(Timing::default);
    crate::tls::set_client_subject(&mut head.headers, conn.client_subject.as_deref());

    let Some(route) = route(&head) else {
        let e = ProxyError::NoRoute;
        return observe::done(e.to_response(), Some(&e), outcome, conn, None);
    };
    outcome.route = Some(route.name.clone());
    outcome.upgrade_idle_timeout = Some(route.upgrade_idle_timeout);
    outcome.upstream = Some(route.upstream.name().into());
    let mut body = body;
    let mut over_limit = None;
    if let Some(limit) = route.max_request_body {
        if body::declared_length(&head.headers).is_some_and(|n| n > limit) {
            let e = ProxyError::BodyTooLarge;
            return observe::done(e.to_response(), Some(&e), outcome, conn, None);
        }
        // A body of unknown length is counted as it streams.
        if !body.is_end_stream() {
            let exceeded = Arc::new(std::sync::atomic::AtomicBool::new(false));
            body = limit::Limited::new(body, limit, exceeded.clone()).boxed_unsync();
            over_limit = Some(exceeded);
        }
    }

    if route.filters.is_empty() {
        // No filter to run: no chain, no shared state, no response phase to wait for.
        forward::prepare_request(&mut head, conn);
        let req = Request::from_parts(head, body);
        let started = timing.map(|_| Instant::now());
        let result = exchange(route, req, conn, &mut outcome).await;
        outcome.timing = timed(timing, started, |t, d| t.upstream = d);
        let (resp, error) = match too_large(result, over_limit.as_deref()) {
            Ok(resp) => (resp, None),
            Err(e) => (e.to_response(), Some(e)),
        };
        return observe::done(resp, error.as_ref(), outcome, conn, None);
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
    if !route.shadow.is_empty() {
        filters.set_shadow(&route.shadow);
    }
    for canary in &route.canaries {
        let chosen = canary.runs(&head.headers);
        let entry = &route.filters[canary.at].config.name;
        let version = if chosen {
            &canary.plugin.config.name
        } else {
            entry
        };
        crate::metrics::global().canary_request(&route.name, entry, version);
        if chosen {
            filters.run_instead(canary.at, canary.plugin.clone());
        }
    }
    filters.set_upstream_and_peer(route.upstream_name.clone(), conn.client_subject.clone());
    if let Some(trace) = head.extensions.get::<Arc<crate::otel::RequestTrace>>() {
        filters.set_trace(trace.clone());
    }
    if let Some(metadata) = route.upstream.metadata() {
        filters.set_cluster_metadata(metadata);
    }

    let mut head_ends = body.is_end_stream();
    if filters.buffers_request() {
        match whole::collect(std::mem::replace(&mut body, body::empty())).await {
            Ok(bytes) => {
                head_ends = bytes.is_empty();
                filters.set_request_body(bytes);
            }
            Err(e) => {
                let e = match over_limit.as_deref() {
                    Some(f) if f.load(std::sync::atomic::Ordering::Relaxed) => {
                        ProxyError::BodyTooLarge
                    }
                    _ => ProxyError::DownstreamBody(e),
                };
                filters.finish().await;
                return observe::done(e.to_response(), Some(&e), outcome, conn, None);
            }
        }
    }
    let started = timing.map(|_| Instant::now());
    let decision = filters.request_headers(&mut head, head_ends).await;
    timing = timed(timing, started, |t, d| t.filters = d);
    if let Some((resp, error)) = stopped(decision, &mut outcome) {
        if timing.is_some() {
            outcome.timing = timing;
            outcome.filters = Some(filters.outcomes());
        }
        filters.finish().await;
        return observe::done(resp, error.as_ref(), outcome, conn, None);
    }
    if let Some((bytes, changed)) = filters.take_request_body() {
        if changed {
            whole::set_length(&mut head.headers, bytes.len());
        }
        body = body::full(bytes);
    }
    let buffers_response = filters.buffers_response();

    // Body phases run as the bodies stream; the chain finishes (on_log) when the last
    // of the driver and the body wrappers lets go of it.
    let filters = filters.into_shared();
    // A request that ended with its head (a GET) has no body phase: it goes as it is,
    // without a wrapper or a slot for an answer from the body phase.
    let local = (!body.is_end_stream()).then(LocalSlot::default);
    let body = match &local {
        Some(local) => FilteredBody::request(body, filters.clone(), local.clone()).boxed_unsync(),
        None => body,
    };
    forward::prepare_request(&mut head, conn);
    let started = timing.map(|_| Instant::now());
    let result = exchange(route, Request::from_parts(head, body), conn, &mut outcome).await;
    timing = timed(timing, started, |t, d| t.upstream = d);
    let result = too_large(result, over_limit.as_deref());
    // A filter that answered (or failed) while the request body streamed aborted the
    // exchange; the chain already ran the response phase on an answer.
    let answer = local.and_then(|l| l.lock().ok().and_then(|mut l| l.take()));
    if let Some((resp, error)) = answer.and_then(|a| stopped(a, &mut outcome)) {
        if timing.is_some() {
            outcome.timing = timing;
            outcome.filters = filters.try_lock().map(|chain| chain.outcomes());
        }
        return observe::done(resp, error.as_ref(), outcome, conn, Some(filters));
    }
    let (resp, error) = match result {
        Ok(resp) => (resp, None),
        Err(e) => (e.to_response(), Some(e)),
    };

    let (mut head, mut body) = resp.into_parts();
    let mut error = error;
    let mut whole_body = None;
    // The body has been through the filters already.
    let mut filtered = false;
    if buffers_response {
        match whole::collect(std::mem::replace(&mut body, body::empty())).await {
            Ok(bytes) => whole_body = Some(bytes),
            Err(source) => {
                let e = ProxyError::Upstream(crate::upstream::UpstreamError::Body {
                    target: outcome.target.as_deref().unwrap_or_default().to_string(),
                    source,
                });
                let (h, b) = e.to_response().into_parts();
                (head, body, error) = (h, b, Some(e));
            }
        }
    }
    let decision = {
        // Free unless a body wrapper is mid-step: no lock future on the common path.
        let mut chain = match filters.try_lock() {
            Some(chain) => chain,
            None => filters.lock().await,
        };
        let flags = error.as_ref().map_or(0, ProxyError::envoy_response_flags);
        chain.set_upstream_result(outcome.target.clone(), flags);
        let collected = whole_body.is_some();
        let ends = match whole_body {
            Some(bytes) => {
                let ends = bytes.is_empty();
                chain.set_response_body(bytes);
                ends
            }
            None => body.is_end_stream(),
        };
        // A body that came whole with the head goes through each filter with the
        // head, in one guest entry per filter where it can (`wasm/chain/whole.rs`).
        let in_hand = match collected || ends || !chain.takes_bodies() {
            false => whole::in_hand(&mut body).await,
            true => None,
        };
        let started = timing.map(|_| Instant::now());
        let decision = match in_hand {
            Some(bytes) => {
                let came = bytes.len();
                let (decision, bytes) = chain.response_whole(&mut head, bytes).await;
                if bytes.len() != came {
                    whole::set_length(&mut head.headers, bytes.len());
                }
                body = body::full(bytes);
                filtered = true;
                decision
            }
            None => chain.response_headers(&mut head, ends).await,
        };
        if let (Some(t), Some(started)) = (&mut timing, started) {
            t.filters += started.elapsed();
            outcome.filters = Some(chain.outcomes());
        }
        outcome.timing = timing;
        if let Some((bytes, changed)) = chain.take_response_body() {
            if changed {
                whole::set_length(&mut head.headers, bytes.len());
            }
            body = body::full(bytes);
        }
        decision
    };
    let (resp, error) = match stopped(decision, &mut outcome) {
        Some(stop) => stop,
        None if filtered => (Response::from_parts(head, body), error),
        None => {
            let body = FilteredBody::response(body, filters.clone()).boxed_unsync();
            (Response::from_parts(head, body), error)
        }
    };
    observe::done(resp, error.as_ref(), outcome, conn, Some(filters))
}

/// `timing` with the time since `started` set by `set` (both `None` when the access
/// log does not want it).
fn timed(
    timing: Option<Timing>,
    started: Option<Instant>,
    set: impl FnOnce(&mut Timing, std::time::Duration),
) -> Option<Timing> {
    let mut timing = timing?;
    if let Some(started) = started {
        set(&mut timing, started.elapsed());
    }
    Some(timing)
}

/// Sends the prepared request to the route's upstream and prepares the response head
/// to go downstream.
async fn exchange<U: Exchange>(
    route: &Route<U>,
    req: Request<ProxyBody>,
    conn: &ConnInfo,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    let req = match &route.mirror {
        Some(mirror) => mirror.copy(req, conn.client.ip()),
        None => req,
    };
    let upstream = route.upstream.resolve(&req);
    if !std::ptr::eq(upstream, &route.upstream) {
        // The upstream a split chose, for the access log and the metrics.
        outcome.upstream = Some(upstream.name().into());
    }
    let (target, result) = upstream.send(req, conn, &route.name).await;
    outcome.target = target;
    let (mut head, body) = result?.into_parts();
    forward::prepare_response(&mut head);
    Ok(Response::from_parts(head, body))
}

/// `result`, or 413 when the exchange failed because the request body went past the
/// route's `max_request_body` (the client then sees 413 if nothing was sent yet, and
/// its stream reset otherwise).
fn too_large(
    result: Result<Response<ProxyBody>, ProxyError>,
    over_limit: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Response<ProxyBody>, ProxyError> {
    match result {
        Err(_) if over_limit.is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed)) => {
            Err(ProxyError::BodyTooLarge)
        }
        result => result,
    }
}

/// What the client gets when the chain stopped the request: a filter's local answer,
/// or the error of a filter that failed; `None` when the chain let it go on.
fn stopped(
    decision: Decision,
    outcome: &mut Outcome,
) -> Option<(Response<ProxyBody>, Option<ProxyError>)> {
    match decision {
        Decision::Continue => None,
        Decision::Respond(answer) => {
            outcome.local = true;
            Some((answer.map(body::full), None))
        }
        Decision::Fail(failure) => {
            let e = ProxyError::Filter(failure);
            Some((e.to_response(), Some(e)))
        }
    }
}
