//! Gemini `generateContent` / `streamGenerateContent?alt=sse` wire format.
//!
//! Client side: what the Google GenAI SDKs send (camelCase or snake_case
//! field names, both accepted) and expect back. Provider side: what the
//! Gemini API accepts (camelCase) and returns. The model lives in the URL
//! path, never in the body.
//!
//! Conventions worth knowing:
//! - Usage: the IR's `output_tokens` includes reasoning; Gemini's
//!   `candidatesTokenCount` excludes `thoughtsTokenCount`.
//! - Tool call ids: Gemini calls often carry none. Ids are synthesized so a
//!   `functionCall` and its later `functionResponse` get the same id (the k-th
//!   response named X pairs with the k-th call named X).
//! - Thought signatures: a `thought` part's own signature stays on its
//!   [`ContentPart::Thinking`](crate::ContentPart::Thinking); a signature
//!   on any other part becomes an empty `Thinking { text: "", signature }`
//!   placed right before that part, and the encoders put it back on the part
//!   that follows.
//!
//! - [`request_decode`]: client body → IR; [`request_encode`]: IR → upstream body.
//! - [`parts`]: Gemini parts ↔ IR content, and the ids of calls that carry none.
//! - [`schema`]: Gemini's OpenAPI-subset schemas ↔ JSON Schema.
//! - [`response`]: upstream body → IR, IR → client body.
//! - [`stream_decode`]: upstream SSE → neutral events.
//! - [`stream_encode`]: neutral events → client SSE.
//! - [`usage`]: where usage is reported and how it adds up.

mod parts;
pub(crate) mod request_decode;
mod request_encode;
mod response;
mod schema;
mod stream_decode;
mod stream_encode;
pub(crate) mod usage;

pub use request_decode::{decode_request, decode_request_limited};
pub use request_encode::{encode_request, encode_request_limited};
pub use response::{decode_response, encode_response};
pub use schema::MAX_SCHEMA_REWRITE_BYTES;
pub use stream_decode::StreamDecoder;
pub use stream_encode::StreamEncoder;

/// How this format frames its stream, for same-format relaying.
pub(crate) const SSE_RULES: crate::sse::SseRules = crate::sse::SseRules {
    event_names: false,
    done_marker: false,
    model_path: &["modelVersion"],
    body_model_path: &["modelVersion"],
    // Google's SDKs parse every line as JSON or as `data: <json>` (the
    // Python SDK raises on a comment line, the JS one stops matching), so
    // Gemini clients are kept alive with a chunk that says nothing: one
    // empty text part, which every client appends as "".
    keepalive: b"data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"\"}]},\"index\":0}]}\n\n",
};

use serde_json::{json, Map, Value};

use crate::common::type_name;
use crate::common::unique_token;
use crate::{FinishReason, TranslateError, Usage};

fn err(msg: impl Into<String>) -> TranslateError {
    TranslateError::new(msg)
}

/// Removes `camel` and `snake` from `obj`; the first non-null one wins.
fn take_any(obj: &mut Map<String, Value>, camel: &str, snake: &str) -> Option<Value> {
    let a = obj.remove(camel).filter(|v| !v.is_null());
    let b = obj.remove(snake).filter(|v| !v.is_null());
    a.or(b)
}

fn get_any<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel)
        .filter(|v| !v.is_null())
        .or_else(|| obj.get(snake).filter(|v| !v.is_null()))
}

/// A JSON path built on the stack, formatted only when an error names it.
#[derive(Clone, Copy)]
enum Path<'a> {
    Name(&'a str),
    Index(&'a Path<'a>, usize),
    Field(&'a Path<'a>, &'a str),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Name(s) => f.write_str(s),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
            Path::Field(p, n) => write!(f, "{p}.{n}"),
        }
    }
}

fn want_string(v: Value, path: impl std::fmt::Display) -> Result<String, TranslateError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(err(format!(
            "{path}: expected a string, got {}",
            type_name(&other)
        ))),
    }
}

fn want_object(
    v: Value,
    path: impl std::fmt::Display,
) -> Result<Map<String, Value>, TranslateError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(err(format!(
            "{path}: expected an object, got {}",
            type_name(&other)
        ))),
    }
}

fn encode_usage(u: &Usage) -> Value {
    let thoughts = u.reasoning_tokens.unwrap_or(0).min(u.output_tokens);
    let mut m = Map::new();
    m.insert("promptTokenCount".into(), json!(u.input_tokens));
    m.insert(
        "candidatesTokenCount".into(),
        json!(u.output_tokens - thoughts),
    );
    m.insert(
        "totalTokenCount".into(),
        json!(u.input_tokens.saturating_add(u.output_tokens)),
    );
    if let Some(c) = u.cached_input_tokens {
        m.insert("cachedContentTokenCount".into(), json!(c));
    }
    if u.reasoning_tokens.is_some() {
        m.insert("thoughtsTokenCount".into(), json!(thoughts));
    }
    Value::Object(m)
}

fn decode_finish(reason: &str, saw_tool: bool) -> FinishReason {
    match reason {
        "STOP" if saw_tool => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_owned()),
    }
}

pub(crate) fn encode_finish(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::Other(s) => match s.as_str() {
            "RECITATION"
            | "LANGUAGE"
            | "OTHER"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "MALFORMED_FUNCTION_CALL"
            | "IMAGE_SAFETY"
            | "UNEXPECTED_TOOL_CALL"
            | "TOO_MANY_TOOL_CALLS" => s,
            _ => "OTHER",
        },
    }
}
