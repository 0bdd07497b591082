//! The export thread: requests' encoded spans taken off the threads'
//! shelves, framed as one `ExportTraceServiceRequest` per batch and sent to the collector
//! over OTLP/HTTP (protobuf as encoded, or JSON) or OTLP/gRPC. A thread of
//! its own with its own runtime, so it outlives every Pingora runtime
//! (graceful reload and upgrade included) and a slow collector only ever
//! slows this thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use prost::encoding::{
    decode_varint, encode_key, encode_varint, encoded_len_varint, key_len, WireType,
};
use prost::Message;
use tokio::sync::Notify;

use super::Shelves;
use crate::config::{OtlpProtocol, OtlpSettings};
use crate::metrics;

/// The most spans one export carries.
pub(super) const MAX_BATCH: usize = 512;
/// How long a batch waits to fill after its first span.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// At most one warning per this long about failed exports.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// `ExportTraceServiceRequest.resource_spans`, `ResourceSpans.scope_spans`.
const RESOURCE_SPANS_FIELD: u32 = 1;
const SCOPE_SPANS_FIELD: u32 = 2;

/// Starts the thread.
pub(super) fn spawn(
    settings: OtlpSettings,
    shelves: Arc<Shelves>,
    queued: Arc<AtomicUsize>,
    wake: Arc<Notify>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || runtime.block_on(run(settings, shelves, queued, wake)))?;
    Ok(())
}

/// Spans taken off the shelves, not yet exported.
#[derive(Default)]
struct Backlog {
    /// A run of `ScopeSpans.spans` fields.
    bytes: Vec<u8>,
    spans: usize,
    /// A shelf's buffer swapped for the next shelf's (none is freed).
    spare: Vec<u8>,
}

impl Backlog {
    /// Empties every shelf into the backlog; forgets the shelves of
    /// threads that have ended once they are empty.
    fn take(&mut self, shelves: &Shelves) {
        let mut list = shelves.list.lock().unwrap_or_else(|e| e.into_inner());
        for shelf in list.iter() {
            let mut s = shelf.lock().unwrap_or_else(|e| e.into_inner());
            if s.spans == 0 {
                continue;
            }
            // Swapped under the lock, copied after it: a request's thread
            // never waits on a copy.
            std::mem::swap(&mut s.bytes, &mut self.spare);
            self.spans += std::mem::take(&mut s.spans);
            drop(s);
            self.bytes.extend_from_slice(&self.spare);
            self.spare.clear();
        }
        // Held by the list only: its thread ended (and it was emptied above).
        list.retain(|s| Arc::strong_count(s) > 1);
    }

    /// The next batch: its length in bytes and its spans (at most
    /// [`MAX_BATCH`]).
    fn next_batch(&self) -> (usize, usize) {
        if self.spans <= MAX_BATCH {
            return (self.bytes.len(), self.spans);
        }
        let mut rest = self.bytes.as_slice();
        for _ in 0..MAX_BATCH {
            // Each span: its field's key, its length, its bytes.
            let len = decode_varint(&mut rest).and_then(|_| decode_varint(&mut rest));
            let Ok(len) = len else {
                return (self.bytes.len(), self.spans);
            };
            let len = usize::try_from(len).unwrap_or(usize::MAX).min(rest.len());
            rest = &rest[len..];
        }
        (self.bytes.len() - rest.len(), MAX_BATCH)
    }

    fn consume(&mut self, bytes: usize, spans: usize) {
        self.bytes.drain(..bytes);
        self.spans -= spans;
    }
}

/// What wraps a batch's spans: the resource (`service.name` from
/// `OTEL_SERVICE_NAME`, else `apiproxy`, and `OTEL_RESOURCE_ATTRIBUTES`, as
/// the SDK's resource reads them) and the instrumentation scope, each
/// encoded once.
struct Frame {
    /// `ResourceSpans` without its `scope_spans`.
    resource: Vec<u8>,
    /// `ScopeSpans` without its `spans`.
    scope: Vec<u8>,
}

impl Frame {
    fn new() -> Frame {
        let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "apiproxy".to_owned());
        let sdk = opentelemetry_sdk::Resource::builder()
            .with_service_name(name)
            .build();
        let attrs = ResourceAttributesWithSchema::from(&sdk);
        let resource = ResourceSpans {
            resource: Some(Resource {
                attributes: attrs.attributes.0,
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            schema_url: attrs.schema_url.unwrap_or_default(),
            scope_spans: Vec::new(),
        };
        let scope = ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "apiproxy".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..InstrumentationScope::default()
            }),
            spans: Vec::new(),
            schema_url: String::new(),
        };
        Frame {
            resource: resource.encode_to_vec(),
            scope: scope.encode_to_vec(),
        }
    }

    /// The `ExportTraceServiceRequest` of `spans` (a run of `ScopeSpans.spans`
    /// fields): fields of a message may come in any order, so the spans are
    /// appended after the resource and scope as they are. Written into
    /// `buf`, whose memory the next request takes back once the last one's
    /// bytes are dropped (sent): no fresh allocation per batch.
    fn request(&self, spans: &[u8], buf: &mut BytesMut) -> Bytes {
        let scope_spans = self.scope.len() + spans.len();
        let resource_spans = self.resource.len()
            + key_len(SCOPE_SPANS_FIELD)
            + encoded_len_varint(scope_spans as u64)
            + scope_spans;
        buf.clear();
        buf.reserve(resource_spans + 16);
        encode_key(RESOURCE_SPANS_FIELD, WireType::LengthDelimited, buf);
        encode_varint(resource_spans as u64, buf);
        buf.extend_from_slice(&self.resource);
        encode_key(SCOPE_SPANS_FIELD, WireType::LengthDelimited, buf);
        encode_varint(scope_spans as u64, buf);
        buf.extend_from_slice(&self.scope);
        buf.extend_from_slice(spans);
        buf.split().freeze()
    }
}

/// Where batches go.
enum Sender {
    Http {
        client: reqwest::Client,
        /// Parsed once, not per export.
        url: reqwest::Url,
        headers: reqwest::header::HeaderMap,
        json: bool,
    },
    Grpc {
        client: TraceServiceClient<tonic::transport::Channel>,
        headers: tonic::metadata::MetadataMap,
    },
}

impl Sender {
    fn new(s: &OtlpSettings) -> Result<Sender, String> {
        match s.protocol {
            OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (name, value) in &s.headers {
                    // Both checked at config load.
                    if let (Ok(n), Ok(v)) = (
                        reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                        reqwest::header::HeaderValue::from_str(value),
                    ) {
                        headers.insert(n, v);
                    }
                }
                let client = reqwest::Client::builder()
                    .timeout(s.timeout)
                    // A redirect would carry the configured headers (a
                    // collector's credentials) to wherever it points.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| e.to_string())?;
                let url = reqwest::Url::parse(&s.traces_url).map_err(|e| e.to_string())?;
                Ok(Sender::Http {
                    client,
                    url,
                    headers,
                    json: s.protocol == OtlpProtocol::HttpJson,
                })
            }
            OtlpProtocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(s.traces_url.clone())
                    .map_err(|e| e.to_string())?
                    .timeout(s.timeout)
                    .connect_timeout(s.timeout)
                    .connect_lazy();
                let mut headers = tonic::metadata::MetadataMap::new();
                for (name, value) in &s.headers {
                    let name = name.to_ascii_lowercase();
                    if let (Ok(n), Ok(v)) = (
                        tonic::metadata::AsciiMetadataKey::from_bytes(name.as_bytes()),
                        value.parse::<tonic::metadata::AsciiMetadataValue>(),
                    ) {
                        headers.insert(n, v);
                    }
                }
                Ok(Sender::Grpc {
                    client: TraceServiceClient::new(channel),
                    headers,
                })
            }
        }
    }

    /// Sends one `ExportTraceServiceRequest`, encoded.
    async fn send(&mut self, request: Bytes) -> Result<(), String> {
        match self {
            Sender::Http {
                client,
                url,
                headers,
                json,
            } => {
                let (body, content_type) = if *json {
                    let r =
                        ExportTraceServiceRequest::decode(request).map_err(|e| e.to_string())?;
                    let body = serde_json::to_vec(&r).map_err(|e| e.to_string())?;
                    (Bytes::from(body), "application/json")
                } else {
                    (request, "application/x-protobuf")
                };
                let resp = client
                    .post(url.clone())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                let status = resp.status();
                // The answer is read so the connection is kept for the next.
                let _ = resp.bytes().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the collector answered {status}"))
                }
            }
            Sender::Grpc { client, headers } => {
                let r = ExportTraceServiceRequest::decode(request).map_err(|e| e.to_string())?;
                let mut req = tonic::Request::new(r);
                *req.metadata_mut() = headers.clone();
                client
                    .export(req)
                    .await
                    .map(drop)
                    .map_err(|e| format!("{}: {}", e.code(), e.message()))
            }
        }
    }
}

/// The export loop: the thread sleeps until the first span of a batch,
/// then until the batch is full or [`BATCH_DELAY`] has passed, then takes
/// every shelf's spans and exports them in batches of at most
/// [`MAX_BATCH`]. A failed export's spans are dropped and counted.
async fn run(s: OtlpSettings, shelves: Arc<Shelves>, queued: Arc<AtomicUsize>, wake: Arc<Notify>) {
    let mut sender = match Sender::new(&s) {
        Ok(e) => Some(e),
        Err(e) => {
            log::error!("telemetry.otlp: no exporter ({e}): spans are dropped");
            None
        }
    };
    let frame = Frame::new();
    let mut backlog = Backlog::default();
    let mut buf = BytesMut::new();
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
        backlog.take(&shelves);
        while backlog.spans > 0 {
            let (bytes, n) = backlog.next_batch();
            let request = frame.request(&backlog.bytes[..bytes], &mut buf);
            backlog.consume(bytes, n);
            let result = match &mut sender {
                Some(e) => match tokio::time::timeout(s.timeout, e.send(request)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {} ms", s.timeout.as_millis())),
                },
                None => Err("no exporter".to_owned()),
            };
            // Counted as waiting until exported: `Telemetry::flush` waits for 0.
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

#[cfg(test)]
mod tests {
    use super::super::span::SPANS_FIELD;
    use super::super::Shelf;
    use super::*;
    use std::sync::Mutex;

    /// A batch framed from encoded spans decodes as the request the
    /// collector expects: one resource, one scope, every span in order.
    #[test]
    fn a_batch_decodes_as_one_export_request() {
        let spans = span_bytes(0, 300);
        let frame = Frame::new();
        let r =
            ExportTraceServiceRequest::decode(frame.request(&spans, &mut BytesMut::new())).unwrap();
        assert_eq!(r.resource_spans.len(), 1);
        let rs = &r.resource_spans[0];
        let resource = rs.resource.as_ref().unwrap();
        assert!(resource.attributes.iter().any(|a| a.key == "service.name"));
        assert_eq!(rs.scope_spans.len(), 1);
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "apiproxy");
        assert_eq!(ss.spans.len(), 300);
        assert_eq!(ss.spans[299].name, "span 299");
    }

    fn span_bytes(from: u32, to: u32) -> Vec<u8> {
        use opentelemetry_proto::tonic::trace::v1::Span;
        let mut out = Vec::new();
        for i in from..to {
            let span = Span {
                name: format!("span {i}"),
                ..Span::default()
            };
            prost::encoding::message::encode(SPANS_FIELD, &span, &mut out);
        }
        out
    }

    /// Shelves are emptied into the backlog in batches of at most
    /// `MAX_BATCH` spans, cut between spans; an ended thread's shelf is
    /// forgotten once emptied, a live one kept.
    #[test]
    fn shelves_are_taken_in_batches_cut_between_spans() {
        let shelves = Shelves::default();
        let live = Arc::new(Mutex::new(Shelf {
            bytes: span_bytes(0, 400),
            spans: 400,
        }));
        let ended = Arc::new(Mutex::new(Shelf {
            bytes: span_bytes(400, 700),
            spans: 300,
        }));
        shelves.list.lock().unwrap().push(live.clone());
        shelves.list.lock().unwrap().push(ended.clone());
        drop(ended);
        let mut backlog = Backlog::default();
        backlog.take(&shelves);
        assert_eq!(backlog.spans, 700);
        assert_eq!(
            shelves.list.lock().unwrap().len(),
            1,
            "the ended thread's shelf"
        );
        assert_eq!(live.lock().unwrap().spans, 0);
        assert!(live.lock().unwrap().bytes.is_empty());
        let frame = Frame::new();
        let mut buf = BytesMut::new();
        let mut names = Vec::new();
        let mut sizes = Vec::new();
        while backlog.spans > 0 {
            let (bytes, n) = backlog.next_batch();
            let r =
                ExportTraceServiceRequest::decode(frame.request(&backlog.bytes[..bytes], &mut buf))
                    .unwrap();
            let spans = &r.resource_spans[0].scope_spans[0].spans;
            assert_eq!(spans.len(), n);
            sizes.push(n);
            names.extend(spans.iter().map(|s| s.name.clone()));
            backlog.consume(bytes, n);
        }
        assert_eq!(sizes, [MAX_BATCH, 700 - MAX_BATCH]);
        let expected: Vec<String> = (0..700).map(|i| format!("span {i}")).collect();
        assert_eq!(names, expected);
    }
}
