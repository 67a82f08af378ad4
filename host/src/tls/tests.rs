//! Handshakes over real loopback sockets between tokio-rustls clients and the configs
//! this module builds, with certificates made by rcgen for each test.

mod client_auth;
mod connector;
mod pki;
mod upstream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::{CertificatePair, ClientAuth, Origin, TargetConfig, TlsVersion};
use pki::{Alg, Ca, Files, Leaf};

const PATIENCE: Duration = Duration::from_secs(10);

fn origin() -> Origin {
    Origin {
        file: "listeners.yaml".into(),
        line: 3,
    }
}

fn pair(cert: PathBuf, key: PathBuf) -> CertificatePair {
    CertificatePair {
        cert,
        key,
        origin: origin(),
    }
}

fn tls_config(certificates: Vec<CertificatePair>) -> TlsConfig {
    TlsConfig {
        certificates,
        min_version: TlsVersion::Tls12,
        client_ca: None,
        client_auth: ClientAuth::Off,
        acme: None,
        origin: origin(),
    }
}

/// A certificate and the key of another, written to `files`.
fn mismatched_pair(files: &Files) -> CertificatePair {
    let ca = Ca::new("Root");
    let a = ca.server(&["a.test"], Alg::Ecdsa);
    let b = ca.server(&["b.test"], Alg::Ecdsa);
    let cert = files.write("a.crt", &a.chain_pem);
    let wrong_key = files.write("b.key", &b.key_pem);
    pair(cert, wrong_key)
}

fn build_ok(tls: &TlsConfig) -> ListenerTls {
    server::build("web", tls)
        .unwrap_or_else(|e| panic!("expected the TLS config to build, got {e:?}"))
}

fn build_err(tls: &TlsConfig) -> Vec<ConfigError> {
    match server::build("web", tls) {
        Ok(_) => panic!("expected a config error, the TLS config built"),
        Err(e) => e,
    }
}

/// A client that accepts any server certificate, to see which one is served.
fn trusting_client() -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(client::NoVerification))
}

/// What the client saw: the chain it was served (DER, leaf first) and the ALPN.
type ClientSaw = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// What each side saw of one handshake.
struct Outcome {
    server: Result<Session, String>,
    client: Result<ClientSaw, String>,
}

/// Runs one handshake, then one byte each way so that a rejection sent after the
/// client's side finished (TLS 1.3 client auth) is seen too.
async fn handshake(server: Arc<ServerConfig>, client: ClientConfig, name: &str) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (mut tls, session) = accept(&acceptor, tcp, PATIENCE)
            .await
            .map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(session)
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        let conn = tls.get_ref().1;
        let chain = conn
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.to_vec()).collect())
            .unwrap_or_default();
        Ok((chain, conn.alpn_protocol().map(<[u8]>::to_vec)))
    };
    let client = tokio::time::timeout(PATIENCE, client)
        .await
        .unwrap_or_else(|_| Err("client timed out".into()));
    let server = match tokio::time::timeout(PATIENCE, server_side).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("server task failed: {e}")),
        Err(_) => Err("server timed out".into()),
    };
    Outcome { server, client }
}

/// The leaf the client was served, or a panic saying what happened instead.
fn served_leaf(outcome: &Outcome) -> Vec<u8> {
    match &outcome.client {
        Ok((chain, _)) => chain.first().cloned().unwrap_or_default(),
        Err(e) => panic!("expected a completed handshake, the client saw: {e}"),
    }
}

// === SNI ===

#[tokio::test]
async fn sni_chooses_exact_then_wildcard_then_default_across_key_types() {
    let ca = Ca::new("Test Root");
    let (intermediate, intermediate_pem) = ca.intermediate("Test Intermediate");
    let files = Files::new();
    let default = ca.server(&["default.test"], Alg::Rsa);
    let wildcard = ca.server(&["*.example.com"], Alg::Ecdsa);
    let api = intermediate.leaf(
        &["api.example.com"],
        Alg::Ed25519,
        Some(&intermediate_pem),
        |_| {},
    );
    let (c0, k0) = files.pair("default", &default);
    let (c1, k1) = files.pair("wildcard", &wildcard);
    let (c2, k2) = files.pair("api", &api);
    let built = build_ok(&tls_config(vec![pair(c0, k0), pair(c1, k1), pair(c2, k2)]));
    assert_eq!(
        built.certificates[1].names,
        vec!["*.example.com".to_string()]
    );

    let cases: [(&str, bool, &Leaf, &str); 7] = [
        (
            "api.example.com",
            true,
            &api,
            "exact name beats the wildcard",
        ),
        (
            "API.Example.COM",
            true,
            &api,
            "names compare case-insensitively",
        ),
        (
            "www.example.com",
            true,
            &wildcard,
            "wildcard covers one label",
        ),
        (
            "a.b.example.com",
            true,
            &default,
            "wildcard covers only one label",
        ),
        (
            "example.com",
            true,
            &default,
            "wildcard does not cover the bare domain",
        ),
        (
            "unknown.test",
            true,
            &default,
            "an unknown name gets the default",
        ),
        ("default.test", false, &default, "no SNI gets the default"),
    ];
    for (name, send_sni, expected, why) in cases {
        let mut client = trusting_client().with_no_client_auth();
        client.enable_sni = send_sni;
        let outcome = handshake(Arc::clone(&built.config), client, name).await;
        assert!(
            served_leaf(&outcome) == expected.leaf_der,
            "{why}: asking for {name} (sni: {send_sni}) served the wrong certificate"
        );
        let sent = outcome.server.as_ref().map(|s| s.server_name.clone());
        let wanted = send_sni.then(|| name.to_ascii_lowercase());
        assert_eq!(
            sent.as_ref().ok().cloned().flatten(),
            wanted,
            "SNI the server saw"
        );
    }

    // The intermediate travels with its leaf, so a client trusting only the root
    // verifies the chain.
    let outcome = handshake(
        Arc::clone(&built.config),
        trusting_client().with_no_client_auth(),
        "api.example.com",
    )
    .await;
    let chain = outcome
        .client
        .unwrap_or_else(|e| panic!("handshake failed: {e}"))
        .0;
    assert_eq!(chain.len(), 2, "expected leaf + intermediate to be served");
}

#[test]
fn wildcards_cover_exactly_one_label() {
    assert!(sni::wildcard_matches("*.example.com", "a.example.com"));
    assert!(!sni::wildcard_matches("*.example.com", "example.com"));
    assert!(!sni::wildcard_matches("*.example.com", ".example.com"));
    assert!(!sni::wildcard_matches("*.example.com", "a.b.example.com"));
    assert!(!sni::wildcard_matches("*.example.com", "aexample.com"));
    assert!(!sni::wildcard_matches("api.example.com", "api.example.com"));
}

#[tokio::test]
async fn alpn_negotiates_h2_and_reports_the_version() {
    let ca = Ca::new("Root");
    let files = Files::new();
    let (c, k) = files.pair("site", &ca.server(&["site.test"], Alg::Ecdsa));
    let built = build_ok(&tls_config(vec![pair(c, k)]));
    let mut client = trusting_client().with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let outcome = handshake(built.config, client, "site.test").await;
    let session = outcome
        .server
        .unwrap_or_else(|e| panic!("server side failed: {e}"));
    assert_eq!(session.alpn.as_deref(), Some(&b"h2"[..]), "negotiated ALPN");
    assert_eq!(session.version, Some("TLSv1.3"), "negotiated version");
    assert_eq!(
        session.client_subject, None,
        "no client certificate was asked for"
    );
}

#[tokio::test]
async fn min_version_13_refuses_a_tls12_client() {
    let ca = Ca::new("Root");
    let files = Files::new();
    let (c, k) = files.pair("site", &ca.server(&["site.test"], Alg::Ecdsa));
    let mut tls = tls_config(vec![pair(c, k)]);
    let tls12_client = || {
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap_or_else(|e| panic!("{e}"))
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(client::NoVerification))
            .with_no_client_auth()
    };

    let outcome = handshake(build_ok(&tls).config, tls12_client(), "site.test").await;
    let session = outcome
        .server
        .unwrap_or_else(|e| panic!("1.2 by default, got: {e}"));
    assert_eq!(session.version, Some("TLSv1.2"));

    tls.min_version = TlsVersion::Tls13;
    let outcome = handshake(build_ok(&tls).config, tls12_client(), "site.test").await;
    assert!(
        outcome.client.is_err(),
        "a TLS 1.2 client must fail against min_version 1.3"
    );
}

// === errors and warnings ===

#[test]
fn a_key_that_does_not_match_its_certificate_is_a_config_error() {
    let files = Files::new();
    let errors = build_err(&tls_config(vec![mismatched_pair(&files)]));
    assert_eq!(errors.len(), 1, "one error expected, got {errors:?}");
    let e = &errors[0];
    assert_eq!(e.path, "listeners.web.tls.certificates.0");
    assert_eq!((e.file.as_str(), e.line), ("listeners.yaml", 3));
    assert!(
        e.message.contains("does not match"),
        "message: {}",
        e.message
    );
}

#[test]
fn the_admin_listeners_errors_name_admin_tls() {
    let files = Files::new();
    let mut tls = tls_config(vec![mismatched_pair(&files)]);
    tls.client_ca = Some(files.write("ca.crt", "not PEM"));
    tls.client_auth = ClientAuth::Required;
    let errors = match server::build_for(server::Owner::Admin, &tls) {
        Ok(_) => panic!("expected config errors, the admin TLS built"),
        Err(e) => e,
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["admin.tls", "admin.tls.client_ca"], "{errors:?}");
}

#[test]
fn unreadable_and_malformed_files_name_their_field() {
    let ca = Ca::new("Root");
    let files = Files::new();
    let good = ca.server(&["a.test"], Alg::Ecdsa);
    let (cert, key) = files.pair("a", &good);
    let missing = files.path().join("missing.crt");
    let not_a_key = files.write("notakey.key", &good.chain_pem);
    let not_a_cert = files.write("notacert.crt", &good.key_pem);
    let errors = build_err(&tls_config(vec![
        pair(missing, key.clone()),
        pair(cert, not_a_key),
        pair(not_a_cert, key),
    ]));
    let got: Vec<(&str, bool)> = errors
        .iter()
        .map(|e| {
            (
                e.path.as_str(),
                e.message.contains("cannot read") || e.message.contains("no "),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("listeners.web.tls.certificates.0.cert", true),
            ("listeners.web.tls.certificates.1.key", true),
            ("listeners.web.tls.certificates.2.cert", true),
        ],
        "errors: {errors:?}"
    );
}

#[test]
fn an_expired_certificate_loads_with_a_warning_giving_its_date() {
    let ca = Ca::new("Root");
    let files = Files::new();
    let old = ca.leaf(&["old.test"], Alg::Ecdsa, None, |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let (c, k) = files.pair("old", &old);
    let built = build_ok(&tls_config(vec![pair(c, k)]));
    assert_eq!(built.warnings.len(), 1, "warnings: {:?}", built.warnings);
    assert!(
        built.warnings[0].contains("expired on 2001-01-01T00:00:00Z"),
        "warning: {}",
        built.warnings[0]
    );
    assert!(built.certificates[0].days_left(SystemTime::now()) < -9000.0);
}

#[test]
fn expiry_gauge_lists_every_certificate() {
    let ca = Ca::new("Root");
    let files = Files::new();
    let (c0, k0) = files.pair("a", &ca.server(&["a.test"], Alg::Ecdsa));
    let (c1, k1) = files.pair("b", &ca.server(&["b.test"], Alg::Ed25519));
    let mut config = test_config();
    config.listeners[0].tls = Some(tls_config(vec![pair(c0.clone(), k0), pair(c1, k1)]));
    let set = TlsSet::build(&config).unwrap_or_else(|e| panic!("{e:?}"));
    let mut out = String::new();
    set.render_metrics(&mut out, SystemTime::now());
    assert!(
        out.contains("# TYPE portcullis_tls_certificate_expiry_days gauge"),
        "{out}"
    );
    let line = format!(
        "portcullis_tls_certificate_expiry_days{{listener=\"web\",cert=\"{}\"}} ",
        c0.display()
    );
    assert!(
        out.contains(&line),
        "expected a series for {}, got:\n{out}",
        c0.display()
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("portcullis_tls"))
            .count(),
        2,
        "{out}"
    );
}

fn test_config() -> Config {
    Config {
        admin: None,
        workers: 1,
        workers_origin: None,
        module_cache: None,
        shutdown: Default::default(),
        node: Default::default(),
        listeners: vec![crate::config::ListenerConfig {
            name: "web".into(),
            address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            protocol: Default::default(),
            tls: None,
            limits: Default::default(),
            http2: Default::default(),
            proxy_protocol: None,
            http3: false,
            origin: origin(),
        }],
        routes: Vec::new(),
        l4_routes: Vec::new(),
        filters: Vec::new(),
        services: Vec::new(),
        upstreams: Vec::new(),
        redis: None,
        tracing: None,
        access_log: None,
        providers: Default::default(),
        external_files: Vec::new(),
    }
}

#[test]
fn the_subject_header_is_the_verified_one_or_none() {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        CLIENT_SUBJECT_HEADER,
        http::HeaderValue::from_static("CN=forged"),
    );
    set_client_subject(&mut headers, None);
    assert_eq!(
        headers.get(CLIENT_SUBJECT_HEADER),
        None,
        "a client-sent subject must go"
    );
    headers.insert(
        CLIENT_SUBJECT_HEADER,
        http::HeaderValue::from_static("CN=forged"),
    );
    set_client_subject(&mut headers, Some("CN=alice, O=Example"));
    let all: Vec<_> = headers.get_all(CLIENT_SUBJECT_HEADER).iter().collect();
    assert_eq!(all, vec!["CN=alice, O=Example"]);
}
