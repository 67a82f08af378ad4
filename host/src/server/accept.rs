//! A connection just accepted: its listener's settings as the serving snapshot has
//! them, the PROXY protocol header of a trusted peer, the per-IP limit, and then what
//! the listener serves: HTTP ([`conn`](super::conn)) or TCP ([`tcp`](super::tcp)).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::conn::{OpenConnection, serve_io, serve_tls};
use super::{peek, per_ip};
use crate::app::App;
use crate::config::{Http2Settings, ListenerLimits, ListenerProtocol, ProxyProtocolIn};
use crate::listeners::BoundListener;
use crate::metrics;
use crate::proxy::ConnInfo;
use crate::snapshot::Snapshot;

/// Serves a TCP connection accepted on `listener`: reads the PROXY header of a
/// trusted peer, takes the client's per-IP slot, then serves HTTP (terminating TLS
/// first when the listener has it, with the acceptor of the snapshot current at
/// accept time, so a reloaded certificate serves new connections while open ones
/// keep theirs) or, on a `tcp` listener, relays it.
pub async fn serve_tcp(
    app: Arc<App>,
    listener: Arc<BoundListener>,
    mut tcp: TcpStream,
    peer: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    // Read once per connection, so a reload that changes them applies to new
    // connections without rebinding.
    let Accepting {
        limits,
        http2,
        protocol,
        proxy_protocol,
    } = accepting(&app.snapshot.load(), &listener.name);
    let mut client = peer;
    if proxy_protocol.is_some_and(|pp| pp.trusts(peer.ip())) {
        // Boxed: only listeners behind another proxy pay for the header's read.
        match Box::pin(peek::proxy_header(&mut tcp, limits.header_timeout)).await {
            Ok(source) => client = source.unwrap_or(peer),
            Err(e) => {
                tracing::debug!(client = %peer, listener = %listener.name, "refused: {e}");
                metrics::global().client_limit(&listener.name, "proxy_protocol");
                return;
            }
        }
    }
    let max_per_ip = limits.max_connections_per_ip;
    let Some(_slot) = per_ip::Slot::take(listener.id, client.ip(), max_per_ip) else {
        tracing::debug!(client = %client, listener = %listener.name, "too many connections from this IP");
        metrics::global().client_limit(&listener.name, "max_connections_per_ip");
        return;
    };
    let local = tcp.local_addr().unwrap_or(listener.bound);
    let info = ConnInfo {
        client,
        local,
        listener: Arc::clone(&listener.name),
        tls_version: None,
        client_subject: None,
    };
    if protocol == ListenerProtocol::Tcp {
        let _open = OpenConnection::new(&listener.name);
        return Box::pin(super::tcp::serve(&app, &listener, tcp, info, &limits)).await;
    }
    if !listener.tls {
        return serve_io(app, &listener, tcp, info, limits, http2).await;
    }
    // Boxed: inline, the handshake's state and a TLS stream would make every
    // connection's future (plain TCP too) as large as theirs.
    Box::pin(serve_tls(app, listener, tcp, info, limits, http2)).await;
}

/// What a new connection needs of its listener's configuration.
struct Accepting {
    limits: ListenerLimits,
    http2: Http2Settings,
    protocol: ListenerProtocol,
    proxy_protocol: Option<ProxyProtocolIn>,
}

/// What listener `name` of `snapshot` says of new connections (defaults if it is gone).
fn accepting(snapshot: &Snapshot, name: &str) -> Accepting {
    match snapshot.config.listeners.iter().find(|l| l.name == name) {
        Some(l) => Accepting {
            limits: l.limits.clone(),
            http2: l.http2,
            protocol: l.protocol,
            proxy_protocol: l.proxy_protocol.clone(),
        },
        None => Accepting {
            limits: ListenerLimits::default(),
            http2: Http2Settings::default(),
            protocol: ListenerProtocol::Http,
            proxy_protocol: None,
        },
    }
}
