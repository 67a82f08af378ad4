//! Per-worker upstream state: the keep-alive connection pool and the balancing
//! policy's own state (running scores, a random stream). Each worker thread has its own, so the hot path contends for no
//! lock; an upstream kept across a reload keeps its id, and with it its pooled connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::Upstream;
use super::balance::{Local, PickRequest};
use super::pool::Pool;

struct WorkerUpstream {
    /// Dies with the upstream: entries whose owner is gone are pruned.
    owner: Weak<()>,
    pool: Arc<Pool>,
    balance: Local,
}

thread_local! {
    // Looked up on every request: foldhash, not SipHash, for a key that is our own id.
    static STATE: RefCell<HashMap<u64, WorkerUpstream, foldhash::fast::FixedState>> =
        const { RefCell::new(HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0))) };
}

/// Picks a target of `upstream` for `request` on this worker and returns it with the
/// worker's pool. When every target is marked down, picks among all of them (fail
/// open).
pub fn pick(upstream: &Upstream, request: &PickRequest<'_>) -> Option<(usize, Arc<Pool>)> {
    with_state(upstream, |w| {
        let i = upstream
            .balancer
            .pick(&mut w.balance, &upstream.targets, request)?;
        Some((i, Arc::clone(&w.pool)))
    })
}

/// This worker's pool for `upstream`, for a request whose target is already known (a
/// sticky session's).
pub fn pool(upstream: &Upstream) -> Option<Arc<Pool>> {
    with_state(upstream, |w| Some(Arc::clone(&w.pool)))
}

/// The target [`pick`] would choose, without the pool: the balancer's own cost.
pub fn pick_index(upstream: &Upstream, request: &PickRequest<'_>) -> Option<usize> {
    with_state(upstream, |w| {
        upstream
            .balancer
            .pick(&mut w.balance, &upstream.targets, request)
    })
}

/// Runs `f` on this worker's state for `upstream`, made on first use.
fn with_state<T>(
    upstream: &Upstream,
    f: impl FnOnce(&mut WorkerUpstream) -> Option<T>,
) -> Option<T> {
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        if !state.contains_key(&upstream.id) {
            state.retain(|_, w| w.owner.strong_count() > 0);
            state.insert(upstream.id, new_worker_state(upstream, &upstream.alive));
        }
        f(state.get_mut(&upstream.id)?)
    })
}

fn new_worker_state(upstream: &Upstream, alive: &Arc<()>) -> WorkerUpstream {
    WorkerUpstream {
        owner: Arc::downgrade(alive),
        pool: Arc::new(Pool::new(
            upstream.connector(),
            upstream.targets.list.len(),
            upstream.config.protocol == crate::config::UpstreamProtocol::H2c,
            upstream.limits.clone(),
        )),
        balance: upstream.balancer.local(),
    }
}
