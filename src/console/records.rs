//! Recent requests: one record per finished generation request, kept in a
//! bounded ring (`console.recent_requests`), filtered for the request list
//! and the live tail, and counted per upstream for the traffic shares.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

/// What the console shows of one request. Names come from the gateway's own
/// sets (configured keys, models that reached an upstream, providers); the
/// body only when `log.capture_bodies` is on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestRecord {
    /// Increasing id, unique in this process.
    pub id: u64,
    /// When it ended, unix seconds.
    pub time: f64,
    pub key: Option<String>,
    /// Client format (`openai_chat`, `anthropic`, ...).
    pub format: &'static str,
    /// The model the client asked for.
    pub model: String,
    /// The provider that answered (or was tried last); empty when none was tried.
    pub provider: String,
    pub upstream_model: String,
    pub status: u16,
    pub stream: bool,
    pub attempts: u32,
    pub duration_ms: f64,
    pub ttft_ms: Option<f64>,
    /// Time spent waiting on upstreams.
    pub upstream_ms: f64,
    /// Time spent in the gateway itself.
    pub overhead_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// From the provider's `pricing`; `None` without a price.
    pub cost_usd: Option<f64>,
    pub session: Option<String>,
    pub client_gone: bool,
    /// How the response cache served it (`hit`: no upstream was asked;
    /// `miss`, `bypass`); absent for models without caching.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// Each candidate tried or passed over, in order.
    pub attempt_detail: Vec<crate::proxy::ctx::AttemptLog>,
    /// The request body, redacted and cut short (`log.capture_bodies`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Which statuses a filter lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Exact(u16),
    /// `2xx`, `4xx`, `5xx`: the hundreds digit.
    Class(u16),
    /// Every status from 400 up.
    Errors,
}

impl StatusFilter {
    /// Parses `200`, `4xx` or `error`.
    pub fn parse(s: &str) -> Option<StatusFilter> {
        let s = s.trim().to_ascii_lowercase();
        if s == "error" || s == "errors" {
            return Some(StatusFilter::Errors);
        }
        if let Some(d) = s.strip_suffix("xx") {
            return d
                .parse::<u16>()
                .ok()
                .filter(|d| (1..=5).contains(d))
                .map(StatusFilter::Class);
        }
        s.parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .map(StatusFilter::Exact)
    }

    fn matches(self, status: u16) -> bool {
        match self {
            StatusFilter::Exact(s) => status == s,
            StatusFilter::Class(c) => status / 100 == c,
            StatusFilter::Errors => status >= 400,
        }
    }
}

/// The filters of the request list and the tail; empty fields match all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub key: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: Option<StatusFilter>,
}

impl Filter {
    /// From a query string (`key=alice&status=5xx`); unknown parameters are
    /// ignored, a bad status is an error.
    pub fn from_query(query: Option<&str>) -> Result<Filter, String> {
        let mut f = Filter::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if v.is_empty() {
                continue;
            }
            match k.as_ref() {
                "key" => f.key = Some(v.into_owned()),
                "model" => f.model = Some(v.into_owned()),
                "provider" => f.provider = Some(v.into_owned()),
                "status" => {
                    f.status = Some(StatusFilter::parse(&v).ok_or_else(|| {
                        format!("status filter {v:?} is not a status, `4xx` or `error`")
                    })?)
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// Whether `r` passes.
    pub fn matches(&self, r: &RequestRecord) -> bool {
        self.key.as_ref().is_none_or(|k| r.key.as_ref() == Some(k))
            && self
                .model
                .as_ref()
                .is_none_or(|m| &r.model == m || &r.upstream_model == m)
            && self.provider.as_ref().is_none_or(|p| &r.provider == p)
            && self.status.is_none_or(|s| s.matches(r.status))
    }
}

/// The ring of recent records. The console keeps one per shard
/// (`super::Console`), each written by the threads the shard belongs to;
/// [`newest`] merges them for reading.
#[derive(Default)]
pub struct Records {
    ring: VecDeque<Arc<RequestRecord>>,
    /// `console.recent_requests` as the newest push said.
    cap: usize,
    /// How long a captured body is kept (`console.capture_ttl_seconds`), as
    /// the newest push said; `None` until the first.
    body_ttl: Option<f64>,
    /// Records up to this id have had their body dropped, or never had one
    /// that is still due (so each record is looked at once).
    bodies_dropped_through: u64,
    /// Records in the ring still holding a body: without any, a push does
    /// not look for bodies to drop (a binary search over cold records).
    bodies: usize,
}

impl Records {
    /// Adds `r`, dropping the oldest beyond `cap`, and the captured bodies
    /// older than `body_ttl` seconds at `now` (unix seconds).
    /// Ids are dense over the records of all shards, so a record `cap` ids
    /// older than the newest can never be shown again and is dropped too.
    pub fn push(&mut self, r: Arc<RequestRecord>, cap: usize, now: f64, body_ttl: f64) {
        let cap = cap.max(1);
        while self.ring.len() >= cap
            || self
                .ring
                .front()
                .is_some_and(|f| f.id.saturating_add(cap as u64) <= r.id)
        {
            if self.ring.pop_front().is_some_and(|old| old.body.is_some()) {
                self.bodies -= 1;
            }
        }
        self.bodies += usize::from(r.body.is_some());
        self.cap = cap;
        self.ring.push_back(r);
        self.body_ttl = Some(body_ttl);
        self.expire_bodies(now);
    }

    /// Drops the captured bodies older than the body TTL at `now`: each
    /// expired record is replaced once by a copy without its body.
    pub fn expire_bodies(&mut self, now: f64) {
        let Some(ttl) = self.body_ttl else { return };
        if self.bodies == 0 {
            return;
        }
        let from = self
            .ring
            .partition_point(|r| r.id <= self.bodies_dropped_through);
        for r in self.ring.iter_mut().skip(from) {
            if r.time + ttl > now {
                break;
            }
            if r.body.is_some() {
                self.bodies -= 1;
                *r = Arc::new(RequestRecord {
                    body: None,
                    ..RequestRecord::clone(r)
                });
            }
            self.bodies_dropped_through = r.id;
        }
    }
}

/// The newest records of all `shards` merged by id, newest first: as many as
/// the newest push's `console.recent_requests` says, so the merged view is
/// what one ring of that size would hold.
pub fn newest<'a>(shards: &[&'a Records]) -> Vec<&'a Arc<RequestRecord>> {
    let cap = shards
        .iter()
        .filter_map(|s| s.ring.back().map(|r| (r.id, s.cap)))
        .max()
        .map_or(0, |(_, cap)| cap);
    let mut iters: Vec<_> = shards
        .iter()
        .map(|s| s.ring.iter().rev().peekable())
        .collect();
    let mut out = Vec::with_capacity(cap.min(shards.iter().map(|s| s.ring.len()).sum()));
    while out.len() < cap {
        let mut best: Option<(usize, u64)> = None;
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some(r) = it.peek() {
                if best.is_none_or(|(_, id)| r.id > id) {
                    best = Some((i, r.id));
                }
            }
        }
        let Some((i, _)) = best else { break };
        out.extend(iters[i].next());
    }
    out
}

/// Up to `limit` records of `view` (newest first) passing `f`.
pub fn query(view: &[&Arc<RequestRecord>], f: &Filter, limit: usize) -> Vec<Arc<RequestRecord>> {
    view.iter()
        .filter(|r| f.matches(r))
        .take(limit)
        .map(|r| Arc::clone(r))
        .collect()
}

/// The record with this id in `view`, while it is kept.
pub fn get(view: &[&Arc<RequestRecord>], id: u64) -> Option<Arc<RequestRecord>> {
    // Ids decrease along the view: binary search by id.
    let i = view.partition_point(|r| r.id > id);
    view.get(i).filter(|r| r.id == id).map(|r| Arc::clone(r))
}

/// Requests per (model asked for, provider, upstream model) in `view`
/// (newest first) that reached an upstream since `since` (unix seconds).
pub fn upstream_counts(
    view: &[&Arc<RequestRecord>],
    since: f64,
) -> HashMap<(String, String, String), u64> {
    let mut out = HashMap::new();
    for r in view.iter().take_while(|r| r.time >= since) {
        if r.provider.is_empty() {
            continue;
        }
        *out.entry((
            r.model.clone(),
            r.provider.clone(),
            r.upstream_model.clone(),
        ))
        .or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, key: &str, provider: &str, status: u16) -> Arc<RequestRecord> {
        Arc::new(RequestRecord {
            id,
            time: id as f64,
            key: Some(key.into()),
            format: "openai_chat",
            model: "fast".into(),
            cache: None,
            provider: provider.into(),
            upstream_model: "m".into(),
            status,
            stream: false,
            attempts: 1,
            duration_ms: 1.0,
            ttft_ms: None,
            upstream_ms: 0.5,
            overhead_ms: 0.5,
            input_tokens: 1,
            output_tokens: 1,
            cost_usd: None,
            session: None,
            client_gone: false,
            attempt_detail: Vec::new(),
            body: None,
        })
    }

    #[test]
    fn ring_keeps_the_newest_and_filters() {
        let mut r = Records::default();
        for i in 1..=5 {
            r.push(
                rec(i, if i % 2 == 0 { "a" } else { "b" }, "p", 200),
                3,
                0.0,
                60.0,
            );
        }
        let all = query(&newest(&[&r]), &Filter::default(), 10);
        assert_eq!(all.iter().map(|x| x.id).collect::<Vec<_>>(), [5, 4, 3]);
        let f = Filter::from_query(Some("key=a&status=2xx")).unwrap();
        assert_eq!(
            query(&newest(&[&r]), &f, 10)
                .iter()
                .map(|x| x.id)
                .collect::<Vec<_>>(),
            [4]
        );
        assert_eq!(get(&newest(&[&r]), 4).unwrap().id, 4);
        assert!(get(&newest(&[&r]), 1).is_none(), "dropped from the ring");
    }

    #[test]
    fn shards_merge_as_one_ring() {
        // Ids 1..=9 spread over two shards; a ring of 4 keeps 6..=9.
        let (mut a, mut b) = (Records::default(), Records::default());
        for i in 1..=9 {
            let shard = if i % 3 == 0 { &mut b } else { &mut a };
            shard.push(rec(i, "a", "p", 200), 4, 0.0, 60.0);
        }
        let view = newest(&[&a, &b]);
        assert_eq!(view.iter().map(|x| x.id).collect::<Vec<_>>(), [9, 8, 7, 6]);
        assert!(get(&view, 6).is_some());
        assert!(get(&view, 5).is_none(), "older than the ring holds");
        assert!(
            b.ring.iter().all(|r| r.id + 4 > 6),
            "a shard drops what the merged ring cannot show: {:?}",
            b.ring.iter().map(|r| r.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn status_filters() {
        let f = |q: &str| Filter::from_query(Some(q)).unwrap();
        assert!(f("status=error").matches(&rec(1, "a", "p", 429)));
        assert!(!f("status=error").matches(&rec(1, "a", "p", 200)));
        assert!(f("status=5xx").matches(&rec(1, "a", "p", 503)));
        assert!(f("status=404").matches(&rec(1, "a", "p", 404)));
        assert!(f("provider=p&model=fast").matches(&rec(1, "a", "p", 200)));
        assert!(!f("provider=q").matches(&rec(1, "a", "p", 200)));
        assert!(Filter::from_query(Some("status=abc")).is_err());
        assert!(Filter::from_query(Some("status=9xx")).is_err());
    }

    #[test]
    fn shares_count_upstreams_in_the_window() {
        let mut r = Records::default();
        for i in 1..=4 {
            r.push(
                rec(i, "a", if i < 4 { "p" } else { "q" }, 200),
                10,
                0.0,
                60.0,
            );
        }
        r.push(rec(5, "a", "", 401), 10, 0.0, 60.0);
        let c = upstream_counts(&newest(&[&r]), 2.0);
        assert_eq!(c[&("fast".into(), "p".into(), "m".into())], 2);
        assert_eq!(c[&("fast".into(), "q".into(), "m".into())], 1);
    }

    #[test]
    fn captured_bodies_are_dropped_past_their_age() {
        let with_body = |id: u64| {
            let mut r = RequestRecord::clone(&rec(id, "a", "p", 200));
            r.body = Some(format!("body {id}"));
            Arc::new(r)
        };
        let mut r = Records::default();
        // Records 1..=5 ended at seconds 1..=5; bodies live 2 s.
        for i in 1..=5 {
            r.push(with_body(i), 10, i as f64, 2.0);
        }
        let bodies = |r: &Records| -> Vec<u64> {
            let all = query(&newest(&[r]), &Filter::default(), 10);
            all.iter()
                .filter(|x| x.body.is_some())
                .map(|x| x.id)
                .rev()
                .collect()
        };
        assert_eq!(
            bodies(&r),
            [4, 5],
            "at 5 s, bodies of 3 s and older are gone"
        );
        r.expire_bodies(6.5);
        assert_eq!(bodies(&r), [5]);
        assert_eq!(
            get(&newest(&[&r]), 4).map(|x| x.id),
            Some(4),
            "the record itself stays"
        );
        r.expire_bodies(100.0);
        assert!(bodies(&r).is_empty());
        assert_eq!(r.bodies, 0, "every body counted out once");
        r.push(with_body(6), 2, 100.0, 2.0);
        r.push(rec(7, "a", "p", 200), 2, 100.0, 2.0);
        r.push(rec(8, "a", "p", 200), 2, 100.0, 2.0);
        assert_eq!(r.bodies, 0, "a body leaving the ring is counted out");
    }
}
