//! The series of `tcp_routes` and `udp_routes`: connections (UDP: sessions) opened,
//! open now and ended by reason, and the bytes each way.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::render::{escape, header, sorted};
use super::{SeriesMap, bump, split_key, with_key};

/// The L4 series, keyed by route (and reason or direction).
#[derive(Default)]
pub(super) struct L4Series {
    /// `portcullis_l4_connections_total`, by route.
    opened: SeriesMap<AtomicU64>,
    /// `portcullis_l4_connections_active`, by route.
    active: SeriesMap<AtomicI64>,
    /// `portcullis_l4_connections_closed_total`, keyed `route SEP reason`.
    closed: SeriesMap<AtomicU64>,
    /// `portcullis_l4_bytes_total`, keyed `route SEP direction`.
    bytes: SeriesMap<AtomicU64>,
}

impl L4Series {
    pub(super) fn opened(&self, route: &str) {
        bump(&self.opened, route, |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        bump(&self.active, route, |g: &AtomicI64| {
            g.fetch_add(1, Ordering::Relaxed);
        });
    }

    pub(super) fn closed(&self, route: &str, reason: &str, sent: u64, received: u64) {
        bump(&self.active, route, |g: &AtomicI64| {
            g.fetch_sub(1, Ordering::Relaxed);
        });
        with_key(&[route, reason], |key| {
            bump(&self.closed, key, |c: &AtomicU64| {
                c.fetch_add(1, Ordering::Relaxed);
            })
        });
        self.bytes(route, sent, received);
    }

    pub(super) fn bytes(&self, route: &str, sent: u64, received: u64) {
        for (direction, n) in [("upstream", sent), ("downstream", received)] {
            if n > 0 {
                with_key(&[route, direction], |key| {
                    bump(&self.bytes, key, |c: &AtomicU64| {
                        c.fetch_add(n, Ordering::Relaxed);
                    })
                });
            }
        }
    }

    pub(super) fn render(&self, out: &mut String) {
        header(
            out,
            "portcullis_l4_connections_total",
            "counter",
            "Connections (UDP: sessions) of tcp_routes and udp_routes relayed to an upstream, by route.",
        );
        for (route, c) in sorted(&self.opened) {
            let n = c.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "portcullis_l4_connections_total{{route=\"{}\"}} {n}",
                escape(&route)
            );
        }
        header(
            out,
            "portcullis_l4_connections_active",
            "gauge",
            "L4 connections (UDP: sessions) open now, by route.",
        );
        for (route, g) in sorted(&self.active) {
            let n = g.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "portcullis_l4_connections_active{{route=\"{}\"}} {n}",
                escape(&route)
            );
        }
        let pairs = [
            (
                "portcullis_l4_connections_closed_total",
                "reason",
                &self.closed,
                "L4 connections ended, by route and reason (closed, idle_timeout, error).",
            ),
            (
                "portcullis_l4_bytes_total",
                "direction",
                &self.bytes,
                "Bytes relayed by L4 routes, by route and direction (upstream: from the client; downstream: to it).",
            ),
        ];
        for (name, label, map, help) in pairs {
            header(out, name, "counter", help);
            for (key, c) in sorted(map) {
                let mut parts = split_key(&key);
                let route = parts.next().unwrap_or_default();
                let value = parts.next().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{name}{{route=\"{}\",{label}=\"{}\"}} {}",
                    escape(route),
                    escape(value),
                    c.load(Ordering::Relaxed)
                );
            }
        }
    }
}
