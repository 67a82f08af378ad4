//! TLS through the real binary: certificates chosen by SNI, ALPN, client certificates,
//! certificates replaced on disk while connections stay open, bad certificate files,
//! the expiry gauge, and HTTPS upstreams.

pub mod client;
#[allow(dead_code)]
#[path = "../../host/src/tls/tests/pki.rs"]
pub mod pki;

use std::time::{Duration, Instant};

use client::{ClientOptions, Http1, alpn, connect, h2_get, served_chain};
use pki::{Alg, Ca, Leaf};

use crate::support::{ConfDir, Proxy};

/// Writes `certs/NAME` under `conf` by writing a sibling and renaming it into place,
/// as a careful operator (or Kubernetes) does, so that no reader sees half a file.
fn write_cert_file(conf: &ConfDir, name: &str, contents: &str) {
    let tmp = conf.write(&format!("certs/.{name}.tmp"), contents);
    let path = conf.path().join("certs").join(name);
    std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// Writes `certs/NAME.key` and `certs/NAME.crt`.
fn write_pair(conf: &ConfDir, name: &str, leaf: &Leaf) {
    write_cert_file(conf, &format!("{name}.key"), &leaf.key_pem);
    write_cert_file(conf, &format!("{name}.crt"), &leaf.chain_pem);
}

/// `GET url` over plain HTTP: status and body.
async fn plain_get(url: &str) -> (u16, String) {
    let resp = crate::support::client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The parsed JSON the `echo@internal` upstream answered with.
fn echo(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("expected echo JSON, got {body:?}: {e}"))
}

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echo["headers"][name].as_str()
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === SNI, ALPN, metrics ===

const SNI_YAML: &str = r#"
admin: { address: "127.0.0.1:0" }
workers: 1
listeners:
  - name: websecure
    address: "127.0.0.1:0"
    tls:
      certificates:
        - { cert: certs/default.crt, key: certs/default.key }
        - { cert: certs/wild.crt, key: certs/wild.key }
        - { cert: certs/api.crt, key: certs/api.key }
        - { cert: certs/old.crt, key: certs/old.key }
routes:
  - name: echo
    upstream: echo@internal
"#;

#[tokio::test]
async fn sni_alpn_and_the_expiry_gauge() {
    let ca = Ca::new("E2E Root");
    let (intermediate, intermediate_pem) = ca.intermediate("E2E Intermediate");
    let default = ca.server(&["default.test"], Alg::Rsa);
    let wild = ca.server(&["*.example.test"], Alg::Ecdsa);
    let api = intermediate.leaf(
        &["api.example.test"],
        Alg::Ed25519,
        Some(&intermediate_pem),
        |_| {},
    );
    let old = ca.leaf(&["old.test"], Alg::Ecdsa, None, |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let conf = ConfDir::new();
    for (name, leaf) in [
        ("default", &default),
        ("wild", &wild),
        ("api", &api),
        ("old", &old),
    ] {
        write_pair(&conf, name, leaf);
    }
    conf.write("portcullis.yaml", SNI_YAML);
    let proxy = Proxy::start(&conf);
    let addr = proxy.addr("websecure");

    let cases: [(&str, bool, &Leaf, &str); 6] = [
        ("api.example.test", true, &api, "the exact name"),
        ("www.example.test", true, &wild, "the wildcard"),
        (
            "a.b.example.test",
            true,
            &default,
            "a wildcard covers one label only: the default",
        ),
        (
            "nobody.test",
            true,
            &default,
            "an unknown name: the default",
        ),
        (
            "old.test",
            true,
            &old,
            "an expired certificate is still served",
        ),
        ("default.test", false, &default, "no SNI: the default"),
    ];
    for (name, sni, expected, why) in cases {
        let opts = ClientOptions {
            sni,
            ..Default::default()
        };
        let stream = connect(addr, name, &opts)
            .await
            .unwrap_or_else(|e| panic!("{why}: {e}"));
        let chain = served_chain(&stream);
        assert!(
            chain.first() == Some(&expected.leaf_der),
            "{why}: asking for {name} (SNI sent: {sni}) served another certificate"
        );
        if name == "api.example.test" {
            assert_eq!(
                chain.len(),
                2,
                "expected the leaf and its intermediate to be served"
            );
        }
    }

    // A client trusting only the root verifies the served chain, and the request
    // reaches the upstream marked as HTTPS.
    let opts = ClientOptions {
        ca: Some(ca.cert_pem.clone()),
        ..Default::default()
    };
    let stream = connect(addr, "api.example.test", &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut http1 = Http1::new(stream).await.unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = http1
        .get("api.example.test", "/hello", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "body: {body}");
    assert_eq!(
        header(&echo(&body), "x-forwarded-proto"),
        Some("https"),
        "echo: {body}"
    );

    // ALPN: h2 offered first is chosen, and HTTP/2 is spoken.
    let opts = ClientOptions {
        alpn: vec![b"h2", b"http/1.1"],
        ..Default::default()
    };
    let stream = connect(addr, "www.example.test", &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        alpn(&stream).as_deref(),
        Some(&b"h2"[..]),
        "negotiated ALPN"
    );
    let (status, version, body) = h2_get(stream, "www.example.test", "/h2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status, version),
        (200, http::Version::HTTP_2),
        "body: {body}"
    );

    // The expired certificate was warned about, with its date.
    let log = proxy.logs();
    assert!(
        log.contains("expired on 2001-01-01T00:00:00Z"),
        "expected an expiry warning in the log:\n{log}"
    );

    // One gauge per certificate; the expired one negative.
    let (status, metrics) = plain_get(&proxy.admin_url("/metrics")).await;
    assert_eq!(status, 200);
    let gauges: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_tls_certificate_expiry_days{listener=\"websecure\""))
        .collect();
    assert_eq!(
        gauges.len(),
        4,
        "expected 4 expiry gauges, /metrics said:\n{metrics}"
    );
    let old_gauge = gauges
        .iter()
        .find(|l| l.contains("old.crt"))
        .copied()
        .unwrap_or_default();
    assert!(
        old_gauge.contains("} -"),
        "expected a negative gauge for old.crt: {old_gauge:?}"
    );
}

// === client certificates ===

const MTLS_YAML: &str = r#"
admin: { address: "127.0.0.1:0" }
workers: 1
listeners:
  - name: required
    address: "127.0.0.1:0"
    tls:
      certificates: [ { cert: certs/site.crt, key: certs/site.key } ]
      client_ca: certs/clients.crt
      client_auth: required
  - name: optional
    address: "127.0.0.1:0"
    tls:
      certificates: [ { cert: certs/site.crt, key: certs/site.key } ]
      client_ca: certs/clients.crt
      client_auth: optional
routes:
  - name: echo
    upstream: echo@internal
"#;

#[tokio::test]
async fn client_certificates_are_required_verified_and_passed_upstream() {
    let ca = Ca::new("Server CA");
    let clients = Ca::new("Client CA");
    let stranger = Ca::new("Somebody Else");
    let conf = ConfDir::new();
    write_pair(&conf, "site", &ca.server(&["site.test"], Alg::Ecdsa));
    write_cert_file(&conf, "clients.crt", &clients.cert_pem);
    conf.write("portcullis.yaml", MTLS_YAML);
    let proxy = Proxy::start(&conf);

    let get = |listener: &str,
               identity: Option<Leaf>,
               headers: &'static [(&'static str, &'static str)]| {
        let addr = proxy.addr(listener);
        async move {
            let opts = ClientOptions {
                identity,
                ..Default::default()
            };
            let stream = connect(addr, "site.test", &opts).await?;
            let mut http1 = Http1::new(stream).await?;
            http1.get("site.test", "/", headers).await
        }
    };

    // Required: no certificate, or one from another CA, gets no answer.
    let anonymous = get("required", None, &[]).await;
    assert!(
        anonymous.is_err(),
        "expected a client without a certificate to be refused, got {anonymous:?}"
    );
    let foreign = get("required", Some(stranger.client("mallory")), &[]).await;
    assert!(
        foreign.is_err(),
        "expected a certificate from an unknown CA to be refused, got {foreign:?}"
    );

    // A verified certificate: its subject goes upstream.
    let (status, body) = get("required", Some(clients.client("alice")), &[])
        .await
        .unwrap_or_else(|e| panic!("expected alice to be served: {e}"));
    assert_eq!(status, 200, "body: {body}");
    let seen = echo(&body);
    assert_eq!(
        header(&seen, "x-client-cert-subject"),
        Some("CN=alice, O=Portcullis Tests"),
        "echo: {body}"
    );

    // Optional: an anonymous client is served, and cannot forge the subject header.
    let forged = &[("x-client-cert-subject", "CN=admin")];
    let (status, body) = get("optional", None, forged)
        .await
        .unwrap_or_else(|e| panic!("expected an anonymous client to be served: {e}"));
    assert_eq!(status, 200, "body: {body}");
    assert_eq!(
        header(&echo(&body), "x-client-cert-subject"),
        None,
        "a forged subject went upstream: {body}"
    );
    let (_, body) = get("optional", Some(clients.client("bob")), forged)
        .await
        .unwrap_or_else(|e| panic!("expected bob to be served: {e}"));
    assert_eq!(
        header(&echo(&body), "x-client-cert-subject"),
        Some("CN=bob, O=Portcullis Tests"),
        "echo: {body}"
    );
}

mod reload;
mod upstream;
