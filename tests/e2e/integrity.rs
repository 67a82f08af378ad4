//! Module integrity: a filter entry's `sha256` pin and `require_signature`. A module
//! that fails either is refused, at start (nothing is served) and on reload (the last
//! good configuration keeps serving), with an error naming file, line and field.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::support::*;

/// A key pair in `conf`: `NAME.pem` (private, PKCS#8) and `NAME.pub` (public, SPKI),
/// the files `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write.
fn key_pair(conf: &ConfDir, name: &str, seed: u8) -> PathBuf {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap_or_else(|e| panic!("{e}"));
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap_or_else(|e| panic!("{e}"));
    conf.write(&format!("keys/{name}.pub"), public);
    conf.write(&format!("keys/{name}.pem"), private.as_bytes())
}

/// `portcullis sign --key KEY MODULE`, which must succeed.
fn sign(key: &Path, module: &Path) {
    let (code, out, err) = run_to_end([
        "sign".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        module.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "portcullis sign failed: {out}{err}");
    assert!(out.contains("signed"), "{out}");
}

/// The probe filter's module, built from tests/filters.
fn probe_module() -> Vec<u8> {
    std::fs::read(crate::wasm_build::filter("probe"))
        .unwrap_or_else(|e| panic!("the probe filter: {e}"))
}

/// The probe filter's module, with a custom section appended: still a valid module
/// that would load, but not the bytes that were pinned or signed.
fn tampered(module: &[u8]) -> Vec<u8> {
    let name = b"tampered";
    let mut out = module.to_vec();
    // Custom section: id 0, size, name length, name, payload.
    out.extend([0, (1 + name.len() + 1) as u8, name.len() as u8]);
    out.extend(name);
    out.push(1);
    out
}

/// The configuration: route `r` through filter `probe` (it sets `x-seen-sig`);
/// `signed` adds `require_signature` trusting `keys/trusted.pub`, `pin` a `sha256`.
/// The filter entry is on line 7, its `wasm` on line 8 and `sha256` on line 9.
fn conf_text(signed: bool, pin: Option<&str>) -> String {
    let mut text = String::from(
        "admin: { address: 127.0.0.1:0 }
listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - { name: r, filters: [probe], upstream: echo@internal }
filters:
  # the module under test
  - name: probe
    wasm: modules/probe.wasm
",
    );
    if let Some(pin) = pin {
        text.push_str(&format!("    sha256: {pin}\n"));
    }
    text.push_str("    config: \"seen:sig\"\n");
    if signed {
        text.push_str("require_signature:\n  trusted_keys: [keys/trusted.pub]\n");
    }
    text
}

/// Whether a request went through the probe filter (200 and its header).
async fn filtered(proxy: &Proxy) -> bool {
    let resp = get_with(&proxy.url("web", "/"), &[]).await;
    let status = resp.status();
    let echo: serde_json::Value = resp.json().await.unwrap_or_default();
    status == 200 && echo["headers"]["x-seen-sig"].is_string()
}

/// `portcullis check` on `conf`: its exit code and stderr.
fn check(conf: &ConfDir) -> (Option<i32>, String) {
    let (code, _, err) = run_to_end(["check".as_ref(), "--conf".as_ref(), conf.path()]);
    (code, err)
}

#[test]
fn a_tampered_or_wrongly_signed_module_is_refused_at_start() {
    let module = probe_module();
    let conf = ConfDir::new();
    let path = conf.write("modules/probe.wasm", &module);
    let trusted = key_pair(&conf, "trusted", 1);
    let stranger = key_pair(&conf, "stranger", 2);
    let digest = hex::encode(Sha256::digest(&module));

    // Pinned, and the file is another module.
    conf.write("portcullis.yaml", conf_text(false, Some(&digest)));
    conf.write("modules/probe.wasm", tampered(&module));
    let (code, err) = check(&conf);
    assert_eq!(code, Some(1), "a tampered pinned module must fail: {err}");
    assert!(
        err.contains("portcullis.yaml:9: filters.probe.sha256:")
            && err.contains(&format!("not the pinned {digest}")),
        "expected the pin's file, line and field: {err}"
    );
    let started = Proxy::try_start(&conf);
    assert!(started.is_err(), "run must refuse it too");

    // Signatures required; no signature at all.
    conf.write("modules/probe.wasm", &module);
    conf.write("portcullis.yaml", conf_text(true, None));
    let (code, err) = check(&conf);
    assert_eq!(code, Some(1), "an unsigned module must fail: {err}");
    assert!(
        err.contains("portcullis.yaml:8: filters.probe.wasm:")
            && err.contains("probe.wasm.sig cannot be read"),
        "expected the missing signature named at `wasm`: {err}"
    );

    // Signed by a key the configuration does not trust.
    sign(&stranger, &path);
    let (code, err) = check(&conf);
    assert_eq!(code, Some(1), "a wrongly signed module must fail: {err}");
    assert!(
        err.contains("portcullis.yaml:8: filters.probe.wasm:")
            && err.contains("does not verify with any trusted key"),
        "{err}"
    );
    let started = Proxy::try_start(&conf);
    assert!(
        started
            .as_ref()
            .is_err_and(|e| e.contains("does not verify with any trusted key")),
        "run must refuse it, saying why: {:?}",
        started.err()
    );

    // Signed by the trusted key, then changed.
    sign(&trusted, &path);
    conf.write("modules/probe.wasm", tampered(&module));
    let (code, err) = check(&conf);
    assert_eq!(
        code,
        Some(1),
        "a module changed after signing must fail: {err}"
    );
    assert!(
        err.contains("does not verify with any trusted key"),
        "{err}"
    );

    // The signed bytes, pinned too: it loads.
    conf.write("modules/probe.wasm", &module);
    conf.write("portcullis.yaml", conf_text(true, Some(&digest)));
    let (code, err) = check(&conf);
    assert_eq!(code, Some(0), "the signed, pinned module must load: {err}");
}

#[tokio::test]
async fn a_tampered_or_wrongly_signed_module_is_refused_on_reload() {
    let module = probe_module();
    let conf = ConfDir::new();
    let path = conf.write("modules/probe.wasm", &module);
    let trusted = key_pair(&conf, "trusted", 1);
    sign(&trusted, &path);
    conf.write("portcullis.yaml", conf_text(true, None));
    let proxy = Proxy::start(&conf);
    assert!(filtered(&proxy).await, "the signed module serves");

    // Each change below is made so that every state the watcher may catch on the
    // way is a refused one. The module replaced by other bytes:
    conf.write("modules/probe.wasm", tampered(&module));
    let needle = "portcullis.yaml:8: filters.probe.wasm: the signature";
    let status = proxy
        .wait_for_reload_error(needle, &serde_json::Value::Null)
        .await;
    assert_eq!(status["generation"], 1, "{status:#}");
    assert!(filtered(&proxy).await, "the last good config keeps serving");

    // A signature by a key not trusted, then the right module back under it.
    let stranger = SigningKey::from_bytes(&[2; 32]);
    conf.write("modules/probe.wasm.sig", stranger.sign(&module).to_bytes());
    conf.write("modules/probe.wasm", &module);
    proxy.reload();
    let since = &status["last_reload"]["at"];
    let status = proxy.wait_for_reload_error(needle, since).await;
    assert_eq!(status["generation"], 1, "{status:#}");
    assert!(filtered(&proxy).await, "the last good config keeps serving");

    // A pin the module does not match, then the trusted signature back.
    conf.write("portcullis.yaml", conf_text(true, Some(&"0".repeat(64))));
    sign(&trusted, &path);
    proxy.reload();
    let since = &status["last_reload"]["at"];
    let status = proxy
        .wait_for_reload_error("filters.probe.sha256", since)
        .await;
    assert_eq!(status["generation"], 1, "{status:#}");
    assert!(filtered(&proxy).await, "the last good config keeps serving");

    // Signed by the trusted key and pinned right: the reload goes through.
    let digest = hex::encode(Sha256::digest(&module));
    conf.write("portcullis.yaml", conf_text(true, Some(&digest)));
    proxy.wait_for_generation(2).await;
    assert!(filtered(&proxy).await);
}

/// The documented way without `portcullis sign`: OpenSSL makes the key pair and the
/// signature (`openssl pkeyutl -sign -rawin`), the proxy verifies it.
#[test]
fn a_module_signed_with_openssl_loads() {
    let module = probe_module();
    let conf = ConfDir::new();
    let path = conf.write("modules/probe.wasm", &module);
    let key = conf.path().join("keys/trusted.pem");
    let _ = std::fs::create_dir_all(conf.path().join("keys"));
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run openssl ({e}): install it (Debian package `openssl`)")
            });
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    openssl(&[
        os("genpkey"),
        os("-algorithm"),
        os("ed25519"),
        os("-out"),
        key.as_os_str(),
    ]);
    let public = conf.path().join("keys/trusted.pub");
    openssl(&[
        os("pkey"),
        os("-in"),
        key.as_os_str(),
        os("-pubout"),
        os("-out"),
        public.as_os_str(),
    ]);
    let sig = conf.path().join("modules/probe.wasm.sig");
    openssl(&[
        os("pkeyutl"),
        os("-sign"),
        os("-rawin"),
        os("-inkey"),
        key.as_os_str(),
        os("-in"),
        path.as_os_str(),
        os("-out"),
        sig.as_os_str(),
    ]);
    conf.write("portcullis.yaml", conf_text(true, None));
    let (code, err) = check(&conf);
    assert_eq!(code, Some(0), "an openssl signature must verify: {err}");
}
