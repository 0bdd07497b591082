//! Request traces over OTLP (`telemetry.otlp`), in the GenAI semantic
//! conventions. On the request path only two cheap steps: [`Telemetry::start`]
//! reads the client's W3C trace context and decides sampling, and
//! [`Telemetry::finish`] encodes the finished request's spans ([`Finished`],
//! built from what the logging phase already gathered) as OTLP protobuf
//! onto its thread's shelf, a buffer only that thread and the exporter
//! lock. A thread of its own (`export.rs`), which outlives every Pingora
//! runtime, takes the shelves' spans in batches and exports them. The spans
//! waiting are bounded: past `max_queue_size` a request's are dropped and
//! counted (`apiproxy_otlp_dropped_spans_total`), so a slow or dead
//! collector never slows a request. Nothing is allocated per request once
//! a thread's buffers have grown. Without `telemetry.otlp` none of this
//! exists.

mod context;
mod export;
mod span;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::{SpanId, TraceId};

use crate::config::{OtlpSettings, ProviderKind, TelemetrySettings};
use crate::header_name::{TRACEPARENT, TRACESTATE};
use crate::metrics;
pub use context::{parse_traceparent, TraceParent};
use span::Scratch;
pub use span::{AttemptSpan, Finished};

thread_local! {
    /// The thread's span message and shelf.
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// A thread's spans, encoded, waiting for the export thread.
#[derive(Default)]
struct Shelf {
    /// A run of `ScopeSpans.spans` fields.
    bytes: Vec<u8>,
    spans: usize,
}

/// Every thread's shelf: a thread adds its own when it first traces a
/// request; the export thread empties them all.
#[derive(Default)]
struct Shelves {
    list: Mutex<Vec<Arc<Mutex<Shelf>>>>,
}

/// What a thread keeps for tracing.
struct Local {
    /// The process's shelves this thread's shelf is on.
    shelves: Arc<Shelves>,
    shelf: Arc<Mutex<Shelf>>,
    scratch: Scratch,
}

/// The tracing of a process: its settings, the threads' shelves and the
/// export thread (started at the first finished request, after Pingora
/// daemonized).
pub struct Telemetry {
    settings: OtlpSettings,
    capture_content: bool,
    /// Whether the export thread runs.
    exporter: OnceLock<bool>,
    shelves: Arc<Shelves>,
    /// Spans shelved or being exported (bounded by `max_queue_size`).
    queued: Arc<AtomicUsize>,
    /// Wakes the export thread: at a batch's first span and each time a
    /// batch's worth has come since (never once per request).
    wake: Arc<tokio::sync::Notify>,
}

/// One request's place in a trace, decided when it starts.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    pub trace_id: TraceId,
    /// The client's span (from its `traceparent`): the request span's parent.
    pub parent: Option<SpanId>,
    /// The request span's id (made at the start: attempts are its children).
    pub span_id: SpanId,
    pub sampled: bool,
    /// The client's `tracestate`, passed on.
    pub tracestate: Option<String>,
    /// `gen_ai.operation.name`.
    pub operation: &'static str,
    pub wall_start: SystemTime,
    /// Prompt and answer are captured (`telemetry.capture_content`, sampled).
    pub capture_content: bool,
    /// With `capture_content`: the request body, redacted.
    pub input_content: Option<String>,
}

impl Default for RequestTrace {
    fn default() -> Self {
        RequestTrace {
            trace_id: TraceId::INVALID,
            parent: None,
            span_id: SpanId::INVALID,
            sampled: false,
            tracestate: None,
            operation: "chat",
            wall_start: SystemTime::UNIX_EPOCH,
            capture_content: false,
            input_content: None,
        }
    }
}

impl RequestTrace {
    /// The `traceparent` an attempt span `span_id` sends to its provider.
    pub fn traceparent(&self, span_id: SpanId) -> String {
        context::traceparent(self.trace_id, span_id, self.sampled)
    }

    /// A new span id for an attempt.
    pub fn attempt_span_id(&self) -> SpanId {
        context::new_span_id()
    }
}

impl Telemetry {
    /// The process's tracing; `None` without `telemetry.otlp`.
    pub fn new(settings: &TelemetrySettings) -> Option<Arc<Telemetry>> {
        let otlp = settings.otlp.clone()?;
        // Shown on /metrics from the start, 0 until a span is dropped.
        metrics::OTLP_DROPPED_SPANS.inc_by(0);
        Some(Arc::new(Telemetry {
            settings: otlp,
            capture_content: settings.capture_content,
            exporter: OnceLock::new(),
            shelves: Arc::default(),
            queued: Arc::new(AtomicUsize::new(0)),
            wake: Arc::new(tokio::sync::Notify::new()),
        }))
    }

    /// Where a request stands in a trace: the client's `traceparent` (and
    /// `tracestate`) joined, else a new trace; sampled as its parent says,
    /// else by `sample_ratio`.
    pub fn start(&self, headers: &http::HeaderMap, operation: &'static str) -> RequestTrace {
        let header = |name: &http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let parent = header(&TRACEPARENT).and_then(parse_traceparent);
        let trace_id = parent.map_or_else(context::new_trace_id, |p| p.trace_id);
        let sampled = context::sampled(parent.as_ref(), trace_id, self.settings.sample_ratio);
        RequestTrace {
            trace_id,
            parent: parent.map(|p| p.span_id),
            span_id: context::new_span_id(),
            sampled,
            // Only within a trace the client started.
            tracestate: parent
                .and(header(&TRACESTATE))
                .and_then(context::tracestate)
                .map(str::to_owned),
            operation,
            wall_start: SystemTime::now(),
            capture_content: sampled && self.capture_content,
            input_content: None,
        }
    }

    /// Encodes a sampled request's spans onto this thread's shelf for
    /// export; past `max_queue_size` spans waiting they are dropped and
    /// counted (`apiproxy_otlp_dropped_spans_total`).
    pub fn finish(&self, finished: &Finished) {
        let n = finished.span_count();
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        let queued = before + n;
        let running = *self.exporter.get_or_init(|| {
            let (shelves, queued, wake) =
                (self.shelves.clone(), self.queued.clone(), self.wake.clone());
            export::spawn(self.settings.clone(), shelves, queued, wake)
                .map_err(|e| log::error!("telemetry.otlp: the export thread did not start: {e}"))
                .is_ok()
        });
        let shelved = running && queued <= self.settings.max_queue_size && self.shelve(finished, n);
        if !shelved {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            metrics::OTLP_DROPPED_SPANS.inc_by(n as u64);
        } else if before == 0 || before / export::MAX_BATCH != queued / export::MAX_BATCH {
            // A wake per request cost an eventfd write on the request's
            // thread and a context switch (benches/README.md, "Tracing").
            self.wake.notify_one();
        }
    }

    /// Encodes `finished`'s `n` spans onto this thread's shelf (made and
    /// put on the process's shelves at the thread's first).
    fn shelve(&self, finished: &Finished, n: usize) -> bool {
        LOCAL.with(|local| {
            let Ok(mut local) = local.try_borrow_mut() else {
                // Not reentrant today: dropped and counted if it ever is.
                return false;
            };
            if local
                .as_ref()
                .is_none_or(|l| !Arc::ptr_eq(&l.shelves, &self.shelves))
            {
                let shelf = Arc::new(Mutex::new(Shelf::default()));
                let mut list = self.shelves.list.lock().unwrap_or_else(|e| e.into_inner());
                list.push(shelf.clone());
                *local = Some(Local {
                    shelves: self.shelves.clone(),
                    shelf,
                    scratch: Scratch::default(),
                });
            }
            let Some(l) = local.as_mut() else {
                return false;
            };
            let mut shelf = l.shelf.lock().unwrap_or_else(|e| e.into_inner());
            finished.encode(&mut l.scratch, &mut shelf.bytes);
            shelf.spans += n;
            true
        })
    }
}

impl Telemetry {
    /// Waits (at most `telemetry.otlp.timeout_ms`, and 5 s) for the spans
    /// queued to be exported: called once the server has stopped, so the
    /// last requests of a stopping or upgraded process are traced too.
    pub fn flush(&self) {
        if self.exporter.get().is_none() {
            return;
        }
        let until = std::time::Instant::now() + self.settings.timeout.min(FLUSH_AT_MOST);
        // A batch still waiting to fill is sent now.
        self.wake.notify_one();
        while self.queued.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The longest [`Telemetry::flush`] waits.
const FLUSH_AT_MOST: std::time::Duration = std::time::Duration::from_secs(5);

/// `gen_ai.provider.name` of a provider kind (the GenAI conventions' names).
pub fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::Azure => "azure.ai.openai",
        ProviderKind::Bedrock => "aws.bedrock",
        ProviderKind::Vertex => "gcp.vertex_ai",
    }
}

/// The client's `traceparent` and `tracestate`, passed on to providers as
/// they came when the gateway itself does not trace.
pub fn client_trace_headers(headers: &http::HeaderMap) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let header = |name: &http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(p) = header(&TRACEPARENT).filter(|v| parse_traceparent(v).is_some()) {
        out.push(("traceparent", p.to_owned()));
        if let Some(s) = header(&TRACESTATE).and_then(context::tracestate) {
            out.push(("tracestate", s.to_owned()));
        }
    }
    out
}
