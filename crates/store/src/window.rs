//! Sliding-window rate-limit arithmetic, free of clocks and I/O.
//!
//! A window is a list of per-second buckets (second → amount). What counts against a limit is the sum of the
//! buckets of the last [`WINDOW_SECS`] seconds: a bucket stamped `s` stops counting at second `s + WINDOW_SECS`.
//! Precision is one second and memory at most 60 buckets per name, whatever the limit. The same arithmetic serves
//! requests (one per hit) and tokens (the usage reported). The Redis Lua script `lua::RATE_WINDOW` mirrors it.

use std::collections::VecDeque;

use crate::RateDecision;

/// The length of every rate-limit window.
pub const WINDOW_SECS: u64 = 60;

/// One name's recent usage, bucketed per second, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Window {
    buckets: VecDeque<(u64, u64)>,
}

impl Window {
    /// Forgets the buckets that no longer count at second `now`.
    pub fn expire(&mut self, now: u64) {
        while let Some(&(second, _)) = self.buckets.front() {
            if second + WINDOW_SECS > now {
                break;
            }
            self.buckets.pop_front();
        }
    }

    /// True when nothing counts any more (the window can be dropped).
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The sum of the buckets kept (call [`Window::expire`] first).
    pub fn total(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0, |sum, &(_, n)| sum.saturating_add(n))
    }

    /// Adds `amount` at second `now`.
    pub fn add(&mut self, now: u64, amount: u64) {
        if amount == 0 {
            return;
        }
        self.expire(now);
        match self.buckets.back_mut() {
            // A clock that went back lands in the newest bucket rather than breaking the order.
            Some((second, n)) if *second >= now => *n = n.saturating_add(amount),
            _ => self.buckets.push_back((now, amount)),
        }
    }

    /// Takes `amount` back from the bucket of second `second` (a reservation being settled); nothing when that
    /// bucket no longer counts.
    pub fn subtract(&mut self, second: u64, amount: u64) {
        if let Some(i) = self.buckets.iter().position(|&(s, _)| s == second) {
            let n = &mut self.buckets[i].1;
            *n = n.saturating_sub(amount);
            if *n == 0 {
                self.buckets.remove(i);
            }
        }
    }

    /// Counts one request if fewer than `limit` were counted in the window: the check-and-add of a request limit.
    pub fn hit(&mut self, now: u64, limit: u64) -> RateDecision {
        self.expire(now);
        let used = self.total();
        if used < limit {
            self.add(now, 1);
            allowed(limit, used + 1)
        } else {
            refused(
                limit,
                used,
                retry_after(self.buckets.iter().copied(), used, now, limit),
            )
        }
    }

    /// Whether the usage in the window is under `limit`, adding nothing: the check of a token limit.
    pub fn check(&mut self, now: u64, limit: u64) -> RateDecision {
        self.expire(now);
        let used = self.total();
        if used < limit {
            allowed(limit, used)
        } else {
            refused(
                limit,
                used,
                retry_after(self.buckets.iter().copied(), used, now, limit),
            )
        }
    }
}

/// The decision for an allowed request, `used` counting it.
pub fn allowed(limit: u64, used: u64) -> RateDecision {
    RateDecision {
        allowed: true,
        limit,
        remaining: limit.saturating_sub(used),
        retry_after_secs: 0,
    }
}

/// The decision for a refused request.
pub fn refused(limit: u64, used: u64, retry_after_secs: u64) -> RateDecision {
    RateDecision {
        allowed: false,
        limit,
        remaining: limit.saturating_sub(used),
        retry_after_secs: retry_after_secs.max(1),
    }
}

/// Seconds from `now` until the usage still counting drops under `limit`, i.e. until a request would be let
/// through again; at least 1. `buckets` are the live ones, oldest first, summing to `used`.
pub fn retry_after(
    buckets: impl Iterator<Item = (u64, u64)>,
    used: u64,
    now: u64,
    limit: u64,
) -> u64 {
    let mut left = used;
    for (second, n) in buckets {
        left = left.saturating_sub(n);
        if left < limit {
            return (second + WINDOW_SECS).saturating_sub(now).max(1);
        }
    }
    // Only with a limit of 0: nothing ever frees a slot; a full window is the honest hint.
    WINDOW_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_per_minute_refuses_the_sixth() {
        let mut w = Window::default();
        for i in 0..5 {
            let d = w.hit(1000 + i, 5);
            assert!(d.allowed);
            assert_eq!(d.remaining, 4 - i);
        }
        let d = w.hit(1010, 5);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        // The first request (second 1000) stops counting at 1060: 50 s after 1010.
        assert_eq!(d.retry_after_secs, 50);
        // Refusals are not counted.
        assert_eq!(w.total(), 5);
    }

    #[test]
    fn slots_free_as_the_window_slides() {
        let mut w = Window::default();
        for _ in 0..3 {
            assert!(w.hit(0, 3).allowed);
        }
        assert!(!w.hit(59, 3).allowed);
        assert_eq!(w.hit(59, 3).retry_after_secs, 1);
        let d = w.hit(60, 3);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
    }

    #[test]
    fn retry_after_waits_for_enough_buckets() {
        // 4 + 3 + 5 = 12 used, limit 6: the two oldest buckets must go (12 - 4 - 3 = 5 < 6).
        let buckets = [(100, 4), (110, 3), (120, 5)];
        assert_eq!(retry_after(buckets.into_iter(), 12, 125, 6), 110 + 60 - 125);
        assert_eq!(retry_after(buckets.into_iter(), 12, 125, 13), 35);
        assert_eq!(retry_after(std::iter::empty(), 0, 125, 0), WINDOW_SECS);
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        assert_eq!(retry_after([(100, 1)].into_iter(), 1, 160, 1), 1);
    }

    #[test]
    fn tokens_are_checked_not_counted() {
        let mut w = Window::default();
        assert_eq!(w.check(0, 100), allowed(100, 0));
        w.add(0, 60);
        let d = w.check(1, 100);
        assert!(d.allowed);
        assert_eq!(d.remaining, 40);
        w.add(30, 50);
        let d = w.check(31, 100);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        // 110 used: the 60 of second 0 must go, at second 60.
        assert_eq!(d.retry_after_secs, 29);
        assert!(w.check(60, 100).allowed);
        assert_eq!(w.total(), 50);
    }

    #[test]
    fn same_second_shares_a_bucket_and_old_buckets_go() {
        let mut w = Window::default();
        w.add(5, 1);
        w.add(5, 2);
        w.add(6, 1);
        assert_eq!(w.buckets.len(), 2);
        w.add(3, 1); // clock went back: counted in the newest bucket
        assert_eq!(w.total(), 5);
        w.expire(66);
        assert!(w.is_empty());
    }

    #[test]
    fn a_settled_reservation_leaves_only_the_usage() {
        let mut w = Window::default();
        w.add(10, 500); // reserved at admission
        w.add(11, 7); // another request's usage
        w.subtract(10, 500);
        w.add(12, 40); // the real usage, counted when known
        assert_eq!(w.total(), 47);
        assert_eq!(w.buckets.len(), 2, "an emptied bucket is removed");
        w.subtract(99, 5); // no such bucket (expired): nothing happens
        assert_eq!(w.total(), 47);
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let mut w = Window::default();
        let d = w.hit(0, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, WINDOW_SECS);
    }
}
