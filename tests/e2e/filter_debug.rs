//! `portcullis filter-test --debug` under a real debugger: `gdb` or `lldb` in batch mode
//! breaks on a source line of one of the repository's filters (Rust: the `ip-allowlist`
//! standard filter built with its debug info; C: the `c-path-guard` example built with
//! `-g`), and the backtrace names that file and line. Needs Debian's `gdb` and `lldb`
//! (and, for C, the clang/wasi-libc toolchain): `.ci/install-toolchains` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::repo_root;

/// A filter module with DWARF, the spec that runs it, and the source line to break on.
struct Target {
    /// What gdb's `break` is given: `FILE:LINE`.
    location: String,
    /// The spec file, next to the module.
    spec: PathBuf,
}

/// Runs `filter-test --debug SPEC` under gdb, stopping at `target.location`, then
/// waits past the callback deadline of a filter run without `--debug` (10 ms, and a
/// 2 s wall-clock backstop) before letting it finish. Returns gdb's whole output.
fn under_gdb(target: &Target, dir: &Path) -> String {
    require("gdb");
    let mut gdb = Command::new("gdb");
    gdb.args(["-nx", "-batch"])
        .args(["-ex", "set breakpoint pending on"])
        .args(["-ex", &format!("break {}", target.location)])
        .args(["-ex", "run", "-ex", "bt", "-ex", "shell sleep 3"])
        .args(["-ex", "delete", "-ex", "continue"])
        .arg("--args");
    run(gdb, target, dir)
}

/// As [`under_gdb`], with lldb: it reads the filter's DWARF through the same GDB JIT
/// interface wasmtime registers it with.
fn under_lldb(target: &Target, dir: &Path) -> String {
    require("lldb");
    let (file, line) = target
        .location
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no line in {:?}", target.location));
    let mut lldb = Command::new("lldb");
    lldb.args(["--no-lldbinit", "--batch"])
        .args(["-o", &format!("breakpoint set --file {file} --line {line}")])
        .args(["-o", "run", "-o", "bt", "-o", "shell sleep 3"])
        .args(["-o", "breakpoint delete --force", "-o", "continue"])
        .arg("--");
    run(lldb, target, dir)
}

/// `debugger` (its arguments given up to the program's) on `filter-test --debug` of
/// the target's spec; its whole output.
fn run(mut debugger: Command, target: &Target, dir: &Path) -> String {
    let out = debugger
        .arg(lean_binary(dir))
        .args(["filter-test", "--debug"])
        .arg(&target.spec)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {debugger:?}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn require(debugger: &str) {
    let found = Command::new(debugger)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{debugger} not found: install Debian's `{debugger}` (apt-get install {debugger}, or .ci/install-toolchains)"
    );
}

/// A copy of the test's portcullis without its own DWARF (as the release binary ships):
/// gdb then reads only the filter's, in seconds rather than the two minutes the dev
/// build's gigabyte of host debug info takes, and `lib.rs` names only the filter's.
fn lean_binary(dir: &Path) -> PathBuf {
    let lean = dir.join("portcullis");
    let out = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(env!("CARGO_BIN_EXE_portcullis"))
        .arg(&lean)
        .output()
        .unwrap_or_else(|e| panic!("cannot run objcopy (Debian `binutils`): {e}"));
    assert!(
        out.status.success(),
        "objcopy --strip-debug: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lean
}

/// The 1-based line of `file` holding `needle`, so that the test follows the source.
fn line_of(file: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    match text.lines().position(|l| l.contains(needle)) {
        Some(i) => i + 1,
        None => panic!("{needle:?} is no longer in {}", file.display()),
    }
}

/// The `ip-allowlist` standard filter built unoptimised with its debug info (the
/// embedded one is built in release, stripped), and a spec that denies one client.
fn rust_target(dir: &Path) -> Target {
    let root = repo_root();
    let target_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| root.join("target"))
        .join("debug-filters");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "ip-allowlist", "--target", "wasm32-wasip1"])
        .arg("--manifest-path")
        .arg(root.join("filters/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap_or_else(|e| panic!("running cargo to build filters/ip-allowlist: {e}"));
    assert!(
        out.status.success(),
        "building filters/ip-allowlist (debug) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let module = target_dir.join("wasm32-wasip1/debug/ip_allowlist.wasm");
    let spec = dir.join("spec.yaml");
    let yaml = format!(
        "filter:
  name: ip-allowlist
  wasm: {}
  config: {{ allow: [10.0.0.0/8] }}
cases:
  - name: an outsider is refused
    request: {{ path: /, client: 192.0.2.1:4000 }}
    expect: {{ status: 403 }}
",
        module.display()
    );
    std::fs::write(&spec, yaml).unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
    let source = root.join("filters/ip-allowlist/src/lib.rs");
    let line = line_of(&source, "let ip = self.client(peer, &forwarded);");
    Target {
        location: format!("ip-allowlist/src/lib.rs:{line}"),
        spec,
    }
}

#[test]
fn gdb_breaks_on_a_rust_filters_source_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let target = rust_target(dir.path());
    let out = under_gdb(&target, dir.path());
    let frame = format!(
        "#0  ip_allowlist::{{impl#1}}::on_request (self=..., req=...) at {}",
        target.location
    );
    assert!(
        out.contains("hit Breakpoint 1, ip_allowlist::") && out.contains(&frame),
        "expected gdb to stop in the filter, with {frame:?} in:\n{}",
        tail(&out)
    );
    // Stopped for longer than any deadline, the filter still finishes its case.
    assert!(
        out.contains("ok an outsider is refused") && out.contains("filter-test: 1 passed"),
        "expected the case to pass after the breakpoint:\n{}",
        tail(&out)
    );
}

/// The `c-path-guard` example built with `-g -O0`, a spec whose case it denies, and the
/// line of its deny; the source file's path (clang records it absolute) and that line.
fn c_target(dir: &Path) -> (Target, PathBuf, usize) {
    let source = repo_root().join("examples/c-path-guard/filter.c");
    let module = dir.join("filter.wasm");
    let out = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O0", "-g", "-mexec-model=reactor", "-I"])
        .arg(repo_root().join("sdk/c"))
        .arg("-o")
        .arg(&module)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run clang: {e}; install clang lld wasi-libc libclang-rt-dev-wasm32 (.ci/install-toolchains)")
        });
    assert!(
        out.status.success(),
        "clang failed (install clang lld wasi-libc libclang-rt-dev-wasm32):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = dir.join("spec.yaml");
    let yaml = "filter: { name: c-path-guard, wasm: filter.wasm, config: /admin }
cases:
  - name: the guarded prefix is refused
    request: { path: /admin/users }
    expect: { status: 403 }
";
    std::fs::write(&spec, yaml).unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
    let line = line_of(&source, "proxy_send_local_response(403");
    let target = Target {
        location: format!("filter.c:{line}"),
        spec,
    };
    (target, source, line)
}

#[test]
fn gdb_breaks_on_a_c_filters_source_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let (target, source, line) = c_target(dir.path());
    let out = under_gdb(&target, dir.path());
    let at = format!(") at {}:{line}", source.display());
    assert!(
        out.contains("#0  on_request_headers (context_id=") && out.contains(&at),
        "expected gdb to stop in on_request_headers at filter.c:{line}:\n{}",
        tail(&out)
    );
    assert!(
        out.contains("filter-test: 1 passed"),
        "expected the case to pass after the breakpoint:\n{}",
        tail(&out)
    );
}

#[test]
fn lldb_breaks_on_a_rust_filters_source_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let target = rust_target(dir.path());
    let out = under_lldb(&target, dir.path());
    let line = target.location.rsplit(':').next().unwrap_or_default();
    // lldb names the frame by its mangled symbol: the SDK's `Filter` impl of the filter.
    let frame = "frame #0: ";
    let function =
        "ip_allowlist..IpAllowlist$u20$as$u20$portcullis_sdk..filter..Filter$GT$::on_request";
    let at = format!(" at lib.rs:{line}:");
    let stop = out
        .lines()
        .find(|l| l.contains(frame) && l.contains(function));
    assert!(
        out.contains("stop reason = breakpoint 1.1") && stop.is_some_and(|l| l.contains(&at)),
        "expected lldb to stop in the filter's on_request at lib.rs:{line}:\n{}",
        tail(&out)
    );
    assert!(
        out.contains("ok an outsider is refused") && out.contains("filter-test: 1 passed"),
        "expected the case to pass after the breakpoint:\n{}",
        tail(&out)
    );
}

#[test]
fn lldb_breaks_on_a_c_filters_source_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let (target, _, line) = c_target(dir.path());
    let out = under_lldb(&target, dir.path());
    let function = "`on_request_headers(context_id=";
    let stop = out
        .lines()
        .find(|l| l.contains("frame #0: ") && l.contains(function));
    assert!(
        stop.is_some_and(|l| l.contains(&format!(" at filter.c:{line}:"))),
        "expected lldb to stop in on_request_headers at filter.c:{line}:\n{}",
        tail(&out)
    );
    assert!(
        out.contains("filter-test: 1 passed"),
        "expected the case to pass after the breakpoint:\n{}",
        tail(&out)
    );
}

/// A debugger's output without what drowns it: gdb's warnings about the JIT image's
/// sections, and the Python traceback Debian's lldb prints without `python3-lldb`.
fn tail(out: &str) -> String {
    let noise = [
        "outside of ELF segments",
        "in <in-memory@",
        "embedded_interpreter",
        "Traceback (most recent",
        "File \"<string>\"",
    ];
    out.lines()
        .filter(|l| !noise.iter().any(|n| l.contains(n)))
        .collect::<Vec<_>>()
        .join("\n")
}
