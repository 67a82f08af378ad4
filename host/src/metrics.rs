//! The process-global metrics registry, rendered in the Prometheus text format on the
//! admin listener's `/metrics`.
//!
//! Any module counts through [`global()`] without plumbing a handle around. The hot
//! path is atomics: a labelled series is looked up in a sharded map (read lock on one
//! shard, no allocation once the series exists) and bumped with relaxed atomics.
//!
//! Guest metrics defined by proxy-wasm filters live here too ([`Metrics::define_custom`]
//! and friends), rendered under their own (sanitised) names with a `filter` label.
//!
//! So does the recent activity the dashboard shows ([`Window`]): per route, beside the
//! route's duration histogram, and per filter, held by each filter's plugin.

mod custom;
mod l4;
mod render;
mod shadow;
mod window;

use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub use custom::CustomKind;
use custom::CustomRegistry;
pub use shadow::ShadowCounters;
pub use window::{SPAN_SECS, Summary, Window, last_instant};

/// Upper bounds (seconds) of the request-duration histogram buckets.
const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A series map. foldhash rather than the default SipHash: the keys are our own
/// names, and two lookups per request showed SipHash in the profile.
pub(crate) type SeriesMap<V> = DashMap<String, V, foldhash::fast::RandomState>;

/// Separates the parts of a composite series key; never valid in a name.
const KEY_SEP: char = '\u{1f}';

/// The process's metrics. Get it with [`global()`].
#[derive(Default)]
pub struct Metrics {
    /// `portcullis_requests_total`, keyed `listener SEP route`.
    requests: SeriesMap<RequestCounts>,
    /// `portcullis_request_duration_seconds` and the recent window, keyed by route.
    durations: SeriesMap<RouteSeries>,
    /// The recent window of each filter, by name (its plugins hold it).
    filter_windows: SeriesMap<Arc<Window>>,
    /// `portcullis_upstream_errors_total`, keyed `upstream SEP kind`.
    upstream_errors: SeriesMap<AtomicU64>,
    /// `portcullis_upstream_retries_total`, keyed `upstream SEP reason`.
    upstream_retries: SeriesMap<AtomicU64>,
    /// `portcullis_upstream_retries_denied_total` (over the retry budget), by upstream.
    upstream_retries_denied: SeriesMap<AtomicU64>,
    /// `portcullis_mirror_requests_total`, keyed `route SEP upstream SEP result`.
    mirrors: SeriesMap<AtomicU64>,
    /// `portcullis_connections_open`, keyed by listener.
    connections: SeriesMap<AtomicI64>,
    /// `portcullis_filter_failures_total`, keyed `filter SEP kind`.
    filter_failures: SeriesMap<AtomicU64>,
    /// `portcullis_ratelimit_store_errors_total`, keyed `filter SEP policy`.
    store_errors: SeriesMap<AtomicU64>,
    /// `portcullis_client_limits_total`, keyed `listener SEP limit`.
    client_limits: SeriesMap<AtomicU64>,
    /// `portcullis_upgrades_total`, keyed by route.
    upgrades: SeriesMap<AtomicU64>,
    /// `portcullis_upgrades_active`, keyed by route.
    upgrades_active: SeriesMap<AtomicI64>,
    /// `portcullis_upgrades_closed_total`, keyed `route SEP reason`.
    upgrades_closed: SeriesMap<AtomicU64>,
    /// The series of `tcp_routes` and `udp_routes`.
    l4: l4::L4Series,
    /// The series of shadow filters.
    shadow: shadow::ShadowSeries,
    /// `portcullis_config_generation`.
    generation: AtomicU64,
    /// `portcullis_reloads_total{result="ok"}`.
    reloads_ok: AtomicU64,
    /// `portcullis_reloads_total{result="error"}`.
    reloads_error: AtomicU64,
    /// `portcullis_etcd_connected` and `portcullis_etcd_failures_total`, once a
    /// `providers.etcd` is followed.
    etcd: EtcdLink,
    /// Metrics defined by proxy-wasm guests.
    custom: CustomRegistry,
    /// `portcullis_trace_spans_total` and `portcullis_trace_spans_dropped_total`.
    pub(crate) spans: SpanCounts,
    /// `portcullis_access_log_dropped_total`: lines the access log writer could not
    /// keep up with.
    pub(crate) access_log_dropped: AtomicU64,
}

/// What became of the spans of traced requests.
#[derive(Default)]
pub(crate) struct SpanCounts {
    pub(crate) exported: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) export_failed: AtomicU64,
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::default)
}

/// The etcd provider's link, rendered only once there is one.
#[derive(Default)]
struct EtcdLink {
    followed: std::sync::atomic::AtomicBool,
    connected: std::sync::atomic::AtomicBool,
    failures: AtomicU64,
}

// === impl Metrics ===

impl Metrics {
    /// Counts one finished request: `portcullis_requests_total{listener,route,code}`,
    /// `portcullis_request_duration_seconds{route}` and the route's recent window (a
    /// 5xx an error), the request having ended at `at`. `route` is empty when none
    /// matched.
    pub fn request(
        &self,
        listener: &str,
        route: &str,
        status: u16,
        duration: Duration,
        at: Instant,
    ) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        with_key(&[listener, route], |key| {
            bump(&self.requests, key, |c: &RequestCounts| {
                c.0[class].fetch_add(1, Ordering::Relaxed);
            })
        });
        bump(&self.durations, route, |s: &RouteSeries| {
            s.total.observe(duration);
            s.recent.record(at, Some(duration), class == 4);
        });
    }

    /// What route `route` did over the `secs` seconds up to `now`, and its rate per
    /// `step` seconds over the last `points` steps; `None` if it has had no request.
    pub fn route_recent(
        &self,
        route: &str,
        now: Instant,
        secs: u64,
        (step, points): (u64, u64),
    ) -> Option<(Summary, Vec<f64>)> {
        let s = self.durations.get(route)?;
        Some((
            s.recent.summary(now, secs),
            s.recent.rates(now, step, points),
        ))
    }

    /// The recent window of filter `name`, shared by every plugin of that name so that
    /// its counts carry over reloads.
    pub fn filter_window(&self, name: &str) -> Arc<Window> {
        if let Some(w) = self.filter_windows.get(name) {
            return Arc::clone(&w);
        }
        Arc::clone(&self.filter_windows.entry(name.to_owned()).or_default())
    }

    /// Forgets the recent windows of the filters `keep` refuses (those a reload
    /// removed), so that renamed filters do not pile up; a plugin still draining
    /// requests keeps its own.
    pub fn forget_filter_windows(&self, keep: impl Fn(&str) -> bool) {
        self.filter_windows.retain(|name, _| keep(name));
    }

    /// Counts an upstream failure; `kind` is e.g. `connect`, `timeout`, `protocol`.
    pub fn upstream_error(&self, upstream: &str, kind: &str) {
        with_key(&[upstream, kind], |key| {
            bump(&self.upstream_errors, key, |c: &AtomicU64| {
                c.fetch_add(1, Ordering::Relaxed);
            })
        });
    }

    /// Counts a retry of a failed attempt; `reason` is the failure (`connect-failure`,
    /// `refused-stream`, `reset`, `timeout`, `5xx`).
    pub fn upstream_retry(&self, upstream: &str, reason: &str) {
        with_key(&[upstream, reason], |key| {
            bump(&self.upstream_retries, key, |c: &AtomicU64| {
                c.fetch_add(1, Ordering::Relaxed);
            })
        });
    }

    /// Counts a retry the retry budget refused.
    pub fn upstream_retry_denied(&self, upstream: &str) {
        bump(&self.upstream_retries_denied, upstream, |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Counts a request copied to route `route`'s shadow `upstream`; `result` is
    /// `answered`, `failed` or `skipped`.
    pub fn mirror(&self, route: &str, upstream: &str, result: &str) {
        with_key(&[route, upstream, result], |key| {
            bump(&self.mirrors, key, |c: &AtomicU64| {
                c.fetch_add(1, Ordering::Relaxed);
            })
        });
    }

    /// Counts a filter failure; `kind` is e.g. `trap`, `timeout`, `memory`.
    pub fn filter_failure(&self, filter: &str, kind: &str) {
        with_key(&[filter, kind], |key| {
            bump(&self.filter_failures, key, |c: &AtomicU64| {
                c.fetch_add(1, Ordering::Relaxed);
            })
        });
    }

    /// Counts a rate-limit check that its Redis store failed or did not answer in
    /// time, decided by `policy` (`allow`, `deny` or `local`).
    pub fn store_error(&self, filter: &str, policy: &str) {
        with_key(&[filter, policy], |key| {
            bump(&self.store_errors, key, |c: &AtomicU64| {
                c.fetch_add(1, Ordering::Relaxed);
            })
        });
    }

    /// Counts a client meeting one of its listener's limits (`limit` is the config
    /// field's name, e.g. `header_timeout`, `min_body_rate`).
    pub fn client_limit(&self, listener: &str, limit: &str) {
        with_key(&[listener, limit], |key| {
            bump(&self.client_limits, key, |c: &AtomicU64| {
                c.fetch_add(1, Ordering::Relaxed);
            })
        });
    }

    /// Adds `delta` (±1) to the open connections of `listener`.
    pub fn connections_open(&self, listener: &str, delta: i64) {
        bump(&self.connections, listener, |g: &AtomicI64| {
            g.fetch_add(delta, Ordering::Relaxed);
        });
    }

    /// Counts a connection of `route` switched to another protocol (a tunnel opened).
    pub fn upgrade_opened(&self, route: &str) {
        bump(&self.upgrades, route, |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        bump(&self.upgrades_active, route, |g: &AtomicI64| {
            g.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Counts the end of a tunnel of `route`; `reason` is `closed`, `idle_timeout` or
    /// `error`.
    pub fn upgrade_closed(&self, route: &str, reason: &str) {
        bump(&self.upgrades_active, route, |g: &AtomicI64| {
            g.fetch_sub(1, Ordering::Relaxed);
        });
        with_key(&[route, reason], |key| {
            bump(&self.upgrades_closed, key, |c: &AtomicU64| {
                c.fetch_add(1, Ordering::Relaxed);
            })
        });
    }

    /// Counts a request of route `route`'s chain entry `filter`, which has a canary:
    /// `portcullis_filter_canary_requests_total{filter,route,version}`, `version` being
    /// the filter that ran (the entry's own, or its canary).
    pub fn canary_request(&self, route: &str, filter: &str, version: &str) {
        self.shadow.canary(route, filter, version);
    }

    /// The counters of filter `filter` in shadow mode on route `route`
    /// (`portcullis_filter_shadow_*_total{filter,route}`), for the route to hold.
    pub fn shadow_counters(&self, filter: &str, route: &str) -> Arc<ShadowCounters> {
        Arc::new(self.shadow.counters(filter, route))
    }

    /// Counts an L4 connection (a UDP session) of `route` relayed to its upstream.
    pub fn l4_opened(&self, route: &str) {
        self.l4.opened(route);
    }

    /// Counts the end of an L4 connection of `route` (`reason`: `closed`,
    /// `idle_timeout`, `error`) and the bytes it carried each way.
    pub fn l4_closed(&self, route: &str, reason: &str, sent: u64, received: u64) {
        self.l4.closed(route, reason, sent, received);
    }

    /// Counts bytes an L4 route relayed (a UDP session's, as its datagrams pass).
    pub fn l4_bytes(&self, route: &str, sent: u64, received: u64) {
        self.l4.bytes(route, sent, received);
    }

    /// Records the generation now serving.
    pub fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// Records that the etcd provider's watch is established (or lost, `false`).
    pub fn etcd_connected(&self, connected: bool) {
        self.etcd.followed.store(true, Ordering::Relaxed);
        self.etcd.connected.store(connected, Ordering::Relaxed);
    }

    /// Counts one failed attempt to read or watch etcd (and the link as down).
    pub fn etcd_failure(&self) {
        self.etcd_connected(false);
        self.etcd.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` spans the collector took.
    pub fn trace_spans_exported(&self, n: u64) {
        self.spans.exported.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` spans dropped: `queue_full` (the exporter is behind: a slow or dead
    /// collector) or `export_failed` (the collector refused them or did not answer).
    pub fn trace_spans_dropped(&self, reason: &str, n: u64) {
        let counter = match reason {
            "queue_full" => &self.spans.queue_full,
            _ => &self.spans.export_failed,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an access log line dropped because its writer was behind.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one reload attempt.
    pub fn reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_error
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Defines (or finds) the guest metric `name` of `filter`; the same pair always gets
    /// the same id, so a VM re-created after a trap keeps counting the same series.
    pub fn define_custom(&self, filter: &str, name: &str, kind: CustomKind) -> u32 {
        self.custom.define(filter, name, kind)
    }

    /// Adds `delta` to a counter or gauge; false for an unknown id, a histogram, or a
    /// negative delta on a counter.
    pub fn custom_add(&self, id: u32, delta: i64) -> bool {
        self.custom.add(id, delta)
    }

    /// Sets a counter or gauge to `value`; false for an unknown id or a histogram.
    pub fn custom_set(&self, id: u32, value: i64) -> bool {
        self.custom.set(id, value)
    }

    /// The current value of a counter or gauge; `None` for an unknown id or a histogram.
    pub fn custom_get(&self, id: u32) -> Option<i64> {
        self.custom.get(id)
    }

    /// Records one observation in a histogram; false for an unknown id or a non-histogram.
    pub fn custom_record(&self, id: u32, value: u64) -> bool {
        self.custom.record(id, value)
    }

    /// The guest metrics `filter` defined, in definition order: name, kind and value (a
    /// counter's or gauge's; a histogram's number of observations). For the test kit.
    pub fn custom_values(&self, filter: &str) -> Vec<(String, CustomKind, i64)> {
        self.custom
            .snapshot()
            .iter()
            .filter(|m| m.filter == filter)
            .map(|m| {
                let value = match m.kind {
                    CustomKind::Histogram => {
                        i64::try_from(m.count.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
                    }
                    _ => m.value.load(Ordering::Relaxed),
                };
                (m.name.clone(), m.kind, value)
            })
            .collect()
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        render::render(self)
    }
}

/// Runs `f` on the series `key` of `map`, creating the series the first time. The common
/// case (the series exists) takes one shard read lock and allocates nothing.
fn bump<V: Default>(map: &SeriesMap<V>, key: &str, f: impl FnOnce(&V)) {
    if let Some(v) = map.get(key) {
        f(&v);
        return;
    }
    let v = map.entry(key.to_owned()).or_default();
    f(&v);
}

/// Builds a composite key in a reused thread-local buffer, so that counting needs no
/// allocation per request.
fn with_key<R>(parts: &[&str], f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static BUF: RefCell<String> = const { RefCell::new(String::new()) };
    }
    BUF.with(|buf| match buf.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            join_key(&mut buf, parts);
            f(&buf)
        }
        // Re-entered from inside `f` (not expected): fall back to a fresh buffer.
        Err(_) => {
            let mut own = String::new();
            join_key(&mut own, parts);
            f(&own)
        }
    })
}

fn join_key(buf: &mut String, parts: &[&str]) {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            buf.push(KEY_SEP);
        }
        buf.push_str(part);
    }
}

/// Splits a composite key back into its parts.
fn split_key(key: &str) -> impl Iterator<Item = &str> {
    key.split(KEY_SEP)
}

/// Request counts of one (listener, route), by status class 1xx..5xx.
#[derive(Default)]
struct RequestCounts([AtomicU64; 5]);

/// What is counted per route of the requests' durations: since start, for
/// Prometheus, and over the last minutes, for the dashboard.
#[derive(Default)]
struct RouteSeries {
    total: Histogram,
    recent: Window,
}

/// A fixed-bucket histogram of durations.
#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bucket of [`DURATION_BUCKETS`], then +Inf.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of observations in microseconds.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counts_render_by_class() {
        let m = Metrics::default();
        let now = Instant::now();
        m.request("web", "api", 200, Duration::from_millis(3), now);
        m.request("web", "api", 204, Duration::from_millis(30), now);
        m.request("web", "api", 503, Duration::from_secs(20), now);
        let text = m.render();
        assert!(
            text.contains(r#"portcullis_requests_total{listener="web",route="api",code="2xx"} 2"#),
            "missing 2xx series in:\n{text}"
        );
        assert!(
            text.contains(r#"portcullis_requests_total{listener="web",route="api",code="5xx"} 1"#),
            "missing 5xx series in:\n{text}"
        );
        assert!(
            text.contains(
                r#"portcullis_request_duration_seconds_bucket{route="api",le="0.005"} 1"#
            ),
            "first bucket should hold one observation:\n{text}"
        );
        assert!(
            text.contains(r#"portcullis_request_duration_seconds_bucket{route="api",le="+Inf"} 3"#),
            "+Inf bucket should be cumulative:\n{text}"
        );
        assert!(
            text.contains(r#"portcullis_request_duration_seconds_count{route="api"} 3"#),
            "count:\n{text}"
        );
        let (recent, rates) = m.route_recent("api", now, 60, (10, 6)).unwrap_or_default();
        assert_eq!((recent.requests, recent.errors), (3, 1), "{recent:?}");
        assert_eq!(rates.last(), Some(&0.3), "{rates:?}");
    }

    #[test]
    fn builtin_families_always_render() {
        let m = Metrics::default();
        m.set_generation(7);
        m.reload(true);
        m.reload(false);
        m.connections_open("web", 1);
        m.upstream_error("api", "connect");
        m.filter_failure("auth", "trap");
        m.upgrade_opened("chat");
        m.upgrade_opened("chat");
        m.upgrade_closed("chat", "idle_timeout");
        assert!(
            !m.render().contains("portcullis_etcd"),
            "no etcd, no series"
        );
        m.etcd_failure();
        m.etcd_connected(true);
        let text = m.render();
        for want in [
            "# TYPE portcullis_requests_total counter",
            "# TYPE portcullis_request_duration_seconds histogram",
            "portcullis_config_generation 7",
            r#"portcullis_reloads_total{result="ok"} 1"#,
            r#"portcullis_reloads_total{result="error"} 1"#,
            r#"portcullis_connections_open{listener="web"} 1"#,
            r#"portcullis_upstream_errors_total{upstream="api",kind="connect"} 1"#,
            r#"portcullis_filter_failures_total{filter="auth",kind="trap"} 1"#,
            r#"portcullis_upgrades_total{route="chat"} 2"#,
            r#"portcullis_upgrades_active{route="chat"} 1"#,
            r#"portcullis_upgrades_closed_total{route="chat",reason="idle_timeout"} 1"#,
            "portcullis_etcd_connected 1",
            "portcullis_etcd_failures_total 1",
        ] {
            assert!(text.contains(want), "expected {want:?} in:\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.upstream_error("a\"b\\c\nd", "x");
        let text = m.render();
        assert!(
            text.contains(r#"upstream="a\"b\\c\nd""#),
            "label not escaped in:\n{text}"
        );
    }
}
