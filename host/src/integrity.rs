//! Module integrity: a filter's module from disk is checked against the digest its
//! entry pins (`sha256:`) and, under `require_signature`, against a detached ed25519
//! signature beside it (`MODULE.sig`), before a byte of it is compiled. And
//! `portcullis sign`, which makes such a signature.
//!
//! Why ed25519 and not Sigstore / cosign: a cosign bundle is verified against
//! Fulcio's certificate chain and Rekor's transparency log, which means a trust root
//! to fetch and keep fresh and, for keyless signing, the network at load time; the
//! Rust crate that does it (`sigstore`) is not 1.0 and brings an HTTP client, X.509
//! and OCI code with it. A proxy must load its modules offline, at start, in
//! milliseconds. A raw ed25519 signature over the module's bytes is what `openssl
//! pkeyutl -sign -rawin` makes, and is verified by `ed25519-dalek` alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use sha2::{Digest as _, Sha256};

use crate::config::{ConfigError, FilterConfig, integrity::signature_path};

/// Checks `bytes`, read from `path` for `filter`, against its pin and the trusted
/// keys; the error names the file, line and field at fault and what to do.
pub fn check(filter: &FilterConfig, path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let integrity = &filter.integrity;
    let field = |name: &str| format!("filters.{}.{name}", filter.name);
    if let Some((pinned, origin)) = &integrity.sha256 {
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != *pinned {
            return Err(ConfigError::at(
                origin,
                field("sha256"),
                format!(
                    "{} has sha256 {actual}, not the pinned {pinned}: it is not the module \
                     this entry pins (if the change is intended, pin the new digest)",
                    path.display()
                ),
            ));
        }
    }
    let Some(policy) = &integrity.signers else {
        return Ok(());
    };
    let origin = integrity.wasm_origin.as_ref().unwrap_or(&filter.origin);
    let err = |message: String| ConfigError::at(origin, field("wasm"), message);
    let required = format!(
        "require_signature at {}:{}",
        policy.origin.file, policy.origin.line
    );
    let sig_path = signature_path(path);
    let sig_bytes = std::fs::read(&sig_path).map_err(|e| {
        err(format!(
            "the module must be signed ({required}), but its signature {} cannot be read: \
             {e}; sign it with `portcullis sign --key KEY.pem {}`",
            sig_path.display(),
            path.display()
        ))
    })?;
    let signature = parse_signature(&sig_bytes).ok_or_else(|| {
        err(format!(
            "{} is not an ed25519 signature (64 bytes, raw or in base64)",
            sig_path.display()
        ))
    })?;
    if policy
        .keys
        .iter()
        .any(|(_, key)| key.verify_strict(bytes, &signature).is_ok())
    {
        return Ok(());
    }
    let keys: Vec<String> = policy
        .keys
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    Err(err(format!(
        "the signature {} does not verify with any trusted key ({}; {required}): the \
         module changed after it was signed, or a key not trusted signed it",
        sig_path.display(),
        keys.join(", ")
    )))
}

/// A detached signature as a file holds it: the 64 raw bytes `openssl pkeyutl` writes,
/// or their base64 (for carriers of text only), surrounding white space ignored.
fn parse_signature(bytes: &[u8]) -> Option<Signature> {
    if let Ok(raw) = <[u8; 64]>::try_from(bytes) {
        return Some(Signature::from_bytes(&raw));
    }
    use base64::Engine as _;
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let raw = <[u8; 64]>::try_from(decoded.as_slice()).ok()?;
    Some(Signature::from_bytes(&raw))
}

/// `portcullis sign --key KEY.pem MODULE...`: writes `MODULE.sig` beside each module,
/// an ed25519 signature of its bytes by the private key in KEY.pem (PKCS#8 PEM, as
/// `openssl genpkey -algorithm ed25519` writes). One line per module on stdout; a
/// module that cannot be signed is a line on stderr and exit code 1.
pub fn sign(key_file: &Path, modules: &[PathBuf]) -> ExitCode {
    let key = match std::fs::read_to_string(key_file)
        .map_err(|e| e.to_string())
        .and_then(|pem| SigningKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string()))
    {
        Ok(key) => key,
        Err(e) => {
            eprintln!(
                "portcullis: {}: not an ed25519 private key in PKCS#8 PEM ({e}); make one \
                 with `openssl genpkey -algorithm ed25519 -out KEY.pem`",
                key_file.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for module in modules {
        let sig_path = signature_path(module);
        let signed = std::fs::read(module)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|bytes| {
                let signature = key.sign(&bytes).to_bytes();
                std::fs::write(&sig_path, signature)
                    .map_err(|e| format!("cannot write {}: {e}", sig_path.display()))
            });
        match signed {
            Ok(()) => println!("{}: signed: {}", module.display(), sig_path.display()),
            Err(e) => {
                eprintln!("{}: {e}", module.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_read_raw_or_in_base64() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let sig = key.sign(b"module").to_bytes();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig);
        assert_eq!(parse_signature(&sig).map(|s| s.to_bytes()), Some(sig));
        let text = format!("{b64}\n");
        assert_eq!(
            parse_signature(text.as_bytes()).map(|s| s.to_bytes()),
            Some(sig)
        );
        assert!(parse_signature(&sig[..63]).is_none());
        assert!(parse_signature(b"not a signature").is_none());
    }
}
