//! One client connection: our own HTTP/1.1 ([`h1`](super::h1)), or hyper (HTTP/2
//! prior knowledge, and the HTTP/1 that `h1` hands over) over the
//! [`guard`](super::guard); a watchdog enforcing the header-read and idle timeouts,
//! and graceful shutdown when the listener is removed or the process stops.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::guard::{Guard, ParkSlot};
use super::h1::{self, Wire};
use super::hyper_conn::{builder, service};
use super::request_body::{PacedBody, Verdict};
use super::state::{self, Active, ConnState, Reject, Wake};
use super::tunnel::{self, Tunnels, WorkerLocal};
use super::worker::stopping;
use crate::access_log::{self, AccessRecord};
use crate::app::App;
use crate::body::ProxyBody;
use crate::config::{Http2Settings, ListenerLimits};
use crate::listeners::BoundListener;
use crate::metrics;
use crate::proxy::{self, ConnInfo};
use crate::tls;
use crate::tls::issued::ALPN_ACME_TLS;

/// How much of a parked connection's next bytes is read at once (the guard reads the
/// rest): most request heads.
const PARKED_READ: usize = 4096;

/// Terminates TLS on `tcp`, then serves the plaintext side.
pub(super) async fn serve_tls(
    app: Arc<App>,
    listener: Arc<BoundListener>,
    tcp: TcpStream,
    mut info: ConnInfo,
    limits: ListenerLimits,
    http2: Http2Settings,
) {
    let acceptor = app.snapshot.load().tls().acceptor(&listener.name);
    let timeout = limits.header_timeout;
    let Some(acceptor) = acceptor else {
        tracing::warn!(listener = %listener.name, "no TLS acceptor for this listener; closing");
        return;
    };
    // The handshake counts against the header timeout: a client that opens a
    // connection and never finishes it is closed like a slow request head.
    match tls::accept(&acceptor, tcp, timeout).await {
        Ok((stream, session)) if session.alpn.as_deref() == Some(ALPN_ACME_TLS) => {
            // A TLS-ALPN-01 validation: the handshake was the answer (RFC 8737).
            tracing::debug!(client = %info.client, listener = %listener.name, "acme-tls/1 validation handshake");
            drop(stream);
        }
        Ok((stream, session)) => {
            info.tls_version = session.version;
            info.client_subject = session.client_subject;
            serve_io(app, &listener, stream, info, limits, http2).await;
        }
        Err(e) => tracing::debug!(client = %info.client, listener = %listener.name, "{e}"),
    }
}

/// Serves HTTP on `io` (a TCP stream, or the plaintext side of a TLS stream) under the
/// listener's `limits` until the client closes, a limit closes it, or the
/// listener/process stops and it drains. `http2` is what an HTTP/2 client is told
/// in SETTINGS.
///
/// HTTP/1.1 is served by [`h1::serve`] until it meets what hyper serves instead
/// (see [`h1`]), when the rest of the connection goes to hyper with the bytes read
/// and not consumed, through a guard resumed on them.
///
/// An HTTP/1 connection that rests between requests for [`state::PARK_AFTER`] parks:
/// the connection's future (the wire's buffers, or hyper's connection and the guard)
/// is dropped, and the stream alone is kept until the client sends again, when a new
/// `h1` connection resumes it. Nothing is lost then that the next request needs: the
/// connection is waiting for a head, with every byte read parsed and every byte
/// written flushed (see [`ConnState::may_park`]).
pub async fn serve_io<I>(
    app: Arc<App>,
    listener: &BoundListener,
    io: I,
    info: ConnInfo,
    limits: ListenerLimits,
    http2: Http2Settings,
) where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let _open = OpenConnection::new(&listener.name);
    let state = Rc::new(ConnState::new(limits));
    let info = Rc::new(info);
    let tunnels = Rc::new(Tunnels::default());
    // The stream lives in the slot whenever no guard holds it, not in this future:
    // a TLS stream is a kilobyte or more, and a local here would cost it twice.
    let park: ParkSlot<I> = Rc::new(RefCell::new(Some(io)));
    // The bytes that woke a parked connection (`None` for a new one).
    let mut input: Option<BytesMut> = None;
    let builder = builder(state.limits(), http2);
    let (watch, mut stopped) = watch_stop(&app, listener);
    let mut stop_watch = Some(watch);
    let mut draining = false;
    let mut goaway = false;
    let mut resumed = false;
    // Whether hyper serves the connection (until it parks) rather than `h1`.
    let mut hyper = false;
    let watchdog = state::watchdog(&state);
    tokio::pin!(watchdog);
    'connection: loop {
        let Some(io) = park.take() else {
            break;
        };
        if hyper {
            let guard = match input.take() {
                None => Guard::new(io, Rc::clone(&state), Rc::clone(&park)),
                Some(input) => Guard::resume(io, Rc::clone(&state), Rc::clone(&park), input),
            };
            // A connection that has shown an HTTP/1 head is HTTP/1: no new protocol
            // detection.
            let h1_only;
            let builder = if resumed {
                h1_only = builder.clone().http1_only();
                &h1_only
            } else {
                &builder
            };
            let service = service(&app, &info, &state, &tunnels, listener.alt_svc.as_ref());
            let io = TokioIo::new(WorkerLocal(guard));
            let mut conn = Box::pin(builder.serve_connection_with_upgrades(io, service));
            loop {
                tokio::select! {
                    // The connection first: it is what wakes the task nearly every time.
                    biased;
                    res = conn.as_mut() => {
                        if let Err(e) = res {
                            tracing::debug!("connection ended: {e}");
                        }
                        break 'connection;
                    }
                    _ = &mut stopped, if !draining => {
                        draining = true;
                        state.start_draining();
                        // HTTP/2 (and anything else hyper no longer parses as HTTP/1) is
                        // told with a GOAWAY, after which hyper lets the open streams
                        // finish. HTTP/1 is not: hyper would close an idle connection on
                        // which the client may be sending its next request right now. Its
                        // responses ask the client to close instead, and the watchdog
                        // closes it once idle.
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
                    wake = &mut watchdog => {
                        watchdog.set(state::watchdog(&state));
                        match rest(wake, &state, &listener.name) {
                            Some(Rest::Close) => break 'connection,
                            Some(Rest::Park) => break,
                            None => {}
                        }
                    }
                }
            }
            // Parked: hyper goes, and the guard in it leaves the stream behind.
            state.set_parked(true);
            drop(conn);
        } else {
            let wire = Wire::new(
                io,
                input.take().unwrap_or_default(),
                Rc::clone(&state),
                Rc::clone(&park),
            );
            let ctx = h1::Ctx {
                app: &app,
                info: &info,
                state: &state,
                tunnels: &tunnels,
                alt_svc: listener.alt_svc.as_ref(),
            };
            // On the heap: the connection's future stays small while it is parked.
            let mut conn = Box::pin(h1::serve(ctx, Rc::new(RefCell::new(wire))));
            loop {
                tokio::select! {
                    biased;
                    ended = conn.as_mut() => match ended {
                        h1::Ended::Closed => break 'connection,
                        h1::Ended::Hyper(rest) => {
                            // Hyper serves the rest of the connection.
                            input = Some(rest);
                            hyper = true;
                            resumed |= state.requests() > 0;
                            continue 'connection;
                        }
                    },
                    _ = &mut stopped, if !draining => {
                        // The responses from now on ask the client to close, and the
                        // watchdog closes the connection once idle.
                        draining = true;
                        state.start_draining();
                        watchdog.set(state::watchdog(&state));
                    }
                    wake = &mut watchdog => {
                        watchdog.set(state::watchdog(&state));
                        match rest(wake, &state, &listener.name) {
                            Some(Rest::Close) => break 'connection,
                            Some(Rest::Park) => break,
                            None => {}
                        }
                    }
                }
            }
            // Parked: the wire goes, and leaves the stream behind.
            state.set_parked(true);
            drop(conn);
        }

        // So does the stop watch's task: with no wake-up to spare, the signals are
        // watched here.
        tracing::trace!("connection parked");
        stop_watch = None;
        if park.borrow().is_none() {
            break;
        }
        let mut stop = listener.stopped();
        let mut shutdown = app.shutdown_signal();
        let bytes = loop {
            tokio::select! {
                biased;
                read = read_some(&park) => match read {
                    Ok(bytes) if !bytes.is_empty() => break bytes,
                    Ok(_) => {
                        // The client closed its idle connection: close ours, as hyper
                        // would have.
                        let _ = shutdown_parked(&park).await;
                        break 'connection;
                    }
                    Err(_) => break 'connection,
                },
                () = stopping(&mut stop, &mut shutdown), if !draining => {
                    draining = true;
                    state.start_draining();
                    watchdog.set(state::watchdog(&state));
                }
                wake = &mut watchdog => {
                    watchdog.set(state::watchdog(&state));
                    if let Wake::Close(why) = wake {
                        closing(why, &listener.name);
                        if let Some(io) = park.take().filter(|_| state.closes_lingering()) {
                            state.linger(Box::new(io));
                        }
                        break 'connection;
                    }
                }
            }
        };
        state.set_parked(false);
        input = Some(bytes);
        resumed = true;
        hyper = false;
        if !draining {
            let (watch, rx) = watch_stop(&app, listener);
            (stop_watch, stopped) = (Some(watch), rx);
        }
        // Parked, it napped as long as the timeouts allow: from now on it must look
        // within PARK_AFTER again.
        watchdog.set(state::watchdog(&state));
    }
    drop(stop_watch);
    // A switched connection lives on in its tunnel (holding the stream, which a
    // lingering close needs after it).
    tunnels.finished().await;
    if let Some(io) = state.take_linger() {
        state::linger(io).await;
    }
}

/// Shuts down the write side of a parked connection's stream.
fn shutdown_parked<I: AsyncWrite + Unpin>(
    park: &ParkSlot<I>,
) -> impl std::future::Future<Output = std::io::Result<()>> + '_ {
    std::future::poll_fn(move |cx| match park.borrow_mut().as_mut() {
        Some(io) => Pin::new(io).poll_shutdown(cx),
        None => Poll::Ready(Ok(())),
    })
}

/// Starts a task that watches the listener's stop and the process's shutdown, and
/// completes the receiver it returns when either comes (or the task is aborted).
///
/// A task of its own: polled in the connection's select, two watch receivers (and a
/// nested select) were re-polled at every wake-up of the connection, twice per
/// request; a oneshot receiver costs a few loads.
fn watch_stop(app: &App, listener: &BoundListener) -> (AbortOnDrop, oneshot::Receiver<()>) {
    let mut stop = listener.stopped();
    let mut shutdown = app.shutdown_signal();
    let (stop_tx, stopped) = oneshot::channel::<()>();
    let task = AbortOnDrop(tokio::task::spawn_local(async move {
        stopping(&mut stop, &mut shutdown).await;
        let _ = stop_tx.send(());
    }));
    (task, stopped)
}

/// What a watchdog's wake-up does to a served connection.
enum Rest {
    Close,
    Park,
}

/// What `wake` does to the connection: closes it (a limit struck, logged and counted
/// here), parks it if it may, or nothing.
fn rest(wake: Wake, state: &ConnState, listener: &str) -> Option<Rest> {
    match wake {
        Wake::Close(why) => {
            closing(why, listener);
            Some(Rest::Close)
        }
        Wake::Park if state.may_park() => Some(Rest::Park),
        Wake::Park => None,
    }
}

/// Logs and counts a connection the watchdog closes.
fn closing(why: state::Expired, listener: &str) {
    tracing::debug!("closing connection: {why}");
    if let Some(limit) = why.limit() {
        metrics::global().client_limit(listener, limit);
    }
}

/// The bytes a parked connection's client sends next (empty at end of stream). Read
/// through a buffer on the stack, so that nothing is held while the client is idle.
fn read_some<I: AsyncRead + Unpin>(
    park: &ParkSlot<I>,
) -> impl std::future::Future<Output = std::io::Result<BytesMut>> + '_ {
    std::future::poll_fn(move |cx| {
        let mut slot = park.borrow_mut();
        let Some(io) = slot.as_mut() else {
            return Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()));
        };
        let mut chunk = [0u8; PARKED_READ];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(BytesMut::from(buf.filled()))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Serves one request: answers it here if the guard rejected its head, else pins the
/// current snapshot and hands it to the proxy driver.
pub(super) async fn handle<B>(
    app: Arc<App>,
    info: Rc<ConnInfo>,
    state: Rc<ConnState>,
    tunnels: &Tunnels,
    mut req: http::Request<B>,
) -> http::Response<TrackedBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<crate::body::BoxError>,
{
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
        let ended = Instant::now();
        access_log::record(&AccessRecord {
            listener: &info.listener,
            method: req.method().as_str(),
            host: "",
            path: "",
            status: resp.status().as_u16(),
            route: "",
            upstream: "",
            duration: ended.duration_since(started),
            ended,
            client: &info.client.to_string(),
            trace_id: None,
        });
        if access_log::detailed() {
            let line = AccessLine::of(&req, &info);
            let mut line = line.into_line(&info, req.method(), resp.status(), started);
            line.total = Some(line.duration);
            line.write();
        }
        return resp.map(|body| TrackedBody {
            inner: body,
            _active: Some(active),
            line: None,
        });
    }

    // What the access log needs of the request, before the driver takes it; only
    // formatted when access lines are written (the metrics need none of it).
    let method = req.method().clone();
    let version = req.version();
    let line = access_log::enabled().then(|| AccessLine::of(&req, &info));

    if info.tls_version.is_none()
        && let Some(resp) = super::challenge::answer(&req)
    {
        return resp.map(|body| TrackedBody {
            inner: body,
            _active: Some(active),
            line: None,
        });
    }

    let snapshot = app.snapshot.load_full();
    let asked = tunnel::Asked::take(&mut req);
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
    let switched = match tunnel::settle(asked, &mut resp, &outcome, &mut active) {
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
    // With `access_log:`, the line waits for the response's end (bytes sent, total).
    let line = line
        .record(&info, &method, resp.status(), &outcome, started)
        .map(|line| {
            Box::new(PendingLine {
                line,
                started,
                sent: 0,
            })
        });
    if grpc {
        // After the access line, which keeps the error's HTTP status.
        proxy::answer_errors_as_grpc(&mut resp);
    }
    resp.map(|body| TrackedBody {
        inner: body,
        _active: active,
        line,
    })
}

/// The parts of an access line that must be copied out of the request before the
/// driver takes it.
#[derive(Default)]
pub(super) struct AccessLine {
    host: String,
    path: String,
    client: String,
    request_bytes: Option<u64>,
}

impl AccessLine {
    /// Copies what the line needs of `req`.
    pub(super) fn of<B>(req: &http::Request<B>, info: &ConnInfo) -> Self {
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
            request_bytes: crate::body::declared_length(req.headers()),
        }
    }

    /// Writes the access line (and counts the request in the metrics) of a request
    /// the proxy answered with `status`; with `access_log:` configured, returns the
    /// line instead, for the caller to write once the response is sent.
    pub(super) fn record(
        self,
        info: &ConnInfo,
        method: &http::Method,
        status: http::StatusCode,
        outcome: &proxy::Outcome,
        started: Instant,
    ) -> Option<access_log::Line> {
        let ended = Instant::now();
        let upstream = outcome.target.as_ref().or(outcome.upstream.as_ref());
        access_log::record(&AccessRecord {
            listener: &info.listener,
            method: method.as_str(),
            host: &self.host,
            path: &self.path,
            status: status.as_u16(),
            route: outcome.route.as_deref().unwrap_or_default(),
            upstream: upstream.map(|u| &**u).unwrap_or_default(),
            duration: ended.duration_since(started),
            ended,
            client: &self.client,
            trace_id: outcome.trace_id,
        });
        if !access_log::detailed() {
            return None;
        }
        let mut line = self.into_line(info, method, status, started);
        line.duration = ended.duration_since(started);
        line.route.clone_from(&outcome.route);
        line.upstream = upstream.cloned();
        line.trace_id = outcome.trace_id;
        line.filters.clone_from(&outcome.filters);
        line.filters_time = outcome.timing.map(|t| t.filters);
        line.upstream_time = outcome.timing.map(|t| t.upstream);
        Some(line)
    }

    /// The configured access log's line of what was copied, for a request answered
    /// with `status`.
    pub(super) fn into_line(
        self,
        info: &ConnInfo,
        method: &http::Method,
        status: http::StatusCode,
        started: Instant,
    ) -> access_log::Line {
        access_log::Line {
            listener: info.listener.clone(),
            client: self.client,
            method: method.to_string(),
            host: self.host,
            path: self.path,
            status: status.as_u16(),
            request_bytes: self.request_bytes,
            duration: started.elapsed(),
            ..Default::default()
        }
    }
}

/// An access line waiting for its response to be sent: the body counts the bytes it
/// passes, and writes the line when it is dropped (sent, or given up).
pub(super) struct PendingLine {
    line: access_log::Line,
    started: Instant,
    sent: u64,
}

/// The response to a request whose head the guard rejected; always closes.
pub(super) fn reject_response(reject: Reject) -> http::Response<ProxyBody> {
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

/// A response body that keeps its request counted as in flight until it has been sent,
/// so that the idle timeout never closes a connection mid-response.
pub struct TrackedBody {
    inner: ProxyBody,
    /// `None` once a switched connection's tunnel holds it instead.
    _active: Option<Active>,
    /// The configured access log's line, written when the body is done with.
    line: Option<Box<PendingLine>>,
}

#[cfg(test)]
impl TrackedBody {
    /// A response body counted nowhere, for tests of what writes it.
    pub(crate) fn untracked(inner: ProxyBody) -> Self {
        Self {
            inner,
            _active: None,
            line: None,
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(pending) = self.line.take() {
            let PendingLine {
                mut line,
                started,
                sent,
            } = *pending;
            line.bytes_sent = Some(sent);
            line.total = Some(started.elapsed());
            line.write();
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Some(pending), Poll::Ready(Some(Ok(frame)))) = (&mut self.line, &polled)
            && let Some(data) = frame.data_ref()
        {
            pending.sent += data.len() as u64;
        }
        polled
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
pub(super) struct OpenConnection(Arc<str>);

impl OpenConnection {
    pub(super) fn new(listener: &Arc<str>) -> Self {
        metrics::global().connections_open(listener, 1);
        Self(Arc::clone(listener))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::global().connections_open(&self.0, -1);
    }
}
