//! `portcullis check` refuses a bad standard-filter configuration with a message that
//! names the filter and the field.

use std::ffi::OsStr;

use crate::support::{ConfDir, run_to_end};

#[test]
fn bad_filter_configs_name_the_field() {
    let conf = ConfDir::with(
        r#"listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: r, filters: [limit, login, keys, tokens, rewrite, https, office], upstream: echo@internal }]
filters:
  - { name: limit, builtin: rate-limit, config: { rate: 0 } }
  - { name: login, builtin: basic-auth, config: { users: ["alice:plain"] } }
  - { name: keys, builtin: api-key, config: { keys: [ { sha256: "xyz", consumer: c } ] } }
  - { name: tokens, builtin: jwt, config: { secret: s, algorithms: [RS256] } }
  - { name: rewrite, builtin: headers, config: { request: { set: { x-a: "${nope}" } } } }
  - { name: https, builtin: redirect, config: { scheme: ftp } }
  - { name: office, builtin: ip-allowlist, config: { allow: [10.0.0.0/33], bogus: 1 } }
  - { name: ghost, builtin: no-such-filter }
"#,
    );
    let (code, _, stderr) = run_to_end([
        OsStr::new("check"),
        "--conf".as_ref(),
        conf.path().as_os_str(),
    ]);
    assert_eq!(code, Some(1), "expected exit 1, stderr:\n{stderr}");
    for (line, filter, field) in [
        (4, "limit", "config.rate"),
        (5, "login", "config.users[0]"),
        (6, "keys", "config.keys[0].sha256"),
        (7, "tokens", "config.algorithms[0]"),
        (8, "rewrite", "config.request.set.x-a"),
        (9, "https", "config.scheme"),
        (10, "office", "config"),
    ] {
        let prefix = format!("portcullis.yaml:{line}: filters.{filter}: ");
        let found = stderr.lines().find(|l| l.starts_with(&prefix));
        match found {
            Some(l) => assert!(
                l.contains(field),
                "the error for {filter} should name {field}: {l}"
            ),
            None => panic!("expected a line starting {prefix:?} in:\n{stderr}"),
        }
    }
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("portcullis.yaml:11: filters.ghost")
                && l.contains("no-such-filter")),
        "an unknown builtin is named:\n{stderr}"
    );
}
