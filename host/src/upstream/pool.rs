//! One worker's keep-alive connections to one upstream's targets.
//!
//! Why not hyper-util's pooled `Client`: it is built to be shared between threads, so
//! every request locks its pool, hashes the target into a map (SipHash), boxes its
//! futures, and spawns a task per request that puts the connection back once the
//! response body is done. Here the pool belongs to one worker thread (its lock is
//! never contended) and a target is an index. HTTP/1.1 connections are our own client's
//! ([`super::h1`]): one is taken for a request and comes back when its response body
//! has ended. HTTP/2 connections are hyper's, one shared per target.
//!
//! What it keeps of the pooled client's behaviour: HTTP/2 when a TLS target picks it
//! by ALPN, or always for an `h2c` upstream; `Host` set from the target when the
//! request has none; an idle connection the upstream closed is never used (an h2
//! request that a reused connection refused before sending goes out again on another
//! connection); idle connections are dropped after [`POOL_IDLE`]; a connection that
//! carried a protocol switch (`Upgrade`) is never pooled again: it is hyper's, and once
//! switched it belongs to its tunnel.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::h1::{self, Conn, H1Body, Home};
use super::limits::{ConnLimits, Overflow};
use crate::body::{BoxError, ProxyBody};
use crate::tls::connector::{ConnectError, UpstreamConnector};

/// How long an idle pooled connection is kept.
pub const POOL_IDLE: Duration = Duration::from_secs(60);

/// Idle HTTP/1 connections kept per target; more are closed once their response is
/// done (the next burst opens new ones).
const MAX_IDLE_PER_TARGET: usize = 1024;

/// Why a request could not be exchanged on a pooled connection.
#[derive(Debug)]
pub enum PoolError {
    /// No connection could be made.
    Connect(ConnectError),
    /// The connection failed (at the handshake, or during the exchange).
    Exchange(BoxError),
    /// A new connection was needed, and the circuit breaker's limit on connections or
    /// on requests waiting for one was reached.
    Overflow(Overflow),
}

/// A connection: ours for HTTP/1.1, hyper's request half for HTTP/2.
enum Sender {
    H1(Conn),
    H2(http2::SendRequest<ProxyBody>),
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The body of a response from a pooled connection.
pub enum PooledBody {
    /// From our HTTP/1.1 client.
    H1(H1Body),
    /// From hyper (HTTP/2, or an HTTP/1.1 request that asked to switch protocols).
    Hyper(Incoming),
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PooledBody::H1(_) => f.write_str("PooledBody::H1"),
            PooledBody::Hyper(b) => f.debug_tuple("PooledBody::Hyper").field(b).finish(),
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            PooledBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            PooledBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::H1(b) => b.is_end_stream(),
            PooledBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PooledBody::H1(b) => b.size_hint(),
            PooledBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// The pool: per target (by index in the upstream's config), its connections.
///
/// Only its worker uses it, so the lock is never contended; it is a lock at all only
/// because a filter's `http_call` future must be `Send`.
pub struct Pool {
    connector: UpstreamConnector,
    /// HTTP/2 with prior knowledge on every connection (`protocol: h2c`).
    h2c: bool,
    /// The circuit breaker's connection limits, shared with the other workers' pools.
    limits: Option<Arc<ConnLimits>>,
    targets: Mutex<Vec<Vec<Idle>>>,
}

// === impl Pool ===

impl Pool {
    /// An empty pool for `targets` targets, connecting through `connector`, speaking
    /// HTTP/2 with prior knowledge when `h2c`, opening connections within `limits`.
    pub fn new(
        connector: UpstreamConnector,
        targets: usize,
        h2c: bool,
        limits: Option<Arc<ConnLimits>>,
    ) -> Self {
        Self {
            connector,
            h2c,
            limits,
            targets: Mutex::new((0..targets).map(|_| Vec::new()).collect()),
        }
    }

    /// Sends `req` to target `index` (at `address`) on a pooled connection, or a new
    /// one, and returns the response head with its body still streaming.
    pub async fn request(
        self: &Arc<Self>,
        index: usize,
        address: &Authority,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let scheme = self.connector.scheme();
        set_host(&mut req, &scheme, address);
        loop {
            let (sender, reused) = match self.checkout(index) {
                Some(sender) => (sender, true),
                None => (self.connect(&scheme, address).await?, false),
            };
            match sender {
                // The connection of an upgrade is the tunnel's if the upstream
                // switches, and ends with its request otherwise: hyper's, not pooled.
                Sender::H1(conn) if req.headers().contains_key(header::UPGRADE) => {
                    origin_form(&mut req);
                    return upgrade(conn, req).await;
                }
                Sender::H1(conn) => {
                    origin_form(&mut req);
                    let home = Home {
                        pool: Arc::clone(self),
                        index,
                    };
                    return match h1::exchange(conn, req, home).await {
                        Ok(resp) => Ok(resp.map(PooledBody::H1)),
                        Err(e) => Err(PoolError::Exchange(e.into())),
                    };
                }
                Sender::H2(mut s) => {
                    absolute_form(&mut req, &scheme, address);
                    match s.try_send_request(req).await {
                        Ok(resp) => {
                            self.put_back_h2(index, s);
                            return Ok(resp.map(PooledBody::Hyper));
                        }
                        Err(mut e) => match e.take_message() {
                            // The connection closed (or was not ready) before the
                            // request was written: nothing reached the upstream, so it
                            // may go again. Only for reused connections, each taken
                            // out of the pool for good, so this ends.
                            Some(again) if reused => {
                                self.drop_h2(index);
                                req = again;
                            }
                            _ => return Err(PoolError::Exchange(e.into_error().into())),
                        },
                    }
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<Idle>>> {
        // A panic while holding it cannot leave the lists half-changed.
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A usable connection to target `index`, the most recently used first, dropping
    /// closed and expired ones on the way.
    fn checkout(&self, index: usize) -> Option<Sender> {
        let mut targets = self.lock();
        let idle = targets.get_mut(index)?;
        let now = Instant::now();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let Some(entry) = idle.get_mut(i) else { break };
            let expired = now.duration_since(entry.since) > POOL_IDLE;
            match &mut entry.sender {
                Sender::H1(conn) => {
                    if !expired && conn.is_usable() {
                        return Some(idle.swap_remove(i).sender);
                    }
                    idle.swap_remove(i);
                }
                Sender::H2(s) if s.is_closed() || expired => {
                    idle.swap_remove(i);
                }
                // HTTP/2 multiplexes: the connection stays in the pool for others.
                Sender::H2(s) if s.is_ready() => return Some(Sender::H2(s.clone())),
                // At its stream limit for now: left for later.
                Sender::H2(_) => {}
            }
        }
        None
    }

    /// Returns an HTTP/1.1 connection whose exchange is over.
    pub fn put_back_h1(&self, index: usize, conn: Conn) {
        let mut targets = self.lock();
        if let Some(idle) = targets.get_mut(index)
            && idle.len() < MAX_IDLE_PER_TARGET
        {
            idle.push(Idle {
                sender: Sender::H1(conn),
                since: Instant::now(),
            });
        }
    }

    /// Keeps the shared HTTP/2 connection `s` of target `index` (the pool already
    /// holds it, unless it is new).
    fn put_back_h2(&self, index: usize, s: http2::SendRequest<ProxyBody>) {
        let mut targets = self.lock();
        let Some(idle) = targets.get_mut(index) else {
            return;
        };
        let now = Instant::now();
        match idle.iter_mut().find(|e| matches!(e.sender, Sender::H2(_))) {
            Some(shared) => shared.since = now,
            None => idle.push(Idle {
                sender: Sender::H2(s),
                since: now,
            }),
        }
    }

    /// Forgets target `index`'s HTTP/2 connection, which refused a request unsent.
    fn drop_h2(&self, index: usize) {
        if let Some(idle) = self.lock().get_mut(index) {
            idle.retain(|e| !matches!(e.sender, Sender::H2(_)));
        }
    }

    /// Opens a connection to `address` (and for HTTP/2, starts its task).
    async fn connect(&self, scheme: &Scheme, address: &Authority) -> Result<Sender, PoolError> {
        // Held (pending) until the connection is set up, and (open) by the connection.
        let (_pending, open) = match &self.limits {
            Some(limits) => {
                let (pending, open) = limits.admit().map_err(PoolError::Overflow)?;
                (Some(pending), Some(open))
            }
            None => (None, None),
        };
        let uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(address.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| PoolError::Connect(ConnectError::Tcp(Box::new(e))))?;
        let mut connector = self.connector.clone();
        let io = tower_service::Service::call(&mut connector, uri)
            .await
            .map_err(PoolError::Connect)?;
        if self.h2c || io.connected().is_negotiated_h2() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| PoolError::Exchange(e.into()))?;
            tokio::spawn(async move {
                let _open = open;
                if let Err(e) = conn.await {
                    tracing::debug!("upstream HTTP/2 connection ended: {e}");
                }
            });
            Ok(Sender::H2(sender))
        } else {
            Ok(Sender::H1(Conn::new(io, open)))
        }
    }
}

/// Sends a request that asks to switch protocols on `conn` through hyper, whose
/// `OnUpgrade` hands the connection to the tunnel if the upstream switches.
async fn upgrade(conn: Conn, req: Request<ProxyBody>) -> Result<Response<PooledBody>, PoolError> {
    let (io, open) = conn.into_parts();
    let (mut sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| PoolError::Exchange(e.into()))?;
    tokio::spawn(async move {
        let _open = open;
        // On a `101` the connection hands its stream to the response's `OnUpgrade`
        // (the tunnel) and this task ends.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    match sender.send_request(req).await {
        Ok(resp) => Ok(resp.map(PooledBody::Hyper)),
        Err(e) => Err(PoolError::Exchange(e.into())),
    }
}

/// `Host` from the target when the request has none (an HTTP/1.0 client's), with the
/// port unless it is the scheme's default, as hyper-util's client does.
fn set_host(req: &mut Request<ProxyBody>, scheme: &Scheme, address: &Authority) {
    if req.headers().contains_key(header::HOST) {
        return;
    }
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let value = match address.port_u16() {
        Some(port) if port != default_port => HeaderValue::from_str(address.as_str()),
        _ => HeaderValue::from_str(address.host()),
    };
    if let Ok(value) = value {
        req.headers_mut().insert(header::HOST, value);
    }
}

/// HTTP/1 sends the path (or the authority, for `CONNECT`), never an absolute URI.
fn origin_form(req: &mut Request<ProxyBody>) {
    if req.method() == Method::CONNECT {
        return;
    }
    let uri = req.uri();
    if uri.scheme().is_none() && uri.authority().is_none() && uri.path_and_query().is_some() {
        return;
    }
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(pq);
}

/// HTTP/2 carries scheme and authority as pseudo-headers: the URI must be absolute.
fn absolute_form(req: &mut Request<ProxyBody>, scheme: &Scheme, address: &Authority) {
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(address.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}
