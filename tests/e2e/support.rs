//! The end-to-end harness: run the real `portcullis` binary against a configuration
//! written to a temporary directory, with real backends, over real sockets.
//!
//! ```ignore
//! use crate::support::*;
//!
//! #[tokio::test]
//! async fn echo_answers() {
//!     let backend = Backend::echo("a");                 // a real HTTP server on 127.0.0.1:0
//!     let conf = ConfDir::with(&format!(r#"
//! admin: {{ address: 127.0.0.1:0 }}
//! listeners: [{{ name: web, address: 127.0.0.1:0 }}]
//! routes: [{{ name: r, upstream: app }}]
//! upstreams: [{{ name: app, targets: [{{ address: {} }}] }}]
//! "#, backend.addr()));
//!     let proxy = Proxy::start(&conf);                  // waits for the `serving` line
//!     let resp = client().get(proxy.url("web", "/hello")).send().await.unwrap();
//!     assert_eq!(resp.status(), 200);
//!     assert_eq!(backend.requests(), 1);
//! }
//! ```
//!
//! - [`ConfDir`]: a temp directory; `write(name, yaml)` adds or replaces a file (to
//!   trigger a reload), `remove(name)`, `path()`.
//! - [`Proxy`]: `start(&conf)` spawns `portcullis run --conf DIR` with `RUST_LOG=info`
//!   (and, like every run of the binary here, a module cache in a temp dir of its own,
//!   never the user's: [`portcullis`])
//!   and waits (20 s) until it logs `serving` (all listeners bound, workers accepting);
//!   on failure it panics with the captured stderr. `try_start` returns the error
//!   instead (for configs that must fail). `addr("web")` / `url("web", "/p")` /
//!   `admin_url("/status")` use the addresses the proxy logged (`listening
//!   listener=NAME address=IP:PORT`), so always configure `127.0.0.1:0`.
//!   `status().await` is `/status` as JSON; `wait_for_generation(n).await` polls it,
//!   as `wait_for_status(within, what, |status| …)` does for any condition;
//!   `reload()` sends SIGHUP; `signal(libc::SIGTERM)`, `wait_exit(timeout)`, `pid()`,
//!   `rss_kib()`; `logs()` is stderr so far, `wait_for_log(needle, timeout)` waits for
//!   a line. Dropping a `Proxy` kills it.
//! - [`Backend`]: a real hyper server (HTTP/1.1 and h2c) on its own thread and runtime.
//!   `Backend::start(|req: &Seen| Reply::text(200, "hi"))`, or the helpers `echo(id)`
//!   (JSON of what it received plus `"backend": id`, header `x-backend: id`),
//!   `slow(id, delay)`, `status(code)`. `requests()` counts requests, `seen()` returns
//!   them. [`Raw`] is a plain TCP connection (malformed framing, slow heads).
//! - [`Load`]: keep-alive, new-connection and HTTP/2 clients sending requests until
//!   the proxy refuses their connection, every failure recorded (the drain tests).
//! - [`offer`]: a steady request rate from several clients for a while, tallied as
//!   200, 429 and anything else ([`Offered`]): the rate-limit tests' load.
//! - [`h2raw::H2Raw`]: HTTP/2 frame by frame, for abusive clients.
//! - [`PyServer`] / [`py_client`]: peers written in Python (WebSocket, gRPC), run on
//!   the test venv `.ci/install-toolchains` makes; a missing venv fails the test with
//!   the command that makes it.
//! - [`RedisServer`]: a real `redis-server` on a free loopback port (`url()`,
//!   `stop()`, `restart()`, `cli(args)`); a missing binary fails the test saying
//!   what to install.
//! - [`EtcdServer`]: a real one-member `etcd` on free loopback ports with a temp data
//!   dir (`endpoint()`, `put(key, value)`, `delete(key)`, `stop()`, `restart()`,
//!   `restart_elsewhere()`: up on another port, cut off from the proxies); a missing
//!   binary fails the test saying what to install.
//! - [`served_by`]`(proxy, path)`: the route an `echo@internal` answer names.
//! - [`browser::Browser`]: a headless Chromium driven over the DevTools protocol
//!   (`goto`, `eval`, `wait_for`, `viewport`, `screenshot`); a missing `chromium`
//!   fails the test saying `apt-get install chromium`.
//! - [`client()`] is a reqwest client (HTTP/1.1, no system proxy); [`h2_client()`]
//!   speaks HTTP/2 with prior knowledge.

#![allow(dead_code)]

mod backend;
pub mod browser;
mod etcd;
pub mod h2raw;
mod load;
mod offer;
mod python;
mod raw;
mod redis;

#[allow(unused_imports)]
pub use backend::{Backend, Reply, Seen};
pub use etcd::{EtcdServer, EtcdTls};
pub use load::Load;
#[allow(unused_imports)]
pub use offer::{Offered, offer};
pub use python::{PyServer, py_client, python};
pub use raw::Raw;
pub use redis::RedisServer;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a proxy may take to start serving. A start compiles every module its
/// configuration names (each test gets an empty module cache) while the other e2e tests
/// run beside it on two cores: seven standard filters once took over 30 s that way.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

// === ConfDir ===

/// A configuration directory in a temp dir, deleted on drop.
pub struct ConfDir {
    dir: tempfile::TempDir,
}

impl ConfDir {
    /// An empty directory.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-e2e-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        Self { dir }
    }

    /// A directory with `portcullis.yaml` holding `yaml`.
    pub fn with(yaml: &str) -> Self {
        let conf = Self::new();
        conf.write("portcullis.yaml", yaml);
        conf
    }

    /// Writes (or replaces) `name` with `contents`; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Removes `name`.
    pub fn remove(&self, name: &str) {
        let path = self.dir.path().join(name);
        std::fs::remove_file(&path)
            .unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for ConfDir {
    fn default() -> Self {
        Self::new()
    }
}

// === Proxy ===

/// A running `portcullis` process.
pub struct Proxy {
    child: Child,
    /// `$XDG_CACHE_HOME` of the process: where its module cache goes by default.
    _cache_home: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    exited: Option<ExitStatus>,
}

impl Proxy {
    /// Starts `portcullis run --conf DIR` and waits until it serves; panics (with its
    /// stderr) if it does not.
    pub fn start(conf: &ConfDir) -> Proxy {
        Self::try_start(conf).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Proxy::start`], returning what went wrong (with the stderr) instead.
    pub fn try_start(conf: &ConfDir) -> Result<Proxy, String> {
        Self::try_start_with(conf, &[], &[])
    }

    /// Starts with extra `run` arguments (e.g. `["--log-format", "json"]`) and extra
    /// environment variables (e.g. `[("RUST_LOG", "debug")]`). Waits for `serving`
    /// (in either log format).
    pub fn try_start_with(
        conf: &ConfDir,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Proxy, String> {
        let (mut cmd, cache_home) = portcullis();
        cmd.arg("run").arg("--conf").arg(conf.path()).args(args);
        cmd.env("RUST_LOG", "info");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot spawn portcullis: {e}"))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("PORTCULLIS_E2E_ECHO").is_some() {
                        eprintln!("[portcullis] {line}");
                    }
                    if let Ok(mut logs) = logs.lock() {
                        logs.push(line);
                    }
                }
            });
        }
        let mut proxy = Proxy {
            child,
            _cache_home: cache_home,
            logs,
            exited: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if proxy.log_lines().iter().any(|l| is_serving_line(l)) {
                return Ok(proxy);
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                proxy.exited = Some(status);
                // Let the reader thread catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "portcullis exited ({status}) instead of serving; stderr:\n{}",
                    proxy.logs()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "portcullis did not log `serving` within {START_TIMEOUT:?}; stderr so far:\n{}",
                    proxy.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every stderr line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Stderr so far, one string.
    pub fn logs(&self) -> String {
        self.log_lines().join("\n")
    }

    /// Waits until a stderr line contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_lines().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The addresses logged in `listening` lines, the latest per listener.
    pub fn listening(&self) -> HashMap<String, SocketAddr> {
        let mut out = HashMap::new();
        for line in self.log_lines() {
            if let Some((name, addr)) = parse_listening(&line) {
                out.insert(name, addr);
            }
        }
        out
    }

    /// The bound address of listener `name` (`admin` for the admin listener).
    pub fn addr(&self, name: &str) -> SocketAddr {
        match self.listening().get(name) {
            Some(addr) => *addr,
            None => panic!(
                "no `listening listener={name} address=...` line in the proxy's stderr:\n{}",
                self.logs()
            ),
        }
    }

    /// `http://ADDR/path` of listener `name`.
    pub fn url(&self, name: &str, path: &str) -> String {
        format!("http://{}{}", self.addr(name), path)
    }

    /// `http://ADMIN/path`.
    pub fn admin_url(&self, path: &str) -> String {
        self.url("admin", path)
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let url = self.admin_url("/status");
        let resp = client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}\nstderr:\n{}", self.logs()));
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("GET {url} is not JSON: {e}"))
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        let url = self.admin_url("/metrics");
        let resp = client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}\nstderr:\n{}", self.logs()));
        resp.text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: no body: {e}"))
    }

    /// Polls `/status` until `generation` is at least `n` (20 s); returns the status.
    pub async fn wait_for_generation(&self, n: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.status().await;
            if status["generation"].as_u64().is_some_and(|g| g >= n) {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "generation did not reach {n} in 20s; last /status: {status:#}\nstderr:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/status` (every 20 ms, up to `within`) until `holds` is true of it;
    /// returns it. Panics saying what was awaited (`what`), with the last status.
    pub async fn wait_for_status(
        &self,
        within: Duration,
        what: &str,
        holds: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status().await;
            if holds(&status) {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "/status did not show {what} within {within:?}; last: {status:#}\nstderr:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/status` until a reload after `since` (an earlier `last_reload.at`, or
    /// null) failed with an error containing `needle` (20 s); returns the status.
    pub async fn wait_for_reload_error(
        &self,
        needle: &str,
        since: &serde_json::Value,
    ) -> serde_json::Value {
        let what = format!("a refused reload saying {needle:?}");
        self.wait_for_status(Duration::from_secs(20), &what, |status| {
            let last = &status["last_reload"];
            last["ok"] == false
                && last["at"] != *since
                && last["errors"].to_string().contains(needle)
        })
        .await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`).
    #[expect(unsafe_code, reason = "kill(2) has no safe wrapper in libc")]
    pub fn signal(&self, sig: i32) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap_or(0);
        // SAFETY: kill(2) with our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Sends SIGHUP (reload).
    pub fn reload(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Waits for the process to exit; `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited {
            return Some(status);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn is_serving_line(line: &str) -> bool {
    (line.contains(" serving ") && line.contains("generation="))
        || (line.contains("\"message\":\"serving\""))
}

/// Parses `... listening listener=NAME address=IP:PORT` (plain format).
fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    let rest = &line[line.find("listening listener=")? + "listening listener=".len()..];
    let (name, rest) = rest.split_once(' ')?;
    let addr = rest.strip_prefix("address=")?;
    let addr = addr.split_whitespace().next()?;
    Some((name.to_owned(), addr.parse().ok()?))
}

// === clients ===

/// A command running the `portcullis` binary with `$XDG_CACHE_HOME` in a fresh temp
/// dir (returned; deleted on drop), so that its module cache is never the user's
/// default. A test that wants a particular cache sets `PORTCULLIS_MODULE_CACHE`.
pub fn portcullis() -> (Command, tempfile::TempDir) {
    let home = tempfile::Builder::new()
        .prefix("portcullis-e2e-cache-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.env("XDG_CACHE_HOME", home.path())
        .env_remove("PORTCULLIS_MODULE_CACHE");
    (cmd, home)
}

/// Starts a server a test needs (`cmd`, output discarded) and waits up to `within`
/// until `ready` says it serves. `None` when it exited first (its port was taken, say)
/// or never got ready (it is killed then). A missing binary fails the test with the
/// Debian `package` to install.
pub fn start_server(
    cmd: &mut Command,
    package: &str,
    within: Duration,
    ready: impl Fn() -> bool,
) -> Option<Child> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let spawned = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{name} is not installed: run `apt-get install -y {package}` \
             (.ci/install-toolchains installs it)"
        ),
        Err(e) => panic!("cannot start {name}: {e}"),
    };
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ready() {
            return Some(child);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Runs the `portcullis` binary with `args` (access log off) to completion: exit code,
/// stdout, stderr.
pub fn run_to_end<I, S>(args: I) -> (Option<i32>, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let (mut cmd, _cache_home) = portcullis();
    let out = cmd
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run portcullis {}: {e}", shown.join(" ")));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The route that served `GET path` on listener `web`, from the `echo@internal`
/// answer's JSON; or the status if it was not an echo answer (e.g. `404`).
pub async fn served_by(proxy: &Proxy, path: &str) -> String {
    let url = proxy.url("web", path);
    let resp = client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}\nstderr:\n{}", proxy.logs()));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(json) if status == 200 => json["route"]
            .as_str()
            .unwrap_or("<no route field>")
            .to_string(),
        _ => status.to_string(),
    }
}

/// The value of the sample `name{labels}` on a Prometheus page, 0 when absent.
pub fn sample(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// An HTTP/1.1 client that ignores any system proxy settings.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("cannot build a client: {e}"))
}

/// GETs `url` with `headers` using [`client`]; panics when no response comes.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// An HTTP/2 client with prior knowledge (h2c), no system proxy.
pub fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("cannot build an h2 client: {e}"))
}

/// The repository's root (host/ is the package; the repository is its parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}
