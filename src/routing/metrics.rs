//! Routing's metrics. Labels are configured provider ids and fixed state
//! names only.

use once_cell::sync::Lazy;
use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};

use crate::upstream::breaker::Transition;
use crate::upstream::Provider;

fn must<T>(r: prometheus::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("registering a routing metric: {e}"))
}

/// `apiproxy_breaker_transitions_total{provider, to}`.
pub static BREAKER_TRANSITIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    must(register_int_counter_vec!(
        "apiproxy_breaker_transitions_total",
        "Circuit breaker state changes, by provider and new state",
        &["provider", "to"]
    ))
});

/// `apiproxy_breakers_open{provider}`: (provider, model) breakers not closed.
pub static BREAKERS_OPEN: Lazy<IntGaugeVec> = Lazy::new(|| {
    must(register_int_gauge_vec!(
        "apiproxy_breakers_open",
        "Circuit breakers open or half-open, by provider",
        &["provider"]
    ))
});

/// `apiproxy_key_cooldowns_total{provider, cause}`.
pub static KEY_COOLDOWNS: Lazy<IntCounterVec> = Lazy::new(|| {
    must(register_int_counter_vec!(
        "apiproxy_key_cooldowns_total",
        "Provider keys taken out of rotation, by provider and cause",
        &["provider", "cause"]
    ))
});

/// `apiproxy_hedges_total{provider, outcome}`: `provider` is the hedge's
/// upstream; `outcome` is `started`, `won` (its answer was used), `lost`
/// (the first attempt's was) or `skipped_budget` (due, but the budget was
/// spent).
pub static HEDGES: Lazy<IntCounterVec> = Lazy::new(|| {
    must(register_int_counter_vec!(
        "apiproxy_hedges_total",
        "Hedged attempts, by the hedge's provider and outcome",
        &["provider", "outcome"]
    ))
});

/// Logs and counts a breaker's state change.
pub fn note_transition(provider: &Provider, t: Option<Transition>) {
    let Some(t) = t else { return };
    log::info!(
        "provider {}: circuit breaker {} -> {}",
        provider.id(),
        t.from,
        t.to
    );
    BREAKER_TRANSITIONS
        .with_label_values(&[provider.id(), t.to])
        .inc();
    let open = provider
        .all_stats()
        .iter()
        .filter(|(_, s)| s.breaker_name() != "closed")
        .count();
    BREAKERS_OPEN
        .with_label_values(&[provider.id()])
        .set(open as i64);
}
