//! HTTP/3 on a TLS listener with `http3: true`: one QUIC endpoint (quinn) per worker
//! on the worker's own `SO_REUSEPORT` UDP socket of the listener's port, HTTP/3
//! (hyperium's `h3`) over each connection, and every request handed to the same
//! driver as HTTP/1.1 and HTTP/2 ones ([`request`]).
//!
//! The TLS is the listener's own rustls config of the snapshot current when a
//! connection arrives (certificates chosen by SNI, client authentication), with ALPN
//! `h3` and no early data: a reload swaps certificates for new connections without
//! touching the endpoint. 0-RTT stays off, as early data can be replayed.
//!
//! The kernel hashes each client's address pair to one worker's socket, so a client
//! that changes address would reach another worker's endpoint, which does not know
//! its connection: active migration is refused in the transport parameters.

mod body;
mod request;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::conn::OpenConnection;
use super::per_ip;
use super::worker::{Tracker, stopping};
use crate::app::App;
use crate::config::ListenerLimits;
use crate::listeners::BoundListener;
use crate::metrics;
use crate::proxy::ConnInfo;

/// ALPN id of HTTP/3.
const ALPN_H3: &[u8] = b"h3";

/// How long a drained connection waits for its client to close it after the last
/// response, before closing it itself: closing at once could discard the end of a
/// response not yet acknowledged.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// `H3_NO_ERROR`: the application error code of a graceful close.
const H3_NO_ERROR: u32 = 0x100;

/// Serves HTTP/3 on this worker's UDP socket of `listener` until the listener is
/// removed or the process stops; then refuses new connections and lets the open
/// ones drain (GOAWAY, their requests finish).
pub(super) async fn serve(
    app: Arc<App>,
    listener: Arc<BoundListener>,
    socket: std::net::UdpSocket,
    tracker: Rc<Tracker>,
    span: tracing::Span,
) {
    let mut configs = Configs::default();
    let Some((config, _)) = configs.current(&app, &listener.name) else {
        tracing::warn!(listener = %listener.name, "no TLS for HTTP/3 on this listener");
        return;
    };
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some((*config).clone()),
        socket,
        Arc::new(quinn::TokioRuntime),
    );
    let endpoint = match endpoint {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(listener = %listener.name, "cannot serve HTTP/3: {e}");
            return;
        }
    };
    let mut stop = listener.stopped();
    let mut shutdown = app.shutdown_signal();
    loop {
        tokio::select! {
            biased;
            () = stopping(&mut stop, &mut shutdown) => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Some((config, limits)) = configs.current(&app, &listener.name) else {
                    incoming.refuse();
                    continue;
                };
                let track = tracker.enter();
                let task = connection(Arc::clone(&app), Arc::clone(&listener), incoming, config, limits);
                tokio::task::spawn_local(
                    async move {
                        task.await;
                        drop(track);
                    }
                    .instrument(span.clone()),
                );
            }
        }
    }
    if listener.is_handed_over() {
        // The successor reads this socket now, and datagrams of either process's
        // connections may reach either: this endpoint would answer the successor's
        // with stateless resets while draining its own. Its connections close at once
        // instead, and their clients reconnect (to the successor).
        endpoint.close(H3_NO_ERROR.into(), b"upgrade");
        return;
    }
    // New connections are refused from now on; the open ones drain on their own, and
    // the endpoint lives until their close has gone out.
    endpoint.set_server_config(None);
    let _track = tracker.enter();
    endpoint.wait_idle().await;
}

/// Serves one QUIC connection: the handshake (within the header timeout), then its
/// requests, each on a task of its own, until the client closes it, it idles out,
/// or the listener/process stops (GOAWAY, then the open requests finish).
async fn connection(
    app: Arc<App>,
    listener: Arc<BoundListener>,
    incoming: quinn::Incoming,
    config: Arc<quinn::ServerConfig>,
    limits: Rc<ListenerLimits>,
) {
    let client = incoming.remote_address();
    let Some(_slot) = per_ip::Slot::take(listener.id, client.ip(), limits.max_connections_per_ip)
    else {
        tracing::debug!(%client, listener = %listener.name, "too many connections from this IP");
        metrics::global().client_limit(&listener.name, "max_connections_per_ip");
        incoming.refuse();
        return;
    };
    let _open = OpenConnection::new(&listener.name);
    let connecting = match incoming.accept_with(config) {
        Ok(c) => c,
        Err(e) => return tracing::debug!(%client, "QUIC handshake failed: {e}"),
    };
    let conn = match tokio::time::timeout(limits.header_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return tracing::debug!(%client, "QUIC handshake failed: {e}"),
        Err(_) => return tracing::debug!(%client, "QUIC handshake timed out"),
    };
    let info = Rc::new(ConnInfo {
        client,
        local: SocketAddr::new(
            conn.local_ip().unwrap_or(listener.bound.ip()),
            listener.bound.port(),
        ),
        listener: Arc::clone(&listener.name),
        // QUIC is always TLS 1.3.
        tls_version: Some("TLSv1.3"),
        client_subject: client_subject(&conn),
    });
    let max_field_section = u64::try_from(limits.max_header_bytes).unwrap_or(u64::MAX);
    let built = h3::server::builder()
        .max_field_section_size(max_field_section)
        .build(h3_quinn::Connection::new(conn.clone()))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(e) => return tracing::debug!(%client, "HTTP/3 connection failed: {e}"),
    };
    let mut requests = JoinSet::new();
    let mut served: u64 = 0;
    let mut stop = listener.stopped();
    let mut shutdown = app.shutdown_signal();
    let drain = loop {
        tokio::select! {
            biased;
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let task = request::serve(Arc::clone(&app), Rc::clone(&info), resolver, Rc::clone(&limits));
                    requests.spawn_local(task);
                    served += 1;
                    if limits.max_requests_per_connection.is_some_and(|max| served >= max) {
                        metrics::global().client_limit(&listener.name, "max_requests_per_connection");
                        break true;
                    }
                }
                // The client said GOAWAY and its requests are done.
                Ok(None) => break false,
                Err(e) => {
                    // A protocol error (the client's garbage) closes this connection
                    // only; an idle timeout ends here too.
                    tracing::debug!(%client, "HTTP/3 connection ended: {e}");
                    break false;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            () = stopping(&mut stop, &mut shutdown) => break true,
        }
    };
    if drain {
        // GOAWAY naming the next request stream: every request accepted so far is
        // served, none after it is.
        if let Err(e) = h3.shutdown(1).await {
            tracing::debug!(%client, "HTTP/3 GOAWAY failed: {e}");
        }
    }
    while requests.join_next().await.is_some() {}
    if drain {
        let _ = tokio::time::timeout(CLOSE_GRACE, conn.closed()).await;
    }
    conn.close(H3_NO_ERROR.into(), b"");
}

/// The subject of the client certificate the handshake verified, if one was sent.
fn client_subject(conn: &quinn::Connection) -> Option<Arc<str>> {
    let identity = conn.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    chain.first().and_then(crate::tls::info::subject)
}

/// This worker's QUIC server config of one listener, rebuilt when a reload changes the
/// listener's TLS (a new `Arc`) or limits, and otherwise shared by every connection.
#[derive(Default)]
struct Configs {
    built: Option<Built>,
}

struct Built {
    tls: Arc<rustls::ServerConfig>,
    limits: Rc<ListenerLimits>,
    quic: Arc<quinn::ServerConfig>,
}

impl Configs {
    /// The QUIC config and limits of `listener` in the serving snapshot; `None` when
    /// it has no TLS there (it is being removed) or the config cannot be built.
    fn current(
        &mut self,
        app: &App,
        listener: &str,
    ) -> Option<(Arc<quinn::ServerConfig>, Rc<ListenerLimits>)> {
        let snapshot = app.snapshot.load();
        let tls = &snapshot.tls().listener(listener)?.config;
        let limits = &snapshot
            .config
            .listeners
            .iter()
            .find(|l| l.name == listener)?
            .limits;
        if let Some(b) = &self.built
            && Arc::ptr_eq(&b.tls, tls)
            && *b.limits == *limits
        {
            return Some((Arc::clone(&b.quic), Rc::clone(&b.limits)));
        }
        let quic = match server_config(tls, limits) {
            Ok(quic) => Arc::new(quic),
            Err(e) => {
                tracing::error!(listener, "cannot serve HTTP/3: {e}");
                return None;
            }
        };
        let built = self.built.insert(Built {
            tls: Arc::clone(tls),
            limits: Rc::new(limits.clone()),
            quic,
        });
        Some((Arc::clone(&built.quic), Rc::clone(&built.limits)))
    }
}

/// The QUIC server config of a listener: its rustls config with ALPN `h3` and no
/// early data, and transport limits from the listener's: concurrent request streams
/// (`max_concurrent_streams`) and the idle timeout (`idle_timeout`).
fn server_config(
    tls: &rustls::ServerConfig,
    limits: &ListenerLimits,
) -> Result<quinn::ServerConfig, String> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![ALPN_H3.to_vec()];
    // No 0-RTT: early data can be replayed by an attacker.
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(Arc::new(tls)).map_err(|e| e.to_string())?;
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout).map_err(|e| e.to_string())?;
    transport
        .max_concurrent_bidi_streams(limits.max_concurrent_streams.into())
        .max_idle_timeout(Some(idle));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config
        .transport_config(Arc::new(transport))
        .migration(false);
    Ok(config)
}
