//! `GET /admin/metrics`: ai-proxy's JSON metrics snapshot (requests,
//! errors, latency, tokens and cost per provider and upstream model), read
//! from the Prometheus counters that `/metrics` serves, so both say the same
//! since the process started.

use std::collections::BTreeMap;

use prometheus::core::Collector;
use prometheus::proto::{Histogram, Metric, MetricFamily};
use serde_json::{json, Value};

use crate::metrics::{COST, REQUESTS, REQUEST_SECONDS, TOKENS};

/// Counts of one provider, or of one of its upstream models.
#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    client_errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.client_errors += o.client_errors;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cost_usd += o.cost_usd;
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        })
    }
}

fn label<'a>(m: &'a Metric, name: &str) -> &'a str {
    m.label
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

fn metrics(families: &[MetricFamily]) -> impl Iterator<Item = &Metric> {
    families.iter().flat_map(|f| f.get_metric())
}

/// The snapshot: `totals`, and per provider its tally, latency and models.
/// Requests answered before any provider was chosen (refused, unknown
/// model) count under provider `-`.
pub fn snapshot() -> Value {
    // (provider, upstream model) → tally
    let mut tally: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for m in metrics(&REQUESTS.collect()) {
        let status: u16 = label(m, "status").parse().unwrap_or(0);
        let n = m.counter.value() as u64;
        let t = tally
            .entry((
                label(m, "provider").into(),
                label(m, "upstream_model").into(),
            ))
            .or_default();
        t.requests += n;
        if status >= 500 {
            t.errors += n;
        } else if status >= 400 {
            t.client_errors += n;
        }
    }
    for m in metrics(&TOKENS.collect()) {
        let n = m.counter.value() as u64;
        let t = tally
            .entry((label(m, "provider").into(), label(m, "model").into()))
            .or_default();
        match label(m, "direction") {
            "input" => t.input_tokens += n,
            "output" => t.output_tokens += n,
            _ => {}
        }
    }
    for m in metrics(&COST.collect()) {
        tally
            .entry((label(m, "provider").into(), label(m, "model").into()))
            .or_default()
            .cost_usd += m.counter.value();
    }
    let mut latency: BTreeMap<String, Histogram> = BTreeMap::new();
    for m in metrics(&REQUEST_SECONDS.collect()) {
        merge(
            latency.entry(label(m, "provider").into()).or_default(),
            &m.histogram,
        );
    }
    let mut totals = Tally::default();
    let mut providers: BTreeMap<String, (Tally, Vec<Value>)> = BTreeMap::new();
    for ((provider, model), t) in &tally {
        totals.add(t);
        let p = providers.entry(provider.clone()).or_default();
        p.0.add(t);
        let mut v = t.json();
        v["model"] = json!(model);
        p.1.push(v);
    }
    let providers: Vec<Value> = providers
        .into_iter()
        .map(|(id, (t, models))| {
            let mut v = t.json();
            v["provider"] = json!(id);
            v["latency_ms"] = latency.get(&id).map_or(Value::Null, latency_json);
            v["models"] = json!(models);
            v
        })
        .collect();
    json!({
        "scope": "this replica since it started",
        "totals": totals.json(),
        "providers": providers,
    })
}

/// Adds `h`'s counts to `into` (the same buckets: one histogram vector).
fn merge(into: &mut Histogram, h: &Histogram) {
    into.set_sample_count(into.sample_count() + h.sample_count());
    into.set_sample_sum(into.sample_sum() + h.sample_sum());
    if into.bucket.is_empty() {
        into.bucket.clone_from(&h.bucket);
        return;
    }
    for (a, b) in into.bucket.iter_mut().zip(&h.bucket) {
        a.set_cumulative_count(a.cumulative_count() + b.cumulative_count());
    }
}

/// Mean and quantiles (interpolated within buckets, as Prometheus's
/// `histogram_quantile` does) in milliseconds.
fn latency_json(h: &Histogram) -> Value {
    let n = h.sample_count();
    if n == 0 {
        return Value::Null;
    }
    let q = |q: f64| quantile(h, q).map(|s| s * 1000.0);
    json!({
        "mean": h.sample_sum() / n as f64 * 1000.0,
        "p50": q(0.5),
        "p95": q(0.95),
        "p99": q(0.99),
    })
}

fn quantile(h: &Histogram, q: f64) -> Option<f64> {
    let n = h.sample_count() as f64;
    let rank = q * n;
    let (mut lower, mut below) = (0.0, 0.0);
    for b in &h.bucket {
        let count = b.cumulative_count() as f64;
        if count >= rank {
            let upper = b.upper_bound();
            let inside = count - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                0.0
            };
            return Some(lower + (upper - lower) * frac);
        }
        lower = b.upper_bound();
        below = count;
    }
    // Above the last bucket: its bound is all that is known.
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::Bucket;

    fn histogram(bounds_counts: &[(f64, u64)], sum: f64) -> Histogram {
        let mut h = Histogram::default();
        let buckets: Vec<Bucket> = bounds_counts
            .iter()
            .map(|&(b, c)| {
                let mut x = Bucket::default();
                x.set_upper_bound(b);
                x.set_cumulative_count(c);
                x
            })
            .collect();
        h.bucket = buckets;
        h.set_sample_count(bounds_counts.last().map_or(0, |x| x.1));
        h.set_sample_sum(sum);
        h
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        // 10 samples: 4 under 0.1 s, 10 under 0.5 s.
        let h = histogram(&[(0.1, 4), (0.5, 10)], 2.0);
        let v = latency_json(&h);
        assert!((v["mean"].as_f64().unwrap() - 200.0).abs() < 1e-9);
        // rank 5 is the first of the six in (0.1, 0.5]: 0.1 + 0.4 / 6.
        let p50 = v["p50"].as_f64().unwrap();
        assert!((p50 - (100.0 + 400.0 / 6.0)).abs() < 1e-6, "{p50}");
        assert!(latency_json(&histogram(&[(0.1, 0)], 0.0)).is_null());
    }

    #[test]
    fn histograms_of_one_vector_merge() {
        let mut a = histogram(&[(0.1, 1), (0.5, 2)], 0.3);
        merge(&mut a, &histogram(&[(0.1, 3), (0.5, 3)], 0.2));
        assert_eq!(a.get_sample_count(), 5);
        let counts: Vec<u64> = a.bucket.iter().map(Bucket::cumulative_count).collect();
        assert_eq!(counts, [4, 5]);
    }
}
