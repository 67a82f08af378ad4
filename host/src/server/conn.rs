//! One client connection: hyper (HTTP/1.1 or HTTP/2 prior knowledge, auto-detected)
//! over the [`guard`](super::guard), a watchdog enforcing the header-read and idle
//! timeouts, and graceful shutdown when the listener is removed or the process stops.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::guard::Guard;
use super::per_ip;
use super::request_body::{PacedBody, Verdict};
use super::state::{self, Active, ConnState, Reject};
use super::tunnel::{self, Tunnels, WorkerLocal};
use super::worker::stopping;
use crate::access_log::{self, AccessRecord};
use crate::app::App;
use crate::body::ProxyBody;
use crate::config::ListenerLimits;
use crate::listeners::BoundListener;
use crate::metrics;
use crate::proxy::{self, ConnInfo};
use crate::snapshot::Snapshot;
use crate::tls;

/// Streams a client may reset before the server accepts them, per connection.
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server may reset for the client's protocol errors, per connection.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Interval of HTTP/2 keep-alive pings on a connection, and how long one may go
/// unanswered.
const H2_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(20);

/// Serves a TCP connection accepted on `listener`, terminating TLS first when the
/// listener has it (with the acceptor of the snapshot current at accept time, so a
/// reloaded certificate serves new connections while open ones keep theirs).
pub async fn serve_tcp(
    app: Arc<App>,
    listener: Arc<BoundListener>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    // Limits are read once per connection, so a reload that changes them applies to
    // new connections without rebinding.
    let limits = limits_of(&app.snapshot.load(), &listener.name);
    let max_per_ip = limits.max_connections_per_ip;
    let Some(_slot) = per_ip::Slot::take(listener.id, peer.ip(), max_per_ip) else {
        tracing::debug!(client = %peer, listener = %listener.name, "too many connections from this IP");
        metrics::global().client_limit(&listener.name, "max_connections_per_ip");
        return;
    };
    let local = tcp.local_addr().unwrap_or(listener.bound);
    let mut info = ConnInfo {
        client: peer,
        local,
        listener: Arc::clone(&listener.name),
        tls_version: None,
        client_subject: None,
    };
    if !listener.tls {
        return serve_io(app, &listener, tcp, info, limits).await;
    }
    let acceptor = app.snapshot.load().tls().acceptor(&listener.name);
    let timeout = limits.header_timeout;
    let Some(acceptor) = acceptor else {
        tracing::warn!(listener = %listener.name, "no TLS acceptor for this listener; closing");
        return;
    };
    // The handshake counts against the header timeout: a client that opens a
    // connection and never finishes it is closed like a slow request head.
    match tls::accept(&acceptor, tcp, timeout).await {
        Ok((stream, session)) => {
            info.tls_version = session.version;
            info.client_subject = session.client_subject;
            serve_io(app, &listener, stream, info, limits).await;
        }
        Err(e) => tracing::debug!(client = %peer, listener = %listener.name, "{e}"),
    }
}

/// The client limits of listener `name` in `snapshot` (defaults if it is gone).
fn limits_of(snapshot: &Snapshot, name: &str) -> ListenerLimits {
    snapshot
        .config
        .listeners
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.limits.clone())
        .unwrap_or_default()
}

/// Serves HTTP on `io` (a TCP stream, or the plaintext side of a TLS stream) under the
/// listener's `limits` until the client closes, a limit closes it, or the
/// listener/process stops and it drains.
pub async fn serve_io<I>(
    app: Arc<App>,
    listener: &BoundListener,
    io: I,
    info: ConnInfo,
    limits: ListenerLimits,
) where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let _open = OpenConnection::new(&listener.name);
    let state = Rc::new(ConnState::new(limits));
    let limits = state.limits();
    let io = WorkerLocal(Guard::new(io, Rc::clone(&state)));
    let tunnels = Rc::new(Tunnels::default());
    let mut stop = listener.stopped();
    let mut shutdown = app.shutdown_signal();

    let service = {
        let state = Rc::clone(&state);
        let tunnels = Rc::clone(&tunnels);
        let info = Rc::new(info);
        hyper::service::service_fn(move |req| {
            let app = Arc::clone(&app);
            let info = Rc::clone(&info);
            let state = Rc::clone(&state);
            let tunnels = Rc::clone(&tunnels);
            async move { Ok::<_, Infallible>(handle(app, info, state, &tunnels, req).await) }
        })
    };

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
    let mut conn = Box::pin(builder.serve_connection_with_upgrades(TokioIo::new(io), service));

    // The stop signals are watched from a task of their own: polled in the select
    // below, two watch receivers (and a nested select) were re-polled at every wake-up
    // of the connection, twice per request; a oneshot receiver costs a few loads.
    let (stop_tx, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let stop_watch = AbortOnDrop(tokio::task::spawn_local(async move {
        stopping(&mut stop, &mut shutdown).await;
        let _ = stop_tx.send(());
    }));
    let mut draining = false;
    let mut goaway = false;
    let watchdog = state::watchdog(&state);
    tokio::pin!(watchdog);
    loop {
        tokio::select! {
            // The connection first: it is what wakes the task nearly every time.
            biased;
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!("connection ended: {e}");
                }
                break;
            }
            _ = &mut stopped, if !draining => {
                draining = true;
                state.start_draining();
                // HTTP/2 (and anything else hyper no longer parses as HTTP/1) is told
                // with a GOAWAY, after which hyper lets the open streams finish. HTTP/1
                // is not: hyper would close an idle connection on which the client may
                // be sending its next request right now. Its responses ask the client
                // to close instead, and the watchdog closes it once idle.
                if state.is_passthrough() {
                    goaway = true;
                    conn.as_mut().graceful_shutdown();
                }
                watchdog.set(state::watchdog(&state));
            }
            () = state.goaway_wanted(), if !goaway => {
                goaway = true;
                conn.as_mut().graceful_shutdown();
            }
            why = &mut watchdog => {
                tracing::debug!("closing connection: {why}");
                if let Some(limit) = why.limit() {
                    metrics::global().client_limit(&listener.name, limit);
                }
                break;
            }
        }
    }
    drop(stop_watch);
    drop(conn);
    // A switched connection lives on in its tunnel (holding the stream, which a
    // lingering close needs after it).
    tunnels.finished().await;
    if let Some(io) = state.take_linger() {
        state::linger(io).await;
    }
}

/// Serves one request: answers it here if the guard rejected its head, else pins the
/// current snapshot and hands it to the proxy driver.
async fn handle(
    app: Arc<App>,
    info: Rc<ConnInfo>,
    state: Rc<ConnState>,
    tunnels: &Tunnels,
    mut req: http::Request<hyper::body::Incoming>,
) -> http::Response<TrackedBody> {
    let (index, active) = state.request_started();
    let started = Instant::now();
    let last_allowed = state
        .limits()
        .max_requests_per_connection
        .is_some_and(|max| index + 1 >= max);
    if last_allowed && req.version() == http::Version::HTTP_2 {
        // HTTP/2: no new stream after this one (GOAWAY); those open finish.
        state.want_goaway();
    }

    let reject = state.rejection(index).or_else(|| {
        // HTTP/2 heads bypass the guard; count their fields here.
        (req.headers().len() > state.limits().max_headers).then_some(Reject::TooManyHeaders)
    });
    if let Some(reject) = reject {
        metrics::global().client_limit(&info.listener, reject.limit());
        let resp = reject_response(reject);
        access_log::record(&AccessRecord {
            listener: &info.listener,
            method: req.method().as_str(),
            host: "",
            path: "",
            status: resp.status().as_u16(),
            route: "",
            upstream: "",
            duration: started.elapsed(),
            client: &info.client.to_string(),
        });
        return resp.map(|body| TrackedBody {
            inner: body,
            _active: Some(active),
        });
    }

    // What the access log needs of the request, before the driver takes it; only
    // formatted when access lines are written (the metrics need none of it).
    let method = req.method().clone();
    let version = req.version();
    let line = access_log::enabled().then(|| AccessLine::of(&req, &info));

    let snapshot = app.snapshot.load_full();
    let asked = tunnel::Asked::take(&mut req, &snapshot);
    // gRPC runs over HTTP/2 only: HTTP/1 requests skip the look at their content type.
    let grpc = version == http::Version::HTTP_2 && proxy::is_grpc(req.headers());
    // Only a request with a body has a pace to keep (and a verdict to allocate).
    let verdict = (!req.body().is_end_stream()).then(Verdict::default);
    let (mut resp, outcome) = match &verdict {
        Some(v) => {
            let req = req.map(|b| PacedBody::new(b, state.limits(), v.clone()));
            proxy::handle_with_outcome(snapshot, &info, req).await
        }
        None => proxy::handle_with_outcome(snapshot, &info, req).await,
    };
    if let Some(why) = verdict.as_ref().and_then(Verdict::get) {
        // Whatever the proxy made of the broken body (the upstream saw it fail), the
        // client is told why.
        tracing::debug!(client = %info.client, "{why}");
        metrics::global().client_limit(&info.listener, why.limit());
        resp = proxy::error_response(http::StatusCode::REQUEST_TIMEOUT, "request body too slow\n");
        if version <= http::Version::HTTP_11 {
            state.close_lingering();
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }
    let mut active = Some(active);
    let switched = match tunnel::settle(asked, &mut resp, outcome.route.as_ref(), &mut active) {
        Some(switch) => {
            // What follows on an HTTP/1 connection is no longer HTTP/1 framing.
            state.passthrough();
            tunnels.start(switch);
            true
        }
        None => false,
    };
    if last_allowed && state.limits().max_requests_per_connection == Some(index + 1) {
        metrics::global().client_limit(&info.listener, "max_requests_per_connection");
    }
    if (state.is_draining() || last_allowed) && version <= http::Version::HTTP_11 && !switched {
        // The connection closes after this response: say so, so the client sends
        // nothing more on it.
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let line = line.unwrap_or_default();
    access_log::record(&AccessRecord {
        listener: &info.listener,
        method: method.as_str(),
        host: &line.host,
        path: &line.path,
        status: resp.status().as_u16(),
        route: outcome.route.as_deref().unwrap_or_default(),
        upstream: outcome
            .target
            .as_deref()
            .or(outcome.upstream.as_deref())
            .unwrap_or_default(),
        duration: started.elapsed(),
        client: &line.client,
    });
    if grpc {
        // After the access line, which keeps the error's HTTP status.
        proxy::answer_errors_as_grpc(&mut resp);
    }
    resp.map(|body| TrackedBody {
        inner: body,
        _active: active,
    })
}

/// The parts of an access line that must be copied out of the request before the
/// driver takes it.
#[derive(Default)]
struct AccessLine {
    host: String,
    path: String,
    client: String,
}

impl AccessLine {
    fn of(req: &http::Request<hyper::body::Incoming>, info: &ConnInfo) -> Self {
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), ToString::to_string);
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        Self {
            host,
            path,
            client: info.client.to_string(),
        }
    }
}

/// The response to a request whose head the guard rejected; always closes.
fn reject_response(reject: Reject) -> http::Response<ProxyBody> {
    let (status, text) = match reject {
        Reject::HeadersTooLarge => (
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large\n",
        ),
        Reject::TooManyHeaders => (
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many request header fields\n",
        ),
        Reject::BadFraming => (
            http::StatusCode::BAD_REQUEST,
            "bad request: conflicting Content-Length / Transfer-Encoding\n",
        ),
    };
    let mut resp = proxy::error_response(status, text);
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// Runs hyper's background tasks (HTTP/2 streams) on the worker's `LocalSet`, so that
/// request futures need not be `Send`.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// A response body that keeps its request counted as in flight until it has been sent,
/// so that the idle timeout never closes a connection mid-response.
pub struct TrackedBody {
    inner: ProxyBody,
    /// `None` once a switched connection's tunnel holds it instead.
    _active: Option<Active>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Aborts a helper task of a connection when the connection ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts the connection in `portcullis_connections_open` while it lives.
struct OpenConnection(Arc<str>);

impl OpenConnection {
    fn new(listener: &Arc<str>) -> Self {
        metrics::global().connections_open(listener, 1);
        Self(Arc::clone(listener))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::global().connections_open(&self.0, -1);
    }
}
