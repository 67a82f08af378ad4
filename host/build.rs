//! Builds the standard filters (`filters/`, a separate cargo workspace) to
//! wasm32-wasip1 and lays out `builtin_modules.rs` in OUT_DIR, which
//! `src/builtin.rs` includes: every `builtin:` filter is embedded in the binary.
//!
//! The nested cargo gets its own target dir (`<cargo target dir>/wasm`, shared by
//! every profile of the host) and a cleaned environment: the variables cargo sets for
//! build scripts and for the outer build (rustflags, target, jobserver, clippy's
//! wrapper) would otherwise leak into a build for another target.

use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip1";

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let filters = root.join("filters");
    let out_dir = PathBuf::from(env("OUT_DIR"));

    let names = filter_crates(&filters);
    watch(&root, &filters, &names);

    // The fuzz build (`fuzzing` feature, on nightly) runs no wasm, and the nightly it
    // uses may have no wasm target to install: it embeds no standard filter.
    if std::env::var_os("CARGO_FEATURE_FUZZING").is_some() {
        if let Err(e) = std::fs::write(out_dir.join("builtin_modules.rs"), "&[]") {
            println!("cargo::error=cannot write builtin_modules.rs: {e}");
        }
        return;
    }

    if !target_installed() && !install_target() {
        println!(
            "cargo::error=the Rust target {WASM_TARGET} is not installed; the standard \
             filters are built for it. Install it with: rustup target add {WASM_TARGET}"
        );
        return;
    }

    let target_dir = cargo_target_dir(&out_dir).join("wasm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        WASM_TARGET,
        "--manifest-path",
    ])
    .arg(filters.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    clean_env(&mut cmd);
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            println!("cargo::error=cannot run cargo to build the standard filters: {e}");
            return;
        }
    };
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        println!(
            "cargo::error=building the standard filters (filters/) for {WASM_TARGET} \
             failed; the nested cargo's output is above"
        );
        return;
    }

    let built = target_dir.join(WASM_TARGET).join("release");
    let mut table = String::from("&[\n");
    for name in &names {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let dest = out_dir.join(&file);
        // A new file, never a write into the old one: a target dir seeded with
        // `cp -al` shares this file with other checkouts' builds, and writing through
        // the hard link would swap their embedded filters for ours.
        let _ = std::fs::remove_file(&dest);
        if let Err(e) = std::fs::copy(built.join(&file), &dest) {
            println!("cargo::error=filter {name} was not built ({file}: {e})");
            return;
        }
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?}) as &[u8]),\n",
            dest.display().to_string()
        ));
    }
    table.push(']');
    let _ = std::fs::remove_file(out_dir.join("builtin_modules.rs"));
    if let Err(e) = std::fs::write(out_dir.join("builtin_modules.rs"), table) {
        println!("cargo::error=cannot write builtin_modules.rs: {e}");
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// The builtin filters: every directory of `filters/` with a Cargo.toml, by name.
fn filter_crates(filters: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(filters)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Sources only: a `filters/target` left by someone's `cargo test` must not make
/// every host build rebuild the filters.
fn watch(root: &Path, filters: &Path, names: &[String]) {
    let mut paths = vec![
        filters.join("Cargo.toml"),
        filters.join("Cargo.lock"),
        root.join("sdk").join("src"),
        root.join("sdk").join("Cargo.toml"),
    ];
    for name in names {
        paths.push(filters.join(name).join("Cargo.toml"));
        paths.push(filters.join(name).join("src"));
    }
    for p in paths {
        // A directory is scanned recursively: so only source directories are named.
        println!("cargo::rerun-if-changed={}", p.display());
    }
}

fn target_installed() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir()
}

/// Adds the wasm target with rustup, for the toolchain this build runs on: rustup does
/// not add the targets `rust-toolchain.toml` lists to a toolchain already installed,
/// so a fresh checkout's `cargo run` would otherwise stop here. Says so as a warning;
/// false when there is no rustup or it failed (the caller then says what to run).
fn install_target() -> bool {
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", WASM_TARGET]);
    if let Some(toolchain) = std::env::var_os("RUSTUP_TOOLCHAIN") {
        cmd.arg("--toolchain").arg(toolchain);
    }
    match cmd.output() {
        Ok(out) if out.status.success() && target_installed() => {
            println!(
                "cargo::warning=the Rust target {WASM_TARGET} was missing; added it with \
                 `rustup target add {WASM_TARGET}` (the standard filters are built for it)"
            );
            true
        }
        Ok(out) => {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            false
        }
        Err(_) => false,
    }
}

/// The cargo target dir holding OUT_DIR (`<dir>[/<triple>]/<profile>/build/<pkg>/out`):
/// the first ancestor with cargo's `CACHEDIR.TAG`.
fn cargo_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("target"))
}

/// Keeps what locates the toolchain, the registry and the network; drops what
/// configures the outer build.
fn clean_env(cmd: &mut Command) {
    const KEEP: &[&str] = &[
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let drop = (key.starts_with("CARGO")
            && key != "CARGO"
            && !KEEP.iter().any(|k| key.starts_with(k)))
            || matches!(
                key,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CLIPPY_ARGS"
                    | "MAKEFLAGS"
                    | "MFLAGS"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC_LINKER"
                    | "__CARGO_FIX_PLZ"
            );
        if drop {
            cmd.env_remove(key);
        }
    }
}
