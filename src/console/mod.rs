//! The web console (`/ui/`) and the JSON admin API it is built on
//! (`/admin/...`), with the in-process data they show:
//! - `series`: the last hour of traffic as per-interval aggregates;
//! - `records`: recent requests, their filters and the live tail;
//! - `keys`: client keys made at run time (persisted in the store);
//! - `api`: the JSON endpoints; `assets`: the pages, compiled in;
//! - `system`: the System, App Log and Routing pages' data and the reload
//!   button; `config_file`: editing the config file.
//!
//! Collection is fed from the proxy's logging phase through [`record`].
//! The aggregates, the per-key usage and the ring of records are sharded
//! by thread (each thread takes one shard for its life, round robin): a
//! request takes its own thread's shard lock, which no other thread
//! wants, and the console's reads merge the shards (`series::snapshot_all`,
//! `records::newest`). The live tail's subscriber count is an atomic, so a
//! request without a tail open touches no shared lock.

pub mod api;
pub mod assets;
pub mod config_file;
pub mod records;
pub mod series;
mod snapshot;
pub mod system;
pub mod usage;

pub use system::System;

/// The web console as the proxy sees it (`proxy::Console`): handed to the
/// gateway by `main`, with what it knows of the process (`System`).
pub struct WebConsole {
    system: System,
}

impl WebConsole {
    /// The console of this process.
    pub fn new(system: System) -> WebConsole {
        WebConsole { system }
    }
}

#[async_trait]
impl crate::proxy::Console for WebConsole {
    async fn handle(
        &self,
        gw: &Gateway,
        rt: &Arc<Runtime>,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let req = session.req_header();
        let route = api::route(req.method.as_str(), req.uri.path());
        api::handle(gw, rt, &self.system, session, ctx, route).await
    }

    fn record(&self, rt: &Runtime, ctx: &mut RequestCtx, elapsed: Duration) {
        record(rt, ctx, elapsed)
    }
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

use async_trait::async_trait;
use pingora::proxy::Session;

use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::Gateway;
use crate::routing::Runtime;
use records::{Records, RequestRecord};
use series::{Sample, Series};

/// Records a tail subscriber may fall behind by before it skips ahead.
const TAIL_BUFFER: usize = 256;

/// Per client key, since this process started.
#[derive(Debug, Clone, Serialize)]
pub struct KeyUsage {
    pub requests: u64,
    /// Answers with status 400 and up.
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// Unix seconds of the last request.
    pub last_used: Option<f64>,
    /// Requests in each of the last 60 seconds: (second, count).
    #[serde(skip)]
    minute: [(u64, u32); 60],
}

impl Default for KeyUsage {
    fn default() -> Self {
        KeyUsage {
            requests: 0,
            errors: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            last_used: None,
            minute: [(0, 0); 60],
        }
    }
}

impl KeyUsage {
    /// Requests this process counted for the key in the last 60 seconds.
    pub fn last_minute(&self, now: u64) -> u64 {
        self.minute
            .iter()
            .filter(|(s, _)| *s + 60 > now && *s <= now)
            .map(|(_, c)| u64::from(*c))
            .sum()
    }

    /// Adds `other`'s counts (another shard's usage of the same key).
    fn merge(&mut self, other: &KeyUsage) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_usd += other.cost_usd;
        self.last_used = match (self.last_used, other.last_used) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (mine, theirs) in self.minute.iter_mut().zip(other.minute.iter()) {
            // The same slot holds one second or another: the newer wins.
            if mine.0 == theirs.0 {
                mine.1 += theirs.1;
            } else if theirs.0 > mine.0 {
                *mine = *theirs;
            }
        }
    }

    fn count(&mut self, now: u64) {
        let slot = &mut self.minute[(now % 60) as usize];
        if slot.0 != now {
            *slot = (now, 0);
        }
        slot.1 += 1;
    }
}

/// Shards of the collected data: more than the threads that usually serve
/// requests, so each thread's shard is its own; a shard's data is made on
/// its first record (a series is ~300 KB).
const SHARDS: usize = 8;

/// What the threads of one shard collect.
struct Shard {
    series: Series,
    records: Records,
    usage: HashMap<String, KeyUsage>,
}

/// A shard's lock on a cache line of its own, so two threads writing their
/// own shards do not contend for the line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(Mutex<Option<Box<Shard>>>);

/// The shard of the calling thread, taken round robin on first use.
fn my_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    MINE.with(|m| *m)
}

/// Everything the console collects in this process.
pub struct Console {
    shards: [Padded; SHARDS],
    tail: broadcast::Sender<Arc<RequestRecord>>,
    /// Live tails open: read per request instead of the channel's
    /// `receiver_count`, which takes the channel's lock.
    tail_subscribers: AtomicUsize,
    /// Ids of kept records: dense, so a shard can drop what is too old to
    /// be shown without looking at the others.
    next_id: AtomicU64,
    /// Requests refused 401 for want of a valid key, since start: counted
    /// (here and in the aggregates), never kept as records.
    unauthenticated: AtomicU64,
}

/// The console's data for this process.
pub static CONSOLE: Lazy<Console> = Lazy::new(|| Console {
    shards: Default::default(),
    tail: broadcast::channel(TAIL_BUFFER).0,
    tail_subscribers: AtomicUsize::new(0),
    next_id: AtomicU64::new(1),
    unauthenticated: AtomicU64::new(0),
});

/// A live tail's receiver; counted while it lives.
pub struct Subscription(broadcast::Receiver<Arc<RequestRecord>>);

impl std::ops::Deref for Subscription {
    type Target = broadcast::Receiver<Arc<RequestRecord>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Subscription {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        CONSOLE.tail_subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    crate::upstream::now_ms() as f64 / 1000.0
}

/// Records a finished generation request (called from the logging phase).
/// Does nothing when `console.collect` is off.
pub fn record(rt: &Runtime, ctx: &mut RequestCtx, elapsed: Duration) {
    let settings = &rt.config.console;
    if !settings.collect {
        return;
    }
    let Some(fmt) = ctx.format else { return };
    let now = unix_now();
    let usage = ctx.usage.unwrap_or_default();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let upstream_ms = ctx.upstream_wait.as_secs_f64() * 1000.0;
    // The same cost the key's budget is charged and the metrics count.
    let cost = ctx.charged_usd();
    let secs = now as u64;
    let sample = Sample {
        status: ctx.status,
        duration_ms,
        ttft_ms: ctx.first_byte.map(|d| d.as_secs_f64() * 1000.0),
        overhead_ms: (duration_ms - upstream_ms).max(0.0),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost_usd: cost.unwrap_or(0.0),
    };
    let mut guard = CONSOLE.shards[my_shard()].0.lock();
    let shard = guard.get_or_insert_with(|| {
        Box::new(Shard {
            series: Series::default(),
            records: Records::default(),
            usage: HashMap::new(),
        })
    });
    shard.series.add(secs, &sample);
    if let Some(k) = &ctx.client_key_name {
        // Looked up before inserting: the key name is cloned once per key,
        // and hashed once per request once it is there.
        let u = match shard.usage.get_mut(k) {
            Some(u) => u,
            None => shard.usage.entry(k.clone()).or_default(),
        };
        u.requests += 1;
        u.errors += u64::from(sample.status >= 400);
        u.input_tokens = u.input_tokens.saturating_add(sample.input_tokens);
        u.output_tokens = u.output_tokens.saturating_add(sample.output_tokens);
        u.cost_usd += sample.cost_usd;
        u.last_used = Some(now);
        u.count(secs);
    }
    if unauthenticated(ctx) {
        // Anyone can send these: in the ring they would flush the real
        // records out and flood the live tail.
        CONSOLE.unauthenticated.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let r = Arc::new(RequestRecord {
        // Taken under the shard's lock: each shard's ring is in id order.
        id: CONSOLE.next_id.fetch_add(1, Ordering::Relaxed),
        time: now,
        key: ctx.client_key_name.clone(),
        format: fmt.as_str(),
        // A model name only reached an upstream if a provider was tried; else
        // it may be anything a client sent, so it is cut short.
        model: match ctx.requested_model.char_indices().nth(200) {
            Some((end, _)) => ctx.requested_model[..end].to_owned(),
            None => ctx.requested_model.clone(),
        },
        provider: ctx.provider.clone(),
        upstream_model: ctx.upstream_model.clone(),
        status: ctx.status,
        stream: ctx.stream,
        attempts: ctx.attempts,
        duration_ms,
        ttft_ms: sample.ttft_ms,
        upstream_ms,
        overhead_ms: sample.overhead_ms,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost_usd: cost,
        session: ctx.session_id.clone(),
        client_gone: ctx.client_gone,
        cache: ctx.cache.map(|c| c.as_str()),
        // The logging phase is the history's last reader.
        attempt_detail: std::mem::take(&mut ctx.attempt_log),
        body: ctx.captured_body.clone(),
    });
    // Listed before it is announced: whoever saw it on the tail finds it
    // in the list, and the list's order is the tail's.
    let body_ttl = settings.capture_ttl.as_secs_f64();
    let tail = (CONSOLE.tail_subscribers.load(Ordering::Relaxed) > 0).then(|| r.clone());
    shard
        .records
        .push(r, settings.recent_requests, now, body_ttl);
    drop(guard);
    if let Some(r) = tail {
        // Only fails when every subscriber left meanwhile.
        let _ = CONSOLE.tail.send(r);
    }
}

/// A request refused for want of a valid client key.
fn unauthenticated(ctx: &RequestCtx) -> bool {
    ctx.status == 401 && ctx.client_key_name.is_none()
}

impl Console {
    /// Requests refused 401 for want of a valid key since start.
    pub fn unauthenticated(&self) -> u64 {
        self.unauthenticated.load(Ordering::Relaxed)
    }

    /// Runs `f` over every shard that has data, all locked at once (a
    /// consistent view of the records), after dropping expired bodies.
    fn with_shards<T>(&self, f: impl FnOnce(&[&Shard]) -> T) -> T {
        let now = unix_now();
        let mut guards: Vec<_> = self.shards.iter().map(|s| s.0.lock()).collect();
        let mut shards = Vec::with_capacity(SHARDS);
        for g in guards.iter_mut() {
            if let Some(s) = g.as_mut() {
                s.records.expire_bodies(now);
                shards.push(&**s);
            }
        }
        f(&shards)
    }

    /// The last hour's points and their total.
    pub fn series(&self) -> (Vec<series::Point>, series::Point) {
        self.with_shards(|shards| {
            let all: Vec<&Series> = shards.iter().map(|s| &s.series).collect();
            series::snapshot_all(&all, unix_now() as u64)
        })
    }

    /// Applies `f` to the merged ring of recent records (newest first).
    fn with_records<T>(&self, f: impl FnOnce(&[&Arc<RequestRecord>]) -> T) -> T {
        self.with_shards(|shards| {
            let rings: Vec<&Records> = shards.iter().map(|s| &s.records).collect();
            f(&records::newest(&rings))
        })
    }

    /// Recent records passing `f`, newest first.
    pub fn recent(&self, f: &records::Filter, limit: usize) -> Vec<Arc<RequestRecord>> {
        self.with_records(|view| records::query(view, f, limit))
    }

    /// One record by id.
    pub fn request(&self, id: u64) -> Option<Arc<RequestRecord>> {
        self.with_records(|view| records::get(view, id))
    }

    /// Requests per (model, provider, upstream model) in the last `window`.
    pub fn upstream_counts(&self, window: Duration) -> HashMap<(String, String, String), u64> {
        let since = unix_now() - window.as_secs_f64();
        self.with_records(|view| records::upstream_counts(view, since))
    }

    /// Usage of the key named `name`.
    pub fn usage(&self, name: &str) -> KeyUsage {
        let mut total = KeyUsage::default();
        for s in &self.shards {
            if let Some(u) = s.0.lock().as_ref().and_then(|s| s.usage.get(name)) {
                total.merge(u);
            }
        }
        total
    }

    /// A receiver of every record from now on.
    pub fn subscribe(&self) -> Subscription {
        self.tail_subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription(self.tail.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_usage_counts_the_last_minute() {
        let mut u = KeyUsage::default();
        u.count(100);
        u.count(100);
        u.count(130);
        assert_eq!(u.last_minute(130), 3);
        assert_eq!(u.last_minute(161), 1);
        assert_eq!(u.last_minute(200), 0);
    }

    #[test]
    fn key_usage_merges_shards() {
        let (mut a, mut b) = (KeyUsage::default(), KeyUsage::default());
        a.count(100);
        b.count(100);
        b.count(130);
        a.requests = 1;
        b.requests = 2;
        a.last_used = Some(100.0);
        b.last_used = Some(160.0);
        let mut total = KeyUsage::default();
        total.merge(&a);
        total.merge(&b);
        assert_eq!(total.requests, 3);
        assert_eq!(total.last_used, Some(160.0));
        assert_eq!(total.last_minute(130), 3);
        let mut old = KeyUsage::default();
        old.count(100);
        let mut newer = KeyUsage::default();
        newer.count(160);
        old.merge(&newer);
        assert_eq!(
            old.last_minute(160),
            1,
            "the older second's slot was reused"
        );
    }
}
