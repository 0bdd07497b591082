//! A provider's capacity: requests in flight under `max_concurrency` and a
//! token bucket for `max_qps`. Pure apart from the atomics; the time is
//! passed in.

use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

/// One provider's room for more requests.
#[derive(Debug, Default)]
pub struct Capacity {
    in_flight: AtomicU32,
    /// (tokens, last refill ms)
    bucket: Mutex<(f64, u64)>,
}

/// Holds one unit of a provider's concurrency until dropped.
#[derive(Debug)]
pub struct Slot<'a>(&'a AtomicU32);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Capacity {
    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a request would fit now, without taking anything.
    pub fn has_room(
        &self,
        now_ms: u64,
        max_concurrency: Option<u32>,
        max_qps: Option<u32>,
    ) -> bool {
        if max_concurrency.is_some_and(|m| self.in_flight() >= m) {
            return false;
        }
        match max_qps {
            Some(q) => {
                let b = self.bucket.lock();
                refilled(*b, now_ms, q) >= 1.0
            }
            None => true,
        }
    }

    /// Takes a slot (and a token) when both limits have room.
    pub fn acquire(
        &self,
        now_ms: u64,
        max_concurrency: Option<u32>,
        max_qps: Option<u32>,
    ) -> Option<Slot<'_>> {
        let prev = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(&self.in_flight);
        if max_concurrency.is_some_and(|m| prev >= m) {
            return None; // dropping `slot` gives the unit back
        }
        if let Some(q) = max_qps {
            let mut b = self.bucket.lock();
            let tokens = refilled(*b, now_ms, q);
            if tokens < 1.0 {
                *b = (tokens, now_ms);
                return None;
            }
            *b = (tokens - 1.0, now_ms);
        }
        Some(slot)
    }
}

/// The bucket's tokens at `now_ms`: it refills at `qps` per second up to
/// `qps` (a full second's worth of burst). A bucket never used is full.
fn refilled((tokens, last): (f64, u64), now_ms: u64, qps: u32) -> f64 {
    let cap = f64::from(qps);
    if last == 0 {
        return cap;
    }
    let elapsed = now_ms.saturating_sub(last) as f64 / 1000.0;
    (tokens + elapsed * cap).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_held_until_the_slot_drops() {
        let c = Capacity::default();
        let a = c.acquire(1, Some(2), None).unwrap();
        let _b = c.acquire(1, Some(2), None).unwrap();
        assert!(c.acquire(1, Some(2), None).is_none());
        assert!(!c.has_room(1, Some(2), None));
        assert_eq!(c.in_flight(), 2, "a refused acquire takes nothing");
        drop(a);
        assert!(c.acquire(1, Some(2), None).is_some());
    }

    #[test]
    fn qps_is_a_token_bucket_on_a_fake_clock() {
        let c = Capacity::default();
        let mut ok = 0;
        for _ in 0..5 {
            if c.acquire(1_000, None, Some(3)).is_some() {
                ok += 1;
            }
        }
        assert_eq!(ok, 3, "a second's burst");
        assert!(!c.has_room(1_100, None, Some(3)));
        assert!(
            c.acquire(1_400, None, Some(3)).is_some(),
            "a third of a second refills one"
        );
        assert!(c.acquire(1_400, None, Some(3)).is_none());
    }
}
