//! The wasm host's side of metrics: guest-defined metrics and filter failures.
//!
//! Until `crate::metrics::global()` lands these are kept here, process-wide.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use dashmap::DashMap;

/// What kind of metric a guest defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

struct Metric {
    kind: Kind,
    value: AtomicI64,
}

static BY_NAME: LazyLock<DashMap<(String, String), u32>> = LazyLock::new(DashMap::new);
static BY_ID: LazyLock<DashMap<u32, Metric>> = LazyLock::new(DashMap::new);
static NEXT: AtomicU32 = AtomicU32::new(1);
static FAILURES: LazyLock<DashMap<(String, &'static str), u64>> = LazyLock::new(DashMap::new);

/// Defines (or finds) `filter`'s metric `name`.
pub(crate) fn define(filter: &str, name: &str, kind: Kind) -> u32 {
    *BY_NAME
        .entry((filter.to_string(), name.to_string()))
        .or_insert_with(|| {
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            BY_ID.insert(
                id,
                Metric {
                    kind,
                    value: AtomicI64::new(0),
                },
            );
            id
        })
}

/// Adds to a counter or gauge; false for an unknown id or a histogram.
pub(crate) fn add(id: u32, delta: i64) -> bool {
    match BY_ID.get(&id) {
        Some(m) if m.kind != Kind::Histogram => {
            m.value.fetch_add(delta, Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

/// Sets a gauge (or records into a histogram: the last value is kept).
pub(crate) fn record(id: u32, value: i64) -> bool {
    match BY_ID.get(&id) {
        Some(m) => {
            m.value.store(value, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// A metric's current value.
pub(crate) fn get(id: u32) -> Option<i64> {
    BY_ID.get(&id).map(|m| m.value.load(Ordering::Relaxed))
}

/// Counts one failure of `filter` (`trap`, `timeout`, `memory`).
pub(crate) fn filter_failure(filter: &str, kind: &'static str) {
    *FAILURES.entry((filter.to_string(), kind)).or_insert(0) += 1;
}

/// How many failures of `kind` `filter` has had (for tests).
pub fn failures(filter: &str, kind: &'static str) -> u64 {
    FAILURES.get(&(filter.to_string(), kind)).map_or(0, |v| *v)
}
