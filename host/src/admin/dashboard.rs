//! The dashboard: one page (`GET /`, HTML, CSS and script in one file embedded in the
//! binary) that polls `GET /dashboard.json` and redraws itself.
//!
//! The JSON is `/status` with what a person watching the proxy wants beside it: each
//! route's match in words, each route's and filter's recent traffic (rate, errors,
//! p50/p99 latency), the targets' load and ejections, the certificates' expiry and
//! the last load attempts. Read-only: nothing here changes the proxy.

use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use crate::app::App;
use crate::config::{HostMatch, PathMatch, RouteMatch, ValueMatch};
use crate::metrics::{self, Summary};

/// The page itself.
pub(super) const PAGE: &str = include_str!("dashboard/index.html");

/// Seconds over which errors and latency quantiles are summed.
const SUMMARY_SECS: u64 = 60;
/// Seconds over which the current request rate is averaged.
const RATE_SECS: u64 = 10;
/// The sparkline: one point per `SPARK_STEP` seconds, over the whole window.
const SPARK_STEP: u64 = 10;

/// Builds the dashboard's data for `app`.
pub(super) fn data(app: &App) -> Value {
    let mut doc = super::status::status(app);
    let snapshot = app.snapshot.load_full();
    let config = &snapshot.config;
    let now = Instant::now();
    let m = metrics::global();
    let points = metrics::SPAN_SECS / SPARK_STEP;

    if let Some(routes) = doc["routes"].as_array_mut() {
        for (r, route) in config.routes.iter().zip(routes.iter_mut()) {
            route["match"] = describe(&r.matcher).into();
            let recent = m.route_recent(&r.name, now, SUMMARY_SECS, (SPARK_STEP, points));
            let (summary, rates) = recent.unwrap_or_else(|| (Summary::default(), vec![0.0; 0]));
            let rate = m
                .route_recent(&r.name, now, RATE_SECS, (1, 1))
                .map_or(0.0, |(s, _)| s.requests as f64 / RATE_SECS as f64);
            route["recent"] = recent_json(&summary, rate, &rates);
        }
    }
    if let Some(filters) = doc["filters"].as_array_mut() {
        for (f, filter) in config.filters.iter().zip(filters.iter_mut()) {
            let Some(plugin) = snapshot.plugin(&f.name) else {
                continue;
            };
            let w = plugin.recent();
            let rate = w.summary(now, RATE_SECS).requests as f64 / RATE_SECS as f64;
            filter["recent"] = recent_json(
                &w.summary(now, SUMMARY_SECS),
                rate,
                &w.rates(now, SPARK_STEP, points),
            );
        }
    }
    doc["upstreams"] = snapshot.upstream_status();
    let wall = SystemTime::now();
    let mut certificates: Vec<Value> = Vec::new();
    for (listener, cert) in snapshot.tls().certificates() {
        certificates.push(json!({
            "listener": listener,
            "path": cert.path.display().to_string(),
            "names": cert.names,
            "not_after": rfc3339_secs(cert.not_after),
            "days_left": (cert.days_left(wall) * 10.0).round() / 10.0,
        }));
    }
    doc["certificates"] = certificates.into();
    doc["reloads"] = app
        .reload_history()
        .iter()
        .map(|r| {
            json!({
                "generation": r.generation,
                "ok": r.ok,
                "at": humantime::format_rfc3339_millis(r.at).to_string(),
                "errors": r.errors,
            })
        })
        .collect();
    doc["now"] = humantime::format_rfc3339_millis(wall).to_string().into();
    doc["window"] = json!({
        "summary_secs": SUMMARY_SECS,
        "rate_secs": RATE_SECS,
        "spark_step_secs": SPARK_STEP,
    });
    doc
}

fn recent_json(s: &Summary, rate: f64, rates: &[f64]) -> Value {
    let error_rate = if s.requests == 0 {
        0.0
    } else {
        s.errors as f64 / s.requests as f64
    };
    json!({
        "rps": round(rate),
        "requests": s.requests,
        "errors": s.errors,
        "error_rate": round(error_rate),
        "p50_ms": round(s.p50_ms),
        "p99_ms": round(s.p99_ms),
        "rates": rates.iter().map(|&r| round(r)).collect::<Vec<_>>(),
    })
}

/// Three significant decimals are plenty on a screen.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn rfc3339_secs(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) => humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s),
        )
        .to_string(),
        Err(_) => format!("{secs} s before 1970"),
    }
}

/// A route's match in words, one condition each: `host api.example.com`,
/// `path_prefix /api`, …; empty when it matches every request.
fn describe(m: &RouteMatch) -> Vec<String> {
    let mut out = Vec::new();
    match &m.host {
        Some(HostMatch::Exact(h)) => out.push(format!("host {h}")),
        Some(HostMatch::Wildcard(suffix)) => out.push(format!("host *{suffix}")),
        None => {}
    }
    match &m.path {
        Some(PathMatch::Exact(p)) => out.push(format!("path {p}")),
        Some(PathMatch::Prefix(p)) => out.push(format!("path_prefix {p}")),
        None => {}
    }
    if let Some(p) = &m.path_regex {
        out.push(format!("path_regex {}", p.source));
    }
    if let Some(methods) = &m.methods {
        let names: Vec<&str> = methods.iter().map(http::Method::as_str).collect();
        out.push(format!("methods {}", names.join(",")));
    }
    for (name, value) in &m.headers {
        out.push(format!("header {name}: {value}"));
    }
    for (name, value) in &m.header_patterns {
        out.push(format!("header {name} {}", value_match(value)));
    }
    for (name, value) in &m.query {
        out.push(format!("query {name} {}", value_match(value)));
    }
    if let Some(ip) = &m.client_ip {
        out.push(format!("client_ip in {} block(s)", ip.cidrs.len()));
    }
    if let Some(logic) = &m.logic {
        let group = |ms: &[RouteMatch]| -> String {
            let parts: Vec<String> = ms.iter().map(|m| describe(m).join(" and ")).collect();
            format!("({})", parts.join(") or ("))
        };
        if !logic.any.is_empty() {
            out.push(format!("any {}", group(&logic.any)));
        }
        for m in &logic.all {
            out.push(format!("({})", describe(m).join(" and ")));
        }
        if let Some(not) = &logic.not {
            out.push(format!("not ({})", describe(not).join(" and ")));
        }
    }
    out
}

fn value_match(v: &ValueMatch) -> String {
    match v {
        ValueMatch::Present => "present".into(),
        ValueMatch::Equals(s) => format!("= {s}"),
        ValueMatch::Regex(p) => format!("~ {}", p.source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_read_as_conditions() {
        let m = RouteMatch {
            host: Some(HostMatch::Wildcard(".example.com".into())),
            path: Some(PathMatch::Prefix("/api".into())),
            methods: Some(vec![http::Method::GET, http::Method::POST]),
            headers: vec![(http::HeaderName::from_static("x-canary"), "true".into())],
            ..RouteMatch::default()
        };
        assert_eq!(
            describe(&m),
            [
                "host *.example.com",
                "path_prefix /api",
                "methods GET,POST",
                "header x-canary: true"
            ]
        );
        assert!(describe(&RouteMatch::default()).is_empty());
    }

    #[test]
    fn the_page_polls_its_data_and_loads_nothing_from_elsewhere() {
        assert!(PAGE.contains("dashboard.json"));
        for outside in [" src=", "<link", "@import", "url(", "https:"] {
            assert!(
                !PAGE.contains(outside),
                "the page must be self-contained: {outside}"
            );
        }
    }
}
