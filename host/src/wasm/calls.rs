//! `http_call`: the guest asks, the host sends the request to an upstream by its config
//! name once the callback returns, and delivers the answer to
//! `on_http_call_response` without holding the VM while the call is out. The answer
//! goes to the root context, which owns every call as on Envoy; the stream that made
//! the call waits for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Plugin;
use super::state::{CallResponse, PendingCall, StreamIo};
use super::vm::{Failure, ROOT_CONTEXT};
use super::worker::SlotRef;

/// The future of one outgoing call.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, String>> + Send>>;

/// Sends a request to an upstream named in the configuration. The snapshot gives each
/// plugin one (see [`Plugin::set_http_caller`]); the error is logged, and the guest
/// sees a call that failed (no headers).
pub trait HttpCaller: Send + Sync {
    /// Sends `request` (absolute path in the URI, `Host` set) to `upstream`; the
    /// response must have arrived in full within `timeout`.
    fn call(&self, upstream: &str, request: http::Request<Bytes>, timeout: Duration) -> CallFuture;
}

/// Runs the calls `context` made and delivers their answers (with `io`, the data of
/// the stream that context belongs to), until none are outstanding. Calls of other
/// contexts of the same VM are left to their own streams.
pub(crate) async fn dispatch(
    slot: &SlotRef,
    plugin: &Arc<Plugin>,
    generation: u64,
    context: u32,
    io: &mut Box<StreamIo>,
) -> Result<(), Failure> {
    loop {
        let calls: Vec<PendingCall> = {
            let mut g = slot.lock().await;
            if g.generation != generation {
                return Ok(());
            }
            match g.vm.as_mut() {
                Some(vm) => {
                    let pending = &mut vm.store.data_mut().pending_calls;
                    let (mine, others) = std::mem::take(pending)
                        .into_iter()
                        .partition(|c| c.context == context);
                    *pending = others;
                    mine
                }
                None => return Ok(()),
            }
        };
        if calls.is_empty() {
            return Ok(());
        }
        let caller = plugin.http_caller();
        let futures = calls
            .iter()
            .map(|c| send(caller.clone(), c, &plugin.config.name));
        let answers = futures_util::future::join_all(futures).await;
        for (call, answer) in calls.iter().zip(answers) {
            let mut g = slot.lock().await;
            if g.generation != generation {
                return Ok(());
            }
            let Some(vm) = g.vm.as_mut() else {
                return Ok(());
            };
            let n_headers = answer.headers.len() as u32;
            let n_trailers = answer.trailers.len() as u32;
            let body_len = answer.body.len() as u32;
            vm.store.data_mut().call_response = Some(answer);
            // The root context owns every call (as on Envoy): SDKs look the token up
            // there and set the effective context to the stream that made it.
            let r = vm
                .call_with(
                    io,
                    call.context,
                    |c| &c.on_http_call_response,
                    (ROOT_CONTEXT, call.token, n_headers, body_len, n_trailers),
                )
                .await;
            vm.store.data_mut().call_response = None;
            r?;
        }
    }
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
            let mut headers = vec![(
                ":status".to_string(),
                parts.status.as_str().as_bytes().to_vec(),
            )];
            for (k, v) in &parts.headers {
                headers.push((k.as_str().to_string(), v.as_bytes().to_vec()));
            }
            CallResponse {
                headers,
                body,
                trailers: Vec::new(),
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
