//! The last hour of traffic as per-interval aggregates: a fixed ring of
//! slots, each holding counts, sums and latency histograms of the requests
//! that ended in its interval. Fixed size whatever the traffic; pure (the
//! caller passes the time), so it is tested without a clock.

use serde::Serialize;

/// Seconds per slot.
pub const INTERVAL_SECS: u64 = 10;
/// Slots kept: one hour.
pub const SLOTS: usize = 360;

/// Histogram buckets: bucket `i` holds durations up to `BASE_MS * GROWTH^(i+1)`,
/// from 0.1 ms to about 10 minutes, so a quantile is within 12.5 % of the truth.
const BUCKETS: usize = 64;
const BASE_MS: f64 = 0.1;
const GROWTH: f64 = 1.25;

/// The lower bound of each bucket after the first: `BASE_MS * GROWTH^i`
/// for `i` in `1..BUCKETS`, made once.
fn bounds() -> &'static [f64; BUCKETS - 1] {
    static BOUNDS: std::sync::OnceLock<[f64; BUCKETS - 1]> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| std::array::from_fn(|i| BASE_MS * GROWTH.powi(i as i32 + 1)))
}

/// Durations in geometric buckets, for quantiles without keeping samples.
#[derive(Clone)]
pub struct Histogram {
    counts: [u32; BUCKETS],
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: [0; BUCKETS],
            total: 0,
        }
    }
}

impl Histogram {
    /// Adds one duration in milliseconds.
    pub fn add(&mut self, ms: f64) {
        // The bucket's number, `floor(log_GROWTH(ms / BASE_MS))`, by a
        // search of the bounds (six comparisons, not a logarithm).
        let i = bounds().partition_point(|&b| b <= ms).min(BUCKETS - 1);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.total += 1;
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
    }

    /// The `q` quantile (0..=1) in ms: the geometric middle of the bucket
    /// holding it; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                let lo = BASE_MS * GROWTH.powi(i as i32);
                return Some(lo * GROWTH.sqrt());
            }
        }
        None
    }
}

/// What one finished request adds to its interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub status: u16,
    pub duration_ms: f64,
    pub ttft_ms: Option<f64>,
    pub overhead_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// One interval's aggregates.
#[derive(Clone, Default)]
struct Slot {
    /// Start of the interval (unix seconds, a multiple of `INTERVAL_SECS`); 0: unused.
    start: u64,
    requests: u64,
    /// Answers with status 5xx (the gateway or its upstreams failed).
    errors: u64,
    /// Answers with status 4xx (the client's request was refused).
    client_errors: u64,
    latency: Histogram,
    ttft: Histogram,
    overhead: Histogram,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
}

/// One point of a chart: one interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Start of the interval, unix seconds.
    pub t: u64,
    pub requests: u64,
    pub rps: f64,
    pub errors: u64,
    pub client_errors: u64,
    /// 5xx answers / requests (0 without requests).
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub overhead_p50_ms: Option<f64>,
    pub overhead_p99_ms: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// The ring of slots.
pub struct Series {
    slots: Vec<Slot>,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            slots: vec![Slot::default(); SLOTS],
        }
    }
}

impl Series {
    /// Adds a request that ended at `now` (unix seconds).
    pub fn add(&mut self, now: u64, s: &Sample) {
        let start = now - now % INTERVAL_SECS;
        let slot = &mut self.slots[((start / INTERVAL_SECS) as usize) % SLOTS];
        if slot.start != start {
            *slot = Slot {
                start,
                ..Slot::default()
            };
        }
        slot.requests += 1;
        if s.status >= 500 {
            slot.errors += 1;
        } else if s.status >= 400 {
            slot.client_errors += 1;
        }
        slot.latency.add(s.duration_ms);
        if let Some(t) = s.ttft_ms {
            slot.ttft.add(t);
        }
        slot.overhead.add(s.overhead_ms);
        slot.input_tokens = slot.input_tokens.saturating_add(s.input_tokens);
        slot.output_tokens = slot.output_tokens.saturating_add(s.output_tokens);
        slot.cost_usd += s.cost_usd;
    }

    /// The last hour up to `now`, oldest first, one point per interval
    /// (intervals without traffic as zero points), and the whole hour merged.
    pub fn snapshot(&self, now: u64) -> (Vec<Point>, Point) {
        snapshot_all(&[self], now)
    }
}

/// [`Series::snapshot`] of the sum of `all` (the console's shards, each
/// written by its own threads): an interval's point adds every shard's slot
/// for that interval.
pub fn snapshot_all(all: &[&Series], now: u64) -> (Vec<Point>, Point) {
    let newest = now - now % INTERVAL_SECS;
    let oldest = newest.saturating_sub(INTERVAL_SECS * (SLOTS as u64 - 1));
    let mut total = Slot::default();
    let mut points = Vec::with_capacity(SLOTS);
    let mut t = oldest;
    while t <= newest {
        let mut merged = Slot {
            start: t,
            ..Slot::default()
        };
        for series in all {
            let slot = &series.slots[((t / INTERVAL_SECS) as usize) % SLOTS];
            if slot.start == t {
                merged.merge(slot);
            }
        }
        points.push(point(&merged, INTERVAL_SECS));
        total.merge(&merged);
        t += INTERVAL_SECS;
    }
    total.start = oldest;
    let span = newest + INTERVAL_SECS - oldest;
    (points, point(&total, span))
}

impl Slot {
    /// Adds `other`'s counts, sums and histograms (its start is not looked at).
    fn merge(&mut self, other: &Slot) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.client_errors += other.client_errors;
        self.latency.merge(&other.latency);
        self.ttft.merge(&other.ttft);
        self.overhead.merge(&other.overhead);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_usd += other.cost_usd;
    }
}

fn point(s: &Slot, span_secs: u64) -> Point {
    Point {
        t: s.start,
        requests: s.requests,
        rps: s.requests as f64 / span_secs as f64,
        errors: s.errors,
        client_errors: s.client_errors,
        error_rate: if s.requests > 0 {
            s.errors as f64 / s.requests as f64
        } else {
            0.0
        },
        p50_ms: s.latency.quantile(0.5),
        p99_ms: s.latency.quantile(0.99),
        ttft_p50_ms: s.ttft.quantile(0.5),
        ttft_p99_ms: s.ttft.quantile(0.99),
        overhead_p50_ms: s.overhead.quantile(0.5),
        overhead_p99_ms: s.overhead.quantile(0.99),
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
        cost_usd: s.cost_usd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds' search puts a duration in the bucket the logarithm
    /// does, a hair off each bound aside (where the two roundings may
    /// differ by one bucket).
    #[test]
    fn a_duration_s_bucket_is_its_logarithm_s() {
        let by_log = |ms: f64| {
            let i = if ms <= BASE_MS {
                0
            } else {
                ((ms / BASE_MS).ln() / GROWTH.ln()).floor() as usize
            };
            i.min(BUCKETS - 1)
        };
        let bucket = |ms: f64| {
            let mut h = Histogram::default();
            h.add(ms);
            h.counts.iter().position(|&c| c == 1).unwrap()
        };
        let mut ms = 0.0;
        while ms < 1.0e7 {
            let near_bound = bounds().iter().any(|b| ((ms - b) / b).abs() < 1e-9);
            if !near_bound {
                assert_eq!(bucket(ms), by_log(ms), "{ms} ms");
            }
            ms = ms * 1.01 + 0.003;
        }
        assert_eq!(bucket(-1.0), 0);
        assert_eq!(
            bucket(f64::NAN),
            0,
            "no duration is no bucket past the first"
        );
        assert_eq!(bucket(f64::INFINITY), BUCKETS - 1);
        for (i, b) in bounds().iter().enumerate() {
            assert_eq!(bucket(b * 1.000_001), i + 1);
            assert_eq!(bucket(b * 0.999_999), i);
        }
    }

    fn sample(status: u16, ms: f64) -> Sample {
        Sample {
            status,
            duration_ms: ms,
            ttft_ms: Some(ms / 2.0),
            overhead_ms: 0.5,
            input_tokens: 3,
            output_tokens: 4,
            cost_usd: 0.01,
        }
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.add(ms as f64);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((40.0..=63.0).contains(&p50), "{p50}");
        assert!((88.0..=125.0).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn one_hour_of_intervals_with_gaps_as_zeroes() {
        let mut s = Series::default();
        let now = 1_000_000;
        s.add(now - 25, &sample(200, 10.0));
        s.add(now - 25, &sample(502, 30.0));
        s.add(now, &sample(404, 20.0));
        let (points, total) = s.snapshot(now);
        assert_eq!(points.len(), SLOTS);
        assert_eq!(points.last().unwrap().t, now - now % INTERVAL_SECS);
        assert_eq!(points.last().unwrap().client_errors, 1);
        let busy = points.iter().find(|p| p.requests == 2).unwrap();
        assert_eq!(busy.errors, 1);
        assert_eq!(busy.error_rate, 0.5);
        assert_eq!(busy.input_tokens, 6);
        assert_eq!(total.requests, 3);
        assert_eq!(total.output_tokens, 12);
        assert!((total.cost_usd - 0.03).abs() < 1e-9);
        assert_eq!(points.iter().map(|p| p.requests).sum::<u64>(), 3);
    }

    #[test]
    fn slots_older_than_an_hour_are_reused_not_counted() {
        let mut s = Series::default();
        let now = 2_000_000;
        s.add(now - 3600, &sample(200, 1.0));
        let (_, total) = s.snapshot(now);
        assert_eq!(
            total.requests, 0,
            "an hour-old interval is out of the window"
        );
        // The same slot, a full ring later, starts afresh.
        s.add(now, &sample(200, 1.0));
        let (points, total) = s.snapshot(now);
        assert_eq!(total.requests, 1);
        assert_eq!(points.last().unwrap().requests, 1);
    }

    #[test]
    fn shards_sum_per_interval() {
        let now = 3_000_000;
        let (mut a, mut b) = (Series::default(), Series::default());
        a.add(now - 25, &sample(200, 10.0));
        b.add(now - 25, &sample(502, 30.0));
        b.add(now, &sample(404, 20.0));
        let mut one = Series::default();
        one.add(now - 25, &sample(200, 10.0));
        one.add(now - 25, &sample(502, 30.0));
        one.add(now, &sample(404, 20.0));
        assert_eq!(snapshot_all(&[&a, &b], now), one.snapshot(now));
    }
}
