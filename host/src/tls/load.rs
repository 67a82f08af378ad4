//! Reading PEM files: certificate chains, private keys and CA bundles, each failure
//! saying which file and what the user can do about it.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::provider;

/// Why a certificate, key or CA bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{} is not valid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: std::io::Error,
    },
    /// The file holds no `CERTIFICATE` block.
    #[error(
        "no certificate in {} (expected a PEM chain starting with -----BEGIN CERTIFICATE-----, leaf first)",
        path.display()
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key block.
    #[error(
        "no private key in {} (expected -----BEGIN PRIVATE KEY----- (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a type or curve rustls cannot sign with.
    #[error("unsupported private key in {}: {source} (RSA, ECDSA P-256/P-384 and Ed25519 are supported)", path.display())]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The key is not the one the leaf certificate was issued for.
    #[error(
        "the private key in {} does not match the certificate in {} (was one of them replaced without the other?)",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The leaf certificate could not be parsed.
    #[error("the certificate in {} cannot be parsed: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A CA bundle certificate was rejected as a trust anchor.
    #[error("{} holds a certificate that cannot be used as a trust anchor: {source}", path.display())]
    BadTrustAnchor {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// Which field of a `{ cert, key }` pair an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairField {
    /// The certificate chain file.
    Cert,
    /// The private key file.
    Key,
    /// Both: they do not belong together.
    Pair,
}

/// Reads every certificate of the PEM chain in `path`, leaf first.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let data = read(path)?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(data.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| LoadError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(LoadError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let data = read(path)?;
    rustls_pemfile::private_key(&mut BufReader::new(data.as_slice()))
        .map_err(|source| LoadError::Pem {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| LoadError::NoKey {
            path: path.to_owned(),
        })
}

/// Loads a chain and its key and checks that they belong together; an error names the
/// field it is about.
pub fn certified_key(cert: &Path, key_path: &Path) -> Result<CertifiedKey, (PairField, LoadError)> {
    let chain = certs(cert).map_err(|e| (PairField::Cert, e))?;
    let der = key(key_path).map_err(|e| (PairField::Key, e))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|source| {
            let path = key_path.to_owned();
            (PairField::Key, LoadError::UnsupportedKey { path, source })
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // The ring keys all expose their public key, so "unknown" should not happen;
        // when it does, the handshake itself is the remaining check.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            let (cert, key) = (cert.to_owned(), key_path.to_owned());
            Err((PairField::Pair, LoadError::KeyMismatch { cert, key }))
        }
        Err(other) => {
            let (path, reason) = (cert.to_owned(), other.to_string());
            Err((PairField::Cert, LoadError::BadCertificate { path, reason }))
        }
    }
}

/// Reads a CA bundle into a root store.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>, LoadError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store
            .add(cert)
            .map_err(|source| LoadError::BadTrustAnchor {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(Arc::new(store))
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}
