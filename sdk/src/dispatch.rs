//! The glue between the proxy-wasm dispatcher and a [`Filter`]: a root context that
//! parses and validates the configuration, and an HTTP context per request that calls
//! the filter's phases and carries out their [`Action`]s.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{self, BufferType, ContextType, LogLevel, MapType};

use crate::http::HeaderOp;
use crate::{Action, Error, Filter, LocalResponse, Request, Response, config};

/// Portcullis' foreign function for "this context needs no response phase".
const SKIP_RESPONSE_PHASE: &str = "portcullis_skip_response_phase";

thread_local! {
    /// The stream context whose phase is running: a Redis call made now belongs to it.
    static RUNNING: Cell<u32> = const { Cell::new(0) };
    /// Redis calls on their way: token → the stream context that made them.
    static CALLS: RefCell<HashMap<u32, u32>> = RefCell::new(HashMap::new());
    /// Response-header changes a Redis reply queued for a stream context, delivered
    /// outside that context's own callbacks; it takes them in its response phase.
    /// Empty unless a filter uses Redis, so that no other request pays for it.
    static LATE_OPS: RefCell<HashMap<u32, Vec<HeaderOp>>> = RefCell::new(HashMap::new());
    /// Hands a Redis reply to the filter (set once it is configured).
    static ON_REDIS: RefCell<Option<Rc<RedisHandler>>> = const { RefCell::new(None) };
}

type RedisHandler = dyn Fn(u32, u32, Result<crate::redis::Value, crate::redis::RedisError>);

/// Notes that the Redis call `token` belongs to the running stream context.
pub(crate) fn waits_for(token: u32) {
    let context = RUNNING.with(Cell::get);
    CALLS.with(|c| c.borrow_mut().insert(token, context));
}

/// Higress's callback for a Redis reply: to the root context, as the reply to a call
/// of the stream context that made it (looked up by token). Exported on wasm32 only;
/// native builds (unit tests of filter logic) have no host to call it.
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
extern "C" fn proxy_on_redis_call_response(_root: u32, token: u32, status: u32, size: usize) {
    on_redis_reply(token, status, size);
}

fn on_redis_reply(token: u32, status: u32, size: usize) {
    let Some(context) = CALLS.with(|c| c.borrow_mut().remove(&token)) else {
        return;
    };
    let reply = crate::redis::reply(status, size);
    let Some(handler) = ON_REDIS.with(|h| h.borrow().clone()) else {
        return;
    };
    // The stream may be gone (the client left): the host refuses it then.
    if let Err(status) = hostcalls::set_effective_context(context) {
        log::debug!("cannot return to the request of a Redis reply: {status:?}");
        return;
    }
    handler(context, token, reply);
}

/// The response-header changes Redis replies queued for stream `context`: one look at
/// an empty map for a filter that does not use Redis.
fn take_late_ops(context: u32) -> Option<Vec<HeaderOp>> {
    LATE_OPS.with(|l| {
        let mut l = l.borrow_mut();
        if l.is_empty() {
            None
        } else {
            l.remove(&context)
        }
    })
}

/// Installs the root context of filter `F`: called from the module's `_initialize`.
pub fn start<F: Filter>() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root::<F> { filter: None }));
}

struct Root<F> {
    filter: Option<Rc<F>>,
}

impl<F: Filter> Context for Root<F> {}

impl<F: Filter> RootContext for Root<F> {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(b) => b.unwrap_or_default(),
            Err(status) => {
                log::error!("cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        match config::parse::<F::Config>(&bytes).and_then(F::new) {
            Ok(filter) => {
                let filter = Rc::new(filter);
                let f = filter.clone();
                let handler: Rc<RedisHandler> = Rc::new(move |context, token, reply| {
                    RUNNING.set(context);
                    let mut req = Request::default();
                    let result = f.on_redis_reply(&mut req, token, reply);
                    if !req.response_ops.is_empty() {
                        LATE_OPS.with(|l| {
                            let mut l = l.borrow_mut();
                            l.entry(context).or_default().extend(req.response_ops);
                        });
                    }
                    // The stream's own changes are not known here: keep its response
                    // phase (one guest entry more, for requests that used Redis).
                    if let types::Action::Continue = decide(&*f, true, result)
                        && let Err(status) = hostcalls::resume_http_request()
                    {
                        log::error!("cannot resume the request: {status:?}");
                    }
                });
                ON_REDIS.with(|h| *h.borrow_mut() = Some(handler));
                self.filter = Some(filter);
                true
            }
            Err(e) => {
                // The host turns this line into the reload's error message.
                log::error!("{e}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id: context_id,
            filter: self.filter.clone(),
            response_ops: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream<F> {
    id: u32,
    filter: Option<Rc<F>>,
    response_ops: Vec<HeaderOp>,
}

impl<F> Drop for Stream<F> {
    fn drop(&mut self) {
        // A stream that ended before its response phase leaves nothing behind.
        take_late_ops(self.id);
    }
}

impl<F: Filter> Context for Stream<F> {
    /// A foreign call answered later: the filter decides the paused request.
    fn on_foreign_function(&mut self, token: u32, size: usize) {
        let Some(filter) = self.filter.clone() else {
            return;
        };
        let reply = match hostcalls::get_buffer(BufferType::CallData, 0, size) {
            Ok(b) => b.unwrap_or_default(),
            Err(status) => {
                log::error!("cannot read a foreign function's answer: {status:?}");
                Vec::new()
            }
        };
        RUNNING.set(self.id);
        let mut req = Request::default();
        let result = filter.on_foreign_reply(&mut req, token, &reply);
        self.response_ops.extend(req.response_ops);
        let has_ops = !self.response_ops.is_empty();
        if let types::Action::Continue = decide(&*filter, has_ops, result)
            && let Err(status) = hostcalls::resume_http_request()
        {
            log::error!("cannot resume the request: {status:?}");
        }
    }
}

/// Carries out a request-phase decision; tells the host when the filter wants no
/// response phase (unless it still waits for an answer).
fn decide<F: Filter>(filter: &F, has_ops: bool, result: Result<Action, Error>) -> types::Action {
    let waits = matches!(result, Ok(Action::Wait));
    if !waits && !filter.wants_response() && !has_ops {
        // Nothing to do when the response comes: tell the host (other hosts do
        // not know the function and answer NOT_FOUND, which changes nothing).
        let _ = hostcalls::call_foreign_function(SKIP_RESPONSE_PHASE, None);
    }
    carry_out(result)
}

impl<F: Filter> HttpContext for Stream<F> {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> types::Action {
        let Some(filter) = self.filter.clone() else {
            return fail(&Error::Other(
                "the filter has no valid configuration".into(),
            ));
        };
        RUNNING.set(self.id);
        let mut req = Request::default();
        let result = filter.on_request(&mut req);
        self.response_ops = req.response_ops;
        decide(&*filter, !self.response_ops.is_empty(), result)
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> types::Action {
        let Some(filter) = self.filter.clone() else {
            return types::Action::Continue;
        };
        let mut ops = std::mem::take(&mut self.response_ops);
        if let Some(late) = take_late_ops(self.id) {
            ops.extend(late);
        }
        for op in ops {
            let map = MapType::HttpResponseHeaders;
            let (name, result) = match &op {
                HeaderOp::Set(n, v) => (n, hostcalls::set_map_value(map, n, Some(v))),
                HeaderOp::Add(n, v) => (n, hostcalls::add_map_value(map, n, v)),
                HeaderOp::Remove(n) => (n, hostcalls::set_map_value(map, n, None)),
            };
            if let Err(status) = result {
                log::warn!("cannot change response header {name}: {status:?}");
            }
        }
        let mut resp = Response::default();
        carry_out(filter.on_response(&mut resp))
    }
}

fn carry_out(result: Result<Action, Error>) -> types::Action {
    match result {
        Ok(Action::Continue) => types::Action::Continue,
        Ok(Action::Wait) => types::Action::Pause,
        Ok(Action::Respond(local)) => match send(&local) {
            Ok(()) => types::Action::Pause,
            Err(status) => {
                log::error!("cannot send a local response: {status}");
                types::Action::Continue
            }
        },
        Err(e) => fail(&e),
    }
}

/// A phase that could not decide fails closed: 500, and the reason in the log.
fn fail(e: &Error) -> types::Action {
    log::error!("{e}");
    match send(&LocalResponse::new(500).body("filter error\n")) {
        Ok(()) => types::Action::Pause,
        Err(_) => types::Action::Continue,
    }
}

/// `proxy_send_local_response`, called directly: the `proxy-wasm` crate's wrapper
/// panics when the host refuses, and a panic would trap the filter.
fn send(local: &LocalResponse) -> Result<(), u32> {
    let headers = serialize_map(&local.headers);
    let status = send_local_response(local.status, &local.body, &headers);
    if status == 0 { Ok(()) } else { Err(status) }
}

fn serialize_map(map: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + map
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>(),
    );
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(target_arch = "wasm32")]
fn send_local_response(status: u32, body: &[u8], headers: &[u8]) -> u32 {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_send_local_response(
            status_code: u32,
            details_data: *const u8,
            details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
    }
    // SAFETY: every pointer/length pair describes a live slice for the call's duration.
    unsafe {
        proxy_send_local_response(
            status,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn send_local_response(_status: u32, _body: &[u8], _headers: &[u8]) -> u32 {
    // Native builds exist for unit tests of filter logic; there is no host to answer.
    1
}
