//! The priority a reload runs at. A reload shares the workers' cores, so a long one
//! (tens of thousands of routes) must not make requests queue behind it; but the usual
//! reload needs a couple of milliseconds of CPU, and a thread kept 10 nice steps below
//! a busy worker waits tens of milliseconds for each of them (on a saturated core it
//! gets about a tenth of it). So a reload starts at the workers' priority, on a thread
//! of its own, and is lowered [`YIELD_NICE_STEPS`] once it has used
//! [`FULL_PRIORITY_CPU`] of CPU time: a short reload goes live at once, a long one
//! costs the workers at most that much before it yields.
//!
//! The thread is new for every reload because a lowered thread cannot be raised again
//! without `CAP_SYS_NICE`.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// CPU time a reload may use at the workers' priority before it is lowered.
pub(crate) const FULL_PRIORITY_CPU: Duration = Duration::from_millis(10);

/// How many nice steps below the workers a reload runs once past [`FULL_PRIORITY_CPU`].
pub(crate) const YIELD_NICE_STEPS: libc::c_int = 10;

/// How often the watcher looks at the reload's CPU time meanwhile.
const CHECK_EVERY: Duration = Duration::from_millis(2);

/// How a reload ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran {
    /// At the workers' priority throughout.
    AtFullPriority,
    /// Lowered once it had used [`FULL_PRIORITY_CPU`].
    Lowered,
    /// On the caller's thread, at its priority: no thread could be started.
    Inline,
}

/// What the reload thread tells the watcher as it starts: how to find its CPU time and
/// how to name it to `setpriority`.
struct Started {
    tid: libc::pid_t,
    clock: Option<libc::clockid_t>,
}

/// Runs `job` on a thread of its own at the caller's priority, lowering it
/// [`YIELD_NICE_STEPS`] once it has used [`FULL_PRIORITY_CPU`] of CPU, and returns once
/// it is done. A panic in `job` is logged, not passed on: the watcher goes on watching.
pub(crate) fn run<F: FnOnce() + Send>(job: F) -> Ran {
    let mut job = Some(job);
    let ran = std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Started>();
        let slot = &mut job;
        let spawned = std::thread::Builder::new()
            .name("config-reload".into())
            .spawn_scoped(scope, move || {
                let _ = tx.send(Started::now());
                if let Some(job) = slot.take() {
                    job();
                }
                // `tx` is dropped here: the watcher sees the reload done.
            });
        let handle = match spawned {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!("cannot start a reload thread ({e}); reloading on the watcher's");
                return None;
            }
        };
        let ran = watch_cpu(&rx);
        if handle.join().is_err() {
            tracing::error!("a reload panicked; watching on");
        }
        Some(ran)
    });
    match (ran, job.take()) {
        (Some(ran), _) => ran,
        (None, Some(job)) => {
            job();
            Ran::Inline
        }
        (None, None) => Ran::Inline,
    }
}

/// Waits for the reload thread to finish, lowering it if it uses up its budget.
fn watch_cpu(rx: &mpsc::Receiver<Started>) -> Ran {
    let Ok(started) = rx.recv() else {
        return Ran::AtFullPriority;
    };
    loop {
        match rx.recv_timeout(CHECK_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            // Done (the sender is dropped when the job returns or panics).
            Ok(_) | Err(RecvTimeoutError::Disconnected) => return Ran::AtFullPriority,
        }
        // No clock to read: the thread is gone (its id may already name another).
        let Some(used) = started.clock.and_then(cpu_time) else {
            while rx.recv().is_ok() {}
            return Ran::AtFullPriority;
        };
        if used >= FULL_PRIORITY_CPU {
            lower(started.tid);
            // Nothing more to decide: wait for the end.
            while rx.recv().is_ok() {}
            return Ran::Lowered;
        }
    }
}

impl Started {
    /// The calling thread's id and CPU clock.
    #[expect(
        unsafe_code,
        reason = "gettid, pthread_self and pthread_getcpuclockid have no safe wrapper in libc"
    )]
    fn now() -> Self {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: gettid and pthread_self have no preconditions; pthread_getcpuclockid
        // writes one clockid_t through a pointer to a live local.
        let (tid, rc) = unsafe {
            (
                libc::gettid(),
                libc::pthread_getcpuclockid(libc::pthread_self(), &raw mut clock),
            )
        };
        Self {
            tid,
            clock: (rc == 0).then_some(clock),
        }
    }
}

/// CPU time used by the thread whose clock `clock` is; `None` once it has exited.
#[expect(unsafe_code, reason = "clock_gettime has no safe wrapper in libc")]
fn cpu_time(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live local; a
    // clock of a thread that has exited is an error (EINVAL), not undefined.
    let rc = unsafe { libc::clock_gettime(clock, &raw mut ts) };
    if rc != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// Moves thread `tid` [`YIELD_NICE_STEPS`] below the caller's priority.
#[expect(
    unsafe_code,
    reason = "getpriority/setpriority have no safe wrapper in libc"
)]
fn lower(tid: libc::pid_t) {
    let Ok(who) = libc::id_t::try_from(tid) else {
        return;
    };
    // SAFETY: getpriority and setpriority only read their integer arguments; on Linux
    // PRIO_PROCESS with a thread id names that one thread (0: the calling one).
    let rc = unsafe {
        let workers = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(
            libc::PRIO_PROCESS,
            who,
            (workers + YIELD_NICE_STEPS).min(19),
        )
    };
    if rc != 0 {
        tracing::debug!(
            "cannot lower the reload thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// The calling thread's nice value.
    #[expect(unsafe_code, reason = "getpriority has no safe wrapper in libc")]
    fn nice() -> libc::c_int {
        // SAFETY: reads integers only; 0 names the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn a_short_reload_runs_at_the_callers_priority_on_a_thread_of_its_own() {
        let caller = std::thread::current().id();
        let mut seen = None;
        let ran = run(|| seen = Some((nice(), std::thread::current().id())));
        let (job_nice, job_thread) = seen.expect("the job ran");
        assert_eq!(ran, Ran::AtFullPriority);
        assert_eq!(
            job_nice,
            nice(),
            "a short reload must not wait behind the workers"
        );
        assert_ne!(job_thread, caller);
    }

    #[test]
    fn a_reload_that_uses_its_budget_is_lowered_for_the_rest() {
        let workers = nice();
        let mut seen = Vec::new();
        let ran = run(|| {
            // Busy until the watcher lowers this thread (or far past the budget).
            let start = Instant::now();
            seen.push(nice());
            while nice() == workers && start.elapsed() < Duration::from_secs(20) {
                std::hint::black_box((0..1000).sum::<u64>());
            }
            seen.push(nice());
        });
        assert_eq!(ran, Ran::Lowered);
        assert_eq!(seen[0], workers, "it starts at the workers' priority");
        assert_eq!(
            seen[1],
            (workers + YIELD_NICE_STEPS).min(19),
            "past {FULL_PRIORITY_CPU:?} of CPU it runs below the workers"
        );
    }

    #[test]
    fn a_panicking_reload_leaves_the_watcher_running() {
        run(|| panic!("a bug in a build"));
        // The caller is still here, and the next reload runs.
        let mut ran_again = false;
        run(|| ran_again = true);
        assert!(ran_again);
    }
}
