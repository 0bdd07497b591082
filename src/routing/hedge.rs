//! The hedge budget. Each client key has its own token bucket, which every
//! generation request of that key fills by `routing.hedge_budget_percent` /
//! 100 of a token and every hedge it starts beyond the floor empties by
//! one, so one key cannot take every hedge. The floor,
//! `routing.hedge_min_concurrency`, lets that many hedges run at once
//! whatever the buckets hold (Envoy's `min_retry_concurrency`): a gateway
//! that just started, or a quiet one, still hedges. Pure apart from its
//! locks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

/// Most unspent hedges a bucket keeps: a quiet spell does not bank a
/// storm of hedges for the next burst of slow answers.
pub const MAX_BANKED_HEDGES: f64 = 10.0;

/// Most buckets kept: one per client key seen since the last reload. Keys
/// beyond it (only a deployment with more keys than this) share one.
const MAX_BUCKETS: usize = 65_536;

/// The bucket of requests without a client key (an open gateway), and of
/// keys beyond [`MAX_BUCKETS`].
const SHARED: &str = "";

/// Hedges left to start, per client key, and hedges running now.
#[derive(Debug, Default)]
pub struct HedgeBudget {
    /// Client key (the request's state owner) → hedges it may start
    /// (fractions accumulate).
    buckets: Mutex<HashMap<String, f64>>,
    /// Hedges started and not yet over, gateway-wide.
    running: AtomicU32,
}

/// A running hedge: holds its place in the running count until dropped.
#[derive(Debug)]
pub struct HedgeTicket<'a> {
    running: &'a AtomicU32,
}

impl Drop for HedgeTicket<'_> {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HedgeBudget {
    /// One request of `owner` (`None`: no client key) came in: its bucket
    /// earns `percent` / 100 of a hedge.
    pub fn deposit(&self, owner: Option<&str>, percent: u32) {
        if percent == 0 {
            return;
        }
        self.with_bucket(owner, |t| {
            *t = (*t + f64::from(percent.min(100)) / 100.0).min(MAX_BANKED_HEDGES);
        });
    }

    /// A hedge for a request of `owner`, when allowed: at once while fewer
    /// than `min_concurrency` hedges run, else when the owner's bucket has
    /// one (taken). `percent` 0 turns hedging off, the floor included.
    pub fn try_take(
        &self,
        owner: Option<&str>,
        percent: u32,
        min_concurrency: u32,
    ) -> Option<HedgeTicket<'_>> {
        if percent == 0 {
            return None;
        }
        let under_floor = self
            .running
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < min_concurrency).then_some(n + 1)
            })
            .is_ok();
        if under_floor {
            return Some(self.ticket_taken());
        }
        let took = self.with_bucket(owner, |t| {
            // The epsilon absorbs the rounding of ten 0.1 deposits.
            let has = *t >= 1.0 - 1e-9;
            if has {
                *t = (*t - 1.0).max(0.0);
            }
            has
        });
        took.then(|| {
            self.running.fetch_add(1, Ordering::Relaxed);
            self.ticket_taken()
        })
    }

    /// Runs `f` on the bucket of `owner`, made on first use (the shared one
    /// past [`MAX_BUCKETS`]).
    fn with_bucket<R>(&self, owner: Option<&str>, f: impl FnOnce(&mut f64) -> R) -> R {
        let owner = owner.unwrap_or(SHARED);
        let mut buckets = self.buckets.lock();
        if let Some(t) = buckets.get_mut(owner) {
            return f(t);
        }
        let owner = if buckets.len() < MAX_BUCKETS {
            owner
        } else {
            SHARED
        };
        f(buckets.entry(owner.to_owned()).or_insert(0.0))
    }

    /// Hedges running now.
    pub fn running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    /// The ticket of a hedge already counted in `running`.
    fn ticket_taken(&self) -> HedgeTicket<'_> {
        HedgeTicket {
            running: &self.running,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Option<&str> = Some("alice");

    #[test]
    fn ten_percent_is_one_hedge_per_ten_requests() {
        let b = HedgeBudget::default();
        let mut hedges = 0;
        for _ in 0..100 {
            b.deposit(ALICE, 10);
            // Every request would like a hedge; none runs long (floor 0).
            if b.try_take(ALICE, 10, 0).is_some() {
                hedges += 1;
            }
        }
        assert_eq!(hedges, 10);
    }

    #[test]
    fn zero_never_hedges_and_a_hundred_always_may() {
        let none = HedgeBudget::default();
        let all = HedgeBudget::default();
        for _ in 0..50 {
            none.deposit(ALICE, 0);
            assert!(none.try_take(ALICE, 0, 2).is_none(), "0: off, floor too");
            all.deposit(ALICE, 100);
            assert!(all.try_take(ALICE, 100, 0).is_some());
        }
    }

    #[test]
    fn a_quiet_spell_banks_at_most_ten() {
        let b = HedgeBudget::default();
        for _ in 0..1000 {
            b.deposit(ALICE, 50);
        }
        let burst: Vec<_> = (0..100).filter_map(|_| b.try_take(ALICE, 50, 0)).collect();
        assert_eq!(burst.len(), MAX_BANKED_HEDGES as usize);
    }

    #[test]
    fn the_floor_lets_that_many_run_at_once_from_an_empty_bucket() {
        let b = HedgeBudget::default();
        let first = b.try_take(ALICE, 10, 2).expect("fresh gateway: floor");
        let second = b.try_take(ALICE, 10, 2).expect("floor");
        assert!(b.try_take(ALICE, 10, 2).is_none(), "a third needs a token");
        assert_eq!(b.running(), 2);
        drop(first);
        assert_eq!(b.running(), 1);
        let third = b.try_take(ALICE, 10, 2).expect("a place came back");
        drop((second, third));
        assert_eq!(b.running(), 0);
    }

    #[test]
    fn each_key_draws_from_its_own_share() {
        let b = HedgeBudget::default();
        for _ in 0..100 {
            b.deposit(Some("busy"), 10);
        }
        b.deposit(Some("quiet"), 10);
        // Past the floor, the quiet key's one request earned no hedge, and
        // the busy key's ten banked hedges are not the quiet key's.
        assert!(b.try_take(Some("quiet"), 10, 0).is_none());
        let busy: Vec<_> = (0..20)
            .filter_map(|_| b.try_take(Some("busy"), 10, 0))
            .collect();
        assert_eq!(busy.len(), 10);
        assert!(b.try_take(None, 10, 0).is_none(), "keyless: its own bucket");
    }
}
