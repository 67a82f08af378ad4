#![deny(unsafe_code)]

// mimalloc's thread-local free lists suit the thread-per-core workers, which allocate
// and free many small, short-lived objects per request (header maps, bodies, futures):
// glibc malloc cost ~7k instructions a request under the no-filter load (callgrind),
// mimalloc about 1k. Built without transparent huge pages (see Cargo.toml), its RSS
// stays within ~2 MiB of glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// `mi_option_purge_delay` in mimalloc.h (the same index in its v2 and v3); the Rust
// bindings name no constant for it.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

#[expect(unsafe_code, reason = "declares a function of the allocator's C API")]
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

#[expect(
    unsafe_code,
    reason = "sets an option of the allocator, through its C API"
)]
fn main() -> std::process::ExitCode {
    // Memory a thread frees goes back to the OS at once rather than 10 ms later at
    // that thread's next allocation: the threads that compile filter modules then sit
    // idle and kept ~12 MiB resident for good (measured with 5 filters and 2
    // workers). No throughput cost was measurable under load. mimalloc's own
    // `MIMALLOC_PURGE_DELAY`, when set, wins: a large routing table reloads faster
    // when the memory one reload frees stays for the next (docs/operations.md).
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator linked into this binary.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    portcullis::cli::main()
}
