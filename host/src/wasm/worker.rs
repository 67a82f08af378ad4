//! Per-worker VMs: one per filter per worker thread, keyed by the plugin and dropped
//! once the plugin (its snapshot) is gone, plus the root task that delivers timers
//! and queue notifications to each.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Plugin;
use super::breaker::Breaker;
use super::vm::{Failure, ROOT_CONTEXT, Vm};

/// Wakes a VM's root task: a shared queue it registered has data.
#[derive(Default)]
pub(crate) struct VmSignal {
    pub notify: Notify,
    pub ready: Mutex<Vec<u32>>,
}

impl VmSignal {
    /// Marks `queue` ready and wakes the root task.
    pub fn queue_ready(&self, queue: u32) {
        if let Ok(mut r) = self.ready.lock()
            && !r.contains(&queue)
        {
            r.push(queue);
        }
        self.notify.notify_one();
    }
}

/// The VM of one filter on one worker. `vm` is `None` before the first use and after
/// a failure; `generation` counts the VMs made, so a stream can tell its context is
/// from a VM that is gone.
pub(crate) struct Slot {
    pub vm: Option<Vm>,
    pub generation: u64,
    pub signal: Arc<VmSignal>,
    /// Suspends the filter on this worker after repeated deadline misses.
    pub breaker: Breaker,
    root_task: bool,
}

/// An async mutex whose uncontended lock and unlock are one atomic operation each
/// (tokio's takes its waiter list's lock on every release: ~100 instructions per
/// callback, paid for nothing, since a worker runs one callback at a time).
pub(crate) type AsyncMutex<T> = futures_util::lock::Mutex<T>;

/// A worker's handle on a slot; streams lock it for the length of one callback.
pub(crate) type SlotRef = Arc<AsyncMutex<Slot>>;

type SlotMap = HashMap<usize, (Weak<Plugin>, SlotRef), foldhash::fast::FixedState>;

thread_local! {
    // Looked up for every filter of every request: foldhash, not SipHash, for a key
    // that is our own pointer.
    static SLOTS: RefCell<SlotMap> =
        const { RefCell::new(HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0))) };
}

/// This worker's slot for `plugin`; sweeps the slots of plugins that are gone.
pub(crate) fn slot(plugin: &Arc<Plugin>) -> SlotRef {
    let key = Arc::as_ptr(plugin) as usize;
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        if let Some((weak, slot)) = slots.get(&key)
            && weak.strong_count() > 0
        {
            return slot.clone();
        }
        slots.retain(|_, (w, _)| w.strong_count() > 0);
        let slot = Arc::new(AsyncMutex::new(Slot {
            vm: None,
            generation: 0,
            signal: Arc::new(VmSignal::default()),
            breaker: Breaker::default(),
            root_task: false,
        }));
        slots.insert(key, (Arc::downgrade(plugin), slot.clone()));
        slot
    })
}

/// Locks `slot`, without the lock future's bookkeeping when it is free (as it nearly
/// always is: a worker runs one callback at a time).
pub(crate) async fn lock(slot: &SlotRef) -> futures_util::lock::MutexGuard<'_, Slot> {
    match slot.try_lock() {
        Some(g) => g,
        None => slot.lock().await,
    }
}

/// Makes sure `slot` holds a live VM, making one (or taking the plugin's first).
pub(crate) async fn ensure(
    slot: &mut Slot,
    me: &SlotRef,
    plugin: &Arc<Plugin>,
) -> Result<(), Failure> {
    if slot.vm.is_some() {
        return Ok(());
    }
    if let Some(left) = slot.breaker.suspended(Instant::now()) {
        return Err(Failure::Suspended(left));
    }
    let vm = match plugin.take_first_vm() {
        Some(vm) => {
            slot.signal = vm.store.data().signal.clone();
            vm
        }
        None => Vm::start(&plugin.compiled, &plugin.spec, slot.signal.clone())
            .await
            .map_err(Failure::Trap)?,
    };
    slot.vm = Some(vm);
    slot.generation += 1;
    if !slot.root_task
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        slot.root_task = true;
        rt.spawn(root_task(Arc::downgrade(me), Arc::downgrade(plugin)));
    }
    Ok(())
}

/// Delivers `on_tick` and `on_queue_ready` to the root context of a slot's VM, until
/// the slot or its plugin is gone.
fn root_task(
    slot: Weak<AsyncMutex<Slot>>,
    plugin: Weak<Plugin>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(root_loop(slot, plugin))
}

async fn root_loop(slot: Weak<AsyncMutex<Slot>>, plugin: Weak<Plugin>) {
    let mut last_tick = Instant::now();
    loop {
        let Some(s) = slot.upgrade() else { return };
        let (period, signal) = {
            let g = s.lock().await;
            let p = g.vm.as_ref().and_then(|vm| vm.store.data().tick_period);
            (p, g.signal.clone())
        };
        drop(s);
        // Without a timer, wake now and then to notice the plugin is gone.
        let wait = period
            .map(|p| p.saturating_sub(last_tick.elapsed()))
            .unwrap_or(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = signal.notify.notified() => {}
        }
        let (Some(s), Some(plugin)) = (slot.upgrade(), plugin.upgrade()) else {
            return;
        };
        let queues: Vec<u32> = signal
            .ready
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        let tick = period.is_some_and(|p| last_tick.elapsed() >= p);
        if tick {
            last_tick = Instant::now();
        }
        let mut g = s.lock().await;
        if ensure(&mut g, &s, &plugin).await.is_err() {
            continue;
        }
        let generation = g.generation;
        let Some(vm) = g.vm.as_mut() else { continue };
        let mut io = Box::default();
        let mut result = Ok(None);
        for q in queues {
            result = vm
                .call_with(
                    &mut io,
                    ROOT_CONTEXT,
                    |c| &c.on_queue_ready,
                    (ROOT_CONTEXT, q),
                )
                .await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() && tick {
            result = vm
                .call_with(&mut io, ROOT_CONTEXT, |c| &c.on_tick, ROOT_CONTEXT)
                .await
                .map(|_| None);
        }
        drop(g);
        let result = match result {
            Ok(_) => super::calls::dispatch(&s, &plugin, generation, ROOT_CONTEXT, &mut io).await,
            Err(f) => Err(f),
        };
        if let Err(f) = result {
            super::fail_vm(&s, &plugin, generation, &f, "root context").await;
        }
    }
}

/// How many VM slots this worker holds (for tests of reload hygiene).
#[cfg(test)]
pub(crate) fn live_slots() -> usize {
    SLOTS.with(|s| s.borrow().len())
}
