//! The export thread: finished requests taken off the queue, made into
//! spans and sent in batches by `opentelemetry-otlp`'s exporter. A thread
//! of its own with its own runtime, so it outlives every Pingora runtime
//! (graceful reload and upgrade included) and a slow collector only ever
//! slows this thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::span::{self, Finished};
use crate::config::{OtlpProtocol, OtlpSettings};
use crate::metrics;

/// The most spans one export carries.
const MAX_BATCH: usize = 512;
/// How long a batch waits to fill after its first span.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// At most one warning per this long about failed exports.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Starts the thread; its end of the queue is returned.
pub(super) fn spawn(
    settings: OtlpSettings,
    queued: Arc<AtomicUsize>,
) -> std::io::Result<UnboundedSender<Finished>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || runtime.block_on(run(settings, rx, queued)))?;
    Ok(tx)
}

fn exporter(s: &OtlpSettings) -> Result<SpanExporter, String> {
    let protocol = match s.protocol {
        OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
        OtlpProtocol::HttpJson => Protocol::HttpJson,
    };
    let mut e = SpanExporter::builder()
        .with_http()
        .with_endpoint(s.traces_url.clone())
        .with_protocol(protocol)
        .with_timeout(s.timeout)
        .with_headers(s.headers.iter().cloned().collect())
        .build()
        .map_err(|e| e.to_string())?;
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "apiproxy".to_owned());
    e.set_resource(&Resource::builder().with_service_name(name).build());
    Ok(e)
}

async fn run(s: OtlpSettings, mut rx: UnboundedReceiver<Finished>, queued: Arc<AtomicUsize>) {
    let exporter = match exporter(&s) {
        Ok(e) => Some(e),
        Err(e) => {
            log::error!("telemetry.otlp: no exporter ({e}): spans are dropped");
            None
        }
    };
    let scope = span::scope();
    let mut last_warning: Option<Instant> = None;
    let mut batch: Vec<SpanData> = Vec::new();
    while let Some(first) = rx.recv().await {
        // Counted as queued until exported: `Telemetry::flush` waits for 0.
        let take = |f: Finished, batch: &mut Vec<SpanData>| batch.extend(f.into_spans(&scope));
        take(first, &mut batch);
        let until = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(f)) => take(f, &mut batch),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len();
        let spans = std::mem::take(&mut batch);
        let result = match &exporter {
            Some(e) => match tokio::time::timeout(s.timeout, e.export(spans)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {} ms", s.timeout.as_millis())),
            },
            None => Err("no exporter".to_owned()),
        };
        queued.fetch_sub(n, Ordering::Relaxed);
        if let Err(e) = result {
            metrics::OTLP_DROPPED_SPANS.inc_by(n as u64);
            if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                last_warning = Some(Instant::now());
                log::warn!(
                    "telemetry.otlp: {n} spans not exported to {}: {e}",
                    s.traces_url
                );
            }
        }
    }
}
