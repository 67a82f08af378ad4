//! `listeners[].tls.acme`: defaults, the names `from_routes` takes, and what the whole
//! configuration refuses.

use super::*;

const ACME: &str = r#"listeners:
  - { name: web, address: 127.0.0.1:0 }
  - name: websecure
    address: 127.0.0.1:0
    tls:
      acme:
        directory: https://ca.test/dir
        from_routes: true
        storage: state/acme
routes:
  - { name: a, match: { host: B.example.test }, upstream: echo@internal }
  - { name: b, match: { host: a.example.test }, upstream: echo@internal }
  - { name: again, match: { host: a.example.test, path: /x }, upstream: echo@internal }
  - { name: wild, match: { host: "*.example.test" }, upstream: echo@internal }
  - { name: other, listeners: [web], match: { host: web.example.test }, upstream: echo@internal }
  - { name: any, upstream: echo@internal }
"#;

#[test]
fn acme_loads_with_defaults_and_from_routes_takes_the_exact_hosts_of_its_listener() {
    let dir = dir_with(&[("a.yaml", ACME)]);
    let c = loaded(dir.path());
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert!(
        tls.certificates.is_empty(),
        "files are optional beside acme"
    );
    let acme = tls.acme.as_ref().unwrap();
    assert_eq!(acme.challenge, AcmeChallenge::Http01);
    assert_eq!(acme.renew_before, Duration::from_secs(30 * 86400));
    assert_eq!(acme.storage, dir.path().join("state/acme"));
    assert_eq!(acme.email, None);
    assert_eq!(
        acme.names("websecure", &c.routes),
        ["a.example.test", "b.example.test"],
        "exact hosts, lower-case, once each; no wildcard, no other listener's route"
    );
}

#[test]
fn acme_errors_name_the_field() {
    let tcp = "listeners:\n  - name: t\n    address: 127.0.0.1:0\n    protocol: tcp\n    tls:\n      acme: { directory: https://ca.test/dir, domains: [a.test], challenge: tls-alpn-01, storage: s }\n";
    let no_names = "listeners:\n  - name: s\n    address: 127.0.0.1:0\n    tls:\n      acme: { directory: https://ca.test/dir, storage: s, challenge: tls-alpn-01 }\n";
    let both = "listeners:\n  - name: s\n    address: 127.0.0.1:0\n    tls:\n      acme: { directory: https://ca.test/dir, domains: [a.test], from_routes: true, storage: s, challenge: tls-alpn-01, renew_before: 1x }\n";
    let no_tls_source =
        "listeners:\n  - name: s\n    address: 127.0.0.1:0\n    tls: { min_version: \"1.3\" }\n";
    for (yaml, expected) in [
        (
            tcp,
            "a.yaml:6: listeners.t.tls.acme: ACME certificates are for http listeners",
        ),
        (
            no_names,
            "a.yaml:5: listeners.s.tls.acme.domains: missing required field (or `from_routes: true`",
        ),
        (
            both,
            "a.yaml:5: listeners.s.tls.acme.from_routes: give either `domains` or `from_routes: true`, not both",
        ),
        (
            both,
            "a.yaml:5: listeners.s.tls.acme.renew_before: unknown duration unit `x` in `1x` (use ms, s, m, h or d)",
        ),
        (
            no_tls_source,
            "a.yaml:4: listeners.s.tls.certificates: missing required field (or `acme`",
        ),
    ] {
        let dir = dir_with(&[("a.yaml", yaml)]);
        let found = errors(dir.path());
        assert!(
            found.iter().any(|e| e.starts_with(expected)),
            "expected {expected:?} in {found:#?}"
        );
    }
}
