//! Verification keys: an HMAC secret, PEM public keys and JWKS entries, and which
//! algorithm each may verify.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::{BigUint, RsaPublicKey};
use serde::Deserialize;
use sha2::{Sha256, Sha384, Sha512};

/// A JWS algorithm this filter verifies (`none` is never accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Alg {
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Alg {
    /// Parses a token header's `alg`.
    pub fn from_name(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }
}

/// Key material.
#[derive(Clone)]
pub enum Material {
    /// A shared secret (HS*).
    Hmac(Vec<u8>),
    /// An RSA public key (RS*).
    Rsa(Box<RsaPublicKey>),
    /// A P-256 public key (ES256).
    P256(p256::ecdsa::VerifyingKey),
    /// A P-384 public key (ES384).
    P384(p384::ecdsa::VerifyingKey),
    /// An Ed25519 public key (EdDSA).
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Material::Hmac(_) => "Hmac(..)",
            Material::Rsa(_) => "Rsa",
            Material::P256(_) => "P256",
            Material::P384(_) => "P384",
            Material::Ed25519(_) => "Ed25519",
        })
    }
}

/// A key, with the JWKS `kid` and `alg` it was published with.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key id tokens name in their header.
    pub kid: Option<String>,
    /// Restricts the key to one algorithm.
    pub alg: Option<Alg>,
    /// The key itself.
    pub material: Material,
}

impl Key {
    /// Whether this key can verify `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        matches!(
            (&self.material, alg),
            (Material::Hmac(_), Alg::HS256 | Alg::HS384 | Alg::HS512)
                | (Material::Rsa(_), Alg::RS256 | Alg::RS384 | Alg::RS512)
                | (Material::P256(_), Alg::ES256)
                | (Material::P384(_), Alg::ES384)
                | (Material::Ed25519(_), Alg::EdDSA)
        )
    }

    /// Whether `sig` is `alg`'s signature of `msg` under this key.
    pub fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
        if !self.fits(alg) {
            return false;
        }
        match (&self.material, alg) {
            (Material::Hmac(k), Alg::HS256) => hmac_ok::<Hmac<Sha256>>(k, msg, sig),
            (Material::Hmac(k), Alg::HS384) => hmac_ok::<Hmac<Sha384>>(k, msg, sig),
            (Material::Hmac(k), Alg::HS512) => hmac_ok::<Hmac<Sha512>>(k, msg, sig),
            (Material::Rsa(k), Alg::RS256) => rsa_ok::<Sha256>(k, msg, sig),
            (Material::Rsa(k), Alg::RS384) => rsa_ok::<Sha384>(k, msg, sig),
            (Material::Rsa(k), Alg::RS512) => rsa_ok::<Sha512>(k, msg, sig),
            (Material::P256(k), Alg::ES256) => {
                p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
            (Material::P384(k), Alg::ES384) => {
                p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
            (Material::Ed25519(k), Alg::EdDSA) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(msg, &s).is_ok()),
            _ => false,
        }
    }
}

fn hmac_ok<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(msg);
    // verify_slice compares in constant time.
    mac.verify_slice(sig).is_ok()
}

fn rsa_ok<D>(key: &RsaPublicKey, msg: &[u8], sig: &[u8]) -> bool
where
    D: sha2::Digest + rsa::pkcs8::AssociatedOid,
{
    let vk = rsa::pkcs1v15::VerifyingKey::<D>::new(key.clone());
    rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
}

/// Parses a PEM public key: SPKI (`BEGIN PUBLIC KEY`: RSA, P-256, P-384, Ed25519) or
/// PKCS#1 (`BEGIN RSA PUBLIC KEY`).
pub fn from_pem(pem: &str) -> Result<Material, String> {
    let pem = pem.trim();
    if let Ok(k) = RsaPublicKey::from_public_key_pem(pem) {
        return Ok(Material::Rsa(Box::new(k)));
    }
    if let Ok(k) = RsaPublicKey::from_pkcs1_pem(pem) {
        return Ok(Material::Rsa(Box::new(k)));
    }
    if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
        return Ok(Material::P256(k));
    }
    if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_pem(pem) {
        return Ok(Material::P384(k));
    }
    if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
        return Ok(Material::Ed25519(k));
    }
    Err("not a PEM public key (RSA, P-256, P-384 or Ed25519; BEGIN PUBLIC KEY)".into())
}

/// One JWKS entry (RFC 7517), the fields used here.
#[derive(Debug, Deserialize)]
pub struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

fn b64(field: &str, v: &Option<String>) -> Result<Vec<u8>, String> {
    let s = v.as_deref().ok_or_else(|| format!("missing `{field}`"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("`{field}` is not base64url"))
}

impl Jwk {
    /// Converts to a key; `Ok(None)` for an encryption key, which is skipped.
    pub fn to_key(&self) -> Result<Option<Key>, String> {
        if self.use_.as_deref() == Some("enc") {
            return Ok(None);
        }
        let alg = match &self.alg {
            Some(a) => Some(Alg::from_name(a).ok_or_else(|| format!("unsupported alg `{a}`"))?),
            None => None,
        };
        let material = match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) => {
                let n = BigUint::from_bytes_be(&b64("n", &self.n)?);
                let e = BigUint::from_bytes_be(&b64("e", &self.e)?);
                Material::Rsa(Box::new(
                    RsaPublicKey::new(n, e).map_err(|e| e.to_string())?,
                ))
            }
            ("EC", Some("P-256")) => {
                let (x, y) = (b64("x", &self.x)?, b64("y", &self.y)?);
                let point = p256::EncodedPoint::from_affine_coordinates(
                    p256::FieldBytes::from_slice(&fixed::<32>("x", &x)?),
                    p256::FieldBytes::from_slice(&fixed::<32>("y", &y)?),
                    false,
                );
                Material::P256(
                    p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                        .map_err(|_| "x/y is not a P-256 point".to_string())?,
                )
            }
            ("EC", Some("P-384")) => {
                let (x, y) = (b64("x", &self.x)?, b64("y", &self.y)?);
                let point = p384::EncodedPoint::from_affine_coordinates(
                    p384::FieldBytes::from_slice(&fixed::<48>("x", &x)?),
                    p384::FieldBytes::from_slice(&fixed::<48>("y", &y)?),
                    false,
                );
                Material::P384(
                    p384::ecdsa::VerifyingKey::from_encoded_point(&point)
                        .map_err(|_| "x/y is not a P-384 point".to_string())?,
                )
            }
            ("OKP", Some("Ed25519")) => {
                let x = fixed::<32>("x", &b64("x", &self.x)?)?;
                Material::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|_| "x is not an Ed25519 key".to_string())?,
                )
            }
            ("oct", _) => Material::Hmac(b64("k", &self.k)?),
            (kty, crv) => {
                return Err(format!(
                    "unsupported key type `{kty}`{}",
                    crv.map(|c| format!(" / curve `{c}`")).unwrap_or_default()
                ));
            }
        };
        Ok(Some(Key {
            kid: self.kid.clone(),
            alg,
            material,
        }))
    }
}

fn fixed<const N: usize>(field: &str, b: &[u8]) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("`{field}` must be {N} bytes"))
}
