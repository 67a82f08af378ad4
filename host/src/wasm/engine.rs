//! The process's one wasmtime engine, its epoch ticker, the host-function linker, and
//! the module cache (compiled once per content hash; in memory, in front of the
//! [`disk_cache`](super::disk_cache)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Val, ValType,
};

use super::disk_cache::{self, DiskCache};
use super::state::{AbiVersion, HostState, Status};
use super::{abi, httpwasm, wasi};

/// How often the epoch advances: the granularity of callback deadlines and of the
/// yields that let a long callback share its worker.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long a module no filter uses any more stays compiled. Reloads that bring a
/// filter back (two configs taking turns, a revert, a filter taken off a route for a
/// while) then skip the compile, which costs hundreds of milliseconds of one core.
const IDLE_KEEP: Duration = Duration::from_secs(600);

/// At most this many unused modules stay compiled, the least recently used going
/// first, so that a stream of changed modules cannot grow memory without bound.
const IDLE_MAX: usize = 16;

/// The export by which a module promises that only its header callbacks (and context
/// creation and deletion) do anything; see docs/filters-abi.md.
const HEADERS_ONLY: &str = "portcullis_headers_only";

/// The shared engine and what every module is linked against.
pub(crate) struct Shared {
    pub engine: Engine,
    linker: Linker<HostState>,
    cache: DashMap<[u8; 32], Cached>,
}

/// A module in the cache, and when a configuration last asked for it.
struct Cached {
    compiled: Arc<Compiled>,
    last_used: Instant,
}

impl Cached {
    /// Whether only the cache holds it: no plugin of any live snapshot uses it.
    fn idle(&self) -> bool {
        Arc::strong_count(&self.compiled) == 1
    }
}

/// A module compiled and pre-linked: instantiating it is cheap.
pub(crate) struct Compiled {
    pub pre: InstancePre<HostState>,
    pub abi: AbiVersion,
    /// The module exports `portcullis_headers_only`: its body, trailer, `on_done` and
    /// `on_log` callbacks do nothing, so the host does not enter it for them.
    pub headers_only: bool,
    /// Hex sha256 of the module bytes.
    pub hash: String,
    /// Whether cranelift compiled it in this process or it came from the disk cache.
    pub origin: ModuleOrigin,
}

/// Where a module's compiled code came from when this process first needed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleOrigin {
    /// Compiled by cranelift.
    Compiler,
    /// Loaded from the disk cache, compiled by an earlier run (or `portcullis compile`).
    DiskCache,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

/// Set by [`debug_engine`] before the engine is made; read once, when it is.
static DEBUG: AtomicBool = AtomicBool::new(false);

/// Makes the process's engine one a debugger can step through (`filter-test --debug`):
/// modules are compiled unoptimised with their DWARF translated to native code and
/// announced through the GDB JIT interface, so `gdb`/`lldb` break on the filter's own
/// source lines. Fails when the engine already exists. Never called by `portcullis
/// run`: the proxy's engine pays nothing for it.
pub fn debug_engine() -> Result<(), String> {
    if SHARED.get().is_some() {
        return Err("the wasm engine was made before debugging was asked for".into());
    }
    DEBUG.store(true, Ordering::Relaxed);
    Ok(())
}

/// The process's engine, made on first use (with its ticker thread).
pub(crate) fn shared() -> Result<&'static Shared, String> {
    SHARED.get_or_init(make).as_ref().map_err(Clone::clone)
}

/// Whether the engine is (or will be) made for a debugger, by [`debug_engine`].
pub(crate) fn debugging() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

fn make() -> Result<Shared, String> {
    let engine = match Engine::new(&config(true)) {
        Ok(e) => e,
        Err(e) => {
            // Some sandboxes refuse the pooling allocator's address-space reservation;
            // on-demand allocation is slower to instantiate but otherwise the same.
            tracing::warn!(error = %e, "wasm: pooling allocator unavailable, using on-demand");
            Engine::new(&config(false)).map_err(|e| format!("wasm engine: {e}"))?
        }
    };
    let mut linker = Linker::new(&engine);
    abi::link(&mut linker).map_err(|e| format!("wasm linker: {e}"))?;
    httpwasm::link(&mut linker).map_err(|e| format!("wasm linker: {e}"))?;
    wasi::link(&mut linker).map_err(|e| format!("wasm linker: {e}"))?;
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(|e| format!("wasm epoch ticker: {e}"))?;
    Ok(Shared {
        engine,
        linker,
        cache: DashMap::new(),
    })
}

fn config(pooling: bool) -> Config {
    let mut cfg = Config::new();
    if debugging() {
        cfg.debug_info(true);
        // Optimised code keeps few variables and reorders lines: unoptimised steps
        // line by line as the source reads.
        cfg.cranelift_opt_level(wasmtime::OptLevel::None);
    }
    cfg.epoch_interruption(true);
    cfg.memory_init_cow(true);
    // Modules compile on the thread that builds the configuration: at startup, and on
    // the reload thread, which runs below the workers' priority. Compiling on rayon's
    // pool instead halved startup with five filters (1.6 s → 0.8 s) but competed with
    // the workers at full priority during a reload and left ~6 MiB resident in the
    // pool threads' heaps for good.
    cfg.parallel_compilation(false);
    if pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(2000)
            .total_memories(2000)
            .total_tables(2000)
            .total_stacks(2000)
            // Every callback runs on a pooled fiber stack; keeping the top of it
            // resident saves an madvise and page faults per call.
            .async_stack_keep_resident(64 * 1024)
            // No linear memory stays resident in a freed slot: reloads keep
            // allocating VMs in slots never used before (the pool prefers cold
            // slots up to its warm-slot budget, and affinity is per shard), so a
            // keep-resident of 1 MiB grew RSS by a MiB every few reloads, up to
            // ~100 MiB. Freed memory is decommitted and a reused slot faults its
            // pages back in from the copy-on-write image, as wasmtime's default does.
            .linear_memory_keep_resident(0);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    cfg
}

impl Shared {
    /// Compiles `bytes` (or finds it compiled, in memory or on disk), checks it speaks
    /// proxy-wasm, and links it. The error says what is wrong with the module.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<Compiled>, String> {
        let digest = digest(bytes);
        if let Some(mut hit) = self.cache.get_mut(&digest) {
            hit.last_used = Instant::now();
            return Ok(Arc::clone(&hit.compiled));
        }
        let disk = disk_cache::current();
        let (module, origin) = self.module(bytes, &digest, disk.as_deref())?;
        let compiled = Arc::new(self.prepare(module, origin, digest)?);
        if let Some(disk) = &disk
            && origin == ModuleOrigin::Compiler
        {
            // A failure is logged by the cache: this module still serves.
            let _ = disk.store(&digest, compiled.pre.module());
        }
        self.evict_idle();
        // Another thread may have compiled the same bytes meanwhile: keep one.
        let entry = self.cache.entry(digest).or_insert_with(|| Cached {
            compiled,
            last_used: Instant::now(),
        });
        Ok(Arc::clone(&entry.compiled))
    }

    /// The module of `bytes` (sha256 `digest`): from `disk` when it holds a sound entry,
    /// else compiled (and not stored: the caller stores it once it proved usable).
    pub(crate) fn module(
        &self,
        bytes: &[u8],
        digest: &[u8; 32],
        disk: Option<&DiskCache>,
    ) -> Result<(Module, ModuleOrigin), String> {
        if let Some(module) = disk.and_then(|d| d.load(&self.engine, digest)) {
            return Ok((module, ModuleOrigin::DiskCache));
        }
        let started = Instant::now();
        let module = match super::fuse::fuse(bytes) {
            // A fused module wasmtime refuses would be our bug, not the module's: the
            // module as it came still serves, callback by callback.
            Some(fused) => Module::new(&self.engine, &fused).or_else(|e| {
                tracing::warn!(
                    module = %hex::encode(digest),
                    "wasm: the module with fused entries was refused ({}); compiling it as it is",
                    root_cause(&e)
                );
                Module::new(&self.engine, bytes)
            }),
            None => Module::new(&self.engine, bytes),
        }
        .map_err(|e| format!("not a valid wasm module: {}", root_cause(&e)))?;
        tracing::info!(
            module = %hex::encode(digest),
            ms = started.elapsed().as_millis() as u64,
            "wasm: module compiled"
        );
        Ok((module, ModuleOrigin::Compiler))
    }

    /// Checks that `module` speaks proxy-wasm and links it.
    pub(crate) fn prepare(
        &self,
        module: Module,
        origin: ModuleOrigin,
        digest: [u8; 32],
    ) -> Result<Compiled, String> {
        let http_wasm = module
            .imports()
            .any(|i| i.module() == httpwasm::IMPORT_MODULE);
        let abi = if http_wasm {
            AbiVersion::HttpWasm
        } else {
            abi_version(&module)?
        };
        refuse_unsupported(&module)?;
        // To the chain an http-wasm filter is headers-only: it never enters the
        // guest for body or trailer phases (bodies are collected whole for it).
        let headers_only = http_wasm
            || module
                .exports()
                .any(|e| e.name() == HEADERS_ONLY && matches!(e.ty(), ExternType::Func(_)));
        let pre = self.link(&module)?;
        Ok(Compiled {
            pre,
            abi,
            headers_only,
            hash: hex::encode(digest),
            origin,
        })
    }

    /// Drops the unused modules past [`IDLE_KEEP`], then the least recently used
    /// unused ones beyond [`IDLE_MAX`].
    fn evict_idle(&self) {
        self.cache
            .retain(|_, c| !(c.idle() && c.last_used.elapsed() > IDLE_KEEP));
        let mut idle: Vec<([u8; 32], Instant)> = self
            .cache
            .iter()
            .filter(|c| c.idle())
            .map(|c| (*c.key(), c.last_used))
            .collect();
        if idle.len() <= IDLE_MAX {
            return;
        }
        idle.sort_by_key(|(_, at)| *at);
        for (digest, _) in &idle[..idle.len() - IDLE_MAX] {
            self.cache.remove_if(digest, |_, c| c.idle());
        }
    }

    fn link(&self, module: &Module) -> Result<InstancePre<HostState>, String> {
        let mut linker = self.linker.clone();
        for import in module.imports() {
            let ExternType::Func(ty) = import.ty() else {
                continue;
            };
            let (m, n) = (import.module(), import.name());
            let errno = match m {
                // WASI functions we do not offer (files, sockets) answer ENOSYS.
                "wasi_snapshot_preview1" | "wasi_unstable" => 52,
                // ABI functions of other generations answer UNIMPLEMENTED.
                "env" if n.starts_with("proxy_") => Status::Unimplemented.into(),
                // Anything else fails to link below, with the import named.
                _ => continue,
            };
            let results: Vec<ValType> = ty.results().collect();
            if !matches!(results.as_slice(), [] | [ValType::I32]) {
                continue;
            }
            // Fails (harmlessly) when the host already provides the function.
            let _ = linker.func_new(m, n, ty, move |_, _, out| {
                if let Some(slot) = out.first_mut() {
                    *slot = Val::I32(errno);
                }
                Ok(())
            });
        }
        linker
            .instantiate_pre(module)
            .map_err(|e| format!("cannot link the module: {}", root_cause(&e)))
    }
}

/// The cache key of a module: the sha256 of its bytes.
pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The hex sha256 of `bytes`, as [`Compiled::hash`] holds it.
pub(crate) fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(digest(bytes))
}

fn abi_version(module: &Module) -> Result<AbiVersion, String> {
    let mut found = None;
    let mut unknown = None;
    for export in module.exports() {
        let v = match export.name() {
            "proxy_abi_version_0_2_100" => AbiVersion::V0_2_100,
            "proxy_abi_version_0_2_1" => AbiVersion::V0_2_1,
            "proxy_abi_version_0_2_0" => AbiVersion::V0_2_0,
            "proxy_abi_version_0_1_0" => AbiVersion::V0_1_0,
            n if n.starts_with("proxy_abi_version_") => {
                unknown = Some(n.to_string());
                continue;
            }
            _ => continue,
        };
        found = Some(found.map_or(v, |f: AbiVersion| if v > f { v } else { f }));
    }
    if let Some(v) = found {
        return Ok(v);
    }
    Err(match unknown {
        Some(name) => format!(
            "unsupported proxy-wasm ABI: the module exports {name}; Portcullis hosts \
             proxy_abi_version_0_1_0, 0_2_0, 0_2_1 and 0_2_100 (Higress)"
        ),
        None => "not a proxy-wasm module: it exports no proxy_abi_version_* function (nor \
                 an http-wasm module: it imports nothing from http_handler)"
            .into(),
    })
}

/// Host functions of other hosts' ABI variants that Portcullis cannot stand in for:
/// a module importing one is refused, naming it, rather than loaded to misbehave.
const REFUSED_IMPORTS: &[(&str, &str)] = &[
    (
        "proxy_inject_encoded_data_to_filter_chain",
        "Higress's body injection; filters here change bodies in their own body callbacks",
    ),
    (
        "proxy_set_upstream_override_host",
        "Higress's target override; the route's upstream picks its target here",
    ),
];

/// Refuses a module that imports one of [`REFUSED_IMPORTS`].
fn refuse_unsupported(module: &Module) -> Result<(), String> {
    for import in module.imports() {
        if import.module() != "env" {
            continue;
        }
        if let Some((name, why)) = REFUSED_IMPORTS.iter().find(|(n, _)| *n == import.name()) {
            return Err(format!(
                "the module imports env.{name} ({why}): Portcullis cannot run it"
            ));
        }
    }
    Ok(())
}

/// Every message of a wasmtime error's chain, outermost first, joined with `: ` (the
/// outer one alone says only "failed to compile"; the cause is further in).
pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        msg = format!("{msg}: {cause}");
    }
    msg
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_module_no_config_uses_stays_compiled_for_the_next_reload() {
        let shared = shared().unwrap();
        let bytes = crate::wasm::tests::probe_wasm();
        let first = shared.compile(bytes).unwrap();
        let hash = first.hash.clone();
        // The last plugin using it is gone, as after a reload that dropped the filter.
        // (Other tests may still hold it; the cache must keep it either way.)
        drop(first);
        let kept = shared.cache.iter().any(|c| c.compiled.hash == hash);
        assert!(kept, "an unused module was dropped from the cache at once");
        let again = shared.compile(bytes).unwrap();
        assert_eq!(again.hash, hash);
    }
}
