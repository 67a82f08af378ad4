//! `routes[].match`: the conditions a request must meet, with `any`, `all` and `not`
//! to combine them.

use super::matching::{self, Logic};
use super::walk::{Cx, Field, Fields};
use super::{PathMatch, RouteMatch, ValueMatch};

/// How deep `any`, `all` and `not` may nest: deeper is an error, not a deep recursion
/// on every request.
const MAX_DEPTH: usize = 8;

/// Decodes `match`.
pub(super) fn route_match(cx: &mut Cx, field: &Field) -> Option<RouteMatch> {
    route_match_at(cx, field, 0)
}

/// `match` (or, `depth` levels down, one of the conditions it combines).
fn route_match_at(cx: &mut Cx, field: &Field, depth: usize) -> Option<RouteMatch> {
    let mut f = Fields::new(cx, field)?;
    let host = f.take("host").map(|v| super::route::host(cx, &v));
    let exact = f.take("path");
    let prefix = f.take("path_prefix");
    let regex = f.take("path_regex");
    let given = [&exact, &prefix, &regex];
    if given.iter().filter(|g| g.is_some()).count() > 1
        && let Some(first) = given.iter().find_map(|g| g.as_ref())
    {
        first.error(cx, "give one of path, path_prefix and path_regex");
    }
    let path = match (&exact, &prefix, &regex) {
        (Some(v), None, None) => Some(url_path(cx, v).map(PathMatch::Exact)),
        (None, Some(v), None) => Some(url_path(cx, v).map(PathMatch::Prefix)),
        (None, None, _) => None,
        _ => Some(None),
    };
    let path_regex = regex.as_ref().map(|v| matching::path_regex(cx, v));
    let methods = f.take("methods").map(|v| methods(cx, &v));
    let headers = f.take("headers").map(|v| match_headers(cx, &v));
    let query = f.take("query").map(|v| matching::query(cx, &v));
    let client_ip = f.take("client_ip").map(|v| matching::client_ip(cx, &v));
    let any = f.take("any").map(|v| nested_list(cx, &v, depth));
    let all = f.take("all").map(|v| nested_list(cx, &v, depth));
    let not = f.take("not").map(|v| nested(cx, &v, depth));
    f.finish(cx);
    let logic = if any.is_some() || all.is_some() || not.is_some() {
        Some(Box::new(Logic {
            any: any.unwrap_or(Some(Vec::new()))?,
            all: all.unwrap_or(Some(Vec::new()))?,
            not: match not {
                Some(n) => Some(n?),
                None => None,
            },
        }))
    } else {
        None
    };
    let (headers, header_patterns) = headers.unwrap_or(Some((Vec::new(), Vec::new())))?;
    Some(RouteMatch {
        host: match host {
            Some(h) => Some(h?),
            None => None,
        },
        path: match path {
            Some(p) => Some(p?),
            None => None,
        },
        methods: match methods {
            Some(m) => Some(m?),
            None => None,
        },
        headers,
        path_regex: match path_regex {
            Some(p) => Some(p?),
            None => None,
        },
        header_patterns,
        query: query.unwrap_or(Some(Vec::new()))?,
        client_ip: match client_ip {
            Some(c) => Some(c?),
            None => None,
        },
        logic,
    })
}

/// One condition under `not` (or an item of `any`/`all`), a level deeper.
fn nested(cx: &mut Cx, field: &Field, depth: usize) -> Option<RouteMatch> {
    if depth >= MAX_DEPTH {
        field.error(
            cx,
            format!("`any`, `all` and `not` nest at most {MAX_DEPTH} levels deep"),
        );
        return None;
    }
    route_match_at(cx, field, depth + 1)
}

/// `any: [...]` / `all: [...]`: a non-empty list of conditions.
fn nested_list(cx: &mut Cx, field: &Field, depth: usize) -> Option<Vec<RouteMatch>> {
    let items = field.list(cx)?;
    if items.is_empty() {
        field.error(cx, "names no condition");
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in &items {
        match nested(cx, item, depth) {
            Some(m) => out.push(m),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A route's `headers`: a scalar value must be there exactly (the common case, kept
/// apart), a mapping is `{ present: true }` or `{ regex: R }`.
type MatchHeaders = (
    Vec<(http::HeaderName, String)>,
    Vec<(http::HeaderName, ValueMatch)>,
);

fn match_headers(cx: &mut Cx, field: &Field) -> Option<MatchHeaders> {
    let mut exact = Vec::new();
    let mut patterns = Vec::new();
    let mut ok = true;
    for (name, value) in field.entries(cx)? {
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            ok = false;
            value.error(cx, format!("`{name}` is not a valid header name"));
            continue;
        };
        match matching::value_match(cx, &value) {
            Some(ValueMatch::Equals(v)) if http::HeaderValue::from_str(&v).is_ok() => {
                exact.push((header, v))
            }
            Some(ValueMatch::Equals(v)) => {
                ok = false;
                value.error(cx, format!("`{v}` is not a valid header value"));
            }
            Some(m) => patterns.push((header, m)),
            None => ok = false,
        }
    }
    ok.then_some((exact, patterns))
}

fn url_path(cx: &mut Cx, field: &Field) -> Option<String> {
    let p = field.string(cx)?;
    if !p.starts_with('/') {
        field.error(cx, format!("`{p}` must start with /"));
        return None;
    }
    if p.contains(['?', '#']) || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        field.error(
            cx,
            format!("`{p}` is not a URL path (no query, fragment or spaces)"),
        );
        return None;
    }
    Some(p)
}

fn methods(cx: &mut Cx, field: &Field) -> Option<Vec<http::Method>> {
    let names = field.string_list(cx)?;
    if names.is_empty() {
        field.error(cx, "names no method; leave it out to allow every method");
        return None;
    }
    let mut out = Vec::with_capacity(names.len());
    let mut ok = true;
    for (name, line) in names {
        let valid = name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
        match http::Method::from_bytes(name.as_bytes()) {
            Ok(m) if valid => out.push(m),
            _ => {
                ok = false;
                cx.error(
                    line,
                    &field.path,
                    format!("`{name}` is not an HTTP method (write it in upper case, e.g. GET)"),
                );
            }
        }
    }
    ok.then_some(out)
}
