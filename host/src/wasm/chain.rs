//! [`HttpFilters`]: one request's walk through its route's filters, phase by phase.
//! Request phases run in chain order, response phases in reverse; a local response
//! ends the request phase and runs the response phase of the filters that saw the
//! request (docs/phases.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;

use super::state::{BodyBuf, StreamIo};
use super::vm::{Failure, ROOT_CONTEXT};
use super::worker::{self, SlotRef};
use super::{BodyDecision, Decision, FilterFailure, Plugin, StreamInfo, calls};
use crate::config::OnError;

#[macro_use]
mod call;
mod body_phase;
mod shadow;
mod traced;
mod whole;

pub use body_phase::Flow;
use call::{Called, call, call_now, needs_finish};
pub use shadow::ShadowDecision;

#[derive(Clone, Copy, Debug)]
enum Phase {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

impl Phase {
    fn is_headers(self) -> bool {
        matches!(self, Phase::RequestHeaders | Phase::ResponseHeaders)
    }

    fn is_response(self) -> bool {
        matches!(
            self,
            Phase::ResponseHeaders | Phase::ResponseBody | Phase::ResponseTrailers
        )
    }
}

enum Step {
    Continue,
    Pause,
    Local,
    Failed(Failure),
}

/// One filter of a stream: its VM slot on this worker and its context there.
struct Entry {
    plugin: Arc<Plugin>,
    slot: Option<SlotRef>,
    ctx: u32,
    generation: u64,
    /// Failed (and allowed to be skipped) or its VM is gone: no more callbacks.
    skipped: bool,
    /// Asked for no response-phase callbacks during its request headers.
    no_response: bool,
    /// Body bytes held while this filter pauses a body phase: [request, response].
    held: [BodyBuf; 2],
    /// In shadow mode: what it decided so far for this stream.
    shadow: Option<shadow::Shadow>,
    /// Time in its header and trailer callbacks (their callouts included), for the
    /// dashboard, when the chain is timed.
    spent: Duration,
    /// A callback of it ran (or was passed over) on this request: it counts.
    ran: bool,
    /// It failed (a trap, a deadline, memory) on this request.
    failed: bool,
    /// What it last decided in a header or trailer phase, for the access log.
    outcome: Option<traced::Decided>,
}

/// The filter chain of one request: the per-stream contexts of each filter of its
/// route, driven phase by phase by the proxy. Call [`HttpFilters::finish`] at the end;
/// a chain dropped without it finishes its contexts in the background.
pub struct HttpFilters {
    entries: Vec<Entry>,
    io: Box<StreamIo>,
    /// How many filters (from the first) took part in the request phase.
    seen: usize,
    finished: bool,
    /// Some filter has body or trailer callbacks (is not headers-only).
    bodies: bool,
    /// Which bodies some http-wasm filter of the chain wants whole (`httpwasm`'s
    /// `BUFFER_*` bits).
    buffers: u32,
    /// The request is a gRPC call: a filter's local reply is shaped as one.
    grpc: bool,
    /// What the running shadow filter's callback may change, as it was before. Boxed:
    /// inline it made every chain ~200 bytes larger to move, shadow filter or not.
    saved: Option<Box<shadow::Saved>>,
    /// The request's `x-request-id`, for shadow filters' log lines (when one runs).
    request_id: Option<http::HeaderValue>,
    /// Whether this request times its filters (one in [`TIME_EVERY`] per worker).
    timed: bool,
    /// The last clock read of a timed walk: when the filters were last done with.
    clock: Option<Instant>,
    /// The request's span, when it is traced: each filter callback gets a child span.
    trace: Option<Arc<crate::otel::RequestTrace>>,
    /// A filter's local reply, made in its response body callback, replaced the body.
    body_replaced: bool,
}

/// One request in this many (per worker) times its filters' callbacks for the
/// dashboard's latency quantiles; every request is counted. The clock reads were
/// most of what the dashboard added to a filter's cost.
const TIME_EVERY: u32 = 8;

thread_local! {
    static UNTIMED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether the next request on this thread times its filters.
fn take_sample() -> bool {
    UNTIMED.with(|n| {
        let left = n.get();
        n.set(if left == 0 { TIME_EVERY - 1 } else { left - 1 });
        left == 0
    })
}

impl HttpFilters {
    /// Starts a stream through `plugins` (the route's chain, in order).
    pub fn new(plugins: &[Arc<Plugin>], info: StreamInfo) -> Self {
        let (mut bodies, mut buffers) = (false, 0);
        for p in plugins {
            bodies |= !p.headers_only();
            buffers |= p.buffers();
        }
        let entries = plugins
            .iter()
            .map(|p| Entry {
                plugin: p.clone(),
                slot: None,
                ctx: 0,
                generation: 0,
                skipped: false,
                no_response: false,
                held: Default::default(),
                shadow: None,
                spent: Duration::ZERO,
                ran: false,
                failed: false,
                outcome: None,
            })
            .collect::<Vec<_>>();
        // Filled in place: the stream's data is large, and building it on the stack
        // first copied it whole into the box.
        let mut io = Box::<StreamIo>::default();
        if super::trace::armed() {
            io.trace = super::trace::take(&info.route);
        }
        io.info = Some(info);
        io.started = Some(std::time::SystemTime::now());
        Self {
            seen: entries.len(),
            bodies,
            buffers,
            entries,
            io,
            finished: false,
            grpc: false,
            timed: take_sample(),
            clock: None,
            saved: None,
            request_id: None,
            trace: None,
            body_replaced: false,
        }
    }

    /// Runs `plugin` in place of the chain's filter `i` for this request (a canary
    /// drawn for it); before any phase.
    pub fn run_instead(&mut self, i: usize, plugin: Arc<Plugin>) {
        if let Some(e) = self.entries.get_mut(i) {
            self.bodies |= !plugin.headers_only();
            self.buffers |= plugin.buffers();
            e.plugin = plugin;
        }
    }

    /// What properties `cluster_name`, `connection.mtls` and
    /// `connection.subject_peer_certificate` read: the route's upstream and the
    /// verified client certificate's subject, if any.
    pub fn set_upstream_and_peer(&mut self, cluster: Arc<str>, peer_subject: Option<Arc<str>>) {
        self.io.cluster = Some(cluster);
        self.io.peer_subject = peer_subject;
    }

    /// What `cluster_metadata.filter_metadata.*` reads: the route's upstream's
    /// `metadata`.
    pub fn set_cluster_metadata(&mut self, metadata: crate::config::Metadata) {
        self.io.cluster_metadata = Some(metadata);
    }

    /// What properties `upstream.address` and `response.flags` read: the target the
    /// request went to (if it reached one) and Envoy's response flags of its failure.
    pub fn set_upstream_result(&mut self, target: Option<Arc<str>>, flags: u64) {
        self.io.upstream_address = target;
        self.io.response_flags = flags;
    }

    /// How many of the filters that saw the request take part in the response phase.
    #[cfg(test)]
    pub(crate) fn response_phase_filters(&self) -> usize {
        self.entries[..self.seen]
            .iter()
            .filter(|e| !e.skipped && !e.no_response)
            .count()
    }

    /// Whether any filter of the chain takes part in the body and trailer phases; if
    /// none does, bodies may stream past the chain untouched.
    pub fn takes_bodies(&self) -> bool {
        self.bodies
    }

    /// Whether an http-wasm filter of the chain reads the whole request body: the
    /// proxy then collects it before the request phase ([`HttpFilters::set_request_body`]).
    pub fn buffers_request(&self) -> bool {
        self.buffers & super::httpwasm::BUFFER_REQUEST != 0
    }

    /// Whether an http-wasm filter of the chain reads the whole response body: the
    /// proxy then collects it before the response phase.
    pub fn buffers_response(&self) -> bool {
        self.buffers & super::httpwasm::BUFFER_RESPONSE != 0
    }

    /// The whole request body, collected for the chain's http-wasm filters; before
    /// [`HttpFilters::request_headers`].
    pub fn set_request_body(&mut self, body: Bytes) {
        super::httpwasm::set_request_body(&mut self.io, body);
    }

    /// The request body to send on after the request phase (the collected one, as a
    /// filter may have rewritten it), and whether a filter changed it.
    pub fn take_request_body(&mut self) -> Option<(Bytes, bool)> {
        super::httpwasm::take_request_body(&mut self.io)
    }

    /// The whole response body, collected for the chain's http-wasm filters; before
    /// [`HttpFilters::response_headers`].
    pub fn set_response_body(&mut self, body: Bytes) {
        super::httpwasm::set_response_body(&mut self.io, body);
    }

    /// The response body to send on after the response phase, and whether a filter
    /// changed it.
    pub fn take_response_body(&mut self) -> Option<(Bytes, bool)> {
        super::httpwasm::take_response_body(&mut self.io)
    }

    /// Shares the chain between the driver and the body wrappers
    /// ([`super::FilteredBody`]); it finishes when the last holder drops it.
    pub fn into_shared(self) -> super::SharedFilters {
        Arc::new(futures_util::lock::Mutex::new(self))
    }

    /// Whether the chain has no filters (the proxy may then skip every phase).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Request headers phase, in chain order. Writing `:path`, `:authority` or
    /// `:method` changes `head`. A local response comes back already through the
    /// response phase: send it as is.
    pub async fn request_headers(
        &mut self,
        head: &mut http::request::Parts,
        end_of_stream: bool,
    ) -> Decision {
        self.grpc = crate::grpc_status::is_grpc(&head.headers);
        if let Some(trace) = &self.io.trace {
            trace.set_request_id(head.headers.get(super::abi::REQUEST_ID));
        }
        let empty = http::Request::new(()).into_parts().0;
        self.io.request = Some(std::mem::replace(head, empty));
        let decision = self
            .request_walk(Phase::RequestHeaders, end_of_stream)
            .await;
        if let Some(req) = self.io.request.take() {
            self.io.request_head = Some(super::abi::properties::request_head(&req));
            *head = req;
        }
        decision
    }

    /// Request trailers phase, in chain order.
    pub async fn request_trailers(&mut self, trailers: &mut HeaderMap) -> Decision {
        self.io.request_trailers = Some(std::mem::take(trailers));
        let d = self.request_walk(Phase::RequestTrailers, true).await;
        *trailers = self.io.request_trailers.take().unwrap_or_default();
        d
    }

    /// One chunk of the request body through the filters that saw the request. A
    /// filter that pauses holds the bytes (and gets them all again with the next
    /// chunk) until it continues or the body ends.
    pub async fn request_body(&mut self, chunk: Bytes, end_of_stream: bool) -> BodyDecision {
        self.body(Flow::Request, chunk, end_of_stream).await
    }

    /// Response headers phase, in reverse chain order. Writing `:status` changes it.
    pub async fn response_headers(
        &mut self,
        head: &mut http::response::Parts,
        end_of_stream: bool,
    ) -> Decision {
        let empty = http::Response::new(()).into_parts().0;
        self.io.response = Some(std::mem::replace(head, empty));
        super::httpwasm::response_arrived(&mut self.io);
        let d = self
            .response_walk(Phase::ResponseHeaders, end_of_stream)
            .await;
        if let Some(resp) = self.io.response.take() {
            self.io.response_code = Some(resp.status.as_u16());
            self.io.response_head_bytes = super::abi::properties::response_head_bytes(&resp);
            *head = resp;
        }
        d
    }

    /// Response trailers phase, in reverse chain order.
    pub async fn response_trailers(&mut self, trailers: &mut HeaderMap) -> Decision {
        self.io.response_trailers = Some(std::mem::take(trailers));
        let d = self.response_walk(Phase::ResponseTrailers, true).await;
        *trailers = self.io.response_trailers.take().unwrap_or_default();
        d
    }

    /// One chunk of the response body, in reverse chain order (see
    /// [`HttpFilters::request_body`] for pausing).
    pub async fn response_body(&mut self, chunk: Bytes, end_of_stream: bool) -> BodyDecision {
        self.body(Flow::Response, chunk, end_of_stream).await
    }

    /// `on_done`, `on_log` and `on_delete` for every context created. As in Envoy, a
    /// filter that a local response cut short (it never saw the request) still gets
    /// a context and `on_log`, so logging filters see denied requests.
    pub async fn finish(mut self) {
        self.finish_now();
        if (0..self.entries.len()).any(|i| needs_finish(&self.entries[i], i, self.seen)) {
            // Rare (a fiber, a busy or dead VM): kept off the common future's size.
            Box::pin(self.finish_rest()).await;
        }
    }

    /// What [`HttpFilters::finish_now`] left, waiting for slots and VMs.
    async fn finish_rest(&mut self) {
        for i in 0..self.entries.len() {
            let e = &mut self.entries[i];
            let reached = e.generation != 0;
            if !needs_finish(e, i, self.seen) {
                continue;
            }
            let plugin = e.plugin.clone();
            let slot = e.slot.get_or_insert_with(|| worker::slot(&plugin)).clone();
            let mut g = worker::lock(&slot).await;
            if !reached && worker::ensure(&mut g, &slot, &plugin).await.is_err() {
                continue;
            }
            let generation = g.generation;
            if reached && generation != e.generation {
                continue;
            }
            let Some(vm) = g.vm.as_mut() else { continue };
            let r = finish_callbacks!(invoke, vm, &mut self.io, e, reached);
            drop(g);
            if let Err(f) = r {
                super::fail_vm(&slot, &plugin, generation, &f, "on_done/on_log").await;
            }
        }
    }

    /// Finishes at once every filter whose VM is live, free and not on a fiber (as
    /// nearly always), so that the common end of a request needs no future and no
    /// task; the rest is left to [`HttpFilters::finish`].
    fn finish_now(&mut self) {
        self.record_recent();
        self.finished = true;
        self.io.completed = true;
        for i in 0..self.entries.len() {
            let e = &mut self.entries[i];
            if !needs_finish(e, i, self.seen) {
                continue;
            }
            let reached = e.generation != 0;
            let slot = e.slot.get_or_insert_with(|| worker::slot(&e.plugin));
            let Some(mut g) = slot.try_lock() else {
                continue;
            };
            let generation = g.generation;
            if reached && generation != e.generation {
                // Its context died with the VM it was made in.
                e.skipped = true;
                continue;
            }
            let Some(vm) = g.vm.as_mut().filter(|vm| !vm.on_fiber()) else {
                continue;
            };
            let r = finish_callbacks!(now, vm, &mut self.io, e, reached);
            e.skipped = true;
            if let Err(f) = r {
                super::fail_locked(&mut g, &e.plugin, generation, &f, "on_done/on_log");
            }
        }
    }

    async fn request_walk(&mut self, phase: Phase, eos: bool) -> Decision {
        // Timed, one clock read per filter and one more per walk: each filter is
        // charged the time from the previous read to its own.
        let mut clock = self.timed.then(Instant::now);
        for i in 0..self.seen {
            let n = count(&self.io, phase);
            let begin = self.span_begin();
            let mut step = self.step(i, phase, n, eos).await;
            clock = self.charge(i, clock, &step);
            if self.entries[i].shadow.is_some() {
                step = self.shadow_settle(i, step);
            }
            self.traced(i, phase, &step, begin);
            match step {
                Step::Continue | Step::Pause => {}
                Step::Local => {
                    self.seen = i + 1;
                    return match Box::pin(self.local_response(i)).await {
                        Ok(r) => Decision::Respond(r),
                        Err(f) => Decision::Fail(f),
                    };
                }
                Step::Failed(f) => {
                    if self.entries[i].plugin.config.on_error == OnError::Deny {
                        return Decision::Fail(self.failure(i, f));
                    }
                }
            }
        }
        Decision::Continue
    }

    async fn response_walk(&mut self, phase: Phase, eos: bool) -> Decision {
        let mut clock = self.timed.then(Instant::now);
        for i in (0..self.seen).rev() {
            let n = count(&self.io, phase);
            let begin = self.span_begin();
            let mut step = self.step(i, phase, n, eos).await;
            clock = self.charge(i, clock, &step);
            if self.entries[i].shadow.is_some() {
                step = self.shadow_settle(i, step);
            }
            self.traced(i, phase, &step, begin);
            if let Some(d) = self.response_verdict(i, step) {
                return d;
            }
        }
        Decision::Continue
    }

    /// What filter `i`'s response-headers `step` means for the response: `Some` when
    /// it ends the phase (a local reply, which replaces the response as it is, or a
    /// failure that denies).
    fn response_verdict(&mut self, i: usize, step: Step) -> Option<Decision> {
        match step {
            Step::Continue | Step::Pause => None,
            Step::Local => {
                let reply = self.io.local_reply.take();
                Some(Decision::Respond(
                    reply
                        .map(|r| r.into_response(self.grpc))
                        .unwrap_or_default(),
                ))
            }
            Step::Failed(f) => match self.entries[i].plugin.config.on_error {
                OnError::Deny => Some(Decision::Fail(self.failure(i, f))),
                OnError::Allow => None,
            },
        }
    }

    /// Builds the local reply filter `i` asked for and runs it through the response
    /// phase of the filters that saw the request, in reverse.
    async fn local_response(&mut self, i: usize) -> Result<http::Response<Bytes>, FilterFailure> {
        let Some(reply) = self.io.local_reply.take() else {
            return Err(self.failure(i, Failure::Trap("local reply vanished".into())));
        };
        self.io.code_details = Some(reply.details.clone());
        let (mut head, body) = reply.into_response(self.grpc).into_parts();
        let mut body_eos = body.is_empty();
        match self.response_headers(&mut head, body_eos).await {
            Decision::Continue => {}
            Decision::Respond(r) => return Ok(r),
            Decision::Fail(f) => return Err(f),
        }
        let mut out = body;
        if !body_eos {
            body_eos = true;
            match self.response_body(out, body_eos).await {
                BodyDecision::Forward(b) => out = b,
                BodyDecision::Respond(r) => return Ok(r),
                BodyDecision::Fail(f) => return Err(f),
            }
        }
        Ok(http::Response::from_parts(head, out))
    }

    /// Counts filter `i` in (with its failure), and when timed charges it the time
    /// since `since`; returns the clock read.
    #[inline]
    fn charge(&mut self, i: usize, since: Option<Instant>, step: &Step) -> Option<Instant> {
        let e = &mut self.entries[i];
        e.ran = true;
        e.failed |= matches!(step, Step::Failed(_));
        let since = since?;
        let now = Instant::now();
        e.spent += now.duration_since(since);
        self.clock = Some(now);
        Some(now)
    }

    /// Counts the request in the recent window of every filter that ran on it, once.
    fn record_recent(&mut self) {
        if !self.entries.iter().any(|e| e.ran) {
            return;
        }
        let at = self
            .clock
            .or_else(crate::metrics::last_instant)
            .unwrap_or_else(Instant::now);
        for e in &mut self.entries {
            if std::mem::take(&mut e.ran) {
                let spent = self.timed.then_some(e.spent);
                e.plugin.recent().record(at, spent, e.failed);
            }
        }
    }

    fn failure(&self, i: usize, f: Failure) -> FilterFailure {
        FilterFailure::of(&self.entries[i].plugin, f)
    }

    /// Runs one callback of filter `i`, with its http calls, and says what it decided.
    async fn step(&mut self, i: usize, phase: Phase, n: u32, eos: bool) -> Step {
        match self.step_now(i, phase, n, eos) {
            Ok(step) => step,
            Err(pending) => self.step_wait(i, phase, n, eos, pending).await,
        }
    }

    /// Filter `i`'s callback made at once, as nearly every one is, and what it decided.
    /// `Err` when something must be waited for: `Err(None)` before the callback (its
    /// VM is busy, absent or on a fiber; nothing was called), `Err(Some(called))`
    /// after it (it left `http_call`s to dispatch, or it failed and must be reported).
    fn step_now(
        &mut self,
        i: usize,
        phase: Phase,
        n: u32,
        eos: bool,
    ) -> Result<Step, Option<Called>> {
        let e = &mut self.entries[i];
        if e.skipped
            || (e.plugin.headers_only() && !phase.is_headers())
            || (e.no_response && phase.is_response())
            || e.shadow.as_ref().is_some_and(|s| s.decided)
        {
            return Ok(Step::Continue);
        }
        if e.shadow.is_some() && !matches!(phase, Phase::RequestBody | Phase::ResponseBody) {
            self.shadow_save(i, phase);
        }
        let e = &mut self.entries[i];
        let called = call_now(e, &mut self.io, phase, n, eos).ok_or(None)?;
        self.settle(i, phase, called).map_err(Some)
    }

    /// What filter `i`'s callback came to, when nothing is left to wait for.
    #[inline]
    fn settle(&mut self, i: usize, phase: Phase, called: Called) -> Result<Step, Called> {
        if self.io.skip_response && matches!(phase, Phase::RequestHeaders) {
            self.entries[i].no_response = true;
        }
        match called {
            Called::Done {
                action,
                has_calls: false,
            } => Ok(self.decided(i, phase, action)),
            Called::Gone => Ok(Step::Continue),
            called => Err(called),
        }
    }

    /// The rest of [`HttpFilters::step`] when [`HttpFilters::step_now`] could not
    /// finish it: waits for the filter's VM and calls it (`pending` is `None`), then
    /// dispatches its `http_call`s or reports its failure.
    async fn step_wait(
        &mut self,
        i: usize,
        phase: Phase,
        n: u32,
        eos: bool,
        pending: Option<Called>,
    ) -> Step {
        let called = match pending {
            Some(called) => called,
            None => {
                let called =
                    Box::pin(call(&mut self.entries[i], &mut self.io, phase, n, eos)).await;
                match self.settle(i, phase, called) {
                    Ok(step) => return step,
                    Err(called) => called,
                }
            }
        };
        let action = match called {
            Called::Done { action, .. } => action,
            Called::Gone => return Step::Continue,
            Called::Failed(generation, f) => {
                return Box::pin(self.failed(i, generation, f, phase)).await;
            }
        };
        if self.io.local_reply.is_none() {
            let e = &self.entries[i];
            let (slot, plugin) = (e.slot.clone(), e.plugin.clone());
            let (generation, ctx) = (e.generation, e.ctx);
            if let Some(slot) = slot
                && let Err(f) = Box::pin(calls::dispatch(
                    &slot,
                    &plugin,
                    generation,
                    ctx,
                    &mut self.io,
                ))
                .await
            {
                return Box::pin(self.failed(i, generation, f, phase)).await;
            }
            // A filter that decided from a callout's answer may opt out then.
            if self.io.skip_response && matches!(phase, Phase::RequestHeaders) {
                self.entries[i].no_response = true;
            }
        }
        self.decided(i, phase, action)
    }

    /// What filter `i` decided with `action`, its callback (and its calls) over.
    #[inline]
    fn decided(&self, i: usize, phase: Phase, action: u32) -> Step {
        if let Some(r) = &self.io.local_reply {
            let name = &self.entries[i].plugin.config.name;
            tracing::debug!(filter = %name, status = r.status, details = %r.details, "local response");
            return Step::Local;
        }
        // 0 Continue, 2 ContinueAndEndStream; anything else stops iteration.
        let paused = !(action == 0 || action == 2 || self.io.resumed);
        match phase {
            Phase::RequestBody | Phase::ResponseBody if paused => Step::Pause,
            _ => {
                if paused {
                    // Nothing outstanding can resume a paused header phase here.
                    tracing::debug!(filter = %self.entries[i].plugin.config.name, ?phase, "paused with nothing outstanding; continuing");
                }
                Step::Continue
            }
        }
    }

    async fn failed(&mut self, i: usize, generation: u64, f: Failure, phase: Phase) -> Step {
        let e = &mut self.entries[i];
        e.skipped = true;
        let slot = e
            .slot
            .get_or_insert_with(|| worker::slot(&e.plugin))
            .clone();
        let during = format!("{phase:?}");
        super::fail_vm(&slot, &e.plugin, generation, &f, &during).await;
        Step::Failed(f)
    }
}

impl Drop for HttpFilters {
    fn drop(&mut self) {
        if self.finished || self.entries.iter().all(|e| e.generation == 0) {
            return;
        }
        // Contexts must be deleted even when the request was abandoned, or the guest
        // keeps their state forever.
        self.finish_now();
        if self
            .entries
            .iter()
            .enumerate()
            .all(|(i, e)| !needs_finish(e, i, self.seen))
        {
            return;
        }
        let rest = HttpFilters {
            entries: std::mem::take(&mut self.entries),
            io: std::mem::take(&mut self.io),
            seen: self.seen,
            bodies: self.bodies,
            buffers: self.buffers,
            grpc: self.grpc,
            saved: None,
            request_id: self.request_id.take(),
            timed: self.timed,
            clock: self.clock,
            trace: None,
            body_replaced: false,
            // If the task never runs (the worker is shutting down), do not respawn.
            finished: true,
        };
        run_or_spawn(rest.finish());
    }
}

fn count(io: &StreamIo, phase: Phase) -> u32 {
    let n = match phase {
        Phase::RequestHeaders => io.request.as_ref().map_or(0, |r| r.headers.len() + 4),
        Phase::ResponseHeaders => io.response.as_ref().map_or(0, |r| r.headers.len() + 1),
        Phase::RequestTrailers => io.request_trailers.as_ref().map_or(0, HeaderMap::len),
        Phase::ResponseTrailers => io.response_trailers.as_ref().map_or(0, HeaderMap::len),
        Phase::RequestBody | Phase::ResponseBody => 0,
    };
    n as u32
}

/// Runs `fut` here and now if it completes without waiting, as finishing a chain of
/// synchronous filters does; else hands the rest to the worker's runtime. This spares
/// the common path a task per request.
fn run_or_spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut fut = Box::pin(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if fut.as_mut().poll(&mut cx).is_pending()
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        rt.spawn(fut);
    }
}
