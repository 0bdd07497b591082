//! A finished request as the proxy hands it over ([`Finished`]), and its
//! spans in the GenAI semantic conventions: one server span, one client
//! span per upstream attempt, encoded as OTLP `Span` messages (the
//! `opentelemetry-proto` types, prost's encoder) into bytes the export
//! thread batches without decoding them again.
//!
//! Encoded on the request's thread into a [`Scratch`] kept by that thread:
//! the messages' strings and attribute lists are reused from one request to
//! the next, so a traced request allocates only the bytes it queues. Going
//! through the SDK's `SpanData` and its OTLP transform instead cost four
//! times the CPU (benches/README.md, "Tracing").

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::common::v1::{any_value::Value as Any, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, SpanFlags, Status};

use super::RequestTrace;
use opentelemetry::trace::SpanId;

/// What a finished request's spans are made of. Filled by the proxy's
/// logging phase from what it gathered for the access log and the console.
/// Borrowed from the request's context: encoded before the request ends.
#[derive(Debug, Clone, Default)]
pub struct Finished<'a> {
    pub trace: RequestTrace,
    /// From the request's start to its end.
    pub duration: Duration,
    /// The model the client asked for.
    pub requested_model: &'a str,
    /// The configured provider that answered (or was tried last).
    pub provider_id: &'a str,
    /// Its kind's GenAI name (`gen_ai.provider.name`).
    pub provider_name: Option<&'static str>,
    /// The model the provider was asked for.
    pub response_model: &'a str,
    /// The client's wire format.
    pub client_format: &'static str,
    pub stream: bool,
    pub status: u16,
    pub time_to_first_token: Option<Duration>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    /// The usage was estimated (the provider reported none).
    pub usage_estimated: bool,
    pub max_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    /// The client key's name (never the key).
    pub key_name: Option<&'a str>,
    /// The candidates in routing order, `provider/model`.
    pub candidates: Vec<String>,
    /// The routing score of the candidate that answered.
    pub score: Option<f64>,
    /// The response cache's verdict (`hit`, `miss`, `bypass`).
    pub cache: Option<&'static str>,
    /// Upstream attempts sent.
    pub attempts: Vec<AttemptSpan<'a>>,
    /// The redacted request body (`telemetry.capture_content`).
    pub input_content: Option<String>,
    /// The answer's text, bounded (`telemetry.capture_content`).
    pub output_content: Option<&'a str>,
}

/// One upstream attempt.
#[derive(Debug, Clone)]
pub struct AttemptSpan<'a> {
    /// The id its `traceparent` carried to the provider.
    pub span_id: SpanId,
    pub provider_id: &'a str,
    pub provider_name: Option<&'static str>,
    pub model: &'a str,
    /// `ok`, `client_gone`, `hedge_cancelled` or the failure's label.
    pub outcome: &'static str,
    pub status: Option<u16>,
    /// From the request's start to the attempt's.
    pub start: Duration,
    pub duration: Duration,
}

/// The field of `ScopeSpans` that holds its spans: each span is appended
/// to the output as this field, so a request's bytes and a batch's are both
/// a run of `ScopeSpans.spans` entries.
pub const SPANS_FIELD: u32 = 2;

/// A thread's span message, reused by every request it traces.
#[derive(Default)]
pub struct Scratch {
    span: Span,
    /// Attributes of earlier requests, their strings kept for reuse; in the
    /// order they were written, reversed (the next one is last).
    spare: Vec<KeyValue>,
}

impl Finished<'_> {
    /// How many spans it makes.
    pub fn span_count(&self) -> usize {
        1 + self.attempts.len()
    }

    /// Appends its spans to `out` as `ScopeSpans.spans` fields: each
    /// attempt's, then the request's.
    pub fn encode(&self, s: &mut Scratch, out: &mut Vec<u8>) {
        let t = &self.trace;
        let op = t.operation;
        for a in &self.attempts {
            let failed = !matches!(a.outcome, "ok" | "client_gone" | "hedge_cancelled");
            s.begin(t, a.span_id, t.span_id, false, SpanKind::Client);
            let start = t.wall_start + a.start;
            s.times(start, start + a.duration);
            let _ = write!(s.span.name, "{op} {}", a.model);
            s.str("gen_ai.operation.name", op);
            s.str("gen_ai.request.model", a.model);
            s.str("apiproxy.provider.id", a.provider_id);
            s.str("apiproxy.attempt.outcome", a.outcome);
            if let Some(p) = a.provider_name {
                s.str("gen_ai.provider.name", p);
            }
            if let Some(code) = a.status {
                s.int("http.response.status_code", i64::from(code));
            }
            if failed {
                s.str("error.type", a.outcome);
                s.error(format_args!("{}", a.outcome));
            }
            s.encode(out);
        }
        let parent = t.parent.unwrap_or(SpanId::INVALID);
        s.begin(t, t.span_id, parent, t.parent.is_some(), SpanKind::Server);
        s.times(t.wall_start, t.wall_start + self.duration);
        // A request refused before its model was read names none.
        s.span.name.push_str(op);
        if !self.requested_model.is_empty() {
            let _ = write!(s.span.name, " {}", self.requested_model);
        }
        self.server_attributes(s);
        if self.status >= 500 || self.status == 0 {
            s.error(format_args!("status {}", self.status));
        }
        s.encode(out);
    }

    fn server_attributes(&self, s: &mut Scratch) {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        s.str("gen_ai.operation.name", self.trace.operation);
        s.str("gen_ai.request.model", self.requested_model);
        s.str("apiproxy.client_format", self.client_format);
        s.bool("apiproxy.stream", self.stream);
        s.int("apiproxy.attempts", self.attempts.len() as i64);
        if self.status != 0 {
            s.int("http.response.status_code", i64::from(self.status));
        }
        if self.status >= 400 || self.status == 0 {
            // A failed request's only allocation.
            s.str("error.type", &self.status.to_string());
        }
        if !self.provider_id.is_empty() {
            s.str("apiproxy.provider.id", self.provider_id);
        }
        if let Some(p) = self.provider_name {
            s.str("gen_ai.provider.name", p);
        }
        if !self.response_model.is_empty() {
            s.str("gen_ai.response.model", self.response_model);
        }
        let counts = [
            ("gen_ai.usage.input_tokens", self.input_tokens),
            ("gen_ai.usage.output_tokens", self.output_tokens),
            (
                "gen_ai.usage.cache_read.input_tokens",
                self.cached_input_tokens,
            ),
            (
                "gen_ai.usage.cache_creation.input_tokens",
                self.cache_creation_input_tokens,
            ),
            ("gen_ai.request.max_tokens", self.max_tokens),
        ];
        for (k, v) in counts {
            if let Some(v) = v {
                s.int(k, int(v));
            }
        }
        if self.input_tokens.is_some() {
            s.bool("apiproxy.usage.estimated", self.usage_estimated);
        }
        if let Some(t) = self.time_to_first_token {
            s.double("apiproxy.time_to_first_token", t.as_secs_f64());
        }
        if let Some(c) = self.cost_usd {
            s.double("apiproxy.cost_usd", c);
        }
        if let Some(k) = self.key_name {
            s.str("apiproxy.client_key.name", k);
        }
        if !self.candidates.is_empty() {
            s.strs(
                "apiproxy.routing.candidates",
                self.candidates.iter().map(String::as_str),
            );
        }
        if let Some(v) = self.score {
            s.double("apiproxy.routing.score", v);
        }
        if let Some(c) = self.cache {
            s.str("apiproxy.cache", c);
        }
        if let Some(body) = &self.input_content {
            s.str("apiproxy.request.body", body);
        }
        if let Some(text) = self.output_content {
            let messages = serde_json::json!([{
                "role": "assistant",
                "parts": [{"type": "text", "content": text}],
            }]);
            s.str("gen_ai.output.messages", &messages.to_string());
        }
    }
}

impl Scratch {
    /// Starts a span: ids, flags and `tracestate` set, name, attributes
    /// and status emptied (their storage kept).
    fn begin(
        &mut self,
        t: &RequestTrace,
        id: SpanId,
        parent: SpanId,
        remote_parent: bool,
        kind: SpanKind,
    ) {
        let sp = &mut self.span;
        set_bytes(&mut sp.trace_id, &t.trace_id.to_bytes());
        set_bytes(&mut sp.span_id, &id.to_bytes());
        if parent == SpanId::INVALID {
            sp.parent_span_id.clear();
        } else {
            set_bytes(&mut sp.parent_span_id, &parent.to_bytes());
        }
        sp.trace_state.clear();
        sp.trace_state
            .push_str(t.tracestate.as_deref().unwrap_or_default());
        // Sampled (only sampled requests are encoded), and whether the
        // parent is remote, as the SDK's OTLP transform sets them.
        sp.flags = 1 | SpanFlags::ContextHasIsRemoteMask as u32;
        if remote_parent {
            sp.flags |= SpanFlags::ContextIsRemoteMask as u32;
        }
        sp.kind = kind as i32;
        sp.name.clear();
        let status = sp.status.get_or_insert_with(Status::default);
        status.code = StatusCode::Unset as i32;
        status.message.clear();
        self.spare.extend(sp.attributes.drain(..).rev());
    }

    fn times(&mut self, start: SystemTime, end: SystemTime) {
        self.span.start_time_unix_nano = nanos(start);
        self.span.end_time_unix_nano = nanos(end);
    }

    fn error(&mut self, message: std::fmt::Arguments<'_>) {
        if let Some(status) = &mut self.span.status {
            status.code = StatusCode::Error as i32;
            let _ = status.message.write_fmt(message);
        }
    }

    /// The next attribute's value, its key set; its earlier value is kept
    /// for the setter to reuse.
    fn attr(&mut self, key: &str) -> &mut Option<Any> {
        let mut kv = self.spare.pop().unwrap_or_default();
        if kv.key != key {
            kv.key.clear();
            kv.key.push_str(key);
        }
        self.span.attributes.push(kv);
        let last = self.span.attributes.len() - 1;
        &mut self.span.attributes[last]
            .value
            .get_or_insert_with(AnyValue::default)
            .value
    }

    fn str(&mut self, key: &str, v: &str) {
        set_str(self.attr(key), v);
    }

    fn int(&mut self, key: &str, v: i64) {
        *self.attr(key) = Some(Any::IntValue(v));
    }

    fn double(&mut self, key: &str, v: f64) {
        *self.attr(key) = Some(Any::DoubleValue(v));
    }

    fn bool(&mut self, key: &str, v: bool) {
        *self.attr(key) = Some(Any::BoolValue(v));
    }

    fn strs<'a>(&mut self, key: &str, values: impl Iterator<Item = &'a str>) {
        let slot = self.attr(key);
        if !matches!(slot, Some(Any::ArrayValue(_))) {
            *slot = Some(Any::ArrayValue(Default::default()));
        }
        let Some(Any::ArrayValue(array)) = slot else {
            return;
        };
        let mut n = 0;
        for v in values {
            if n == array.values.len() {
                array.values.push(AnyValue::default());
            }
            set_str(&mut array.values[n].value, v);
            n += 1;
        }
        array.values.truncate(n);
    }

    fn encode(&self, out: &mut Vec<u8>) {
        prost::encoding::message::encode(SPANS_FIELD, &self.span, out);
    }
}

fn set_str(slot: &mut Option<Any>, v: &str) {
    match slot {
        Some(Any::StringValue(s)) => {
            s.clear();
            s.push_str(v);
        }
        _ => *slot = Some(Any::StringValue(v.to_owned())),
    }
}

fn set_bytes(to: &mut Vec<u8>, from: &[u8]) {
    to.clear();
    to.extend_from_slice(from);
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceId;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
    use prost::Message;

    fn finished() -> Finished<'static> {
        let trace = RequestTrace {
            trace_id: TraceId::from(7u128),
            parent: Some(SpanId::from(9u64)),
            span_id: SpanId::from(1u64),
            sampled: true,
            tracestate: Some("congo=t61".into()),
            operation: "chat",
            wall_start: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            capture_content: false,
            input_content: None,
        };
        let attempt = |id: u64, outcome, status| AttemptSpan {
            span_id: SpanId::from(id),
            provider_id: "p",
            provider_name: Some("openai"),
            model: "m",
            outcome,
            status,
            start: Duration::from_millis(id * 10),
            duration: Duration::from_millis(5),
        };
        Finished {
            trace,
            duration: Duration::from_millis(100),
            requested_model: "fast",
            status: 200,
            input_tokens: Some(7),
            key_name: Some("alice"),
            candidates: vec!["p/m".into(), "q/m".into()],
            attempts: vec![attempt(2, "5xx", Some(500)), attempt(3, "ok", Some(200))],
            ..Finished::default()
        }
    }

    /// The spans `f` encodes with `s`, decoded as a `ScopeSpans` (the
    /// bytes are a run of its `spans` field).
    fn encoded(f: &Finished, s: &mut Scratch) -> Vec<Span> {
        let mut out = Vec::new();
        f.encode(s, &mut out);
        ScopeSpans::decode(out.as_slice()).expect("decodes").spans
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
        let mut found = s.attributes.iter().filter(|a| a.key == key);
        let v = found.next().and_then(|a| a.value.as_ref()?.value.as_ref());
        assert!(found.next().is_none(), "{key} twice");
        v
    }

    fn nanos_at(d: Duration) -> u64 {
        (Duration::from_secs(1000) + d).as_nanos() as u64
    }

    #[test]
    fn a_server_span_over_its_attempts() {
        let spans = encoded(&finished(), &mut Scratch::default());
        assert_eq!(spans.len(), 3);
        let server = spans.last().unwrap();
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_eq!(server.name, "chat fast");
        assert_eq!(server.parent_span_id, 9u64.to_be_bytes());
        assert_eq!(server.flags, 0x301, "sampled, remote parent");
        assert_eq!(server.trace_state, "congo=t61");
        assert_eq!(server.start_time_unix_nano, nanos_at(Duration::ZERO));
        assert_eq!(
            server.end_time_unix_nano,
            nanos_at(Duration::from_millis(100))
        );
        assert_eq!(
            attr(server, "gen_ai.usage.input_tokens"),
            Some(&Any::IntValue(7))
        );
        assert_eq!(attr(server, "gen_ai.usage.output_tokens"), None);
        assert_eq!(
            attr(server, "apiproxy.client_key.name"),
            Some(&Any::StringValue("alice".into()))
        );
        let Some(Any::ArrayValue(list)) = attr(server, "apiproxy.routing.candidates") else {
            panic!("no candidates: {server:?}");
        };
        assert_eq!(list.values.len(), 2);
        assert_eq!(
            server.status.as_ref().unwrap().code,
            StatusCode::Unset as i32
        );
        for (a, (id, failed)) in spans[..2].iter().zip([(2u64, true), (3, false)]) {
            assert_eq!(a.kind, SpanKind::Client as i32);
            assert_eq!(a.span_id, id.to_be_bytes());
            assert_eq!(a.trace_id, 7u128.to_be_bytes());
            assert_eq!(a.parent_span_id, 1u64.to_be_bytes());
            assert_eq!(a.flags, 0x101, "sampled, local parent");
            assert_eq!(a.name, "chat m");
            assert_eq!(
                a.start_time_unix_nano,
                nanos_at(Duration::from_millis(id * 10))
            );
            assert_eq!(attr(a, "error.type").is_some(), failed);
            let code = a.status.as_ref().unwrap().code;
            assert_eq!(code == StatusCode::Error as i32, failed);
        }
    }

    #[test]
    fn a_root_span_without_a_parent_and_no_content_unless_captured() {
        let mut f = finished();
        f.trace.parent = None;
        f.status = 502;
        let mut s = Scratch::default();
        let spans = encoded(&f, &mut s);
        let server = spans.last().unwrap();
        assert!(server.parent_span_id.is_empty());
        assert_eq!(server.flags, 0x101);
        let status = server.status.as_ref().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "status 502");
        assert_eq!(
            attr(server, "error.type"),
            Some(&Any::StringValue("502".into()))
        );
        assert!(attr(server, "apiproxy.request.body").is_none());
        assert!(attr(server, "gen_ai.output.messages").is_none());
        f.input_content = Some("{\"a\":1}".into());
        f.output_content = Some("hi");
        let spans = encoded(&f, &mut s);
        let server = spans.last().unwrap();
        assert!(attr(server, "apiproxy.request.body").is_some());
        let Some(Any::StringValue(out)) = attr(server, "gen_ai.output.messages") else {
            panic!("no output messages");
        };
        assert!(out.contains("\"content\":\"hi\""), "{out}");
    }

    /// A reused scratch carries nothing of an earlier request into the
    /// next: names, attributes, status, parent, trace state and list
    /// lengths are each request's own.
    #[test]
    fn a_reused_scratch_keeps_nothing_of_the_last_request() {
        let mut s = Scratch::default();
        let mut big = finished();
        big.status = 503;
        big.output_content = Some("earlier answer");
        big.candidates = vec!["a/1".into(), "b/2".into(), "c/3".into()];
        let _ = encoded(&big, &mut s);
        let mut small = finished();
        small.trace.parent = None;
        small.trace.tracestate = None;
        small.attempts.truncate(1);
        small.attempts[0].outcome = "ok";
        small.candidates = vec!["only/one".into()];
        small.key_name = None;
        let reused = encoded(&small, &mut s);
        let fresh = encoded(&small, &mut Scratch::default());
        assert_eq!(reused, fresh);
        let server = reused.last().unwrap();
        assert!(attr(server, "gen_ai.output.messages").is_none());
        assert!(attr(server, "apiproxy.client_key.name").is_none());
        assert_eq!(server.status.as_ref().unwrap().message, "");
        assert!(server.trace_state.is_empty());
    }
}
