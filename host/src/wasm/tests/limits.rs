//! The sandbox: deadlines, memory limits, traps at configure time, bad modules.

use std::time::{Duration, Instant};

use super::*;
use crate::wasm::state::AbiVersion;

#[tokio::test]
async fn a_spinning_filter_fails_its_request_and_the_next_one_succeeds() {
    let mut f = filter("spin", "spin:sp");
    f.limits.callback_timeout = Duration::from_millis(100);
    let p = plugin(&f);
    let started = Instant::now();
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    let f = failed(
        chain
            .request_headers(&mut request("/", &[("x-spin", "1")]), true)
            .await,
    );
    assert_eq!((f.filter.as_str(), f.failure.kind()), ("spin", "timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "deadline not enforced: {:?}",
        started.elapsed()
    );
    chain.finish().await;
    assert!(
        failures("spin", "timeout") >= 1,
        "the timeout was not counted"
    );
    let mut chain = HttpFilters::new(&[p], info());
    cont(chain.request_headers(&mut request("/", &[]), true).await);
    chain.finish().await;
}

#[tokio::test]
async fn a_filter_that_spins_again_is_suspended_without_entering_it() {
    let mut f = filter("spin-again", "spin:sa");
    f.limits.callback_timeout = Duration::from_millis(20);
    let p = plugin(&f);
    let spin = || request("/", &[("x-spin", "1")]);
    for _ in 0..2 {
        let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
        let f = failed(chain.request_headers(&mut spin(), true).await);
        assert_eq!(f.failure.kind(), "timeout");
        chain.finish().await;
    }
    assert_eq!(failures("spin-again", "timeout"), 2);
    // Suspended: requests fail at once, with its on_error, and nothing runs the guest.
    for _ in 0..20 {
        let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
        let f = failed(chain.request_headers(&mut spin(), true).await);
        assert_eq!(f.failure.kind(), "suspended");
        chain.finish().await;
    }
    assert_eq!(
        failures("spin-again", "timeout"),
        2,
        "a suspended filter was entered"
    );
    assert_eq!(failures("spin-again", "suspended"), 20);
    // on_error: allow lets the suspended filter's requests through.
    let mut allow = f.clone();
    allow.name = "spin-again-allow".into();
    allow.on_error = crate::config::OnError::Allow;
    let p = plugin(&allow);
    for _ in 0..3 {
        let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
        cont(chain.request_headers(&mut spin(), true).await);
        chain.finish().await;
    }
    assert_eq!(failures("spin-again-allow", "timeout"), 2);
    assert_eq!(failures("spin-again-allow", "suspended"), 1);
}

#[tokio::test]
async fn an_async_spinning_filter_does_not_stall_other_filters_on_its_worker() {
    let mut f = filter("spin-share", "spin:ss");
    f.limits.callback_timeout = Duration::from_millis(500);
    f.asynchronous = true;
    let spin = plugin(&f);
    let other = plugin(&filter("spin-other", "headers:so"));
    let slow = async {
        let mut chain = HttpFilters::new(&[spin], info());
        let d = chain
            .request_headers(&mut request("/", &[("x-spin", "1")]), true)
            .await;
        chain.finish().await;
        (Instant::now(), d)
    };
    let fast = async {
        // Let the spinner start first.
        tokio::task::yield_now().await;
        let mut chain = HttpFilters::new(&[other], info());
        let d = chain.request_headers(&mut request("/", &[]), true).await;
        chain.finish().await;
        (Instant::now(), d)
    };
    let ((slow_at, slow_d), (fast_at, fast_d)) = tokio::join!(slow, fast);
    assert_eq!(failed(slow_d).failure.kind(), "timeout");
    cont(fast_d);
    assert!(
        fast_at < slow_at,
        "the other route's request waited for the spinning filter"
    );
}

#[tokio::test]
async fn a_filter_past_its_memory_limit_fails_and_is_recreated() {
    let mut f = filter("oom", "oom:om");
    f.limits.memory = 16 * 1024 * 1024;
    // Generous, so that on a loaded machine the memory limit is what stops it.
    f.limits.callback_timeout = Duration::from_secs(10);
    let p = plugin(&f);
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    let f = failed(
        chain
            .request_headers(&mut request("/", &[("x-oom", "1")]), true)
            .await,
    );
    assert_eq!(f.failure.kind(), "memory", "{f}");
    chain.finish().await;
    assert!(
        failures("oom", "memory") >= 1,
        "the memory failure was not counted as such"
    );
    let mut chain = HttpFilters::new(&[p], info());
    cont(chain.request_headers(&mut request("/", &[]), true).await);
    chain.finish().await;
}

#[test]
fn configure_failures_are_config_errors_naming_the_filter() {
    let rt = Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("probe.wasm");
    std::fs::write(&path, probe_wasm()).unwrap_or_else(|e| panic!("{e}"));
    for (mode, expect) in [
        ("trap_configure", "on_configure trapped"),
        (
            "reject_configure",
            "on_configure rejected its configuration",
        ),
    ] {
        let mut f = filter("bad", mode);
        f.source = FilterSource::Wasm(path.clone());
        let err = match rt.plugin(&f) {
            Ok(_) => panic!("{mode}: the configuration was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.starts_with("filters.yaml:7: filters.bad: "),
            "{mode}: {err}"
        );
        assert!(
            err.contains(expect),
            "{mode}: expected {expect:?} in {err:?}"
        );
    }
}

#[test]
fn bad_modules_are_refused_with_a_reason() {
    let rt = Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let f = filter("junk", "");
    let cases: [(&[u8], &str); 3] = [
        (b"\0asm\x01\0\0\0\x99garbage", "not a valid wasm module"),
        (b"hello, I am not wasm", "not a valid wasm module"),
        (
            b"(module (memory (export \"memory\") 1) (func (export \"_start\")))",
            "not a proxy-wasm module",
        ),
    ];
    for (bytes, expect) in cases {
        match rt.plugin_from_bytes(&f, bytes) {
            Ok(_) => panic!("{expect}: accepted"),
            Err(e) => assert!(e.contains(expect), "expected {expect:?}, got {e:?}"),
        }
    }
    let missing = FilterConfig {
        source: FilterSource::Wasm("/nonexistent/x.wasm".into()),
        ..filter("missing", "")
    };
    match rt.plugin(&missing) {
        Ok(_) => panic!("a missing file was accepted"),
        Err(e) => assert!(
            e.to_string().contains("cannot read /nonexistent/x.wasm"),
            "{e}"
        ),
    }
}

#[test]
fn unknown_host_imports_are_named() {
    let rt = Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let wat = br#"(module
        (import "other" "thing" (func))
        (memory (export "memory") 1)
        (func (export "proxy_abi_version_0_2_1"))
        (func (export "malloc") (param i32) (result i32) (i32.const 0)))"#;
    match rt.plugin_from_bytes(&filter("imports", ""), wat) {
        Ok(_) => panic!("accepted a module importing other.thing"),
        Err(e) => assert!(e.contains("other") && e.contains("thing"), "{e}"),
    }
}

#[test]
fn modules_are_compiled_once_per_content() {
    let shared = engine::shared().unwrap_or_else(|e| panic!("{e}"));
    let a = shared
        .compile(probe_wasm())
        .unwrap_or_else(|e| panic!("{e}"));
    let b = shared
        .compile(probe_wasm())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(Arc::ptr_eq(&a, &b), "the same bytes compiled twice");
    assert_eq!(a.abi, AbiVersion::V0_2_1);
}

/// A module probing the host with bad pointers and WASI calls from `on_configure`; it
/// accepts its configuration only if every answer is the expected one.
const POKE: &str = r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_unstable" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "plugin_name")
  (data (i32.const 16) "hello from wat\n")
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    ;; a message past the end of memory: INVALID_MEMORY_ACCESS (6)
    (if (i32.ne (call $log (i32.const 2) (i32.const 65530) (i32.const 100)) (i32.const 6))
      (then (return (i32.const 0))))
    ;; a length that wraps around: INVALID_MEMORY_ACCESS
    (if (i32.ne (call $log (i32.const 2) (i32.const 8) (i32.const -1)) (i32.const 6))
      (then (return (i32.const 0))))
    ;; return slots out of bounds: INVALID_MEMORY_ACCESS
    (if (i32.ne (call $buf (i32.const 7) (i32.const 0) (i32.const -1) (i32.const -8) (i32.const 200))
                (i32.const 6))
      (then (return (i32.const 0))))
    ;; the plugin configuration with max_size = usize::MAX: OK, all 4 bytes
    (if (i32.ne (call $buf (i32.const 7) (i32.const 0) (i32.const -1) (i32.const 200) (i32.const 204))
                (i32.const 0))
      (then (return (i32.const 0))))
    (if (i32.ne (i32.load (i32.const 204)) (i32.const 4)) (then (return (i32.const 0))))
    ;; a property, handed back through malloc
    (if (i32.ne (call $prop (i32.const 0) (i32.const 11) (i32.const 208) (i32.const 212)) (i32.const 0))
      (then (return (i32.const 0))))
    (if (i32.ne (i32.load (i32.const 212)) (i32.const 4)) (then (return (i32.const 0))))
    ;; a malformed map: BAD_ARGUMENT (2) or NOT_FOUND (1) outside a stream, never a trap
    (drop (call $pairs (i32.const 0) (i32.const 16) (i32.const 15)))
    ;; WASI: stdout to the log, a clock, randomness, no files, no environment
    (i32.store (i32.const 300) (i32.const 16))
    (i32.store (i32.const 304) (i32.const 15))
    (if (i32.ne (call $write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 308)) (i32.const 0))
      (then (return (i32.const 0))))
    (if (i32.ne (i32.load (i32.const 308)) (i32.const 15)) (then (return (i32.const 0))))
    (if (i32.ne (call $write (i32.const 9) (i32.const 300) (i32.const 1) (i32.const 308)) (i32.const 8))
      (then (return (i32.const 0))))
    (if (i32.ne (call $clock (i32.const 0) (i64.const 1) (i32.const 320)) (i32.const 0))
      (then (return (i32.const 0))))
    (if (i64.eqz (i64.load (i32.const 320))) (then (return (i32.const 0))))
    (if (i32.ne (call $random (i32.const 400) (i32.const 32)) (i32.const 0))
      (then (return (i32.const 0))))
    (if (i32.ne (call $random (i32.const 65530) (i32.const 32)) (i32.const 21))
      (then (return (i32.const 0))))
    (if (i32.ne (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 0)
                            (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 500))
                (i32.const 52))
      (then (return (i32.const 0))))
    (if (i32.ne (call $env (i32.const 600) (i32.const 604)) (i32.const 0))
      (then (return (i32.const 0))))
    (i32.eqz (i32.load (i32.const 600))))
)"#;

#[test]
fn guest_pointers_are_checked_and_wasi_grants_nothing() {
    let rt = Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let f = filter("poke", "abcd");
    if let Err(e) = rt.plugin_from_bytes(&f, POKE.as_bytes()) {
        panic!("the module's checks of the host failed: {e}");
    }
}

#[tokio::test]
async fn more_header_names_than_a_map_holds_fail_the_filter_not_the_worker() {
    // Found by fuzzing the header maps: past `http`'s limit of distinct names the
    // host's `append` panicked, inside the guest's call, on the worker's thread.
    let p = plugin(&filter("flood", "flood"));
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    let mut req = request("/", &[]);
    let f = failed(chain.request_headers(&mut req, true).await);
    assert!(
        matches!(&f.failure, Failure::Trap(_)),
        "the SDK traps on the host's BAD_ARGUMENT: {f}"
    );
    chain.finish().await;

    // A local response with as many headers keeps what fits.
    let p = plugin(&filter("flood-local", "flood_local"));
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    let mut req = request("/", &[]);
    let r = respond(chain.request_headers(&mut req, true).await);
    assert_eq!(r.status(), 200);
    assert!(
        (20_000..30_000).contains(&r.headers().len()),
        "{} headers",
        r.headers().len()
    );
    assert_eq!(header(r.headers(), "x-f-0"), "v");
    chain.finish().await;
}
