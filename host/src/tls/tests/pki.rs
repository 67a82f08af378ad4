//! A throwaway PKI for the tests: a CA (optionally with an intermediate) issuing
//! leaf certificates of every key type we serve, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm,
};
use tempfile::TempDir;

/// A fixed RSA key: ring cannot generate RSA keys, and rcgen's RSA generation needs
/// aws-lc-rs.
const RSA_KEY: &str = include_str!("../testdata/rsa2048.key");

/// Key types a test can ask for.
#[derive(Debug, Clone, Copy)]
pub enum Alg {
    Ecdsa,
    Ed25519,
    Rsa,
}

impl Alg {
    pub fn key(self) -> KeyPair {
        let made = match self {
            Alg::Ecdsa => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Alg::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            Alg::Rsa => KeyPair::from_pem_and_sign_algo(RSA_KEY, rsa_alg()),
        };
        made.unwrap_or_else(|e| panic!("test key generation failed: {e}"))
    }
}

fn rsa_alg() -> &'static SignatureAlgorithm {
    &rcgen::PKCS_RSA_SHA256
}

/// A certificate authority.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf: its chain (leaf first, then any intermediate) and key, as PEM.
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
    pub leaf_der: Vec<u8>,
}

impl Leaf {
    /// The chain and key as rustls takes them.
    pub fn rustls_parts(
        &self,
    ) -> (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let chain = rustls_pemfile::certs(&mut self.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("test key did not parse"));
        (chain, key)
    }
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = Alg::Ecdsa.key();
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one; leaves it issues carry it in their chain.
    pub fn intermediate(&self, name: &str) -> (Ca, String) {
        let key = Alg::Ecdsa.key();
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        let pem = cert.pem();
        (
            Ca {
                cert_pem: pem.clone(),
                issuer: Issuer::new(params, key),
            },
            pem,
        )
    }

    /// A server certificate for `names`.
    pub fn server(&self, names: &[&str], alg: Alg) -> Leaf {
        self.leaf(names, alg, None, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        })
    }

    /// A client certificate with subject `CN=cn`.
    pub fn client(&self, cn: &str) -> Leaf {
        self.leaf(&[], Alg::Ecdsa, None, |p| {
            p.distinguished_name.push(DnType::CommonName, cn);
            p.distinguished_name
                .push(DnType::OrganizationName, "Portcullis Tests");
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        })
    }

    /// A leaf with full control over its parameters; `chain_tail` is appended to the
    /// chain (an intermediate's PEM).
    pub fn leaf(
        &self,
        names: &[&str],
        alg: Alg,
        chain_tail: Option<&str>,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = alg.key();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap_or_else(|e| panic!("{e}"));
        tweak(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut chain_pem = cert.pem();
        if let Some(tail) = chain_tail {
            chain_pem.push_str(tail);
        }
        Leaf {
            chain_pem,
            key_pem: key.serialize_pem(),
            leaf_der: cert.der().to_vec(),
        }
    }
}

/// A directory of PEM files.
pub struct Files {
    dir: TempDir,
}

impl Files {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
        }
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Writes `leaf` as `NAME.crt` / `NAME.key`.
    pub fn pair(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.crt"), &leaf.chain_pem),
            self.write(&format!("{name}.key"), &leaf.key_pem),
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
