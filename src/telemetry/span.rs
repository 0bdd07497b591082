//! A finished request as the proxy hands it over ([`Finished`]), and its
//! spans as OpenTelemetry exports them (GenAI semantic conventions): one
//! server span, one client span per upstream attempt. Pure; runs on the
//! export thread, never on the request's.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::RequestTrace;

/// What a finished request's spans are made of. Filled by the proxy's
/// logging phase from what it gathered for the access log and the console.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    pub trace: RequestTrace,
    /// From the request's start to its end.
    pub duration: Duration,
    /// The model the client asked for.
    pub requested_model: String,
    /// The configured provider that answered (or was tried last).
    pub provider_id: String,
    /// Its kind's GenAI name (`gen_ai.provider.name`).
    pub provider_name: Option<&'static str>,
    /// The model the provider was asked for.
    pub response_model: String,
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
    pub key_name: Option<String>,
    /// The candidates in routing order, `provider/model`.
    pub candidates: Vec<String>,
    /// The routing score of the candidate that answered.
    pub score: Option<f64>,
    /// The response cache's verdict (`hit`, `miss`, `bypass`).
    pub cache: Option<&'static str>,
    /// Upstream attempts sent.
    pub attempts: Vec<AttemptSpan>,
    /// The redacted request body (`telemetry.capture_content`).
    pub input_content: Option<String>,
    /// The answer's text, bounded (`telemetry.capture_content`).
    pub output_content: Option<String>,
}

/// One upstream attempt.
#[derive(Debug, Clone)]
pub struct AttemptSpan {
    /// The id its `traceparent` carried to the provider.
    pub span_id: SpanId,
    pub provider_id: String,
    pub provider_name: Option<&'static str>,
    pub model: String,
    /// `ok`, `client_gone`, `hedge_cancelled` or the failure's label.
    pub outcome: &'static str,
    pub status: Option<u16>,
    /// From the request's start to the attempt's.
    pub start: Duration,
    pub duration: Duration,
}

impl Finished {
    /// How many spans it makes.
    pub fn span_count(&self) -> usize {
        1 + self.attempts.len()
    }

    /// Its spans: the request's, then each attempt's.
    pub fn into_spans(self, scope: &InstrumentationScope) -> Vec<SpanData> {
        let mut out = Vec::with_capacity(self.span_count());
        let t = self.trace.clone();
        let state = t
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let context = |span_id| {
            SpanContext::new(
                t.trace_id,
                span_id,
                TraceFlags::SAMPLED,
                false,
                state.clone(),
            )
        };
        let op = t.operation;
        for a in &self.attempts {
            let start = t.wall_start + a.start;
            let failed = !matches!(a.outcome, "ok" | "client_gone" | "hedge_cancelled");
            let mut attrs = vec![
                KeyValue::new("gen_ai.operation.name", op),
                KeyValue::new("gen_ai.request.model", a.model.clone()),
                KeyValue::new("apiproxy.provider.id", a.provider_id.clone()),
                KeyValue::new("apiproxy.attempt.outcome", a.outcome),
            ];
            if let Some(p) = a.provider_name {
                attrs.push(KeyValue::new("gen_ai.provider.name", p));
            }
            if let Some(s) = a.status {
                attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
            }
            if failed {
                attrs.push(KeyValue::new("error.type", a.outcome));
            }
            out.push(span(
                context(a.span_id),
                t.span_id,
                false,
                SpanKind::Client,
                format!("{op} {}", a.model),
                (start, start + a.duration),
                attrs,
                if failed {
                    Status::error(a.outcome)
                } else {
                    Status::Unset
                },
                scope,
            ));
        }
        let status = if self.status >= 500 || self.status == 0 {
            Status::error(format!("status {}", self.status))
        } else {
            Status::Unset
        };
        // A request refused before its model was read names none.
        let name = if self.requested_model.is_empty() {
            op.to_owned()
        } else {
            format!("{op} {}", self.requested_model)
        };
        let parent = t.parent.unwrap_or(SpanId::INVALID);
        let times = (t.wall_start, t.wall_start + self.duration);
        let attrs = self.server_attributes();
        out.push(span(
            context(t.span_id),
            parent,
            t.parent.is_some(),
            SpanKind::Server,
            name,
            times,
            attrs,
            status,
            scope,
        ));
        out
    }

    fn server_attributes(self) -> Vec<KeyValue> {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut a = vec![
            KeyValue::new("gen_ai.operation.name", self.trace.operation),
            KeyValue::new("gen_ai.request.model", self.requested_model),
            KeyValue::new("apiproxy.client_format", self.client_format),
            KeyValue::new("apiproxy.stream", self.stream),
            KeyValue::new("apiproxy.attempts", self.attempts.len() as i64),
        ];
        if self.status != 0 {
            a.push(KeyValue::new(
                "http.response.status_code",
                i64::from(self.status),
            ));
        }
        if self.status >= 400 || self.status == 0 {
            a.push(KeyValue::new("error.type", self.status.to_string()));
        }
        if !self.provider_id.is_empty() {
            a.push(KeyValue::new("apiproxy.provider.id", self.provider_id));
        }
        if let Some(p) = self.provider_name {
            a.push(KeyValue::new("gen_ai.provider.name", p));
        }
        if !self.response_model.is_empty() {
            a.push(KeyValue::new("gen_ai.response.model", self.response_model));
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
                a.push(KeyValue::new(k, int(v)));
            }
        }
        if self.input_tokens.is_some() {
            a.push(KeyValue::new(
                "apiproxy.usage.estimated",
                self.usage_estimated,
            ));
        }
        if let Some(t) = self.time_to_first_token {
            a.push(KeyValue::new(
                "apiproxy.time_to_first_token",
                t.as_secs_f64(),
            ));
        }
        if let Some(c) = self.cost_usd {
            a.push(KeyValue::new("apiproxy.cost_usd", c));
        }
        if let Some(k) = self.key_name {
            a.push(KeyValue::new("apiproxy.client_key.name", k));
        }
        if !self.candidates.is_empty() {
            let list: Vec<StringValue> = self.candidates.into_iter().map(Into::into).collect();
            a.push(KeyValue::new(
                "apiproxy.routing.candidates",
                Value::Array(Array::String(list)),
            ));
        }
        if let Some(s) = self.score {
            a.push(KeyValue::new("apiproxy.routing.score", s));
        }
        if let Some(c) = self.cache {
            a.push(KeyValue::new("apiproxy.cache", c));
        }
        if let Some(body) = self.input_content {
            a.push(KeyValue::new("apiproxy.request.body", body));
        }
        if let Some(text) = self.output_content {
            let messages = serde_json::json!([{
                "role": "assistant",
                "parts": [{"type": "text", "content": text}],
            }]);
            a.push(KeyValue::new(
                "gen_ai.output.messages",
                messages.to_string(),
            ));
        }
        a
    }
}

#[allow(clippy::too_many_arguments)]
fn span(
    span_context: SpanContext,
    parent_span_id: SpanId,
    parent_span_is_remote: bool,
    span_kind: SpanKind,
    name: String,
    (start_time, end_time): (SystemTime, SystemTime),
    attributes: Vec<KeyValue>,
    status: Status,
    scope: &InstrumentationScope,
) -> SpanData {
    SpanData {
        span_context,
        parent_span_id,
        parent_span_is_remote,
        span_kind,
        name: Cow::Owned(name),
        start_time,
        end_time,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// The scope every span is exported under.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("apiproxy")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceId;

    fn finished() -> Finished {
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
            provider_id: "p".into(),
            provider_name: Some("openai"),
            model: "m".into(),
            outcome,
            status,
            start: Duration::from_millis(id * 10),
            duration: Duration::from_millis(5),
        };
        Finished {
            trace,
            duration: Duration::from_millis(100),
            requested_model: "fast".into(),
            status: 200,
            input_tokens: Some(7),
            key_name: Some("alice".into()),
            candidates: vec!["p/m".into(), "q/m".into()],
            attempts: vec![attempt(2, "5xx", Some(500)), attempt(3, "ok", Some(200))],
            ..Finished::default()
        }
    }

    fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
        s.attributes
            .iter()
            .find(|a| a.key.as_str() == key)
            .map(|a| &a.value)
    }

    #[test]
    fn a_server_span_over_its_attempts() {
        let spans = finished().into_spans(&scope());
        assert_eq!(spans.len(), 3);
        let server = spans.last().unwrap();
        assert_eq!(server.span_kind, SpanKind::Server);
        assert_eq!(server.name, "chat fast");
        assert_eq!(server.parent_span_id, SpanId::from(9u64));
        assert!(server.parent_span_is_remote);
        assert_eq!(server.span_context.trace_state().header(), "congo=t61");
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(server.start_time, start);
        assert_eq!(server.end_time, start + Duration::from_millis(100));
        assert_eq!(
            attr(server, "gen_ai.usage.input_tokens"),
            Some(&Value::I64(7))
        );
        assert_eq!(attr(server, "gen_ai.usage.output_tokens"), None);
        assert_eq!(
            attr(server, "apiproxy.client_key.name"),
            Some(&Value::from("alice"))
        );
        assert_eq!(server.status, Status::Unset);
        for (a, (id, failed)) in spans[..2].iter().zip([(2u64, true), (3, false)]) {
            assert_eq!(a.span_kind, SpanKind::Client);
            assert_eq!(a.span_context.span_id(), SpanId::from(id));
            assert_eq!(a.span_context.trace_id(), TraceId::from(7u128));
            assert_eq!(a.parent_span_id, SpanId::from(1u64));
            assert_eq!(a.name, "chat m");
            assert_eq!(a.start_time, start + Duration::from_millis(id * 10));
            assert_eq!(attr(a, "error.type").is_some(), failed);
            assert_eq!(matches!(a.status, Status::Error { .. }), failed);
        }
    }

    #[test]
    fn a_root_span_without_a_parent_and_no_content_unless_captured() {
        let mut f = finished();
        f.trace.parent = None;
        f.status = 502;
        let spans = f.clone().into_spans(&scope());
        let server = spans.last().unwrap();
        assert_eq!(server.parent_span_id, SpanId::INVALID);
        assert!(!server.parent_span_is_remote);
        assert!(matches!(server.status, Status::Error { .. }));
        assert_eq!(attr(server, "error.type"), Some(&Value::from("502")));
        assert!(attr(server, "apiproxy.request.body").is_none());
        assert!(attr(server, "gen_ai.output.messages").is_none());
        f.input_content = Some("{\"a\":1}".into());
        f.output_content = Some("hi".into());
        let spans = f.into_spans(&scope());
        let server = spans.last().unwrap();
        assert!(attr(server, "apiproxy.request.body").is_some());
        let out = attr(server, "gen_ai.output.messages").unwrap().as_str();
        assert!(out.contains("\"content\":\"hi\""), "{out}");
    }
}
