//! A provider's health as a typed value: its status, each key's cooldown
//! and last rate-limit reading, each model's breaker and record. Computed
//! here from the live state; turned into JSON only at the admin edge
//! (`GET /providers/{id}/health`, the console), and read as a value by
//! whoever decides on it (the console's count of healthy providers).

use std::sync::atomic::Ordering;

use super::breaker::BreakerState;
use super::cooldown::Cause;
use super::ratelimit::RateLimitReading;
use super::Provider;
use crate::config::routing::RoutingSettings;

/// What a provider can do now, as a word (README "Provider health").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderStatus {
    /// Every key usable, every breaker closed.
    Healthy,
    /// Some key resting or some breaker open: it still takes requests.
    Degraded,
    /// No key usable now, or every model's breaker open.
    CoolingDown,
    /// `enabled: false` in its config.
    Disabled,
}

impl ProviderStatus {
    /// The name the admin API shows.
    pub fn name(self) -> &'static str {
        match self {
            ProviderStatus::Healthy => "healthy",
            ProviderStatus::Degraded => "degraded",
            ProviderStatus::CoolingDown => "cooling_down",
            ProviderStatus::Disabled => "disabled",
        }
    }
}

/// One key of a provider, now.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyHealth {
    pub index: usize,
    /// Not cooling down.
    pub available: bool,
    pub weight: f64,
    pub in_flight: u32,
    pub max_concurrency: Option<u32>,
    pub max_qps: Option<u32>,
    /// While it cools down: until when (ms since the epoch).
    pub cooldown_until_ms: Option<u64>,
    /// Why it last cooled down.
    pub cause: Option<Cause>,
    pub strikes: u32,
    pub ratelimit: Option<RateLimitReading>,
    /// Nearly out of its rate limit (`routing.ratelimit_reserve`).
    pub ratelimit_low: bool,
}

/// One model of a provider, as routing sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelHealth {
    pub model: String,
    pub breaker: BreakerState,
    /// When the breaker last changed state (ms since the epoch).
    pub breaker_since_ms: Option<u64>,
    pub consecutive_failures: u32,
    /// The (provider, model)'s one latency average, when recent.
    pub latency_ewma_ms: Option<f64>,
    pub error_rate: f64,
    pub samples: u32,
    pub in_flight: u32,
}

/// A provider's health at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderHealth {
    pub status: ProviderStatus,
    /// The most failures in a row of any of its models.
    pub consecutive_failures: u32,
    /// When no key is usable: when the first is again.
    pub cooldown_until_ms: Option<u64>,
    pub in_flight: u32,
    pub keys: Vec<KeyHealth>,
    pub models: Vec<ModelHealth>,
}

/// `p`'s health at `now` (ms since the epoch).
pub fn of(p: &Provider, now: u64, r: &RoutingSettings) -> ProviderHealth {
    let key_states = p.key_states();
    let keys: Vec<KeyHealth> = key_states
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let cooling = k.cooldown_until_ms > now;
            let o = p.config.key_options.get(i).cloned().unwrap_or_default();
            KeyHealth {
                index: i,
                available: !cooling,
                weight: o.weight,
                in_flight: p.key_in_flight(i),
                max_concurrency: o.max_concurrency,
                max_qps: o.max_qps,
                cooldown_until_ms: cooling.then_some(k.cooldown_until_ms),
                cause: k.cause,
                strikes: k.strikes,
                ratelimit_low: k
                    .ratelimit
                    .as_ref()
                    .is_some_and(|x| x.low(now, r.ratelimit_reserve)),
                ratelimit: k.ratelimit.clone(),
            }
        })
        .collect();
    let models: Vec<ModelHealth> = p
        .all_stats()
        .iter()
        .map(|(m, s)| {
            let snap = s.snapshot(now, &r.scoring, &r.breaker);
            ModelHealth {
                model: m.clone(),
                breaker: snap.breaker,
                breaker_since_ms: Some(s.last_transition_ms()).filter(|t| *t > 0),
                consecutive_failures: snap.consecutive_failures,
                latency_ewma_ms: snap.ewma_ms,
                error_rate: snap.error_rate,
                samples: snap.samples,
                in_flight: snap.in_flight,
            }
        })
        .collect();
    let (key_available, _, _) = p.key_outlook(r.ratelimit_reserve);
    let open = models
        .iter()
        .filter(|m| m.breaker != BreakerState::Closed)
        .count();
    let key_cooling = keys.iter().any(|k| !k.available);
    let status = if !p.config.enabled {
        ProviderStatus::Disabled
    } else if !key_available || (open > 0 && open == models.len()) {
        ProviderStatus::CoolingDown
    } else if open > 0 || key_cooling {
        ProviderStatus::Degraded
    } else {
        ProviderStatus::Healthy
    };
    let cooldown_until = key_states
        .iter()
        .map(|k| k.cooldown_until_ms)
        .filter(|t| *t > now)
        .min();
    ProviderHealth {
        status,
        consecutive_failures: models
            .iter()
            .map(|m| m.consecutive_failures)
            .max()
            .unwrap_or(0),
        cooldown_until_ms: if key_available { None } else { cooldown_until },
        in_flight: p.capacity.in_flight(),
        keys,
        models,
    }
}

/// A provider's answers and failures since start, and its latency: the
/// mean of its models' latency averages (`stats.rs`, the one average per
/// (provider, model), the one scoring reads), each weighted by its answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderTotals {
    pub successes: u64,
    pub failures: u64,
    /// `None` before its first answer.
    pub latency_ewma_ms: Option<f64>,
}

impl ProviderTotals {
    /// Failures over attempts that said something about the provider.
    pub fn error_rate(&self) -> f64 {
        let all = self.successes + self.failures;
        if all > 0 {
            self.failures as f64 / all as f64
        } else {
            0.0
        }
    }
}

/// `p`'s totals now.
pub fn totals(p: &Provider) -> ProviderTotals {
    let (mut weighted, mut answers) = (0.0, 0u64);
    for (_, s) in p.all_stats() {
        if let Some((ewma, n)) = s.latency() {
            weighted += ewma * n as f64;
            answers += n;
        }
    }
    ProviderTotals {
        successes: p.tally.successes.load(Ordering::Relaxed),
        failures: p.tally.failures.load(Ordering::Relaxed),
        latency_ewma_ms: (answers > 0).then(|| weighted / answers as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn setup(yaml: &str) -> (Provider, RoutingSettings) {
        let c = Config::from_yaml(yaml, &|_| None).unwrap();
        let routing = c.routing.clone();
        (
            Provider::new(c.providers.into_iter().next().unwrap()),
            routing,
        )
    }

    #[test]
    fn status_follows_keys_and_breakers() {
        let (p, r) =
            setup("providers: [{id: o, kind: openai, base_url: 'http://h', api_keys: [k1, k2]}]");
        let now = super::super::now_ms();
        assert_eq!(of(&p, now, &r).status, ProviderStatus::Healthy);
        p.cool_key(0, Cause::ServerError, None, &r.cooldowns);
        let h = of(&p, now, &r);
        assert_eq!(h.status, ProviderStatus::Degraded);
        assert!(!h.keys[0].available && h.keys[1].available);
        assert_eq!(h.cooldown_until_ms, None);
        p.cool_key(1, Cause::ServerError, None, &r.cooldowns);
        let h = of(&p, now, &r);
        assert_eq!(h.status, ProviderStatus::CoolingDown);
        assert!(h.cooldown_until_ms.is_some());
        assert_eq!(ProviderStatus::CoolingDown.name(), "cooling_down");
    }

    #[test]
    fn one_latency_average_feeds_scoring_and_the_providers_totals() {
        let (p, r) = setup("providers: [{id: o, kind: openai, base_url: 'http://h'}]");
        assert_eq!(totals(&p).latency_ewma_ms, None);
        let now = super::super::now_ms();
        // Three answers of 100 ms on one model, one of 300 ms on another.
        let a = p.stats_for("a");
        for _ in 0..3 {
            a.on_success(now, 100.0, &r.scoring);
        }
        p.stats_for("b").on_success(now, 300.0, &r.scoring);
        let t = totals(&p);
        assert_eq!(t.latency_ewma_ms, Some(150.0));
        // The health answer and scoring read the same record.
        let h = of(&p, now, &r);
        let model_a = h.models.iter().find(|m| m.model == "a").unwrap();
        assert_eq!(model_a.latency_ewma_ms, Some(100.0));
        assert_eq!(
            a.snapshot(now, &r.scoring, &r.breaker).ewma_ms,
            model_a.latency_ewma_ms
        );
    }
}
