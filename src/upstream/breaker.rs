//! The circuit breaker of one (provider, model): closed while it answers,
//! open for a cooldown after too many failures, then half-open to let one
//! probe through, closed again when the probe succeeds.
//!
//! Pure: every method takes the time (ms) as an argument.

use crate::config::routing::BreakerSettings;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// No traffic until this time (ms).
    Open {
        until_ms: u64,
    },
    /// One probe is out (sent at this time); others wait for its outcome.
    HalfOpen {
        probe_since_ms: u64,
    },
}

impl BreakerState {
    /// The name shown in `/providers/{id}/health` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// A state change, for metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: &'static str,
    pub to: &'static str,
}

/// One breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    /// Times opened in a row without a successful probe (for backoff).
    reopened: u32,
    pub last_transition_ms: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            reopened: 0,
            last_transition_ms: 0,
        }
    }
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether a request may go now, without taking the probe slot: closed,
    /// or open past its cooldown (a probe is due).
    pub fn available(&self, now_ms: u64, s: &BreakerSettings) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until_ms } => now_ms >= until_ms,
            // A probe that never reported back frees the slot after `open`.
            BreakerState::HalfOpen { probe_since_ms } => {
                now_ms >= probe_since_ms + s.open.as_millis() as u64
            }
        }
    }

    /// Asks to send a request now: closed lets it through; open past its
    /// cooldown turns half-open and lets this one through as the probe.
    pub fn admit(&mut self, now_ms: u64, s: &BreakerSettings) -> (bool, Option<Transition>) {
        if !self.available(now_ms, s) {
            return (false, None);
        }
        match self.state {
            BreakerState::Closed => (true, None),
            _ => {
                let t = self.go(
                    BreakerState::HalfOpen {
                        probe_since_ms: now_ms,
                    },
                    now_ms,
                );
                (true, t)
            }
        }
    }

    /// A success closes the breaker.
    pub fn on_success(&mut self, now_ms: u64) -> Option<Transition> {
        self.consecutive_failures = 0;
        self.reopened = 0;
        self.go(BreakerState::Closed, now_ms)
    }

    /// A failure that says something about the upstream. `error_rate` and
    /// `samples` are the window's, this failure included.
    pub fn on_failure(
        &mut self,
        now_ms: u64,
        error_rate: f64,
        samples: u32,
        s: &BreakerSettings,
    ) -> Option<Transition> {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let trips = match self.state {
            BreakerState::Closed => {
                self.consecutive_failures >= s.consecutive_failures
                    || (samples >= s.min_requests && error_rate >= s.error_rate)
            }
            // The probe failed (or a straggler did while open): open again.
            BreakerState::HalfOpen { .. } | BreakerState::Open { .. } => true,
        };
        if !trips {
            return None;
        }
        if matches!(self.state, BreakerState::Open { .. }) {
            return None; // already open: a straggler does not extend it
        }
        let backoff = 1u64 << self.reopened.min(16);
        let open = (s.open.as_millis() as u64)
            .saturating_mul(backoff)
            .min(s.max_open.as_millis() as u64);
        self.reopened = self.reopened.saturating_add(1);
        self.go(
            BreakerState::Open {
                until_ms: now_ms + open,
            },
            now_ms,
        )
    }

    fn go(&mut self, to: BreakerState, now_ms: u64) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        if from.name() == to.name() {
            return None;
        }
        self.last_transition_ms = now_ms;
        Some(Transition {
            from: from.name(),
            to: to.name(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            error_rate: 0.5,
            min_requests: 10,
            open: Duration::from_secs(10),
            max_open: Duration::from_secs(25),
        }
    }

    #[test]
    fn opens_after_failures_in_a_row_probes_and_closes() {
        let s = settings();
        let mut b = Breaker::default();
        assert_eq!(b.on_failure(0, 1.0, 1, &s), None);
        assert_eq!(b.on_failure(1, 1.0, 2, &s), None);
        let t = b.on_failure(2, 1.0, 3, &s).unwrap();
        assert_eq!((t.from, t.to), ("closed", "open"));
        assert_eq!(b.state(), BreakerState::Open { until_ms: 10_002 });
        assert_eq!(b.admit(5_000, &s), (false, None));
        // Cooldown over: one probe goes, the next waits for its outcome.
        let (ok, t) = b.admit(10_002, &s);
        assert!(ok);
        assert_eq!(t.unwrap().to, "half_open");
        assert_eq!(b.admit(10_003, &s), (false, None));
        assert_eq!(b.on_success(10_500).unwrap().to, "closed");
        assert_eq!(b.admit(10_501, &s), (true, None));
    }

    #[test]
    fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
        let s = settings();
        let mut b = Breaker::default();
        for t in 0..3 {
            b.on_failure(t, 1.0, 3, &s);
        }
        assert!(b.admit(10_002, &s).0);
        assert_eq!(b.on_failure(10_100, 1.0, 4, &s).unwrap().to, "open");
        assert_eq!(b.state(), BreakerState::Open { until_ms: 30_100 });
        assert!(b.admit(30_100, &s).0);
        b.on_failure(30_200, 1.0, 5, &s);
        // 40 s would be next; the cap is 25 s.
        assert_eq!(b.state(), BreakerState::Open { until_ms: 55_200 });
    }

    #[test]
    fn error_rate_trips_only_with_enough_samples() {
        let s = settings();
        let mut b = Breaker::default();
        assert_eq!(b.on_failure(0, 0.6, 9, &s), None);
        b.on_success(1);
        assert_eq!(b.on_failure(2, 0.6, 10, &s).unwrap().to, "open");
    }

    #[test]
    fn a_lost_probe_frees_its_slot_after_the_cooldown() {
        let s = settings();
        let mut b = Breaker::default();
        for t in 0..3 {
            b.on_failure(t, 1.0, 3, &s);
        }
        assert!(b.admit(10_002, &s).0);
        assert!(!b.available(15_000, &s));
        assert!(b.available(20_002, &s));
        assert!(b.admit(20_002, &s).0);
    }
}
