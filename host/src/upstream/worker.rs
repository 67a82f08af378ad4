//! Per-worker upstream state: the keep-alive connection pool and the balancing
//! policy's own state (running scores, a random stream). Each worker thread has its own, so the hot path contends for no
//! lock; an upstream kept across a reload keeps its id, and with it its pooled connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::Upstream;
use super::balance::{Local, PickRequest};
use super::pool::Pool;
use super::tiers::TierLocal;

struct WorkerUpstream {
    /// Dies with the upstream: entries whose owner is gone are pruned.
    owner: Weak<()>,
    pool: Arc<Pool>,
    balance: Local,
    /// This worker's view of the failover and locality shares, when there are tiers.
    tiers: Option<TierLocal>,
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
        let i = choose(upstream, w, request)?;
        Some((i, Arc::clone(&w.pool)))
    })
}

/// Target `index` (a sticky session's) with this worker's pool, if it may take the
/// request: it is in rotation, and its failover tier takes traffic.
pub fn pinned(upstream: &Upstream, index: usize) -> Option<(usize, Arc<Pool>)> {
    let target = upstream.targets.list.get(index)?;
    if !target.is_available(super::now_ms()) {
        return None;
    }
    with_state(upstream, |w| {
        if let (Some(tiers), Some(local)) = (&upstream.tiers, &mut w.tiers)
            && !tiers.takes_traffic(local, &upstream.targets, index)
        {
            return None;
        }
        Some((index, Arc::clone(&w.pool)))
    })
}

/// The target [`pick`] would choose, without the pool: the balancer's own cost.
pub fn pick_index(upstream: &Upstream, request: &PickRequest<'_>) -> Option<usize> {
    with_state(upstream, |w| choose(upstream, w, request))
}

/// The balancer's pick, within the tier failover and locality choose when there are
/// tiers. Inlined, with the tiered path out of line: an upstream without tiers pays
/// one test of an `Option` for them (callgrind, a round-robin pick: 228 instructions
/// before tiers, 252 with `choose` a call of its own, 230 so).
#[inline]
fn choose(upstream: &Upstream, w: &mut WorkerUpstream, request: &PickRequest<'_>) -> Option<usize> {
    if upstream.tiers.is_some() {
        return choose_tiered(upstream, w, request);
    }
    upstream
        .balancer
        .pick(&mut w.balance, &upstream.targets, request)
}

#[inline(never)]
fn choose_tiered(
    upstream: &Upstream,
    w: &mut WorkerUpstream,
    request: &PickRequest<'_>,
) -> Option<usize> {
    if let (Some(tiers), Some(local)) = (&upstream.tiers, &mut w.tiers)
        && let Some(within) = tiers
            .choose(local, &upstream.targets)
            .and_then(|t| tiers.within(t))
    {
        let set = &upstream.targets;
        return upstream
            .balancer
            .pick_in(&mut w.balance, set, request, within);
    }
    upstream
        .balancer
        .pick(&mut w.balance, &upstream.targets, request)
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
        tiers: upstream.tiers.as_ref().map(|t| t.local()),
    }
}
