//! `POST /filters/trace?route=NAME[&filter=NAME][&requests=N]`: logs every ABI call
//! of the filters of route NAME (or of its filter NAME only) on its next N requests
//! (default 10), then switches itself off (`crate::wasm::trace`).

use std::sync::Arc;

use super::{AdminResponse, json, text};
use crate::app::App;

/// The most requests one trace may cover: a trace logs a line per host call.
const MAX_REQUESTS: u32 = 1000;

/// How many requests a trace covers when `requests` is not given.
const DEFAULT_REQUESTS: u32 = 10;

/// Arms a trace as `query` asks, once its route (and filter) are checked against the
/// configuration in force.
pub(super) fn arm(app: &Arc<App>, query: &str) -> AdminResponse {
    let (mut route, mut filter, mut requests) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "route" => route = Some(v),
            "filter" => filter = Some(v),
            "requests" => requests = Some(v),
            _ => return bad(format!("unknown parameter {k:?} (route, filter, requests)")),
        }
    }
    let Some(route) = route.filter(|r| !r.is_empty()) else {
        return bad("route=NAME is required".into());
    };
    let requests = match requests.map(str::parse::<u32>) {
        None => DEFAULT_REQUESTS,
        Some(Ok(n)) if (1..=MAX_REQUESTS).contains(&n) => n,
        Some(_) => return bad(format!("requests: a number from 1 to {MAX_REQUESTS}")),
    };
    let snapshot = app.snapshot.load();
    let Some(config) = snapshot.config.routes.iter().find(|r| r.name == route) else {
        return text(
            http::StatusCode::NOT_FOUND,
            format!("no route named {route:?}\n"),
        );
    };
    if let Some(f) = filter {
        let canary = config.canaries.iter().any(|c| c.canary == f);
        if !config.filters.iter().any(|n| n == f) && !canary {
            return text(
                http::StatusCode::NOT_FOUND,
                format!("route {route:?} runs no filter named {f:?}\n"),
            );
        }
    }
    crate::wasm::trace::arm(route, filter, requests);
    json(
        http::StatusCode::OK,
        &serde_json::json!({ "ok": true, "route": route, "filter": filter, "requests": requests }),
    )
}

fn bad(message: String) -> AdminResponse {
    text(http::StatusCode::BAD_REQUEST, format!("{message}\n"))
}
