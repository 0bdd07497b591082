//! What client connections take a share of, across both listeners: a
//! slot of `server.max_connections` and descriptors of the open-file limit
//! ([`DescriptorBudget`]), so the process refuses connections instead of
//! running out of descriptors.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Upstream connections one request can hold at once: its attempt and a
/// hedge racing it (failover attempts follow one another).
pub const UPSTREAMS_PER_REQUEST: u64 = 2;
/// Descriptors kept for everything but client connections and their
/// upstreams: listeners, logs, the store, background checks and the
/// plain listener's pool of idle upstream connections.
pub const RESERVED_FDS: u64 = 256;
/// Idle upstream connections one more connection pool keeps at most
/// (Pingora's default pool size): the TLS listener has its own.
pub const POOL_FDS: u64 = 128;

/// How the open-file limit is shared among client connections, so the
/// process refuses connections instead of running out of descriptors.
/// An HTTP/1 connection holds itself and what one request opens upstream;
/// an HTTP/2 connection itself and what `h2_max_concurrent_streams`
/// requests open. `max_connections` is lowered to what the budget holds
/// in HTTP/1 connections; an HTTP/2 connection takes its larger share
/// when ALPN chose h2, and is closed when the budget cannot give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// Descriptors client connections and their upstreams may hold together.
    pub total: u64,
    /// What one HTTP/1 connection may hold.
    pub http1: u64,
    /// What one HTTP/2 connection may hold.
    pub h2: u64,
    /// The connection cap: `max_connections`, or fewer when the budget
    /// holds fewer HTTP/1 connections (at least 1).
    pub max_connections: usize,
}

impl DescriptorBudget {
    /// The budget of `open_files` descriptors (`None`: unknown, unbounded)
    /// for `max_connections` connections, HTTP/2 ones with `h2_streams`
    /// streams; `tls`: the TLS listener (and its pool) is on.
    pub fn new(
        open_files: Option<u64>,
        max_connections: usize,
        h2_streams: u32,
        tls: bool,
    ) -> DescriptorBudget {
        let http1 = 1 + UPSTREAMS_PER_REQUEST;
        let h2 = 1 + u64::from(h2_streams).saturating_mul(UPSTREAMS_PER_REQUEST);
        let reserved = RESERVED_FDS + if tls { POOL_FDS } else { 0 };
        let total = open_files.map_or(u64::MAX, |n| n.saturating_sub(reserved));
        let fit = usize::try_from(total / http1).unwrap_or(usize::MAX);
        let max_connections = max_connections.min(fit).max(1);
        DescriptorBudget {
            // Room for the one connection a tiny limit still allows.
            total: total.max(http1),
            http1,
            h2,
            max_connections,
        }
    }

    /// Whether an HTTP/2 connection can ever be served.
    pub fn holds_h2(&self) -> bool {
        self.h2 <= self.total
    }
}

/// The connection slots and descriptors client connections take, one set
/// for both listeners.
pub struct Capacity {
    connections: Arc<Semaphore>,
    descriptors: Arc<Semaphore>,
    pub(super) budget: DescriptorBudget,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    Connections,
    Descriptors,
}

/// What one open connection holds; given back when it closes.
pub(super) struct Slot {
    _connection: OwnedSemaphorePermit,
    descriptors: OwnedSemaphorePermit,
}

impl Capacity {
    pub fn new(budget: DescriptorBudget) -> Arc<Capacity> {
        let permits = |n: u64| {
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS)
        };
        Arc::new(Capacity {
            connections: Arc::new(Semaphore::new(budget.max_connections)),
            descriptors: Arc::new(Semaphore::new(permits(budget.total))),
            budget,
        })
    }

    /// A slot and an HTTP/1 connection's descriptors.
    pub(super) fn take(&self) -> Result<Slot, Full> {
        let connection = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::Connections)?;
        let n = u32::try_from(self.budget.http1).unwrap_or(u32::MAX);
        let descriptors = self
            .descriptors
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| Full::Descriptors)?;
        Ok(Slot {
            _connection: connection,
            descriptors,
        })
    }

    /// The rest of an HTTP/2 connection's descriptors.
    pub(super) fn widen_for_h2(&self, slot: &mut Slot) -> bool {
        let more = self.budget.h2.saturating_sub(self.budget.http1);
        let Ok(more) = u32::try_from(more) else {
            return false;
        };
        match self.descriptors.clone().try_acquire_many_owned(more) {
            Ok(p) => {
                slot.descriptors.merge(p);
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_budget_counts_upstreams_hedges_and_h2_streams() {
        // 320 descriptors, plain only: 64 for clients, 3 each (the client,
        // an attempt, its hedge): 21 connections.
        let b = DescriptorBudget::new(Some(320), 8192, 100, false);
        assert_eq!((b.total, b.http1, b.max_connections), (64, 3, 21));
        // The cap is never raised past max_connections.
        let b = DescriptorBudget::new(Some(1 << 20), 8192, 100, false);
        assert_eq!(b.max_connections, 8192);
        // TLS: its own pool is reserved too; an h2 connection takes 1 + 100
        // streams x 2 upstreams.
        let b = DescriptorBudget::new(Some(65_536), 8192, 100, true);
        assert_eq!(b.total, 65_536 - 256 - 128);
        assert_eq!(b.h2, 201);
        assert!(b.holds_h2());
        assert_eq!(b.max_connections, 8192);
        // A limit too low for one h2 connection says so; one below the
        // reserve still lets one HTTP/1 connection in.
        let b = DescriptorBudget::new(Some(500), 8192, 100, true);
        assert!(!b.holds_h2());
        let b = DescriptorBudget::new(Some(10), 8192, 100, false);
        assert_eq!((b.max_connections, b.total), (1, 3));
        // Unknown limit: only max_connections bounds.
        let b = DescriptorBudget::new(None, 8192, 10_000, true);
        assert_eq!((b.max_connections, b.h2), (8192, 20_001));
    }

    #[test]
    fn capacity_gives_h2_its_share_and_takes_it_back() {
        // Room for 2 HTTP/1 connections, or one h2 (1 + 2 x 2 = 5 of 6).
        let b = DescriptorBudget::new(Some(256 + 6), 8192, 2, false);
        assert_eq!((b.total, b.h2, b.max_connections), (6, 5, 2));
        let cap = Capacity::new(b);
        let mut one = cap.take().expect("a first slot");
        assert!(cap.widen_for_h2(&mut one), "one h2 connection fits");
        // 5 of 6 taken: no room for another connection's 3.
        assert_eq!(cap.take().err(), Some(Full::Descriptors));
        drop(one);
        let a = cap.take().expect("slots come back");
        let mut second = cap.take().expect("two HTTP/1 connections fit");
        assert!(!cap.widen_for_h2(&mut second), "no room left for h2");
        assert_eq!(cap.take().err(), Some(Full::Connections));
        drop((a, second));
        assert_eq!(cap.descriptors.available_permits(), 6);
    }
}
