//! The worker threads: thread-per-core, each a current-thread tokio runtime with a
//! `LocalSet`, each accepting on its own `SO_REUSEPORT` socket of every listener and
//! serving HTTP/1.1 (our own, `h1`) and HTTP/2 (prior knowledge, hyper) on the same
//! port, and
//! HTTP/3 over QUIC on the UDP side of a listener that asks for it (`http3`).
//!
//! Request futures never leave their worker (hyper runs with a local executor), so
//! the proxy driver and the wasm VMs it calls need not be `Send`.

mod accept;
mod challenge;
pub mod conn;
pub mod guard;
mod h1;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use h1::fuzz::transcript as h1_transcript;
mod http3;
mod hyper_conn;
mod peek;
mod per_ip;
mod request_body;
mod state;
mod tcp;
mod tunnel;
mod udp;
mod worker;

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::app::App;

/// The running workers.
pub struct Server {
    workers: Vec<JoinHandle<()>>,
    done: mpsc::Receiver<usize>,
}

/// Starts `app.workers()` worker threads serving `app`'s listeners.
pub fn start(app: &Arc<App>) -> std::io::Result<Server> {
    let (done_tx, done) = mpsc::channel();
    let mut workers = Vec::with_capacity(app.workers());
    for index in 0..app.workers() {
        let app = Arc::clone(app);
        let done_tx = done_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                worker::run(&app, index);
                let _ = done_tx.send(index);
            })?;
        workers.push(handle);
    }
    Ok(Server { workers, done })
}

impl Server {
    /// Waits for every worker to finish draining (after [`App::shutdown`]), but no
    /// longer than `grace` plus a little: a worker stuck past its own deadline does not
    /// keep the process alive.
    pub fn join(self, grace: Duration) {
        let deadline = Instant::now() + grace + Duration::from_secs(1);
        let mut remaining = self.workers.len();
        while remaining > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok(_) => remaining -= 1,
                Err(_) => {
                    tracing::warn!(remaining, "workers did not finish draining in time");
                    return;
                }
            }
        }
        for w in self.workers {
            let _ = w.join();
        }
    }
}
