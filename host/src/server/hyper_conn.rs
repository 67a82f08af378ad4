//! The hyper side of a client connection: the connection builder under the listener's
//! limits, the local executor, and the service that hands each request to the handler.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;

use hyper_util::server::conn::auto;

use super::conn::{TrackedBody, handle};
use super::state::ConnState;
use super::tunnel::Tunnels;
use crate::app::App;
use crate::config::{Http2Settings, ListenerLimits};
use crate::proxy::ConnInfo;

/// Streams a client may reset before the server accepts them, per connection.
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server may reset for the client's protocol errors, per connection.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Interval of HTTP/2 keep-alive pings on a connection, and how long one may go
/// unanswered.
const H2_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(20);
/// The hyper connection builder for a connection under `limits`, announcing `http2`
/// to an HTTP/2 client.
pub(super) fn builder(limits: &ListenerLimits, http2: Http2Settings) -> auto::Builder<LocalExec> {
    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .keep_alive(true)
        // The guard enforces the configured limits first (answering with a body);
        // hyper's own are a backstop. Its buffer must also hold a head at the limit.
        .max_buf_size((limits.max_header_bytes + 16 * 1024).max(8192))
        .max_headers(limits.max_headers.max(1))
        .header_read_timeout(None);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(http2.initial_stream_window)
        .initial_connection_window_size(http2.initial_connection_window)
        // Streams a client resets before they are even accepted (the rapid-reset
        // attack, CVE-2023-44487): past this many at once the connection is closed
        // with ENHANCE_YOUR_CALM.
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        // Streams the proxy had to reset for protocol errors the client provoked
        // (CVE-2024-27316's cousins): past this many the connection is closed.
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        // A peer that no longer answers pings is gone: close rather than hold it.
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE)
        // WebSockets over HTTP/2 (RFC 8441): extended CONNECT, see `tunnel`.
        .enable_connect_protocol();
    builder
}

/// The service hyper calls for each request on the connection. With `alt_svc` (a
/// listener that serves HTTP/3 too), every response says where.
pub(super) fn service(
    app: &Arc<App>,
    info: &Rc<ConnInfo>,
    state: &Rc<ConnState>,
    tunnels: &Rc<Tunnels>,
    alt_svc: Option<&http::HeaderValue>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<TrackedBody>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<http::Response<TrackedBody>, Infallible>> + use<>,
> + use<> {
    let (app, info, state) = (Arc::clone(app), Rc::clone(info), Rc::clone(state));
    let tunnels = Rc::clone(tunnels);
    let alt_svc = alt_svc.cloned();
    hyper::service::service_fn(move |req| {
        let app = Arc::clone(&app);
        let info = Rc::clone(&info);
        let state = Rc::clone(&state);
        let tunnels = Rc::clone(&tunnels);
        let alt_svc = alt_svc.clone();
        // Boxed: hyper spawns each HTTP/2 stream as a task holding this future, and the
        // task's spawn, first poll and completion each moved the whole request
        // handler's state (several KiB) — ~8k instructions of copying per HTTP/2
        // request, against one allocation.
        Box::pin(async move {
            let mut resp = handle(app, info, state, &tunnels, req).await;
            if let Some(value) = alt_svc {
                resp.headers_mut().insert(http::header::ALT_SVC, value);
            }
            Ok::<_, Infallible>(resp)
        })
    })
}

/// Runs hyper's background tasks (HTTP/2 streams) on the worker's `LocalSet`, so that
/// request futures need not be `Send`.
#[derive(Clone, Copy)]
pub(super) struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}
