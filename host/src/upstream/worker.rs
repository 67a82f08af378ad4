//! Per-worker upstream state: the keep-alive connection pool and the balancer's
//! running scores. Each worker thread has its own, so the hot path contends for no
//! lock; an upstream kept across a reload keeps its id, and with it its pooled connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::pool::Pool;
use super::{Upstream, balance};

struct WorkerUpstream {
    /// Dies with the upstream: entries whose owner is gone are pruned.
    owner: Weak<()>,
    pool: Arc<Pool>,
    scores: Vec<i64>,
}

thread_local! {
    // Looked up on every request: foldhash, not SipHash, for a key that is our own id.
    static STATE: RefCell<HashMap<u64, WorkerUpstream, foldhash::fast::FixedState>> =
        const { RefCell::new(HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0))) };
}

/// Picks a target of `upstream` for this worker and returns it with the worker's
/// pool. When every target is marked down, picks among all of them (fail open).
pub fn pick(upstream: &Upstream) -> Option<(usize, Arc<Pool>)> {
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
        Some((i, Arc::clone(&w.pool)))
    })
}

fn new_worker_state(upstream: &Upstream, alive: &Arc<()>) -> WorkerUpstream {
    WorkerUpstream {
        owner: Arc::downgrade(alive),
        pool: Arc::new(Pool::new(upstream.connector(), upstream.targets.len())),
        scores: vec![0; upstream.targets.len()],
    }
}
