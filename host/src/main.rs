// mimalloc's thread-local free lists suit the thread-per-core workers, which allocate
// and free many small, short-lived objects per request (header maps, bodies, futures);
// glibc malloc's arena bookkeeping showed as a few percent of the proxy's instructions.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
