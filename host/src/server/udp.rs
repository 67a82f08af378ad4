//! A `udp` listener on one worker: datagrams from each client address form a session
//! with its own socket to a target of the route's upstream (picked by the balancer
//! when the session starts), so that answers find their way back; a session ends
//! after the route's idle timeout without a datagram either way.
//!
//! A session keeps the route it started on: a reload applies to new sessions. The
//! kernel keeps a client on one worker (`SO_REUSEPORT` hashes the address pair), so
//! a worker's sessions are its own, without a lock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::worker::stopping;
use crate::app::App;
use crate::l4::L4Route;
use crate::l4::relay::idle;
use crate::listeners::BoundListener;
use crate::metrics;
use crate::upstream::InFlight;

/// The largest datagram relayed (the most UDP over IPv4 can carry).
const MAX_DATAGRAM: usize = 65_535;

/// The most sessions one worker keeps per listener: each holds a socket, and a flood
/// of datagrams from forged addresses must not take every file descriptor. A new
/// client past it is dropped (and counted) until sessions idle out.
const MAX_SESSIONS: usize = 16_384;

/// One client's session.
struct Session {
    /// Connected to the session's target.
    upstream: Rc<UdpSocket>,
    /// When a datagram last went either way.
    last: Rc<Cell<Instant>>,
    /// Bytes from the client.
    sent: Rc<Cell<u64>>,
    route: Arc<L4Route>,
    /// Counts the session in flight to its target while it lives.
    _flight: InFlight,
}

type Sessions = Rc<RefCell<HashMap<SocketAddr, Session>>>;

/// Relays datagrams on `socket` until the listener is removed or the process stops.
pub(super) async fn serve(app: Arc<App>, listener: Arc<BoundListener>, socket: UdpSocket) {
    let socket = Rc::new(socket);
    let sessions: Sessions = Rc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut stop = listener.stopped();
    let mut shutdown = app.shutdown_signal();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            biased;
            () = stopping(&mut stop, &mut shutdown) => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors of earlier sends surface here; the socket goes on.
                    tracing::debug!(listener = %listener.name, "udp receive: {e}");
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let datagram = buf.get(..n).unwrap_or_default();
        let existing = sessions.borrow().get(&client).map(|s| {
            (
                Rc::clone(&s.upstream),
                Rc::clone(&s.last),
                Rc::clone(&s.sent),
            )
        });
        let (upstream, last, sent) = match existing {
            Some(s) => s,
            None => {
                if sessions.borrow().len() >= MAX_SESSIONS {
                    metrics::global().client_limit(&listener.name, "udp_sessions");
                    continue;
                }
                let Some(session) = open(&app, &listener, client).await else {
                    continue;
                };
                let handles = (
                    Rc::clone(&session.upstream),
                    Rc::clone(&session.last),
                    Rc::clone(&session.sent),
                );
                tasks.spawn_local(answers(
                    Rc::clone(&socket),
                    Rc::clone(&sessions),
                    client,
                    Rc::clone(&session.upstream),
                    Rc::clone(&session.last),
                    session.route.clone(),
                ));
                sessions.borrow_mut().insert(client, session);
                handles
            }
        };
        last.set(Instant::now());
        sent.set(sent.get() + n as u64);
        if let Err(e) = upstream.send(datagram).await {
            tracing::debug!(client = %client, "udp send upstream: {e}");
        }
    }
    // The sessions end with their listener.
    tasks.shutdown().await;
}

/// Starts the session of `client`: its route, a target, and a socket to it.
async fn open(app: &App, listener: &BoundListener, client: SocketAddr) -> Option<Session> {
    let route = {
        let snapshot = app.snapshot.load();
        snapshot.l4().route(&listener.name, None).cloned()
    };
    let Some(route) = route else {
        tracing::debug!(client = %client, listener = %listener.name, "no udp route takes this datagram");
        return None;
    };
    let (target, flight) = route.upstream.pick_for(client)?;
    let connected = async {
        let address = tokio::net::lookup_host(target.as_str())
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("the name resolves to no address"))?;
        let local: SocketAddr = if address.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(address).await?;
        Ok::<_, std::io::Error>(socket)
    };
    match connected.await {
        Ok(socket) => {
            metrics::global().l4_opened(&route.name);
            Some(Session {
                upstream: Rc::new(socket),
                last: Rc::new(Cell::new(Instant::now())),
                sent: Rc::new(Cell::new(0)),
                route,
                _flight: flight,
            })
        }
        Err(e) => {
            tracing::info!(target: "access", listener = %listener.name, route = %route.name, client = %client, %target, "udp session refused: {e}");
            metrics::global().upstream_error(&route.upstream.config().name, "connect");
            None
        }
    }
}

/// Sends the target's answers of one session back to its client until the session
/// has been idle for its route's timeout; then ends it.
async fn answers(
    socket: Rc<UdpSocket>,
    sessions: Sessions,
    client: SocketAddr,
    upstream: Rc<UdpSocket>,
    last: Rc<Cell<Instant>>,
    route: Arc<L4Route>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut received = 0u64;
    let reason = loop {
        tokio::select! {
            got = upstream.recv(&mut buf) => match got {
                Ok(n) => {
                    last.set(Instant::now());
                    received += n as u64;
                    let datagram = buf.get(..n).unwrap_or_default();
                    if let Err(e) = socket.send_to(datagram, client).await {
                        tracing::debug!(client = %client, "udp send to client: {e}");
                    }
                }
                // An ICMP "port unreachable" of an earlier send: the target is not
                // there (yet); the session waits on.
                Err(e) => tracing::debug!(client = %client, "udp receive from upstream: {e}"),
            },
            () = idle(&last, route.idle_timeout) => break "idle_timeout",
        }
    };
    let sent = sessions
        .borrow_mut()
        .remove(&client)
        .map_or(0, |s| s.sent.get());
    metrics::global().l4_closed(&route.name, reason, sent, received);
}
