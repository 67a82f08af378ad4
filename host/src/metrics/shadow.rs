//! The series of filters on trial: shadow filters (`{ filter: NAME, shadow: true }`
//! on a route), the requests each saw and what it would have done to them had it been
//! enforced; and canaries (`canary: { filter: NEW, weight: N }`), the requests each
//! version ran on.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::render::{escape, header, sorted};
use super::{SeriesMap, bump, split_key, with_key};

/// The shadow series, keyed `filter SEP route` (and `SEP status`).
#[derive(Default)]
pub(super) struct ShadowSeries {
    /// `portcullis_filter_shadow_requests_total`.
    requests: SeriesMap<Counter>,
    /// `portcullis_filter_shadow_would_deny_total`, keyed `filter SEP route SEP status`.
    would_deny: SeriesMap<Counter>,
    /// `portcullis_filter_shadow_would_modify_total`.
    would_modify: SeriesMap<Counter>,
    /// `portcullis_filter_canary_requests_total`, keyed `filter SEP route SEP version`.
    canary: SeriesMap<Counter>,
}

/// A series' count, shared with the routes that hold it.
type Counter = Arc<AtomicU64>;

/// Adds one to `c`; returns its new count.
fn add(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

/// Adds one to the series `parts` of `map`; returns its new count.
fn count(map: &SeriesMap<Counter>, parts: &[&str]) -> u64 {
    add(&series(map, parts))
}

/// The series `parts` of `map`, made if it is new.
fn series(map: &SeriesMap<Counter>, parts: &[&str]) -> Counter {
    with_key(parts, |key| {
        let mut c = None;
        bump(map, key, |v: &Counter| c = Some(Arc::clone(v)));
        c.unwrap_or_default()
    })
}

/// How many reply statuses of one shadow entry are counted without a look-up; past
/// them (a filter answering with many), by name.
const STATUSES: usize = 4;

/// The counters of one shadow chain entry (a filter on a route), found when the route
/// is built: a request counts with an atomic add, where a look-up by name (building
/// the key, hashing it, the map's lock) cost more than the filter's header writes.
#[derive(Debug)]
pub struct ShadowCounters {
    filter: Box<str>,
    route: Box<str>,
    requests: Counter,
    would_modify: Counter,
    /// `would_deny` by status, each found on the entry's first reply with it.
    would_deny: [OnceLock<(u16, Counter)>; STATUSES],
}

impl ShadowCounters {
    /// Counts a request the filter ran on.
    pub fn request(&self) {
        add(&self.requests);
    }

    /// Counts a request the filter changed without effect; returns the new count.
    pub fn would_modify(&self) -> u64 {
        add(&self.would_modify)
    }

    /// Counts a reply with `status` the filter made and the proxy did not send;
    /// returns the new count of that status.
    pub fn would_deny(&self, status: u16) -> u64 {
        let mut buf = itoa::Buffer::new();
        let mut name = || {
            let parts = [&*self.filter, &*self.route, buf.format(status)];
            series(&super::global().shadow.would_deny, &parts)
        };
        for slot in &self.would_deny {
            let (s, c) = slot.get_or_init(|| (status, name()));
            if *s == status {
                return add(c);
            }
        }
        add(&name())
    }
}

impl ShadowSeries {
    pub(super) fn counters(&self, filter: &str, route: &str) -> ShadowCounters {
        ShadowCounters {
            filter: filter.into(),
            route: route.into(),
            requests: series(&self.requests, &[filter, route]),
            would_modify: series(&self.would_modify, &[filter, route]),
            would_deny: Default::default(),
        }
    }

    pub(super) fn canary(&self, route: &str, filter: &str, version: &str) {
        count(&self.canary, &[filter, route, version]);
    }

    pub(super) fn render(&self, out: &mut String) {
        let series = [
            (
                "portcullis_filter_shadow_requests_total",
                &self.requests,
                "Requests a shadow filter ran on (not enforced), by filter and route.",
            ),
            (
                "portcullis_filter_shadow_would_deny_total",
                &self.would_deny,
                "Local replies (deny, redirect, closed stream) a shadow filter made and the proxy did not send, by filter, route and status.",
            ),
            (
                "portcullis_filter_shadow_would_modify_total",
                &self.would_modify,
                "Requests whose head, trailers or body (or response's) a shadow filter changed without effect, by filter and route.",
            ),
            (
                "portcullis_filter_canary_requests_total",
                &self.canary,
                "Requests of a chain entry with a canary, by the entry's filter, route and the version (filter) that ran.",
            ),
        ];
        for (name, map, help) in series {
            header(out, name, "counter", help);
            for (key, c) in sorted(map) {
                let mut parts = split_key(&key);
                let filter = parts.next().unwrap_or_default();
                let route = parts.next().unwrap_or_default();
                let label = if name.contains("canary") {
                    "version"
                } else {
                    "status"
                };
                let status = parts
                    .next()
                    .map(|s| format!(",{label}=\"{}\"", escape(s)))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{name}{{filter=\"{}\",route=\"{}\"{status}}} {}",
                    escape(filter),
                    escape(route),
                    c.load(Ordering::Relaxed)
                );
            }
        }
    }
}
