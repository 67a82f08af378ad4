//! `require_signature:` and a filter's `sha256:`: what a module from disk must be for
//! the proxy to load it. The check itself runs on the module's bytes when they are
//! compiled (`crate::integrity`); this decodes what the configuration asks for.

use std::sync::Arc;

use ed25519_dalek::pkcs8::DecodePublicKey;

use super::walk::{Cx, Field, Fields};
use super::{FilterConfig, FilterSource, SignaturePolicy};

/// Decodes `require_signature: { trusted_keys: [FILE, ...] }`: each file an ed25519
/// public key in PEM (`-----BEGIN PUBLIC KEY-----`, as `openssl pkey -pubout` writes).
pub(crate) fn require_signature(cx: &mut Cx, field: &Field) -> Option<SignaturePolicy> {
    let mut f = Fields::new(cx, field)?;
    let keys = f.require(cx, "trusted_keys").and_then(|v| {
        let items = v.list(cx)?;
        if items.is_empty() {
            v.error(
                cx,
                "name at least one public key: with none, no module could load",
            );
            return None;
        }
        let keys: Vec<_> = items.iter().map(|item| trusted_key(cx, item)).collect();
        keys.into_iter().collect::<Option<Vec<_>>>()
    });
    f.finish(cx);
    Some(SignaturePolicy {
        keys: keys?,
        origin: cx.origin(field.line),
    })
}

fn trusted_key(
    cx: &mut Cx,
    item: &Field,
) -> Option<(std::path::PathBuf, ed25519_dalek::VerifyingKey)> {
    let path = item.existing_file(cx)?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            item.error(cx, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    match ed25519_dalek::VerifyingKey::from_public_key_pem(&text) {
        Ok(key) => Some((path, key)),
        Err(e) => {
            item.error(
                cx,
                format!(
                    "{} is not an ed25519 public key in PEM ({e}); make one with \
                     `openssl pkey -in KEY.pem -pubout`",
                    path.display()
                ),
            );
            None
        }
    }
}

/// Whether `require_signature` came from a provider (etcd), where it is refused: who
/// may sign the modules is the local operator's decision, and a provider able to
/// write it could trust its own key. Says so at `field` when it did.
pub(crate) fn not_from_provider(cx: &mut Cx, field: &Field, from_provider: bool) -> bool {
    if from_provider {
        field.error(
            cx,
            "`require_signature` is read from the configuration directory only (who may \
             sign modules is not for a provider to say)",
        );
    }
    from_provider
}

/// Decodes a filter's `sha256:`, 64 hex digits (as `sha256sum` prints them), into
/// lower case. Only a module from disk can be pinned: a standard filter is part of
/// the binary, and changes with it.
pub(crate) fn sha256(cx: &mut Cx, field: &Field, builtin: bool) -> Option<String> {
    let text = field.string(cx)?;
    if builtin {
        field.error(
            cx,
            "a standard filter (`builtin`) is part of the binary and cannot be pinned; \
             pin modules given by `wasm: FILE`",
        );
        return None;
    }
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        field.error(
            cx,
            format!("expected 64 hex digits (as `sha256sum FILE` prints), found {text:?}"),
        );
        return None;
    }
    Some(text.to_ascii_lowercase())
}

/// Hands `policy` to every module from disk among `modules`, and names their
/// signature files in `named` so that the reload watcher sees a `.sig` replaced.
pub(crate) fn apply(
    policy: &Arc<SignaturePolicy>,
    modules: &mut [FilterConfig],
    named: &mut Vec<std::path::PathBuf>,
) {
    for m in modules {
        if let FilterSource::Wasm(path) = &m.source {
            m.integrity.signers = Some(Arc::clone(policy));
            named.push(signature_path(path));
        }
    }
}

/// Where a module's detached signature is: beside it, its name and `.sig`
/// (`auth.wasm` → `auth.wasm.sig`).
pub fn signature_path(module: &std::path::Path) -> std::path::PathBuf {
    let mut name = module.as_os_str().to_owned();
    name.push(".sig");
    name.into()
}
