//! TLS with rustls (ring): termination on listeners, origination to upstreams.
//!
//! Everything here is built from the configuration as part of a
//! [`Snapshot`](crate::snapshot::Snapshot) ([`TlsSet::build`]): a certificate replaced on
//! disk is picked up by the reload that the file change triggers, the acceptor of the
//! *current* snapshot serves each new connection, and connections already open keep
//! the session they negotiated. A file that does not load is a config error like any
//! other, so the previous certificates keep serving.
//!
//! - [`server`]: a listener's `ServerConfig`: certificates chosen by SNI ([`sni`]),
//!   ALPN `h2`/`http/1.1`, minimum version, optional client-certificate verification.
//! - [`client`]: an upstream's `ClientConfig`: a private CA or the Mozilla roots, or no
//!   verification, an optional client certificate, ALPN `h2`/`http/1.1`.
//! - [`info`]: SAN names, expiry and subject read with x509-parser, for SNI, the load
//!   warning of an expired certificate, the expiry gauge and `X-Client-Cert-Subject`.

pub mod client;
pub mod connector;
pub mod https;
pub mod info;
pub mod issued;
pub mod load;
pub mod server;
pub mod sni;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use crate::config::{
    Config, ConfigError, ListenerProtocol, TlsConfig, UpstreamConfig, UpstreamTlsConfig,
};
pub use info::CertificateInfo;
pub use server::ListenerTls;

/// ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The header that carries a verified client certificate's subject to the upstream.
pub const CLIENT_SUBJECT_HEADER: &str = "x-client-cert-subject";

/// The one crypto provider of the process (ring), so that no code path depends on a
/// process-wide default having been installed.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// Builds the `ServerConfig` of listener `listener`.
pub fn server_config(
    listener: &str,
    tls: &TlsConfig,
) -> Result<Arc<rustls::ServerConfig>, Vec<ConfigError>> {
    server::build(listener, tls).map(|l| l.config)
}

/// Builds the `ClientConfig` of an upstream with a `tls:` block; `None` without one.
pub fn client_config(
    upstream: &UpstreamConfig,
) -> Result<Option<Arc<rustls::ClientConfig>>, Vec<ConfigError>> {
    upstream_tls(upstream).map(|t| t.map(|t| t.config))
}

/// Builds everything an upstream's connector needs for TLS; `None` without a `tls:`
/// block.
pub fn upstream_tls(upstream: &UpstreamConfig) -> Result<Option<UpstreamTls>, Vec<ConfigError>> {
    let Some(tls) = &upstream.tls else {
        return Ok(None);
    };
    let config = client::build(upstream, tls)?;
    Ok(Some(UpstreamTls {
        config,
        sni: tls.sni.clone(),
        fingerprint: client::fingerprint(tls),
    }))
}

/// An upstream's TLS, built once per snapshot.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The rustls client config (roots, client certificate, ALPN).
    pub config: Arc<rustls::ClientConfig>,
    /// The name to send and verify instead of the target's host.
    pub sni: Option<String>,
    /// A digest of the files it was built from (CA bundle, client certificate and
    /// key): an upstream kept across a reload must be rebuilt when it changes, even
    /// though its configuration reads the same.
    pub fingerprint: [u8; 32],
}

/// Sets the `X-Client-Cert-Subject` request header to the connection's verified
/// client-certificate subject, and removes any the client sent itself: the upstream
/// must be able to trust it.
pub fn set_client_subject(headers: &mut http::HeaderMap, subject: Option<&str>) {
    // Parsed once: every request of every listener passes here, and parsing the name
    // from a `&str` cost more than the lookup.
    static NAME: http::HeaderName = http::HeaderName::from_static(CLIENT_SUBJECT_HEADER);
    headers.remove(&NAME);
    if let Some(value) = subject.and_then(|s| http::HeaderValue::from_str(s).ok()) {
        headers.insert(NAME.clone(), value);
    }
}

/// The name an upstream connection to `target` (`host:port`) sends and verifies.
pub fn upstream_server_name(tls: &UpstreamTlsConfig, target: &str) -> Option<ServerName<'static>> {
    client::server_name(tls, target)
}

// === impl TlsSet ===

/// Every listener's and upstream's TLS of one snapshot.
#[derive(Debug, Default, Clone)]
pub struct TlsSet {
    listeners: HashMap<String, ListenerTls>,
    upstreams: HashMap<String, UpstreamTls>,
    /// The admin listener's (`admin.tls`).
    admin: Option<ListenerTls>,
}

impl TlsSet {
    /// Builds the TLS of every listener and upstream of `config` that has a `tls:`
    /// block, reporting every error found.
    pub fn build(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut set = Self::default();
        let mut errors = Vec::new();
        for l in &config.listeners {
            if let Some(tls) = &l.tls {
                match server::build(&l.name, tls) {
                    Ok(mut built) => {
                        if l.protocol != ListenerProtocol::Http {
                            // A TCP client may offer ALPN ids of its own protocol; one
                            // offering only such ids would fail against h2/http1.1.
                            Arc::make_mut(&mut built.config).alpn_protocols.clear();
                        }
                        set.listeners.insert(l.name.clone(), built);
                    }
                    Err(e) => errors.extend(e),
                }
            }
        }
        if let Some(tls) = config.admin.as_ref().and_then(|a| a.tls.as_ref()) {
            match server::build_for(server::Owner::Admin, tls) {
                Ok(built) => set.admin = Some(built),
                Err(e) => errors.extend(e),
            }
        }
        for u in &config.upstreams {
            match upstream_tls(u) {
                Ok(Some(c)) => drop(set.upstreams.insert(u.name.clone(), c)),
                Ok(None) => {}
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// The acceptor of `listener`, `None` when it serves plain text.
    pub fn acceptor(&self, listener: &str) -> Option<tokio_rustls::TlsAcceptor> {
        self.listeners
            .get(listener)
            .map(|l| tokio_rustls::TlsAcceptor::from(Arc::clone(&l.config)))
    }

    /// The admin listener's acceptor, `None` when it serves plain text.
    pub fn admin_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.admin
            .as_ref()
            .map(|l| tokio_rustls::TlsAcceptor::from(Arc::clone(&l.config)))
    }

    /// The built TLS of `listener`.
    pub fn listener(&self, listener: &str) -> Option<&ListenerTls> {
        self.listeners.get(listener)
    }

    /// The TLS of `upstream`, `None` when it is reached in plain text.
    pub fn upstream(&self, upstream: &str) -> Option<&UpstreamTls> {
        self.upstreams.get(upstream)
    }

    /// Every served certificate (files, then ACME-issued ones by stored file), with
    /// its listener, listeners by name.
    pub fn certificates(&self) -> Vec<(String, CertificateInfo)> {
        let mut names: Vec<&String> = self.listeners.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let Some(listener) = self.listeners.get(name) else {
                continue;
            };
            let issued = listener.issued.as_ref().map(|i| i.all());
            let mut issued: Vec<_> = issued.iter().flat_map(|m| m.values()).collect();
            issued.sort_by(|a, b| a.info.path.cmp(&b.info.path));
            let certs = listener.certificates.iter();
            for cert in certs.chain(issued.into_iter().map(|c| &c.info)) {
                out.push((name.clone(), cert.clone()));
            }
        }
        out
    }

    /// Appends `portcullis_tls_certificate_expiry_days{listener,cert}` (days until
    /// each served certificate expires, negative once it has; the admin listener's as
    /// `listener="admin"`) in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String, now: SystemTime) {
        if self.listeners.is_empty() && self.admin.is_none() {
            return;
        }
        out.push_str(
            "# HELP portcullis_tls_certificate_expiry_days Days until the certificate expires (negative: expired).\n\
             # TYPE portcullis_tls_certificate_expiry_days gauge\n",
        );
        // ACME certificates are labelled with their stored file, like files are.
        for (name, cert) in self.certificates() {
            let _ = writeln!(
                out,
                "portcullis_tls_certificate_expiry_days{{listener=\"{}\",cert=\"{}\"}} {:.3}",
                escape(&name),
                escape(&cert.path.display().to_string()),
                cert.days_left(now)
            );
        }
        for cert in self.admin.iter().flat_map(|a| &a.certificates) {
            let _ = writeln!(
                out,
                "portcullis_tls_certificate_expiry_days{{listener=\"admin\",cert=\"{}\"}} {:.3}",
                escape(&cert.path.display().to_string()),
                cert.days_left(now)
            );
        }
    }
}

// === accepting ===

/// What a finished handshake tells the request about its connection.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// `TLSv1.2` / `TLSv1.3` (Envoy's `connection.tls_version`).
    pub version: Option<&'static str>,
    /// The verified client certificate's subject, when one was presented.
    pub client_subject: Option<Arc<str>>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// The SNI the client sent.
    pub server_name: Option<String>,
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish in time.
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The handshake failed (bad certificate, no common version, not TLS, …).
    #[error("TLS handshake failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Completes the server side of a handshake on `io` within `timeout`.
pub async fn accept<IO>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: IO,
    timeout: Duration,
) -> Result<(TlsStream<IO>, Session), HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stream = tokio::time::timeout(timeout, acceptor.accept(io))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))??;
    let session = session(stream.get_ref().1);
    Ok((stream, session))
}

/// Reads what a request needs to know from an established server connection.
pub fn session(conn: &rustls::ServerConnection) -> Session {
    Session {
        version: conn.protocol_version().and_then(version_name),
        client_subject: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(info::subject),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        server_name: conn.server_name().map(str::to_owned),
    }
}

/// `TLSv1.2` / `TLSv1.3`, as Envoy names them.
pub fn version_name(v: rustls::ProtocolVersion) -> Option<&'static str> {
    match v {
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        _ => None,
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
