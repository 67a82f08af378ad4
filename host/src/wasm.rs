//! The proxy-wasm host: one wasmtime engine, modules compiled once per content hash,
//! one VM per filter per worker, limits and traps.
//!
//! INTERFACE STUB (to be replaced by the runtime): the proxy driver codes against
//! [`Runtime`], [`Plugin`] and [`HttpFilters`]; with no filters they do nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{ConfigError, FilterConfig};

/// The process-wide wasm runtime: engine, module cache, epoch ticker.
#[derive(Clone, Default)]
pub struct Runtime {}

impl Runtime {
    /// Creates the engine.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {})
    }

    /// Compiles (or takes from the cache) the module of `filter`, instantiates a first
    /// VM and runs `on_vm_start` / `on_configure`: a filter that fails any of this is a
    /// config error naming it.
    pub fn plugin(&self, filter: &FilterConfig) -> Result<Arc<Plugin>, ConfigError> {
        Err(ConfigError::at(
            &filter.origin,
            format!("filters.{}", filter.name),
            "wasm filters are not supported yet",
        ))
    }
}

/// A configured filter: the compiled module, its configuration and limits. Shared by
/// all workers; each worker makes its own VM from it on first use.
pub struct Plugin {
    /// The filter's configuration.
    pub config: FilterConfig,
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
    /// A filter answered locally: send this instead.
    Respond(http::Response<Bytes>),
}

/// The filter chain of one request: the per-stream contexts of each filter of its
/// route, driven phase by phase by the proxy.
pub struct HttpFilters {
    _plugins: Vec<Arc<Plugin>>,
}

impl HttpFilters {
    /// Starts a stream through `plugins` (the route's chain, in order).
    pub fn new(plugins: &[Arc<Plugin>], _info: StreamInfo) -> Self {
        Self {
            _plugins: plugins.to_vec(),
        }
    }

    /// Whether the chain has no filters (the proxy may then skip every phase).
    pub fn is_empty(&self) -> bool {
        self._plugins.is_empty()
    }

    /// Request headers phase, in chain order.
    pub async fn request_headers(
        &mut self,
        _head: &mut http::request::Parts,
        _end_of_stream: bool,
    ) -> Decision {
        Decision::Continue
    }

    /// Response headers phase, in reverse chain order.
    pub async fn response_headers(
        &mut self,
        _head: &mut http::response::Parts,
        _end_of_stream: bool,
    ) -> Decision {
        Decision::Continue
    }

    /// `on_log` / `on_done` / delete for every context created.
    pub async fn finish(self) {}
}
