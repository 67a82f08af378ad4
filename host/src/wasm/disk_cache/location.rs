//! Where the disk cache is: `$PORTCULLIS_MODULE_CACHE`, else the configuration's
//! `module_cache`, else (for the command line only) the user's cache directory — and
//! the one cache the compiles of this process use.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::DiskCache;
use crate::config::{MODULE_CACHE_MAX_SIZE, ModuleCacheConfig};

/// The environment variable that overrides the configuration: a directory, or `off`.
pub const ENV: &str = "PORTCULLIS_MODULE_CACHE";

/// What the command line found in the environment: `Some` once [`use_defaults`] ran.
static DEFAULTS: OnceLock<Option<EnvOverride>> = OnceLock::new();
static CURRENT: Mutex<Current> = Mutex::new(Current {
    wanted: None,
    opened: None,
});

/// The cache the compiles of this process use.
struct Current {
    /// The (directory, bound) the latest configuration asked for.
    wanted: Option<(PathBuf, u64)>,
    /// The cache opened for it once a module was first needed; `Some(None)`: it could
    /// not be opened (and that was logged).
    opened: Option<Option<Arc<DiskCache>>>,
}
static NO_DEFAULT_WARNED: AtomicBool = AtomicBool::new(false);

/// `PORTCULLIS_MODULE_CACHE`, when set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EnvOverride {
    Off,
    Dir(PathBuf),
}

/// Lets the disk cache default to the user's cache directory and read `$ENV`. The
/// command line calls it for `run` and `check`; without it (a library user, the unit
/// tests) nothing is kept on disk unless the configuration has a `module_cache`.
pub fn use_defaults() {
    let env = std::env::var_os(ENV).filter(|v| !v.is_empty()).map(|v| {
        if v == "off" {
            EnvOverride::Off
        } else {
            let dir = PathBuf::from(v);
            EnvOverride::Dir(std::path::absolute(&dir).unwrap_or(dir))
        }
    });
    let _ = DEFAULTS.set(env);
}

/// Puts the cache a configuration asks for in place for the compiles that follow:
/// `$ENV` when set, else `module_cache`, else (with [`use_defaults`]) the default
/// directory. Called before every build. The directory is opened (made) when a module
/// is first needed, and again only when the answer changes, so a directory that cannot
/// be used is warned about once, and a configuration without filters touches nothing.
pub fn configure(config: Option<&ModuleCacheConfig>) {
    let wanted = wanted(config);
    if let Ok(mut current) = CURRENT.lock()
        && current.wanted != wanted
    {
        *current = Current {
            wanted,
            opened: None,
        };
    }
}

/// The cache [`configure`] put in place, if any (opening it on first use).
pub(crate) fn current() -> Option<Arc<DiskCache>> {
    let mut current = CURRENT.lock().ok()?;
    let Current { wanted, opened } = &mut *current;
    opened
        .get_or_insert_with(|| {
            let (dir, max) = wanted.as_ref()?;
            let engine = &crate::wasm::engine::shared().ok()?.engine;
            match DiskCache::open(dir, *max, engine) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    tracing::warn!(
                        "module cache: {} cannot be used ({e}); modules are compiled at every start",
                        dir.display()
                    );
                    None
                }
            }
        })
        .clone()
}

fn wanted(config: Option<&ModuleCacheConfig>) -> Option<(PathBuf, u64)> {
    resolve(DEFAULTS.get(), config, default_dir)
}

/// The (directory, bound) wanted, given what the command line found in the
/// environment (`None`: not the command line), the configuration, and the default.
fn resolve(
    cli: Option<&Option<EnvOverride>>,
    config: Option<&ModuleCacheConfig>,
    default: impl FnOnce() -> Option<PathBuf>,
) -> Option<(PathBuf, u64)> {
    let max = config.map_or(MODULE_CACHE_MAX_SIZE, |c| c.max_size);
    match (cli.and_then(Option::as_ref), config) {
        (Some(EnvOverride::Off), _) => None,
        (Some(EnvOverride::Dir(dir)), _) => Some((dir.clone(), max)),
        (None, Some(c)) if !c.enabled => None,
        (None, Some(ModuleCacheConfig { dir: Some(dir), .. })) => Some((dir.clone(), max)),
        (None, Some(_)) => default().map(|d| (d, max)),
        (None, None) if cli.is_some() => default().map(|d| (d, max)),
        (None, None) => None,
    }
}

/// The directory `portcullis compile` writes to: `dir` if given, else `$ENV`, else
/// the default — the one `run` uses unless a configuration names another.
pub fn for_compile(dir: Option<&Path>) -> Result<DiskCache, String> {
    let dir = match dir {
        Some(d) => std::path::absolute(d).unwrap_or_else(|_| d.to_owned()),
        None => {
            use_defaults();
            match DEFAULTS.get().and_then(Option::as_ref) {
                Some(EnvOverride::Off) => {
                    return Err(format!("{ENV}=off: no module cache to write to"));
                }
                Some(EnvOverride::Dir(d)) => d.clone(),
                None => default_dir().ok_or("no cache directory: give --cache-dir")?,
            }
        }
    };
    let engine = &crate::wasm::engine::shared()?.engine;
    DiskCache::open(&dir, MODULE_CACHE_MAX_SIZE, engine)
        .map_err(|e| format!("module cache {}: {e}", dir.display()))
}

/// `$XDG_CACHE_HOME/portcullis/modules`, else `$HOME/.cache/portcullis/modules`; when
/// neither variable is usable, `None` and (once) a warning.
fn default_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let found = absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|h| h.join(".cache")))
        .map(|c| c.join("portcullis").join("modules"));
    if found.is_none() && !NO_DEFAULT_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "module cache: neither $XDG_CACHE_HOME nor $HOME is set; modules are compiled at every start (set module_cache.dir or {ENV})"
        );
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn section(enabled: bool, dir: Option<&str>) -> ModuleCacheConfig {
        ModuleCacheConfig {
            enabled,
            dir: dir.map(PathBuf::from),
            max_size: 5,
            origin: Origin::default(),
        }
    }

    #[test]
    fn the_environment_beats_the_configuration_which_beats_the_default() {
        let default = || Some(PathBuf::from("/default"));
        let dir = |d: &str| Some((PathBuf::from(d), 5));
        let env = Some(EnvOverride::Dir("/env".into()));
        let (on, at, off) = (
            section(true, None),
            section(true, Some("/conf")),
            section(false, Some("/conf")),
        );
        // The command line: the default unless told otherwise.
        let cli = Some(&None);
        assert_eq!(
            resolve(cli, None, default),
            Some(("/default".into(), MODULE_CACHE_MAX_SIZE))
        );
        assert_eq!(resolve(cli, Some(&on), default), dir("/default"));
        assert_eq!(resolve(cli, Some(&at), default), dir("/conf"));
        assert_eq!(resolve(cli, Some(&off), default), None);
        assert_eq!(resolve(Some(&env), Some(&off), default), dir("/env"));
        assert_eq!(resolve(Some(&env), Some(&at), default), dir("/env"));
        let env_off = Some(EnvOverride::Off);
        assert_eq!(resolve(Some(&env_off), Some(&at), default), None);
        // No usable default: no cache (the warning is `default_dir`'s).
        assert_eq!(resolve(cli, None, || None), None);
        // A library user: only a configuration that asks.
        assert_eq!(resolve(None, None, default), None);
        assert_eq!(resolve(None, Some(&at), default), dir("/conf"));
        assert_eq!(resolve(None, Some(&on), default), dir("/default"));
    }
}
