//! One worker's keep-alive connections to one upstream's targets, on hyper's
//! connection-level client.
//!
//! Why not hyper-util's pooled `Client`: it is built to be shared between threads, so
//! every request locks its pool, hashes the target into a map (SipHash), boxes its
//! futures, and spawns a task per request that puts the connection back once the
//! response body is done. Here the pool belongs to one worker thread (its lock is
//! never contended), a target is an index, and a connection goes back to the pool as soon as its
//! response head is in: it is taken again only once it says it is ready (its previous
//! response body finished). The callgrind profile of the no-filter load put the
//! pooled client at ~9k instructions a request; this path costs a fraction of that.
//!
//! What it keeps of the pooled client's behaviour: HTTP/2 when a TLS target picks it
//! by ALPN, or always for an `h2c` upstream (one shared connection per target); `Host` set from the target when the
//! request has none; a request that a reused connection refused before sending
//! (closed while idle) goes out again on another connection; idle connections are
//! dropped after [`POOL_IDLE`]; a connection that carried a protocol switch
//! (`Upgrade`) is never pooled again: once switched it belongs to its tunnel.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::limits::{ConnLimits, Overflow};
use crate::body::ProxyBody;
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
    Exchange(hyper::Error),
    /// A new connection was needed, and the circuit breaker's limit on connections or
    /// on requests waiting for one was reached.
    Overflow(Overflow),
}

/// A connection's request half.
enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

struct Idle {
    sender: Sender,
    since: Instant,
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
        &self,
        index: usize,
        address: &Authority,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, PoolError> {
        let scheme = self.connector.scheme();
        set_host(&mut req, &scheme, address);
        // The connection of an upgrade is the tunnel's if the upstream switches, and
        // ends with its request otherwise: either way it is not pooled again.
        let upgrade = req.headers().contains_key(header::UPGRADE);
        loop {
            let (mut sender, reused) = match self.checkout(index) {
                Some(sender) => (sender, true),
                None => (self.connect(&scheme, address).await?, false),
            };
            let sent = match &mut sender {
                Sender::H1(s) => {
                    origin_form(&mut req);
                    s.try_send_request(req).await
                }
                Sender::H2(s) => {
                    absolute_form(&mut req, &scheme, address);
                    s.try_send_request(req).await
                }
            };
            match sent {
                Ok(resp) => {
                    if !upgrade || matches!(sender, Sender::H2(_)) {
                        self.put_back(index, sender);
                    }
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // The connection closed (or was not ready) before the request was
                    // written: nothing reached the upstream, so it may go again. Only
                    // for reused connections, each taken out of the pool for good, so
                    // this ends.
                    Some(again) if reused => req = again,
                    _ => return Err(PoolError::Exchange(e.into_error())),
                },
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<Idle>>> {
        // A panic while holding it cannot leave the lists half-changed.
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ready connection to target `index`, dropping closed and expired ones.
    fn checkout(&self, index: usize) -> Option<Sender> {
        let mut targets = self.lock();
        let idle = targets.get_mut(index)?;
        let now = Instant::now();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let Some(entry) = idle.get(i) else { break };
            let (closed, ready, h2) = match &entry.sender {
                Sender::H1(s) => (s.is_closed(), s.is_ready(), None),
                Sender::H2(s) => (s.is_closed(), s.is_ready(), Some(s)),
            };
            let expired = ready && now.duration_since(entry.since) > POOL_IDLE;
            if !closed && !expired && ready {
                // HTTP/2 multiplexes: the connection stays in the pool for others.
                if let Some(s) = h2 {
                    return Some(Sender::H2(s.clone()));
                }
                return Some(idle.swap_remove(i).sender);
            }
            if closed || expired {
                idle.swap_remove(i);
            }
            // Otherwise still streaming its last response body: left for later.
        }
        None
    }

    /// Returns a connection whose response head has arrived.
    fn put_back(&self, index: usize, sender: Sender) {
        let mut targets = self.lock();
        let Some(idle) = targets.get_mut(index) else {
            return;
        };
        match sender {
            // The pool already holds the shared connection it was cloned from, unless
            // this one is new.
            Sender::H2(s) => {
                let now = Instant::now();
                match idle.iter_mut().find(|e| matches!(e.sender, Sender::H2(_))) {
                    Some(shared) => shared.since = now,
                    None => idle.push(Idle {
                        sender: Sender::H2(s),
                        since: now,
                    }),
                }
            }
            Sender::H1(s) if idle.len() < MAX_IDLE_PER_TARGET => idle.push(Idle {
                sender: Sender::H1(s),
                since: Instant::now(),
            }),
            // Dropping the request half lets the connection finish its response, then
            // close.
            Sender::H1(_) => {}
        }
    }

    /// Opens a connection to `address` and starts its task.
    async fn connect(&self, scheme: &Scheme, address: &Authority) -> Result<Sender, PoolError> {
        // Held (pending) until the connection is set up, and (open) by its task.
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
                .map_err(PoolError::Exchange)?;
            tokio::spawn(async move {
                let _open = open;
                if let Err(e) = conn.await {
                    tracing::debug!("upstream HTTP/2 connection ended: {e}");
                }
            });
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(PoolError::Exchange)?;
            tokio::spawn(async move {
                let _open = open;
                // On a `101` the connection hands its stream to the response's
                // `OnUpgrade` (the tunnel) and this task ends.
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!("upstream connection ended: {e}");
                }
            });
            Ok(Sender::H1(sender))
        }
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
