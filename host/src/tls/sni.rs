//! Choosing a listener's certificate by the name the client asked for (SNI).
//!
//! Names come from each certificate's SAN DNS entries: an exact name beats a wildcard
//! (`*.example.com` stands for exactly one more label), an earlier certificate beats a
//! later one, and among those a certificate whose key the client can verify (RSA vs
//! ECDSA vs Ed25519) beats one it cannot. A client that sends no name, or a name no
//! certificate carries, gets the first certificate.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

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
    /// Served to clients without SNI, or whose name no certificate carries.
    default: Entry,
    others: Vec<Entry>,
}

impl SniResolver {
    /// A resolver over `entries`, the first being the default; `None` when empty.
    pub fn new(entries: Vec<Entry>) -> Option<Self> {
        let mut entries = entries.into_iter();
        let default = entries.next()?;
        Some(Self {
            default,
            others: entries.collect(),
        })
    }

    /// The certificate a client asking for `server_name`, able to verify the signature
    /// `schemes`, is served.
    pub fn choose(&self, server_name: Option<&str>, schemes: &[rustls::SignatureScheme]) -> &Entry {
        let Some(name) = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return &self.default;
        };
        let exact = |e: &Entry| e.names.contains(&name);
        let wild = |e: &Entry| e.names.iter().any(|p| wildcard_matches(p, &name));
        let usable = |e: &Entry| schemes.is_empty() || e.key.key.choose_scheme(schemes).is_some();
        for matches in [&exact as &dyn Fn(&Entry) -> bool, &wild] {
            let mut first = None;
            for e in self.iter().filter(|e| matches(e)) {
                if usable(e) {
                    return e;
                }
                first.get_or_insert(e);
            }
            if let Some(e) = first {
                return e;
            }
        }
        &self.default
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        std::iter::once(&self.default).chain(&self.others)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .choose(hello.server_name(), hello.signature_schemes())
                .key,
        ))
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
