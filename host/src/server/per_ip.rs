//! Connections per client IP and listener, counted across every worker, so that one
//! client cannot take every connection slot (`max_connections_per_ip`).

use std::net::IpAddr;
use std::sync::OnceLock;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

/// Open connections by (listener id, client IP); an entry goes when its count does.
fn open() -> &'static DashMap<(u64, IpAddr), usize> {
    static OPEN: OnceLock<DashMap<(u64, IpAddr), usize>> = OnceLock::new();
    OPEN.get_or_init(DashMap::new)
}

/// One connection counted against its client's IP; dropping it frees the slot.
pub(crate) struct Slot(Option<(u64, IpAddr)>);

impl Slot {
    /// Takes a slot for `ip` on listener `listener`, or `None` when it already has
    /// `max` connections open there. Without a limit nothing is counted.
    pub(crate) fn take(listener: u64, ip: IpAddr, max: Option<usize>) -> Option<Slot> {
        let Some(max) = max else {
            return Some(Slot(None));
        };
        match open().entry((listener, ip)) {
            Entry::Occupied(mut e) => {
                if *e.get() >= max {
                    return None;
                }
                *e.get_mut() += 1;
            }
            Entry::Vacant(e) => {
                e.insert(1);
            }
        }
        Some(Slot(Some((listener, ip))))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(key) = self.0.take() else {
            return;
        };
        if let Entry::Occupied(mut e) = open().entry(key) {
            if *e.get() <= 1 {
                e.remove();
            } else {
                *e.get_mut() -= 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_ip_and_listener_and_freed() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = Slot::take(7001, a, Some(2)).unwrap();
        let _second = Slot::take(7001, a, Some(2)).unwrap();
        assert!(Slot::take(7001, a, Some(2)).is_none(), "a third is refused");
        assert!(Slot::take(7001, b, Some(2)).is_some(), "another IP is not");
        assert!(
            Slot::take(7002, a, Some(2)).is_some(),
            "another listener is not"
        );
        drop(first);
        assert!(
            Slot::take(7001, a, Some(2)).is_some(),
            "a freed slot is taken"
        );
        assert!(Slot::take(7001, a, None).is_some(), "no limit, no count");
    }
}
