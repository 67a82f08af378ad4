//! The Prometheus text exposition format (0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::custom::{CUSTOM_BUCKETS, CustomKind, CustomMetric};
use super::{DURATION_BUCKETS, Metrics, split_key};

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub(super) fn render(m: &Metrics) -> String {
    let mut out = String::with_capacity(4096);

    header(
        &mut out,
        "portcullis_requests_total",
        "counter",
        "Requests served, by listener, route and status class.",
    );
    for (key, counts) in sorted(&m.requests) {
        let mut parts = split_key(&key);
        let listener = parts.next().unwrap_or_default();
        let route = parts.next().unwrap_or_default();
        for (class, count) in CLASSES.iter().zip(counts.0.iter()) {
            let n = count.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "portcullis_requests_total{{listener=\"{}\",route=\"{}\",code=\"{class}\"}} {n}",
                    escape(listener),
                    escape(route)
                );
            }
        }
    }

    header(
        &mut out,
        "portcullis_request_duration_seconds",
        "histogram",
        "Time from request to response headers, by route.",
    );
    for (route, series) in sorted(&m.durations) {
        let route = escape(&route);
        let h = &series.total;
        let mut cumulative = 0;
        for (i, b) in h.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = DURATION_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |le| le.to_string());
            let _ = writeln!(
                out,
                "portcullis_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "portcullis_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "portcullis_request_duration_seconds_count{{route=\"{route}\"}} {}",
            h.count.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "portcullis_upstream_errors_total",
        "counter",
        "Failures reaching or reading from an upstream, by kind.",
    );
    for (key, c) in sorted(&m.upstream_errors) {
        let mut parts = split_key(&key);
        let upstream = parts.next().unwrap_or_default();
        let kind = parts.next().unwrap_or_default();
        let _ = writeln!(
            out,
            "portcullis_upstream_errors_total{{upstream=\"{}\",kind=\"{}\"}} {}",
            escape(upstream),
            escape(kind),
            c.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "portcullis_upstream_retries_total",
        "counter",
        "Failed attempts tried again, by upstream and failure.",
    );
    for (key, c) in sorted(&m.upstream_retries) {
        let mut parts = split_key(&key);
        let upstream = parts.next().unwrap_or_default();
        let reason = parts.next().unwrap_or_default();
        let _ = writeln!(
            out,
            "portcullis_upstream_retries_total{{upstream=\"{}\",reason=\"{}\"}} {}",
            escape(upstream),
            escape(reason),
            c.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "portcullis_upstream_retries_denied_total",
        "counter",
        "Retries not made because the upstream's retry budget was spent.",
    );
    for (upstream, c) in sorted(&m.upstream_retries_denied) {
        let _ = writeln!(
            out,
            "portcullis_upstream_retries_denied_total{{upstream=\"{}\"}} {}",
            escape(&upstream),
            c.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "portcullis_mirror_requests_total",
        "counter",
        "Requests copied to a route's shadow upstream, by route, upstream and result.",
    );
    for (key, c) in sorted(&m.mirrors) {
        let mut parts = split_key(&key);
        let route = parts.next().unwrap_or_default();
        let upstream = parts.next().unwrap_or_default();
        let result = parts.next().unwrap_or_default();
        let _ = writeln!(
            out,
            "portcullis_mirror_requests_total{{route=\"{}\",upstream=\"{}\",result=\"{}\"}} {}",
            escape(route),
            escape(upstream),
            escape(result),
            c.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "portcullis_connections_open",
        "gauge",
        "Client connections open, by listener.",
    );
    for (listener, g) in sorted(&m.connections) {
        let _ = writeln!(
            out,
            "portcullis_connections_open{{listener=\"{}\"}} {}",
            escape(&listener),
            g.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "portcullis_ratelimit_store_errors_total",
        "counter",
        "Rate-limit checks whose Redis store failed or timed out, by filter and the policy that decided them.",
    );
    for (key, c) in sorted(&m.store_errors) {
        let mut parts = split_key(&key);
        let filter = parts.next().unwrap_or_default();
        let policy = parts.next().unwrap_or_default();
        let _ = writeln!(
            out,
            "portcullis_ratelimit_store_errors_total{{filter=\"{}\",policy=\"{}\"}} {}",
            escape(filter),
            escape(policy),
            c.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "portcullis_client_limits_total",
        "counter",
        "Clients that met a limit of their listener, by listener and limit.",
    );
    for (key, c) in sorted(&m.client_limits) {
        let mut parts = split_key(&key);
        let listener = parts.next().unwrap_or_default();
        let limit = parts.next().unwrap_or_default();
        let _ = writeln!(
            out,
            "portcullis_client_limits_total{{listener=\"{}\",limit=\"{}\"}} {}",
            escape(listener),
            escape(limit),
            c.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "portcullis_upgrades_total",
        "counter",
        "Connections switched to another protocol (HTTP/1.1 upgrades, WebSockets), by route.",
    );
    for (route, c) in sorted(&m.upgrades) {
        let _ = writeln!(
            out,
            "portcullis_upgrades_total{{route=\"{}\"}} {}",
            escape(&route),
            c.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "portcullis_upgrades_active",
        "gauge",
        "Switched connections open now, by route.",
    );
    for (route, g) in sorted(&m.upgrades_active) {
        let _ = writeln!(
            out,
            "portcullis_upgrades_active{{route=\"{}\"}} {}",
            escape(&route),
            g.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "portcullis_upgrades_closed_total",
        "counter",
        "Switched connections ended, by route and reason (closed, idle_timeout, error).",
    );
    for (key, c) in sorted(&m.upgrades_closed) {
        let mut parts = split_key(&key);
        let route = parts.next().unwrap_or_default();
        let reason = parts.next().unwrap_or_default();
        let _ = writeln!(
            out,
            "portcullis_upgrades_closed_total{{route=\"{}\",reason=\"{}\"}} {}",
            escape(route),
            escape(reason),
            c.load(Ordering::Relaxed)
        );
    }

    m.l4.render(&mut out);
    m.shadow.render(&mut out);

    header(
        &mut out,
        "portcullis_config_generation",
        "gauge",
        "The configuration generation serving (successful loads from 1).",
    );
    let _ = writeln!(
        out,
        "portcullis_config_generation {}",
        m.generation.load(Ordering::Relaxed)
    );

    header(
        &mut out,
        "portcullis_reloads_total",
        "counter",
        "Configuration reload attempts, by result.",
    );
    let _ = writeln!(
        out,
        "portcullis_reloads_total{{result=\"ok\"}} {}",
        m.reloads_ok.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "portcullis_reloads_total{{result=\"error\"}} {}",
        m.reloads_error.load(Ordering::Relaxed)
    );

    header(
        &mut out,
        "portcullis_trace_spans_total",
        "counter",
        "Spans of traced requests the OTLP collector took.",
    );
    let spans = &m.spans;
    let _ = writeln!(
        out,
        "portcullis_trace_spans_total {}",
        spans.exported.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "portcullis_trace_spans_dropped_total",
        "counter",
        "Spans dropped: the export queue was full (a slow or dead collector), or the collector failed the export.",
    );
    for (reason, counter) in [
        ("queue_full", &spans.queue_full),
        ("export_failed", &spans.export_failed),
    ] {
        let _ = writeln!(
            out,
            "portcullis_trace_spans_dropped_total{{reason=\"{reason}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    header(
        &mut out,
        "portcullis_access_log_dropped_total",
        "counter",
        "Access log lines dropped because the writer was behind (a stalled disk).",
    );
    let _ = writeln!(
        out,
        "portcullis_access_log_dropped_total {}",
        m.access_log_dropped.load(Ordering::Relaxed)
    );

    if m.etcd.followed.load(Ordering::Relaxed) {
        header(
            &mut out,
            "portcullis_etcd_connected",
            "gauge",
            "1 while the watch on the providers.etcd prefix is established, else 0.",
        );
        let connected = m.etcd.connected.load(Ordering::Relaxed);
        let _ = writeln!(out, "portcullis_etcd_connected {}", u8::from(connected));
        header(
            &mut out,
            "portcullis_etcd_failures_total",
            "counter",
            "Failed attempts to read or watch the providers.etcd prefix (each retried).",
        );
        let failures = m.etcd.failures.load(Ordering::Relaxed);
        let _ = writeln!(out, "portcullis_etcd_failures_total {failures}");
    }

    header(
        &mut out,
        "portcullis_filter_failures_total",
        "counter",
        "Filter traps, deadline misses and memory exhaustion, by filter and kind.",
    );
    for (key, c) in sorted(&m.filter_failures) {
        let mut parts = split_key(&key);
        let filter = parts.next().unwrap_or_default();
        let kind = parts.next().unwrap_or_default();
        let _ = writeln!(
            out,
            "portcullis_filter_failures_total{{filter=\"{}\",kind=\"{}\"}} {}",
            escape(filter),
            escape(kind),
            c.load(Ordering::Relaxed)
        );
    }

    render_custom(&mut out, &m.custom.snapshot());
    out
}

/// Guest metrics, grouped by sanitised name so each family gets one TYPE line. Two
/// filters defining the same name with different kinds cannot share a family; the
/// later kind is left out rather than producing an exposition Prometheus rejects.
fn render_custom(out: &mut String, metrics: &[std::sync::Arc<CustomMetric>]) {
    let mut families: BTreeMap<String, Vec<&CustomMetric>> = BTreeMap::new();
    for m in metrics {
        families.entry(sanitize(&m.name)).or_default().push(m);
    }
    for (name, members) in families {
        let Some(kind) = members.first().map(|m| m.kind) else {
            continue;
        };
        let type_name = match kind {
            CustomKind::Counter => "counter",
            CustomKind::Gauge => "gauge",
            CustomKind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# TYPE {name} {type_name}");
        for m in members.into_iter().filter(|m| m.kind == kind) {
            let filter = escape(&m.filter);
            match kind {
                CustomKind::Counter | CustomKind::Gauge => {
                    let _ = writeln!(
                        out,
                        "{name}{{filter=\"{filter}\"}} {}",
                        m.value.load(Ordering::Relaxed)
                    );
                }
                CustomKind::Histogram => {
                    let mut cumulative = 0;
                    for (i, b) in m.buckets.iter().enumerate() {
                        cumulative += b.load(Ordering::Relaxed);
                        let le = CUSTOM_BUCKETS
                            .get(i)
                            .map_or_else(|| "+Inf".to_owned(), |le| le.to_string());
                        let _ = writeln!(
                            out,
                            "{name}_bucket{{filter=\"{filter}\",le=\"{le}\"}} {cumulative}"
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{name}_sum{{filter=\"{filter}\"}} {}",
                        m.sum.load(Ordering::Relaxed)
                    );
                    let _ = writeln!(
                        out,
                        "{name}_count{{filter=\"{filter}\"}} {}",
                        m.count.load(Ordering::Relaxed)
                    );
                }
            }
        }
    }
}

pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The series of a map in key order, so the exposition is stable between scrapes.
pub(super) fn sorted<V>(
    map: &super::SeriesMap<V>,
) -> Vec<(String, dashmap::mapref::multiple::RefMulti<'_, String, V>)> {
    let mut v: Vec<_> = map.iter().map(|r| (r.key().clone(), r)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A metric name with every character outside `[a-zA-Z0-9_:]` replaced by `_` (and a
/// leading digit prefixed), as the proxy-wasm contract promises.
pub(super) fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label value escaped as the exposition format requires.
pub(super) fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn sanitize_replaces_invalid_characters() {
        assert_eq!(sanitize("a.b-c:d_e"), "a_b_c:d_e");
        assert_eq!(sanitize("9lives"), "_9lives");
        assert_eq!(sanitize("héllo"), "h_llo");
    }
}
