//! The score of each candidate in a group: its configured weight as the
//! prior, times what routing has seen of it. Pure; docs/routing.md gives
//! the formula and the reasoning behind each constant.

use serde::Serialize;

use crate::config::routing::Scoring;
use crate::config::ScoringMode;
use crate::upstream::stats::Snapshot;

/// Everything a candidate's score is made of (shown by `/routing/decide`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreInputs {
    pub weight: f64,
    pub ewma_ms: Option<f64>,
    pub error_rate: f64,
    pub samples: u32,
    pub in_flight: u32,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// The breaker lets a request through now.
    pub breaker_available: bool,
    /// Some key of the provider is usable (not cooling down).
    pub key_available: bool,
    /// Requests left on the provider's best usable key, as last reported.
    pub ratelimit_remaining: Option<u64>,
    /// Every usable key is at or below `routing.ratelimit_reserve`.
    pub ratelimit_low: bool,
    /// The provider has room under its `max_concurrency` and `max_qps`.
    pub has_room: bool,
}

impl ScoreInputs {
    /// The candidate's inputs from its snapshot and key state.
    pub fn new(
        weight: f64,
        s: &Snapshot,
        key_available: bool,
        ratelimit_remaining: Option<u64>,
        ratelimit_low: bool,
        has_room: bool,
    ) -> Self {
        ScoreInputs {
            weight,
            ewma_ms: s.ewma_ms,
            error_rate: s.error_rate,
            samples: s.samples,
            in_flight: s.in_flight,
            breaker: s.breaker.name(),
            breaker_available: s.breaker_available,
            key_available,
            ratelimit_remaining,
            ratelimit_low,
            has_room,
        }
    }

    /// Can take a request now: its breaker lets it through, a key is
    /// usable and the provider has room. The unavailable go after every
    /// available candidate.
    pub fn available(&self) -> bool {
        self.breaker_available && self.key_available && self.has_room
    }
}

/// Samples in the window before the error rate counts (fewer say little).
const MIN_ERROR_SAMPLES: u32 = 3;

/// The factors of one candidate's score, for `/routing/decide`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Factors {
    pub latency: f64,
    pub errors: f64,
    pub in_flight: f64,
    pub ratelimit: f64,
}

/// Scores each candidate of one group (the same logical model or name):
/// `weight × latency × errors × in_flight × ratelimit`, where
/// - latency = ((fastest EWMA in the group + slack) / (own EWMA + slack))
///   ^ latency_exponent, and 1 with no recent sample (exploration: unknown
///   is presumed fast); the slack (`latency_slack_ms`) keeps jitter of a few
///   milliseconds from moving traffic;
/// - errors = (1 − error rate) ^ error_exponent, once the window holds
///   `MIN_ERROR_SAMPLES`;
/// - in_flight = 1 / (1 + inflight_weight × in-flight);
/// - ratelimit = min_factor when every usable key is nearly out.
///
/// Each factor is at least `min_factor`, so every available upstream keeps
/// a trickle of traffic and a recovered one wins its share back.
/// In `weighted` mode the score is the weight alone.
pub fn score_group(inputs: &[ScoreInputs], sc: &Scoring) -> Vec<(f64, Factors)> {
    let fastest = inputs
        .iter()
        .filter_map(|i| i.ewma_ms)
        .fold(f64::INFINITY, f64::min);
    inputs
        .iter()
        .map(|i| {
            if sc.mode == ScoringMode::Weighted {
                let f = Factors {
                    latency: 1.0,
                    errors: 1.0,
                    in_flight: 1.0,
                    ratelimit: 1.0,
                };
                return (i.weight, f);
            }
            let floor = |x: f64| x.clamp(sc.min_factor, 1.0);
            let latency = match i.ewma_ms {
                Some(own) if own > 0.0 && fastest.is_finite() => {
                    let slack = sc.latency_slack_ms;
                    floor(((fastest + slack).max(0.001) / (own + slack)).powf(sc.latency_exponent))
                }
                _ => 1.0,
            };
            let errors = if i.samples >= MIN_ERROR_SAMPLES {
                floor((1.0 - i.error_rate).powf(sc.error_exponent))
            } else {
                1.0
            };
            let in_flight = floor(1.0 / (1.0 + sc.inflight_weight * f64::from(i.in_flight)));
            let ratelimit = if i.ratelimit_low { sc.min_factor } else { 1.0 };
            let f = Factors {
                latency,
                errors,
                in_flight,
                ratelimit,
            };
            (
                i.weight * f.latency * f.errors * f.in_flight * f.ratelimit,
                f,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing::RoutingSettings;

    fn input(ewma: Option<f64>, error_rate: f64, samples: u32) -> ScoreInputs {
        ScoreInputs {
            weight: 1.0,
            ewma_ms: ewma,
            error_rate,
            samples,
            in_flight: 0,
            breaker: "closed",
            breaker_available: true,
            key_available: true,
            ratelimit_remaining: None,
            ratelimit_low: false,
            has_room: true,
        }
    }

    #[test]
    fn a_ten_times_slower_upstream_gets_about_one_percent() {
        let sc = RoutingSettings::default().scoring;
        let s = score_group(
            &[
                input(Some(200.0), 0.0, 50),
                input(Some(200.0), 0.0, 50),
                input(Some(2000.0), 0.0, 50),
            ],
            &sc,
        );
        let total: f64 = s.iter().map(|x| x.0).sum();
        let slow = s[2].0 / total;
        assert!(slow < 0.01, "slow share {slow}");
    }

    #[test]
    fn jitter_of_a_few_milliseconds_moves_no_traffic() {
        let sc = RoutingSettings::default().scoring;
        let s = score_group(&[input(Some(1.0), 0.0, 50), input(Some(3.0), 0.0, 50)], &sc);
        let share = s[1].0 / (s[0].0 + s[1].0);
        assert!(share > 0.45, "3 ms vs 1 ms got {share}");
        // Without the slack the same jitter would take most of its share.
        let bare = Scoring {
            latency_slack_ms: 0.0,
            ..sc
        };
        let s = score_group(
            &[input(Some(1.0), 0.0, 50), input(Some(3.0), 0.0, 50)],
            &bare,
        );
        assert!(s[1].0 / (s[0].0 + s[1].0) < 0.05);
    }

    #[test]
    fn errors_cost_share_and_unknown_upstreams_are_explored() {
        let sc = RoutingSettings::default().scoring;
        let s = score_group(
            &[
                input(Some(10.0), 0.0, 50),
                input(Some(10.0), 0.5, 50),
                input(None, 0.0, 0),
            ],
            &sc,
        );
        assert!((s[1].0 - 0.25).abs() < 1e-9, "{s:?}");
        assert_eq!(s[2].0, 1.0, "no data: treated as the best");
        // Too few samples: the error rate does not count yet.
        let s = score_group(&[input(Some(10.0), 1.0, 2)], &sc);
        assert_eq!(s[0].0, 1.0);
    }

    #[test]
    fn floors_in_flight_rate_limits_and_weighted_mode() {
        let mut sc = RoutingSettings::default().scoring;
        let mut busy = input(Some(10.0), 0.0, 10);
        busy.in_flight = 5;
        let mut low = input(Some(10.0), 0.0, 10);
        low.ratelimit_low = true;
        let dead = input(Some(10.0), 1.0, 10);
        let s = score_group(&[busy.clone(), low.clone(), dead.clone()], &sc);
        assert!((s[0].0 - 0.5).abs() < 1e-9);
        assert_eq!(s[1].0, sc.min_factor);
        assert_eq!(s[2].0, sc.min_factor, "never below the floor");
        sc.mode = ScoringMode::Weighted;
        let s = score_group(&[busy, low, dead], &sc);
        assert!(s.iter().all(|x| x.0 == 1.0));
    }
}
