//! A trace of the ABI calls of one route's next requests, switched on at run time
//! (`POST /filters/trace` on the admin listener): each host function a filter calls
//! on those requests is logged with its arguments, its result and its time, then the
//! trace switches itself off.
//!
//! Off, a request pays one relaxed atomic load ([`armed`]) and each host call a test
//! of its stream's trace pointer, which is `None`.

use std::fmt::{Debug, Display};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::state::HostState;

/// Whether any trace waits for requests: the only thing a request reads when none does.
static ARMED: AtomicBool = AtomicBool::new(false);

/// The traces waiting for requests, one per route at most.
static PENDING: Mutex<Vec<Pending>> = Mutex::new(Vec::new());

/// A trace asked for and not used up.
struct Pending {
    route: String,
    filter: Option<String>,
    /// Requests still to trace.
    left: u32,
    /// Requests traced so far.
    taken: u32,
}

/// The trace of one request: what its filters' host calls are logged with.
#[derive(Debug)]
pub(crate) struct StreamTrace {
    route: Box<str>,
    /// Only this filter's calls, if given.
    filter: Option<Box<str>>,
    /// Which of the trace's requests this is (1-based).
    seq: u32,
    /// The request's `x-request-id`, once its headers are known.
    request_id: OnceLock<Box<str>>,
}

/// Traces the ABI calls of the next `requests` requests on `route` (of `filter` only,
/// if given), replacing a trace of that route not yet used up.
pub(crate) fn arm(route: &str, filter: Option<&str>, requests: u32) {
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    pending.retain(|p| p.route != route);
    pending.push(Pending {
        route: route.to_string(),
        filter: filter.map(str::to_string),
        left: requests,
        taken: 0,
    });
    ARMED.store(true, Ordering::Relaxed);
    tracing::info!(target: "portcullis::trace", route, filter, requests, "ABI trace armed");
}

/// Whether some route's requests are to be traced: the check every request makes.
#[inline]
pub(crate) fn armed() -> bool {
    ARMED.load(Ordering::Relaxed)
}

/// The trace of a request on `route`, if one is armed for it (counting the request).
pub(crate) fn take(route: &str) -> Option<Arc<StreamTrace>> {
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    let i = pending.iter().position(|p| p.route == route)?;
    let p = &mut pending[i];
    p.left = p.left.saturating_sub(1);
    p.taken += 1;
    let trace = Arc::new(StreamTrace {
        route: route.into(),
        filter: p.filter.as_deref().map(Into::into),
        seq: p.taken,
        request_id: OnceLock::new(),
    });
    if p.left == 0 {
        let done = pending.swap_remove(i);
        tracing::info!(target: "portcullis::trace", route, requests = done.taken, "ABI trace finished");
        if pending.is_empty() {
            ARMED.store(false, Ordering::Relaxed);
        }
    }
    Some(trace)
}

/// A host call of a traced request, begun.
pub(crate) struct Call {
    trace: Arc<StreamTrace>,
    plugin: Arc<str>,
    context: u32,
    started: Instant,
}

impl Call {
    /// A call of a traced request's filter starts: `None` (at once) for any other.
    #[inline]
    pub(crate) fn begin(state: &HostState) -> Option<Call> {
        let trace = state.io.trace.as_ref()?;
        Some(Call {
            trace: Arc::clone(trace),
            plugin: Arc::clone(&state.plugin_name),
            context: state.running_context,
            started: Instant::now(),
        })
    }

    /// The call `name` with `args` returned `result`: logs it.
    pub(crate) fn end(self, name: &str, args: &[&dyn Display], result: &dyn Debug) {
        let took = self.started.elapsed();
        self.trace
            .record(&self.plugin, self.context, name, args, result, took);
    }
}

impl StreamTrace {
    /// Notes the request's id, read from its headers when they reach the chain.
    pub(crate) fn set_request_id(&self, id: Option<&http::HeaderValue>) {
        let id = id.and_then(|v| v.to_str().ok()).unwrap_or("-");
        let _ = self.request_id.set(id.into());
    }

    /// Logs one host call of filter `plugin` (unless the trace is of another filter).
    pub(crate) fn record(
        &self,
        plugin: &str,
        context: u32,
        call: &str,
        args: &[&dyn Display],
        result: &dyn Debug,
        took: Duration,
    ) {
        if self.filter.as_deref().is_some_and(|f| f != plugin) {
            return;
        }
        let args = args
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let request_id = self.request_id.get().map_or("-", |s| &**s);
        tracing::info!(
            target: "portcullis::trace",
            route = &*self.route,
            filter = plugin,
            request = self.seq,
            request_id,
            context,
            ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            "{call}({args}) -> {result:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_counts_its_requests_then_switches_itself_off() {
        arm("trace-unit", Some("f"), 2);
        assert!(armed());
        let first = take("trace-unit").map(|t| t.seq);
        assert!(take("another-route").is_none());
        let second = take("trace-unit").map(|t| t.seq);
        assert_eq!((first, second), (Some(1), Some(2)));
        assert!(take("trace-unit").is_none(), "a third request was traced");
    }
}
