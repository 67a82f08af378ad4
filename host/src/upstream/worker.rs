//! Per-worker upstream state: the pooled keep-alive client and the balancer's running
//! scores. Each worker thread has its own, so the hot path takes no lock; an upstream
//! kept across a reload keeps its id, and with it its pooled connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{Upstream, balance};
use crate::proxy::ProxyBody;
use crate::tls::connector::UpstreamConnector;

/// The pooled client one worker uses for one upstream: HTTP/1.1, or HTTP/2 when a TLS
/// upstream picks it by ALPN.
pub type PooledClient = Client<UpstreamConnector, ProxyBody>;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

struct WorkerUpstream {
    /// Dies with the upstream: entries whose owner is gone are pruned.
    owner: Weak<()>,
    client: PooledClient,
    scores: Vec<i64>,
}

thread_local! {
    static STATE: RefCell<HashMap<u64, WorkerUpstream>> = RefCell::new(HashMap::new());
}

/// Picks a target of `upstream` for this worker and returns it with the worker's
/// client. When every target is marked down, picks among all of them (fail open).
pub fn pick(upstream: &Upstream) -> Option<(usize, PooledClient)> {
    let now = super::now_ms();
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        if !state.contains_key(&upstream.id) {
            state.retain(|_, w| w.owner.strong_count() > 0);
            state.insert(upstream.id, new_worker_state(upstream, &upstream.alive));
        }
        let w = state.get_mut(&upstream.id)?;
        let targets = &upstream.targets;
        let any_up = targets.iter().any(|t| t.is_available(now));
        let i = balance::pick(&mut w.scores, |i| {
            let t = targets.get(i)?;
            (!any_up || t.is_available(now)).then_some(t.weight)
        })?;
        Some((i, w.client.clone()))
    })
}

fn new_worker_state(upstream: &Upstream, alive: &Arc<()>) -> WorkerUpstream {
    let connector = upstream.connector();
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .build(connector);
    WorkerUpstream {
        owner: Arc::downgrade(alive),
        client,
        scores: vec![0; upstream.targets.len()],
    }
}
