//! When the allocator (mimalloc, the binary's global allocator) gives freed memory back
//! to the OS.
//!
//! By default at once ([`purge_at_once`], set by `main`): the threads that compile
//! filter modules or build a configuration then sit idle, and with mimalloc's own
//! 10 ms delay they kept ~12 MiB resident for good (5 filters, 2 workers). The cost of
//! that is on a large reload: building 50,000 routes frees and takes back the same
//! pages over and over, each time returned to the OS and faulted in again.
//! [`HoldFreed`] keeps freed pages for reuse while a reload runs and gives them all
//! back when it ends (a 50,000-route reload: 17% faster, nothing kept afterwards).
//!
//! Both do nothing when the operator set `MIMALLOC_PURGE_DELAY`: theirs wins. In a
//! build whose global allocator is not mimalloc (the library's tests) they only tune
//! an allocator nothing uses.

use std::sync::Mutex;

// Links mimalloc's C library into every build of the crate (the tests' too), for the
// functions declared below; `main` makes it the global allocator.
use mimalloc as _;

// `mi_option_purge_delay` in mimalloc.h (the same index in its v2 and v3); the Rust
// bindings name no constant for it.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// How long a page freed during a reload may wait before it goes back to the OS: longer
/// than any reload, so that none does while one runs; [`HoldFreed`]'s end purges them.
const HELD_PURGE_DELAY_MS: std::ffi::c_long = 60_000;

#[expect(unsafe_code, reason = "declares functions of the allocator's C API")]
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_collect(force: bool);
}

/// How many [`HoldFreed`] are alive (reloads may overlap: the watcher's, a provider's).
static HOLDERS: Mutex<usize> = Mutex::new(0);

fn operator_chose() -> bool {
    std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
}

#[expect(
    unsafe_code,
    reason = "sets an option of the allocator, through its C API"
)]
fn set_purge_delay(ms: std::ffi::c_long) {
    // SAFETY: sets one integer option of the linked mimalloc; it reads the option at
    // each purge, from any thread.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// Freed memory goes back to the OS at once rather than at a thread's next allocation
/// 10 ms later, unless the operator set `MIMALLOC_PURGE_DELAY`. Called by `main` before
/// any thread starts.
pub fn purge_at_once() {
    if !operator_chose() {
        set_purge_delay(0);
    }
}

/// While alive, pages freed anywhere in the process stay with the allocator for reuse
/// instead of going back to the OS; when the last one is dropped, what is free is
/// returned at once, as [`purge_at_once`] sets.
#[must_use = "the hold ends when this is dropped"]
pub struct HoldFreed {
    active: bool,
}

impl HoldFreed {
    /// Starts holding freed pages (a no-op when the operator set the purge delay).
    pub fn start() -> Self {
        if operator_chose() {
            return Self { active: false };
        }
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if *holders == 0 {
            set_purge_delay(HELD_PURGE_DELAY_MS);
        }
        *holders += 1;
        Self { active: true }
    }
}

impl Drop for HoldFreed {
    #[expect(unsafe_code, reason = "asks the allocator to purge, through its C API")]
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        *holders = holders.saturating_sub(1);
        if *holders == 0 {
            // The calling thread's free pages and the process's arenas back to the OS
            // now (other threads' at their next purge). Before the delay is set back:
            // with a delay of 0, mimalloc skips the arenas' purge altogether, and what
            // was scheduled in them while the hold lasted would stay resident.
            // SAFETY: no arguments but a flag; safe to call from any thread.
            unsafe { mi_collect(true) };
            set_purge_delay(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(
        unsafe_code,
        reason = "reads an option of the allocator, through its C API"
    )]
    fn purge_delay() -> std::ffi::c_long {
        unsafe extern "C" {
            fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
        }
        // SAFETY: reads one integer option of the linked mimalloc.
        unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn freed_memory_is_held_until_the_last_hold_ends() {
        if operator_chose() {
            return;
        }
        let outer = HoldFreed::start();
        assert_eq!(purge_delay(), HELD_PURGE_DELAY_MS);
        let inner = HoldFreed::start();
        drop(inner);
        // Another reload still runs: its pages must not start going back now.
        assert_eq!(purge_delay(), HELD_PURGE_DELAY_MS);
        drop(outer);
    }
}
