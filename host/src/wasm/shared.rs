//! Process-wide proxy-wasm shared data (with compare-and-swap) and shared queues.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex, Weak};

use dashmap::DashMap;

use super::state::Status;
use super::worker::VmSignal;

static DATA: LazyLock<DashMap<String, (Vec<u8>, u32)>> = LazyLock::new(DashMap::new);

/// A value and its CAS token.
pub(crate) fn get(key: &str) -> Option<(Vec<u8>, u32)> {
    DATA.get(key).map(|v| v.clone())
}

/// Sets `key`; a non-zero `cas` must match the current token.
pub(crate) fn set(key: &str, value: Vec<u8>, cas: u32) -> Status {
    let mut entry = DATA
        .entry(key.to_string())
        .or_insert_with(|| (Vec::new(), 0));
    if cas != 0 && cas != entry.1 {
        return Status::CasMismatch;
    }
    entry.0 = value;
    entry.1 = entry.1.wrapping_add(1).max(1);
    Status::Ok
}

struct Queue {
    items: Mutex<VecDeque<Vec<u8>>>,
    owner: Mutex<Weak<VmSignal>>,
}

static NAMES: LazyLock<DashMap<String, u32>> = LazyLock::new(DashMap::new);
static QUEUES: LazyLock<DashMap<u32, Queue>> = LazyLock::new(DashMap::new);
static NEXT: AtomicU32 = AtomicU32::new(1);

/// Registers (or re-registers) the queue `name`; its owner is told of new items.
pub(crate) fn register(name: &str, owner: Weak<VmSignal>) -> u32 {
    let id = *NAMES
        .entry(name.to_string())
        .or_insert_with(|| NEXT.fetch_add(1, Ordering::Relaxed));
    let q = QUEUES.entry(id).or_insert_with(|| Queue {
        items: Mutex::new(VecDeque::new()),
        owner: Mutex::new(Weak::new()),
    });
    if let Ok(mut o) = q.owner.lock() {
        *o = owner;
    }
    id
}

/// The id of queue `name` (any vm_id: every VM of this host shares one namespace).
pub(crate) fn resolve(name: &str) -> Option<u32> {
    NAMES.get(name).map(|v| *v)
}

/// Appends to a queue and wakes its owner.
pub(crate) fn enqueue(id: u32, value: Vec<u8>) -> Status {
    let Some(q) = QUEUES.get(&id) else {
        return Status::NotFound;
    };
    if let Ok(mut items) = q.items.lock() {
        items.push_back(value);
    }
    let owner = q.owner.lock().ok().and_then(|o| o.upgrade());
    drop(q);
    if let Some(owner) = owner {
        owner.queue_ready(id);
    }
    Status::Ok
}

/// Takes the oldest item of a queue.
pub(crate) fn dequeue(id: u32) -> Result<Vec<u8>, i32> {
    let Some(q) = QUEUES.get(&id) else {
        return Err(Status::NotFound.into());
    };
    let item = q.items.lock().ok().and_then(|mut i| i.pop_front());
    item.ok_or(Status::Empty.into())
}
