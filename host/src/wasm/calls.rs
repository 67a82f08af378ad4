//! Callouts: the guest asks (`http_call`, `grpc_call`, `grpc_stream`, `redis_call`,
//! or a foreign function that answers later), the host sends
//! the request to an upstream by its config name once the callback returns, and
//! delivers what comes back to the root context, which owns every callout as on
//! Envoy, without holding the VM while the callout is out. The stream that made a
//! callout waits for its answer (see [`dispatch`]).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::Plugin;
use super::grpc::{self, GrpcEvent};
use super::redis::{self, Reply};
use super::state::{CallResponse, Deferred, PendingCall, StreamIo};
use super::vm::{Failure, Pick, ROOT_CONTEXT, Vm};
use super::worker::{self, Slot, SlotRef};
use crate::body::ProxyBody;

/// The future of one outgoing call.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, String>> + Send>>;

/// The future of an exchange whose request and response bodies stream (a gRPC callout).
pub type StreamFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<ProxyBody>, String>> + Send>>;

/// Sends a request to an upstream named in the configuration. The snapshot gives each
/// plugin one (see [`Plugin::set_http_caller`]); the error is logged, and the guest
/// sees a call that failed (no headers, or a gRPC status).
pub trait HttpCaller: Send + Sync {
    /// Sends `request` (absolute path in the URI, `Host` set) to `upstream`; the
    /// response must have arrived in full within `timeout`.
    fn call(&self, upstream: &str, request: http::Request<Bytes>, timeout: Duration) -> CallFuture;

    /// Whether `upstream` names an upstream this caller reaches: a gRPC callout to one
    /// it does not is refused at once (`PARSE_FAILURE`, as Envoy answers for an unknown
    /// cluster).
    fn knows(&self, upstream: &str) -> bool {
        let _ = upstream;
        true
    }

    /// Sends `request` to `upstream` as its body streams, and returns the response head
    /// with the body still streaming (a gRPC callout). Callers that cannot fail.
    fn open(&self, upstream: &str, request: http::Request<ProxyBody>) -> StreamFuture {
        let _ = request;
        let name = upstream.to_string();
        Box::pin(async move { Err(format!("no streaming exchange reaches `{name}` here")) })
    }
}

/// The caller a plugin and its VMs share: set when a snapshot goes live.
pub(crate) type CallerCell = Arc<RwLock<Option<Arc<dyn HttpCaller>>>>;

/// The caller in `cell`, if one was set.
pub(crate) fn caller_in(cell: &CallerCell) -> Option<Arc<dyn HttpCaller>> {
    match cell.read() {
        Ok(h) => h.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// What came back from a callout, to deliver to the guest.
pub(crate) enum Event {
    /// An `http_call`'s answer (a failed call has no headers).
    Http { token: u32, response: CallResponse },
    /// One event of a gRPC callout.
    Grpc { token: u32, event: GrpcEvent },
    /// A deferred foreign call's answer (see [`super::foreign::Answer::Later`]).
    Foreign { token: u32, answer: Vec<u8> },
    /// A Redis call's reply (see [`super::redis`]).
    Redis { token: u32, reply: Reply },
}

/// A callout event on its way, boxed so that HTTP and gRPC ones wait together.
type EventFuture = Pin<Box<dyn Future<Output = Event> + Send>>;

/// Where a gRPC stream delivers its events once the stream that opened it stopped
/// waiting: straight to its VM, on the root context.
#[derive(Clone)]
pub(crate) struct Home {
    pub slot: Weak<worker::AsyncMutex<Slot>>,
    pub plugin: Weak<Plugin>,
    pub generation: u64,
}

/// Runs the callouts `context` made and delivers what comes back (with `io`, the data
/// of the stream that context belongs to): until no call is outstanding and, for a
/// stream context that is still paused, no gRPC stream it opened is. gRPC streams
/// outliving this (opened by the root context, or by a stream that went on) deliver
/// their later events on the root context with no stream data. Callouts of other
/// contexts of the same VM are left to their own streams.
pub(crate) async fn dispatch(
    slot: &SlotRef,
    plugin: &Arc<Plugin>,
    generation: u64,
    context: u32,
    io: &mut Box<StreamIo>,
) -> Result<(), Failure> {
    let mut inflight: FuturesUnordered<EventFuture> = FuturesUnordered::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut streams: HashSet<u32> = HashSet::new();
    let home = Home {
        slot: Arc::downgrade(slot),
        plugin: Arc::downgrade(plugin),
        generation,
    };
    loop {
        let (calls, opened, foreign) = {
            let mut g = slot.lock().await;
            if g.generation != generation {
                return Ok(());
            }
            let Some(vm) = g.vm.as_mut() else {
                return Ok(());
            };
            let st = vm.store.data_mut();
            (
                take_mine(&mut st.pending_calls, |c| c.context == context),
                take_mine(&mut st.pending_grpc, |c| c.context == context),
                take_mine(&mut st.pending_foreign, |c| c.context == context),
            )
        };
        for f in foreign {
            let token = f.token;
            inflight.push(match f.answer {
                Deferred::Foreign(answer) => Box::pin(async move {
                    Event::Foreign {
                        token,
                        answer: answer.await,
                    }
                }),
                Deferred::Redis(reply) => Box::pin(async move {
                    Event::Redis {
                        token,
                        reply: reply.await,
                    }
                }),
            });
        }
        let caller = plugin.http_caller();
        for call in calls {
            let (caller, filter) = (caller.clone(), plugin.config.name.clone());
            inflight.push(Box::pin(async move {
                let response = send(caller, &call, &filter).await;
                Event::Http {
                    token: call.token,
                    response,
                }
            }));
        }
        for g in opened {
            let token = g.token;
            match grpc::start(caller.clone(), g, &plugin.config.name) {
                grpc::Started::Call(fut) => inflight.push(Box::pin(async move {
                    Event::Grpc {
                        token,
                        event: fut.await,
                    }
                })),
                grpc::Started::Stream(events) => {
                    streams.insert(token);
                    tokio::spawn(relay_task(token, events, tx.clone(), home.clone()));
                }
            }
        }
        // A paused request waits for the streams it opened; nothing else does.
        let paused =
            context != ROOT_CONTEXT && !io.resumed && !io.closed && io.local_reply.is_none();
        let waits_for_streams = paused && !streams.is_empty();
        if inflight.is_empty() && !waits_for_streams {
            break;
        }
        let event = tokio::select! {
            Some(e) = inflight.next(), if !inflight.is_empty() => e,
            Some(e) = rx.recv() => e,
        };
        if let Event::Grpc { token, event } = &event
            && event.is_last()
        {
            streams.remove(token);
        }
        let mut g = slot.lock().await;
        if g.generation != generation {
            return Ok(());
        }
        let Some(vm) = g.vm.as_mut() else {
            return Ok(());
        };
        deliver(vm, io, context, event).await?;
    }
    // Streams still open deliver on their own from now on; what they sent meanwhile is
    // delivered here first, under one lock, so that nothing overtakes it.
    rx.close();
    let mut g = slot.lock().await;
    if g.generation != generation {
        return Ok(());
    }
    if let Some(vm) = g.vm.as_mut() {
        while let Ok(event) = rx.try_recv() {
            deliver(vm, io, context, event).await?;
        }
    }
    Ok(())
}

/// Takes the items of `list` that `mine` picks, leaving the others.
fn take_mine<T>(list: &mut Vec<T>, mine: impl Fn(&T) -> bool) -> Vec<T> {
    if list.is_empty() {
        return Vec::new();
    }
    let (mine, others) = std::mem::take(list).into_iter().partition(mine);
    *list = others;
    mine
}

/// [`relay`], boxed as `Send` where the compiler can see it is (the cycle dispatch →
/// relay → dispatch hides that inside `dispatch`).
fn relay_task(
    token: u32,
    events: mpsc::UnboundedReceiver<GrpcEvent>,
    waiting: mpsc::UnboundedSender<Event>,
    home: Home,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(relay(token, events, waiting, home))
}

/// Passes a gRPC stream's events to the loop that waits for them, or, once it stopped
/// waiting, delivers them itself.
async fn relay(
    token: u32,
    mut events: mpsc::UnboundedReceiver<GrpcEvent>,
    waiting: mpsc::UnboundedSender<Event>,
    home: Home,
) {
    let mut waiting = Some(waiting);
    while let Some(event) = events.recv().await {
        let mut event = Event::Grpc { token, event };
        if let Some(w) = &waiting {
            match w.send(event) {
                Ok(()) => continue,
                Err(mpsc::error::SendError(e)) => event = e,
            }
            waiting = None;
        }
        if !deliver_home(&home, event).await {
            return;
        }
    }
}

/// Delivers `event` on the root context of its VM, then runs the callouts that made;
/// false once the VM is gone or failed (nothing more to deliver).
async fn deliver_home(home: &Home, event: Event) -> bool {
    let (Some(slot), Some(plugin)) = (home.slot.upgrade(), home.plugin.upgrade()) else {
        return false;
    };
    let mut io = Box::default();
    let delivered = {
        let mut g = worker::lock(&slot).await;
        if g.generation != home.generation {
            return false;
        }
        let Some(vm) = g.vm.as_mut() else {
            return false;
        };
        deliver(vm, &mut io, ROOT_CONTEXT, event).await
    };
    let result = match delivered {
        Ok(()) => {
            Box::pin(dispatch(
                &slot,
                &plugin,
                home.generation,
                ROOT_CONTEXT,
                &mut io,
            ))
            .await
        }
        Err(f) => Err(f),
    };
    match result {
        Ok(()) => true,
        Err(f) => {
            super::fail_vm(&slot, &plugin, home.generation, &f, "a gRPC callback").await;
            false
        }
    }
}

/// Hands `event` to the guest: to the root context (which owns every callout, as on
/// Envoy: SDKs look the token up there and set the effective context to the context
/// that made it), with the data of the stream `context` belongs to in reach.
async fn deliver(
    vm: &mut Vm,
    io: &mut Box<StreamIo>,
    context: u32,
    event: Event,
) -> Result<(), Failure> {
    let (token, event) = match event {
        Event::Http { token, response } => {
            let n_headers = response.headers.len() as u32;
            let n_trailers = response.trailers.len() as u32;
            let body_len = response.body.len() as u32;
            vm.store.data_mut().call_response = Some(response);
            let r = vm
                .call_with(
                    io,
                    context,
                    |c| &c.on_http_call_response,
                    (ROOT_CONTEXT, token, n_headers, body_len, n_trailers),
                )
                .await;
            vm.store.data_mut().call_response = None;
            return r.map(drop);
        }
        Event::Grpc { token, event } => (token, event),
        Event::Foreign { token, answer } => {
            // To the context that made the call, as Envoy delivers them.
            let size = u32::try_from(answer.len()).unwrap_or(u32::MAX);
            let pick: Pick<_, ()> = |c| &c.on_foreign_function;
            return with_call_data(vm, io, context, answer, pick, (context, token, size)).await;
        }
        Event::Redis { token, reply } => {
            // To the root context, which owns every callout, as Higress delivers them;
            // a failure carries its reason where the reply would be.
            let (status, data) = match reply {
                Ok(reply) => (0, reply),
                Err(why) => (redis::FAILED, why.into_bytes()),
            };
            let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let pick: Pick<_, ()> = |c| &c.on_redis_call_response;
            let params = (ROOT_CONTEXT, token, status, size);
            return with_call_data(vm, io, context, data, pick, params).await;
        }
    };
    let st = vm.store.data_mut();
    // A cancelled callout says nothing more.
    if !st.grpc.contains_key(&token) {
        return Ok(());
    }
    if event.is_last() {
        st.grpc.remove(&token);
    }
    // Each event is readable where the ABI puts it (maps 4/5, buffer 5, get_status),
    // and its callback gets a count (entries, bytes) or the status.
    let mut response = CallResponse::default();
    let (pick, n): (Pick<(u32, u32, u32), ()>, u32) = match event {
        GrpcEvent::InitialMetadata(headers) => {
            let n = headers.len() as u32;
            response.headers = headers;
            (|c| &c.on_grpc_receive_initial_metadata, n)
        }
        GrpcEvent::Message(body) | GrpcEvent::Reply(body) => {
            let n = body.len() as u32;
            response.body = body;
            (|c| &c.on_grpc_receive, n)
        }
        GrpcEvent::TrailingMetadata(trailers) => {
            let n = trailers.len() as u32;
            response.trailers = trailers;
            (|c| &c.on_grpc_receive_trailing_metadata, n)
        }
        GrpcEvent::Close(code, message) => {
            response.status = Some((code, message));
            (|c| &c.on_grpc_close, code)
        }
    };
    st.call_response = Some(response);
    let r = vm
        .call_with(io, context, pick, (ROOT_CONTEXT, token, n))
        .await;
    vm.store.data_mut().call_response = None;
    r.map(drop)
}

/// Calls the guest's `pick` with `data` readable as a buffer (`CallData`, or
/// `RedisCallResponse`) for the length of the call.
async fn with_call_data<P: wasmtime::WasmParams + Sync>(
    vm: &mut Vm,
    io: &mut Box<StreamIo>,
    context: u32,
    data: Vec<u8>,
    pick: Pick<P, ()>,
    params: P,
) -> Result<(), Failure> {
    vm.store.data_mut().call_data = Some(data);
    let r = vm.call_with(io, context, pick, params).await;
    vm.store.data_mut().call_data = None;
    r.map(drop)
}

async fn send(
    caller: Option<Arc<dyn HttpCaller>>,
    call: &PendingCall,
    filter: &str,
) -> CallResponse {
    let Some(caller) = caller else {
        tracing::warn!(filter, upstream = %call.upstream, "http_call: no upstreams are reachable from this filter");
        return CallResponse::default();
    };
    let request = match build_request(call) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(filter, upstream = %call.upstream, "http_call: bad request: {e}");
            return CallResponse::default();
        }
    };
    let fut = caller.call(&call.upstream, request, call.timeout);
    match tokio::time::timeout(call.timeout, fut).await {
        Ok(Ok(resp)) => {
            let (parts, body) = resp.into_parts();
            CallResponse {
                headers: grpc::head_pairs(&parts),
                body,
                ..CallResponse::default()
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(filter, upstream = %call.upstream, "http_call failed: {e}");
            CallResponse::default()
        }
        Err(_) => {
            tracing::warn!(filter, upstream = %call.upstream, "http_call timed out after {:?}", call.timeout);
            CallResponse::default()
        }
    }
}

fn build_request(call: &PendingCall) -> Result<http::Request<Bytes>, String> {
    let mut b = http::Request::builder();
    let (mut path, mut authority) = ("/".to_string(), None);
    for (k, v) in &call.headers {
        let v = String::from_utf8_lossy(v).into_owned();
        match k.as_str() {
            ":method" => b = b.method(v.as_str()),
            ":path" => path = v,
            ":authority" => authority = Some(v),
            ":scheme" => {}
            k if k.starts_with(':') => {}
            k => b = b.header(k, v),
        }
    }
    if let Some(a) = authority {
        b = b.header(http::header::HOST, a);
    }
    b.uri(path)
        .body(call.body.clone())
        .map_err(|e| e.to_string())
}
