//! The series of filters on trial: shadow filters (`{ filter: NAME, shadow: true }`
//! on a route), the requests each saw and what it would have done to them had it been
//! enforced; and canaries (`canary: { filter: NEW, weight: N }`), the requests each
//! version ran on.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::render::{escape, header, sorted};
use super::{SeriesMap, bump, split_key, with_key};

/// The shadow series, keyed `filter SEP route` (and `SEP status`).
#[derive(Default)]
pub(super) struct ShadowSeries {
    /// `portcullis_filter_shadow_requests_total`.
    requests: SeriesMap<AtomicU64>,
    /// `portcullis_filter_shadow_would_deny_total`, keyed `filter SEP route SEP status`.
    would_deny: SeriesMap<AtomicU64>,
    /// `portcullis_filter_shadow_would_modify_total`.
    would_modify: SeriesMap<AtomicU64>,
    /// `portcullis_filter_canary_requests_total`, keyed `filter SEP route SEP version`.
    canary: SeriesMap<AtomicU64>,
}

/// Adds one to the series `parts` of `map`; returns its new count.
fn count(map: &SeriesMap<AtomicU64>, parts: &[&str]) -> u64 {
    with_key(parts, |key| {
        let mut n = 0;
        bump(map, key, |c: &AtomicU64| {
            n = c.fetch_add(1, Ordering::Relaxed) + 1;
        });
        n
    })
}

impl ShadowSeries {
    pub(super) fn request(&self, filter: &str, route: &str) {
        count(&self.requests, &[filter, route]);
    }

    pub(super) fn would_deny(&self, filter: &str, route: &str, status: u16) -> u64 {
        let mut buf = itoa::Buffer::new();
        count(&self.would_deny, &[filter, route, buf.format(status)])
    }

    pub(super) fn would_modify(&self, filter: &str, route: &str) -> u64 {
        count(&self.would_modify, &[filter, route])
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
