//! TLS termination on a listener: its certificates (chosen by SNI), protocol versions,
//! ALPN and client-certificate verification, built into one rustls `ServerConfig`.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::info::CertificateInfo;
use super::issued::{self, ALPN_ACME_TLS, Issued};
use super::load::{self, PairField};
use super::sni::{Acme, Entry, SniResolver};
use super::{ALPN_H2, ALPN_HTTP11, provider};
use crate::config::{AcmeChallenge, ClientAuth, ConfigError, TlsConfig, TlsVersion};

/// A listener's TLS, built once per snapshot.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// What the acceptor serves.
    pub config: Arc<ServerConfig>,
    /// Its certificates, in configuration order (the first is the default).
    pub certificates: Vec<CertificateInfo>,
    /// The certificates ACME issued for it, when it has `acme`.
    pub issued: Option<Arc<Issued>>,
    /// Problems worth a warning that do not stop the configuration (an expired
    /// certificate); already logged.
    pub warnings: Vec<String>,
}

/// Whose TLS is built: what its log lines and the field paths of its errors name.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// `listeners[NAME].tls`.
    Listener(&'a str),
    /// `admin.tls` (one `cert` and `key`, no list).
    Admin,
}

impl Owner<'_> {
    fn name(&self) -> &str {
        match self {
            Owner::Listener(name) => name,
            Owner::Admin => "admin",
        }
    }

    /// The path of `field` of the TLS block.
    fn field(&self, field: &str) -> String {
        match self {
            Owner::Listener(name) => format!("listeners.{name}.tls.{field}"),
            Owner::Admin => format!("admin.tls.{field}"),
        }
    }

    /// The path of certificate pair `i`'s `which` (`""`, `.cert` or `.key`).
    fn pair_field(&self, i: usize, which: &str) -> String {
        match self {
            Owner::Listener(name) => format!("listeners.{name}.tls.certificates.{i}{which}"),
            Owner::Admin => format!("admin.tls{which}"),
        }
    }
}

/// Builds the TLS of listener `listener`; every unreadable, malformed or mismatched
/// file is a config error at `listeners.NAME.tls.…`.
pub fn build(listener: &str, tls: &TlsConfig) -> Result<ListenerTls, Vec<ConfigError>> {
    build_for(Owner::Listener(listener), tls)
}

/// [`build`] for any `owner`: errors name its fields.
pub fn build_for(owner: Owner, tls: &TlsConfig) -> Result<ListenerTls, Vec<ConfigError>> {
    let listener = owner.name();
    let mut errors = Vec::new();
    let mut entries = Vec::new();
    let mut certificates = Vec::new();
    let mut warnings = Vec::new();
    let now = SystemTime::now();

    for (i, pair) in tls.certificates.iter().enumerate() {
        let field = |f: &str| owner.pair_field(i, f);
        let key = match load::certified_key(&pair.cert, &pair.key) {
            Ok(key) => key,
            Err((which, e)) => {
                let at = match which {
                    PairField::Cert => ".cert",
                    PairField::Key => ".key",
                    PairField::Pair => "",
                };
                errors.push(ConfigError::at(&pair.origin, field(at), e.to_string()));
                continue;
            }
        };
        let info = match key
            .end_entity_cert()
            .map_err(|e| e.to_string())
            .and_then(|leaf| CertificateInfo::parse(pair.cert.clone(), leaf))
        {
            Ok(info) => info,
            Err(reason) => {
                let msg = format!(
                    "the certificate in {} cannot be parsed: {reason}",
                    pair.cert.display()
                );
                errors.push(ConfigError::at(&pair.origin, field(".cert"), msg));
                continue;
            }
        };
        if let Some(w) = info.warning(now) {
            tracing::warn!(listener, "{w}");
            warnings.push(w);
        }
        entries.push(Entry {
            names: info.names.clone(),
            key: Arc::new(key),
        });
        certificates.push(info);
    }

    let verifier = match client_verifier(owner, tls) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    // With ACME the files are optional: they serve the names that have no ACME
    // certificate yet.
    let acme = tls.acme.as_ref().map(|a| Acme {
        issued: issued::for_storage(&a.storage, &a.directory),
        alpn_challenge: a.challenge == AcmeChallenge::TlsAlpn01,
    });
    let issued = acme.as_ref().map(|a| Arc::clone(&a.issued));
    let alpn_challenge = acme.as_ref().is_some_and(|a| a.alpn_challenge);
    if entries.is_empty() && acme.is_none() && errors.is_empty() {
        // None was configured, which the config loader refuses; say so anyway.
        let msg = "needs at least one { cert, key } pair";
        errors.push(ConfigError::at(
            &tls.origin,
            owner.field("certificates"),
            msg,
        ));
    }
    let resolver = SniResolver::with_issued(entries, acme);
    let (Some(verifier), true) = (verifier, errors.is_empty()) else {
        return Err(errors);
    };

    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| {
            let path = owner.field("min_version");
            vec![ConfigError::at(&tls.origin, path, e.to_string())]
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    if alpn_challenge {
        // Last: a client offering h2 or http/1.1 never picks it.
        config.alpn_protocols.push(ALPN_ACME_TLS.to_vec());
    }
    Ok(ListenerTls {
        config: Arc::new(config),
        certificates,
        issued,
        warnings,
    })
}

fn client_verifier(
    owner: Owner,
    tls: &TlsConfig,
) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let field = owner.field("client_ca");
    let ca = match (tls.client_auth, &tls.client_ca) {
        (ClientAuth::Off, _) => return Ok(WebPkiClientVerifier::no_client_auth()),
        (_, Some(ca)) => ca,
        (_, None) => {
            let msg = "client_auth needs client_ca (the CA bundle client certificates are verified against)";
            return Err(ConfigError::at(&tls.origin, field, msg));
        }
    };
    let roots = load::roots(ca).map_err(|e| ConfigError::at(&tls.origin, &field, e.to_string()))?;
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let builder = match tls.client_auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        _ => builder,
    };
    builder.build().map_err(|e| {
        ConfigError::at(
            &tls.origin,
            field,
            format!(
                "cannot verify client certificates with {}: {e}",
                ca.display()
            ),
        )
    })
}
