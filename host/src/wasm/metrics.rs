//! The wasm host's side of metrics: guest-defined metrics and filter failures, kept in
//! the process registry ([`crate::metrics::global`]) so they appear on `/metrics`.

use std::sync::LazyLock;

use dashmap::DashMap;

use crate::metrics::{CustomKind, global};

/// What kind of metric a guest defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The kind of each id handed out, for `record_metric`'s per-kind meaning.
static KINDS: LazyLock<DashMap<u32, Kind>> = LazyLock::new(DashMap::new);

/// Failures counted by this process, by (filter, kind), for tests.
static FAILURES: LazyLock<DashMap<(String, &'static str), u64>> = LazyLock::new(DashMap::new);

/// Defines (or finds) `filter`'s metric `name`.
pub(crate) fn define(filter: &str, name: &str, kind: Kind) -> u32 {
    let custom = match kind {
        Kind::Counter => CustomKind::Counter,
        Kind::Gauge => CustomKind::Gauge,
        Kind::Histogram => CustomKind::Histogram,
    };
    let id = global().define_custom(filter, name, custom);
    KINDS.insert(id, kind);
    id
}

/// Adds to a counter or gauge; false for an unknown id or a histogram.
pub(crate) fn add(id: u32, delta: i64) -> bool {
    global().custom_add(id, delta)
}

/// As Envoy: adds to a counter, sets a gauge, records into a histogram.
pub(crate) fn record(id: u32, value: u64) -> bool {
    match KINDS.get(&id).map(|k| *k) {
        Some(Kind::Counter) => global().custom_add(id, i64::try_from(value).unwrap_or(i64::MAX)),
        Some(Kind::Gauge) => global().custom_set(id, i64::try_from(value).unwrap_or(i64::MAX)),
        Some(Kind::Histogram) => global().custom_record(id, value),
        None => false,
    }
}

/// A counter's or gauge's current value.
pub(crate) fn get(id: u32) -> Option<i64> {
    global().custom_get(id)
}

/// Counts one failure of `filter` (`trap`, `timeout`, `memory`).
pub(crate) fn filter_failure(filter: &str, kind: &'static str) {
    global().filter_failure(filter, kind);
    *FAILURES.entry((filter.to_string(), kind)).or_insert(0) += 1;
}

/// How many failures of `kind` `filter` has had in this process.
pub fn failures(filter: &str, kind: &'static str) -> u64 {
    FAILURES.get(&(filter.to_string(), kind)).map_or(0, |v| *v)
}
