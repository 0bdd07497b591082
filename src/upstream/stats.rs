//! What routing has seen of one (provider, model): a latency EWMA, an
//! error rate over a sliding window, the requests in flight, and its circuit
//! breaker. Times are passed in (ms), so tests drive a fake clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::breaker::{Breaker, BreakerState, Transition};
use crate::config::routing::{BreakerSettings, Scoring};

/// Buckets of the error-rate window.
const BUCKETS: usize = 6;

/// The sliding window of outcomes, in `BUCKETS` slices of the window.
#[derive(Debug, Clone, Default)]
struct Window {
    /// (slice number, successes, failures)
    slices: [(u64, u32, u32); BUCKETS],
}

impl Window {
    fn slice_ms(window_ms: u64) -> u64 {
        (window_ms / BUCKETS as u64).max(1)
    }

    fn add(&mut self, now_ms: u64, window_ms: u64, ok: bool) {
        let n = now_ms / Self::slice_ms(window_ms);
        let s = &mut self.slices[(n % BUCKETS as u64) as usize];
        if s.0 != n {
            *s = (n, 0, 0);
        }
        if ok {
            s.1 = s.1.saturating_add(1);
        } else {
            s.2 = s.2.saturating_add(1);
        }
    }

    /// (successes, failures) in the window ending now.
    fn totals(&self, now_ms: u64, window_ms: u64) -> (u32, u32) {
        let n = now_ms / Self::slice_ms(window_ms);
        self.slices
            .iter()
            .filter(|s| s.0 + BUCKETS as u64 > n && s.0 <= n)
            .fold((0u32, 0u32), |(a, b), s| {
                (a.saturating_add(s.1), b.saturating_add(s.2))
            })
    }

    fn clear(&mut self) {
        *self = Window::default();
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// The (provider, model)'s one latency average: scoring reads it, and
    /// the provider's health and metrics.
    ewma_ms: Option<f64>,
    /// Good answers since start (weighs this record in the provider's
    /// latency).
    answers: u64,
    last_sample_ms: u64,
    window: Window,
    breaker: Breaker,
}

/// The live record of one (provider, model).
#[derive(Debug, Default)]
pub struct UpstreamStats {
    inner: Mutex<Inner>,
    in_flight: AtomicU32,
}

/// A copy of an upstream's record at one moment: what scoring reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `None`: no recent sample (never seen, or older than `stale_after`).
    pub ewma_ms: Option<f64>,
    pub error_rate: f64,
    /// Attempts in the window.
    pub samples: u32,
    pub in_flight: u32,
    pub breaker: BreakerState,
    /// The breaker lets a request through now (closed, or a probe is due).
    pub breaker_available: bool,
    pub consecutive_failures: u32,
}

/// Counts an attempt in flight until dropped. Owns its record, so an
/// attempt racing another (a hedge) can carry it.
#[derive(Debug)]
pub struct InFlight(Arc<UpstreamStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl UpstreamStats {
    /// The record as scoring sees it at `now_ms`.
    pub fn snapshot(&self, now_ms: u64, sc: &Scoring, br: &BreakerSettings) -> Snapshot {
        let g = self.inner.lock();
        let window_ms = sc.window.as_millis() as u64;
        let (ok, bad) = g.window.totals(now_ms, window_ms);
        let samples = ok.saturating_add(bad);
        let fresh = now_ms.saturating_sub(g.last_sample_ms) <= sc.stale_after.as_millis() as u64;
        Snapshot {
            ewma_ms: g.ewma_ms.filter(|_| fresh),
            error_rate: if samples > 0 {
                f64::from(bad) / f64::from(samples)
            } else {
                0.0
            },
            samples,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            breaker: g.breaker.state(),
            breaker_available: g.breaker.available(now_ms, br),
            consecutive_failures: g.breaker.consecutive_failures(),
        }
    }

    /// Asks the breaker to let an attempt through now (taking the probe
    /// slot when it is half-open).
    pub fn admit(&self, now_ms: u64, br: &BreakerSettings) -> (bool, Option<Transition>) {
        self.inner.lock().breaker.admit(now_ms, br)
    }

    /// Counts an attempt in flight while the guard lives.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// An attempt given up (a hedge's loser) after `waited_ms` without an
    /// answer: its latency is at least that, so the EWMA rises to it when
    /// it is lower (and never falls). Neither a success nor a failure: the
    /// window and the breaker are left alone. Without this an upstream that
    /// always loses its race would never be seen as slow.
    pub fn on_abandoned(&self, now_ms: u64, waited_ms: f64, sc: &Scoring) {
        let mut g = self.inner.lock();
        let stale = now_ms.saturating_sub(g.last_sample_ms) > sc.stale_after.as_millis() as u64;
        match g.ewma_ms {
            Some(old) if !stale && old >= waited_ms => return,
            Some(old) if !stale => g.ewma_ms = Some(old + sc.ewma_alpha * (waited_ms - old)),
            _ => g.ewma_ms = Some(waited_ms),
        }
        g.last_sample_ms = now_ms;
    }

    /// A good answer after `latency_ms` (first byte of a stream, whole
    /// answer otherwise).
    pub fn on_success(&self, now_ms: u64, latency_ms: f64, sc: &Scoring) -> Option<Transition> {
        let mut g = self.inner.lock();
        let stale = now_ms.saturating_sub(g.last_sample_ms) > sc.stale_after.as_millis() as u64;
        g.ewma_ms = Some(match g.ewma_ms {
            Some(old) if !stale => old + sc.ewma_alpha * (latency_ms - old),
            _ => latency_ms,
        });
        g.last_sample_ms = now_ms;
        g.answers = g.answers.saturating_add(1);
        Self::count_success(&mut g, now_ms, sc)
    }

    /// A good answer whose latency says nothing of a generation's (a token
    /// count answers in milliseconds): counted for the error rate and the
    /// breaker, kept out of the latency average.
    pub fn on_untimed_success(&self, now_ms: u64, sc: &Scoring) -> Option<Transition> {
        let mut g = self.inner.lock();
        Self::count_success(&mut g, now_ms, sc)
    }

    fn count_success(g: &mut Inner, now_ms: u64, sc: &Scoring) -> Option<Transition> {
        g.window.add(now_ms, sc.window.as_millis() as u64, true);
        let t = g.breaker.on_success(now_ms);
        if t.is_some() {
            // A closed breaker starts from a clean window.
            g.window.clear();
            g.window.add(now_ms, sc.window.as_millis() as u64, true);
        }
        t
    }

    /// A failure that says something about the upstream.
    pub fn on_failure(
        &self,
        now_ms: u64,
        sc: &Scoring,
        br: &BreakerSettings,
    ) -> Option<Transition> {
        let mut g = self.inner.lock();
        let window_ms = sc.window.as_millis() as u64;
        g.window.add(now_ms, window_ms, false);
        let (ok, bad) = g.window.totals(now_ms, window_ms);
        let samples = ok.saturating_add(bad);
        let rate = f64::from(bad) / f64::from(samples.max(1));
        g.breaker.on_failure(now_ms, rate, samples, br)
    }

    /// The latency average as last updated, however old, and the good
    /// answers it was made of; `None` before the first answer.
    pub fn latency(&self) -> Option<(f64, u64)> {
        let g = self.inner.lock();
        Some((g.ewma_ms?, g.answers)).filter(|(_, n)| *n > 0)
    }

    /// The breaker's state name (`closed`, `open`, `half_open`).
    pub fn breaker_name(&self) -> &'static str {
        self.inner.lock().breaker.state().name()
    }

    /// When the breaker last changed state (ms; 0: never).
    pub fn last_transition_ms(&self) -> u64 {
        self.inner.lock().breaker.last_transition_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing::RoutingSettings;

    #[test]
    fn ewma_window_and_staleness_on_a_fake_clock() {
        let r = RoutingSettings::default();
        let (sc, br) = (&r.scoring, &r.breaker);
        let s = UpstreamStats::default();
        assert_eq!(s.snapshot(0, sc, br).ewma_ms, None);
        s.on_success(1_000, 100.0, sc);
        s.on_success(2_000, 200.0, sc);
        let snap = s.snapshot(2_000, sc, br);
        assert!((snap.ewma_ms.unwrap() - 130.0).abs() < 1e-9, "{snap:?}");
        s.on_failure(3_000, sc, br);
        let snap = s.snapshot(3_000, sc, br);
        assert_eq!(snap.samples, 3);
        assert!((snap.error_rate - 1.0 / 3.0).abs() < 1e-9);
        // A minute later the window is empty and the latency forgotten.
        let later = s.snapshot(3_000 + 61_000, sc, br);
        assert_eq!((later.samples, later.ewma_ms), (0, None));
        // A fresh sample after staleness starts the EWMA anew.
        s.on_success(70_000, 40.0, sc);
        assert_eq!(s.snapshot(70_000, sc, br).ewma_ms, Some(40.0));
    }

    #[test]
    fn in_flight_counts_while_the_guard_lives() {
        let r = RoutingSettings::default();
        let s = Arc::new(UpstreamStats::default());
        let a = s.start();
        let b = s.start();
        assert_eq!(s.snapshot(0, &r.scoring, &r.breaker).in_flight, 2);
        drop(a);
        drop(b);
        assert_eq!(s.snapshot(0, &r.scoring, &r.breaker).in_flight, 0);
    }

    #[test]
    fn an_abandoned_attempt_only_raises_the_latency() {
        let r = RoutingSettings::default();
        let (sc, br) = (&r.scoring, &r.breaker);
        let s = UpstreamStats::default();
        s.on_abandoned(1_000, 200.0, sc);
        let snap = s.snapshot(1_000, sc, br);
        assert_eq!((snap.ewma_ms, snap.samples), (Some(200.0), 0));
        s.on_abandoned(1_100, 100.0, sc);
        assert_eq!(s.snapshot(1_100, sc, br).ewma_ms, Some(200.0));
        s.on_abandoned(1_200, 1_200.0, sc);
        let e = s.snapshot(1_200, sc, br).ewma_ms.unwrap();
        assert!((e - 500.0).abs() < 1e-9, "{e}");
    }

    #[test]
    fn failures_open_the_breaker() {
        let r = RoutingSettings::default();
        let s = UpstreamStats::default();
        let mut opened = None;
        for t in 0..5 {
            opened = opened.or(s.on_failure(t, &r.scoring, &r.breaker));
        }
        assert_eq!(opened.map(|t| t.to), Some("open"));
        let snap = s.snapshot(10, &r.scoring, &r.breaker);
        assert!(!snap.breaker_available);
    }
}
