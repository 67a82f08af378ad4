//! Calling one filter of a stream: its callback for a phase, at once when its VM is
//! live, free and not on a fiber (nearly always), else after waiting for it; and the
//! callbacks that end its stream. The macros are shared by the two ways of calling
//! (`now`: a plain call; `invoke`: may await a fiber) so that both run the same code.

use super::{Entry, Phase};
use crate::wasm::state::StreamIo;
use crate::wasm::vm::{Failure, ROOT_CONTEXT};
use crate::wasm::worker;

/// Calls a callback of `$vm` for a stream: at once, or awaited on a fiber for an
/// `async: true` filter (the only case that needs a future).
macro_rules! invoke {
    ($vm:expr, $io:expr, $ctx:expr, $pick:expr, $params:expr) => {
        if $vm.on_fiber() {
            $vm.call_with($io, $ctx, $pick, $params).await
        } else {
            $vm.call_with_now($io, $ctx, $pick, $params)
        }
    };
}

/// `on_done` (or, for a filter a local response kept from the request, a fresh
/// context), `on_log` and `on_delete` of filter `$e` on `$vm`; `$how` as in
/// [`callback!`].
macro_rules! finish_callbacks {
    ($how:ident, $vm:expr, $io:expr, $e:ident, $reached:expr) => {{
        let (vm, io) = ($vm, $io);
        if $reached && vm.fused_finish() {
            $how!(vm, io, $e.ctx, |c| &c.finish, $e.ctx).map(drop)
        } else {
            let mut r = Ok(());
            let ctx = if $reached {
                r = $how!(vm, io, $e.ctx, |c| &c.on_done, $e.ctx).map(drop);
                $e.ctx
            } else {
                let ctx = vm.new_context();
                let create = (ctx, ROOT_CONTEXT);
                r = r.and($how!(vm, io, ctx, |c| &c.on_context_create, create).map(drop));
                ctx
            };
            if r.is_ok() {
                r = $how!(vm, io, ctx, |c| &c.on_log, ctx).map(drop);
            }
            if r.is_ok() {
                r = $how!(vm, io, ctx, |c| &c.on_delete, ctx).map(drop);
            }
            r
        }
    }};
}

/// Filter `e`'s callback for `phase` on `$vm` (of slot generation `$generation`),
/// creating the stream's context there first if this VM has none; `$how` is
/// `invoke` (may await a fiber) or `now` (a plain call).
macro_rules! callback {
    ($how:ident, $vm:expr, $e:ident, $io:expr, $generation:expr, $phase:expr, $n:expr, $eos:expr) => {{
        let (vm, io, n) = ($vm, $io, $n);
        let mut created: Result<(), Failure> = Ok(());
        let mut begun = None;
        let eos = u32::from($eos);
        io.resumed = false;
        io.skip_response = false;
        if $e.generation != $generation {
            $e.ctx = vm.new_context();
            $e.generation = $generation;
            if matches!($phase, Phase::RequestHeaders) && vm.fused_begin() {
                let begin = ($e.ctx, ROOT_CONTEXT, n, eos);
                begun = Some($how!(vm, io, $e.ctx, |c| &c.begin, begin));
            } else {
                let create = ($e.ctx, ROOT_CONTEXT);
                created = $how!(vm, io, $e.ctx, |c| &c.on_context_create, create).map(drop);
            }
        }
        let ctx = $e.ctx;
        let r = match (begun, created) {
            (Some(r), _) => r,
            (None, Err(f)) => Err(f),
            (None, Ok(())) => match $phase {
                Phase::RequestHeaders if vm.http_wasm => {
                    crate::wasm::httpwasm::before_call(io);
                    let r = $how!(vm, io, ctx, |c| &c.handle_request, ());
                    r.map(|v| {
                        v.map(|v| {
                            $e.ctx = crate::wasm::httpwasm::request_context(v);
                            crate::wasm::httpwasm::request_handled(io, v)
                        })
                    })
                }
                Phase::ResponseHeaders if vm.http_wasm => {
                    crate::wasm::httpwasm::before_call(io);
                    let args = (ctx, crate::wasm::httpwasm::is_error(io));
                    $how!(vm, io, ctx, |c| &c.handle_response, args).map(|v| v.map(|()| 0))
                }
                Phase::RequestHeaders => {
                    $how!(vm, io, ctx, |c| &c.on_request_headers, (ctx, n, eos))
                }
                Phase::RequestBody => $how!(vm, io, ctx, |c| &c.on_request_body, (ctx, n, eos)),
                Phase::RequestTrailers => $how!(vm, io, ctx, |c| &c.on_request_trailers, (ctx, n)),
                Phase::ResponseHeaders => {
                    $how!(vm, io, ctx, |c| &c.on_response_headers, (ctx, n, eos))
                }
                Phase::ResponseBody => $how!(vm, io, ctx, |c| &c.on_response_body, (ctx, n, eos)),
                Phase::ResponseTrailers => {
                    $how!(vm, io, ctx, |c| &c.on_response_trailers, (ctx, n))
                }
            },
        };
        match r {
            Ok(action) => Called::Done {
                action: action.unwrap_or(0),
                has_calls: vm.has_calls(ctx),
            },
            Err(f) => Called::Failed($generation, f),
        }
    }};
}

/// A plain, synchronous callback (for [`callback!`]).
macro_rules! now {
    ($vm:expr, $io:expr, $ctx:expr, $pick:expr, $params:expr) => {
        $vm.call_with_now($io, $ctx, $pick, $params)
    };
}

/// What one callback of a filter came to.
pub(super) enum Called {
    /// It returned this action; it left `http_call`s to dispatch, or not.
    Done { action: u32, has_calls: bool },
    /// Its VM is gone (nothing to call).
    Gone,
    /// It failed (in the VM of this generation).
    Failed(u64, Failure),
}

/// Whether filter `e` (the `i`th) still has its end of stream to be told: it has a
/// context, or a local response kept the request from it and it may log.
pub(super) fn needs_finish(e: &Entry, i: usize, seen: usize) -> bool {
    let reached = e.generation != 0;
    // A headers-only filter's on_log does nothing: no context just for it.
    let unseen = !reached && (i < seen || e.plugin.headers_only());
    !(e.skipped || unseen)
}

/// Calls filter `e`'s callback for `phase` at once, as nearly every callback is made:
/// its VM is live, free and not on a fiber. `None` when it is not so (nothing was
/// called): then [`call`] waits for it.
pub(super) fn call_now(
    e: &mut Entry,
    io: &mut Box<StreamIo>,
    phase: Phase,
    n: u32,
    eos: bool,
) -> Option<Called> {
    let slot = e.slot.get_or_insert_with(|| worker::slot(&e.plugin));
    let mut g = slot.try_lock()?;
    let generation = g.generation;
    let vm = g.vm.as_mut().filter(|vm| !vm.on_fiber())?;
    Some(callback!(now, vm, e, io, generation, phase, n, eos))
}

/// Calls filter `e`'s callback for `phase`, waiting for its slot, making its VM if it
/// has none, and awaiting the call on a fiber for an `async: true` filter.
pub(super) async fn call(
    e: &mut Entry,
    io: &mut Box<StreamIo>,
    phase: Phase,
    n: u32,
    eos: bool,
) -> Called {
    let slot = e.slot.get_or_insert_with(|| worker::slot(&e.plugin));
    let mut g = worker::lock(slot).await;
    if let Err(f) = worker::ensure(&mut g, slot, &e.plugin).await {
        return Called::Failed(0, f);
    }
    let generation = g.generation;
    let Some(vm) = g.vm.as_mut() else {
        return Called::Gone;
    };
    callback!(invoke, vm, e, io, generation, phase, n, eos)
}
