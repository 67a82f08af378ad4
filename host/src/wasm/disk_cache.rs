//! Compiled modules kept on disk between runs, so that a start (or a reload, or a
//! second process) that needs a module compiled before never runs cranelift: compiling
//! costs hundreds of milliseconds of a core per module, and pages the compiler's code in.
//!
//! An entry is one file, `<module sha256>-<engine key>.cwasm`: a fixed header (magic,
//! format, the module's sha256, the engine key, the payload's length and sha256)
//! followed by wasmtime's serialized module. The engine key hashes wasmtime's
//! [`Engine::precompile_compatibility_hash`] (its version, target and every setting that
//! shapes compiled code), so a changed engine looks for other entries.
//!
//! Deserializing is `unsafe`: wasmtime trusts the payload to be code it wrote itself.
//! So an entry is read whole, and handed to wasmtime only when every header field
//! matches and the payload's checksum is right; a truncated write, a flipped bit, or
//! a file copied in under another name is logged and the module compiled again (and
//! the entry rewritten). The checksum guards against accidents, not against someone
//! who can write the directory — they could write a consistent entry — so a directory
//! that other users can write is refused. Entries are written to a temporary file and
//! renamed into place, so no reader sees half an entry; past `max_size` the least
//! recently used entries are removed.
//!
//! Where the directory is: `disk_cache/location.rs` and docs/configuration.md.

use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

mod location;

pub(crate) use location::current;
pub use location::{ENV, configure, for_compile, use_defaults};

const MAGIC: &[u8; 16] = b"portcullis-cwasm";
/// Bumped whenever the header or the payload's meaning changes (2: modules are compiled
/// with their fused entries, `fuse.rs`; 3: with the fused response entry too).
const FORMAT: u32 = 3;
/// magic, format, reserved, module sha256, engine key, payload length, payload sha256.
const HEADER_LEN: usize = 16 + 4 + 4 + 32 + 32 + 8 + 32;
const SUFFIX: &str = ".cwasm";
const TEMP_PREFIX: &str = ".tmp-";
/// A temporary file this old was left by a writer that died: removed when seen.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// A directory of compiled modules for one engine configuration.
pub struct DiskCache {
    dir: PathBuf,
    max_size: u64,
    engine_key: [u8; 32],
    /// Whether a failed write was already logged: one warning, not one per module.
    write_warned: AtomicBool,
}

impl DiskCache {
    /// Opens (making it if need be) `dir` for entries of `engine`'s configuration.
    /// Fails when the directory cannot be made, is not a directory, or can be written
    /// by other users. A directory this process cannot write is fine: it is read.
    pub fn open(dir: &Path, max_size: u64, engine: &Engine) -> Result<DiskCache, String> {
        let made = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir);
        let meta = match (made, fs::metadata(dir)) {
            (_, Ok(meta)) if !meta.is_dir() => return Err("not a directory".into()),
            (Ok(()), Ok(meta)) => meta,
            (Err(e), _) => return Err(format!("cannot create it: {e}")),
            (Ok(()), Err(e)) => return Err(e.to_string()),
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        #[expect(unsafe_code, reason = "libc::geteuid is an FFI call")]
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid && meta.uid() != 0 {
            return Err(format!(
                "owned by uid {}, not by this user ({euid}) or root: entries there could be forged",
                meta.uid()
            ));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(format!(
                "writable by other users (mode {:o}): entries there could be forged",
                meta.permissions().mode() & 0o7777
            ));
        }
        Ok(DiskCache {
            dir: dir.to_owned(),
            max_size,
            engine_key: engine_key(engine),
            write_warned: AtomicBool::new(false),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding (or that would hold) the module with sha256 `digest`.
    pub fn entry_path(&self, digest: &[u8; 32]) -> PathBuf {
        let engine = hex::encode(&self.engine_key[..8]);
        self.dir
            .join(format!("{}-{engine}{SUFFIX}", hex::encode(digest)))
    }

    /// The module with sha256 `digest`, when a sound entry holds it. A missing entry is
    /// `None`; an unsound one is logged and `None` (the caller compiles and stores).
    pub fn load(&self, engine: &Engine, digest: &[u8; 32]) -> Option<Module> {
        let started = Instant::now();
        let path = self.entry_path(digest);
        let bytes = match read_entry(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                unusable(&path, &format!("cannot read it: {e}"));
                return None;
            }
        };
        let payload = match self.verify(&bytes, digest) {
            Ok(payload) => payload,
            Err(why) => {
                unusable(&path, &why);
                return None;
            }
        };
        // SAFETY: `payload` is byte for byte what `Module::serialize` wrote under this
        // key: `verify` checked that the header names this module's sha256 and this
        // engine's key, and that the payload has the length and sha256 recorded when it
        // was written, so a truncated, altered or misplaced file never gets here (and
        // the directory was refused at `open` if other users could write it). wasmtime
        // itself refuses artifacts of another version or configuration. `deserialize`
        // copies the bytes, so what happens to the file later cannot change the module.
        #[expect(unsafe_code, reason = "wasmtime's deserialization trusts its input")]
        let module = match unsafe { Module::deserialize(engine, payload) } {
            Ok(m) => m,
            Err(e) => {
                unusable(&path, &format!("wasmtime refused it: {e}"));
                return None;
            }
        };
        tracing::info!(
            module = %hex::encode(digest),
            path = %path.display(),
            ms = started.elapsed().as_millis() as u64,
            "module cache: loaded the compiled module"
        );
        Some(module)
    }

    /// Writes `module` (with sha256 `digest`) as an entry, then trims the directory to
    /// `max_size`. The first failure is logged as a warning (a cache that cannot be
    /// written costs compile time, nothing else); every failure is returned.
    pub fn store(&self, digest: &[u8; 32], module: &Module) -> Result<PathBuf, String> {
        let path = self.entry_path(digest);
        let result = module
            .serialize()
            .map_err(|e| format!("cannot serialize the module: {e}"))
            .and_then(|payload| self.write_entry(&path, digest, &payload));
        match &result {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "module cache: stored");
                self.evict(&path);
            }
            Err(e) if !self.write_warned.swap(true, Ordering::Relaxed) => tracing::warn!(
                path = %path.display(),
                "module cache: cannot write an entry ({e}); compiled modules are not kept"
            ),
            Err(_) => {}
        }
        result.map(|()| path)
    }

    /// The payload of an entry, once its header proves it is this module's, for this
    /// engine, whole and unaltered; else what is wrong with it.
    fn verify<'b>(&self, bytes: &'b [u8], digest: &[u8; 32]) -> Result<&'b [u8], String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!(
                "truncated: {} bytes, shorter than the header",
                bytes.len()
            ));
        }
        let (header, payload) = bytes.split_at(HEADER_LEN);
        let expected = self.header(digest, payload.len() as u64, [0; 32]);
        if header[..16] != expected[..16] {
            return Err("not a portcullis module cache entry".into());
        }
        if header[16..24] != expected[16..24] {
            return Err("written by a different portcullis (entry format)".into());
        }
        if header[24..56] != expected[24..56] {
            return Err("it holds another module".into());
        }
        if header[56..88] != expected[56..88] {
            return Err("compiled for another engine configuration".into());
        }
        if header[88..96] != expected[88..96] {
            let recorded = u64::from_le_bytes(header[88..96].try_into().unwrap_or_default());
            return Err(format!(
                "truncated or extended: {} payload bytes, {recorded} recorded",
                payload.len()
            ));
        }
        if header[96..] != Sha256::digest(payload)[..] {
            return Err("checksum mismatch: the compiled code was altered".into());
        }
        Ok(payload)
    }

    fn header(&self, digest: &[u8; 32], len: u64, sum: [u8; 32]) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&FORMAT.to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(digest);
        h.extend_from_slice(&self.engine_key);
        h.extend_from_slice(&len.to_le_bytes());
        h.extend_from_slice(&sum);
        h
    }

    /// Writes header and payload to a temporary file in the directory, then renames it
    /// over `path`: a reader sees the old entry, no entry, or the whole new one.
    fn write_entry(&self, path: &Path, digest: &[u8; 32], payload: &[u8]) -> Result<(), String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let header = self.header(digest, payload.len() as u64, Sha256::digest(payload).into());
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            // Readable by all: a cache compiled while building an image (as root, say)
            // serves the user the proxy runs as. Compiled filters hold no secrets.
            .mode(0o644)
            .open(&temp)
            .and_then(|mut f| {
                f.write_all(&header)?;
                f.write_all(payload)
            })
            .and_then(|()| fs::rename(&temp, path));
        // No fsync: an entry torn by a crash fails its checksum and is compiled again.
        written.map_err(|e| {
            let _ = fs::remove_file(&temp);
            e.to_string()
        })
    }

    /// Removes the least recently used entries (by modification time, which a load
    /// refreshes) until the directory holds at most `max_size`, never `keep`; and
    /// temporary files that writers which died left behind.
    fn evict(&self, keep: &Path) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut total = 0u64;
        for entry in dir.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta.modified().unwrap_or(now);
            if name.starts_with(TEMP_PREFIX) {
                if now.duration_since(modified).unwrap_or_default() > STALE_TEMP {
                    let _ = fs::remove_file(entry.path());
                }
            } else if name.ends_with(SUFFIX) && meta.is_file() {
                total += meta.len();
                entries.push((modified, meta.len(), entry.path()));
            }
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_size {
                break;
            }
            if path != keep && fs::remove_file(&path).is_ok() {
                tracing::debug!(path = %path.display(), "module cache: removed (least recently used)");
                total -= len;
            }
        }
    }
}

/// Reads a whole entry, and marks it used for [`DiskCache::evict`] (when allowed to).
fn read_entry(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let _ = file.set_modified(SystemTime::now());
    Ok(bytes)
}

fn unusable(path: &Path, why: &str) {
    tracing::warn!(
        path = %path.display(),
        "module cache: entry not used ({why}); compiling the module again"
    );
}

/// The engine part of an entry's key: everything about the engine that shapes compiled
/// code, wasmtime's version included, plus this cache's format.
fn engine_key(engine: &Engine) -> [u8; 32] {
    /// Feeds `Hash` into sha256, which (unlike std's `DefaultHasher`) is the same in
    /// every build.
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            let sum = self.0.clone().finalize();
            u64::from_le_bytes(sum[..8].try_into().unwrap_or_default())
        }
    }
    let mut h = Sha(Sha256::new());
    h.write(MAGIC);
    FORMAT.hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.finalize().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
