//! A connection on a `tcp` listener: TLS terminated when the listener has it, else
//! the ClientHello's server name peeked when a route matches by it (TLS passed
//! through untouched); then the route, a connection to its upstream (with a PROXY
//! header first when the upstream asks for one), and the bytes relayed both ways
//! until both sides close or the route's idle timeout strikes.
//!
//! A connection takes its route (and with it the upstream) from the snapshot serving
//! when it arrives, and keeps them to its end: a reload applies to new connections,
//! and those established finish on their old route. It does not hold the snapshot
//! itself, only the route.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::peek;
use crate::app::App;
use crate::config::{ListenerLimits, ProxyProtocolVersion};
use crate::l4::{L4Route, proxy_protocol, relay::relay};
use crate::listeners::BoundListener;
use crate::metrics;
use crate::proxy::ConnInfo;
use crate::snapshot::Snapshot;
use crate::tls;

/// The relay's buffer each way, so 64 KiB a connection, idle or not: tokio's default
/// 8 KiB cost about twice the CPU per byte relayed (docs/performance.md).
const RELAY_BUFFER: usize = 32 * 1024;

/// Serves `tcp`, accepted on the `tcp` listener `listener` from `info.client`.
pub(super) async fn serve(
    app: &App,
    listener: &BoundListener,
    tcp: TcpStream,
    info: ConnInfo,
    limits: &ListenerLimits,
) {
    let snapshot = app.snapshot.load_full();
    if listener.tls {
        // Boxed: the handshake and the TLS stream are large.
        return Box::pin(serve_tls(snapshot, listener, tcp, info, limits)).await;
    }
    let sni = if snapshot.l4().wants_sni(&listener.name) {
        match peek::server_name(&tcp, limits.header_timeout).await {
            Ok(name) => name,
            Err(e) => {
                tracing::debug!(client = %info.client, listener = %listener.name, "{e}");
                return;
            }
        }
    } else {
        None
    };
    let Some(route) = route(snapshot, &info, sni.as_deref()) else {
        return;
    };
    forward(route, tcp, &info).await;
}

async fn serve_tls(
    snapshot: Arc<Snapshot>,
    listener: &BoundListener,
    tcp: TcpStream,
    info: ConnInfo,
    limits: &ListenerLimits,
) {
    let Some(acceptor) = snapshot.tls().acceptor(&listener.name) else {
        tracing::warn!(listener = %listener.name, "no TLS acceptor for this listener; closing");
        return;
    };
    match tls::accept(&acceptor, tcp, limits.header_timeout).await {
        Ok((stream, session)) => {
            let Some(route) = route(snapshot, &info, session.server_name.as_deref()) else {
                return;
            };
            forward(route, stream, &info).await;
        }
        Err(e) => tracing::debug!(client = %info.client, listener = %listener.name, "{e}"),
    }
}

/// The route of a connection asking for `sni`; the snapshot is let go of here.
fn route(snapshot: Arc<Snapshot>, info: &ConnInfo, sni: Option<&str>) -> Option<Arc<L4Route>> {
    let route = snapshot.l4().route(&info.listener, sni).cloned();
    if route.is_none() {
        tracing::debug!(
            client = %info.client,
            listener = %info.listener,
            sni = sni.unwrap_or_default(),
            "no tcp route takes this connection; closing"
        );
    }
    route
}

/// Connects to the route's upstream and relays until the connection ends.
async fn forward<I>(route: Arc<L4Route>, mut io: I, info: &ConnInfo)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let upstream = &route.upstream;
    let preamble = match upstream.config().proxy_protocol {
        None => Vec::new(),
        Some(ProxyProtocolVersion::V1) => proxy_protocol::v1(info.client, info.local),
        Some(ProxyProtocolVersion::V2) => proxy_protocol::v2(info.client, info.local),
    };
    let mut stream = match upstream.connect_stream(info.client, &preamble).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(
                target: "access",
                listener = %info.listener,
                route = %route.name,
                client = %info.client,
                upstream = %upstream.config().name,
                "tcp connection refused: {e}"
            );
            return;
        }
    };
    metrics::global().l4_opened(&route.name);
    let done = relay(&mut io, &mut stream.io, route.idle_timeout, RELAY_BUFFER).await;
    metrics::global().l4_closed(&route.name, done.reason, done.sent, done.received);
    tracing::info!(
        target: "access",
        listener = %info.listener,
        route = %route.name,
        client = %info.client,
        target = %stream.target,
        sent = done.sent,
        received = done.received,
        duration_ms = start.elapsed().as_millis() as u64,
        end = done.reason,
        "tcp"
    );
}
