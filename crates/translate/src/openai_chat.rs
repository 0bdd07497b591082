//! OpenAI Chat Completions wire format (`/v1/chat/completions`), both as the
//! client's format and as the provider's (OpenAI and the OpenAI-compatible
//! servers: vLLM, DeepSeek, Groq, OpenRouter, Ollama, ...).
//!
//! Mapping notes (kept in sync with `docs/translation.md`):
//! - system/developer messages are hoisted into `ChatRequest::system`; on the
//!   way out they become one `system` message (parts joined with a blank line).
//! - `tool` / legacy `function` messages become `User` messages of
//!   `ToolResult` parts (consecutive ones merged); on the way out every
//!   `ToolResult` is one `tool` message, placed before the rest of its turn.
//! - `reasoning_content` / `reasoning` (DeepSeek, vLLM, OpenRouter) is
//!   `Thinking`; OpenAI does not take it back, so the request encoder drops it.
//! - A stream's `Finish` is held back until the usage-only chunk (or
//!   `[DONE]`) that follows it, so decoders downstream see `Usage` first.
//!
//! - [`request_decode`]: client body → IR; [`request_encode`]: IR → upstream body.
//! - [`content`]: content parts and image URLs, for request and response decoding.
//! - [`response`]: upstream body → IR, IR → client body.
//! - [`stream_decode`]: upstream SSE → neutral events.
//! - [`stream_encode`]: neutral events → client SSE.
//! - [`usage`]: where usage is reported and how it adds up.
//! - [`wire`]: JSON shapes more than one of those share (usage, tool calls).

mod content;
pub(crate) mod request_decode;
mod request_encode;
mod response;
mod stream_decode;
mod stream_encode;
pub(crate) mod usage;
mod wire;

pub use request_decode::decode_request;
pub use request_encode::{effort_for_budget, encode_request};
pub use response::{decode_response, encode_response};
pub use stream_decode::StreamDecoder;
pub use stream_encode::StreamEncoder;

/// How this format frames its stream, for same-format relaying.
pub(crate) const SSE_RULES: crate::sse::SseRules = crate::sse::SseRules {
    event_names: true,
    done_marker: true,
    model_path: &["model"],
    body_model_path: &["model"],
    keepalive: crate::sse::COMMENT_KEEPALIVE,
};

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::common::now_secs;
use crate::common::type_name;
use crate::{FinishReason, TranslateError};

type Obj = Map<String, Value>;

/// `<path>: expected <want>, got <type>`.
fn expected(path: impl std::fmt::Display, want: &str, got: &Value) -> TranslateError {
    TranslateError::new(format!("{path}: expected {want}, got {}", type_name(got)))
}

/// Removes `key` from `obj`; `null` counts as absent.
fn take(obj: &mut Obj, key: &str) -> Option<Value> {
    match obj.remove(key) {
        Some(Value::Null) | None => None,
        v => v,
    }
}

fn opt_string(obj: &mut Obj, key: &str, prefix: &str) -> Result<Option<String>, TranslateError> {
    match take(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(expected(format_args!("{prefix}{key}"), "a string", &v)),
    }
}

fn req_string(obj: &mut Obj, key: &str, prefix: &str) -> Result<String, TranslateError> {
    opt_string(obj, key, prefix)?
        .ok_or_else(|| TranslateError::new(format!("{prefix}{key}: required (a string)")))
}

/// A fresh id such as `chatcmpl-<24 hex digits>` (no rand crate: time and a
/// process-wide counter, mixed).
fn synth_id(prefix: &str) -> String {
    format!("{prefix}{}", crate::common::unique_token())
}

fn finish_from_str(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// The OpenAI spelling of a finish reason. A `Stop` of an answer that called
/// tools is `tool_calls` (Gemini says STOP there; agents key on tool_calls);
/// an unknown provider reason is `stop` (OpenAI clients know only five).
pub(crate) fn finish_to_str(r: Option<&FinishReason>, called_tools: bool) -> &str {
    match r {
        None | Some(FinishReason::Stop) if called_tools => "tool_calls",
        None | Some(FinishReason::Stop) => "stop",
        Some(FinishReason::Length) => "length",
        Some(FinishReason::ToolCalls) => "tool_calls",
        Some(FinishReason::ContentFilter) => "content_filter",
        Some(FinishReason::Other(s)) => match s.as_str() {
            "stop" | "length" | "tool_calls" | "content_filter" | "function_call" => s.as_str(),
            _ if called_tools => "tool_calls",
            _ => "stop",
        },
    }
}

/// Joins text parts; borrows when there is only one.
fn join_texts<'a>(parts: impl Iterator<Item = &'a str>, sep: &str) -> Option<Cow<'a, str>> {
    let mut out: Option<Cow<'a, str>> = None;
    for t in parts {
        out = Some(match out {
            None => Cow::Borrowed(t),
            Some(prev) => {
                let mut s = prev.into_owned();
                s.push_str(sep);
                s.push_str(t);
                Cow::Owned(s)
            }
        });
    }
    out
}

/// The message of an `{"error": ...}` body or stream event.
fn error_message(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => e.to_string(),
        },
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesized_ids_differ() {
        let a = synth_id("chatcmpl-");
        let b = synth_id("chatcmpl-");
        assert_ne!(a, b);
        assert!(a.starts_with("chatcmpl-") && a.len() == "chatcmpl-".len() + 24);
    }
}
