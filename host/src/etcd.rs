//! etcd as a configuration provider (`providers.etcd`): the documents under a prefix,
//! one key per file, kept in memory and followed with a real etcd watch.
//!
//! The provider never builds anything. It keeps the latest documents (and the store
//! revision they were read at) and calls its change callback when they change; the
//! reload that follows reads them from memory with the directory's files, through the
//! same load → build → swap as a change on disk. So a reload never waits on etcd, and
//! when etcd is unreachable the last documents read stay in force (and the last good
//! configuration keeps serving) while the provider retries with back-off. Once back,
//! it reads the whole prefix again and compares it with what it holds (keys and their
//! `mod_revision`): changes made while it was cut off are picked up, and a reconnect
//! that missed nothing reloads nothing.

mod client;

pub use client::{Change, EtcdClient, EtcdError, KeyValue, Range, Watch, WatchEvent};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::EtcdConfig;
use crate::config::providers::is_document;

/// The first wait before trying etcd again; it doubles on each failure.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest wait between tries.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The documents under the prefix at one store revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Documents {
    /// The store revision they were read (or last changed) at.
    pub revision: i64,
    /// Document key → (text, the revision it was last written at).
    pub docs: BTreeMap<String, (String, i64)>,
}

impl Documents {
    /// The documents of `range` read under `prefix` (keys that are not documents, such
    /// as `PREFIX/sub/x.yaml` or `PREFIX/notes.txt`, left out as a directory's are).
    pub fn from_range(prefix: &str, range: Range) -> Self {
        let docs = range
            .kvs
            .into_iter()
            .filter(|kv| is_document(prefix, &kv.key))
            .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
            .collect();
        Self {
            revision: range.revision,
            docs,
        }
    }

    /// `(key, text)` of every document, in key order: what the loader merges.
    pub fn texts(&self) -> Vec<(String, String)> {
        self.docs
            .iter()
            .map(|(k, (text, _))| (k.clone(), text.clone()))
            .collect()
    }

    /// Whether both hold the same documents, at the same writes.
    fn same_content(&self, other: &Documents) -> bool {
        self.docs.len() == other.docs.len()
            && self
                .docs
                .iter()
                .zip(&other.docs)
                .all(|((k1, (_, r1)), (k2, (_, r2)))| k1 == k2 && r1 == r2)
    }

    /// These documents with `changes` (made at `revision`) applied; `None` when none
    /// of them touched a document.
    fn with_changes(&self, prefix: &str, revision: i64, changes: Vec<Change>) -> Option<Self> {
        let mut next = self.clone();
        let mut touched = false;
        for change in changes {
            match change {
                Change::Put(kv) if is_document(prefix, &kv.key) => {
                    next.docs.insert(kv.key, (kv.value, kv.mod_revision));
                    touched = true;
                }
                Change::Delete(key) if is_document(prefix, &key) => {
                    touched |= next.docs.remove(&key).is_some();
                }
                _ => {}
            }
        }
        next.revision = revision;
        touched.then_some(next)
    }
}

/// How the link to etcd is, for `/status`.
#[derive(Debug, Clone)]
pub struct LinkStatus {
    /// Whether a watch is established now.
    pub connected: bool,
    /// The latest failure, kept after recovery (with its time) until the next one.
    pub last_error: Option<(SystemTime, String)>,
    /// Failed attempts since the last success.
    pub failures: u64,
}

/// Reads the documents under `config.prefix` once (for `portcullis check`, and for
/// the first load of `run`: with nothing yet to serve, an unreachable etcd is an
/// error).
pub fn read_once(config: &EtcdConfig) -> Result<Documents, EtcdError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EtcdError::Unreachable {
            endpoint: String::new(),
            reason: format!("cannot start a runtime: {e}"),
        })?;
    let client = EtcdClient::new(config)?;
    let range = rt.block_on(client.range(&config.prefix))?;
    Ok(Documents::from_range(&config.prefix, range))
}

type OnChange = Box<dyn Fn() + Send + Sync>;

struct Shared {
    documents: ArcSwap<Documents>,
    status: Mutex<LinkStatus>,
    on_change: Mutex<Option<OnChange>>,
}

impl Shared {
    fn changed(&self) {
        if let Some(f) = lock(&self.on_change).as_ref() {
            f();
        }
    }

    fn up(&self) {
        let mut s = lock(&self.status);
        if !s.connected {
            tracing::info!("etcd: watching");
        }
        s.connected = true;
        s.failures = 0;
        crate::metrics::global().etcd_connected(true);
    }

    fn down(&self, e: &EtcdError) {
        let mut s = lock(&self.status);
        if s.connected || s.failures == 0 {
            tracing::warn!("etcd: {e}; serving the last documents read, retrying");
        }
        s.connected = false;
        s.failures += 1;
        s.last_error = Some((SystemTime::now(), e.to_string()));
        crate::metrics::global().etcd_failure();
    }
}

/// A provider following one etcd prefix on its own thread; dropping it stops it.
pub struct EtcdProvider {
    config: EtcdConfig,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl EtcdProvider {
    /// Reads the prefix (an error if etcd cannot be read now), then follows it on a
    /// thread of its own.
    pub fn start(config: EtcdConfig) -> Result<Self, EtcdError> {
        let documents = read_once(&config)?;
        let shared = Arc::new(Shared {
            documents: ArcSwap::from_pointee(documents),
            status: Mutex::new(LinkStatus {
                connected: false,
                last_error: None,
                failures: 0,
            }),
            on_change: Mutex::new(None),
        });
        let client = EtcdClient::new(&config)?;
        let (stop, stopped) = watch::channel(false);
        let thread = {
            let shared = Arc::clone(&shared);
            let prefix = config.prefix.clone();
            std::thread::Builder::new()
                .name("etcd".into())
                .spawn(move || follow_thread(client, prefix, shared, stopped))
                .map_err(|e| EtcdError::Unreachable {
                    endpoint: String::new(),
                    reason: format!("cannot start the etcd thread: {e}"),
                })?
        };
        Ok(Self {
            config,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The `providers.etcd` block it follows.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The latest documents read.
    pub fn documents(&self) -> Arc<Documents> {
        self.shared.documents.load_full()
    }

    /// How the link to etcd is.
    pub fn status(&self) -> LinkStatus {
        lock(&self.shared.status).clone()
    }

    /// Calls `f` (on the provider's thread) whenever the documents change. If they
    /// changed since `loaded` (the revision the serving configuration was built
    /// from), `f` is called at once: nothing read before it was set is lost.
    pub fn on_change(&self, loaded: i64, f: impl Fn() + Send + Sync + 'static) {
        *lock(&self.shared.on_change) = Some(Box::new(f));
        if self.documents().revision != loaded {
            self.shared.changed();
        }
    }
}

impl Drop for EtcdProvider {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn follow_thread(
    client: EtcdClient,
    prefix: String,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("etcd: cannot start a runtime: {e}; the prefix is not watched");
            return;
        }
    };
    rt.block_on(async {
        tokio::select! {
            () = follow(&client, &prefix, &shared) => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    });
}

/// Watches the prefix from the revision the documents were read at; whenever the
/// watch breaks, waits (doubling from [`RETRY_MIN`] to [`RETRY_MAX`]), reads the
/// whole prefix again and watches on from there.
async fn follow(client: &EtcdClient, prefix: &str, shared: &Shared) {
    let mut retry = RETRY_MIN;
    let mut resync = false;
    loop {
        if resync {
            match client.range(prefix).await {
                Ok(range) => {
                    let read = Documents::from_range(prefix, range);
                    let held = shared.documents.load_full();
                    let same = read.same_content(&held);
                    shared.documents.store(Arc::new(read));
                    if !same {
                        tracing::info!("etcd: the prefix changed while the watch was down");
                        shared.changed();
                    }
                }
                Err(e) => {
                    shared.down(&e);
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            }
        }
        resync = true;
        let from = shared.documents.load().revision + 1;
        let failure = match client.watch(prefix, from).await {
            Ok(mut watch) => follow_watch(&mut watch, prefix, shared, &mut retry).await,
            Err(e) => e,
        };
        shared.down(&failure);
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Applies a watch's changes until it ends; returns why it ended.
async fn follow_watch(
    watch: &mut Watch,
    prefix: &str,
    shared: &Shared,
    retry: &mut Duration,
) -> EtcdError {
    loop {
        let event = match watch.next().await {
            Ok(Some(event)) => event,
            Ok(None) => return ended("etcd ended the watch"),
            Err(e) => return e,
        };
        match event {
            WatchEvent::Created => {
                shared.up();
                *retry = RETRY_MIN;
            }
            WatchEvent::Changes { revision, changes } => {
                let held = shared.documents.load_full();
                if let Some(next) = held.with_changes(prefix, revision, changes) {
                    shared.documents.store(Arc::new(next));
                    shared.changed();
                }
            }
            WatchEvent::Canceled(why) => return ended(&format!("etcd cancelled the watch: {why}")),
        }
    }
}

fn ended(why: &str) -> EtcdError {
    EtcdError::Unreachable {
        endpoint: String::new(),
        reason: why.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            mod_revision: rev,
        }
    }

    #[test]
    fn documents_follow_changes_to_documents_only() {
        let range = Range {
            revision: 5,
            kvs: vec![kv("/p/a.yaml", "a", 3), kv("/p/notes.txt", "n", 4)],
        };
        let docs = Documents::from_range("/p/", range);
        assert_eq!(docs.texts(), [("/p/a.yaml".to_string(), "a".to_string())]);
        assert!(
            docs.with_changes("/p/", 6, vec![Change::Put(kv("/p/x/b.yaml", "b", 6))])
                .is_none(),
            "a key below the prefix's level is not a document"
        );
        let next = docs
            .with_changes(
                "/p/",
                7,
                vec![
                    Change::Put(kv("/p/b.yaml", "b", 7)),
                    Change::Delete("/p/a.yaml".into()),
                ],
            )
            .unwrap();
        assert_eq!(next.revision, 7);
        assert_eq!(next.texts(), [("/p/b.yaml".to_string(), "b".to_string())]);
        assert!(!next.same_content(&docs));
        let mut later = next.clone();
        later.revision = 9;
        assert!(
            later.same_content(&next),
            "a newer revision of the same writes"
        );
    }
}
