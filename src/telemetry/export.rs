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
use tokio::sync::mpsc::{self, error::TryRecvError, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use super::span::{self, Finished};
use crate::config::{OtlpProtocol, OtlpSettings};
use crate::metrics;

/// The most spans one export carries.
pub(super) const MAX_BATCH: usize = 512;
/// How long a batch waits to fill after its first span.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// At most one warning per this long about failed exports.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Starts the thread; its end of the queue is returned.
pub(super) fn spawn(
    settings: OtlpSettings,
    queued: Arc<AtomicUsize>,
    wake: Arc<Notify>,
) -> std::io::Result<UnboundedSender<Finished>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || runtime.block_on(run(settings, rx, queued, wake)))?;
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

/// The export loop. The queue is drained without waiting on it (a waiting
/// receiver is woken by every send): the thread sleeps until the first span
/// of a batch, then until the batch is full or [`BATCH_DELAY`] has passed.
/// A failed export's spans are dropped and counted.
async fn run(
    s: OtlpSettings,
    mut rx: UnboundedReceiver<Finished>,
    queued: Arc<AtomicUsize>,
    wake: Arc<Notify>,
) {
    let exporter = match exporter(&s) {
        Ok(e) => Some(e),
        Err(e) => {
            log::error!("telemetry.otlp: no exporter ({e}): spans are dropped");
            None
        }
    };
    let scope = span::scope();
    let mut last_warning: Option<Instant> = None;
    loop {
        // Spans still counted here arrived while the last batch was sent
        // (their wake may have been missed): they wait one delay at most.
        if queued.load(Ordering::Relaxed) == 0 {
            wake.notified().await;
        }
        if queued.load(Ordering::Relaxed) < MAX_BATCH {
            let until = tokio::time::Instant::now() + BATCH_DELAY;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        loop {
            let mut batch: Vec<SpanData> = Vec::new();
            let mut closed = false;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(f) => batch.extend(f.into_spans(&scope)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if batch.is_empty() {
                if closed {
                    return;
                }
                break;
            }
            let n = batch.len();
            let result = match &exporter {
                Some(e) => match tokio::time::timeout(s.timeout, e.export(batch)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {} ms", s.timeout.as_millis())),
                },
                None => Err("no exporter".to_owned()),
            };
            // Counted as queued until exported: `Telemetry::flush` waits for 0.
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
}
