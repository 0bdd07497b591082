//! A finished request as the proxy hands it over ([`Finished`]), and its
//! spans in the GenAI semantic conventions: one server span, one client
//! span per upstream attempt, encoded as OTLP `Span` messages (protobuf,
//! `opentelemetry/proto/trace/v1`) into bytes the export thread batches
//! without decoding them again.
//!
//! Written field by field (inlined writes; each attribute's name and the
//! keys around it a constant made at compile time, `key!`) into a
//! [`Scratch`] buffer each thread keeps, in one pass and with no allocation
//! once the buffer has grown: the request's thread pays for its spans, and
//! building `opentelemetry-proto` messages to encode them cost four times
//! as much, the SDK's `SpanData` and its OTLP transform more still
//! (benches/README.md, "Tracing"). The attributes a thread's requests
//! mostly share in a server span (models, provider, key, candidates) are
//! kept as encoded with the facts they came from, and copied when the next
//! request's are the same. The unit tests below decode every span with
//! `opentelemetry-proto`'s own messages.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::SpanFlags;
use prost::encoding::{encoded_len_varint, key_len, WireType};

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
    /// Why the answer ended, one reason per choice, as the client was told
    /// (`gen_ai.response.finish_reasons`); empty when unknown.
    pub finish_reasons: &'a [String],
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
    /// The candidates in routing order, `provider/model`, with their
    /// routing scores.
    pub candidates: &'a [(String, f64)],
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

/// A thread's span being written, reused by every request it traces.
#[derive(Default)]
pub struct Scratch {
    /// The span's fields but its name and status.
    fields: Vec<u8>,
    name: String,
    status_error: bool,
    status_message: String,
    /// The last server span's attributes that repeat from one request to
    /// the next, as encoded.
    repeated: Repeated,
}

/// The server span's attributes that a thread's requests mostly share
/// (the operation, the models, the provider, the key, the candidates, the
/// finish reasons): their facts, owned, and their bytes as encoded. A
/// request whose facts are the same copies the bytes instead of encoding
/// them again (writing them was most of a span's encoding).
#[derive(Default)]
struct Repeated {
    /// Whether `bytes` were encoded from the facts below.
    valid: bool,
    operation: &'static str,
    requested_model: String,
    client_format: &'static str,
    stream: bool,
    provider_id: String,
    provider_name: Option<&'static str>,
    response_model: String,
    finish_reasons: Vec<String>,
    key_name: Option<String>,
    candidates: Vec<String>,
    cache: Option<&'static str>,
    bytes: Vec<u8>,
}

impl Repeated {
    /// Whether `f`'s repeated facts are the ones encoded.
    fn holds(&self, f: &Finished<'_>) -> bool {
        self.valid
            && self.operation == f.trace.operation
            && self.requested_model == f.requested_model
            && self.client_format == f.client_format
            && self.stream == f.stream
            && self.provider_id == f.provider_id
            && self.provider_name == f.provider_name
            && self.response_model == f.response_model
            && self.finish_reasons == f.finish_reasons
            && self.key_name.as_deref() == f.key_name
            && self.candidates.len() == f.candidates.len()
            && self
                .candidates
                .iter()
                .zip(f.candidates)
                .all(|(a, (b, _))| a == b)
            && self.cache == f.cache
    }

    /// Keeps `bytes`, encoded from `f`'s repeated facts, and those facts.
    fn note(&mut self, f: &Finished<'_>, bytes: &[u8]) {
        let own = |to: &mut String, from: &str| {
            to.clear();
            to.push_str(from);
        };
        self.operation = f.trace.operation;
        own(&mut self.requested_model, f.requested_model);
        self.client_format = f.client_format;
        self.stream = f.stream;
        own(&mut self.provider_id, f.provider_id);
        self.provider_name = f.provider_name;
        own(&mut self.response_model, f.response_model);
        self.finish_reasons.clear();
        self.finish_reasons.extend(f.finish_reasons.iter().cloned());
        self.key_name = f.key_name.map(str::to_owned);
        self.candidates.clear();
        self.candidates
            .extend(f.candidates.iter().map(|(c, _)| c.clone()));
        self.cache = f.cache;
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.valid = true;
    }
}

/// An attribute's name as it is written: `KeyValue.key`'s field (its
/// key, length and text) and the key of the `value` field that follows,
/// made at compile time (a name is under 128 bytes: one length byte).
macro_rules! key {
    ($name:literal) => {{
        const NAME: &str = $name;
        const BYTES: [u8; NAME.len() + 3] = key_field(NAME);
        &BYTES as &'static [u8]
    }};
}

/// The bytes of `key!`.
const fn key_field<const N: usize>(name: &str) -> [u8; N] {
    assert!(name.len() < 0x80 && N == name.len() + 3);
    let mut out = [0u8; N];
    out[0] = (KEY << 3) as u8 | WireType::LengthDelimited as u8;
    out[1] = name.len() as u8;
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        out[2 + i] = b[i];
        i += 1;
    }
    out[N - 1] = (VALUE << 3) as u8 | WireType::LengthDelimited as u8;
    out
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
            s.name.push_str(op);
            s.name.push(' ');
            s.name.push_str(a.model);
            s.str(key!("gen_ai.operation.name"), op);
            s.str(key!("gen_ai.request.model"), a.model);
            s.str(key!("apiproxy.provider.id"), a.provider_id);
            s.str(key!("apiproxy.attempt.outcome"), a.outcome);
            if let Some(p) = a.provider_name {
                s.str(key!("gen_ai.provider.name"), p);
            }
            if let Some(code) = a.status {
                s.int(key!("http.response.status_code"), i64::from(code));
            }
            if failed {
                s.str(key!("error.type"), a.outcome);
                s.error(format_args!("{}", a.outcome));
            }
            s.encode(out);
        }
        let parent = t.parent.unwrap_or(SpanId::INVALID);
        s.begin(t, t.span_id, parent, t.parent.is_some(), SpanKind::Server);
        s.times(t.wall_start, t.wall_start + self.duration);
        // A request refused before its model was read names none.
        s.name.push_str(op);
        if !self.requested_model.is_empty() {
            s.name.push(' ');
            s.name.push_str(self.requested_model);
        }
        self.server_attributes(s);
        if self.status >= 500 || self.status == 0 {
            s.error(format_args!("status {}", self.status));
        }
        s.encode(out);
    }

    fn server_attributes(&self, s: &mut Scratch) {
        if s.repeated.holds(self) {
            s.fields.extend_from_slice(&s.repeated.bytes);
        } else {
            let from = s.fields.len();
            self.repeated_attributes(s);
            s.repeated.note(self, &s.fields[from..]);
        }
        self.own_attributes(s);
    }

    /// The attributes [`Repeated`] keeps.
    fn repeated_attributes(&self, s: &mut Scratch) {
        s.str(key!("gen_ai.operation.name"), self.trace.operation);
        s.str(key!("gen_ai.request.model"), self.requested_model);
        s.str(key!("apiproxy.client_format"), self.client_format);
        s.bool(key!("apiproxy.stream"), self.stream);
        if !self.provider_id.is_empty() {
            s.str(key!("apiproxy.provider.id"), self.provider_id);
        }
        if let Some(p) = self.provider_name {
            s.str(key!("gen_ai.provider.name"), p);
        }
        if !self.response_model.is_empty() {
            s.str(key!("gen_ai.response.model"), self.response_model);
        }
        if !self.finish_reasons.is_empty() {
            s.strs(
                key!("gen_ai.response.finish_reasons"),
                self.finish_reasons.iter().map(String::as_str),
            );
        }
        if let Some(k) = self.key_name {
            s.str(key!("apiproxy.client_key.name"), k);
        }
        if !self.candidates.is_empty() {
            s.strs(
                key!("apiproxy.routing.candidates"),
                self.candidates.iter().map(|(c, _)| c.as_str()),
            );
        }
        if let Some(c) = self.cache {
            s.str(key!("apiproxy.cache"), c);
        }
    }

    /// The attributes each request has its own of.
    fn own_attributes(&self, s: &mut Scratch) {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        s.int(key!("apiproxy.attempts"), self.attempts.len() as i64);
        if self.status != 0 {
            s.int(key!("http.response.status_code"), i64::from(self.status));
        }
        if self.status >= 400 || self.status == 0 {
            // A failed request's only allocation.
            s.str(key!("error.type"), &self.status.to_string());
        }
        let counts = [
            (key!("gen_ai.usage.input_tokens"), self.input_tokens),
            (key!("gen_ai.usage.output_tokens"), self.output_tokens),
            (
                key!("gen_ai.usage.cache_read.input_tokens"),
                self.cached_input_tokens,
            ),
            (
                key!("gen_ai.usage.cache_creation.input_tokens"),
                self.cache_creation_input_tokens,
            ),
            (key!("gen_ai.request.max_tokens"), self.max_tokens),
        ];
        for (k, v) in counts {
            if let Some(v) = v {
                s.int(k, int(v));
            }
        }
        if self.input_tokens.is_some() {
            s.bool(key!("apiproxy.usage.estimated"), self.usage_estimated);
        }
        if let Some(t) = self.time_to_first_token {
            s.double(key!("apiproxy.time_to_first_token"), t.as_secs_f64());
        }
        if let Some(c) = self.cost_usd {
            s.double(key!("apiproxy.cost_usd"), c);
        }
        if let Some(v) = self.score {
            s.double(key!("apiproxy.routing.score"), v);
        }
        if let Some(body) = &self.input_content {
            s.str(key!("apiproxy.request.body"), body);
        }
        if let Some(text) = self.output_content {
            let messages = serde_json::json!([{
                "role": "assistant",
                "parts": [{"type": "text", "content": text}],
            }]);
            s.str(key!("gen_ai.output.messages"), &messages.to_string());
        }
    }
}

// Field numbers of opentelemetry/proto/trace/v1/trace.proto (`Span`,
// `Status`) and common/v1/common.proto (`KeyValue`, `AnyValue`,
// `ArrayValue`), as `opentelemetry-proto`'s generated messages number them.
const TRACE_ID: u32 = 1;
const SPAN_ID: u32 = 2;
const TRACE_STATE: u32 = 3;
const PARENT_SPAN_ID: u32 = 4;
const NAME: u32 = 5;
const KIND: u32 = 6;
const START_TIME: u32 = 7;
const END_TIME: u32 = 8;
const ATTRIBUTES: u32 = 9;
const STATUS: u32 = 15;
const FLAGS: u32 = 16;
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;
const KEY: u32 = 1;
const VALUE: u32 = 2;
const STRING_VALUE: u32 = 1;
const BOOL_VALUE: u32 = 2;
const INT_VALUE: u32 = 3;
const DOUBLE_VALUE: u32 = 4;
const ARRAY_VALUE: u32 = 5;
const ARRAY_VALUES: u32 = 1;

/// Writes a varint: prost's `encode_varint` writes through `BufMut` a
/// byte at a time and is not inlined, and a span writes about a hundred
/// (most of them one byte: a tag, a short length).
#[inline(always)]
fn put_varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Writes a field's key (one byte for every field number below 16).
#[inline(always)]
fn put_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | wire_type as u32), buf);
}

/// The length of a length-delimited field of `len` bytes, key included.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

#[inline(always)]
fn put_delimited(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_key(tag, WireType::LengthDelimited, buf);
    put_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// An `AnyValue` holding the string `v`: its length.
fn string_value_len(v: &str) -> usize {
    delimited_len(STRING_VALUE, v.len())
}

impl Scratch {
    /// Starts a span: ids, flags, kind and `tracestate` written; name and
    /// status emptied.
    fn begin(
        &mut self,
        t: &RequestTrace,
        id: SpanId,
        parent: SpanId,
        remote_parent: bool,
        kind: SpanKind,
    ) {
        let f = &mut self.fields;
        f.clear();
        put_delimited(f, TRACE_ID, &t.trace_id.to_bytes());
        put_delimited(f, SPAN_ID, &id.to_bytes());
        if let Some(state) = t.tracestate.as_deref().filter(|s| !s.is_empty()) {
            put_delimited(f, TRACE_STATE, state.as_bytes());
        }
        if parent != SpanId::INVALID {
            put_delimited(f, PARENT_SPAN_ID, &parent.to_bytes());
        }
        // Sampled (only sampled requests are encoded), and whether the
        // parent is remote, as the SDK's OTLP transform sets them.
        let mut flags = 1 | SpanFlags::ContextHasIsRemoteMask as u32;
        if remote_parent {
            flags |= SpanFlags::ContextIsRemoteMask as u32;
        }
        put_key(FLAGS, WireType::ThirtyTwoBit, f);
        f.extend_from_slice(&flags.to_le_bytes());
        put_key(KIND, WireType::Varint, f);
        put_varint(kind as u64, f);
        self.name.clear();
        self.status_error = false;
        self.status_message.clear();
    }

    fn times(&mut self, start: SystemTime, end: SystemTime) {
        for (tag, t) in [(START_TIME, start), (END_TIME, end)] {
            put_key(tag, WireType::SixtyFourBit, &mut self.fields);
            self.fields.extend_from_slice(&nanos(t).to_le_bytes());
        }
    }

    fn error(&mut self, message: std::fmt::Arguments<'_>) {
        self.status_error = true;
        let _ = self.status_message.write_fmt(message);
    }

    /// Starts an attribute named by `key` (from `key!`) whose
    /// `AnyValue` is `value_len` bytes: the caller writes the value's
    /// fields next. Inlined, so each name is copied as a constant.
    #[inline(always)]
    fn attr(&mut self, key: &[u8], value_len: usize) {
        let kv_len = key.len() + encoded_len_varint(value_len as u64) + value_len;
        let f = &mut self.fields;
        put_key(ATTRIBUTES, WireType::LengthDelimited, f);
        put_varint(kv_len as u64, f);
        f.extend_from_slice(key);
        put_varint(value_len as u64, f);
    }

    #[inline(always)]
    fn str(&mut self, key: &[u8], v: &str) {
        self.attr(key, string_value_len(v));
        put_delimited(&mut self.fields, STRING_VALUE, v.as_bytes());
    }

    #[inline(always)]
    fn int(&mut self, key: &[u8], v: i64) {
        // int64 is written as its two's complement, as prost writes it.
        let v = v as u64;
        self.attr(key, key_len(INT_VALUE) + encoded_len_varint(v));
        put_key(INT_VALUE, WireType::Varint, &mut self.fields);
        put_varint(v, &mut self.fields);
    }

    #[inline(always)]
    fn double(&mut self, key: &[u8], v: f64) {
        self.attr(key, key_len(DOUBLE_VALUE) + 8);
        put_key(DOUBLE_VALUE, WireType::SixtyFourBit, &mut self.fields);
        self.fields.extend_from_slice(&v.to_le_bytes());
    }

    #[inline(always)]
    fn bool(&mut self, key: &[u8], v: bool) {
        self.attr(key, key_len(BOOL_VALUE) + 1);
        put_key(BOOL_VALUE, WireType::Varint, &mut self.fields);
        put_varint(u64::from(v), &mut self.fields);
    }

    /// A list of strings (an `ArrayValue` of string `AnyValue`s).
    fn strs<'v>(&mut self, key: &[u8], values: impl Iterator<Item = &'v str> + Clone) {
        let array_len: usize = values
            .clone()
            .map(|v| delimited_len(ARRAY_VALUES, string_value_len(v)))
            .sum();
        self.attr(key, delimited_len(ARRAY_VALUE, array_len));
        let f = &mut self.fields;
        put_key(ARRAY_VALUE, WireType::LengthDelimited, f);
        put_varint(array_len as u64, f);
        for v in values {
            put_key(ARRAY_VALUES, WireType::LengthDelimited, f);
            put_varint(string_value_len(v) as u64, f);
            put_delimited(f, STRING_VALUE, v.as_bytes());
        }
    }

    /// Appends the span written as a `ScopeSpans.spans` field.
    fn encode(&self, out: &mut Vec<u8>) {
        let code = if self.status_error {
            StatusCode::Error
        } else {
            StatusCode::Unset
        } as u64;
        let mut status_len = 0;
        if !self.status_message.is_empty() {
            status_len += delimited_len(STATUS_MESSAGE, self.status_message.len());
        }
        if code != 0 {
            status_len += key_len(STATUS_CODE) + encoded_len_varint(code);
        }
        let len = self.fields.len()
            + delimited_len(NAME, self.name.len())
            + delimited_len(STATUS, status_len);
        put_key(SPANS_FIELD, WireType::LengthDelimited, out);
        put_varint(len as u64, out);
        out.extend_from_slice(&self.fields);
        put_delimited(out, NAME, self.name.as_bytes());
        put_key(STATUS, WireType::LengthDelimited, out);
        put_varint(status_len as u64, out);
        if !self.status_message.is_empty() {
            put_delimited(out, STATUS_MESSAGE, self.status_message.as_bytes());
        }
        if code != 0 {
            put_key(STATUS_CODE, WireType::Varint, out);
            put_varint(code, out);
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceId;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
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
            candidates: Vec::leak(vec![("p/m".into(), 1.0), ("q/m".into(), 0.5)]),
            finish_reasons: Vec::leak(vec!["stop".into(), "length".into()]),
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
        let Some(Any::ArrayValue(reasons)) = attr(server, "gen_ai.response.finish_reasons") else {
            panic!("{server:#?}");
        };
        let reasons: Vec<_> = reasons.values.iter().map(|v| v.value.clone()).collect();
        assert_eq!(
            reasons,
            [
                Some(Any::StringValue("stop".into())),
                Some(Any::StringValue("length".into()))
            ]
        );
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
        big.candidates = Vec::leak(vec![
            ("a/1".into(), 1.0),
            ("b/2".into(), 0.5),
            ("c/3".into(), 0.0),
        ]);
        let _ = encoded(&big, &mut s);
        let mut small = finished();
        small.trace.parent = None;
        small.trace.tracestate = None;
        small.attempts.truncate(1);
        small.attempts[0].outcome = "ok";
        small.candidates = Vec::leak(vec![("only/one".into(), 1.0)]);
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

    /// A thread's spans copy the attributes its last request shared with
    /// this one: a request differing in any one of them, or in none, is
    /// encoded as a fresh scratch encodes it.
    #[test]
    fn shared_attributes_are_encoded_again_when_any_differs() {
        type Change = fn(&mut Finished<'static>);
        let changes: [Change; 15] = [
            |_| {},
            |f| f.trace.operation = "generate_content",
            |f| f.requested_model = "slow",
            |f| f.client_format = "gemini",
            |f| f.stream = true,
            |f| f.provider_id = "q",
            |f| f.provider_name = Some("anthropic"),
            |f| f.response_model = "m2",
            |f| f.finish_reasons = Vec::leak(vec!["stop".into()]),
            |f| f.key_name = Some("bob"),
            |f| f.key_name = None,
            |f| f.candidates = Vec::leak(vec![("p/m".into(), 1.0), ("q/n".into(), 0.5)]),
            |f| f.cache = Some("miss"),
            |f| f.trace.operation = "count_tokens",
            // Only a request's own facts differ: the shared bytes are kept.
            |f| {
                f.status = 502;
                f.input_tokens = Some(9);
                f.score = Some(0.25);
            },
        ];
        let mut s = Scratch::default();
        for change in changes {
            for f in [finished(), {
                let mut f = finished();
                change(&mut f);
                f
            }] {
                assert_eq!(encoded(&f, &mut s), encoded(&f, &mut Scratch::default()));
            }
        }
    }

    /// Every field and every attribute of a server span with each fact
    /// set, decoded with `opentelemetry-proto` and compared whole with the
    /// message it must be: no field, length or wire type wrong anywhere.
    #[test]
    fn every_field_decodes_as_the_message_it_means() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
        use opentelemetry_proto::tonic::trace::v1::Status;
        let mut f = finished();
        f.attempts.clear();
        f.status = 429;
        f.provider_id = "p";
        f.provider_name = Some("openai");
        f.response_model = "m-upstream";
        f.stream = true;
        f.time_to_first_token = Some(Duration::from_millis(250));
        f.output_tokens = Some(3_000_000_000);
        f.cached_input_tokens = Some(0);
        f.cache_creation_input_tokens = Some(u64::MAX);
        f.max_tokens = Some(512);
        f.usage_estimated = true;
        f.cost_usd = Some(-0.0);
        f.score = Some(1.5);
        f.cache = Some("miss");
        f.client_format = "anthropic";
        f.input_content = Some("é".repeat(100));
        f.output_content = Some("");
        f.candidates = Vec::leak(vec![(String::new(), 0.0), ("x".repeat(300), 1.5)]);
        let spans = encoded(&f, &mut Scratch::default());
        assert_eq!(spans.len(), 1);
        let kv = |k: &str, v: Any| KeyValue {
            key: k.to_owned(),
            value: Some(AnyValue { value: Some(v) }),
        };
        let s = |v: &str| Any::StringValue(v.to_owned());
        let messages = r#"[{"parts":[{"content":"","type":"text"}],"role":"assistant"}]"#;
        let expected = Span {
            trace_id: 7u128.to_be_bytes().to_vec(),
            span_id: 1u64.to_be_bytes().to_vec(),
            trace_state: "congo=t61".to_owned(),
            parent_span_id: 9u64.to_be_bytes().to_vec(),
            flags: 0x301,
            name: "chat fast".to_owned(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: nanos_at(Duration::ZERO),
            end_time_unix_nano: nanos_at(Duration::from_millis(100)),
            attributes: vec![
                kv("gen_ai.operation.name", s("chat")),
                kv("gen_ai.request.model", s("fast")),
                kv("apiproxy.client_format", s("anthropic")),
                kv("apiproxy.stream", Any::BoolValue(true)),
                kv("apiproxy.provider.id", s("p")),
                kv("gen_ai.provider.name", s("openai")),
                kv("gen_ai.response.model", s("m-upstream")),
                kv(
                    "gen_ai.response.finish_reasons",
                    Any::ArrayValue(ArrayValue {
                        values: ["stop", "length"]
                            .into_iter()
                            .map(|v| AnyValue { value: Some(s(v)) })
                            .collect(),
                    }),
                ),
                kv("apiproxy.client_key.name", s("alice")),
                kv(
                    "apiproxy.routing.candidates",
                    Any::ArrayValue(ArrayValue {
                        values: [String::new(), "x".repeat(300)]
                            .into_iter()
                            .map(|v| AnyValue {
                                value: Some(Any::StringValue(v)),
                            })
                            .collect(),
                    }),
                ),
                kv("apiproxy.cache", s("miss")),
                kv("apiproxy.attempts", Any::IntValue(0)),
                kv("http.response.status_code", Any::IntValue(429)),
                kv("error.type", s("429")),
                kv("gen_ai.usage.input_tokens", Any::IntValue(7)),
                kv("gen_ai.usage.output_tokens", Any::IntValue(3_000_000_000)),
                kv("gen_ai.usage.cache_read.input_tokens", Any::IntValue(0)),
                kv(
                    "gen_ai.usage.cache_creation.input_tokens",
                    Any::IntValue(i64::MAX),
                ),
                kv("gen_ai.request.max_tokens", Any::IntValue(512)),
                kv("apiproxy.usage.estimated", Any::BoolValue(true)),
                kv("apiproxy.time_to_first_token", Any::DoubleValue(0.25)),
                kv("apiproxy.cost_usd", Any::DoubleValue(-0.0)),
                kv("apiproxy.routing.score", Any::DoubleValue(1.5)),
                kv("apiproxy.request.body", s(&"é".repeat(100))),
                kv("gen_ai.output.messages", s(messages)),
            ],
            status: Some(Status {
                message: String::new(),
                code: StatusCode::Unset as i32,
            }),
            ..Span::default()
        };
        assert_eq!(spans[0], expected);
    }
}
