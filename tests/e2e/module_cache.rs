//! Compiled modules on disk, through the real binary: `portcullis compile` fills the
//! cache and `run` loads from it (as `/status` and the log say); a damaged entry is
//! detected, compiled again and rewritten, and requests still pass; a cache that cannot
//! be used costs compile time only; `check` warms the cache `run` reads.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::support::{ConfDir, Proxy, run_to_end};
use crate::wasm_binary;

/// A config directory serving the probe from `probe.wasm` (copying `x-in` into
/// `x-seen-tag`) on every path, with `extra` as a second YAML file.
fn conf(extra: &str) -> ConfDir {
    let dir = wasm_binary::conf(
        "  - { name: tag, wasm: probe.wasm, config: \"headers:tag\" }",
        "  - { name: r, filters: [tag], upstream: echo@internal }",
    );
    dir.write("extra.yaml", extra);
    dir
}

/// Starts the proxy on `conf` with `PORTCULLIS_MODULE_CACHE=cache` (when given).
fn start(conf: &ConfDir, cache: Option<&Path>) -> Proxy {
    let cache = cache.map(|c| c.display().to_string());
    let envs: Vec<(&str, &str)> = cache
        .iter()
        .map(|c| ("PORTCULLIS_MODULE_CACHE", c.as_str()))
        .collect();
    Proxy::try_start_with(conf, &[], &envs).unwrap_or_else(|e| panic!("{e}"))
}

/// `/status`'s `filters[0].module.loaded_from`, after checking a request passes the
/// filter.
async fn filter_works_and_came_from(proxy: &Proxy) -> String {
    wasm_binary::tagged(proxy, "/", "cached").await;
    let status = proxy.status().await;
    let module = &status["filters"][0]["module"];
    assert_eq!(
        module["sha256"].as_str().map(str::len),
        Some(64),
        "{status:#}"
    );
    module["loaded_from"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Runs `portcullis compile ARGS…`; exit code, stdout, stderr.
fn compile(args: &[&OsStr]) -> (Option<i32>, String, String) {
    run_to_end(
        [OsStr::new("compile")]
            .into_iter()
            .chain(args.iter().copied()),
    )
}

/// The one cache entry in `dir`.
fn entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "expected one entry in {}: {entries:?}",
        dir.display()
    );
    entries[0].clone()
}

#[tokio::test]
async fn compile_then_run_loads_the_module_from_disk() {
    let conf = conf("");
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let wasm = conf.path().join("probe.wasm");
    let args = [
        OsStr::new("--cache-dir"),
        cache.path().as_os_str(),
        wasm.as_os_str(),
    ];
    let (code, out, err) = compile(&args);
    assert_eq!(code, Some(0), "compile failed; stderr:\n{err}");
    let written = entry(cache.path());
    assert!(
        out.contains("proxy-wasm 0.2.1, compiled in") && out.contains(&*written.to_string_lossy()),
        "compile should say what it wrote where:\n{out}"
    );
    let (code, out, err) = compile(&args);
    assert_eq!(code, Some(0), "second compile failed; stderr:\n{err}");
    assert!(out.contains("already compiled"), "{out}");

    let proxy = start(&conf, Some(cache.path()));
    assert_eq!(filter_works_and_came_from(&proxy).await, "disk_cache");
    let logs = proxy.logs();
    assert!(
        logs.contains("module cache: loaded the compiled module"),
        "{logs}"
    );
    assert!(
        !logs.contains("wasm: module compiled"),
        "cranelift ran with a warm cache:\n{logs}"
    );
}

#[tokio::test]
async fn a_damaged_entry_is_compiled_again_and_rewritten() {
    let conf = conf("");
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    drop(start(&conf, Some(cache.path())));
    let path = entry(cache.path());
    let good = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let damages = [
        ("flipped", flipped, "checksum mismatch"),
        ("truncated", good[..good.len() - 100].to_vec(), "truncated"),
    ];
    for (what, bytes, reason) in damages {
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        let proxy = start(&conf, Some(cache.path()));
        assert_eq!(
            filter_works_and_came_from(&proxy).await,
            "compiler",
            "a {what} entry was loaded"
        );
        let logs = proxy.logs();
        assert!(
            logs.contains("module cache: entry not used") && logs.contains(reason),
            "a {what} entry should be reported ({reason}):\n{logs}"
        );
        assert_eq!(
            std::fs::read(&path).ok().as_ref(),
            Some(&good),
            "the {what} entry was not rewritten"
        );
    }
    let proxy = start(&conf, Some(cache.path()));
    assert_eq!(filter_works_and_came_from(&proxy).await, "disk_cache");
}

#[tokio::test]
async fn a_cache_dir_that_cannot_be_used_does_not_stop_the_proxy() {
    // A directory below a regular file can be neither made nor written, even by root.
    let blocked = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(blocked.path().join("file"), "x").unwrap_or_else(|e| panic!("{e}"));
    let conf = conf("module_cache: { dir: file/modules }\n");
    std::fs::write(conf.path().join("file"), "x").unwrap_or_else(|e| panic!("{e}"));
    let proxy = start(&conf, None);
    assert_eq!(filter_works_and_came_from(&proxy).await, "compiler");
    let warnings: Vec<String> = proxy
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("module cache:"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning expected: {warnings:#?}");
    assert!(warnings[0].contains("cannot be used"), "{warnings:#?}");

    let target = blocked.path().join("file/modules");
    let wasm = conf.path().join("probe.wasm");
    let (code, out, err) = compile(&[
        OsStr::new("--cache-dir"),
        target.as_os_str(),
        wasm.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "compile into nowhere succeeded:\n{out}");
    assert!(err.contains("cannot create it"), "{err}");
}

#[tokio::test]
async fn check_leaves_the_modules_compiled_for_run() {
    let conf = conf("");
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (mut cmd, _) = crate::support::portcullis();
    let out = cmd
        .args([
            OsStr::new("check"),
            "--conf".as_ref(),
            conf.path().as_os_str(),
        ])
        .env("XDG_CACHE_HOME", home.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run portcullis check: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The default directory, under $XDG_CACHE_HOME.
    let dir = home.path().join("portcullis/modules");
    entry(&dir);
    let home_env = home.path().display().to_string();
    let proxy = Proxy::try_start_with(&conf, &[], &[("XDG_CACHE_HOME", home_env.as_str())])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(filter_works_and_came_from(&proxy).await, "disk_cache");
}

#[test]
fn compile_refuses_what_is_not_a_proxy_wasm_module() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let empty = files.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x01\0\0\0").unwrap_or_else(|e| panic!("{e}"));
    let text = files.path().join("text.wasm");
    std::fs::write(&text, "hello").unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = compile(&[
        OsStr::new("--cache-dir"),
        cache.path().as_os_str(),
        empty.as_os_str(),
        text.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    let line = |name: &str| {
        err.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{err}"))
            .to_string()
    };
    assert!(
        line("empty.wasm").contains("not a proxy-wasm module"),
        "{err}"
    );
    assert!(
        line("text.wasm").contains("not a valid wasm module"),
        "{err}"
    );
    let written = std::fs::read_dir(cache.path()).map_or(0, |d| d.count());
    assert_eq!(written, 0, "a refused module was cached");
}
