//! The circuit breaker's connection limits (`max_connections`, `max_pending`): shared
//! by every worker's pool of one upstream, so that they bound the upstream as a whole.
//!
//! Only a request that finds no idle connection of its worker meets them: it needs a
//! new connection, so it counts as pending until that connection is set up (connect
//! and TLS handshake), and the connection counts as open from the moment it is asked
//! for until it closes. Past either limit the request is refused at once (503), never
//! queued: queueing is what a breaker is there to stop. Both checks and their counts
//! are not one atomic step, so concurrent requests may overshoot a limit by a few (at
//! most one per worker at the same instant), as `max_requests` may.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::BreakerConfig;

/// An upstream's connection limits and the counts they bound.
#[derive(Debug)]
pub struct ConnLimits {
    max_connections: Option<u32>,
    max_pending: Option<u32>,
    open: AtomicU32,
    pending: AtomicU32,
}

/// The limit a request met: its name in the configuration, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// `max_connections` or `max_pending`.
    pub limit: &'static str,
    /// The configured value.
    pub max: u32,
}

impl ConnLimits {
    /// The limits of `breaker`, if it sets any of them.
    pub fn new(breaker: Option<&BreakerConfig>) -> Option<Arc<Self>> {
        let b = breaker?;
        if b.max_connections.is_none() && b.max_pending.is_none() {
            return None;
        }
        Some(Arc::new(Self {
            max_connections: b.max_connections,
            max_pending: b.max_pending,
            open: AtomicU32::new(0),
            pending: AtomicU32::new(0),
        }))
    }

    /// Admits a request that needs a new connection: its pending slot (held until the
    /// connection is set up) and the connection's slot (kept while it is open), or
    /// the limit it met.
    pub fn admit(self: &Arc<Self>) -> Result<(Pending, Open), Overflow> {
        if let Some(max) = self.max_pending
            && self.pending.load(Ordering::Relaxed) >= max
        {
            return Err(Overflow {
                limit: "max_pending",
                max,
            });
        }
        if let Some(max) = self.max_connections
            && self.open.load(Ordering::Relaxed) >= max
        {
            return Err(Overflow {
                limit: "max_connections",
                max,
            });
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok((Pending(Arc::clone(self)), Open(Arc::clone(self))))
    }

    /// Connections open (or being set up) now.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }
}

/// A request waiting for its new connection: counted while this lives.
#[derive(Debug)]
pub struct Pending(Arc<ConnLimits>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open connection: counted while this lives (its connection task holds it).
#[derive(Debug)]
pub struct Open(Arc<ConnLimits>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: Option<u32>, max_pending: Option<u32>) -> Arc<ConnLimits> {
        let config = BreakerConfig {
            max_connections,
            max_pending,
            ..BreakerConfig::default()
        };
        ConnLimits::new(Some(&config)).unwrap_or_else(|| panic!("limits are set"))
    }

    #[test]
    fn no_connection_limit_builds_nothing() {
        let only_requests = BreakerConfig {
            max_requests: Some(3),
            ..BreakerConfig::default()
        };
        assert!(ConnLimits::new(Some(&only_requests)).is_none());
        assert!(ConnLimits::new(None).is_none());
    }

    #[test]
    fn pending_and_open_are_bounded_and_released() {
        let l = limits(Some(2), Some(1));
        let (pending, open) = l.admit().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            l.admit().err(),
            Some(Overflow {
                limit: "max_pending",
                max: 1
            })
        );
        drop(pending);
        let (_p2, _o2) = l.admit().unwrap_or_else(|e| panic!("{e:?}"));
        drop(_p2);
        assert_eq!(
            l.admit().err(),
            Some(Overflow {
                limit: "max_connections",
                max: 2
            })
        );
        drop(open);
        assert_eq!(l.open(), 1);
        assert!(l.admit().is_ok(), "a closed connection frees its slot");
    }
}
