//! The reload watcher: notices that the configuration changed on disk (or that SIGHUP
//! asked for a reload) and calls a reload callback once the change is complete.
//!
//! It watches the config directory (non-recursively), the directory's parent (to see
//! the directory itself replaced) and the directory of every file outside it that the
//! configuration names (`.wasm` modules, certificates). Watching directories rather than
//! files is what catches an editor's rename-over, an `mv` into place, delete +
//! re-create, and Kubernetes' `..data` symlink swap: a watch on the file itself would
//! stay on the old inode.
//!
//! A burst of events is debounced: the callback runs once the files have been quiet
//! for [`DEBOUNCE`], every file written in place has been closed by its writer
//! (inotify's `IN_CLOSE_WRITE`), and their sizes and modification times have not moved
//! since the last event. A single write therefore goes live about [`DEBOUNCE`] after
//! it is closed, plus the time to build the new configuration. A Kubernetes `..data`
//! swap is the exception: the kubelet writes every key into a new directory before the
//! swap, so once the volume is whole (every key linked, no link dangling) the reload
//! waits only [`SWAP_SETTLE`].
//! What the callback does (load, build, swap, record status) is the caller's business;
//! the watcher only decides when. The callback runs on a thread of its own, at the
//! workers' priority for its first milliseconds of CPU and below them after
//! (`priority.rs`): the usual reload goes live without waiting behind the load, a long
//! one does not hold requests up.

mod events;
mod priority;
mod watches;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use events::{Effect, Interest, OpenWriters};
use watches::{Fingerprint, Watches};

/// How long the files must be quiet before a reload. A tool writing several files
/// (`cp -r`, a deploy script) writes them within a few milliseconds of each other:
/// 40 ms takes them as one change, and leaves a reload's build room to go live within
/// 60 ms of the write.
pub const DEBOUNCE: Duration = Duration::from_millis(40);

/// How long a `..data` swap that left its volume whole settles before the reload: the
/// swap is the kubelet's commit, so there is no writer to wait for, only the other
/// events of the same rename to take in.
pub const SWAP_SETTLE: Duration = Duration::from_millis(5);

/// How long to wait for a writer that keeps a file open without writing to it before
/// reloading anyway.
const WRITER_GRACE: Duration = Duration::from_secs(3);

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The OS file watcher (inotify) could not be created, e.g. its limit is reached.
    #[error("cannot watch the configuration for changes: {0}")]
    Watch(#[from] notify::Error),
    /// The watcher thread could not be started.
    #[error("cannot start the reload watcher thread: {0}")]
    Thread(#[from] std::io::Error),
}

enum Msg {
    Fs(notify::Result<notify::Event>),
    Trigger,
    Stop,
}

/// Asks the watcher for a reload (e.g. on SIGHUP); cheap to clone and send anywhere.
#[derive(Clone)]
pub struct Trigger(mpsc::Sender<Msg>);

impl Trigger {
    /// Requests a reload after the usual debounce. Does nothing once the watcher stopped.
    pub fn reload(&self) {
        let _ = self.0.send(Msg::Trigger);
    }
}

/// A running watcher; dropping it stops the thread.
pub struct Watcher {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `dir` and the files `external` returns (asked again after every
    /// reload, since the configuration names different files then), and calls
    /// `on_change` once a change is complete, on a thread of its own (one reload at a
    /// time).
    pub fn spawn<E, F>(dir: PathBuf, external: E, on_change: F) -> Result<Self, ReloadError>
    where
        E: Fn() -> Vec<PathBuf> + Send + 'static,
        F: Fn() + Send + 'static,
    {
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let (tx, rx) = mpsc::channel();
        let fs_tx = tx.clone();
        let notifier = notify::recommended_watcher(move |ev| {
            let _ = fs_tx.send(Msg::Fs(ev));
        })?;
        let mut state = State {
            interest: Interest {
                dir,
                external: Default::default(),
            },
            watches: Watches::new(notifier),
            external: Box::new(external),
            on_change: Box::new(on_change),
        };
        state.refresh();
        let thread = std::thread::Builder::new()
            .name("config-watcher".into())
            .spawn(move || state.run(rx))?;
        Ok(Self {
            tx,
            thread: Some(thread),
        })
    }

    /// A handle that requests reloads, e.g. from a SIGHUP handler.
    pub fn trigger(&self) -> Trigger {
        Trigger(self.tx.clone())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct State {
    interest: Interest,
    watches: Watches,
    external: Box<dyn Fn() -> Vec<PathBuf> + Send>,
    on_change: Box<dyn Fn() + Send>,
}

impl State {
    /// Re-reads the external file list and brings the watches in line with it.
    fn refresh(&mut self) {
        let mut external = std::collections::HashSet::new();
        for path in (self.external)() {
            let path = std::path::absolute(&path).unwrap_or(path);
            external.extend(path.canonicalize().ok());
            external.insert(path);
        }
        self.interest.external = external;
        self.watches.refresh(&self.interest);
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        // Time of the last relevant event, while a change is pending.
        let mut pending: Option<Instant> = None;
        // How long the files must then stay quiet, and the volume whose `..data` was
        // swapped since the last reload, if any.
        let mut settle = DEBOUNCE;
        let mut swapped: Option<PathBuf> = None;
        let mut writers = OpenWriters::default();
        // The files as they were at the last relevant event: if they still look the
        // same once the burst has been quiet for DEBOUNCE, nobody is writing.
        let mut print_at_event = Fingerprint::default();
        loop {
            let wait = match pending {
                Some(at) => settle
                    .saturating_sub(at.elapsed())
                    .max(Duration::from_millis(1)),
                None => Duration::from_secs(3600),
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Trigger) => {
                    pending = Some(Instant::now());
                    settle = DEBOUNCE;
                    print_at_event = Fingerprint::take(&self.interest);
                }
                Ok(Msg::Fs(Ok(event))) => {
                    let effect = events::effect(&event);
                    if effect != Effect::None
                        && event.paths.iter().any(|p| self.interest.matters(p))
                    {
                        writers.note(&effect, &event);
                        pending = Some(Instant::now());
                        swapped = events::swapped_volume(&event).or(swapped);
                        // Only the swap's own events (the rename, the kubelet's links)
                        // skip the debounce: a write elsewhere still waits for its burst.
                        settle = match &swapped {
                            Some(volume)
                                if event.paths.iter().all(|p| p.parent() == Some(volume))
                                    && events::volume_whole(volume) =>
                            {
                                SWAP_SETTLE
                            }
                            _ => DEBOUNCE,
                        };
                        print_at_event = Fingerprint::take(&self.interest);
                        if event.paths.contains(&self.interest.dir) {
                            // The directory itself was replaced: watch the new one now,
                            // so that what is written into it next is not missed.
                            self.refresh();
                        }
                    }
                }
                Ok(Msg::Fs(Err(e))) => {
                    tracing::warn!("config watcher: {e}; reloading to be safe");
                    pending = Some(Instant::now());
                    settle = DEBOUNCE;
                    print_at_event = Fingerprint::default();
                }
                Err(RecvTimeoutError::Timeout) => {
                    let Some(at) = pending else { continue };
                    if at.elapsed() < settle {
                        continue;
                    }
                    if !writers.all_closed() {
                        if at.elapsed() < WRITER_GRACE {
                            continue;
                        }
                        tracing::warn!(
                            "a configuration file is still open for writing; reloading anyway"
                        );
                        writers.clear();
                    }
                    let print = Fingerprint::take(&self.interest);
                    if print != print_at_event {
                        // Changed without an event (e.g. written through a mapping):
                        // still moving, one more quiet round.
                        print_at_event = print;
                        pending = Some(Instant::now());
                        settle = DEBOUNCE;
                        continue;
                    }
                    pending = None;
                    swapped = None;
                    settle = DEBOUNCE;
                    // On a thread of its own, at the workers' priority until it has
                    // used its share (priority.rs).
                    let mut again = false;
                    priority::run(|| {
                        // A directory on the way to a named file may have appeared:
                        // watch it before the reload, so that what is written into it
                        // next counts.
                        self.refresh();
                        tracing::info!("configuration changed; reloading");
                        let started = SystemTime::now();
                        let before = self.interest.external.clone();
                        (self.on_change)();
                        self.refresh();
                        // A file the new configuration names for the first time was
                        // not watched while the reload read it: if it moved meanwhile,
                        // read it again rather than serve what it held before.
                        again = self
                            .interest
                            .external
                            .iter()
                            .any(|p| !before.contains(p) && touched_since(p, started));
                    });
                    if again {
                        pending = Some(Instant::now());
                        print_at_event = Fingerprint::take(&self.interest);
                    }
                }
            }
        }
    }
}

/// Whether `path` was written, created or renamed into place at `since` or later (the
/// kernel stamps files from a clock that may lag by a tick, so a little earlier too).
fn touched_since(path: &std::path::Path, since: SystemTime) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let since = since - CLOCK_SLACK;
    let changed = u64::try_from(meta.ctime()).ok().map(|s| {
        SystemTime::UNIX_EPOCH + Duration::new(s, u32::try_from(meta.ctime_nsec()).unwrap_or(0))
    });
    meta.modified().is_ok_and(|m| m >= since) || changed.is_some_and(|c| c >= since)
}

/// How far behind the file-time clock may be.
const CLOCK_SLACK: Duration = Duration::from_millis(20);
