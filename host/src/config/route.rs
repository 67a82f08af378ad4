//! `routes:`: which requests a route takes, its filter chain and its upstream.

use super::walk::{Cx, Field, Fields};
use super::{
    CanaryMatch, ECHO_UPSTREAM, FilterCanary, HostMatch, MirrorConfig, RouteConfig,
    RouteDestination, RouteMatch, SplitEntry,
};

/// The most of a request body a mirror copies when `max_body` is not given.
const MIRROR_MAX_BODY: u64 = 64 * 1024;

/// The most copies of a route's requests under way when `max_in_flight` is not given.
pub const MIRROR_MAX_IN_FLIGHT: u32 = 256;

/// The most a split entry's weight may be (with 1000 entries, the shares' total stays
/// far below the split's 2³¹ − 1 bound).
const MAX_SPLIT_WEIGHT: i64 = 1_000_000;

/// A route's references to other items, with the lines they were written on, so that
/// a dangling one can be reported once every file has been read.
pub(crate) struct RouteRefs {
    pub file: String,
    pub path: std::rc::Rc<str>,
    pub listeners: Vec<(String, usize)>,
    pub filters: Vec<(String, usize)>,
    /// Every upstream named, with its line and its field under the route (`upstream`,
    /// `upstreams.0.name`, ...).
    pub upstreams: Vec<(String, usize, String)>,
}

/// Decodes one `routes[]` item. Its references go to `refs` even when the route has
/// other errors, so that a dangling one is reported in the same run.
pub(crate) fn route(cx: &mut Cx, item: &Field, refs: &mut Vec<RouteRefs>) -> Option<RouteConfig> {
    let (mut f, name) = Fields::named(cx, item, "routes")?;
    let listeners_field = f.take("listeners");
    let listeners = listeners_field.as_ref().map(|v| {
        let names = v.string_list(cx)?;
        if names.is_empty() {
            v.error(
                cx,
                "names no listener; leave it out to serve on all listeners",
            );
            return None;
        }
        Some(names)
    });
    let matcher = f
        .take("match")
        .map(|v| super::route_match::route_match(cx, &v));
    let priority = f.take("priority").map(|v| v.int(cx, i64::MIN, i64::MAX));
    let filters_field = f.take("filters");
    let mut trials = Trials::default();
    let filters = filters_field.as_ref().map(|v| {
        let names = chain(cx, v, &mut trials)?;
        for (i, (n, line)) in names.iter().enumerate() {
            if names[..i].iter().any(|(m, _)| m == n) {
                cx.error(*line, &v.path, format!("filter `{n}` is listed twice"));
            }
        }
        Some(names)
    });
    let mut upstream_refs = Vec::new();
    let upstream = destination(cx, &mut f, &mut upstream_refs);
    let max_request_body = f.take("max_request_body").map(|v| v.size(cx));
    let upgrade_idle_timeout = f.take("upgrade_idle_timeout").map(|v| v.duration(cx));
    let mirror = f.take("mirror").map(|v| mirror(cx, &v, &mut upstream_refs));
    let path = f.shared_path();
    f.finish(cx);

    refs.push(RouteRefs {
        file: cx.file.clone(),
        path,
        listeners: listeners.clone().flatten().unwrap_or_default(),
        filters: filters
            .clone()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .chain(trials.canary_refs)
            .collect(),
        upstreams: upstream_refs,
    });
    Some(RouteConfig {
        name: name?,
        listeners: match listeners {
            Some(l) => Some(l?.into_iter().map(|(n, _)| n).collect()),
            None => None,
        },
        matcher: matcher.unwrap_or(Some(RouteMatch::default()))?,
        priority: match priority {
            Some(p) => Some(p?),
            None => None,
        },
        filters: filters
            .unwrap_or(Some(Vec::new()))?
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
        shadow: trials.shadow,
        canaries: trials.canaries,
        upstream: upstream?,
        max_request_body: match max_request_body {
            Some(m) => Some(m?),
            None => None,
        },
        upgrade_idle_timeout: upgrade_idle_timeout.unwrap_or(Some(super::UPGRADE_IDLE_TIMEOUT))?,
        mirror: match mirror {
            Some(m) => Some(m?),
            None => None,
        },
        origin: cx.origin(item.line),
    })
}

/// What a route's chain entries say beyond their filters' names.
#[derive(Default)]
struct Trials {
    /// The entries in shadow mode.
    shadow: Vec<String>,
    /// The entries with a canary.
    canaries: Vec<FilterCanary>,
    /// The canaries' filters, with their lines, to check that they exist.
    canary_refs: Vec<(String, usize)>,
}

/// A route's `filters:`, each item a filter's name or `{ filter: NAME, shadow: true }`
/// or `{ filter: NAME, canary: { filter: NEW, weight: N } }`; the names with their
/// lines, the rest in `trials`. Invalid items are reported and left out.
fn chain(cx: &mut Cx, field: &Field, trials: &mut Trials) -> Option<Vec<(String, usize)>> {
    let items = field.list(cx)?;
    let mut names = Vec::with_capacity(items.len());
    for item in items {
        if !matches!(item.node.kind, super::yaml::Kind::Map(_)) {
            names.extend(item.string(cx).map(|n| (n, item.line)));
            continue;
        }
        let Some(mut f) = Fields::new(cx, &item) else {
            continue;
        };
        let name = f.require(cx, "filter").and_then(|v| v.string(cx));
        let shadowed = f.take("shadow").map(|v| v.bool(cx));
        let canary = f
            .take("canary")
            .and_then(|v| filter_canary(cx, &v, shadowed.is_some()));
        f.finish(cx);
        let Some(name) = name else { continue };
        if shadowed.flatten() == Some(true) {
            trials.shadow.push(name.clone());
        }
        if let Some((canary, line)) = canary {
            trials.canary_refs.push((canary.canary.clone(), line));
            trials.canaries.push(FilterCanary {
                filter: name.clone(),
                ..canary
            });
        }
        names.push((name, item.line));
    }
    Some(names)
}

/// `canary: { filter: NEW, weight: N, header: { name, value }, cookie: { name, value } }`
/// (N in percent; at least one of the three): the canary (its `filter` left empty)
/// and the line of NEW's name.
fn filter_canary(cx: &mut Cx, field: &Field, shadow: bool) -> Option<(FilterCanary, usize)> {
    if shadow {
        field.error(cx, "give either shadow or canary, not both");
        return None;
    }
    let mut f = Fields::new(cx, field)?;
    let name = f
        .require(cx, "filter")
        .and_then(|v| v.string(cx).map(|n| (n, v.line)));
    let weight = f.take("weight").map(|v| super::upstream::percent(cx, &v));
    let header = f.take("header").map(|v| opt_in(cx, &v, OptIn::Header));
    let cookie = f.take("cookie").map(|v| opt_in(cx, &v, OptIn::Cookie));
    f.finish(cx);
    if weight.is_none() && header.is_none() && cookie.is_none() {
        field.error(
            cx,
            "needs a weight, a header or a cookie: which requests run the canary",
        );
        return None;
    }
    let (canary, line) = name?;
    let weight = match weight {
        None => 0,
        Some(w) => w?,
    };
    let header = match header {
        None => None,
        // The name was checked by opt_in.
        Some(h) => {
            let (name, value) = h?;
            Some((http::HeaderName::from_bytes(name.as_bytes()).ok()?, value))
        }
    };
    let cookie = match cookie {
        None => None,
        Some(c) => Some(c?),
    };
    let canary = FilterCanary {
        filter: String::new(),
        canary,
        weight,
        header,
        cookie,
    };
    Some((canary, line))
}

/// What a canary's `header` or `cookie` names.
#[derive(Clone, Copy)]
enum OptIn {
    Header,
    Cookie,
}

/// A canary's `header: { name, value }` or `cookie: { name, value }`, both checked.
fn opt_in(cx: &mut Cx, field: &Field, kind: OptIn) -> Option<(String, String)> {
    let mut f = Fields::new(cx, field)?;
    let name = f.require(cx, "name");
    let value = f.require(cx, "value");
    f.finish(cx);
    let (name_field, value_field) = (name?, value?);
    let (name, value) = (name_field.string(cx), value_field.string(cx));
    let (name, value) = (name?, value?);
    match kind {
        OptIn::Header if http::HeaderName::from_bytes(name.as_bytes()).is_err() => {
            name_field.error(cx, format!("`{name}` is not a valid header name"));
            None
        }
        OptIn::Header if http::HeaderValue::from_str(&value).is_err() => {
            value_field.error(cx, format!("`{value}` is not a valid header value"));
            None
        }
        OptIn::Cookie if !cookie_name_ok(&name) => {
            name_field.error(cx, format!("`{name}` is not a cookie name"));
            None
        }
        _ => Some((name, value)),
    }
}

/// `upstream: NAME`, or `upstreams: [...]` (exactly one of them); every name goes to
/// `refs` with its line and field.
fn destination(
    cx: &mut Cx,
    f: &mut Fields,
    refs: &mut Vec<(String, usize, String)>,
) -> Option<RouteDestination> {
    match (f.take("upstream"), f.take("upstreams")) {
        (Some(_), Some(split)) => {
            split.error(cx, "give either upstream or upstreams, not both");
            None
        }
        (Some(single), None) => {
            let name = single.string(cx)?;
            refs.push((name.clone(), single.line, "upstream".into()));
            Some(RouteDestination::Single(name))
        }
        (None, Some(split)) => split_entries(cx, &split, refs).map(RouteDestination::Split),
        (None, None) => {
            let path = super::walk::join(f.path(), "upstream");
            cx.error(
                f.line(),
                &path,
                "missing required field (or give upstreams)",
            );
            None
        }
    }
}

/// `mirror: { upstream, percent, max_body, max_in_flight }`; the name goes to `refs`.
fn mirror(
    cx: &mut Cx,
    field: &Field,
    refs: &mut Vec<(String, usize, String)>,
) -> Option<MirrorConfig> {
    let mut f = Fields::new(cx, field)?;
    let upstream = f.require(cx, "upstream").and_then(|v| {
        let name = v.string(cx)?;
        if name == ECHO_UPSTREAM {
            v.error(cx, "a mirror goes to a configured upstream");
            return None;
        }
        refs.push((name.clone(), v.line, "mirror.upstream".into()));
        Some(name)
    });
    let percent = f.take("percent").map(|v| {
        let text = v.string(cx)?;
        match text
            .strip_suffix('%')
            .unwrap_or(&text)
            .trim()
            .parse::<u32>()
        {
            Ok(n) if (1..=100).contains(&n) => Some(n),
            _ => {
                v.error(cx, format!("`{text}` is not a percentage from 1% to 100%"));
                None
            }
        }
    });
    let max_body = f.take("max_body").map(|v| v.size(cx));
    let max_in_flight = f
        .take("max_in_flight")
        .map(|v| v.int(cx, 1, 1_000_000).map(|n| n as u32));
    f.finish(cx);
    Some(MirrorConfig {
        upstream: upstream?,
        percent: percent.unwrap_or(Some(100))?,
        max_body: max_body.unwrap_or(Some(MIRROR_MAX_BODY))?,
        max_in_flight: max_in_flight.unwrap_or(Some(MIRROR_MAX_IN_FLIGHT))?,
    })
}

/// `upstreams: [{ name, weight }, { name, match }]`.
fn split_entries(
    cx: &mut Cx,
    field: &Field,
    refs: &mut Vec<(String, usize, String)>,
) -> Option<Vec<SplitEntry>> {
    let items = field.list(cx)?;
    let mut entries = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let Some(mut f) = Fields::new(cx, item) else {
            ok = false;
            continue;
        };
        let name_field = f.require(cx, "name");
        let name = name_field.as_ref().and_then(|v| v.string(cx));
        let weight_field = f.take("weight");
        let weight = weight_field
            .as_ref()
            .map(|v| v.int(cx, 0, MAX_SPLIT_WEIGHT).map(|w| w as u32));
        let canary = f.take("match").map(|v| canary(cx, &v));
        f.finish(cx);
        if let (Some(n), Some(v)) = (&name, &name_field) {
            refs.push((n.clone(), v.line, format!("upstreams.{i}.name")));
        }
        if let (Some(w), Some(_)) = (&weight_field, &canary) {
            w.error(
                cx,
                "an entry with match takes exactly the requests it matches; give it no weight",
            );
            ok = false;
        }
        match (name, weight.unwrap_or(Some(1)), canary) {
            (Some(upstream), Some(weight), None) => entries.push(SplitEntry {
                upstream,
                weight,
                canary: None,
            }),
            (Some(upstream), Some(_), Some(Some(canary))) => entries.push(SplitEntry {
                upstream,
                weight: 0,
                canary: Some(canary),
            }),
            _ => ok = false,
        }
    }
    if !ok {
        return None;
    }
    if !entries.iter().any(|e| e.canary.is_none() && e.weight > 0) {
        field.error(
            cx,
            "needs an entry without match and with a weight above 0, for the requests no canary takes",
        );
        return None;
    }
    Some(entries)
}

/// A canary's `match: { headers: {...}, cookies: {...} }`, at least one condition.
fn canary(cx: &mut Cx, field: &Field) -> Option<CanaryMatch> {
    let mut f = Fields::new(cx, field)?;
    let headers = f.take("headers").map(|v| headers(cx, &v));
    let cookies = f.take("cookies").map(|v| cookies(cx, &v));
    f.finish(cx);
    let canary = CanaryMatch {
        headers: headers.unwrap_or(Some(Vec::new()))?,
        cookies: cookies.unwrap_or(Some(Vec::new()))?,
    };
    if canary.headers.is_empty() && canary.cookies.is_empty() {
        field.error(cx, "needs headers or cookies to match");
        return None;
    }
    Some(canary)
}

fn cookies(cx: &mut Cx, field: &Field) -> Option<Vec<(String, String)>> {
    let entries = field.entries(cx)?;
    let mut out = Vec::with_capacity(entries.len());
    let mut ok = true;
    for (name, value) in entries {
        match value.string(cx) {
            Some(v) if cookie_name_ok(&name) => out.push((name, v)),
            Some(_) => {
                ok = false;
                value.error(cx, format!("`{name}` is not a cookie name"));
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Whether `name` is a cookie name (an RFC 6265 token).
pub(crate) fn cookie_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

pub(super) fn host(cx: &mut Cx, field: &Field) -> Option<HostMatch> {
    let text = field.string(cx)?;
    let lower = text.to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(label_ok) {
        field.error(
            cx,
            format!("`{text}` is not a host pattern (an exact name like api.example.com, or *.example.com; no port)"),
        );
        return None;
    }
    Some(if wildcard {
        HostMatch::Wildcard(format!(".{name}"))
    } else {
        HostMatch::Exact(lower)
    })
}

fn headers(cx: &mut Cx, field: &Field) -> Option<Vec<(http::HeaderName, String)>> {
    let entries = field.entries(cx)?;
    let mut out = Vec::with_capacity(entries.len());
    let mut ok = true;
    for (name, value) in entries {
        let header = http::HeaderName::from_bytes(name.as_bytes());
        let text = value.string(cx);
        match (header, text) {
            (Ok(h), Some(v)) if http::HeaderValue::from_str(&v).is_ok() => out.push((h, v)),
            (Err(_), _) => {
                ok = false;
                value.error(cx, format!("`{name}` is not a valid header name"));
            }
            (Ok(_), Some(v)) => {
                ok = false;
                value.error(cx, format!("`{v}` is not a valid header value"));
            }
            (Ok(_), None) => ok = false,
        }
    }
    ok.then_some(out)
}
