//! Client-certificate verification on a listener: required, optional, and the subject
//! handed on to the request.

use super::*;

/// A listener trusting `ca` for client certificates in `mode`.
fn listener(files: &Files, ca: &Ca, mode: ClientAuth) -> Arc<ServerConfig> {
    let (c, k) = files.pair("site", &ca.server(&["site.test"], Alg::Ecdsa));
    let mut tls = tls_config(vec![pair(c, k)]);
    tls.client_ca = Some(files.write("clients-ca.pem", &ca.cert_pem));
    tls.client_auth = mode;
    build_ok(&tls).config
}

/// A client presenting `leaf`.
fn presenting(leaf: &Leaf) -> ClientConfig {
    let (chain, key) = leaf.rustls_parts();
    trusting_client()
        .with_client_auth_cert(chain, key)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn required_client_auth_refuses_a_client_without_a_certificate() {
    let ca = Ca::new("Clients");
    let files = Files::new();
    let config = listener(&files, &ca, ClientAuth::Required);
    let outcome = handshake(config, trusting_client().with_no_client_auth(), "site.test").await;
    assert!(
        outcome.server.is_err(),
        "expected the server to refuse a client without a certificate, it accepted: {:?}",
        outcome.server
    );
}

#[tokio::test]
async fn required_client_auth_passes_on_the_verified_subject() {
    let ca = Ca::new("Clients");
    let files = Files::new();
    let config = listener(&files, &ca, ClientAuth::Required);
    let outcome = handshake(config, presenting(&ca.client("alice")), "site.test").await;
    let session = outcome
        .server
        .unwrap_or_else(|e| panic!("expected alice to be accepted: {e}"));
    assert_eq!(
        session.client_subject.as_deref(),
        Some("CN=alice, O=Portcullis Tests")
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_even_when_optional() {
    let ca = Ca::new("Clients");
    let stranger = Ca::new("Somebody Else");
    let files = Files::new();
    let config = listener(&files, &ca, ClientAuth::Optional);
    let outcome = handshake(config, presenting(&stranger.client("mallory")), "site.test").await;
    assert!(
        outcome.server.is_err(),
        "expected a certificate from an unknown CA to be refused, the server accepted: {:?}",
        outcome.server
    );
}

#[tokio::test]
async fn optional_client_auth_accepts_a_client_without_a_certificate() {
    let ca = Ca::new("Clients");
    let files = Files::new();
    let config = listener(&files, &ca, ClientAuth::Optional);
    let outcome = handshake(
        Arc::clone(&config),
        trusting_client().with_no_client_auth(),
        "site.test",
    )
    .await;
    let session = outcome
        .server
        .unwrap_or_else(|e| panic!("expected an anonymous client to be accepted: {e}"));
    assert_eq!(session.client_subject, None);

    let outcome = handshake(config, presenting(&ca.client("bob")), "site.test").await;
    let session = outcome
        .server
        .unwrap_or_else(|e| panic!("expected bob to be accepted: {e}"));
    assert_eq!(
        session.client_subject.as_deref(),
        Some("CN=bob, O=Portcullis Tests")
    );
}

#[test]
fn client_auth_without_a_ca_is_a_config_error() {
    let ca = Ca::new("Root");
    let files = Files::new();
    let (c, k) = files.pair("site", &ca.server(&["site.test"], Alg::Ecdsa));
    let mut tls = tls_config(vec![pair(c, k)]);
    tls.client_auth = ClientAuth::Required;
    let errors = build_err(&tls);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "listeners.web.tls.client_ca");
}
