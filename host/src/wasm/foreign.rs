//! Foreign functions: host extensions a filter calls with
//! `proxy_call_foreign_function(name, args)`.
//!
//! The registry is process-wide and simple: a name maps to an `Arc<dyn
//! ForeignFunction>`, registered once at start (e.g. the rate limiter, whose buckets
//! must outlive reloads) with [`register`] or `Runtime::register_foreign`. A later
//! registration under the same name replaces the earlier one. A call to an unknown
//! name returns `NOT_FOUND` to the guest; an error returns `INTERNAL_FAILURE` (or
//! `BAD_ARGUMENT`) and is logged with the filter's name.

use std::sync::{Arc, LazyLock};

use dashmap::DashMap;

/// Why a foreign function refused a call.
#[derive(Debug, thiserror::Error)]
pub enum ForeignError {
    /// The arguments could not be understood (the guest gets `BAD_ARGUMENT`).
    #[error("bad arguments: {0}")]
    BadArgument(String),
    /// The function failed (the guest gets `INTERNAL_FAILURE`).
    #[error("{0}")]
    Failed(String),
}

/// A host extension. It runs on the worker thread inside the guest's callback, so it
/// must be quick and must not block.
pub trait ForeignFunction: Send + Sync {
    /// Answers a call from `filter` (the filter's config name) with `args`.
    fn call(&self, filter: &str, args: &[u8]) -> Result<Vec<u8>, ForeignError>;
}

static REGISTRY: LazyLock<DashMap<String, Arc<dyn ForeignFunction>>> = LazyLock::new(DashMap::new);

/// Registers `f` under `name`, process-wide.
pub fn register(name: &str, f: Arc<dyn ForeignFunction>) {
    REGISTRY.insert(name.to_string(), f);
}

/// The function registered under `name`.
pub(crate) fn lookup(name: &str) -> Option<Arc<dyn ForeignFunction>> {
    REGISTRY.get(name).map(|f| f.clone())
}
