//! Which file-system events mean "the configuration may have changed", and which files
//! a writer still has open.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{Event, EventKind};

/// The name of the symlink Kubernetes swaps to update a mounted ConfigMap or Secret.
const K8S_DATA: &str = "..data";

/// What the watcher cares about: the config directory and the files it names.
pub(crate) struct Interest {
    /// The config directory (absolute).
    pub dir: PathBuf,
    /// Files outside the YAML (modules, certificates), as named and canonicalized.
    pub external: HashSet<PathBuf>,
}

impl Interest {
    /// Whether a change at `path` can change the configuration.
    pub fn matters(&self, path: &Path) -> bool {
        if path == self.dir || self.is_external(path) {
            return true;
        }
        // A directory appearing on the way to a named file that is still missing.
        if self.external.iter().any(|e| e.starts_with(path)) && path.is_dir() {
            return true;
        }
        let Some(name) = path.file_name().and_then(OsStr::to_str) else {
            return false;
        };
        let parent = path.parent();
        if parent == Some(self.dir.as_path()) {
            return name == K8S_DATA || (is_config_file(name) && !is_dropping(name));
        }
        // A mounted Secret holding a certificate is swapped the same way.
        name == K8S_DATA
            && parent.is_some_and(|p| self.external.iter().any(|e| e.parent() == Some(p)))
    }

    fn is_external(&self, path: &Path) -> bool {
        if self.external.contains(path) {
            return true;
        }
        // The watch may be on another spelling of the same directory (a symlink). Only
        // a name we read is worth resolving: the watched directories also see every
        // unrelated write (a log file beside `conf/`), and canonicalizing is a syscall
        // per path component.
        let Some(name) = path.file_name() else {
            return false;
        };
        if !self.external.iter().any(|e| e.file_name() == Some(name)) {
            return false;
        }
        path.parent()
            .and_then(|p| p.canonicalize().ok())
            .is_some_and(|parent| self.external.contains(&parent.join(name)))
    }
}

/// The directory whose `..data` link an event renamed or created: a volume the kubelet
/// just updated (a ConfigMap or Secret mount).
pub(crate) fn swapped_volume(event: &Event) -> Option<PathBuf> {
    event
        .paths
        .iter()
        .find(|p| p.file_name() == Some(OsStr::new(K8S_DATA)))
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
}

/// Whether a volume the kubelet updates is whole after a `..data` swap: every key in
/// the data directory has its link beside `..data`, and no link through `..data`
/// dangles. The kubelet adds the links of new keys and removes those of dropped keys
/// after the swap; until it has, the files are still moving.
pub(crate) fn volume_whole(volume: &Path) -> bool {
    let Ok(keys) = std::fs::read_dir(volume.join(K8S_DATA)) else {
        return false;
    };
    for key in keys {
        let Ok(key) = key else { return false };
        let name = key.file_name();
        // `..`-names are the kubelet's own; every other key has a link.
        if name.as_encoded_bytes().starts_with(b"..") {
            continue;
        }
        if std::fs::metadata(volume.join(&name)).is_err() {
            return false;
        }
    }
    let Ok(entries) = std::fs::read_dir(volume) else {
        return false;
    };
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let path = entry.path();
        let through_data =
            std::fs::read_link(&path).is_ok_and(|target| target.starts_with(K8S_DATA));
        if through_data && std::fs::metadata(&path).is_err() {
            return false;
        }
    }
    true
}

/// A file the loader reads.
fn is_config_file(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Editor droppings and hidden temp files: swap files, backups, lock files.
fn is_dropping(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
}

/// What one event means for the paths it names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing the configuration depends on (reads, opens, unrelated files).
    None,
    /// Something changed; a writer may now have the file open.
    Writing,
    /// A writer closed the file: it is complete.
    Closed,
    /// A complete change (a rename into place, a removal, a directory swap).
    Changed,
}

/// Classifies an event's kind, ignoring which paths it names.
pub(crate) fn effect(event: &Event) -> Effect {
    match event.kind {
        // Our own reads (and anyone else's) open and close files: not a change.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Effect::Closed,
        EventKind::Access(_) => Effect::None,
        EventKind::Create(CreateKind::File) => Effect::Writing,
        EventKind::Modify(ModifyKind::Data(_)) => Effect::Writing,
        EventKind::Modify(_) | EventKind::Create(_) | EventKind::Remove(_) => Effect::Changed,
        // A queue overflow (rescan) or anything unknown: assume the worst.
        EventKind::Any | EventKind::Other => Effect::Changed,
    }
}

/// Files written in place whose writer has not closed them yet: reading one now could
/// see it half-written or truncated.
#[derive(Default)]
pub(crate) struct OpenWriters(HashSet<PathBuf>);

impl OpenWriters {
    /// Updates the set from one relevant event.
    pub fn note(&mut self, effect: &Effect, event: &Event) {
        for path in &event.paths {
            match effect {
                Effect::Writing => {
                    // Creating a symlink or a directory has no writer to wait for.
                    let regular = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file());
                    if regular {
                        self.0.insert(path.clone());
                    }
                }
                Effect::Closed | Effect::Changed => {
                    self.0.remove(path);
                }
                Effect::None => {}
            }
        }
    }

    /// Whether every writer has closed its file.
    pub fn all_closed(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets every writer (after waiting too long for one that never closes).
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_volume_is_whole_once_every_key_is_linked_and_no_link_dangles() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path();
        std::fs::create_dir(v.join("..2026_1")).unwrap();
        std::fs::write(v.join("..2026_1/a.yaml"), "a: 1\n").unwrap();
        std::fs::write(v.join("..2026_1/b.yaml"), "b: 1\n").unwrap();
        symlink("..2026_1", v.join("..data")).unwrap();
        assert!(!volume_whole(v), "b.yaml and a.yaml have no link yet");
        symlink("..data/a.yaml", v.join("a.yaml")).unwrap();
        symlink("..data/b.yaml", v.join("b.yaml")).unwrap();
        assert!(volume_whole(v));
        // b.yaml dropped from the ConfigMap: its link dangles until the kubelet removes it.
        std::fs::remove_file(v.join("..2026_1/b.yaml")).unwrap();
        assert!(!volume_whole(v), "b.yaml's link dangles");
        std::fs::remove_file(v.join("b.yaml")).unwrap();
        assert!(volume_whole(v));
        assert!(!volume_whole(&v.join("nowhere")));
    }

    #[test]
    fn droppings_and_unrelated_files_do_not_matter() {
        let interest = Interest {
            dir: PathBuf::from("/conf"),
            external: [PathBuf::from("/mods/a.wasm")].into_iter().collect(),
        };
        for p in [
            "/conf/app.yaml",
            "/conf/b.yml",
            "/conf/..data",
            "/conf",
            "/mods/a.wasm",
        ] {
            assert!(interest.matters(Path::new(p)), "{p} should matter");
        }
        for p in [
            "/conf/.app.yaml.swp",
            "/conf/app.yaml~",
            "/conf/.#app.yaml",
            "/conf/#app.yaml#",
            "/conf/.hidden.yaml",
            "/conf/4913",
            "/conf/notes.txt",
            "/conf/sub/x.yaml",
            "/mods/b.wasm",
            "/other",
        ] {
            assert!(!interest.matters(Path::new(p)), "{p} should not matter");
        }
    }
}
