//! Builds the test filters (`tests/filters`, a separate cargo workspace) to
//! wasm32-wasip1 once per test run, into its own target dir under the cargo target
//! dir, and hands out their paths.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding the built test filters (`probe.wasm`, …).
pub fn filters_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build)
}

/// The path of test filter `name` (e.g. `probe`).
pub fn filter(name: &str) -> PathBuf {
    filters_dir().join(format!("{name}.wasm"))
}

fn build() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // target/debug/deps/<test binary> -> target
    let target = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| root.join("target"));
    let dir = target.join("test-filters");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(root.join("tests/filters/Cargo.toml"))
        .arg("--target-dir")
        .arg(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap_or_else(|e| panic!("running cargo to build tests/filters: {e}"));
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("wasm32-wasip1") && err.contains("may not be installed") {
            panic!(
                "the wasm32-wasip1 target is missing: run `rustup target add wasm32-wasip1`\n{err}"
            );
        }
        panic!("building tests/filters failed:\n{err}");
    }
    dir.join("wasm32-wasip1/release")
}

/// Builds the test filter in `tests/filters/<dir>` that is not Rust (AssemblyScript,
/// C, ...) with its own `build.sh`, once per test run, and returns the module it wrote.
/// Panics with the script's output when the build fails (a missing toolchain says which
/// to install: `.ci/install-toolchains` installs them all).
pub fn scripted(dir: &str) -> PathBuf {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, PoisonError};
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held across the build: two tests never run one script at once.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(module) = built.get(dir) {
        return module.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/filters");
    let script = root.join(dir).join("build.sh");
    let out = Command::new("sh")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}); install the toolchains with .ci/install-toolchains\n--- stdout\n{}\n--- stderr\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let module = root.join(dir).join("filter.wasm");
    built.insert(dir.to_string(), module.clone());
    module
}
