//! `upstreams:`: targets and their weights, health checks, timeouts, TLS, and the
//! traffic settings (balancing, retries, outlier detection, circuit breaker).

use std::time::Duration;

use super::listener::certificate_pair;
use super::walk::{Cx, Field, Fields};
use super::yaml::Kind;
use super::{
    BalanceConfig, BalanceOption, BreakerConfig, ECHO_UPSTREAM, HealthCheckConfig, HealthCheckKind,
    OutlierConfig, RetryConfig, RetryOn, StickyConfig, TargetConfig, UpstreamConfig,
    UpstreamProtocol, UpstreamTimeouts, UpstreamTlsConfig,
};

/// Decodes one `upstreams[]` item.
pub(crate) fn upstream(cx: &mut Cx, item: &Field) -> Option<UpstreamConfig> {
    let (mut f, name) = Fields::named(cx, item, "upstreams")?;
    if name.as_deref() == Some(ECHO_UPSTREAM) {
        cx.error(
            item.line,
            f.path(),
            format!("`{ECHO_UPSTREAM}` is built in; pick another name"),
        );
    }
    let targets = f.require(cx, "targets").and_then(|v| {
        let items = v.list(cx)?;
        if items.is_empty() {
            v.error(cx, "needs at least one target");
            return None;
        }
        let targets: Vec<_> = items.iter().map(|t| target(cx, t)).collect();
        targets.into_iter().collect::<Option<Vec<_>>>()
    });
    let health_check = f.take("health_check").map(|v| health_check(cx, &v));
    let timeouts = f.take("timeouts").map(|v| timeouts(cx, &v));
    let tls = f.take("tls").map(|v| tls(cx, &v));
    let protocol = f.take("protocol").and_then(|v| {
        let protocol = match v.string(cx)?.as_str() {
            "auto" => UpstreamProtocol::Auto,
            "h2c" => UpstreamProtocol::H2c,
            other => {
                v.error(cx, format!("`{other}` is not a protocol (expected auto or h2c)"));
                return None;
            }
        };
        if protocol == UpstreamProtocol::H2c && tls.is_some() {
            v.error(
                cx,
                "h2c is HTTP/2 without TLS; over TLS, HTTP/2 is picked by ALPN (leave protocol out)",
            );
            return None;
        }
        Some(protocol)
    });
    let balance = f.take("balance").map(|v| balance(cx, &v));
    let retries = f.take("retries").map(|v| retries(cx, &v));
    let outlier = f.take("outlier_detection").map(|v| outlier(cx, &v));
    let breaker = f.take("circuit_breaker").map(|v| breaker(cx, &v));
    let proxy_protocol = f.take("proxy_protocol").and_then(|v| {
        let version = super::l4::proxy_protocol_out(cx, &v)?;
        if tls.is_some() {
            v.error(
                cx,
                "a PROXY header goes before TLS, which is not supported: leave out one of them",
            );
            return None;
        }
        Some(version)
    });
    let sticky = f.take("sticky").map(|v| sticky(cx, &v));
    let threshold = f.take("failover_threshold").map(|v| {
        let p = percent(cx, &v)?;
        if p == 0 {
            v.error(cx, "must be above 0%");
            return None;
        }
        Some(p)
    });
    let metadata = f.take("metadata").map(|v| super::node::values(cx, &v));
    let zone_overload = f.take("zone_overload").map(|v| {
        if matches!(&v.node.kind, Kind::Scalar { text, .. } if text == "off") {
            return Some(None);
        }
        v.int(cx, 1, 1_000_000).map(|n| Some(n as u32))
    });
    f.finish(cx);
    if name.as_deref() == Some(ECHO_UPSTREAM) {
        return None;
    }
    Some(UpstreamConfig {
        name: name?,
        targets: targets?,
        health_check: match health_check {
            Some(h) => Some(h?),
            None => None,
        },
        timeouts: timeouts.unwrap_or(Some(UpstreamTimeouts::default()))?,
        tls: match tls {
            Some(t) => Some(t?),
            None => None,
        },
        protocol: protocol.unwrap_or_default(),
        balance: balance.unwrap_or_else(|| Some(BalanceConfig::default()))?,
        retries: match retries {
            Some(r) => Some(r?),
            None => None,
        },
        outlier_detection: match outlier {
            Some(o) => Some(o?),
            None => None,
        },
        circuit_breaker: match breaker {
            Some(b) => Some(b?),
            None => None,
        },
        proxy_protocol,
        sticky: match sticky {
            Some(s) => Some(s?),
            None => None,
        },
        failover_threshold: threshold.unwrap_or(Some(super::DEFAULT_FAILOVER_THRESHOLD))?,
        metadata: metadata.unwrap_or(Some(Vec::new()))?.into(),
        zone_overload: zone_overload.unwrap_or(Some(Some(super::DEFAULT_ZONE_OVERLOAD)))?,
        // Filled once every file is read (the top-level `zone` may come later).
        local_zone: None,
        origin: cx.origin(item.line),
    })
}

/// `balance: NAME`, or `balance: { policy: NAME, SETTING: value, ... }`. The policy
/// checks its name and settings when the upstream is built (see `upstream::balance`);
/// here they only need to be scalars.
fn balance(cx: &mut Cx, field: &Field) -> Option<BalanceConfig> {
    let origin = cx.origin(field.line);
    if !matches!(field.node.kind, Kind::Map(_)) {
        return Some(BalanceConfig {
            policy: field.string(cx)?,
            options: Vec::new(),
            origin,
        });
    }
    let mut policy = None;
    let mut options = Vec::new();
    let mut ok = true;
    for (name, value) in field.entries(cx)? {
        let Some(text) = value.string(cx) else {
            ok = false;
            continue;
        };
        if name == "policy" {
            policy = Some(text);
        } else {
            options.push(BalanceOption {
                name,
                value: text,
                line: value.line,
            });
        }
    }
    if policy.is_none() {
        cx.error(
            field.line,
            &format!("{}.policy", field.path),
            "missing required field",
        );
    }
    ok.then_some(())?;
    Some(BalanceConfig {
        policy: policy?,
        options,
        origin,
    })
}

/// `retries: { attempts, on, per_try_timeout, backoff, max_body, budget, min_retries }`.
fn retries(cx: &mut Cx, field: &Field) -> Option<RetryConfig> {
    let mut f = Fields::new(cx, field)?;
    let d = RetryConfig::default();
    let attempts = f
        .take("attempts")
        .map(|v| v.int(cx, 1, 10).map(|n| n as u32));
    let on = f.take("on").map(|v| retry_on(cx, &v));
    let per_try_timeout = f.take("per_try_timeout").map(|v| v.duration(cx));
    let backoff = f.take("backoff").map(|v| match &v.node.kind {
        Kind::Scalar { text, .. } if text == "0" => Some(Duration::ZERO),
        _ => v.duration(cx),
    });
    let max_body = f.take("max_body").map(|v| v.size(cx));
    let budget = f.take("budget").map(|v| percent(cx, &v));
    let min_retries = f
        .take("min_retries")
        .map(|v| v.int(cx, 0, 1_000_000).map(|n| n as u32));
    f.finish(cx);
    Some(RetryConfig {
        attempts: attempts.unwrap_or(Some(d.attempts))?,
        on: on.unwrap_or(Some(d.on))?,
        per_try_timeout: match per_try_timeout {
            Some(t) => Some(t?),
            None => None,
        },
        backoff: backoff.unwrap_or(Some(d.backoff))?,
        max_body: max_body.unwrap_or(Some(d.max_body))?,
        budget_percent: budget.unwrap_or(Some(d.budget_percent))?,
        min_retries: min_retries.unwrap_or(Some(d.min_retries))?,
    })
}

/// `outlier_detection: { consecutive_5xx, base_ejection_time, max_ejection_time,
/// max_ejection_percent }`.
fn outlier(cx: &mut Cx, field: &Field) -> Option<OutlierConfig> {
    let mut f = Fields::new(cx, field)?;
    let d = OutlierConfig::default();
    let consecutive = f
        .take("consecutive_5xx")
        .map(|v| v.int(cx, 1, 1000).map(|n| n as u32));
    let base = f.take("base_ejection_time").map(|v| v.duration(cx));
    let max = f.take("max_ejection_time").map(|v| v.duration(cx));
    let percent = f.take("max_ejection_percent").map(|v| percent(cx, &v));
    f.finish(cx);
    Some(OutlierConfig {
        consecutive_5xx: consecutive.unwrap_or(Some(d.consecutive_5xx))?,
        base_ejection_time: base.unwrap_or(Some(d.base_ejection_time))?,
        max_ejection_time: max.unwrap_or(Some(d.max_ejection_time))?,
        max_ejection_percent: percent.unwrap_or(Some(d.max_ejection_percent))?,
    })
}

/// `circuit_breaker: { max_requests, max_connections, max_pending }`, at least one.
fn breaker(cx: &mut Cx, field: &Field) -> Option<BreakerConfig> {
    let mut f = Fields::new(cx, field)?;
    let mut limit = |name: &'static str| {
        f.take(name)
            .map(|v| v.int(cx, 1, i64::from(u32::MAX)).map(|n| n as u32))
    };
    let max_requests = limit("max_requests");
    let max_connections = limit("max_connections");
    let max_pending = limit("max_pending");
    f.finish(cx);
    if max_requests.is_none() && max_connections.is_none() && max_pending.is_none() {
        field.error(
            cx,
            "needs at least one of max_requests, max_connections, max_pending",
        );
        return None;
    }
    let or_none = |v: Option<Option<u32>>| match v {
        Some(n) => n.map(Some),
        None => Some(None),
    };
    Some(BreakerConfig {
        max_requests: or_none(max_requests)?,
        max_connections: or_none(max_connections)?,
        max_pending: or_none(max_pending)?,
    })
}

/// `sticky: { cookie, max_age }`.
fn sticky(cx: &mut Cx, field: &Field) -> Option<StickyConfig> {
    let mut f = Fields::new(cx, field)?;
    let cookie = f.require(cx, "cookie").and_then(|v| {
        let name = v.string(cx)?;
        if super::route::cookie_name_ok(&name) {
            Some(name)
        } else {
            v.error(cx, format!("`{name}` is not a cookie name"));
            None
        }
    });
    let max_age = f.take("max_age").map(|v| v.duration(cx));
    f.finish(cx);
    Some(StickyConfig {
        cookie: cookie?,
        max_age: match max_age {
            Some(m) => Some(m?),
            None => None,
        },
    })
}

fn retry_on(cx: &mut Cx, field: &Field) -> Option<Vec<RetryOn>> {
    const CONDITIONS: &[(&str, RetryOn)] = &[
        ("connect-failure", RetryOn::ConnectFailure),
        ("refused-stream", RetryOn::RefusedStream),
        ("reset", RetryOn::Reset),
        ("5xx", RetryOn::Status5xx),
        ("gateway-error", RetryOn::GatewayError),
    ];
    let items = field.list(cx)?;
    if items.is_empty() {
        field.error(
            cx,
            "names no condition; leave retries out to retry nothing but connect failures",
        );
        return None;
    }
    let on: Vec<Option<RetryOn>> = items.iter().map(|i| i.choice(cx, CONDITIONS)).collect();
    on.into_iter().collect()
}

/// `20%` (or `20`): a whole percentage, 0–100.
pub(crate) fn percent(cx: &mut Cx, field: &Field) -> Option<u32> {
    let text = field.string(cx)?;
    match text
        .strip_suffix('%')
        .unwrap_or(&text)
        .trim()
        .parse::<u32>()
    {
        Ok(n) if n <= 100 => Some(n),
        _ => {
            field.error(cx, format!("`{text}` is not a percentage from 0% to 100%"));
            None
        }
    }
}

fn target(cx: &mut Cx, field: &Field) -> Option<TargetConfig> {
    let mut f = Fields::new(cx, field)?;
    let address = f.require(cx, "address").and_then(|v| {
        let text = v.string(cx)?;
        match check_host_port(&text) {
            Ok(()) => Some(text),
            Err(why) => {
                v.error(cx, format!("`{text}` is not a host:port address ({why})"));
                None
            }
        }
    });
    let weight = f
        .take("weight")
        .map(|v| v.int(cx, 1, i64::from(u32::MAX)).map(|w| w as u32));
    let priority = f
        .take("priority")
        .map(|v| v.int(cx, 0, 1000).map(|p| p as u32));
    let labels = f.take("labels").map(|v| labels(cx, &v));
    f.finish(cx);
    Some(TargetConfig {
        address: address?,
        weight: weight.unwrap_or(Some(1))?,
        priority: priority.unwrap_or(Some(0))?,
        labels: labels.unwrap_or(Some(Vec::new()))?,
    })
}

/// `labels: { zone: a, rack: r1 }`: names and values are non-empty strings.
fn labels(cx: &mut Cx, field: &Field) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (name, value) in field.entries(cx)? {
        match value.string(cx) {
            Some(v) => out.push((name, v)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Checks `host:port`, `IPv4:port` or `[IPv6]:port`; the name is resolved at connect time.
fn check_host_port(text: &str) -> Result<(), &'static str> {
    let (host, port) = text.rsplit_once(':').ok_or("no port")?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("the port must be 1-65535"),
        Ok(_) => {}
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ip = inner.strip_suffix(']').ok_or("unbalanced [")?;
        return ip
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "bad IPv6 address");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err("bad host name");
    }
    Ok(())
}

fn health_check(cx: &mut Cx, field: &Field) -> Option<HealthCheckConfig> {
    let mut f = Fields::new(cx, field)?;
    let kind_field = f.take("type");
    let kind = match &kind_field {
        None => Some(HealthCheckKind::Http),
        Some(v) => match v.string(cx)?.as_str() {
            "http" => Some(HealthCheckKind::Http),
            "grpc" => Some(HealthCheckKind::Grpc {
                service: String::new(),
            }),
            "tcp" => Some(HealthCheckKind::Tcp),
            other => {
                v.error(cx, format!("`{other}` is not a check (http, grpc or tcp)"));
                None
            }
        },
    };
    let path_field = f.take("path");
    let path = path_field.as_ref().map(|v| {
        let p = v.string(cx)?;
        if p.starts_with('/') {
            Some(p)
        } else {
            v.error(cx, format!("`{p}` must start with /"));
            None
        }
    });
    let service_field = f.take("service");
    let interval = f.require(cx, "interval").and_then(|v| v.duration(cx));
    let timeout = f.take("timeout").map(|v| v.duration(cx));
    f.finish(cx);
    let mut kind = kind?;
    let path = match (&kind, path_field, path) {
        (HealthCheckKind::Http, Some(_), Some(p)) => p?,
        (HealthCheckKind::Http, _, _) => {
            let path = super::walk::join(&field.path, "path");
            cx.error(field.line, &path, "missing required field");
            return None;
        }
        (_, Some(v), _) => {
            v.error(cx, "only an http check has a path");
            return None;
        }
        (HealthCheckKind::Grpc { .. }, None, _) => GRPC_HEALTH_PATH.to_string(),
        (HealthCheckKind::Tcp, None, _) => String::new(),
    };
    if let Some(v) = service_field {
        match &mut kind {
            HealthCheckKind::Grpc { service } => *service = v.string(cx)?,
            _ => {
                v.error(cx, "only a grpc check asks about a service");
                return None;
            }
        }
    }
    Some(HealthCheckConfig {
        kind,
        path,
        interval: interval?,
        timeout: timeout.unwrap_or(Some(Duration::from_secs(1)))?,
    })
}

/// The method a `grpc` health check calls (grpc.health.v1).
pub const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";

fn timeouts(cx: &mut Cx, field: &Field) -> Option<UpstreamTimeouts> {
    let mut f = Fields::new(cx, field)?;
    let d = UpstreamTimeouts::default();
    let connect = f.take("connect").map(|v| v.duration(cx));
    let request = f.take("request").map(|v| v.duration(cx));
    f.finish(cx);
    Some(UpstreamTimeouts {
        connect: connect.unwrap_or(Some(d.connect))?,
        request: request.unwrap_or(Some(d.request))?,
    })
}

fn tls(cx: &mut Cx, field: &Field) -> Option<UpstreamTlsConfig> {
    let mut f = Fields::new(cx, field)?;
    let ca = f.take("ca").map(|v| v.existing_file(cx));
    let sni = f.take("sni").map(|v| v.string(cx));
    let verify = f.take("verify").map(|v| v.bool(cx));
    let client_cert = f.take("client_cert").map(|v| certificate_pair(cx, &v));
    f.finish(cx);
    Some(UpstreamTlsConfig {
        ca: match ca {
            Some(c) => Some(c?),
            None => None,
        },
        sni: match sni {
            Some(s) => Some(s?),
            None => None,
        },
        verify: verify.unwrap_or(Some(true))?,
        client_cert: match client_cert {
            Some(c) => Some(c?),
            None => None,
        },
    })
}
