//! The filter test kit: unit-test a proxy-wasm (or http-wasm) filter without a running
//! proxy.
//!
//! A [`Filter`] names a module (a `.wasm` file, bytes, or a standard filter) and its
//! plugin configuration; [`Filter::load`] configures it with the proxy's own runtime
//! (the same engine, VMs, limits and host functions as `portcullis run`) into a
//! [`Harness`]. [`Harness::run`] sends one [`Request`] through the proxy's own phase
//! driver (`proxy::drive`: forwarding headers, filters, response phase and all), with
//! the route's upstream replaced by an [`UpstreamResponse`], and returns an
//! [`Outcome`]: what went upstream, what the client got, the filter's log lines, its
//! metrics, and its failure if it trapped or ran out of time.
//!
//! ```no_run
//! use portcullis::testkit::{Filter, Request, UpstreamResponse};
//!
//! let harness = Filter::wasm_file("filter.wasm").config("/admin").load()?;
//! let out = harness.run(&Request::get("/admin/users"), &UpstreamResponse::ok())?;
//! assert_eq!(out.response.status, 403, "{out}");
//! # Ok::<(), portcullis::testkit::TestkitError>(())
//! ```
//!
//! The same runs are described in YAML by a spec file ([`spec`]), which
//! `portcullis filter-test SPEC.yaml` loads and checks.
//!
//! Cases run one after another on one VM (as requests do on one worker), so a filter's
//! state carries over from a case to the next. Guest metrics live in the process-wide
//! registry; [`Outcome::metrics`] says how each changed during the run.

mod calls;
mod capture;
mod drive;
pub mod expect;
mod outcome;
mod report;
mod request;
pub mod spec;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use expect::{Expect, Mismatch};
pub use outcome::{
    ClientResponse, FailureReport, Forwarded, HttpCallRecord, LogLevel, LogLine, MetricChange,
    Outcome,
};
pub use report::{Verdict, run_files};
pub use request::{Request, UpstreamResponse};

use crate::config::{FilterConfig, FilterLimits, FilterSource, OnError, Origin};
use crate::wasm::Plugin;

/// Why a filter could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The module file could not be read: check the path (a spec's is relative to it).
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The wasm runtime could not start (the engine or its ticker thread).
    #[error("cannot start the wasm runtime: {0}")]
    Runtime(String),
    /// The module did not compile, does not speak proxy-wasm, or refused its
    /// configuration in `on_configure`: the reason is what `portcullis check` says.
    #[error("filter {name} did not load: {reason}")]
    Configure {
        /// The filter's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The request or upstream response described cannot be an HTTP message.
    #[error("bad {what}: {reason}")]
    BadMessage {
        /// `request` or `upstream response`.
        what: &'static str,
        /// Why (a bad method, path or header).
        reason: String,
    },
    /// [`Harness::run`] was called from inside an async runtime, where it cannot
    /// block: call [`Harness::run_async`] there instead.
    #[error("Harness::run blocks and cannot be called from async code: use run_async")]
    InsideRuntime,
}

/// How long a callback may run under [`debug`]: a person stepping through it in a
/// debugger is not a runaway filter.
const DEBUG_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Runs every filter loaded after this call with its debug info, for `gdb`/`lldb` to
/// step through its source, and without callback deadlines (`filter-test --debug`).
/// Call it before anything else in the process runs wasm: the engine is made once.
pub fn debug() -> Result<(), String> {
    crate::wasm::engine::debug_engine()
}

/// A filter to test: its module, configuration, failure policy and limits. Build one,
/// then [`Filter::load`] it.
#[derive(Debug, Clone)]
pub struct Filter {
    config: FilterConfig,
    bytes: Option<Vec<u8>>,
    calls: Vec<(String, UpstreamResponse)>,
    shadow: bool,
}

impl Filter {
    /// A module read from `path` when loaded.
    pub fn wasm_file(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path.file_stem().map_or_else(
            || "filter".to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        Self::from_config(base_config(&name, FilterSource::Wasm(path)))
    }

    /// A module already in memory.
    pub fn wasm_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        let mut f = Self::from_config(base_config(
            "filter",
            FilterSource::Wasm(PathBuf::from("filter.wasm")),
        ));
        f.bytes = Some(bytes.into());
        f
    }

    /// One of the standard filters embedded in the binary (`rate-limit`, `jwt`, …).
    pub fn builtin(name: &str) -> Self {
        Self::from_config(base_config(name, FilterSource::Builtin(name.to_string())))
    }

    /// A filter exactly as the configuration loader decoded it (what a spec file's
    /// `filter:` becomes).
    pub fn from_config(config: FilterConfig) -> Self {
        Self {
            config,
            bytes: None,
            calls: Vec::new(),
            shadow: false,
        }
    }

    /// Runs the filter in shadow mode, as `{ filter: NAME, shadow: true }` on a route
    /// does: what it would do is in [`Outcome::shadow`], and nothing of it is applied.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// The plugin configuration handed to `on_configure`, as raw bytes (JSON for
    /// structured configuration, as the proxy hands over a YAML mapping).
    pub fn config(mut self, config: impl AsRef<[u8]>) -> Self {
        self.config.config = config.as_ref().to_vec();
        self
    }

    /// The filter's name: its metrics' `filter` label, and what `plugin_name` reads.
    /// Defaults to the module file's stem.
    pub fn name(mut self, name: &str) -> Self {
        self.config.name = name.to_string();
        self
    }

    /// The root id (`plugin_root_id`), for modules that serve several roots.
    pub fn root_id(mut self, root_id: &str) -> Self {
        self.config.root_id = root_id.to_string();
        self
    }

    /// What a failure does: `Deny` (500, the default) or `Allow` (skip the filter).
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.config.on_error = on_error;
        self
    }

    /// The deadline of each callback (default 50 ms, as in the proxy).
    pub fn callback_timeout(mut self, timeout: Duration) -> Self {
        self.config.limits.callback_timeout = timeout;
        self
    }

    /// The VM's memory limit in bytes (default 64 MiB).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.config.limits.memory = bytes;
        self
    }

    /// Answers the filter's `http_call`s to `upstream` with `response` (without it, a
    /// call fails as one to an unreachable upstream does, and the outcome says so).
    pub fn http_call_response(mut self, upstream: &str, response: UpstreamResponse) -> Self {
        self.calls.retain(|(u, _)| u != upstream);
        self.calls.push((upstream.to_string(), response));
        self
    }

    /// Where the filter was declared (a spec file's `filter:`).
    pub(crate) fn origin(&self) -> &Origin {
        &self.config.origin
    }

    /// Compiles the module and configures a first VM (`on_vm_start`, `on_configure`),
    /// as a configuration load does.
    pub fn load(mut self) -> Result<Harness, TestkitError> {
        if crate::wasm::engine::debugging() {
            self.config.limits.callback_timeout = DEBUG_TIMEOUT;
        }
        let runtime =
            crate::extensions::runtime().map_err(|e| TestkitError::Runtime(format!("{e:#}")))?;
        let name = self.config.name.clone();
        let capture = capture::Capture::default();
        let plugin = tracing::dispatcher::with_default(&capture.dispatch(), || {
            match (&self.bytes, &self.config.source) {
                (Some(bytes), _) => runtime.plugin_from_bytes(&self.config, bytes),
                (None, FilterSource::Wasm(path)) => match std::fs::read(path) {
                    // A `sha256:` pin holds here as in the proxy.
                    Ok(bytes) => crate::integrity::check(&self.config, path, &bytes)
                        .map_err(|e| e.to_string())
                        .and_then(|()| runtime.plugin_from_bytes(&self.config, &bytes)),
                    Err(e) => {
                        return Err(TestkitError::Read {
                            path: path.clone(),
                            reason: e.to_string(),
                        });
                    }
                },
                (None, FilterSource::Builtin(_)) => {
                    runtime.plugin(&self.config).map_err(|e| e.message.clone())
                }
            }
            .map_err(|reason| TestkitError::Configure {
                name: name.clone(),
                reason,
            })
        })?;
        let caller = Arc::new(calls::CannedCalls::new(self.calls));
        plugin.set_http_caller(caller.clone());
        Ok(Harness {
            plugins: vec![plugin],
            shadow: if self.shadow { vec![true] } else { Vec::new() },
            caller,
            configure_logs: capture.take().logs,
            blocking: Mutex::new(None),
        })
    }
}

fn base_config(name: &str, source: FilterSource) -> FilterConfig {
    FilterConfig {
        name: name.to_string(),
        source,
        root_id: String::new(),
        config: Vec::new(),
        on_error: OnError::Deny,
        limits: FilterLimits::default(),
        asynchronous: false,
        integrity: Default::default(),
        origin: Origin {
            file: "testkit".into(),
            line: 0,
        },
    }
}

/// A configured filter, ready to run requests through.
pub struct Harness {
    plugins: Vec<Arc<Plugin>>,
    /// Which of `plugins` run in shadow mode (as a route's `shadow`).
    shadow: Vec<bool>,
    caller: Arc<calls::CannedCalls>,
    configure_logs: Vec<LogLine>,
    /// The runtime of [`Harness::run`], made on first use.
    blocking: Mutex<Option<tokio::runtime::Runtime>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this never blocks.
        let rt = self.blocking.get_mut().map(Option::take);
        if let Ok(Some(rt)) = rt {
            rt.shutdown_background();
        }
    }
}

impl Harness {
    /// A harness over plugins the caller configured (the proxy's own tests drive the
    /// standard filters, chained, this way).
    pub fn from_plugins(plugins: Vec<Arc<Plugin>>) -> Self {
        Self {
            plugins,
            shadow: Vec::new(),
            caller: Arc::new(calls::CannedCalls::new(Vec::new())),
            configure_logs: Vec::new(),
            blocking: Mutex::new(None),
        }
    }

    /// What the filter logged while it started and was configured.
    pub fn configure_logs(&self) -> &[LogLine] {
        &self.configure_logs
    }

    /// Runs `request` through the filter; `upstream` answers it if the filter lets it
    /// through. Blocks: from async code use [`Harness::run_async`].
    pub fn run(
        &self,
        request: &Request,
        upstream: &UpstreamResponse,
    ) -> Result<Outcome, TestkitError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(TestkitError::InsideRuntime);
        }
        // One runtime for every blocking run: the VM's root task (timers, queues) is
        // spawned on the runtime of its first request and must outlive that request.
        let mut rt = self.blocking.lock().unwrap_or_else(PoisonError::into_inner);
        if rt.is_none() {
            let built = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| TestkitError::Runtime(e.to_string()))?;
            *rt = Some(built);
        }
        match rt.as_ref() {
            Some(rt) => rt.block_on(self.run_async(request, upstream)),
            None => Err(TestkitError::Runtime("no runtime".into())),
        }
    }

    /// [`Harness::run`] for async code (e.g. a `#[tokio::test]`).
    pub async fn run_async(
        &self,
        request: &Request,
        upstream: &UpstreamResponse,
    ) -> Result<Outcome, TestkitError> {
        drive::run(self, request, upstream).await
    }
}

/// The address a [`Request`] comes from unless it says otherwise.
pub const DEFAULT_CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000);
