//! Metrics defined by proxy-wasm guests (`proxy_define_metric` and friends).
//!
//! Ids index an append-only list that readers load lock-free (arc-swap); only defining a
//! new metric takes a lock, which guests do once per VM start, not per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// The kind of a guest metric, as in the proxy-wasm ABI's `MetricType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomKind {
    /// Only goes up.
    Counter,
    /// Goes up and down, or is set.
    Gauge,
    /// Observations counted into buckets.
    Histogram,
}

/// Upper bounds of custom histogram buckets: a 1-2-5 series, since guests record
/// values of unknown unit (bytes, milliseconds, counts).
pub(super) const CUSTOM_BUCKETS: [u64; 19] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    200_000, 500_000, 1_000_000,
];

/// One guest metric.
pub(super) struct CustomMetric {
    /// The filter that defined it.
    pub filter: String,
    /// The name as the guest gave it (sanitised when rendered).
    pub name: String,
    pub kind: CustomKind,
    /// Counter or gauge value; for a histogram, unused.
    pub value: AtomicI64,
    /// Histogram: non-cumulative bucket counts, then +Inf.
    pub buckets: Vec<AtomicU64>,
    pub sum: AtomicU64,
    pub count: AtomicU64,
}

/// Every guest metric of the process.
#[derive(Default)]
pub(super) struct CustomRegistry {
    metrics: ArcSwap<Vec<Arc<CustomMetric>>>,
    /// (filter, name) → id; also serialises definitions.
    ids: Mutex<HashMap<(String, String), u32>>,
}

impl CustomRegistry {
    pub fn define(&self, filter: &str, name: &str, kind: CustomKind) -> u32 {
        let mut ids = match self.ids.lock() {
            Ok(ids) => ids,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(&id) = ids.get(&(filter.to_owned(), name.to_owned())) {
            return id;
        }
        let current = self.metrics.load_full();
        let id = u32::try_from(current.len()).unwrap_or(u32::MAX);
        let buckets = match kind {
            CustomKind::Histogram => (0..=CUSTOM_BUCKETS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            _ => Vec::new(),
        };
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().cloned());
        next.push(Arc::new(CustomMetric {
            filter: filter.to_owned(),
            name: name.to_owned(),
            kind,
            value: AtomicI64::new(0),
            buckets,
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }));
        self.metrics.store(Arc::new(next));
        ids.insert((filter.to_owned(), name.to_owned()), id);
        id
    }

    fn with<R>(&self, id: u32, f: impl FnOnce(&CustomMetric) -> R) -> Option<R> {
        let metrics = self.metrics.load();
        let idx = usize::try_from(id).ok()?;
        metrics.get(idx).map(|m| f(m))
    }

    pub fn add(&self, id: u32, delta: i64) -> bool {
        self.with(id, |m| match m.kind {
            CustomKind::Histogram => false,
            CustomKind::Counter if delta < 0 => false,
            _ => {
                m.value.fetch_add(delta, Ordering::Relaxed);
                true
            }
        })
        .unwrap_or(false)
    }

    pub fn set(&self, id: u32, value: i64) -> bool {
        self.with(id, |m| match m.kind {
            CustomKind::Histogram => false,
            _ => {
                m.value.store(value, Ordering::Relaxed);
                true
            }
        })
        .unwrap_or(false)
    }

    pub fn get(&self, id: u32) -> Option<i64> {
        self.with(id, |m| match m.kind {
            CustomKind::Histogram => None,
            _ => Some(m.value.load(Ordering::Relaxed)),
        })
        .flatten()
    }

    pub fn record(&self, id: u32, value: u64) -> bool {
        self.with(id, |m| {
            if m.kind != CustomKind::Histogram {
                return false;
            }
            let idx = CUSTOM_BUCKETS
                .iter()
                .position(|&le| value <= le)
                .unwrap_or(CUSTOM_BUCKETS.len());
            if let Some(b) = m.buckets.get(idx) {
                b.fetch_add(1, Ordering::Relaxed);
            }
            m.sum.fetch_add(value, Ordering::Relaxed);
            m.count.fetch_add(1, Ordering::Relaxed);
            true
        })
        .unwrap_or(false)
    }

    /// Every metric defined so far, in id order.
    pub fn snapshot(&self) -> Arc<Vec<Arc<CustomMetric>>> {
        self.metrics.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;
    use super::*;

    #[test]
    fn same_filter_and_name_get_the_same_id() {
        let m = Metrics::default();
        let a = m.define_custom("f", "hits", CustomKind::Counter);
        let b = m.define_custom("g", "hits", CustomKind::Counter);
        let c = m.define_custom("f", "hits", CustomKind::Counter);
        assert_eq!(a, c, "redefinition should return the first id");
        assert_ne!(a, b, "another filter's metric needs its own id");
    }

    #[test]
    fn counters_gauges_and_histograms_behave() {
        let m = Metrics::default();
        let c = m.define_custom("f", "c", CustomKind::Counter);
        let g = m.define_custom("f", "g", CustomKind::Gauge);
        let h = m.define_custom("f", "h", CustomKind::Histogram);
        assert!(m.custom_add(c, 2));
        assert!(!m.custom_add(c, -1), "a counter must not go down");
        assert_eq!(m.custom_get(c), Some(2));
        assert!(m.custom_add(g, -5));
        assert!(m.custom_set(g, 9));
        assert_eq!(m.custom_get(g), Some(9));
        assert!(m.custom_record(h, 3));
        assert!(!m.custom_record(c, 3), "record is for histograms only");
        assert!(!m.custom_add(h, 1), "add is not for histograms");
        assert_eq!(m.custom_get(h), None);
        assert!(!m.custom_add(999, 1), "unknown id");
        assert_eq!(m.custom_get(999), None);
    }

    #[test]
    fn custom_metrics_render_sanitised_with_filter_label() {
        let m = Metrics::default();
        let c = m.define_custom("my-filter", "requests.seen-total", CustomKind::Counter);
        let h = m.define_custom("my-filter", "size", CustomKind::Histogram);
        m.custom_add(c, 4);
        m.custom_record(h, 7);
        let text = m.render();
        assert!(
            text.contains("# TYPE requests_seen_total counter"),
            "TYPE line missing in:\n{text}"
        );
        assert!(
            text.contains(r#"requests_seen_total{filter="my-filter"} 4"#),
            "sanitised series missing in:\n{text}"
        );
        assert!(
            text.contains(r#"size_bucket{filter="my-filter",le="10"} 1"#),
            "histogram bucket missing in:\n{text}"
        );
        assert!(text.contains(r#"size_sum{filter="my-filter"} 7"#), "{text}");
    }
}
