//! Choosing a listener's certificate by the name the client asked for (SNI).
//!
//! Names come from each certificate's SAN DNS entries: an exact name beats a wildcard
//! (`*.example.com` stands for exactly one more label), an earlier certificate beats a
//! later one, and among those a certificate whose key the client can verify (RSA vs
//! ECDSA vs Ed25519) beats one it cannot. A client that sends no name, or a name no
//! certificate carries, gets the first certificate.
//!
//! On a listener with ACME, a certificate issued for the exact name asked for wins
//! over the files, which serve the names that have none yet; a TLS-ALPN-01 validation
//! handshake (`acme-tls/1`) gets the challenge certificate.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::issued::{ALPN_ACME_TLS, Issued};

/// One servable certificate and the names it answers to.
#[derive(Debug)]
pub struct Entry {
    /// Lower-case DNS names and `*.suffix` wildcards.
    pub names: Vec<String>,
    /// The chain and its signing key.
    pub key: Arc<CertifiedKey>,
}

/// The SNI resolver of one listener.
#[derive(Debug)]
pub struct SniResolver {
    /// Served to clients without SNI, or whose name no certificate carries; `None`
    /// when the listener has ACME certificates only (such a handshake fails).
    default: Option<Entry>,
    others: Vec<Entry>,
    /// Certificates issued at run time (ACME), which win over files for their names.
    issued: Option<Acme>,
}

/// What an ACME listener's resolver reads beyond its files.
#[derive(Debug)]
pub struct Acme {
    /// The issued certificates.
    pub issued: Arc<Issued>,
    /// Whether `acme-tls/1` handshakes (TLS-ALPN-01 validation) are answered.
    pub alpn_challenge: bool,
}

impl SniResolver {
    /// A resolver over `entries`, the first being the default; `None` when empty.
    pub fn new(entries: Vec<Entry>) -> Option<Self> {
        let resolver = Self::with_issued(entries, None);
        resolver.default.is_some().then_some(resolver)
    }

    /// A resolver over `entries` (possibly none) and the certificates of `issued`.
    pub fn with_issued(entries: Vec<Entry>, issued: Option<Acme>) -> Self {
        let mut entries = entries.into_iter();
        Self {
            default: entries.next(),
            others: entries.collect(),
            issued,
        }
    }

    /// The file certificate a client asking for `server_name`, able to verify the
    /// signature `schemes`, is served; `None` only without any file.
    pub fn choose(
        &self,
        server_name: Option<&str>,
        schemes: &[rustls::SignatureScheme],
    ) -> Option<&Entry> {
        let Some(name) = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.as_ref();
        };
        let exact = |e: &Entry| e.names.contains(&name);
        let wild = |e: &Entry| e.names.iter().any(|p| wildcard_matches(p, &name));
        let usable = |e: &Entry| schemes.is_empty() || e.key.key.choose_scheme(schemes).is_some();
        for matches in [&exact as &dyn Fn(&Entry) -> bool, &wild] {
            let mut first = None;
            for e in self.iter().filter(|e| matches(e)) {
                if usable(e) {
                    return Some(e);
                }
                first.get_or_insert(e);
            }
            if let Some(e) = first {
                return Some(e);
            }
        }
        self.default.as_ref()
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.default.iter().chain(&self.others)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(acme) = &self.issued
            && let Some(name) = hello.server_name()
        {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            // A validation handshake offers `acme-tls/1` alone, and gets the
            // challenge certificate or nothing (RFC 8737, section 3).
            let validating = acme.alpn_challenge
                && hello
                    .alpn()
                    .is_some_and(|mut ids| ids.any(|id| id == ALPN_ACME_TLS));
            if validating {
                return acme.issued.challenge(&name);
            }
            if let Some(key) = acme.issued.key(&name) {
                return Some(key);
            }
        }
        self.choose(hello.server_name(), hello.signature_schemes())
            .map(|e| Arc::clone(&e.key))
    }
}

/// Whether `pattern` (`*.example.com`) covers `name` (`a.example.com`, but neither
/// `example.com` nor `a.b.example.com`).
pub fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name
        .strip_suffix(suffix)
        .and_then(|head| head.strip_suffix('.'))
    {
        Some(label) => !label.is_empty() && !label.contains('.'),
        None => false,
    }
}
