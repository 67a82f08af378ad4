//! One worker thread: a current-thread runtime and a `LocalSet`, accepting on its own
//! socket of every proxy listener, picking up listeners a reload adds.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::LocalSet;
use tracing::Instrument;

use super::DRAIN_GRACE;
use super::conn;
use crate::app::App;
use crate::listeners::{BoundListener, Kind};

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
    tokio::task::spawn_local(start_tickers(Arc::clone(&app)));
    let tracker = Rc::new(Tracker::default());
    let mut table_rx = app.listeners();
    let mut shutdown = app.shutdown_signal();
    let mut running: HashSet<u64> = HashSet::new();
    let mut first = true;
    loop {
        let table = Arc::clone(&table_rx.borrow_and_update());
        running.retain(|id| table.listeners.iter().any(|l| l.id == *id));
        for l in table.listeners.iter().filter(|l| l.kind == Kind::Proxy) {
            if running.contains(&l.id) {
                continue;
            }
            let Some(socket) = l.take_socket(index) else {
                continue;
            };
            match TcpListener::from_std(socket) {
                Ok(socket) => {
                    running.insert(l.id);
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
        if first {
            first = false;
            app.worker_started();
        }
        tokio::select! {
            changed = table_rx.changed() => if changed.is_err() { break },
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    tracker.drain(DRAIN_GRACE).await;
}

/// How soon a worker notices a new generation whose filters tick.
const TICKERS_POLL: Duration = Duration::from_millis(100);

/// Starts this worker's VMs of the filters that tick, for each generation as it goes
/// live: their timers run from the start, not from the first request that reaches
/// them (as on Envoy). Other filters' VMs are still made on first use.
async fn start_tickers(app: Arc<App>) {
    let mut shutdown = app.shutdown_signal();
    let mut seen = 0;
    loop {
        {
            // Not held across the wait: an old generation must be free to go.
            let snapshot = app.snapshot.load_full();
            if snapshot.generation != seen {
                seen = snapshot.generation;
                for plugin in snapshot.ticking_plugins() {
                    plugin.start_on_this_worker().await;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICKERS_POLL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
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
    loop {
        tokio::select! {
            biased;
            _ = stopping(&mut stop, &mut shutdown) => break,
            accepted = socket.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let track = tracker.enter();
                    let app = Arc::clone(&app);
                    let listener = Arc::clone(&listener);
                    tokio::task::spawn_local(
                        async move {
                            conn::serve_tcp(app, listener, tcp, peer).await;
                            drop(track);
                        }
                        .instrument(span.clone()),
                    );
                }
                Err(e) => {
                    // Usually out of file descriptors: back off rather than spin.
                    tracing::warn!(listener = %listener.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
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
struct Tracker {
    open: Cell<usize>,
    idle: Notify,
}

/// One open connection; dropping it closes the count.
struct Tracked(Rc<Tracker>);

impl Tracker {
    fn enter(self: &Rc<Self>) -> Tracked {
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
