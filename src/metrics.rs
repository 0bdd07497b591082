//! Prometheus metrics, in the default registry (served by Pingora's
//! Prometheus service on `server.metrics_listen`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use once_cell::sync::Lazy;
use once_cell::unsync::OnceCell;

use crate::routing::Runtime;
use prometheus::{
    register_counter_vec, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, Counter, CounterVec, Histogram, HistogramVec, IntCounter, IntCounterVec,
    IntGauge,
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

/// Requests to a logical model with `cache_ttl_seconds`, by how the response
/// cache served them (`hit`, `miss`, `bypass`).
pub static CACHE_REQUESTS: Lazy<IntCounterVec> = Lazy::new(|| {
    must(register_int_counter_vec!(
        "apiproxy_cache_requests_total",
        "Requests to logical models with a response cache, by result (hit, miss, bypass)",
        &["model", "result"]
    ))
});

/// Spans of request traces not exported (`telemetry.otlp`): the queue was
/// full, or the collector did not take them.
pub static OTLP_DROPPED_SPANS: Lazy<IntCounter> = Lazy::new(|| {
    must(register_int_counter!(
        "apiproxy_otlp_dropped_spans_total",
        "Trace spans dropped: the export queue was full or the collector refused or did not answer"
    ))
});

/// What the answers served from the response cache would have cost upstream
/// (their stored usage at the price of the upstream that first answered).
pub static CACHE_SAVED_USD: Lazy<CounterVec> = Lazy::new(|| {
    must(register_counter_vec!(
        "apiproxy_cache_saved_usd_total",
        "USD the response cache saved: the price of the usage of each answer served from it",
        &["model"]
    ))
});

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
    Lazy::force(&CACHE_REQUESTS);
    Lazy::force(&CACHE_SAVED_USD);
    Lazy::force(&RATE_LIMITED);
    Lazy::force(&INFLIGHT_REQUESTS);
    Lazy::force(&INFLIGHT_STREAMS);
}

/// Children of the metric vectors resolved once per thread and label set.
///
/// `with_label_values` hashes the labels, takes the vector's lock and
/// clones the child's `Arc` (two more atomic writes on a line every thread
/// shares); a request used to do that eight times. Each thread now keeps
/// the children it has used, found by one hash of the labels and no lock.
/// They are resolved on first use, not at config load: a child resolved
/// early would show on /metrics as a zero series that was never counted.
/// The label sets are bounded already (names the config or a catalog
/// knows, else `other`), and prometheus keeps every child it made anyway.
struct Resolved<T> {
    buckets: HashMap<u64, Vec<Entry<T>>, BuildHasherDefault<Prehashed>>,
}

/// One resolved label set: its labels, its tag and what was made for it.
type Entry<T> = (Box<[Box<str>]>, u64, T);

impl<T> Default for Resolved<T> {
    fn default() -> Self {
        Resolved {
            buckets: HashMap::default(),
        }
    }
}

impl<T> Resolved<T> {
    /// The entry for `labels` and `tag` (a number that is part of the
    /// labels, kept apart so it needs no string), made by `make` the first time.
    fn get(&mut self, labels: &[&str], tag: u64, make: impl FnOnce() -> T) -> &T {
        // FNV-1a: the labels are short, and a thread's own map is not
        // exposed to anyone choosing keys (the label values are bounded).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ tag;
        for l in labels {
            for &b in l.as_bytes().iter().chain(&[0xff]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        let bucket = self.buckets.entry(h).or_default();
        let same = |(k, t, _): &Entry<T>| {
            *t == tag && k.len() == labels.len() && k.iter().zip(labels).all(|(a, b)| **a == **b)
        };
        let i = match bucket.iter().position(same) {
            Some(i) => i,
            None => {
                let key = labels.iter().map(|l| Box::from(*l)).collect();
                bucket.push((key, tag, make()));
                bucket.len() - 1
            }
        };
        &bucket[i].2
    }
}

/// A `u64` key that is already a hash.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by a `u64` key; fold anything else in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The metrics of one finished request with one set of labels: format,
/// requested model, provider, upstream model, status and client key label.
/// The ones a request may not touch are resolved when one first does.
pub struct Finished {
    /// format, provider, upstream model, key.
    labels: [Box<str>; 4],
    /// `apiproxy_requests_total`.
    pub requests: IntCounter,
    /// `apiproxy_request_duration_seconds`.
    pub seconds: Histogram,
    /// `apiproxy_gateway_overhead_seconds`.
    pub overhead: Histogram,
    ttft: OnceCell<Histogram>,
    tokens: OnceCell<(IntCounter, IntCounter)>,
    cost: OnceCell<Counter>,
    unpriced: OnceCell<IntCounter>,
}

impl Finished {
    fn new(labels: &[&str; 5], status: u16) -> Finished {
        let [format, model, provider, upstream_model, key] = *labels;
        let code = status.to_string();
        Finished {
            labels: [format, provider, upstream_model, key].map(Box::from),
            requests: REQUESTS.with_label_values(&[format, model, provider, upstream_model, &code]),
            seconds: REQUEST_SECONDS.with_label_values(&[format, provider]),
            overhead: OVERHEAD_SECONDS.with_label_values(&[format]),
            ttft: OnceCell::new(),
            tokens: OnceCell::new(),
            cost: OnceCell::new(),
            unpriced: OnceCell::new(),
        }
    }

    /// `apiproxy_time_to_first_token_seconds`.
    pub fn ttft(&self) -> &Histogram {
        let [format, provider, ..] = &self.labels;
        self.ttft
            .get_or_init(|| TTFT_SECONDS.with_label_values(&[&**format, &**provider]))
    }

    /// `apiproxy_tokens_total`, input and output.
    pub fn tokens(&self) -> &(IntCounter, IntCounter) {
        let [_, provider, model, ..] = &self.labels;
        self.tokens.get_or_init(|| {
            (
                TOKENS.with_label_values(&[&**provider, &**model, "input"]),
                TOKENS.with_label_values(&[&**provider, &**model, "output"]),
            )
        })
    }

    /// `apiproxy_cost_usd_total`.
    pub fn cost(&self) -> &Counter {
        let [_, provider, model, key] = &self.labels;
        self.cost
            .get_or_init(|| COST.with_label_values(&[&**provider, &**model, &**key]))
    }

    /// `apiproxy_unpriced_requests_total`.
    pub fn unpriced(&self) -> &IntCounter {
        let [_, provider, model, ..] = &self.labels;
        self.unpriced
            .get_or_init(|| UNPRICED.with_label_values(&[&**provider, &**model]))
    }
}

thread_local! {
    static FINISHED: RefCell<Resolved<Finished>> = RefCell::new(Resolved::default());
    static COUNTERS: RefCell<Resolved<IntCounter>> = RefCell::new(Resolved::default());
}

/// Runs `f` on the metrics of a finished request labelled `format`,
/// `model`, `provider`, `upstream_model`, (the status, given as `status`),
/// `key` — the label values already bounded by the caller.
pub fn with_finished<R>(labels: [&str; 5], status: u16, f: impl FnOnce(&Finished) -> R) -> R {
    FINISHED.with_borrow_mut(|c| {
        f(c.get(&labels, u64::from(status), || {
            Finished::new(&labels, status)
        }))
    })
}

/// Adds one to `vec`'s child for `labels` (resolved once per thread).
/// `vec` is one of this module's statics: its address tells them apart.
pub fn inc(vec: &'static IntCounterVec, labels: &[&str]) {
    let tag = vec as *const IntCounterVec as usize as u64;
    COUNTERS.with_borrow_mut(|c| c.get(labels, tag, || vec.with_label_values(labels)).inc());
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
    fn resolved_once_per_labels_and_tag() {
        let mut r: Resolved<u32> = Resolved::default();
        let mut made = 0;
        let mut get = |r: &mut Resolved<u32>, labels: &[&str], tag| {
            *r.get(labels, tag, || {
                made += 1;
                made
            })
        };
        assert_eq!(get(&mut r, &["a", "b"], 1), 1);
        assert_eq!(get(&mut r, &["a", "b"], 1), 1, "found, not made again");
        assert_eq!(get(&mut r, &["a", "b"], 2), 2, "another tag");
        assert_eq!(
            get(&mut r, &["ab", ""], 1),
            3,
            "labels are not concatenated"
        );
        assert_eq!(get(&mut r, &["a"], 1), 4);
        assert_eq!(get(&mut r, &["a", "b"], 2), 2);
    }

    /// The series of `family` whose labels include `value`.
    fn series_with(family: &str, value: &str) -> usize {
        prometheus::gather()
            .iter()
            .filter(|f| f.name() == family)
            .flat_map(|f| f.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.value() == value))
            .count()
    }

    #[test]
    fn finished_series_appear_only_when_counted() {
        init();
        let labels = ["openai", "m-lazy", "p-lazy", "u-lazy", "k-lazy"];
        with_finished(labels, 200, |m| m.requests.inc());
        assert_eq!(series_with("apiproxy_requests_total", "p-lazy"), 1);
        for family in [
            "apiproxy_tokens_total",
            "apiproxy_cost_usd_total",
            "apiproxy_unpriced_requests_total",
            "apiproxy_time_to_first_token_seconds",
        ] {
            assert_eq!(series_with(family, "p-lazy"), 0, "{family}");
        }
        with_finished(labels, 200, |m| {
            m.requests.inc();
            add_tokens(&m.tokens().0, 5);
            m.cost().inc_by(0.5);
        });
        with_finished(labels, 502, |m| m.requests.inc());
        assert_eq!(series_with("apiproxy_tokens_total", "p-lazy"), 2);
        assert_eq!(series_with("apiproxy_cost_usd_total", "k-lazy"), 1);
        assert_eq!(series_with("apiproxy_requests_total", "p-lazy"), 2);
        assert_eq!(
            REQUESTS
                .with_label_values(&["openai", "m-lazy", "p-lazy", "u-lazy", "200"])
                .get(),
            2
        );
        inc(&ATTEMPTS, &["p-lazy", "ok"]);
        inc(&ATTEMPTS, &["p-lazy", "ok"]);
        assert_eq!(ATTEMPTS.with_label_values(&["p-lazy", "ok"]).get(), 2);
    }

    #[test]
    fn keys_made_at_run_time_share_one_label() {
        assert_eq!(client_key_label("alice", "alice"), "alice");
        assert_eq!(
            client_key_label("~0123456789abcdef", "ci-bot"),
            RUN_TIME_KEYS_LABEL
        );
    }
}
