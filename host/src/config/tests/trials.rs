//! Chain entries on trial (`shadow`, `canary`) and module integrity (`sha256`,
//! `require_signature`): what loads, and every mistake named by file, line and field.

use super::*;

#[test]
fn shadow_and_canary_entries_load() {
    let dir = dir_with(&[(
        "a.yaml",
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - name: r
    filters: [a, { filter: b, shadow: true }, { filter: c, canary: { filter: d, weight: 5% } }]
    upstream: echo@internal
filters:
  - { name: a, builtin: headers }
  - { name: b, builtin: headers }
  - { name: c, builtin: headers }
  - { name: d, builtin: headers }
",
    )]);
    let r = &loaded(dir.path()).routes[0];
    assert_eq!(r.filters, ["a", "b", "c"]);
    assert_eq!(r.shadow, ["b"]);
    assert_eq!(
        r.canaries,
        [FilterCanary {
            filter: "c".into(),
            canary: "d".into(),
            weight: 5,
            ..FilterCanary::default()
        }]
    );
}

#[test]
fn trial_and_integrity_mistakes_are_named() {
    let dir = dir_with(&[
        (
            "a.yaml",
            "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - name: r
    filters:
      - { filter: a, shadow: true, canary: { filter: b, weight: 5 } }
      - { filter: b, canary: { filter: gone, weight: 5 } }
      - { filter: c, canary: { filter: b, weight: 101 } }
      - { shadow: true }
    upstream: echo@internal
filters:
  - { name: a, builtin: headers, sha256: 00 }
  - { name: b, wasm: m.wasm, sha256: xyz }
  - { name: c, builtin: headers }
require_signature: { trusted_keys: [k.pub] }
",
        ),
        ("m.wasm", "not really"),
        ("k.pub", "not a key"),
    ]);
    let errors = errors(dir.path());
    for want in [
        "a.yaml:5: routes.r.filters.0.canary: give either shadow or canary, not both",
        "a.yaml:6: routes.r.filters: unknown filter `gone`",
        "a.yaml:7: routes.r.filters.2.canary.weight: `101` is not a percentage",
        "a.yaml:8: routes.r.filters.3.filter: missing required field",
        "a.yaml:11: filters.a.sha256: a standard filter (`builtin`) is part of the binary",
        "a.yaml:12: filters.b.sha256: expected 64 hex digits",
        "a.yaml:14: require_signature.trusted_keys.0:",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "expected {want:?} in:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn a_canary_opted_into_by_header_or_cookie_loads_and_its_mistakes_are_named() {
    let dir = dir_with(&[(
        "a.yaml",
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - name: r
    filters:
      - { filter: a, canary: { filter: b, header: { name: x-canary, value: \"1\" }, cookie: { name: beta, value: on } } }
    upstream: echo@internal
filters:
  - { name: a, builtin: headers }
  - { name: b, builtin: headers }
",
    )]);
    let r = &loaded(dir.path()).routes[0];
    assert_eq!(
        r.canaries,
        [FilterCanary {
            filter: "a".into(),
            canary: "b".into(),
            weight: 0,
            header: Some((http::HeaderName::from_static("x-canary"), "1".into())),
            cookie: Some(("beta".into(), "on".into())),
        }]
    );

    let dir = dir_with(&[(
        "a.yaml",
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - name: r
    filters:
      - { filter: a, canary: { filter: b } }
      - { filter: b, canary: { filter: a, header: { name: \"bad name\", value: x } } }
      - { filter: c, canary: { filter: a, cookie: { name: \"a;b\", value: x } } }
      - { filter: d, canary: { filter: a, header: { name: x-c } } }
    upstream: echo@internal
filters:
  - { name: a, builtin: headers }
  - { name: b, builtin: headers }
  - { name: c, builtin: headers }
  - { name: d, builtin: headers }
",
    )]);
    let errors = errors(dir.path());
    for want in [
        "a.yaml:5: routes.r.filters.0.canary: needs a weight, a header or a cookie",
        "a.yaml:6: routes.r.filters.1.canary.header.name: `bad name` is not a valid header name",
        "a.yaml:7: routes.r.filters.2.canary.cookie.name: `a;b` is not a cookie name",
        "a.yaml:8: routes.r.filters.3.canary.header.value: missing required field",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "expected {want:?} in:\n{}",
            errors.join("\n")
        );
    }
}
