//! TLS to upstreams: a rustls `ClientConfig` per upstream, verifying against a given CA
//! bundle or the Mozilla roots (webpki-roots), or not at all when `verify: false`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::load::{self, PairField};
use super::{ALPN_H2, ALPN_HTTP11, provider};
use crate::config::{ConfigError, UpstreamConfig, UpstreamTlsConfig};

/// Builds the client config of `upstream`'s `tls:` block; every problem is a config
/// error naming `upstreams.NAME.tls.FIELD`.
///
/// ALPN offers `h2` then `http/1.1`: the connector must speak what was negotiated
/// (`rustls::ClientConnection::alpn_protocol`).
pub fn build(
    upstream: &UpstreamConfig,
    tls: &UpstreamTlsConfig,
) -> Result<Arc<ClientConfig>, Vec<ConfigError>> {
    let field = |f: &str| format!("upstreams.{}.tls.{f}", upstream.name);
    let mut errors = Vec::new();

    let roots = match &tls.ca {
        Some(ca) => match load::roots(ca) {
            Ok(roots) => Some(roots),
            Err(e) => {
                errors.push(ConfigError::at(
                    &upstream.origin,
                    field("ca"),
                    e.to_string(),
                ));
                None
            }
        },
        None => Some(Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })),
    };
    let client_key = match &tls.client_cert {
        Some(pair) => match load::certified_key(&pair.cert, &pair.key) {
            Ok(key) => Some(Some(key)),
            Err((which, e)) => {
                let at = match which {
                    PairField::Cert => "client_cert.cert",
                    PairField::Key => "client_cert.key",
                    PairField::Pair => "client_cert",
                };
                errors.push(ConfigError::at(&pair.origin, field(at), e.to_string()));
                None
            }
        },
        None => Some(None),
    };
    if let Some(sni) = &tls.sni
        && ServerName::try_from(sni.as_str()).is_err()
    {
        let msg = format!("{sni:?} is not a DNS name or IP address");
        errors.push(ConfigError::at(&upstream.origin, field("sni"), msg));
    }
    let (Some(roots), Some(client_key), true) = (roots, client_key, errors.is_empty()) else {
        return Err(errors);
    };

    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            vec![ConfigError::at(
                &upstream.origin,
                field("verify"),
                e.to_string(),
            )]
        })?;
    let builder = if tls.verify {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification))
    };
    let mut config = match client_key {
        Some(key) => {
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// A SHA-256 over the contents of the files `tls` names, in a fixed order; a file that
/// cannot be read contributes its absence.
pub fn fingerprint(tls: &UpstreamTlsConfig) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let files = [
        tls.ca.as_deref(),
        tls.client_cert.as_ref().map(|p| p.cert.as_path()),
        tls.client_cert.as_ref().map(|p| p.key.as_path()),
    ];
    for file in files {
        match file.and_then(|f| std::fs::read(f).ok()) {
            Some(bytes) => {
                hash.update((bytes.len() as u64).to_le_bytes());
                hash.update(&bytes);
            }
            None => hash.update(u64::MAX.to_le_bytes()),
        }
    }
    hash.finalize().into()
}

/// The name to send (SNI) and verify for a connection to `target` (`host:port`):
/// the configured `sni`, else the target's host (an IP address sends no SNI and is
/// verified against the certificate's IP SANs).
pub fn server_name(tls: &UpstreamTlsConfig, target: &str) -> Option<ServerName<'static>> {
    let host = match &tls.sni {
        Some(sni) => sni.as_str(),
        None => host_of(target),
    };
    ServerName::try_from(host.to_owned()).ok()
}

/// `example.com` of `example.com:443`, `::1` of `[::1]:443`.
fn host_of(target: &str) -> &str {
    if let Some(rest) = target.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match target.rsplit_once(':') {
        Some((host, _port)) => host,
        None => target,
    }
}

/// `verify: false`: accepts any certificate, but still checks that the server holds
/// its key (the handshake signature), so the connection is at least encrypted to
/// whoever answered.
#[derive(Debug)]
pub struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
