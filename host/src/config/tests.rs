//! Loader tests on real directories of real files.

use std::path::Path;
use std::time::Duration;

use super::*;

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn errors(dir: &Path) -> Vec<String> {
    match load(dir) {
        Ok(c) => panic!("expected errors, the config loaded: {c:#?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// [`errors`], one a line, with the directory's absolute path written `DIR`.
fn errors_in_dir(dir: &Path) -> String {
    let absolute = std::path::absolute(dir).unwrap().display().to_string();
    errors(dir).join("\n").replace(&absolute, "DIR")
}

fn loaded(dir: &Path) -> Config {
    load(dir).unwrap_or_else(|e| panic!("expected the config to load, got:\n{e}"))
}

const LISTENER: &str = "listeners:\n  - { name: web, address: 127.0.0.1:0 }\n";

#[test]
fn full_example_loads_with_defaults() {
    let dir = dir_with(&[
        ("modules/auth.wasm", "\0asm"),
        ("certs/site.crt", "x"),
        ("certs/site.key", "x"),
        (
            "app.yaml",
            r#"admin:
  address: 127.0.0.1:9901
workers: 2
listeners:
  - name: web
    address: 0.0.0.0:8080
    limits: { max_header_bytes: 32KiB, max_headers: 50, header_timeout: 5s, idle_timeout: 1m }
  - name: websecure
    address: 0.0.0.0:8443
    tls:
      certificates:
        - { cert: certs/site.crt, key: certs/site.key }
      min_version: "1.3"
routes:
  - name: api
    listeners: [web, websecure]
    match:
      host: "*.Example.com"
      path_prefix: /api
      methods: [GET, POST]
      headers: { x-canary: "true" }
    priority: 10
    filters: [api-limit, api-auth]
    upstream: api-backend
  - name: rest
    upstream: echo@internal
filters:
  - name: api-limit
    builtin: rate-limit
    config: { rate: 100, per: 1s, burst: 20, key: client_ip }
  - name: api-auth
    wasm: modules/auth.wasm
    root_id: my_auth
    config: "raw text"
    on_error: allow
    limits: { memory: 16MiB, callback_timeout: 20ms }
upstreams:
  - name: api-backend
    targets:
      - { address: 127.0.0.1:9000, weight: 3 }
      - { address: "backend.local:9001" }
    health_check: { path: /healthz, interval: 5s }
    timeouts: { connect: 1s, request: 10s }
"#,
        ),
    ]);
    let c = loaded(dir.path());
    let base = std::path::absolute(dir.path()).unwrap();
    assert_eq!(c.workers, 2);
    assert_eq!(c.admin.as_ref().unwrap().address.port(), 9901);
    assert!(!c.admin.as_ref().unwrap().reload);
    assert_eq!(c.listeners[0].limits.max_header_bytes, 32 * 1024);
    assert_eq!(c.listeners[0].limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.listeners[1].limits, ListenerLimits::default());
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(tls.certificates[0].cert, base.join("certs/site.crt"));
    let api = &c.routes[0];
    assert_eq!(
        api.origin,
        Origin {
            file: "app.yaml".into(),
            line: 15
        }
    );
    assert_eq!(
        api.matcher.host,
        Some(HostMatch::Wildcard(".example.com".into()))
    );
    assert_eq!(api.matcher.path, Some(PathMatch::Prefix("/api".into())));
    assert_eq!(
        api.matcher.methods,
        Some(vec![http::Method::GET, http::Method::POST])
    );
    assert_eq!(api.matcher.headers[0].0.as_str(), "x-canary");
    assert_eq!(api.priority, Some(10));
    assert_eq!(c.routes[1].listeners, None);
    assert_eq!(c.routes[1].matcher, RouteMatch::default());
    let limit = &c.filters[0];
    assert_eq!(limit.source, FilterSource::Builtin("rate-limit".into()));
    assert_eq!(
        String::from_utf8_lossy(&limit.config),
        r#"{"burst":20,"key":"client_ip","per":"1s","rate":100}"#
    );
    assert_eq!(limit.on_error, OnError::Deny);
    let auth = &c.filters[1];
    assert_eq!(
        auth.source,
        FilterSource::Wasm(base.join("modules/auth.wasm"))
    );
    assert_eq!(auth.config, b"raw text");
    assert_eq!(auth.on_error, OnError::Allow);
    assert_eq!(auth.limits.memory, 16 << 20);
    assert_eq!(auth.limits.callback_timeout, Duration::from_millis(20));
    let up = &c.upstreams[0];
    assert_eq!(
        up.targets[1],
        TargetConfig {
            address: "backend.local:9001".into(),
            weight: 1,
            ..TargetConfig::default()
        }
    );
    assert_eq!(
        up.health_check.as_ref().unwrap().timeout,
        Duration::from_secs(1)
    );
    assert_eq!(up.timeouts.connect, Duration::from_secs(1));
    assert_eq!(
        c.external_files,
        vec![
            base.join("certs/site.crt"),
            base.join("certs/site.key"),
            base.join("modules/auth.wasm")
        ]
    );
}

#[test]
fn files_merge_in_name_order_and_hidden_or_other_files_are_ignored() {
    let dir = dir_with(&[
        (
            "b-routes.yml",
            "routes:\n  - { name: second, upstream: echo@internal }\n",
        ),
        (
            "a-listeners.yaml",
            "listeners:\n  - { name: web, address: 127.0.0.1:0 }\nroutes:\n  - { name: first, upstream: echo@internal }\n",
        ),
        (".hidden.yaml", "this: is: not yaml"),
        ("notes.txt", "ignored"),
        ("app.yaml~", "ignored: ["),
        ("empty.yaml", ""),
    ]);
    let c = loaded(dir.path());
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(
        c.routes[1].origin,
        Origin {
            file: "b-routes.yml".into(),
            line: 2
        }
    );
    assert!(c.workers >= 1);
}

#[test]
fn every_error_of_every_file_is_reported_with_its_line() {
    let dir = dir_with(&[
        (
            "a.yaml",
            "listeners:\n  - name: web\n    address: nowhere\n    colour: blue\n  - name: ok\n    address: 127.0.0.1:0\n",
        ),
        (
            "b.yaml",
            "routes:\n  - name: api\n    matchh: {}\n    upstream: missing\n  - name: two\n    match: { path: x }\n    upstream: echo@internal\n",
        ),
    ]);
    assert_eq!(
        errors(dir.path()),
        [
            "a.yaml:3: listeners.web.address: `nowhere` is not an IP:port address (e.g. 127.0.0.1:8080 or [::1]:8080)",
            "a.yaml:4: listeners.web.colour: unknown field (expected one of: name, address, protocol, tls, proxy_protocol, limits, http3, http2)",
            "b.yaml:3: routes.api.matchh: unknown field (expected one of: name, listeners, match, priority, filters, upstream, upstreams, max_request_body, upgrade_idle_timeout, mirror)",
            "b.yaml:4: routes.api.upstream: unknown upstream `missing` (defined: echo@internal)",
            "b.yaml:6: routes.two.match.path: `x` must start with /",
        ]
    );
}

#[test]
fn duplicate_names_across_files_say_where_the_first_is() {
    let dir = dir_with(&[
        ("a.yaml", LISTENER),
        (
            "b.yaml",
            "\nlisteners:\n  - { name: web, address: 127.0.0.1:0 }\n",
        ),
    ]);
    assert_eq!(
        errors(dir.path()),
        ["b.yaml:3: listeners.web: duplicate name `web` (first declared at a.yaml:2)"]
    );
}

#[test]
fn invalid_yaml_reports_the_parser_line() {
    let dir = dir_with(&[
        ("a.yaml", LISTENER),
        ("b.yaml", "routes:\n  - name: x\n    upstream: [a, b\n"),
    ]);
    let errs = errors(dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("b.yaml:"), "{errs:?}");
    // The broken file may hold the listeners: no "no listener" on top.
    let only = dir_with(&[("a.yaml", "listeners: [\n")]);
    let errs = errors(only.path());
    assert_eq!(
        errs,
        ["a.yaml:1: invalid YAML: while parsing a node, did not find expected node content"]
    );
    assert!(errs[0].contains("invalid YAML"), "{errs:?}");
}

#[test]
fn empty_directory_and_no_listeners_are_errors() {
    let empty = dir_with(&[]);
    assert!(errors(empty.path())[0].contains("no *.yaml or *.yml files"));
    let none = dir_with(&[("a.yaml", "routes: []\n")]);
    let errs = errors(none.path());
    assert!(
        errs[0].ends_with("listeners: no listener is configured; nothing would be served"),
        "{errs:?}"
    );
}

#[test]
fn references_are_checked() {
    let dir = dir_with(&[(
        "a.yaml",
        "listeners:\n  - { name: web, address: 127.0.0.1:0 }\nroutes:\n  - name: r\n    listeners: [web, nope]\n    filters:\n      - gone\n    upstream: echo@internal\n",
    )]);
    assert_eq!(
        errors(dir.path()),
        [
            "a.yaml:5: routes.r.listeners: unknown listener `nope` (defined: web)",
            "a.yaml:7: routes.r.filters: unknown filter `gone` (defined: none)",
        ]
    );
}

#[test]
fn value_errors() {
    let dir = dir_with(&[(
        "a.yaml",
        r#"workers: 0
admin: { address: 127.0.0.1:9901, reload: maybe }
listeners:
  - name: web
    address: 127.0.0.1:0
    limits: { max_header_bytes: 64KB, header_timeout: 10 }
    tls:
      certificates: [{ cert: missing.crt, key: missing.key }]
      client_auth: required
routes:
  - name: r
    match:
      host: "api.*.com"
      path: /a
      path_prefix: /b
      methods: [get]
    upstream: echo@internal
filters:
  - { name: both, builtin: x, wasm: x.wasm }
  - { name: neither, on_error: explode }
  - { name: nowasm, wasm: nope.wasm, limits: { memory: 0 } }
upstreams:
  - name: u
    targets:
      - { address: localhost }
      - { address: "127.0.0.1:80", weight: 0 }
    health_check: { path: healthz }
"#,
    )]);
    let errs = errors_in_dir(dir.path());
    let errs: Vec<&str> = errs.lines().collect();
    let expected = [
        "a.yaml:1: workers: must be at least 1, found 0",
        "a.yaml:2: admin.reload: expected true or false, found `maybe`",
        "a.yaml:6: listeners.web.limits.max_header_bytes: unknown size unit `KB` in `64KB` (use bytes, KiB, MiB or GiB)",
        "a.yaml:6: listeners.web.limits.header_timeout: `10` needs a unit (ms, s, m, h or d), e.g. 10s",
        "a.yaml:8: listeners.web.tls.certificates.0.cert: file not found: `missing.crt` (DIR/missing.crt)",
        "a.yaml:8: listeners.web.tls.certificates.0.key: file not found: `missing.key` (DIR/missing.key)",
        "a.yaml:9: listeners.web.tls.client_auth: client_auth needs client_ca (the CA bundle client certificates are verified against)",
        "a.yaml:13: routes.r.match.host: `api.*.com` is not a host pattern (an exact name like api.example.com, or *.example.com; no port)",
        "a.yaml:14: routes.r.match.path: give one of path, path_prefix and path_regex",
        "a.yaml:16: routes.r.match.methods: `get` is not an HTTP method (write it in upper case, e.g. GET)",
        "a.yaml:19: filters.both.wasm: give either builtin or wasm, not both",
        "a.yaml:20: filters.neither: needs a module: `builtin: NAME` or `wasm: FILE`",
        "a.yaml:20: filters.neither.on_error: `explode` is not one of: deny, allow",
        "a.yaml:21: filters.nowasm.wasm: file not found: `nope.wasm` (DIR/nope.wasm)",
        "a.yaml:21: filters.nowasm.limits.memory: must be greater than 0",
        "a.yaml:25: upstreams.u.targets.0.address: `localhost` is not a host:port address (no port)",
        "a.yaml:26: upstreams.u.targets.1.weight: must be at least 1, found 0",
        "a.yaml:27: upstreams.u.health_check.path: `healthz` must start with /",
        "a.yaml:27: upstreams.u.health_check.interval: missing required field",
    ];
    assert_eq!(errs, expected);
}

#[test]
fn yaml_strings_and_absent_config_are_raw() {
    let dir = dir_with(&[(
        "a.yaml",
        "listeners:\n  - { name: web, address: 127.0.0.1:0 }\nfilters:\n  - { name: a, builtin: x, config: plain words }\n  - { name: b, builtin: x }\n  - name: c\n    builtin: x\n    config: |\n      line one\n      line two\n  - { name: d, builtin: x, config: [1, \"2\", null] }\n",
    )]);
    let c = loaded(dir.path());
    let configs: Vec<String> = c
        .filters
        .iter()
        .map(|f| String::from_utf8_lossy(&f.config).into_owned())
        .collect();
    assert_eq!(
        configs,
        ["plain words", "", "line one\nline two\n", r#"[1,"2",null]"#]
    );
}

#[test]
fn symlinked_files_are_followed_and_named_as_found() {
    let dir = dir_with(&[("..2026_x/app.yaml", LISTENER)]);
    std::os::unix::fs::symlink("..2026_x", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/app.yaml", dir.path().join("app.yaml")).unwrap();
    let c = loaded(dir.path());
    assert_eq!(
        c.listeners[0].origin,
        Origin {
            file: "app.yaml".into(),
            line: 2
        }
    );
}

#[test]
fn duplicate_keys_and_fixed_addresses_are_reported() {
    let dir = dir_with(&[(
        "a.yaml",
        "admin: { address: 127.0.0.1:9000 }\nlisteners:\n  - name: web\n    address: 127.0.0.1:9000\n    address: 127.0.0.1:9001\n",
    )]);
    assert_eq!(
        errors(dir.path()),
        [
            "a.yaml:3: listeners.web.address: address 127.0.0.1:9000 is already used by admin (a.yaml:1)",
            "a.yaml:5: listeners.web.address: duplicate key (first at line 4)",
        ]
    );
}

#[test]
fn the_watched_files_are_the_files_the_loader_read() {
    let dir = dir_with(&[
        ("m/f.wasm", "\0asm"),
        ("ca.pem", "x"),
        (
            "a.yaml",
            "filters:\n  - { name: f, wasm: m/f.wasm }\nupstreams:\n  - name: u\n    targets: [{ address: \"127.0.0.1:1\" }]\n    tls: { ca: ca.pem }\nlisteners:\n  - { name: web, address: 127.0.0.1:0 }\n",
        ),
    ]);
    let base = std::path::absolute(dir.path()).unwrap();
    // One walk records both: what a serving config reads and what the watcher watches.
    let mut external = loaded(dir.path()).external_files;
    assert_eq!(external, [base.join("m/f.wasm"), base.join("ca.pem")]);
    external.sort();
    assert_eq!(named_files(dir.path()), external);
}

#[test]
fn named_files_are_found_even_when_the_config_is_broken() {
    let dir = dir_with(&[(
        "a.yaml",
        "filters:\n  - { name: f, wasm: modules/new.wasm, bogus: 1, config: { key: not-a-file } }\nlisteners:\n  - name: s\n    tls: { certificates: [{ cert: c.pem, key: k.pem }] }\n",
    )]);
    assert!(load(dir.path()).is_err());
    let base = std::path::absolute(dir.path()).unwrap();
    assert_eq!(
        named_files(dir.path()),
        [
            base.join("c.pem"),
            base.join("k.pem"),
            base.join("modules/new.wasm")
        ]
    );
}

#[test]
fn broken_items_still_count_as_declared_and_their_references_are_checked() {
    let dir = dir_with(&[(
        "a.yaml",
        "listeners:\n  - { name: web, address: 127.0.0.1:0 }\n  - { name: web, address: nowhere }\nroutes:\n  - name: r\n    match: { path: nope }\n    filters: [ghost]\n    upstream: broken\nupstreams:\n  - { name: broken, targets: [] }\n",
    )]);
    assert_eq!(
        errors(dir.path()),
        [
            "a.yaml:3: listeners.web.address: `nowhere` is not an IP:port address (e.g. 127.0.0.1:8080 or [::1]:8080)",
            "a.yaml:3: listeners.web: duplicate name `web` (first declared at a.yaml:2)",
            "a.yaml:6: routes.r.match.path: `nope` must start with /",
            "a.yaml:7: routes.r.filters: unknown filter `ghost` (defined: none)",
            "a.yaml:10: upstreams.broken.targets: needs at least one target",
        ]
    );
}

#[test]
fn module_cache_is_optional_and_its_dir_relative_to_its_file() {
    let dir = dir_with(&[("a.yaml", LISTENER)]);
    assert_eq!(loaded(dir.path()).module_cache, None);

    let dir = dir_with(&[
        ("a.yaml", LISTENER),
        (
            "cache.yaml",
            "module_cache: { dir: cache/modules, max_size: 64MiB }\n",
        ),
    ]);
    let cache = loaded(dir.path()).module_cache.unwrap();
    let base = std::path::absolute(dir.path()).unwrap();
    assert!(cache.enabled);
    assert_eq!(cache.dir, Some(base.join("cache/modules")));
    assert_eq!(cache.max_size, 64 << 20);

    let dir = dir_with(&[(
        "a.yaml",
        &format!("{LISTENER}module_cache: {{ enabled: false }}\n"),
    )]);
    let cache = loaded(dir.path()).module_cache.unwrap();
    assert!(!cache.enabled);
    assert_eq!(cache.dir, None);
    assert_eq!(cache.max_size, MODULE_CACHE_MAX_SIZE);
}

#[test]
fn module_cache_errors() {
    let dir = dir_with(&[
        (
            "a.yaml",
            &format!(
                "{LISTENER}module_cache: {{ dir: \"\", max_size: 0, enabled: maybe, size: 1 }}\n"
            ),
        ),
        ("b.yaml", "module_cache: { enabled: false }\n"),
        ("c.yaml", "module_cache: {}\n"),
    ]);
    assert_eq!(
        errors(dir.path()),
        [
            "a.yaml:3: module_cache.enabled: expected true or false, found `maybe`",
            "a.yaml:3: module_cache.dir: must not be empty",
            "a.yaml:3: module_cache.max_size: must be greater than 0",
            "a.yaml:3: module_cache.size: unknown field (expected one of: enabled, dir, max_size)",
            "c.yaml:1: module_cache: module_cache is already set at b.yaml:1",
        ]
    );
}

mod acme;
mod etcd_documents;
mod fuzzed;
mod hardening;
mod services;
mod trials;

#[test]
fn protocols_and_upgrade_timeouts_load_and_bad_ones_are_errors() {
    let dir = dir_with(&[(
        "a.yaml",
        &format!(
            "{LISTENER}routes:\n  - {{ name: ws, upstream: g, upgrade_idle_timeout: 5m }}\n\
             upstreams:\n  - {{ name: g, protocol: h2c, targets: [{{ address: 127.0.0.1:9 }}] }}\n"
        ),
    )]);
    let c = loaded(dir.path());
    assert_eq!(c.routes[0].upgrade_idle_timeout, Duration::from_secs(300));
    assert_eq!(c.upstreams[0].protocol, UpstreamProtocol::H2c);

    let dir = dir_with(&[(
        "a.yaml",
        &format!(
            "{LISTENER}routes:\n  - {{ name: ws, upstream: g, upgrade_idle_timeout: 0s }}\n\
             upstreams:\n  - {{ name: g, protocol: h3, targets: [{{ address: 127.0.0.1:9 }}] }}\n  \
             - {{ name: t, protocol: h2c, tls: {{}}, targets: [{{ address: 127.0.0.1:9 }}] }}\n"
        ),
    )]);
    assert_eq!(
        errors(dir.path()),
        [
            "a.yaml:4: routes.ws.upgrade_idle_timeout: must be greater than 0",
            "a.yaml:6: upstreams.g.protocol: `h3` is not a protocol (expected auto or h2c)",
            "a.yaml:7: upstreams.t.protocol: h2c is HTTP/2 without TLS; over TLS, HTTP/2 is picked by ALPN (leave protocol out)",
        ]
    );
}

#[test]
fn admin_tokens_and_tls_errors_name_their_fields_and_never_the_token() {
    let dir = dir_with(&[
        ("secrets/a.token", "0123456789abcdef\n"),
        ("secrets/same.token", "  0123456789abcdef  "),
        ("secrets/short.token", "s3cret"),
        (
            "a.yaml",
            r#"admin:
  address: 127.0.0.1:9901
  tokens:
    - { name: a, role: viewer, token_file: secrets/a.token }
    - { name: same, role: operator, token_file: secrets/same.token }
    - { name: short, role: viewer, token_file: secrets/short.token }
    - { name: none, role: viewer }
    - { name: both, role: root, token_file: secrets/a.token, token_env: X }
    - { name: gone, role: viewer, token_file: secrets/gone.token }
    - { name: a, role: viewer, token_env: PORTCULLIS_TEST_NEVER_SET_VARIABLE }
  tls: { cert: certs/admin.crt, key: certs/admin.key, client_auth: required }
listeners:
  - { name: web, address: 127.0.0.1:0 }
"#,
        ),
    ]);
    let errs = errors_in_dir(dir.path());
    let expected = [
        "a.yaml:5: admin.tokens.same: the same token as admin.tokens.a (line 4): give each holder a token of its own",
        "a.yaml:6: admin.tokens.short: the token in DIR/secrets/short.token is 6 characters long; at least 16 are needed (e.g. `openssl rand -hex 32`)",
        "a.yaml:7: admin.tokens.none: needs its token: `token_file: FILE` or `token_env: VARIABLE` (a token is never written in the configuration itself)",
        "a.yaml:8: admin.tokens.both.role: `root` is not one of: viewer, operator",
        "a.yaml:8: admin.tokens.both.token_env: give either token_file or token_env, not both",
        "a.yaml:9: admin.tokens.gone.token_file: file not found: `secrets/gone.token` (DIR/secrets/gone.token)",
        "a.yaml:10: admin.tokens.a.token_env: the environment variable `PORTCULLIS_TEST_NEVER_SET_VARIABLE` is not set",
        "a.yaml:11: admin.tls.cert: file not found: `certs/admin.crt` (DIR/certs/admin.crt)",
        "a.yaml:11: admin.tls.key: file not found: `certs/admin.key` (DIR/certs/admin.key)",
        "a.yaml:11: admin.tls.client_auth: unknown field (expected one of: cert, key, client_ca, min_version)",
    ];
    for e in expected {
        assert!(errs.contains(e), "expected {e:?} among:\n{errs}");
    }
    for secret in ["0123456789abcdef", "s3cret"] {
        assert!(!errs.contains(secret), "an error quotes a token:\n{errs}");
    }

    // The same token file twice under different names is refused; once, it loads,
    // keeping only the token's digest.
    let ok = dir_with(&[
        ("t", "0123456789abcdef\n"),
        (
            "a.yaml",
            "admin:\n  address: 127.0.0.1:9901\n  tokens: [{ name: a, role: operator, token_file: t }]\n\
             listeners:\n  - { name: web, address: 127.0.0.1:0 }\n",
        ),
    ]);
    let config = loaded(ok.path());
    let admin = config.admin.unwrap();
    assert_eq!(admin.tokens[0].role, AdminRole::Operator);
    assert_eq!(admin.tokens[0].digest, TokenDigest::of(b"0123456789abcdef"));
    assert!(!format!("{admin:?}").contains("0123456789abcdef"));
    assert!(
        config.external_files.iter().any(|f| f.ends_with("t")),
        "the token file is watched"
    );
}
