//! Peers written in Python (the WebSocket and gRPC servers and clients of
//! tests/e2e/upgrade and tests/e2e/grpc, the OTLP receiver of tests/e2e/otel), run on
//! the test venv's Python, which `.ci/install-toolchains` makes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// What `.ci/install-toolchains` puts in the test venv, as pip names them.
pub const TEST_VENV_PACKAGES: &str =
    "websockets==17.4 grpcio==1.85.1 kubernetes-validate==1.37.0 opentelemetry-proto==1.45.2";

/// The test venv's Python (`$PORTCULLIS_TEST_VENV`, by default
/// `~/.cache/portcullis/test-venv`), checked to import `module`. Panics, saying how to
/// make the venv, when it cannot.
pub fn python(module: &str) -> PathBuf {
    let venv = std::env::var_os("PORTCULLIS_TEST_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/portcullis/test-venv"))
        })
        .unwrap_or_else(|| PathBuf::from("test-venv"));
    let python = venv.join("bin").join("python");
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs Python's `{module}` in {venv}.\nInstall it: .ci/install-toolchains, \
         or python3 -m venv {venv} && {venv}/bin/pip install {TEST_VENV_PACKAGES}",
        venv = venv.display()
    );
    python
}

/// `tests/e2e/<path>`.
pub fn script(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/e2e")
        .join(path)
}

/// A server script (needing `module`) that prints `PORT <n>` once it listens;
/// killed on drop.
pub struct PyServer {
    child: Child,
    port: u16,
}

impl PyServer {
    /// Starts `tests/e2e/<path> ARGS` and waits for its port.
    pub fn start(module: &str, path: &str, args: &[&str]) -> PyServer {
        use std::io::BufRead;
        let mut child = Command::new(python(module))
            .arg(script(path))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {path}: {e}"));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{path} {args:?} printed {line:?}, not its port"));
        PyServer { child, port }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the client script `tests/e2e/<path> ARGS` (needing `module`) to its end and
/// returns the JSON it printed; panics with its output if it failed.
pub async fn py_client(module: &str, path: &str, args: &[&str]) -> Value {
    let mut cmd = Command::new(python(module));
    cmd.arg(script(path)).args(args);
    let shown = format!("{path} {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{shown}: {e}"))
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{shown} printed no JSON ({e}):\n{stdout}"))
}
