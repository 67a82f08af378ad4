//! Certificates replaced on disk: new connections get the new one without a restart,
//! open connections carry on, and a bad file leaves the old one serving.

use super::*;

const YAML: &str = r#"
admin: { address: "127.0.0.1:0" }
workers: 1
listeners:
  - name: websecure
    address: "127.0.0.1:0"
    tls:
      certificates: [ { cert: certs/site.crt, key: certs/site.key } ]
routes:
  - name: echo
    upstream: echo@internal
"#;

/// How long a reload may take to be noticed and applied on a loaded machine.
const RELOAD: Duration = Duration::from_secs(30);

/// The leaf a new connection asking for site.test is served.
async fn served_now(proxy: &Proxy) -> Option<Vec<u8>> {
    let stream = connect(
        proxy.addr("websecure"),
        "site.test",
        &ClientOptions::default(),
    )
    .await
    .ok()?;
    served_chain(&stream).into_iter().next()
}

async fn status(proxy: &Proxy) -> serde_json::Value {
    proxy.status().await
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_connections_and_open_ones_carry_on() {
    let ca = Ca::new("Reload CA");
    let first = ca.server(&["site.test"], Alg::Ecdsa);
    let second = ca.server(&["site.test"], Alg::Ed25519);
    let conf = ConfDir::new();
    write_pair(&conf, "site", &first);
    conf.write("portcullis.yaml", YAML);
    let proxy = Proxy::start(&conf);
    assert!(
        served_now(&proxy).await == Some(first.leaf_der.clone()),
        "expected the first certificate at start"
    );

    // A keep-alive connection opened before the change.
    let stream = connect(
        proxy.addr("websecure"),
        "site.test",
        &ClientOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut open = Http1::new(stream).await.unwrap_or_else(|e| panic!("{e}"));
    let (code, _) = open
        .get("site.test", "/before", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 200);

    // No signal: the watcher sees the certificate files change.
    write_pair(&conf, "site", &second);
    let p = &proxy;
    let switched = eventually(RELOAD, || {
        let want = second.leaf_der.clone();
        async move { (served_now(p).await == Some(want)).then_some(()) }
    })
    .await;
    assert!(
        switched.is_some(),
        "expected new connections to be served the new certificate within {RELOAD:?}; status: {}\nlog:\n{}",
        status(&proxy).await,
        proxy.logs()
    );

    let after = open.get("site.test", "/after", &[]).await;
    assert!(
        matches!(after, Ok((200, _))),
        "expected the connection opened before the change to keep working, got {after:?}"
    );
    let st = status(&proxy).await;
    assert!(
        st["generation"].as_u64() >= Some(2),
        "expected a new generation: {st}"
    );
}

#[tokio::test]
async fn a_bad_certificate_is_reported_and_the_old_one_keeps_serving() {
    let ca = Ca::new("Reload CA");
    let good = ca.server(&["site.test"], Alg::Ecdsa);
    let other = ca.server(&["site.test"], Alg::Ecdsa);
    let conf = ConfDir::new();
    write_pair(&conf, "site", &good);
    conf.write("portcullis.yaml", YAML);
    let proxy = Proxy::start(&conf);
    let generation = status(&proxy).await["generation"].as_u64();

    // A key that does not belong to the certificate.
    write_cert_file(&conf, "site.key", &other.key_pem);
    let p = &proxy;
    let reported = eventually(RELOAD, || async move {
        let st = status(p).await;
        let errors = st["last_reload"]["errors"].to_string();
        (st["last_reload"]["ok"] == false && errors.contains("does not match")).then_some(errors)
    })
    .await;
    let errors = reported.unwrap_or_else(|| {
        panic!(
            "expected the mismatched key to be reported in /status within {RELOAD:?}; log:\n{}",
            proxy.logs()
        )
    });
    assert!(
        errors.contains("listeners.websecure.tls.certificates.0"),
        "expected the error to name the field: {errors}"
    );

    // Garbage in the certificate file is reported too.
    write_cert_file(&conf, "site.crt", "not a certificate\n");
    let reported = eventually(RELOAD, || async move {
        let st = status(p).await;
        let errors = st["last_reload"]["errors"].to_string();
        errors.contains("certificates.0.cert").then_some(())
    })
    .await;
    assert!(
        reported.is_some(),
        "expected the bad certificate file to be reported; log:\n{}",
        proxy.logs()
    );

    assert!(
        served_now(&proxy).await == Some(good.leaf_der.clone()),
        "expected the old certificate to keep serving"
    );
    let st = status(&proxy).await;
    assert_eq!(
        st["generation"].as_u64(),
        generation,
        "a failed reload must not move the generation: {st}"
    );
    let stream = connect(
        proxy.addr("websecure"),
        "site.test",
        &ClientOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut http1 = Http1::new(stream).await.unwrap_or_else(|e| panic!("{e}"));
    let got = http1.get("site.test", "/", &[]).await;
    assert!(
        matches!(got, Ok((200, _))),
        "expected requests still served, got {got:?}"
    );
}

#[test]
fn check_reports_a_mismatched_key_at_its_file_and_line() {
    let ca = Ca::new("Check CA");
    let conf = ConfDir::new();
    write_cert_file(
        &conf,
        "site.crt",
        &ca.server(&["site.test"], Alg::Ecdsa).chain_pem,
    );
    write_cert_file(
        &conf,
        "site.key",
        &ca.server(&["site.test"], Alg::Ecdsa).key_pem,
    );
    conf.write("portcullis.yaml", YAML);
    let (code, _, stderr) = crate::support::run_to_end([
        std::ffi::OsStr::new("check"),
        "--conf".as_ref(),
        conf.path().as_os_str(),
    ]);
    assert_eq!(code, Some(1), "expected check to fail; stderr:\n{stderr}");
    // The pair is on line 8 of YAML (which starts with a newline).
    let expected = "portcullis.yaml:8: listeners.websecure.tls.certificates.0: the private key in";
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(expected) && l.contains("does not match")),
        "expected a line starting {expected:?}; stderr:\n{stderr}"
    );
}
