//! Certificates issued while the proxy runs (ACME, `crate::acme`): unlike files, they
//! change between snapshots, so a listener's resolver reads them from an [`Issued`]
//! that outlives every snapshot and that the issuer fills.
//!
//! One [`Issued`] per ACME storage and CA directory, kept in a process-wide table so
//! that each snapshot's listener finds the one the issuer writes to. A handshake reads
//! it with one lock-free load; only TLS-ALPN-01 validation handshakes (`acme-tls/1`)
//! take a lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use super::info::CertificateInfo;

/// The ALPN id of a TLS-ALPN-01 validation handshake (RFC 8737).
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// A certificate issued for one name.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The chain and its key.
    pub key: Arc<CertifiedKey>,
    /// Its names and validity, read from the leaf; `path` is the stored file.
    pub info: CertificateInfo,
}

/// The issued certificates of one ACME storage, by name.
#[derive(Debug, Default)]
pub struct Issued {
    certs: ArcSwap<HashMap<String, IssuedCert>>,
    /// TLS-ALPN-01 answers by name, while their order is open.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Issued {
    /// The certificate serving `name`, if one was issued.
    pub fn get(&self, name: &str) -> Option<IssuedCert> {
        self.certs.load().get(name).cloned()
    }

    /// Every issued certificate, by name.
    pub fn all(&self) -> Arc<HashMap<String, IssuedCert>> {
        self.certs.load_full()
    }

    /// The signing key for a handshake asking for `name`, if one was issued.
    pub fn key(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.certs.load().get(name).map(|c| Arc::clone(&c.key))
    }

    /// Serves `cert` for `name` from the next handshake on; connections already open
    /// keep the certificate they negotiated.
    pub fn install(&self, name: &str, cert: IssuedCert) {
        self.certs.rcu(|old| {
            let mut new = HashMap::clone(old);
            new.insert(name.to_owned(), cert.clone());
            new
        });
    }

    /// Answers TLS-ALPN-01 validation handshakes for `name` with `key` (`None`: stop).
    pub fn set_challenge(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        let mut challenges = lock(&self.challenges);
        match key {
            Some(k) => challenges.insert(name.to_owned(), k),
            None => challenges.remove(name),
        };
    }

    /// The TLS-ALPN-01 answer for `name`, while its order is open.
    pub fn challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.challenges).get(name).cloned()
    }
}

/// The [`Issued`] of the ACME storage `storage` for the CA at `directory`, created
/// empty the first time it is asked for.
pub fn for_storage(storage: &Path, directory: &str) -> Arc<Issued> {
    let mut table = lock(table());
    Arc::clone(
        table
            .entry((storage.to_owned(), directory.to_owned()))
            .or_default(),
    )
}

/// Forgets every [`Issued`] but those `keep` says are still configured (storage,
/// directory).
pub fn retain(keep: impl Fn(&Path, &str) -> bool) {
    lock(table()).retain(|(storage, directory), _| keep(storage, directory));
}

type Table = Mutex<HashMap<(PathBuf, String), Arc<Issued>>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Table::default)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
