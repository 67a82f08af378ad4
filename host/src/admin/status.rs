//! The `/status` document: what configuration is in force and how the last reload went.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::app::App;
use crate::config::{
    AdminToken, FilterSource, HostMatch, ListenerConfig, ListenerProtocol, OnError, TokenSource,
};
use crate::listeners::Kind;
use crate::wasm::ModuleOrigin;

/// Builds the `/status` JSON for `app`.
pub(super) fn status(app: &App) -> Value {
    let snapshot = app.snapshot.load_full();
    let config = &snapshot.config;
    let last = app.last_reload();
    let table = app.listeners().borrow().clone();

    let listeners: Vec<Value> = config
        .listeners
        .iter()
        .map(|l| {
            let bound: Vec<String> = table
                .listeners
                .iter()
                .filter(|b| b.kind == Kind::Proxy && *b.name == *l.name)
                .map(|b| b.bound.to_string())
                .collect();
            json!({
                "name": l.name,
                "address": l.address.to_string(),
                "bound": bound,
                "protocol": l.protocol.name(),
                "tls": l.tls.is_some(),
                "proxy_protocol": l.proxy_protocol.is_some(),
                "acme": acme(l),
            })
        })
        .collect();
    let admin = table
        .listeners
        .iter()
        .find(|b| b.kind == Kind::Admin)
        .map(|b| {
            let mut admin =
                json!({ "address": b.configured.to_string(), "bound": [b.bound.to_string()] });
            if let Some(a) = &config.admin {
                admin["reload"] = a.reload.into();
                admin["tokens"] = a.tokens.iter().map(token).collect();
                admin["tls"] = a.tls.is_some().into();
                admin["client_certificates"] =
                    a.tls.as_ref().is_some_and(|t| t.client_ca.is_some()).into();
            }
            admin
        });

    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "listeners": r.listeners,
                "priority": r.priority,
                "filters": r.filters,
                "shadow_filters": r.shadow,
                "upstream": r.upstream.names().join(","),
            })
        })
        .collect();
    let l4_routes = |protocol: ListenerProtocol| -> Vec<Value> {
        config
            .l4_routes
            .iter()
            .filter(|r| r.protocol == protocol)
            .map(|r| {
                let sni: Vec<String> = r
                    .sni
                    .iter()
                    .map(|m| match m {
                        HostMatch::Exact(h) => h.clone(),
                        HostMatch::Wildcard(suffix) => format!("*{suffix}"),
                    })
                    .collect();
                json!({
                    "name": r.name,
                    "listeners": r.listeners,
                    "sni": sni,
                    "upstream": r.upstream,
                    "idle_timeout_ms": r.idle_timeout.as_millis() as u64,
                })
            })
            .collect()
    };
    let filters: Vec<Value> = config
        .filters
        .iter()
        .map(|f| {
            let source = match &f.source {
                FilterSource::Builtin(name) => format!("builtin:{name}"),
                FilterSource::Wasm(path) => format!("wasm:{}", path.display()),
            };
            let module = snapshot.plugin(&f.name).map(|p| {
                let from = match p.module_origin() {
                    ModuleOrigin::Compiler => "compiler",
                    ModuleOrigin::DiskCache => "disk_cache",
                };
                json!({ "sha256": p.module_hash(), "loaded_from": from })
            });
            json!({
                "name": f.name,
                "source": source,
                "root_id": f.root_id,
                "on_error": match f.on_error { OnError::Deny => "deny", OnError::Allow => "allow" },
                "module": module,
                "config": super::redact::filter_config(&f.source, &f.config),
            })
        })
        .collect();
    let upstreams: Vec<Value> = config
        .upstreams
        .iter()
        .map(|u| {
            let live = snapshot.upstream(&u.name);
            let targets: Vec<Value> = u
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let healthy = live.and_then(|up| up.target_healthy(i));
                    let mut target =
                        json!({ "address": t.address, "weight": t.weight, "healthy": healthy });
                    if t.priority != 0 {
                        target["priority"] = t.priority.into();
                    }
                    if !t.labels.is_empty() {
                        let labels = t.labels.iter().map(|(k, v)| (k.clone(), v.as_str().into()));
                        target["labels"] = Value::Object(labels.collect());
                    }
                    target
                })
                .collect();
            let mut upstream = json!({
                "name": u.name,
                "targets": targets,
                "health_check": u.health_check.as_ref().map(|h| h.path.clone()),
            });
            if let Some(open) = live.and_then(|up| up.open_connections()) {
                upstream["connections"] = open.into();
            }
            upstream
        })
        .collect();

    json!({
        "generation": snapshot.generation,
        "loaded_at": rfc3339(snapshot.loaded_at),
        "ready": app.is_ready(),
        "workers": app.workers(),
        "last_reload": {
            "ok": last.ok,
            "at": rfc3339(last.at),
            "errors": last.errors,
        },
        "listeners": listeners,
        "admin": admin,
        "routes": routes,
        "tcp_routes": l4_routes(ListenerProtocol::Tcp),
        "udp_routes": l4_routes(ListenerProtocol::Udp),
        "filters": filters,
        "upstreams": upstreams,
        "providers": providers(app),
        "redis": redis(),
    })
}

/// The `redis:` block's connections: `null` without one.
fn redis() -> Value {
    let Some(store) = crate::ratelimit::RateLimits::shared().redis() else {
        return Value::Null;
    };
    let config = store.config();
    let health = store.health();
    json!({
        "url": crate::config::redis::redact(&config.url),
        "name": config.name,
        "connected": health.open > 0,
        "pool": { "size": health.pool, "open": health.open },
        "timeout_ms": config.timeout.as_millis() as u64,
        "failures": health.failures,
        "last_error": health.last_error.as_ref().map(|(_, e)| e),
        "last_error_at": health.last_error.as_ref().map(|(at, _)| rfc3339(*at)),
    })
}

/// The providers besides the directory: `{}` when there are none.
fn providers(app: &App) -> Value {
    let Some(etcd) = app.etcd() else {
        return json!({});
    };
    let config = etcd.config();
    let link = etcd.status();
    let held = etcd.documents();
    json!({ "etcd": {
        "endpoints": config.endpoints,
        "prefix": config.prefix,
        // The revision the serving configuration was read at; `latest_revision` is
        // the newest the prefix was seen at, ahead of it while a change is refused or
        // being applied (or after a reconnect that found nothing new).
        "revision": app.etcd_revision(),
        "latest_revision": held.revision,
        "keys": held.docs.keys().collect::<Vec<_>>(),
        "connected": link.connected,
        "failures": link.failures,
        "last_error": link.last_error.as_ref().map(|(_, e)| e),
        "last_error_at": link.last_error.as_ref().map(|(at, _)| rfc3339(*at)),
    }})
}

/// An admin token as `/status` shows it: who holds it, its role and where it is read
/// from, never the token.
fn token(t: &AdminToken) -> Value {
    let from = match &t.source {
        TokenSource::File(path) => json!({ "file": path.display().to_string() }),
        TokenSource::Env(var) => json!({ "env": var }),
    };
    json!({ "name": t.name, "role": t.role.name(), "from": from })
}

/// The ACME state of listener `l`'s names: `null` without `acme`.
fn acme(l: &ListenerConfig) -> Value {
    let Some(config) = l.tls.as_ref().and_then(|t| t.acme.as_ref()) else {
        return Value::Null;
    };
    let names: serde_json::Map<String, Value> = crate::acme::status(&l.name)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, s)| {
            let status = json!({
                "state": s.state.name(),
                "valid_until": s.valid_until.map(rfc3339),
                "next_attempt": s.next_attempt.map(rfc3339),
                "last_error": s.last_error,
                "last_error_at": s.last_error_at.map(rfc3339),
                "failures": s.failures,
            });
            (name, status)
        })
        .collect();
    json!({
        "directory": config.directory,
        "challenge": config.challenge.name(),
        "storage": config.storage.display().to_string(),
        "names": names,
    })
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
