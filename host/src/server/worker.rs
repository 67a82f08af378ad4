//! One worker thread: a current-thread runtime and a `LocalSet`, accepting on its own
//! socket of every proxy listener, picking up listeners a reload adds.

use std::cell::Cell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::LocalSet;
use tracing::Instrument;

use super::accept;
use crate::app::App;
use crate::listeners::{BoundListener, Kind};
use crate::snapshot::Snapshot;

/// Runs worker `index` until the process shuts down and its connections have drained.
pub(super) fn run(app: &Arc<App>, index: usize) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = index, "cannot start the worker's runtime: {e}");
            return;
        }
    };
    let local = LocalSet::new();
    // Every log line of the worker's connections says which worker it came from.
    let span = tracing::info_span!("worker", index);
    local.block_on(&rt, serve(Arc::clone(app), index, span));
}

async fn serve(app: Arc<App>, index: usize, span: tracing::Span) {
    let tracker = Rc::new(Tracker::default());
    let mut table_rx = app.listeners();
    let mut shutdown = app.shutdown_signal();
    let mut running: HashSet<u64> = HashSet::new();
    let mut first = true;
    loop {
        // A generation went live (the start, or a reload: each sends a new listener
        // table after storing its snapshot).
        tokio::task::spawn_local(start_tickers(app.snapshot.load_full(), index));
        let table = Arc::clone(&table_rx.borrow_and_update());
        running.retain(|id| table.listeners.iter().any(|l| l.id == *id));
        for l in table.listeners.iter().filter(|l| l.kind == Kind::Proxy) {
            if running.contains(&l.id) {
                continue;
            }
            running.insert(l.id);
            if l.udp {
                for socket in l.take_udp_sockets(index) {
                    match tokio::net::UdpSocket::from_std(socket) {
                        Ok(socket) => {
                            let task = super::udp::serve(Arc::clone(&app), Arc::clone(l), socket);
                            tokio::task::spawn_local(task.instrument(span.clone()));
                        }
                        Err(e) => {
                            tracing::error!(listener = %l.name, worker = index, "cannot receive: {e}");
                        }
                    }
                }
                continue;
            }
            if l.http3 {
                for socket in l.take_udp_sockets(index) {
                    let task = super::http3::serve(
                        Arc::clone(&app),
                        Arc::clone(l),
                        socket,
                        Rc::clone(&tracker),
                        span.clone(),
                    );
                    tokio::task::spawn_local(task.instrument(span.clone()));
                }
            }
            for socket in l.take_sockets(index) {
                match TcpListener::from_std(socket) {
                    Ok(socket) => {
                        tokio::task::spawn_local(accept_loop(
                            Arc::clone(&app),
                            Arc::clone(l),
                            socket,
                            Rc::clone(&tracker),
                            span.clone(),
                        ));
                    }
                    Err(e) => {
                        tracing::error!(listener = %l.name, worker = index, "cannot accept: {e}");
                    }
                }
            }
        }
        if first {
            first = false;
            app.worker_started();
        }
        tokio::select! {
            changed = table_rx.changed() => if changed.is_err() { break },
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    // Read now, not at start: a reload may have changed it.
    let drain_timeout = app.snapshot.load().config.shutdown.drain_timeout;
    tracker.drain(drain_timeout).await;
}

/// Starts this worker's VMs of the filters of `snapshot` that tick, as it goes live:
/// their timers run from the start, not from the first request that reaches them (as
/// on Envoy). Other filters' VMs are still made on first use; a filter that already
/// has its VM here (kept by the reload) is left as it is. The first worker also runs
/// the service modules: one VM each for the process.
async fn start_tickers(snapshot: Arc<Snapshot>, index: usize) {
    let services = snapshot.services().filter(|_| index == 0);
    for plugin in snapshot.ticking_plugins().chain(services) {
        plugin.start_on_this_worker().await;
    }
}

/// Accepts connections on one socket until its listener is removed or the process
/// shuts down.
async fn accept_loop(
    app: Arc<App>,
    listener: Arc<BoundListener>,
    socket: TcpListener,
    tracker: Rc<Tracker>,
    span: tracing::Span,
) {
    let mut stop = listener.stopped();
    let mut shutdown = app.shutdown_signal();
    let serve = |tcp: TcpStream, peer: SocketAddr| {
        let track = tracker.enter();
        let app = Arc::clone(&app);
        let listener = Arc::clone(&listener);
        tokio::task::spawn_local(
            async move {
                accept::serve_tcp(app, listener, tcp, peer).await;
                drop(track);
            }
            .instrument(span.clone()),
        );
    };
    loop {
        tokio::select! {
            biased;
            _ = stopping(&mut stop, &mut shutdown) => break,
            accepted = socket.accept() => match accepted {
                Ok((tcp, peer)) => serve(tcp, peer),
                Err(e) => {
                    // Usually out of file descriptors: back off rather than spin.
                    tracing::warn!(listener = %listener.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    if listener.is_handed_over() {
        // The socket lives on in the process that took it over, which accepts what
        // is queued on it: closing it to new connections would close it for both.
        return;
    }
    close_listener(socket, &listener.name, serve);
}

/// Closes a listening socket without resetting the connections in its backlog: the
/// kernel has completed their handshakes, so their clients believe they are connected
/// and may have sent a request already; closing the socket would reset them. Those
/// are accepted and served (draining) first.
///
/// A connection whose handshake completes between the last accept and the close is
/// still reset; with new SYNs dropped first ([`refuse_new_connections`]) that is only
/// one whose SYN was answered a moment before.
fn close_listener(socket: TcpListener, name: &str, mut serve: impl FnMut(TcpStream, SocketAddr)) {
    let socket = match socket.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(listener = %name, "cannot drain the accept queue: {e}");
            return;
        }
    };
    refuse_new_connections(&socket, name);
    loop {
        match socket.accept() {
            Ok((tcp, peer)) => {
                accept_packets_again(&tcp);
                let tcp = tcp
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(tcp));
                match tcp {
                    Ok(tcp) => serve(tcp, peer),
                    Err(e) => tracing::debug!(listener = %name, "cannot serve {peer}: {e}"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Completes when the listener is stopped or the process shuts down.
pub(crate) async fn stopping(
    stop: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}

/// Counts a worker's open connections, so that shutdown can wait for them.
#[derive(Default)]
pub(super) struct Tracker {
    open: Cell<usize>,
    idle: Notify,
}

/// One open connection; dropping it closes the count.
pub(super) struct Tracked(Rc<Tracker>);

impl Tracker {
    /// Counts one more open connection, until the returned guard is dropped.
    pub(super) fn enter(self: &Rc<Self>) -> Tracked {
        self.open.set(self.open.get() + 1);
        Tracked(Rc::clone(self))
    }

    /// Waits until every connection has closed, or `grace` has passed.
    async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while self.open.get() > 0 {
            let idle = self.idle.notified();
            if self.open.get() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(
                    open = self.open.get(),
                    "grace period over; closing the remaining connections"
                );
                break;
            }
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let open = self.0.open.get().saturating_sub(1);
        self.0.open.set(open);
        if open == 0 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Has the kernel drop every packet for `socket` from now on, so that no new
/// handshake completes into its backlog while it is drained and closed: a client's
/// SYN goes unanswered, and its retry (a second later) finds the port closed and is
/// refused, which it knows is safe to retry elsewhere. (Linux: a classic BPF socket
/// filter that accepts nothing.)
fn refuse_new_connections(socket: &std::net::TcpListener, name: &str) {
    #[cfg(target_os = "linux")]
    {
        // BPF_RET | BPF_K with 0: keep no byte of any packet.
        const DROP_ALL: [socket2::SockFilter; 1] = [socket2::SockFilter::new(0x06, 0, 0, 0)];
        if let Err(e) = socket2::SockRef::from(socket).attach_filter(&DROP_ALL) {
            tracing::debug!(listener = %name, "cannot hold off new connections: {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, name);
}

/// Removes the filter of [`refuse_new_connections`] from a connection accepted after
/// it was set: a connection whose handshake completed just as it was set inherits it
/// from the listener, and would see none of its client's packets.
fn accept_packets_again(tcp: &std::net::TcpStream) {
    #[cfg(target_os = "linux")]
    {
        // ENOENT (no filter) is the usual answer.
        let _ = socket2::SockRef::from(tcp).detach_filter();
    }
    #[cfg(not(target_os = "linux"))]
    let _ = tcp;
}
