//! `portcullis compile`: modules compiled ahead of time into the disk cache — while
//! building an image, say — so that the first start finds them compiled.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use super::disk_cache::{self, DiskCache};
use super::engine::{self, ModuleOrigin, Shared};
use super::state::AbiVersion;

/// A module's bytes, or why they cannot be had.
type Bytes = Result<Cow<'static, [u8]>, String>;

/// Compiles every file of `files` (and, with `builtins`, every standard filter) into
/// the module cache at `cache_dir` (default: the one `run` uses without a
/// `module_cache.dir`), checking that each speaks proxy-wasm and links against this
/// host. One line per module on stdout saying what was written where; a module that
/// fails is a line on stderr and exit code 1.
pub fn run(files: &[PathBuf], builtins: bool, cache_dir: Option<&Path>) -> ExitCode {
    let prepared = engine::shared().and_then(|shared| {
        let disk = disk_cache::for_compile(cache_dir)?;
        Ok((shared, disk))
    });
    let (shared, disk) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut inputs: Vec<(String, Bytes)> = files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).map_err(|e| format!("cannot read it: {e}"));
            (f.display().to_string(), bytes.map(Cow::Owned))
        })
        .collect();
    if builtins {
        for name in crate::builtin::names() {
            let bytes = crate::builtin::module(name).ok_or_else(|| "not embedded".to_string());
            inputs.push((format!("builtin:{name}"), bytes.map(Cow::Borrowed)));
        }
    }
    let mut failed = false;
    for (label, bytes) in inputs {
        match bytes.and_then(|b| compile_one(shared, &disk, &b)) {
            Ok(done) => println!("{label}: {done}"),
            Err(e) => {
                eprintln!("{label}: {e}");
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

/// Puts one module in the cache; says what was done.
fn compile_one(shared: &Shared, disk: &DiskCache, bytes: &[u8]) -> Result<String, String> {
    let started = Instant::now();
    let digest = engine::digest(bytes);
    let (module, origin) = shared.module(bytes, &digest, Some(disk))?;
    let compiled = shared.prepare(module, origin, digest)?;
    let abi = match compiled.abi {
        AbiVersion::V0_1_0 => "0.1.0",
        AbiVersion::V0_2_0 => "0.2.0",
        AbiVersion::V0_2_1 => "0.2.1",
        AbiVersion::V0_2_100 => "0.2.100 (Higress)",
        AbiVersion::HttpWasm => "http-wasm (http_handler)",
    };
    let path = match origin {
        ModuleOrigin::DiskCache => {
            let path = disk.entry_path(&digest);
            return Ok(format!(
                "proxy-wasm {abi}, already compiled: {}",
                path.display()
            ));
        }
        ModuleOrigin::Compiler => disk.store(&digest, compiled.pre.module())?,
    };
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    Ok(format!(
        "proxy-wasm {abi}, compiled in {} ms: {} ({:.1} MiB)",
        started.elapsed().as_millis(),
        path.display(),
        size as f64 / (1024.0 * 1024.0)
    ))
}
