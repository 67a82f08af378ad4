//! The standard filters, compiled from `filters/` to wasm32-wasip1 by `build.rs` and
//! embedded in the binary: `builtin: rate-limit` in a configuration names one of these.

/// Every builtin module by name, sorted by name.
static MODULES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/builtin_modules.rs"));

/// The wasm module of builtin filter `name` (e.g. `rate-limit`), if there is one.
pub fn module(name: &str) -> Option<&'static [u8]> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
}

/// The names of every builtin filter, sorted.
pub fn names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| MODULES.iter().map(|(n, _)| *n).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
