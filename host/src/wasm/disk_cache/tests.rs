//! The disk cache on real directories with real compiled modules: what is stored loads
//! back and runs; a damaged, misplaced or unwritable entry is refused, never loaded.

use std::time::Duration;

use wasmtime::Store;

use super::*;
use crate::config::MODULE_CACHE_MAX_SIZE;
use crate::wasm::engine::{ModuleOrigin, digest, shared};

fn engine() -> &'static Engine {
    &shared().unwrap().engine
}

/// A tiny module whose export `f` returns `n`, its bytes' sha256, and it compiled.
fn module(n: i32) -> ([u8; 32], Module) {
    let wat = format!(r#"(module (func (export "f") (result i32) i32.const {n}))"#);
    (digest(wat.as_bytes()), Module::new(engine(), &wat).unwrap())
}

fn run(module: &Module) -> i32 {
    let mut store = Store::new(engine(), ());
    store.set_epoch_deadline(1 << 40);
    let instance = wasmtime::Instance::new(&mut store, module, &[]).unwrap();
    let f = instance.get_typed_func::<(), i32>(&mut store, "f").unwrap();
    f.call(&mut store, ()).unwrap()
}

fn open(dir: &Path) -> DiskCache {
    DiskCache::open(dir, MODULE_CACHE_MAX_SIZE, engine()).unwrap()
}

#[test]
fn a_stored_module_loads_back_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir.path().join("made/on/first/use"));
    let (key, compiled) = module(7);
    assert!(
        cache.load(engine(), &key).is_none(),
        "an empty cache had it"
    );
    let path = cache.store(&key, &compiled).unwrap();
    assert_eq!(path, cache.entry_path(&key));
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o022, 0, "an entry others can write: {mode:o}");
    let loaded = cache
        .load(engine(), &key)
        .expect("the stored entry did not load");
    assert_eq!(run(&loaded), 7);
}

#[test]
fn a_damaged_entry_is_refused_and_can_be_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let (key, compiled) = module(11);
    let path = cache.store(&key, &compiled).unwrap();
    let good = fs::read(&path).unwrap();
    let last = good.len() - 1;
    // One flipped byte in each header field, and at the start, middle and end of the
    // payload.
    let middle = HEADER_LEN + (good.len() - HEADER_LEN) / 2;
    let flips = [0, 17, 30, 60, 90, 100, HEADER_LEN + 40, middle, last];
    let mut damaged: Vec<(String, Vec<u8>)> = flips
        .iter()
        .map(|&at| {
            let mut bytes = good.clone();
            bytes[at] ^= 0x20;
            (format!("byte {at} flipped"), bytes)
        })
        .collect();
    damaged.push(("truncated to half".into(), good[..good.len() / 2].to_vec()));
    damaged.push(("truncated into the header".into(), good[..40].to_vec()));
    damaged.push(("empty".into(), Vec::new()));
    damaged.push(("a byte appended".into(), [&good[..], b"x"].concat()));
    for (what, bytes) in damaged {
        fs::write(&path, &bytes).unwrap();
        assert!(
            cache.load(engine(), &key).is_none(),
            "an entry with {what} was loaded"
        );
    }
    cache.store(&key, &compiled).unwrap();
    assert_eq!(run(&cache.load(engine(), &key).unwrap()), 11);
}

#[test]
fn an_entry_under_another_modules_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let (key, compiled) = module(1);
    let (other, _) = module(2);
    let path = cache.store(&key, &compiled).unwrap();
    fs::copy(&path, cache.entry_path(&other)).unwrap();
    assert!(
        cache.load(engine(), &other).is_none(),
        "module 1's code was loaded as module 2"
    );
}

#[test]
fn a_directory_that_is_a_file_or_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = DiskCache::open(&file, 1, engine()).err().unwrap();
    assert!(err.contains("not a directory"), "{err}");
    let err = DiskCache::open(&file.join("below"), 1, engine())
        .err()
        .unwrap();
    assert!(err.contains("cannot create it"), "{err}");
    let shared_dir = dir.path().join("shared");
    fs::create_dir(&shared_dir).unwrap();
    fs::set_permissions(&shared_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let err = DiskCache::open(&shared_dir, 1, engine()).err().unwrap();
    assert!(err.contains("writable by other users"), "{err}");
}

#[test]
fn a_cache_that_cannot_be_written_says_so_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let cache = open(&cache_dir);
    // Even root cannot write entries into a directory that became a file.
    fs::remove_dir(&cache_dir).unwrap();
    fs::write(&cache_dir, "x").unwrap();
    let (key, compiled) = module(3);
    assert!(cache.store(&key, &compiled).is_err());
    assert!(cache.load(engine(), &key).is_none());
}

#[test]
fn past_its_bound_the_least_recently_used_entries_go() {
    let dir = tempfile::tempdir().unwrap();
    let (a, module_a) = module(21);
    let (b, module_b) = module(22);
    let (c, module_c) = module(23);
    let probe = open(dir.path());
    let size = fs::metadata(probe.store(&a, &module_a).unwrap())
        .unwrap()
        .len();
    // Room for two entries.
    let cache = DiskCache::open(dir.path(), size * 2 + size / 2, engine()).unwrap();
    let old = SystemTime::now() - Duration::from_secs(100);
    File::open(cache.store(&b, &module_b).unwrap())
        .unwrap()
        .set_modified(old)
        .unwrap();
    File::open(cache.entry_path(&a))
        .unwrap()
        .set_modified(old - Duration::from_secs(100))
        .unwrap();
    // Using `a` makes `b` the least recently used.
    assert!(cache.load(engine(), &a).is_some());
    let stale = dir.path().join(format!("{TEMP_PREFIX}left-behind"));
    fs::write(&stale, "x").unwrap();
    File::open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - 2 * STALE_TEMP)
        .unwrap();
    cache.store(&c, &module_c).unwrap();
    assert!(
        cache.entry_path(&a).exists(),
        "the recently used entry went"
    );
    assert!(
        !cache.entry_path(&b).exists(),
        "the least recently used stayed"
    );
    assert!(cache.entry_path(&c).exists(), "the new entry went");
    assert!(!stale.exists(), "a stale temporary file stayed");
}

#[test]
fn a_proxy_wasm_module_from_the_cache_prepares_like_a_compiled_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let shared = shared().unwrap();
    let bytes = crate::wasm::tests::probe_wasm();
    let key = digest(bytes);
    let (module, origin) = shared.module(bytes, &key, Some(&cache)).unwrap();
    assert_eq!(origin, ModuleOrigin::Compiler);
    let compiled = shared.prepare(module, origin, key).unwrap();
    cache.store(&key, compiled.pre.module()).unwrap();
    let (module, origin) = shared.module(bytes, &key, Some(&cache)).unwrap();
    assert_eq!(origin, ModuleOrigin::DiskCache);
    let loaded = shared.prepare(module, origin, key).unwrap();
    assert_eq!(loaded.abi, compiled.abi);
    assert_eq!(loaded.headers_only, compiled.headers_only);
    assert_eq!(loaded.hash, compiled.hash);
}
