//! OpenAI Responses wire format (`POST /v1/responses`).
//!
//! Client side: what `client.responses.create` (OpenAI SDKs, Codex CLI)
//! sends and expects. Provider side: an upstream configured with
//! `wire_api: responses`. A Responses client in front of a Responses upstream
//! is passed through natively; this module only runs when translating.
//!
//! - [`request_decode`]: client body → IR; [`request_encode`]: IR → upstream body.
//! - [`response`]: upstream body → IR, IR → client body.
//! - [`stream_decode`]: upstream SSE → neutral events.
//! - [`stream_encode`]: neutral events → client SSE.
//! - [`usage`]: where usage is reported and how it adds up.
//! - [`wire`]: the response object and its output items, as both the body
//!   and the stream write them.

pub(crate) mod request_decode;
mod request_encode;
mod response;
mod stream_decode;
mod stream_encode;
pub(crate) mod usage;
mod wire;

pub use request_decode::decode_request;
pub use request_encode::encode_request;
pub use response::{decode_response, encode_response};
pub use stream_decode::StreamDecoder;
pub use stream_encode::StreamEncoder;
pub(crate) use wire::finish_name;

/// How this format frames its stream, for same-format relaying.
pub(crate) const SSE_RULES: crate::sse::SseRules = crate::sse::SseRules {
    event_names: true,
    done_marker: false,
    model_path: &["response", "model"],
    body_model_path: &["model"],
    keepalive: crate::sse::COMMENT_KEEPALIVE,
};

use serde_json::{Map, Value};

use crate::common::now_secs;
use crate::common::unique_token as unique_suffix;
use crate::TranslateError;

fn err(msg: String) -> TranslateError {
    TranslateError::new(msg)
}

fn type_of(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

/// Takes a string field out of a JSON object without copying it.
fn take_str(v: &mut Value, key: &str) -> Option<String> {
    match v.get_mut(key)?.take() {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The text of a reasoning item: its summary parts (joined by a blank line),
/// else its raw `reasoning_text` content.
fn reasoning_text(m: &mut Map<String, Value>) -> String {
    let mut text = String::new();
    for key in ["summary", "content"] {
        if let Some(Value::Array(parts)) = m.get_mut(key) {
            for p in parts.iter_mut() {
                if let Some(t) = take_str(p, "text") {
                    if !text.is_empty() {
                        text.push_str("\n\n");
                    }
                    text.push_str(&t);
                }
            }
        }
        if !text.is_empty() {
            break;
        }
    }
    text
}

/// A call's arguments as clients parse them: JSON text, never empty (a call
/// whose upstream sent no arguments takes none: `{}`).
fn args_or_empty_object(arguments: &str) -> &str {
    if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    }
}
