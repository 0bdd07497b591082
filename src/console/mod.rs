//! The web console (`/ui/`) and the JSON admin API it is built on
//! (`/admin/...`), with the in-process data they show:
//! - `series`: the last hour of traffic as per-interval aggregates;
//! - `records`: recent requests, their filters and the live tail;
//! - `keys`: client keys made at run time (persisted in the store);
//! - `api`: the JSON endpoints; `assets`: the pages, compiled in.
//!
//! Collection is fed from the proxy's logging phase through [`record`]:
//! one short lock for the aggregates and one for the ring per request.

pub mod api;
pub mod assets;
pub mod records;
pub mod series;

/// The web console as the proxy sees it (`proxy::Console`): handed to the
/// gateway by `main`.
pub struct WebConsole;

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
        api::handle(gw, rt, session, ctx, route).await
    }

    fn record(&self, rt: &Runtime, ctx: &mut RequestCtx, elapsed: Duration) {
        record(rt, ctx, elapsed)
    }
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

    fn count(&mut self, now: u64) {
        let slot = &mut self.minute[(now % 60) as usize];
        if slot.0 != now {
            *slot = (now, 0);
        }
        slot.1 += 1;
    }
}

/// Everything the console collects in this process.
pub struct Console {
    series: Mutex<Series>,
    records: Mutex<Records>,
    usage: Mutex<HashMap<String, KeyUsage>>,
    tail: broadcast::Sender<Arc<RequestRecord>>,
    next_id: AtomicU64,
    /// Requests refused 401 for want of a valid key, since start: counted
    /// (here and in the aggregates), never kept as records.
    unauthenticated: AtomicU64,
}

/// The console's data for this process.
pub static CONSOLE: Lazy<Console> = Lazy::new(|| Console {
    series: Mutex::new(Series::default()),
    records: Mutex::new(Records::default()),
    usage: Mutex::new(HashMap::new()),
    tail: broadcast::channel(TAIL_BUFFER).0,
    next_id: AtomicU64::new(1),
    unauthenticated: AtomicU64::new(0),
});

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
    let r = Arc::new(RequestRecord {
        id: CONSOLE.next_id.fetch_add(1, Ordering::Relaxed),
        time: now,
        key: ctx.client_key_name.clone(),
        format: fmt.as_str().to_owned(),
        // A model name only reached an upstream if a provider was tried; else
        // it may be anything a client sent, so it is cut short.
        model: ctx.requested_model.chars().take(200).collect(),
        provider: ctx.provider.clone(),
        upstream_model: ctx.upstream_model.clone(),
        status: ctx.status,
        stream: ctx.stream,
        attempts: ctx.attempts,
        duration_ms,
        ttft_ms: ctx.first_byte.map(|d| d.as_secs_f64() * 1000.0),
        upstream_ms,
        overhead_ms: (duration_ms - upstream_ms).max(0.0),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost_usd: cost,
        session: ctx.session_id.clone(),
        client_gone: ctx.client_gone,
        // The logging phase is the history's last reader.
        attempt_detail: std::mem::take(&mut ctx.attempt_log),
        body: ctx.captured_body.clone(),
    });
    let secs = now as u64;
    CONSOLE.series.lock().add(
        secs,
        &Sample {
            status: r.status,
            duration_ms,
            ttft_ms: r.ttft_ms,
            overhead_ms: r.overhead_ms,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: cost.unwrap_or(0.0),
        },
    );
    if let Some(k) = &r.key {
        let mut all = CONSOLE.usage.lock();
        // Look up before inserting: the key name is cloned once per key, not per request.
        if !all.contains_key(k) {
            all.insert(k.clone(), KeyUsage::default());
        }
        if let Some(u) = all.get_mut(k) {
            u.requests += 1;
            u.errors += u64::from(r.status >= 400);
            u.input_tokens = u.input_tokens.saturating_add(r.input_tokens);
            u.output_tokens = u.output_tokens.saturating_add(r.output_tokens);
            u.cost_usd += cost.unwrap_or(0.0);
            u.last_used = Some(now);
            u.count(secs);
        }
    }
    if unauthenticated(ctx) {
        // Anyone can send these: in the ring they would flush the real
        // records out and flood the live tail.
        CONSOLE.unauthenticated.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // Listed before it is announced: whoever saw it on the tail finds it
    // in the list, and the list's order is the tail's.
    let body_ttl = settings.capture_ttl.as_secs_f64();
    CONSOLE
        .records
        .lock()
        .push(r.clone(), settings.recent_requests, now, body_ttl);
    if CONSOLE.tail.receiver_count() > 0 {
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

    /// The last hour's points and their total.
    pub fn series(&self) -> (Vec<series::Point>, series::Point) {
        self.series.lock().snapshot(unix_now() as u64)
    }

    /// Recent records passing `f`, newest first.
    pub fn recent(&self, f: &records::Filter, limit: usize) -> Vec<Arc<RequestRecord>> {
        let mut records = self.records.lock();
        records.expire_bodies(unix_now());
        records.query(f, limit)
    }

    /// One record by id.
    pub fn request(&self, id: u64) -> Option<Arc<RequestRecord>> {
        let mut records = self.records.lock();
        records.expire_bodies(unix_now());
        records.get(id)
    }

    /// Requests per (model, provider, upstream model) in the last `window`.
    pub fn upstream_counts(&self, window: Duration) -> HashMap<(String, String, String), u64> {
        self.records
            .lock()
            .upstream_counts(unix_now() - window.as_secs_f64())
    }

    /// Usage of the key named `name`.
    pub fn usage(&self, name: &str) -> KeyUsage {
        self.usage.lock().get(name).cloned().unwrap_or_default()
    }

    /// A receiver of every record from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RequestRecord>> {
        self.tail.subscribe()
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
}
