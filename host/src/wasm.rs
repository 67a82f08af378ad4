//! The proxy-wasm host: one wasmtime engine, modules compiled once per content hash,
//! one VM per filter per worker, limits and traps.
//!
//! A tour: [`Runtime::plugin`] compiles a filter's module (cached by sha256), checks it
//! speaks proxy-wasm and runs a first VM through `on_vm_start` / `on_configure`; the
//! resulting [`Plugin`] is shared by all workers. Each worker makes its own VM of each
//! plugin on first use (`worker`), and [`HttpFilters`] walks a request through the
//! contexts of its route's filters (`chain`). Host functions live in `abi/` (proxy-wasm
//! 0.2.x) and `wasi` (WASI preview 1, nothing granted). A guest that traps, runs past
//! its deadline or grows past its memory limit fails its request and loses its VM.
//! Modules of the other ABI, http-wasm (Traefik's plugins), run in the same chains,
//! slots and sandbox (`httpwasm`).

mod abi;
pub mod body;
mod breaker;
mod calls;
mod chain;
pub mod disk_cache;
pub(crate) mod engine;
pub mod foreign;
mod fuse;
mod grpc;
mod httpwasm;
mod memory;
mod metrics;
pub mod precompile;
pub mod redis;
mod shared;
mod state;
pub(crate) mod trace;
mod vm;
mod wasi;
mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::config::{ConfigError, FilterConfig, FilterSource};

pub use abi::properties::set_node;
pub use body::{FilteredBody, LocalSlot, SharedFilters};
pub use calls::{CallFuture, HttpCaller, StreamFuture};
pub use chain::{HttpFilters, ShadowDecision};
pub use engine::ModuleOrigin;
pub use foreign::{Extensions, ForeignError, ForeignFunction};
pub use metrics::failures;
pub use vm::Failure;

/// The fuzz target of the ABI's guest-memory decoding (see [`crate::fuzzing`]).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use abi::fuzz::host_calls as fuzz_host_calls;

/// The wasm runtime: a handle on the process-wide engine, module cache and epoch
/// ticker, and the host extensions its filters may call.
#[derive(Clone)]
pub struct Runtime {
    extensions: Extensions,
}

impl Runtime {
    /// Creates (on first use) the engine and its ticker thread. The runtime offers no
    /// host extension until [`Runtime::with_extension`] adds one; the proxy's own set
    /// is put in by `crate::extensions::runtime`.
    pub fn new() -> anyhow::Result<Self> {
        engine::shared().map_err(anyhow::Error::msg)?;
        Ok(Self {
            extensions: Extensions::default(),
        })
    }

    /// This runtime, with `f` callable by its filters as `name` through
    /// `proxy_call_foreign_function` (see [`foreign`]). Plugins made before keep the
    /// extensions they were made with.
    pub fn with_extension(mut self, name: &str, f: Arc<dyn ForeignFunction>) -> Self {
        self.extensions = self.extensions.with(name, f);
        self
    }

    /// This runtime, with `redis` answering its filters' `proxy_redis_call`s (see
    /// [`redis`]). Without it every such call is refused.
    pub fn with_redis(mut self, redis: Arc<dyn redis::RedisCalls>) -> Self {
        self.extensions = self.extensions.with_redis(redis);
        self
    }

    /// Compiles (or takes from the cache) the module of `filter`, instantiates a first
    /// VM and runs `on_vm_start` / `on_configure`: a filter that fails any of this is a
    /// config error naming it.
    pub fn plugin(&self, filter: &FilterConfig) -> Result<Arc<Plugin>, ConfigError> {
        self.plugin_reusing(filter, None)
    }

    /// [`Runtime::plugin`], except that `previous` — the same filter in the serving
    /// configuration — is kept when nothing about it changed: the same configuration
    /// (source, settings, limits; wherever it is written) and the same module bytes. Its VMs
    /// then carry on with their state, and a reload that touches other files costs this
    /// filter nothing.
    pub fn plugin_reusing(
        &self,
        filter: &FilterConfig,
        previous: Option<&Arc<Plugin>>,
    ) -> Result<Arc<Plugin>, ConfigError> {
        let err =
            |msg: String| ConfigError::at(&filter.origin, format!("filters.{}", filter.name), msg);
        let bytes: std::borrow::Cow<'_, [u8]> = match &filter.source {
            FilterSource::Wasm(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
                // The bytes checked are the bytes compiled: the file may change after.
                crate::integrity::check(filter, path, &bytes)?;
                bytes.into()
            }
            FilterSource::Builtin(name) => builtin_module(name)
                .ok_or_else(|| {
                    let known = crate::builtin::names().join(", ");
                    err(format!(
                        "no standard filter is called {name:?} (there are: {known})"
                    ))
                })?
                .into(),
        };
        if let Some(p) = previous
            && p.config.same_settings(filter)
            && p.compiled.hash == engine::digest_hex(&bytes)
        {
            return Ok(Arc::clone(p));
        }
        self.plugin_from_bytes(filter, &bytes).map_err(err)
    }

    /// [`Runtime::plugin`] for a module already in memory; the error is the reason.
    pub fn plugin_from_bytes(
        &self,
        filter: &FilterConfig,
        bytes: &[u8],
    ) -> Result<Arc<Plugin>, String> {
        let shared = engine::shared()?;
        let compiled = shared.compile(bytes)?;
        let spec = vm::VmSpec {
            name: filter.name.as_str().into(),
            root_id: filter.root_id.as_str().into(),
            config: filter.config.as_slice().into(),
            memory: usize::try_from(filter.limits.memory).unwrap_or(usize::MAX),
            timeout: filter.limits.callback_timeout,
            on_fiber: filter.asynchronous,
            extensions: self.extensions.clone(),
            callers: calls::CallerCell::default(),
        };
        let signal = Arc::new(worker::VmSignal::default());
        let first = vm::block_on(vm::Vm::start(&compiled, &spec, signal))?;
        let ticks = first.store.data().tick_period.is_some();
        let http_features = first.store.data().http_features;
        let callers = spec.callers.clone();
        tracing::debug!(filter = %filter.name, module = %compiled.hash, abi = ?compiled.abi, "filter configured");
        Ok(Arc::new(Plugin {
            config: filter.clone(),
            compiled,
            spec,
            first_vm: Mutex::new(Some(first)),
            http: callers,
            ticks,
            http_features,
            recent: crate::metrics::global().filter_window(&filter.name),
        }))
    }
}

/// The standard filters, embedded by `crate::builtin`.
fn builtin_module(name: &str) -> Option<&'static [u8]> {
    crate::builtin::module(name)
}

/// A configured filter: the compiled module, its configuration and limits. Shared by
/// all workers; each worker makes its own VM from it on first use, and drops it once
/// the last snapshot and request holding this plugin are gone.
pub struct Plugin {
    /// The filter's configuration.
    pub config: FilterConfig,
    compiled: Arc<engine::Compiled>,
    spec: vm::VmSpec,
    /// The VM configured while validating, handed to the first worker that asks.
    first_vm: Mutex<Option<vm::Vm>>,
    /// The serving snapshot's upstreams; replaced when a reload keeps this plugin.
    /// Shared with its VMs, whose gRPC callouts check the upstream they name at once.
    http: calls::CallerCell,
    /// Its root context set a tick period while configuring: every worker starts its
    /// VM when the snapshot goes live, so ticks run before any request arrives.
    ticks: bool,
    /// An http-wasm guest's features enabled while it started: which bodies the
    /// proxy collects whole for it.
    http_features: u32,
    /// The filter's requests of the last minutes, for the dashboard.
    recent: Arc<crate::metrics::Window>,
}

impl Plugin {
    /// Lets this filter's `http_call` reach the snapshot's upstreams (the latest
    /// snapshot's, when a reload kept this plugin).
    pub fn set_http_caller(&self, caller: Arc<dyn HttpCaller>) {
        match self.http.write() {
            Ok(mut h) => *h = Some(caller),
            Err(poisoned) => *poisoned.into_inner() = Some(caller),
        }
    }

    /// Instantiates and configures a fresh VM of this plugin, then drops it: what a
    /// worker pays on first use or after a failure (used by the benchmarks).
    pub fn start_fresh_vm(&self) -> Result<(), String> {
        let signal = Arc::new(worker::VmSignal::default());
        vm::block_on(vm::Vm::start(&self.compiled, &self.spec, signal)).map(drop)
    }

    /// The requests this filter saw over the last minutes (shared with every plugin of
    /// the same name, so they carry over reloads).
    pub fn recent(&self) -> &crate::metrics::Window {
        &self.recent
    }

    /// The hex sha256 of the filter's module.
    pub fn module_hash(&self) -> &str {
        &self.compiled.hash
    }

    /// Whether the module was compiled in this process or loaded from the disk cache.
    pub fn module_origin(&self) -> ModuleOrigin {
        self.compiled.origin
    }

    /// Whether the module declared that only its header phases do anything (it
    /// exports `portcullis_headers_only`, as every `portcullis-sdk` filter does).
    pub fn headers_only(&self) -> bool {
        self.compiled.headers_only
    }

    /// Whether the module speaks http-wasm rather than proxy-wasm.
    pub fn is_http_wasm(&self) -> bool {
        self.compiled.abi == state::AbiVersion::HttpWasm
    }

    /// Which bodies an http-wasm filter wants whole: a bit set of
    /// `httpwasm::BUFFER_REQUEST` and `BUFFER_RESPONSE` (none for proxy-wasm).
    pub(crate) fn buffers(&self) -> u32 {
        self.http_features
    }

    fn http_caller(&self) -> Option<Arc<dyn HttpCaller>> {
        calls::caller_in(&self.http)
    }

    /// Whether its root context asked for ticks while configuring.
    pub fn ticks(&self) -> bool {
        self.ticks
    }

    /// Starts this worker's VM of the plugin (and its root task, which delivers the
    /// ticks) if it has none yet; what a plugin that ticks needs before any traffic.
    pub async fn start_on_this_worker(self: &Arc<Self>) {
        let slot = worker::slot(self);
        let mut g = worker::lock(&slot).await;
        if let Err(f) = worker::ensure(&mut g, &slot, self).await {
            let generation = g.generation;
            drop(g);
            fail_vm(&slot, self, generation, &f, "start").await;
        }
    }

    fn take_first_vm(&self) -> Option<vm::Vm> {
        self.first_vm.lock().ok().and_then(|mut v| v.take())
    }
}

/// Discards a failed VM (a fresh one is made on next use), logs and counts it; a
/// deadline miss soon after another suspends the filter on this worker (`breaker`).
async fn fail_vm(
    slot: &worker::SlotRef,
    plugin: &Plugin,
    generation: u64,
    f: &Failure,
    during: &str,
) {
    let mut g = worker::lock(slot).await;
    fail_locked(&mut g, plugin, generation, f, during);
}

/// [`fail_vm`] with the slot already locked.
fn fail_locked(
    slot: &mut worker::Slot,
    plugin: &Plugin,
    generation: u64,
    f: &Failure,
    during: &str,
) {
    let name = &plugin.config.name;
    metrics::filter_failure(name, f.kind());
    if let Failure::Suspended(left) = f {
        // Counted per request; logged when the suspension began.
        tracing::debug!(filter = %name, "filter {name} failed its request: suspended for {left:?}");
        return;
    }
    if slot.generation == generation {
        slot.vm = None;
    }
    let suspended = match f {
        Failure::Timeout => slot.breaker.missed(std::time::Instant::now()),
        _ => None,
    };
    tracing::error!(filter = %name, kind = f.kind(), "filter {name} failed in {during}: {f}; its VM is discarded");
    if let Some(length) = suspended {
        tracing::warn!(filter = %name, "filter {name} missed its deadline again soon after: its requests fail at once on this worker for {length:?} (on_error applies), then it gets a fresh VM");
    }
}

/// What the proxy knows of a request's connection and route, for properties.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The peer's address.
    pub client: SocketAddr,
    /// The local address the request arrived on.
    pub local: SocketAddr,
    /// The listener's name.
    pub listener: Arc<str>,
    /// The route's name.
    pub route: Arc<str>,
    /// Whether the request came over TLS, and which version.
    pub tls_version: Option<&'static str>,
}

/// What a filter phase decided.
#[derive(Debug)]
pub enum Decision {
    /// Go on to the next filter / the upstream / the client.
    Continue,
    /// Send this response instead: a filter answered locally (the answer has been
    /// through the response phase already).
    Respond(http::Response<Bytes>),
    /// A filter failed and its `on_error` is `deny`: the request ends with an error.
    Fail(FilterFailure),
}

/// What a body phase decided for one chunk.
#[derive(Debug)]
pub enum BodyDecision {
    /// Pass these bytes on (empty while a filter holds the body).
    Forward(Bytes),
    /// Send this response instead (only possible before response headers went out).
    Respond(http::Response<Bytes>),
    /// A filter failed and its `on_error` is `deny`: the request ends with an error.
    Fail(FilterFailure),
}

/// A filter that failed (trapped, ran out of time or memory) with `on_error: deny`:
/// what ends its request. Already logged and counted, with its VM discarded, by the
/// time the driver sees it.
#[derive(Debug, thiserror::Error)]
#[error("filter `{filter}` failed: {failure}")]
pub struct FilterFailure {
    /// The filter's name.
    pub filter: String,
    /// What went wrong.
    #[source]
    pub failure: Failure,
}

impl FilterFailure {
    /// `failure` of `plugin`'s filter.
    fn of(plugin: &Plugin, failure: Failure) -> Self {
        Self {
            filter: plugin.config.name.clone(),
            failure,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
