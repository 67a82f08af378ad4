//! WASI preview 1 with nothing granted: clocks, random, stdout/stderr to the log,
//! empty args and environment, `proc_exit`. Every other WASI function a module imports
//! answers ENOSYS (see `engine`); no files, no sockets.

use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use wasmtime::{Caller, Linker};

use super::memory::{self, slice};
use super::state::HostState;

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ESPIPE: i32 = 70;

/// The trap `proc_exit` raises; exit code 0 from `_start` is a normal end.
#[derive(Debug, thiserror::Error)]
#[error("proc_exit({0})")]
pub(crate) struct ProcExit(pub i32);

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

type C<'a> = Caller<'a, HostState>;

macro_rules! e {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(_) => return EFAULT,
        }
    };
}

/// Links WASI under both of its module names.
pub(crate) fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for m in ["wasi_snapshot_preview1", "wasi_unstable"] {
        link_one(l, m)?;
    }
    Ok(())
}

fn zero_pair(mut c: C<'_>, a: u32, b: u32) -> i32 {
    e!(memory::write_u32(&mut c, a, 0));
    e!(memory::write_u32(&mut c, b, 0));
    ESUCCESS
}

fn link_one(l: &mut Linker<HostState>, m: &str) -> wasmtime::Result<()> {
    l.func_wrap(m, "args_sizes_get", zero_pair)?;
    l.func_wrap(m, "environ_sizes_get", zero_pair)?;
    l.func_wrap(m, "args_get", |_: C<'_>, _: u32, _: u32| ESUCCESS)?;
    l.func_wrap(m, "environ_get", |_: C<'_>, _: u32, _: u32| ESUCCESS)?;
    l.func_wrap(
        m,
        "clock_res_get",
        |mut c: C<'_>, _id: u32, ret: u32| -> i32 {
            e!(memory::write(&mut c, ret, &1_000u64.to_le_bytes()));
            ESUCCESS
        },
    )?;
    l.func_wrap(
        m,
        "clock_time_get",
        |mut c: C<'_>, id: u32, _precision: i64, ret: u32| -> i32 {
            let ns = match id {
                0 => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                1..=3 => START.elapsed().as_nanos() as u64,
                _ => return EINVAL,
            };
            e!(memory::write(&mut c, ret, &ns.to_le_bytes()));
            ESUCCESS
        },
    )?;
    l.func_wrap(m, "random_get", |mut c: C<'_>, ptr: u32, len: u32| -> i32 {
        let mut buf = vec![0u8; len as usize];
        rand::rng().fill_bytes(&mut buf);
        e!(memory::write(&mut c, ptr, &buf));
        ESUCCESS
    })?;
    l.func_wrap(
        m,
        "fd_write",
        |mut c: C<'_>, fd: u32, iovs: u32, n: u32, ret: u32| -> i32 {
            if fd != 1 && fd != 2 {
                return EBADF;
            }
            let Some(mem) = c.data().memory else {
                return EFAULT;
            };
            let data = mem.data(&c);
            let Ok(vec) = slice(data, iovs, n.saturating_mul(8)) else {
                return EFAULT;
            };
            let mut out = Vec::new();
            for iov in vec.chunks_exact(8) {
                let p = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let l = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let Ok(bytes) = slice(data, p, l) else {
                    return EFAULT;
                };
                out.extend_from_slice(bytes);
            }
            let text = String::from_utf8_lossy(&out);
            let text = text.trim_end_matches('\n');
            let filter = &*c.data().plugin_name;
            if fd == 1 {
                tracing::info!(target: "filter", filter, "{text}");
            } else {
                tracing::error!(target: "filter", filter, "{text}");
            }
            e!(memory::write_u32(&mut c, ret, out.len() as u32));
            ESUCCESS
        },
    )?;
    l.func_wrap(
        m,
        "fd_read",
        |mut c: C<'_>, fd: u32, _iovs: u32, _n: u32, ret: u32| -> i32 {
            if fd != 0 {
                return EBADF;
            }
            // stdin is empty.
            e!(memory::write_u32(&mut c, ret, 0));
            ESUCCESS
        },
    )?;
    l.func_wrap(
        m,
        "fd_close",
        |_: C<'_>, fd: u32| if fd <= 2 { ESUCCESS } else { EBADF },
    )?;
    l.func_wrap(
        m,
        "fd_seek",
        |_: C<'_>, fd: u32, _off: i64, _whence: u32, _ret: u32| {
            if fd <= 2 { ESPIPE } else { EBADF }
        },
    )?;
    l.func_wrap(
        m,
        "fd_fdstat_get",
        |mut c: C<'_>, fd: u32, ret: u32| -> i32 {
            if fd > 2 {
                return EBADF;
            }
            // filetype 2 = character device; no flags, no rights.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            e!(memory::write(&mut c, ret, &stat));
            ESUCCESS
        },
    )?;
    l.func_wrap(m, "fd_prestat_get", |_: C<'_>, _fd: u32, _ret: u32| EBADF)?;
    l.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_: C<'_>, _fd: u32, _p: u32, _n: u32| EBADF,
    )?;
    l.func_wrap(m, "sched_yield", |_: C<'_>| ESUCCESS)?;
    l.func_wrap(
        m,
        "proc_exit",
        |_: C<'_>, code: i32| -> wasmtime::Result<()> { Err(wasmtime::Error::new(ProcExit(code))) },
    )?;
    l.func_wrap(
        m,
        "poll_oneoff",
        |mut c: C<'_>, subs: u32, events: u32, n: u32, ret: u32| -> i32 {
            // Every subscription fires at once: a guest "sleeping" does not block its worker.
            let Some(mem) = c.data().memory else {
                return EFAULT;
            };
            let Ok(input) = slice(mem.data(&c), subs, n.saturating_mul(48)).map(<[u8]>::to_vec)
            else {
                return EFAULT;
            };
            for (i, sub) in input.chunks_exact(48).enumerate() {
                let mut ev = [0u8; 32];
                ev[0..8].copy_from_slice(&sub[0..8]);
                ev[10] = sub[8];
                let at = events.saturating_add((i as u32).saturating_mul(32));
                e!(memory::write(&mut c, at, &ev));
            }
            e!(memory::write_u32(&mut c, ret, n));
            ESUCCESS
        },
    )?;
    Ok(())
}
