//! Prometheus metrics, in the default registry (served by Pingora's
//! Prometheus service on `server.metrics_listen`).

use once_cell::sync::Lazy;

use crate::routing::Runtime;
use prometheus::{
    register_counter_vec, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    CounterVec, HistogramVec, IntCounterVec, IntGauge,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

fn must<T>(r: prometheus::Result<T>) -> T {
    // Registration fails only on a duplicate name, a programming error caught by tests.
    r.unwrap_or_else(|e| panic!("metric registration: {e}"))
}

/// Requests by client format, requested model, provider, upstream model, status.
pub static REQUESTS: Lazy<IntCounterVec> = Lazy::new(|| {
    must(register_int_counter_vec!(
        "apiproxy_requests_total",
        "Requests handled, by client format, requested model, provider, upstream model and status",
        &["format", "model", "provider", "upstream_model", "status"]
    ))
});

/// Whole-request latency.
pub static REQUEST_SECONDS: Lazy<HistogramVec> = Lazy::new(|| {
    must(register_histogram_vec!(
        "apiproxy_request_duration_seconds",
        "Time from request start to the last byte sent",
        &["format", "provider"],
        LATENCY_BUCKETS.to_vec()
    ))
});

/// Time to the first byte of the answer sent to the client.
pub static TTFT_SECONDS: Lazy<HistogramVec> = Lazy::new(|| {
    must(register_histogram_vec!(
        "apiproxy_time_to_first_token_seconds",
        "Time from request start to the first byte of the answer sent to the client",
        &["format", "provider"],
        LATENCY_BUCKETS.to_vec()
    ))
});

/// Time spent in the gateway itself (total minus waiting on upstreams).
pub static OVERHEAD_SECONDS: Lazy<HistogramVec> = Lazy::new(|| {
    must(register_histogram_vec!(
        "apiproxy_gateway_overhead_seconds",
        "Time spent in the gateway itself: request time minus time waiting on upstreams",
        &["format"],
        OVERHEAD_BUCKETS.to_vec()
    ))
});

/// Tokens by provider, upstream model and direction (input/output).
/// Adds `n` to a token counter, stopping at `u64::MAX` instead of wrapping
/// (a provider may report any count; a wrapped counter would read as a
/// reset to Prometheus).
pub fn add_tokens(counter: &prometheus::IntCounter, n: u64) {
    counter.inc_by(n.min(u64::MAX - counter.get()));
}

pub static TOKENS: Lazy<IntCounterVec> = Lazy::new(|| {
    must(register_int_counter_vec!(
        "apiproxy_tokens_total",
        "Tokens reported by providers",
        &["provider", "model", "direction"]
    ))
});

/// Cost in USD, by provider, upstream model and client key.
pub static COST: Lazy<CounterVec> = Lazy::new(|| {
    must(register_counter_vec!(
        "apiproxy_cost_usd_total",
        "Cost in US dollars, from the built-in price table or the providers' pricing",
        &["provider", "model", "key"]
    ))
});

/// Upstream attempts by outcome (ok, status code, connect_error, timeout, io_error).
pub static ATTEMPTS: Lazy<IntCounterVec> = Lazy::new(|| {
    must(register_int_counter_vec!(
        "apiproxy_upstream_attempts_total",
        "Attempts sent to upstreams, by outcome",
        &["provider", "outcome"]
    ))
});

/// Requests moved from a failed upstream to the next candidate.
pub static FAILOVERS: Lazy<IntCounterVec> = Lazy::new(|| {
    must(register_int_counter_vec!(
        "apiproxy_failovers_total",
        "Times a request moved on from a failed upstream",
        &["from_provider"]
    ))
});

/// Requests refused by a rate limit.
/// Answers of models without a price (not in the built-in table nor in
/// `pricing`): their tokens are counted, their cost is not.
pub static UNPRICED: Lazy<IntCounterVec> = Lazy::new(|| {
    must(register_int_counter_vec!(
        "apiproxy_unpriced_requests_total",
        "Answers of models without a price (no cost counted: add `pricing`)",
        &["provider", "model"]
    ))
});

/// The `key` label of keys made at run time (in the console): one label
/// for all of them, however many are made.
pub const RUN_TIME_KEYS_LABEL: &str = "console";

/// The `key` label of a client key (id and name): a configured key by its
/// name, a bounded set the config owns; a key made at run time (its id
/// starts with `~`) as [`RUN_TIME_KEYS_LABEL`].
pub fn client_key_label<'a>(id: &str, name: &'a str) -> &'a str {
    if id.starts_with('~') {
        RUN_TIME_KEYS_LABEL
    } else {
        name
    }
}

pub static RATE_LIMITED: Lazy<IntCounterVec> = Lazy::new(|| {
    must(register_int_counter_vec!(
        "apiproxy_rate_limited_total",
        "Requests refused by a rate limit",
        &["key", "limit"]
    ))
});

pub static INFLIGHT_REQUESTS: Lazy<IntGauge> = Lazy::new(|| {
    must(register_int_gauge!(
        "apiproxy_inflight_requests",
        "Requests in progress"
    ))
});

pub static INFLIGHT_STREAMS: Lazy<IntGauge> = Lazy::new(|| {
    must(register_int_gauge!(
        "apiproxy_inflight_streams",
        "Streams in progress"
    ))
});

/// Registers every metric so /metrics shows them before the first request.
pub fn init() {
    Lazy::force(&REQUESTS);
    Lazy::force(&REQUEST_SECONDS);
    Lazy::force(&TTFT_SECONDS);
    Lazy::force(&OVERHEAD_SECONDS);
    Lazy::force(&TOKENS);
    Lazy::force(&COST);
    Lazy::force(&UNPRICED);
    Lazy::force(&ATTEMPTS);
    Lazy::force(&FAILOVERS);
    Lazy::force(&RATE_LIMITED);
    Lazy::force(&INFLIGHT_REQUESTS);
    Lazy::force(&INFLIGHT_STREAMS);
}

/// The label value for a model a client asked for: only names the gateway
/// knows (a logical model, a name some provider's catalog lists, or
/// `provider-id/model` with the model in that provider's catalog) become
/// labels; anything else is `other`, so a client inventing names cannot
/// create series without bound.
pub fn model_label<'a>(rt: &Runtime, requested: &'a str) -> &'a str {
    if requested.is_empty() {
        return "-";
    }
    if rt.config.logical_model(requested).is_some() {
        return requested;
    }
    if let Some((pid, model)) = requested.split_once('/') {
        if rt.provider(pid).is_some_and(|p| p.serves(model)) {
            return requested;
        }
    }
    if rt.providers.iter().any(|p| p.serves(requested)) {
        return requested;
    }
    "other"
}

/// The label value for the model sent to `provider`: a configured upstream
/// model or one in the provider's catalog, else `other`.
pub fn upstream_model_label<'a>(rt: &Runtime, provider: &str, model: &'a str) -> &'a str {
    if model.is_empty() {
        return "-";
    }
    let Some(p) = rt.provider(provider) else {
        return "other";
    };
    let configured = rt.config.models.iter().any(|m| {
        m.upstreams
            .iter()
            .any(|u| u.model == model && rt.providers[u.provider].id() == provider)
    });
    if configured || p.serves(model) {
        model
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_made_at_run_time_share_one_label() {
        assert_eq!(client_key_label("alice", "alice"), "alice");
        assert_eq!(
            client_key_label("~0123456789abcdef", "ci-bot"),
            RUN_TIME_KEYS_LABEL
        );
    }
}
