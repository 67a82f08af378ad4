//! `providers.etcd`: decoded from the directory, its documents merged with the files,
//! errors in them named by key.

use super::*;

const DIR: &str = "admin: { address: 127.0.0.1:0 }
listeners:
  - { name: web, address: 127.0.0.1:0 }
providers:
  etcd:
    endpoints: [http://127.0.0.1:2379]
";

#[test]
fn the_block_with_its_defaults_and_documents_merged() {
    let dir = dir_with(&[("portcullis.yaml", DIR)]);
    let docs = [(
        "/portcullis/routes.yaml".to_string(),
        "routes:\n  - { name: r, upstream: echo@internal }\n".to_string(),
    )];
    let config = load_with(Some(dir.path()), &docs).unwrap();
    let etcd = config.providers.etcd.as_ref().unwrap();
    assert_eq!(etcd.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(etcd.prefix, "/portcullis/");
    assert_eq!(etcd.timeout, providers::ETCD_TIMEOUT);
    assert_eq!(
        (etcd.origin.file.as_str(), etcd.origin.line),
        ("portcullis.yaml", 5)
    );
    assert_eq!(config.routes[0].origin.file, "/portcullis/routes.yaml");
    assert_eq!(
        providers::from_dir(dir.path()).unwrap(),
        config.providers,
        "read alone, before the whole"
    );
}

#[test]
fn errors_in_documents_name_the_key() {
    let dir = dir_with(&[("portcullis.yaml", DIR)]);
    let docs = [(
        "/p/routes.yaml".to_string(),
        "routes:\n  - name: r\n    upstream: nowhere\nproviders: {}\n".to_string(),
    )];
    let errors: Vec<String> = load_with(Some(dir.path()), &docs)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e
                .starts_with("/p/routes.yaml:3: routes.r.upstream: unknown upstream `nowhere`")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with("/p/routes.yaml:4: providers: ") && e.contains("directory only")),
        "{errors:#?}"
    );
}

#[test]
fn bad_blocks_are_reported_at_their_field() {
    let dir = dir_with(&[(
        "p.yaml",
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
providers:
  etcd:
    endpoints: [127.0.0.1:2379]
    prefix: /x
    timeout: soon
    tls: { cert: nope.pem }
    auth: { username: u }
    color: blue
",
    )]);
    let errors = errors(dir.path());
    for expected in [
        "p.yaml:4: providers.etcd.endpoints: `127.0.0.1:2379` is not an etcd endpoint",
        "p.yaml:6: providers.etcd.timeout:",
        "p.yaml:7: providers.etcd.tls.cert: file not found",
        "p.yaml:7: providers.etcd.tls: `cert` and `key` go together",
        "p.yaml:8: providers.etcd.auth: needs `password_file: FILE` (or `password`)",
        "p.yaml:9: providers.etcd.color: unknown field",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected}\nin {errors:#?}"
        );
    }
    assert_eq!(
        providers::from_dir(dir.path()).unwrap_err().0.len(),
        errors.len()
    );
}

#[test]
fn documents_alone() {
    let docs = [(
        "/p/all.yaml".to_string(),
        "listeners: [{ name: web, address: 127.0.0.1:0 }]\n".to_string(),
    )];
    assert!(load_with(None, &docs).is_ok());
    let err = load_with(None, &[]).unwrap_err().to_string();
    assert!(err.contains("no documents"), "{err}");
}

#[test]
fn check_flags_stand_for_the_block() {
    let from_dir = || {
        let dir = dir_with(&[("portcullis.yaml", DIR)]);
        providers::from_dir(dir.path()).unwrap().etcd
    };
    let e = providers::from_flags(&[], Some("/staging"), from_dir())
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.endpoints[0].as_str(), e.prefix.as_str()),
        ("http://127.0.0.1:2379", "/staging/")
    );
    let e = providers::from_flags(&["http://h:1".into()], None, None)
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.endpoints[0].as_str(), e.prefix.as_str()),
        ("http://h:1", "/portcullis/")
    );
    assert!(providers::from_flags(&[], Some("/x"), None).is_err());
    assert!(providers::from_flags(&["h:1".into()], None, None).is_err());
    assert!(providers::from_flags(&[], None, None).unwrap().is_none());
}
