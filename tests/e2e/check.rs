//! `portcullis check --conf DIR`: exit 0 on a good directory; exit 1 on a broken one,
//! with every error on stderr, one a line, as `FILE:LINE: FIELD.PATH: message`.

use std::ffi::OsStr;
use std::path::Path;

use crate::support::run_to_end;

/// Runs `portcullis check --conf DIR`: exit code, stdout, stderr.
fn check(dir: &Path) -> (Option<i32>, String, String) {
    run_to_end([OsStr::new("check"), OsStr::new("--conf"), dir.as_os_str()])
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[test]
fn check_lists_every_error_of_every_file_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let dir = tmp.path();
    write(
        dir,
        "a.yaml",
        "listeners:
  - name: web
    address: 127.0.0.1:0
    colour: blue
routes:
  - name: api
    matchh: { path: /x }
    upstream: nowhere
  - name: bad-path
    match: { path_prefix: api }
    filters: [ghost]
    upstream: echo@internal
",
    );
    write(
        dir,
        "b.yaml",
        "filters:
  - name: auth
    wasm: modules/missing.wasm
    limits: { memory: 64MB }
upstreams:
  - name: backend
    targets:
      - { address: 127.0.0.1 }
      - { address: 127.0.0.1:9000, weight: 0 }
",
    );
    write(
        dir,
        "c.yml",
        "listeners:
  - name: web
    address: 127.0.0.1:0
  - name: slow
    address: 127.0.0.1:0
    limits: { idle_timeout: 60 }
",
    );
    write(dir, "d.yaml", "routes:\n  - name: x\n    upstream: [a, b\n");
    // Ignored: hidden, editor droppings, other extensions.
    write(dir, ".hidden.yaml", "not: [valid");
    write(dir, "a.yaml~", "not: [valid");
    write(dir, "README.txt", "not: [valid");

    let (code, _, stderr) = check(dir);
    let abs = std::path::absolute(dir).unwrap_or_else(|e| panic!("absolute: {e}"));
    let stderr = stderr.replace(&abs.display().to_string(), "DIR");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            ["a.yaml:", "b.yaml:", "c.yml:", "d.yaml:"]
                .iter()
                .any(|f| l.starts_with(f))
        })
        .collect();
    let expected = [
        "a.yaml:4: listeners.web.colour: unknown field (expected one of: name, address, protocol, tls, proxy_protocol, limits, http3, http2)",
        "a.yaml:7: routes.api.matchh: unknown field (expected one of: name, listeners, match, priority, filters, upstream, upstreams, max_request_body, upgrade_idle_timeout, mirror)",
        "a.yaml:8: routes.api.upstream: unknown upstream `nowhere` (defined: backend, echo@internal)",
        "a.yaml:10: routes.bad-path.match.path_prefix: `api` must start with /",
        "a.yaml:11: routes.bad-path.filters: unknown filter `ghost` (defined: auth)",
        "b.yaml:3: filters.auth.wasm: file not found: `modules/missing.wasm` (DIR/modules/missing.wasm)",
        "b.yaml:4: filters.auth.limits.memory: unknown size unit `MB` in `64MB` (use bytes, KiB, MiB or GiB)",
        "b.yaml:8: upstreams.backend.targets.0.address: `127.0.0.1` is not a host:port address (no port)",
        "b.yaml:9: upstreams.backend.targets.1.weight: must be at least 1, found 0",
        "c.yml:2: listeners.web: duplicate name `web` (first declared at a.yaml:2)",
        "c.yml:6: listeners.slow.limits.idle_timeout: `60` needs a unit (ms, s, m, h or d), e.g. 60s",
    ];
    assert_eq!(
        code,
        Some(1),
        "expected exit 1 for a broken directory; stderr:\n{stderr}"
    );
    assert_eq!(
        errors[..errors.len().saturating_sub(1)],
        expected,
        "expected every config error, in file and line order; stderr:\n{stderr}"
    );
    let yaml_error = errors.last().copied().unwrap_or_default();
    assert!(
        yaml_error.starts_with("d.yaml:3: invalid YAML: "),
        "expected the YAML syntax error of d.yaml at its last line, got {yaml_error:?}; stderr:\n{stderr}"
    );
    assert_eq!(errors.len(), expected.len() + 1, "stderr:\n{stderr}");
}

#[test]
fn check_accepts_a_good_directory_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let dir = tmp.path();
    write(
        dir,
        "listeners.yaml",
        "admin: { address: 127.0.0.1:0 }\nlisteners:\n  - { name: web, address: 127.0.0.1:0 }\n",
    );
    write(
        dir,
        "routes.yml",
        "routes:
  - name: api
    match: { host: '*.example.com', path_prefix: /api, methods: [GET] }
    upstream: backend
  - name: rest
    upstream: echo@internal
upstreams:
  - name: backend
    targets: [{ address: 127.0.0.1:9 }]
    timeouts: { connect: 250ms, request: 2s }
",
    );
    let (code, stdout, stderr) = check(dir);
    assert_eq!(
        code,
        Some(0),
        "expected exit 0 for a good directory; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

#[test]
fn check_of_an_empty_directory_fails() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (code, _, stderr) = check(tmp.path());
    assert_eq!(
        code,
        Some(1),
        "expected exit 1 for an empty directory; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("no *.yaml or *.yml files"),
        "expected the empty directory to be named as the problem; stderr:\n{stderr}"
    );
}
