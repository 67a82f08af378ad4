//! One VM: a wasmtime store and instance of a filter's module, its root context
//! created and configured, and the callbacks the host calls into.
//!
//! Callbacks are synchronous calls into the guest (no fiber, no future per call): a
//! fiber switch per guest entry was the largest part of a filter's price. The deadline
//! is the store's epoch deadline, which traps. A filter configured `async: true`
//! runs its callbacks on a fiber instead, yielding to the worker's other tasks on
//! every epoch tick while it runs (for filters whose callbacks legitimately run long).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use wasmtime::{Instance, Store, TypedFunc, UpdateDeadline, WasmParams, WasmResults};

use super::engine::{Compiled, root_cause};
use super::state::{HostState, Limiter, MemoryLimitExceeded, StreamIo};
use super::wasi::ProcExit;
use super::worker::VmSignal;

/// The least deadline of each callback that starts a VM (`_initialize`,
/// `on_vm_start`, `on_configure`).
const START_TIMEOUT: Duration = Duration::from_secs(2);

/// The context id of a VM's root context.
pub(crate) const ROOT_CONTEXT: u32 = 1;

/// Why a callback into a guest failed; the VM is unusable afterwards.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// The guest trapped (a panic, `unreachable`, a bad memory access, `proc_exit`).
    #[error("trapped: {0}")]
    Trap(String),
    /// The callback ran past its deadline (`limits.callback_timeout`).
    #[error("ran past its callback deadline")]
    Timeout,
    /// The guest grew its memory past `limits.memory`.
    #[error("exceeded its memory limit")]
    Memory,
    /// The filter missed its deadline again soon after a first miss, and is failed on
    /// this worker without entering it until its back-off ends (see `worker`).
    #[error("is suspended on this worker for {0:?} after repeated deadline misses")]
    Suspended(Duration),
}

impl Failure {
    /// The `kind` label of the filter-failure metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Trap(_) => "trap",
            Failure::Timeout => "timeout",
            Failure::Memory => "memory",
            Failure::Suspended(_) => "suspended",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("callback deadline exceeded")]
struct DeadlineExceeded;

/// What a VM is made from.
pub(crate) struct VmSpec {
    pub name: Arc<str>,
    pub root_id: Arc<str>,
    pub config: Arc<[u8]>,
    pub memory: usize,
    pub timeout: Duration,
    /// Run callbacks on a fiber that yields (`async: true`).
    pub on_fiber: bool,
    /// The host extensions its `proxy_call_foreign_function` reaches.
    pub extensions: super::Extensions,
    /// The upstreams its callouts reach.
    pub callers: super::calls::CallerCell,
}

type F1 = Option<TypedFunc<u32, ()>>;
type F1R = Option<TypedFunc<u32, u32>>;
type F2 = Option<TypedFunc<(u32, u32), ()>>;
type F2R = Option<TypedFunc<(u32, u32), u32>>;
type F3 = Option<TypedFunc<(u32, u32, u32), ()>>;
type F3R = Option<TypedFunc<(u32, u32, u32), u32>>;
type F4R = Option<TypedFunc<(u32, u32, u32, u32), u32>>;
type F4 = Option<TypedFunc<(u32, u32, u32, u32), ()>>;
type F5 = Option<TypedFunc<(u32, u32, u32, u32, u32), ()>>;
type F3R2 = Option<TypedFunc<(u32, u32, u32), (u32, u32)>>;

/// The guest's exported callbacks; absent ones are skipped.
pub(crate) struct Callbacks {
    pub on_context_create: F2,
    pub on_vm_start: F2R,
    pub on_configure: F2R,
    pub on_request_headers: F3R,
    pub on_request_body: F3R,
    pub on_request_trailers: F2R,
    pub on_response_headers: F3R,
    pub on_response_body: F3R,
    pub on_response_trailers: F2R,
    pub on_log: F1,
    pub on_done: F1R,
    pub on_delete: F1,
    pub on_tick: F1,
    pub on_queue_ready: F2,
    pub on_http_call_response: F5,
    pub on_grpc_receive_initial_metadata: F3,
    pub on_grpc_receive: F3,
    pub on_grpc_receive_trailing_metadata: F3,
    pub on_grpc_close: F3,
    pub on_foreign_function: F3,
    /// Context create then request headers, in one entry (`fuse.rs`).
    pub begin: F4R,
    /// Done, log and delete, in one entry (`fuse.rs`); absent where done and log are
    /// skipped.
    pub finish: F1,
    /// Response headers then the whole body, in one entry (`fuse.rs`): the two
    /// actions. Absent for a headers-only module.
    pub respond: F3R2,
    /// Higress's: a Redis reply (`proxy_on_redis_call_response`).
    pub on_redis_call_response: F4,
    /// http-wasm's two exports (`super::httpwasm`); `None` in a proxy-wasm module.
    pub handle_request: Option<TypedFunc<(), u64>>,
    pub handle_response: F2,
}

impl Callbacks {
    fn find(instance: &Instance, store: &mut Store<HostState>, headers_only: bool) -> Self {
        macro_rules! f {
            ($name:literal) => {
                instance.get_typed_func(&mut *store, $name).ok()
            };
        }
        let mut cb = Callbacks {
            on_context_create: f!("proxy_on_context_create"),
            on_vm_start: f!("proxy_on_vm_start"),
            on_configure: f!("proxy_on_configure"),
            on_request_headers: f!("proxy_on_request_headers"),
            on_request_body: f!("proxy_on_request_body"),
            on_request_trailers: f!("proxy_on_request_trailers"),
            on_response_headers: f!("proxy_on_response_headers"),
            on_response_body: f!("proxy_on_response_body"),
            on_response_trailers: f!("proxy_on_response_trailers"),
            on_log: f!("proxy_on_log"),
            on_done: f!("proxy_on_done"),
            on_delete: f!("proxy_on_delete"),
            on_tick: f!("proxy_on_tick"),
            on_queue_ready: f!("proxy_on_queue_ready"),
            on_http_call_response: f!("proxy_on_http_call_response"),
            on_grpc_receive_initial_metadata: f!("proxy_on_grpc_receive_initial_metadata"),
            on_grpc_receive: f!("proxy_on_grpc_receive"),
            on_grpc_receive_trailing_metadata: f!("proxy_on_grpc_receive_trailing_metadata"),
            on_grpc_close: f!("proxy_on_grpc_close"),
            on_foreign_function: f!("proxy_on_foreign_function"),
            begin: instance
                .get_typed_func(&mut *store, super::fuse::BEGIN)
                .ok(),
            finish: instance
                .get_typed_func(&mut *store, super::fuse::FINISH)
                .ok(),
            respond: instance
                .get_typed_func(&mut *store, super::fuse::RESPOND)
                .ok(),
            on_redis_call_response: f!("proxy_on_redis_call_response"),
            handle_request: f!("handle_request"),
            handle_response: f!("handle_response"),
        };
        if headers_only {
            // Defaults that return Continue / true without a host call: entering the
            // guest for them would only cost a fiber switch each.
            cb.on_request_body = None;
            cb.on_request_trailers = None;
            cb.on_response_body = None;
            cb.on_response_trailers = None;
            cb.on_done = None;
            cb.on_log = None;
            cb.finish = None;
            cb.respond = None;
        }
        cb
    }
}

/// Picks one of a guest's callbacks: the host names the callback it calls this way,
/// so that a call borrows it from the VM rather than cloning anything.
pub(crate) type Pick<P, R> = fn(&Callbacks) -> &Option<TypedFunc<P, R>>;

/// A live VM of one filter.
pub(crate) struct Vm {
    pub store: Store<HostState>,
    cb: Callbacks,
    /// The tick budget of one callback.
    ticks: u64,
    /// The module speaks http-wasm: its header phases are `handle_request` and
    /// `handle_response`.
    pub http_wasm: bool,
}

impl Vm {
    /// Instantiates `compiled`, creates the root context and runs `on_vm_start` and
    /// `on_configure`. The error says which step failed and why.
    pub async fn start(
        compiled: &Compiled,
        spec: &VmSpec,
        signal: Arc<VmSignal>,
    ) -> Result<Vm, String> {
        let state = HostState {
            plugin_name: spec.name.clone(),
            root_id: spec.root_id.clone(),
            plugin_config: spec.config.clone(),
            memory: None,
            malloc: None,
            limits: Limiter {
                max_memory: spec.memory,
                hit: false,
            },
            ticks_left: ticks(spec.timeout),
            deadline: None,
            backstop: backstop(spec.timeout),
            next_context: ROOT_CONTEXT + 1,
            running_context: ROOT_CONTEXT,
            io: Box::default(),
            tick_period: None,
            pending_calls: Vec::new(),
            pending_grpc: Vec::new(),
            pending_foreign: Vec::new(),
            grpc: HashMap::new(),
            next_token: 0,
            callers: spec.callers.clone(),
            call_response: None,
            call_data: None,
            redis_timeouts: HashMap::new(),
            signal,
            last_error_log: None,
            scratch: Vec::new(),
            landing: None,
            header_names: Default::default(),
            on_fiber: spec.on_fiber,
            extensions: spec.extensions.clone(),
            http_features: 0,
        };
        let mut store = Store::new(compiled.pre.module().engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            let now = Instant::now();
            let deadline = *s.deadline.get_or_insert(now + s.backstop);
            if s.ticks_left == 0 || now >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                s.ticks_left -= 1;
                Ok(if s.on_fiber {
                    // Let the worker's other tasks run while this guest computes.
                    UpdateDeadline::Yield(1)
                } else {
                    UpdateDeadline::Continue(1)
                })
            }
        });
        let start = spec.timeout.max(START_TIMEOUT);
        store.data_mut().ticks_left = ticks(start);
        store.data_mut().backstop = backstop(start);
        store.set_epoch_deadline(1);
        let instance = if spec.on_fiber {
            compiled.pre.instantiate_async(&mut store).await
        } else {
            compiled.pre.instantiate(&mut store)
        };
        let instance = match instance {
            Ok(i) => i,
            Err(e) => return Err(format!("cannot instantiate: {}", describe(&store, &e))),
        };
        let Some(memory) = instance.get_memory(&mut store, "memory") else {
            return Err("the module exports no memory".into());
        };
        store.data_mut().memory = Some(memory);
        store.data_mut().malloc = instance
            .get_typed_func::<u32, u32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<u32, u32>(&mut store, "malloc"))
            .ok();
        let http_wasm = compiled.abi == super::state::AbiVersion::HttpWasm;
        // An http-wasm host writes only into buffers the guest hands it.
        if store.data().malloc.is_none() && !http_wasm {
            return Err("the module exports neither proxy_on_memory_allocate nor malloc".into());
        }
        let cb = Callbacks::find(&instance, &mut store, compiled.headers_only);
        if http_wasm && cb.handle_request.is_none() {
            return Err("the http-wasm module exports no handle_request".into());
        }
        // Starting a VM (compiling caches, parsing config) may legitimately take
        // longer than a request callback; it is still bounded.
        let mut vm = Vm {
            store,
            cb,
            ticks: 0,
            http_wasm,
        };
        vm.set_timeout(start);
        // Reactors export _initialize; commands (TinyGo) export _start.
        let init = instance
            .get_typed_func::<(), ()>(&mut vm.store, "_initialize")
            .or_else(|_| instance.get_typed_func::<(), ()>(&mut vm.store, "_start"))
            .ok();
        if let Some(init) = init
            && let Err(e) = enter(&mut vm.store, vm.ticks, &init, ()).await
            && !matches!(e.downcast_ref::<ProcExit>(), Some(ProcExit(0)))
        {
            return Err(format!("failed to initialize: {}", classify(&vm.store, e)));
        }
        vm.call(|c| &c.on_context_create, (ROOT_CONTEXT, 0))
            .await
            .map_err(|f| format!("failed creating its root context: {f}"))?;
        let started = vm
            .call(|c| &c.on_vm_start, (ROOT_CONTEXT, 0))
            .await
            .map_err(|f| format!("on_vm_start {f}"))?;
        if started == Some(0) {
            return Err("on_vm_start returned false".into());
        }
        let len = u32::try_from(spec.config.len()).unwrap_or(u32::MAX);
        let configured = vm
            .call(|c| &c.on_configure, (ROOT_CONTEXT, len))
            .await
            .map_err(|f| format!("on_configure {f}"))?;
        if configured == Some(0) {
            // A filter says why in its log (the SDK logs the field at error level).
            return Err(match vm.store.data_mut().last_error_log.take() {
                Some(why) => format!("on_configure rejected its configuration: {why}"),
                None => "on_configure rejected its configuration (returned false)".into(),
            });
        }
        vm.set_timeout(spec.timeout);
        Ok(vm)
    }

    /// Sets the deadline of every callback from now on.
    fn set_timeout(&mut self, timeout: Duration) {
        self.ticks = ticks(timeout);
        self.store.data_mut().backstop = backstop(timeout);
    }

    /// Calls the callback `pick` names, for the root or a stream context; `None` when
    /// the guest lacks it.
    pub async fn call<P, R>(&mut self, pick: Pick<P, R>, params: P) -> Result<Option<R>, Failure>
    where
        P: WasmParams + Sync,
        R: WasmResults + Sync,
    {
        let Some(f) = pick(&self.cb) else {
            return Ok(None);
        };
        match enter(&mut self.store, self.ticks, f, params).await {
            Ok(r) => Ok(Some(r)),
            Err(e) => Err(classify(&self.store, e)),
        }
    }

    /// Whether callbacks run on a fiber (`async: true`), and so must be awaited
    /// ([`Vm::call_with`]) rather than made at once ([`Vm::call_with_now`]).
    pub fn on_fiber(&self) -> bool {
        self.store.data().on_fiber
    }

    /// [`Vm::call_with`] for a VM that is not [on a fiber](Vm::on_fiber): a plain
    /// call, with no future to build, move and poll around it.
    pub fn call_with_now<P, R>(
        &mut self,
        io: &mut Box<StreamIo>,
        context: u32,
        pick: Pick<P, R>,
        params: P,
    ) -> Result<Option<R>, Failure>
    where
        P: WasmParams,
        R: WasmResults,
    {
        let Some(f) = pick(&self.cb) else {
            return Ok(None);
        };
        swap_stream(&mut self.store, io, context);
        prepare(&mut self.store, self.ticks);
        let r = f.call(&mut self.store, params);
        swap_stream(&mut self.store, io, context);
        r.map(Some).map_err(|e| classify(&self.store, e))
    }

    /// Like [`Vm::call`] with a stream's data moved into the store for the callback.
    pub async fn call_with<P, R>(
        &mut self,
        io: &mut Box<StreamIo>,
        context: u32,
        pick: Pick<P, R>,
        params: P,
    ) -> Result<Option<R>, Failure>
    where
        P: WasmParams + Sync,
        R: WasmResults + Sync,
    {
        swap_stream(&mut self.store, io, context);
        let r = self.call(pick, params).await;
        swap_stream(&mut self.store, io, context);
        r
    }

    /// Whether the module has the fused context create + request headers entry.
    #[inline]
    pub fn fused_begin(&self) -> bool {
        self.cb.begin.is_some()
    }

    /// Whether the module has the fused done + log + delete entry (and needs them).
    #[inline]
    pub fn fused_finish(&self) -> bool {
        self.cb.finish.is_some()
    }

    /// Whether context `ctx`'s last callback left callouts (http, gRPC, foreign) to
    /// start.
    #[inline]
    pub fn has_calls(&self, ctx: u32) -> bool {
        let st = self.store.data();
        (!st.pending_calls.is_empty() && st.pending_calls.iter().any(|c| c.context == ctx))
            || (!st.pending_grpc.is_empty() && st.pending_grpc.iter().any(|c| c.context == ctx))
            || (!st.pending_foreign.is_empty()
                && st.pending_foreign.iter().any(|c| c.context == ctx))
    }

    /// Whether the module has the fused response headers + body entry.
    #[inline]
    pub fn fused_respond(&self) -> bool {
        self.cb.respond.is_some()
    }

    /// A fresh stream context id in this VM.
    pub fn new_context(&mut self) -> u32 {
        let s = self.store.data_mut();
        let id = s.next_context;
        s.next_context = s.next_context.wrapping_add(1).max(ROOT_CONTEXT + 1);
        id
    }
}

/// Runs `f` within the deadline of `ticks` epoch ticks: a plain call, or on a fiber
/// that yields at every tick for `async: true`. Either way the epoch callback counts
/// a tick only when it finds the guest running, so time the thread spends descheduled
/// (a loaded machine) or, on a fiber, serving other requests is not charged; the
/// wall-clock backstop still bounds the call.
async fn enter<P, R>(
    store: &mut Store<HostState>,
    ticks: u64,
    f: &TypedFunc<P, R>,
    params: P,
) -> wasmtime::Result<R>
where
    P: WasmParams + Sync,
    R: WasmResults + Sync,
{
    prepare(store, ticks);
    if store.data().on_fiber {
        f.call_async(store, params).await
    } else {
        f.call(store, params)
    }
}

/// Moves a stream's data into the store for a callback of `context` (host calls reach
/// it there without locks), or back out after it.
fn swap_stream(store: &mut Store<HostState>, io: &mut Box<StreamIo>, context: u32) {
    let s = store.data_mut();
    std::mem::swap(&mut s.io, io);
    s.running_context = context;
}

/// Arms the deadline of one guest entry: `ticks` epoch ticks of running time.
fn prepare(store: &mut Store<HostState>, ticks: u64) {
    count_entry();
    let s = store.data_mut();
    s.ticks_left = ticks;
    s.deadline = None;
    store.set_epoch_deadline(1);
}

fn classify(store: &Store<HostState>, e: wasmtime::Error) -> Failure {
    if e.downcast_ref::<DeadlineExceeded>().is_some() {
        Failure::Timeout
    } else if store.data().limits.hit || e.downcast_ref::<MemoryLimitExceeded>().is_some() {
        Failure::Memory
    } else {
        Failure::Trap(root_cause(&e))
    }
}

/// The tick budget of a callback allowed `timeout` of running time.
fn ticks(timeout: Duration) -> u64 {
    let tick = super::engine::EPOCH_TICK.as_micros().max(1);
    u64::try_from(timeout.as_micros().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// However starved the worker, a callback never runs longer than this in wall time.
fn backstop(timeout: Duration) -> Duration {
    timeout.saturating_mul(20).max(Duration::from_secs(2))
}

fn describe(store: &Store<HostState>, e: &wasmtime::Error) -> String {
    if store.data().limits.hit {
        format!(
            "memory limit of {} bytes exceeded",
            store.data().limits.max_memory
        )
    } else {
        root_cause(e)
    }
}

/// Runs a future to completion on this thread, for the one place the host calls a
/// guest outside a worker (building a snapshot). Guest code yields on epoch ticks, so
/// this simply polls again when woken.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Guest entries made on this thread (callbacks and allocator calls).
    static ENTRIES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts one guest entry, in tests (where the entries per request are asserted).
#[inline]
pub(crate) fn count_entry() {
    #[cfg(test)]
    ENTRIES.with(|c| c.set(c.get() + 1));
}

/// How many times this thread entered a guest so far.
#[cfg(test)]
pub(crate) fn entries() -> u64 {
    ENTRIES.with(std::cell::Cell::get)
}
