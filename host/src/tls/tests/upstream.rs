//! TLS to upstreams: a private CA, the wrong CA, `verify: false`, `sni` and a client
//! certificate, each against a real listener built by this module.

use super::*;

pub(super) fn upstream(tls: UpstreamTlsConfig) -> UpstreamConfig {
    UpstreamConfig {
        name: "backend".into(),
        targets: vec![TargetConfig {
            address: "127.0.0.1:1".into(),
            weight: 1,
            ..TargetConfig::default()
        }],
        tls: Some(tls),
        origin: origin(),
        ..UpstreamConfig::default()
    }
}

fn upstream_tls(ca: Option<PathBuf>) -> UpstreamTlsConfig {
    UpstreamTlsConfig {
        ca,
        sni: None,
        verify: true,
        client_cert: None,
    }
}

fn client_for(tls: UpstreamTlsConfig) -> ClientConfig {
    match client_config(&upstream(tls)) {
        Ok(Some(c)) => (*c).clone(),
        Ok(None) => panic!("expected a client config"),
        Err(e) => panic!("expected the upstream TLS config to build, got {e:?}"),
    }
}

/// A backend serving `backend.internal` with a certificate from `ca`.
fn backend(files: &Files, ca: &Ca) -> Arc<ServerConfig> {
    let (c, k) = files.pair("backend", &ca.server(&["backend.internal"], Alg::Ecdsa));
    build_ok(&tls_config(vec![pair(c, k)])).config
}

#[tokio::test]
async fn a_private_ca_verifies_and_a_wrong_one_fails() {
    let ca = Ca::new("Private");
    let other = Ca::new("Other");
    let files = Files::new();
    let server = backend(&files, &ca);
    let right = files.write("right-ca.pem", &ca.cert_pem);
    let wrong = files.write("wrong-ca.pem", &other.cert_pem);

    let outcome = handshake(
        Arc::clone(&server),
        client_for(upstream_tls(Some(right.clone()))),
        "backend.internal",
    )
    .await;
    let (_, alpn) = outcome
        .client
        .unwrap_or_else(|e| panic!("expected the private CA to verify: {e}"));
    assert_eq!(
        alpn.as_deref(),
        Some(&b"h2"[..]),
        "upstream ALPN offers h2 first"
    );

    let outcome = handshake(
        Arc::clone(&server),
        client_for(upstream_tls(Some(wrong))),
        "backend.internal",
    )
    .await;
    assert!(
        outcome.client.is_err(),
        "expected the wrong CA to fail verification"
    );

    // The system roots do not know a private CA either.
    let outcome = handshake(
        Arc::clone(&server),
        client_for(upstream_tls(None)),
        "backend.internal",
    )
    .await;
    assert!(
        outcome.client.is_err(),
        "expected the webpki roots to refuse a private CA"
    );

    // The right CA, but the wrong name.
    let outcome = handshake(
        server,
        client_for(upstream_tls(Some(right))),
        "elsewhere.internal",
    )
    .await;
    assert!(
        outcome.client.is_err(),
        "expected a name mismatch to fail verification"
    );
}

#[tokio::test]
async fn verify_false_accepts_any_certificate() {
    let files = Files::new();
    let server = backend(&files, &Ca::new("Unknown"));
    let mut tls = upstream_tls(None);
    tls.verify = false;
    let outcome = handshake(server, client_for(tls), "backend.internal").await;
    outcome
        .client
        .unwrap_or_else(|e| panic!("expected verify: false to accept: {e}"));
}

#[test]
fn the_server_name_is_sni_else_the_target_host() {
    let mut tls = upstream_tls(None);
    let name = |tls: &UpstreamTlsConfig, target: &str| {
        upstream_server_name(tls, target).map(|n| n.to_str().into_owned())
    };
    assert_eq!(
        name(&tls, "api.internal:8443").as_deref(),
        Some("api.internal")
    );
    assert_eq!(name(&tls, "127.0.0.1:8443").as_deref(), Some("127.0.0.1"));
    assert_eq!(name(&tls, "[::1]:8443").as_deref(), Some("::1"));
    tls.sni = Some("backend.internal".into());
    assert_eq!(
        name(&tls, "127.0.0.1:8443").as_deref(),
        Some("backend.internal")
    );
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_an_upstream_that_asks() {
    let ca = Ca::new("Mesh");
    let files = Files::new();
    let (c, k) = files.pair("backend", &ca.server(&["backend.internal"], Alg::Ecdsa));
    let mut server = tls_config(vec![pair(c, k)]);
    server.client_ca = Some(files.write("mesh-ca.pem", &ca.cert_pem));
    server.client_auth = ClientAuth::Required;
    let server = build_ok(&server).config;

    let (cc, ck) = files.pair("proxy", &ca.client("portcullis"));
    let mut tls = upstream_tls(Some(files.write("ca.pem", &ca.cert_pem)));
    tls.client_cert = Some(pair(cc, ck));
    let outcome = handshake(server, client_for(tls), "backend.internal").await;
    let session = outcome
        .server
        .unwrap_or_else(|e| panic!("expected mutual TLS to succeed: {e}"));
    assert_eq!(
        session.client_subject.as_deref(),
        Some("CN=portcullis, O=Portcullis Tests")
    );
}

#[test]
fn bad_upstream_files_are_config_errors() {
    let files = Files::new();
    let mut tls = upstream_tls(Some(files.path().join("nope.pem")));
    tls.client_cert = Some(pair(files.path().join("c.crt"), files.path().join("c.key")));
    let errors = match client_config(&upstream(tls)) {
        Err(e) => e,
        Ok(_) => panic!("expected config errors"),
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "upstreams.backend.tls.ca",
            "upstreams.backend.tls.client_cert.cert"
        ]
    );
}

#[test]
fn the_fingerprint_follows_the_files_contents() {
    let files = Files::new();
    let ca = files.write("ca.pem", &Ca::new("One").cert_pem);
    let tls = upstream_tls(Some(ca.clone()));
    let before = client::fingerprint(&tls);
    assert_eq!(
        before,
        client::fingerprint(&tls),
        "same files, same fingerprint"
    );
    files.write("ca.pem", &Ca::new("Two").cert_pem);
    assert_ne!(
        before,
        client::fingerprint(&tls),
        "a replaced CA bundle must change it"
    );
}
