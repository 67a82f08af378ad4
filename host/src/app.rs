//! Process state shared by every worker: the serving snapshot, the wasm runtime, the
//! bound listeners and the reload status.
//!
//! [`App::reload`] is the one way a configuration comes into force: load → build
//! (which compiles and configures every filter) → bind any new listener → swap. Any
//! failure leaves everything as it was.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{self, ConfigError, ConfigErrors, Providers};
use crate::etcd::EtcdProvider;
use crate::listeners::{Inherited, ListenerTable, Rebind};
use crate::metrics;
use crate::snapshot::Snapshot;
use crate::wasm::Runtime;

/// How many load attempts the reload history keeps.
pub const RELOAD_HISTORY: usize = 20;

/// The outcome of a load attempt, as `/status` (the latest) and the dashboard (the
/// last [`RELOAD_HISTORY`]) show it.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    /// The generation serving after it: the new one when it was applied.
    pub generation: u64,
    /// Whether it was applied.
    pub ok: bool,
    /// When it was attempted.
    pub at: SystemTime,
    /// Its errors (`FILE:LINE: FIELD: message`), empty when it was applied.
    pub errors: Vec<String>,
}

/// The process: what every worker, the admin listener and the reload watcher share.
pub struct App {
    /// The generation serving now; a request pins it with one `load_full()`.
    pub snapshot: ArcSwap<Snapshot>,
    /// The proxy-wasm runtime (engine, module cache).
    pub runtime: Runtime,
    conf_dir: PathBuf,
    /// The etcd prefix whose documents are merged with the directory's, if
    /// `providers.etcd` says.
    etcd: Option<EtcdProvider>,
    /// The etcd store revision the serving configuration's documents were read at.
    etcd_revision: AtomicI64,
    /// Worker threads, fixed at start: a reload that changes `workers` is refused (a
    /// new process applies it; see [`crate::handover`]).
    workers: usize,
    /// The last load attempts, the latest at the back; never empty.
    history: Mutex<VecDeque<ReloadStatus>>,
    /// Serialises reloads: two concurrent loads must not race to the swap.
    reload_lock: Mutex<()>,
    /// The files the latest load attempt's fields named, whether or not it loaded: a
    /// module still missing must be watched so that its arrival reloads.
    named_by_last_load: Mutex<Vec<PathBuf>>,
    listeners: watch::Sender<Arc<ListenerTable>>,
    shutdown: watch::Sender<bool>,
    ready: AtomicBool,
    /// Set once shutting down starts: `/ready` must not turn 200 again.
    unready: AtomicBool,
    workers_started: AtomicUsize,
}

impl App {
    /// Loads, builds and binds the configuration in `conf_dir` (with the documents of
    /// `etcd`, when the directory's `providers.etcd` started one) as generation 1,
    /// accepting on the `inherited` sockets of the listeners that match one (those it
    /// claims are marked there).
    pub fn start(
        conf_dir: &Path,
        etcd: Option<EtcdProvider>,
        runtime: Runtime,
        inherited: &mut Inherited,
    ) -> Result<Arc<App>, ConfigErrors> {
        let (config, etcd_revision) = load(conf_dir, etcd.as_ref()).0?;
        let config = Arc::new(config);
        let snapshot = Snapshot::build(Arc::clone(&config), &runtime, 1, None)?;
        let workers = config.workers.max(1);
        let rebind = ListenerTable::default().rebind(&config, workers, inherited)?;
        for l in &rebind.added {
            tracing::info!(listener = %l.name, address = %l.bound, "listening");
        }
        warn_if_exposed(&config);
        metrics::global().set_generation(1);
        metrics::global().reload(true);
        crate::acme::apply(&config);
        let app = App {
            runtime,
            conf_dir: conf_dir.to_owned(),
            etcd,
            etcd_revision: AtomicI64::new(etcd_revision),
            workers,
            history: Mutex::new(VecDeque::from([ReloadStatus {
                generation: 1,
                ok: true,
                at: snapshot.loaded_at,
                errors: Vec::new(),
            }])),
            snapshot: ArcSwap::from_pointee(snapshot),
            reload_lock: Mutex::new(()),
            named_by_last_load: Mutex::new(Vec::new()),
            listeners: watch::Sender::new(Arc::new(rebind.table)),
            shutdown: watch::Sender::new(false),
            ready: AtomicBool::new(false),
            unready: AtomicBool::new(false),
            workers_started: AtomicUsize::new(0),
        };
        Ok(Arc::new(app))
    }

    /// Loads the configuration directory again and, if every part of it builds, puts
    /// it in force; returns the new generation. On error nothing changes (the errors
    /// are logged and recorded for `/status`) and the generation does not move.
    pub fn reload(&self) -> Result<u64, ConfigErrors> {
        let _serial = lock(&self.reload_lock);
        // A large configuration frees and takes back the same pages many times while it
        // builds; they go back to the OS once, when this ends.
        let _held = crate::alloc::HoldFreed::start();
        if self.is_shutting_down() {
            // The workers no longer pick up listeners: one bound now would take
            // connections that nobody accepts.
            tracing::info!("shutting down: reload skipped");
            return Ok(self.snapshot.load().generation);
        }
        let result = self.try_reload();
        match &result {
            Ok(generation) => {
                tracing::info!(generation, "configuration reloaded");
                metrics::global().reload(true);
                let config = &self.snapshot.load().config;
                metrics::global()
                    .forget_filter_windows(|name| config.filters.iter().any(|f| f.name == name));
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("reload failed: {e}");
                }
                metrics::global().reload(false);
                self.note(ReloadStatus {
                    generation: self.snapshot.load().generation,
                    ok: false,
                    at: SystemTime::now(),
                    errors: errors.0.iter().map(ToString::to_string).collect(),
                });
            }
        }
        result
    }

    fn try_reload(&self) -> Result<u64, ConfigErrors> {
        // The parsed files are freed on the way out, once the new generation is live.
        let (loaded, mut parsed) = load(&self.conf_dir, self.etcd.as_ref());
        *lock(&self.named_by_last_load) = std::mem::take(&mut parsed.named);
        let (config, etcd_revision) = loaded?;
        let running = Providers {
            etcd: self.etcd.as_ref().map(|e| e.config().clone()),
        };
        if let Some(e) = config::providers::changed(&running, &config.providers, &self.conf_dir) {
            return Err(ConfigErrors(vec![e]));
        }
        let config = Arc::new(config);
        let previous = self.snapshot.load_full();
        if config.workers.max(1) != self.workers {
            return Err(ConfigErrors(vec![workers_changed(
                &config,
                self.workers,
                &self.conf_dir,
            )]));
        }
        let generation = previous.generation + 1;
        let snapshot = Snapshot::build(
            Arc::clone(&config),
            &self.runtime,
            generation,
            Some(&previous),
        )?;
        let Rebind {
            table,
            removed,
            added,
        } = self
            .listeners
            .borrow()
            .rebind(&config, self.workers, &mut Inherited::default())?;
        for l in &added {
            tracing::info!(listener = %l.name, address = %l.bound, "listening");
        }
        // Nothing can fail from here on: only now may the filters this snapshot shares
        // with the serving one call its upstreams.
        snapshot.go_live();
        // The status first: whoever sees the new generation also sees that it loaded.
        self.note(ReloadStatus {
            generation,
            ok: true,
            at: snapshot.loaded_at,
            errors: Vec::new(),
        });
        self.snapshot.store(Arc::new(snapshot));
        self.etcd_revision.store(etcd_revision, Ordering::SeqCst);
        // Live from here: say so before the rest (freeing the previous generation, a
        // large routing table's included, happens on the way out).
        metrics::global().set_generation(generation);
        self.listeners.send_replace(Arc::new(table));
        crate::acme::apply(&config);
        if config.admin != previous.config.admin {
            warn_if_exposed(&config);
        }
        for l in &removed {
            l.stop();
            tracing::info!(listener = %l.name, address = %l.bound, "stopped listening");
        }
        Ok(generation)
    }

    /// Every file outside the directory that a reload must notice changing: those the
    /// serving configuration reads and those the latest load attempt named (also when
    /// it failed, e.g. on a module not there yet).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = self.snapshot.load().config.external_files.clone();
        files.extend(lock(&self.named_by_last_load).iter().cloned());
        files
    }

    /// The configuration directory this process serves.
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// The etcd provider, when the configuration has `providers.etcd`.
    pub fn etcd(&self) -> Option<&EtcdProvider> {
        self.etcd.as_ref()
    }

    /// The etcd store revision the serving configuration's documents were read at
    /// (0 without etcd).
    pub fn etcd_revision(&self) -> i64 {
        self.etcd_revision.load(Ordering::SeqCst)
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The outcome of the latest load attempt.
    pub fn last_reload(&self) -> ReloadStatus {
        let history = lock(&self.history);
        // Never empty: the first load is its first entry.
        history.back().cloned().unwrap_or(ReloadStatus {
            generation: 0,
            ok: false,
            at: SystemTime::UNIX_EPOCH,
            errors: Vec::new(),
        })
    }

    /// The last [`RELOAD_HISTORY`] load attempts, the latest first.
    pub fn reload_history(&self) -> Vec<ReloadStatus> {
        lock(&self.history).iter().rev().cloned().collect()
    }

    fn note(&self, status: ReloadStatus) {
        let mut history = lock(&self.history);
        if history.len() == RELOAD_HISTORY {
            history.pop_front();
        }
        history.push_back(status);
    }

    /// The listeners in force; changes whenever a reload adds, moves or removes one.
    pub fn listeners(&self) -> watch::Receiver<Arc<ListenerTable>> {
        self.listeners.subscribe()
    }

    /// A receiver that turns true when the process starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The first step of a graceful shutdown: `/ready` answers 503 from now on (and
    /// never 200 again), so that load balancers stop sending new connections here.
    pub fn unready(&self) {
        self.unready.store(true, Ordering::SeqCst);
        self.ready.store(false, Ordering::SeqCst);
    }

    /// Stops accepting and drains: every connection finishes its requests in flight
    /// and closes (HTTP/1 responses carry `Connection: close`, HTTP/2 gets a GOAWAY).
    pub fn shutdown(&self) {
        self.unready();
        self.shutdown.send_replace(true);
    }

    /// Whether the process is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Called by each worker once it accepts on its sockets; when all have, the
    /// process is serving and `/ready` answers 200.
    pub fn worker_started(&self) {
        let started = self.workers_started.fetch_add(1, Ordering::SeqCst) + 1;
        if started == self.workers && !self.unready.load(Ordering::SeqCst) {
            self.ready.store(true, Ordering::SeqCst);
            let generation = self.snapshot.load().generation;
            tracing::info!(generation, workers = self.workers, "serving");
        }
    }

    /// Whether a configuration is serving and the process is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The directory's files and `etcd`'s documents (as held now: no network), merged;
/// with the etcd revision they were read at, and the parsed trees (to free once live).
fn load(
    dir: &Path,
    etcd: Option<&EtcdProvider>,
) -> (Result<(config::Config, i64), ConfigErrors>, config::Parsed) {
    match etcd {
        None => {
            let (config, parsed) = config::load_keeping_parsed(Some(dir), &[]);
            (config.map(|c| (c, 0)), parsed)
        }
        Some(etcd) => {
            let documents = etcd.documents();
            let (config, parsed) = config::load_keeping_parsed(Some(dir), &documents.texts());
            (config.map(|c| (c, documents.revision)), parsed)
        }
    }
}

/// The error of a reload that changes `workers`: the threads of a running process are
/// fixed, and applying part of a configuration would make `/status` lie about it.
fn workers_changed(config: &config::Config, running: usize, dir: &Path) -> ConfigError {
    let message = format!(
        "the process runs {running} worker(s), the configuration asks for {}: a change of \
         workers needs a new process (restart, or upgrade without downtime with \
         `portcullis run --upgrade-from`, see docs/operations.md)",
        config.workers
    );
    match &config.workers_origin {
        Some(origin) => ConfigError::at(origin, "workers", message),
        // Unset: the default (the number of cores) differs from what runs.
        None => ConfigError {
            file: dir.display().to_string(),
            line: 0,
            path: "workers".into(),
            message,
        },
    }
}

/// Warns when the admin listener is open to whoever can reach it beyond this host.
fn warn_if_exposed(config: &config::Config) {
    if let Some(warning) = config
        .admin
        .as_ref()
        .and_then(config::AdminConfig::exposure_warning)
    {
        tracing::warn!("{warning}");
    }
}

/// Locks `m`, recovering from poisoning: the data under these locks stays consistent
/// even if a holder panicked (each is replaced whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
