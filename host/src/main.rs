#![deny(unsafe_code)]

// mimalloc's thread-local free lists suit the thread-per-core workers, which allocate
// and free many small, short-lived objects per request (header maps, bodies, futures):
// glibc malloc cost ~7k instructions a request under the no-filter load (callgrind),
// mimalloc about 1k. Built without transparent huge pages (see Cargo.toml), its RSS
// stays within ~2 MiB of glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Freed memory back to the OS at once (alloc.rs says why); no throughput cost was
    // measurable under load.
    portcullis::alloc::purge_at_once();
    portcullis::cli::main()
}
