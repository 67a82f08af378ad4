//! The configured access log's writer: a thread that formats the lines and appends
//! them to standard output or the file, flushing whenever it has caught up, and
//! reopens the file when told (SIGUSR1, after a rotation renamed it).
//!
//! A line and a reopen travel down the same queue, so every line sent before the
//! signal lands in the old file and every line after it in the new one.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::Line;
use crate::config::{AccessLogConfig, AccessLogFormat};

/// Lines waiting for the writer at most; past this, lines are dropped and counted.
const QUEUE_LINES: usize = 65536;

enum Msg {
    Line(Box<Line>),
    Reopen,
}

/// A running writer: its settings and its queue.
struct Writer {
    config: AccessLogConfig,
    tx: SyncSender<Msg>,
}

/// The writer of the configuration in force.
static CURRENT: ArcSwapOption<Writer> = ArcSwapOption::const_empty();
/// Serialises [`configure`] calls (reloads), so two never start two writers.
static CONFIGURING: Mutex<()> = Mutex::new(());

/// See [`super::configure`].
pub(super) fn configure(config: Option<&AccessLogConfig>) {
    let _one = CONFIGURING.lock();
    let current = CURRENT.load();
    if current.as_ref().map(|w| &w.config) == config {
        return;
    }
    let next = config.and_then(|config| {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let thread_config = config.clone();
        let spawned = std::thread::Builder::new()
            .name("portcullis-access-log".into())
            .spawn(move || run(&thread_config, &rx));
        match spawned {
            Ok(_) => Some(Arc::new(Writer {
                config: config.clone(),
                tx,
            })),
            Err(e) => {
                tracing::warn!("cannot start the access log writer: {e}");
                None
            }
        }
    });
    // The old writer's queue closes with its last holder: it writes what it was
    // given, then ends.
    CURRENT.store(next);
}

/// See [`super::reopen`].
pub(super) fn reopen() {
    if let Some(w) = CURRENT.load().as_ref() {
        // A reopen waits for room rather than being lost: it is rare and the writer
        // is draining.
        let _ = w.tx.send(Msg::Reopen);
    }
}

/// Queues `line` for the writer in force.
pub(super) fn send(line: Line) {
    let Some(w) = CURRENT.load_full() else {
        return;
    };
    match w.tx.try_send(Msg::Line(Box::new(line))) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            crate::metrics::global().access_log_dropped();
        }
    }
}

/// Where lines go.
enum Out {
    Stdout(std::io::Stdout),
    File(BufWriter<File>),
    /// The file could not be opened: lines are dropped (counted) until a reopen
    /// succeeds.
    Closed,
}

impl Out {
    fn open(config: &AccessLogConfig) -> Out {
        let Some(path) = &config.path else {
            return Out::Stdout(std::io::stdout());
        };
        match open(path) {
            Ok(file) => Out::File(BufWriter::with_capacity(64 * 1024, file)),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot open the access log: {e}; lines are dropped until SIGUSR1 reopens it");
                Out::Closed
            }
        }
    }

    fn write(&mut self, text: &str) {
        let result = match self {
            Out::Stdout(out) => out.lock().write_all(text.as_bytes()),
            Out::File(out) => out.write_all(text.as_bytes()),
            Out::Closed => {
                crate::metrics::global().access_log_dropped();
                return;
            }
        };
        if let Err(e) = result {
            tracing::debug!("access log write failed: {e}");
            crate::metrics::global().access_log_dropped();
        }
    }

    fn flush(&mut self) {
        let result = match self {
            Out::Stdout(out) => out.lock().flush(),
            Out::File(out) => out.flush(),
            Out::Closed => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!("access log flush failed: {e}");
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread: until the queue closes, writes each line, flushing whenever
/// the queue is empty, so a line is on disk as soon as the writer is idle. The file
/// is opened with the first line after a start or a reopen (`portcullis check`
/// builds a writer too, and must not create the file).
fn run(config: &AccessLogConfig, rx: &Receiver<Msg>) {
    let format: AccessLogFormat = config.format;
    let mut out: Option<Out> = None;
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => out
                    .get_or_insert_with(|| Out::open(config))
                    .write(&line.format(format)),
                Msg::Reopen => {
                    if let Some(mut old) = out.take() {
                        old.flush();
                    }
                    tracing::info!("access log reopened");
                }
            }
            next = rx.try_recv().ok();
        }
        if let Some(out) = &mut out {
            out.flush();
        }
    }
    if let Some(out) = &mut out {
        out.flush();
    }
}
