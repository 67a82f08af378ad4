//! An upstream's targets, their shared health, and the requests each has in flight.
//!
//! In-flight counts are what `least_request` and the bounded load of
//! `consistent_hash` compare; they are shared by all workers (a worker balancing on
//! its own counts would not see the load the others put on a target). A request counts
//! from the moment its target is picked until its response body has ended (or was
//! dropped, or the exchange failed).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::Authority;
use http_body::{Body, Frame, SizeHint};

/// One target of an upstream and its shared health and load.
#[derive(Debug)]
pub struct Target {
    /// `host:port`, as configured.
    pub address: Authority,
    /// Relative share of traffic.
    pub weight: u32,
    /// Result of the last active probe (true until a probe says otherwise).
    pub(super) healthy: AtomicBool,
    /// Passive back-off: down until this many ms after `now_ms`'s origin.
    pub(super) down_until_ms: AtomicU64,
    /// Requests sent to it whose response has not ended.
    active: AtomicU32,
    /// Outlier detection: attempts failed in a row.
    pub(super) failures_in_a_row: AtomicU32,
    /// Outlier detection: ejections since it last answered well after one.
    pub(super) ejections: AtomicU32,
}

impl Target {
    /// A target in rotation, with nothing in flight.
    pub(super) fn new(address: Authority, weight: u32) -> Self {
        Self {
            address,
            weight,
            healthy: AtomicBool::new(true),
            down_until_ms: AtomicU64::new(0),
            active: AtomicU32::new(0),
            failures_in_a_row: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
        }
    }

    /// Whether the balancer should pick this target now.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.down_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// [`Target::is_available`], reading the clock (through `now`) only while a
    /// passive back-off is set: a pick of a target in rotation costs two loads. An
    /// expired back-off is cleared on the way, so the clock is read once after it.
    pub fn is_available_with(&self, now: impl FnOnce() -> u64) -> bool {
        if !self.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.down_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if until > now() {
            return false;
        }
        // Lost to a newer mark: that one stands, and is read next time.
        let _ = self
            .down_until_ms
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        true
    }

    /// Requests in flight to it.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// When its passive back-off (a refused connection, an ejection) ends, if one was
    /// set and not yet seen to end.
    pub fn back_off_until(&self) -> Option<u64> {
        Some(self.down_until_ms.load(Ordering::Relaxed)).filter(|&u| u != 0)
    }
}

/// Every target of one upstream, in config order, and the upstream's total in flight.
#[derive(Debug)]
pub struct TargetSet {
    /// The targets; a target is known by its index here.
    pub list: Box<[Target]>,
    /// Requests in flight to any of them.
    active: AtomicU32,
    /// Bumped by every change of a target's health (see [`TargetSet::health_changed`]).
    epoch: AtomicU64,
    /// Locality's overload check: each target's tier, and each tier's requests in
    /// flight. Empty when nothing reads them (no zone tiers, or `zone_overload: off`),
    /// so that other upstreams pay one test of an empty slice per request.
    tier_of: Box<[u16]>,
    tier_active: Box<[AtomicU32]>,
}

impl TargetSet {
    /// The set of `list`, without tiers.
    #[cfg(test)]
    pub(super) fn new(list: Vec<Target>) -> Self {
        Self::with_tiers(list, Box::default())
    }

    /// The set of `list`, counting the requests in flight to each tier of `tier_of`
    /// (one entry per target) apart.
    pub(super) fn with_tiers(list: Vec<Target>, tier_of: Box<[u16]>) -> Self {
        let tiers = tier_of
            .iter()
            .map(|&t| usize::from(t) + 1)
            .max()
            .unwrap_or(0);
        Self {
            list: list.into(),
            active: AtomicU32::new(0),
            epoch: AtomicU64::new(0),
            tier_of,
            tier_active: (0..tiers).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Requests in flight to the targets of tier `tier` (0 when tiers are not counted).
    pub fn tier_active(&self, tier: u16) -> u32 {
        self.tier_active
            .get(usize::from(tier))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// The in-flight count of target `index`'s tier, when tiers are counted.
    fn tier_count(&self, index: usize) -> Option<&AtomicU32> {
        let &tier = self.tier_of.get(index)?;
        self.tier_active.get(usize::from(tier))
    }

    /// Requests in flight to the whole upstream.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// The health epoch: what failover and locality compare to know that the shares
    /// they computed still hold (the end of a back-off they track by its time).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Records that a target's health changed (probe, refused connection, ejection).
    pub fn health_changed(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
impl TargetSet {
    /// Targets `127.0.0.1:9000`, `:9001`, … with these weights.
    pub(crate) fn with_weights(weights: &[u32]) -> Self {
        let list = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let address = format!("127.0.0.1:{}", 9000 + i);
                Target::new(address.parse().unwrap_or_else(|e| panic!("{e}")), *w)
            })
            .collect();
        Self::new(list)
    }
}

/// A request in flight to target `index`: counted while this lives.
pub struct InFlight {
    set: Arc<TargetSet>,
    index: usize,
}

impl InFlight {
    /// Counts a request to target `index` of `set`.
    pub fn start(set: &Arc<TargetSet>, index: usize) -> Self {
        if let Some(t) = set.list.get(index) {
            t.active.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(n) = set.tier_count(index) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        set.active.fetch_add(1, Ordering::Relaxed);
        Self {
            set: Arc::clone(set),
            index,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(t) = self.set.list.get(self.index) {
            t.active.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(n) = self.set.tier_count(self.index) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
        self.set.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted until its last frame is out.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        flight: Option<InFlight>,
    }
}

impl<B> Tracked<B> {
    /// `inner`, counted by `flight` until it ends.
    pub fn new(inner: B, flight: InFlight) -> Self {
        Self {
            inner,
            flight: Some(flight),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        // Released as soon as the body is done, not when the server gets round to
        // dropping it: the client may already be sending its next request.
        let done = match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
            Poll::Pending => false,
        };
        if done {
            this.flight.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
