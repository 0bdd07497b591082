//! `routing:` resolved: failover bounds, scoring constants, the circuit
//! breaker and the key cooldowns (docs/routing.md explains each).

use std::time::Duration;

use super::choices::{Choice, ScoringMode};
use super::raw::RawRouting;

/// `routing.scoring`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scoring {
    pub mode: ScoringMode,
    /// Weight of a new latency sample in the EWMA.
    pub ewma_alpha: f64,
    /// Latency factor = ((fastest EWMA + slack) / (this EWMA + slack)) ^
    /// latency_exponent.
    pub latency_exponent: f64,
    /// Added to both latencies before comparing, in milliseconds: what is
    /// well under it (loopback jitter, a few ms between regions) hardly
    /// moves traffic; a 10× slower upstream still loses nearly all.
    pub latency_slack_ms: f64,
    /// Error factor = (1 − error rate) ^ error_exponent.
    pub error_exponent: f64,
    /// In-flight factor = 1 / (1 + inflight_weight × in-flight).
    pub inflight_weight: f64,
    /// No factor goes below this: every upstream keeps a trickle of traffic.
    pub min_factor: f64,
    /// The error-rate window.
    pub window: Duration,
    /// Latency older than this is forgotten (the upstream is explored again).
    pub stale_after: Duration,
}

/// `routing.breaker`.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    pub consecutive_failures: u32,
    pub error_rate: f64,
    /// Attempts in the window before the error rate can open the breaker.
    pub min_requests: u32,
    pub open: Duration,
    pub max_open: Duration,
}

/// `routing.cooldowns`: a key's rest after a failure, by cause; doubled for
/// each failure in a row up to `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooldowns {
    /// A 429 without `Retry-After`.
    pub rate_limited: Duration,
    pub server_error: Duration,
    pub network: Duration,
    /// A key the provider refused (401/403): `routing.cooldown_seconds`.
    pub refused: Duration,
    pub max: Duration,
}

/// Most hedges `routing.hedge_min_concurrency` may let run at once.
const MAX_HEDGE_MIN_CONCURRENCY: u32 = 1000;

/// `routing:` resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingSettings {
    pub request_timeout: Duration,
    pub max_models: usize,
    pub max_attempts: u32,
    pub retry_rounds: u32,
    pub retry_backoff: Duration,
    pub scoring: Scoring,
    pub breaker: BreakerSettings,
    pub cooldowns: Cooldowns,
    pub ratelimit_reserve: u64,
    /// Hedges may start for at most this percentage of a key's requests.
    pub hedge_budget_percent: u32,
    /// Hedges that may run at once whatever the budget holds.
    pub hedge_min_concurrency: u32,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        resolve(RawRouting::default(), &mut Vec::new())
    }
}

/// Resolves `routing:`, noting problems by key path.
pub fn resolve(r: RawRouting, problems: &mut Vec<String>) -> RoutingSettings {
    let mut positive = |v: Option<u64>, key: &str, default: u64| -> u64 {
        match v {
            Some(0) => {
                problems.push(format!("routing.{key}: must be positive"));
                default
            }
            Some(v) => v,
            None => default,
        }
    };
    let request_timeout = Duration::from_millis(positive(
        r.request_timeout_ms,
        "request_timeout_ms",
        180_000,
    ));
    let refused = Duration::from_secs(positive(r.cooldown_seconds, "cooldown_seconds", 30));
    let retry_backoff = Duration::from_millis(r.retry_backoff_ms.unwrap_or(200));
    let c = r.cooldowns;
    let cooldowns = Cooldowns {
        rate_limited: Duration::from_secs(positive(
            c.rate_limited_seconds,
            "cooldowns.rate_limited_seconds",
            60,
        )),
        server_error: Duration::from_secs(positive(
            c.server_error_seconds,
            "cooldowns.server_error_seconds",
            15,
        )),
        network: Duration::from_secs(positive(c.network_seconds, "cooldowns.network_seconds", 10)),
        refused,
        max: Duration::from_secs(positive(c.max_seconds, "cooldowns.max_seconds", 300)),
    };
    let b = r.breaker;
    let breaker_open = positive(b.open_ms, "breaker.open_ms", 30_000);
    let breaker_max = positive(b.max_open_ms, "breaker.max_open_ms", 300_000);
    let window = positive(r.scoring.window_seconds, "scoring.window_seconds", 60);
    let stale = positive(
        r.scoring.stale_after_seconds,
        "scoring.stale_after_seconds",
        60,
    );
    let max_models = r.max_models.unwrap_or(5);
    if max_models == 0 {
        problems.push("routing.max_models: must be at least 1".to_owned());
    }
    let max_attempts = r.max_attempts.unwrap_or(6);
    if max_attempts == 0 {
        problems.push("routing.max_attempts: must be at least 1".to_owned());
    }
    let retry_rounds = r.retry_rounds.unwrap_or(1);
    if !(1..=5).contains(&retry_rounds) {
        problems.push("routing.retry_rounds: must be 1 to 5".to_owned());
    }
    if breaker_max < breaker_open {
        problems.push("routing.breaker.max_open_ms: must not be below open_ms".to_owned());
    }
    let hedge_budget_percent = r.hedge_budget_percent.unwrap_or(10);
    if hedge_budget_percent > 100 {
        problems.push("routing.hedge_budget_percent: must be 0 to 100".to_owned());
    }
    let hedge_min_concurrency = r.hedge_min_concurrency.unwrap_or(2);
    if hedge_min_concurrency > MAX_HEDGE_MIN_CONCURRENCY {
        problems.push(format!(
            "routing.hedge_min_concurrency: must be 0 to {MAX_HEDGE_MIN_CONCURRENCY}"
        ));
    }
    let s = r.scoring;
    let mode = match s.mode.as_ref().map(Choice::value) {
        None => ScoringMode::Adaptive,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            problems.push(format!("routing.scoring.mode: {e}"));
            ScoringMode::Adaptive
        }
    };
    let mut fraction = |v: Option<f64>, key: &str, default: f64, lo: f64, hi: f64| -> f64 {
        match v {
            Some(x) if !(x.is_finite() && x >= lo && x <= hi) => {
                problems.push(format!("routing.{key}: must be between {lo} and {hi}"));
                default
            }
            Some(x) => x,
            None => default,
        }
    };
    let scoring = Scoring {
        mode,
        ewma_alpha: fraction(s.ewma_alpha, "scoring.ewma_alpha", 0.3, 0.01, 1.0),
        latency_exponent: fraction(
            s.latency_exponent,
            "scoring.latency_exponent",
            3.0,
            0.0,
            8.0,
        ),
        latency_slack_ms: fraction(
            s.latency_slack_ms,
            "scoring.latency_slack_ms",
            50.0,
            0.0,
            60_000.0,
        ),
        error_exponent: fraction(s.error_exponent, "scoring.error_exponent", 2.0, 0.0, 8.0),
        inflight_weight: fraction(s.inflight_weight, "scoring.inflight_weight", 0.2, 0.0, 10.0),
        min_factor: fraction(s.min_factor, "scoring.min_factor", 0.002, 0.0, 1.0),
        window: Duration::from_secs(window),
        stale_after: Duration::from_secs(stale),
    };
    let breaker = BreakerSettings {
        consecutive_failures: b.consecutive_failures.unwrap_or(5).max(1),
        error_rate: fraction(b.error_rate, "breaker.error_rate", 0.5, 0.01, 1.0),
        min_requests: b.min_requests.unwrap_or(20).max(1),
        open: Duration::from_millis(breaker_open),
        max_open: Duration::from_millis(breaker_max),
    };
    RoutingSettings {
        request_timeout,
        max_models,
        max_attempts,
        retry_rounds,
        retry_backoff,
        scoring,
        breaker,
        cooldowns,
        ratelimit_reserve: r.ratelimit_reserve.unwrap_or(1),
        hedge_budget_percent: hedge_budget_percent.min(100),
        hedge_min_concurrency: hedge_min_concurrency.min(MAX_HEDGE_MIN_CONCURRENCY),
    }
}
