//! The set of directories under watch, kept in step with what the configuration names,
//! and a fingerprint of the files that tells when they have stopped changing.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use super::events::Interest;

/// A directory's identity: replacing the directory (or the symlink to it) changes it,
/// and an inotify watch stays on the old one.
type Identity = (u64, u64);

/// The directories being watched: the config directory, its parent (to see the
/// directory itself replaced), and the directory of every external file.
pub(crate) struct Watches {
    watcher: RecommendedWatcher,
    watched: HashMap<PathBuf, Identity>,
}

impl Watches {
    /// Nothing watched yet; [`Watches::refresh`] adds the watches.
    pub fn new(watcher: RecommendedWatcher) -> Self {
        Self {
            watcher,
            watched: HashMap::new(),
        }
    }

    /// Brings the watches in line with `interest`: adds new directories, drops ones no
    /// longer needed, and re-adds any that were replaced. Directories that do not exist
    /// (yet) are skipped; the parent's watch sees them appear.
    pub fn refresh(&mut self, interest: &Interest) {
        let mut wanted: Vec<PathBuf> = vec![interest.dir.clone()];
        wanted.extend(interest.dir.parent().map(Path::to_path_buf));
        for file in &interest.external {
            // A module named before its directory exists: watch the nearest ancestor
            // that does, to see the directory appear.
            wanted.extend(
                file.ancestors()
                    .skip(1)
                    .find(|d| d.is_dir())
                    .map(Path::to_path_buf),
            );
        }
        let mut seen_ids: HashSet<Identity> = HashSet::new();
        let mut keep: HashSet<PathBuf> = HashSet::new();
        for dir in wanted {
            let Some(id) = identity(&dir) else { continue };
            // inotify keys watches by inode: two spellings of one directory must share
            // one watch, or dropping one would silence the other.
            if !seen_ids.insert(id) {
                continue;
            }
            keep.insert(dir.clone());
            if self.watched.get(&dir) == Some(&id) {
                continue;
            }
            if self.watched.remove(&dir).is_some() {
                let _ = self.watcher.unwatch(&dir);
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir, id);
                }
                Err(e) => tracing::warn!("cannot watch {}: {e}", dir.display()),
            }
        }
        let stale: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|d| !keep.contains(*d))
            .cloned()
            .collect();
        for dir in stale {
            self.watched.remove(&dir);
            let _ = self.watcher.unwatch(&dir);
        }
    }
}

fn identity(path: &Path) -> Option<Identity> {
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// Size and modification time of every file the configuration reads; two equal
/// fingerprints a moment apart mean nobody is still writing.
#[derive(Debug, PartialEq, Eq, Default)]
pub(crate) struct Fingerprint(Vec<(PathBuf, Option<Stamp>)>);

/// Size, modification time and inode of one file.
type Stamp = (u64, SystemTime, u64);

impl Fingerprint {
    /// Stats every YAML file in the directory and every external file now.
    pub fn take(interest: &Interest) -> Self {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&interest.dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| interest.matters(p));
        files.extend(interest.external.iter().cloned());
        files.sort();
        files.dedup();
        Self(
            files
                .into_iter()
                .map(|p| {
                    let meta = std::fs::metadata(&p).ok();
                    let stamp = meta.and_then(|m| Some((m.len(), m.modified().ok()?, m.ino())));
                    (p, stamp)
                })
                .collect(),
        )
    }
}
