//! Non-streaming responses: Anthropic's message body ↔ IR.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

use super::usage::{usage_object, Counts};
use super::wire::{WireBlock, WireUsage};
use super::{
    finish_from_stop_reason, now_secs, stop_reason_from_finish, synth_id, tool_id, usage_from_ir,
    STRUCTURED_TOOL,
};
use crate::{ChatResponse, ContentPart, FinishReason, TranslateError};

fn take_string(obj: &mut Map<String, Value>, key: &str) -> Option<String> {
    match obj.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// The message of an Anthropic `{"type":"error","error":{...}}` body.
pub(super) fn error_message(v: &Value) -> String {
    let e = v.get("error");
    let msg = e
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = e
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("error");
    if msg.is_empty() {
        kind.to_owned()
    } else {
        msg.to_owned()
    }
}

/// Decodes a response body from Anthropic's `POST /v1/messages`.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::new(format!("anthropic response: invalid JSON: {e}")))?;
    let usage = usage_object(&v).map(|u| Counts::read(u).to_ir());
    let Value::Object(mut obj) = v else {
        return Err(TranslateError::new(
            "anthropic response: expected a JSON object",
        ));
    };
    if obj.get("type").and_then(Value::as_str) == Some("error") {
        return Err(TranslateError::new(format!(
            "anthropic error: {}",
            error_message(&Value::Object(obj))
        )));
    }
    let mut resp = ChatResponse {
        id: take_string(&mut obj, "id").unwrap_or_else(|| synth_id("msg_")),
        model: take_string(&mut obj, "model").unwrap_or_default(),
        created: now_secs(),
        ..ChatResponse::default()
    };
    match obj.remove("content") {
        Some(Value::Array(blocks)) => {
            resp.content.reserve(blocks.len());
            for b in blocks {
                if let Value::Object(b) = b {
                    if let Some(part) = decode_block(b) {
                        resp.content.push(part);
                    }
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(TranslateError::new(
                "anthropic response: content: expected an array",
            ))
        }
    }
    resp.finish_reason = obj
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_from_stop_reason);
    // Stopped to "call" only the structured-output tool: a finished answer.
    if resp.finish_reason == Some(FinishReason::ToolCalls)
        && !resp
            .content
            .iter()
            .any(|p| matches!(p, ContentPart::ToolCall { .. }))
    {
        resp.finish_reason = Some(FinishReason::Stop);
    }
    resp.usage = usage;
    Ok(resp)
}

/// One response content block; server-tool blocks (web search results and
/// the like) have no IR shape and are skipped.
fn decode_block(mut b: Map<String, Value>) -> Option<ContentPart> {
    let kind = take_string(&mut b, "type")?;
    Some(match kind.as_str() {
        "text" => ContentPart::Text {
            text: take_string(&mut b, "text")?,
        },
        // The forced tool standing in for structured output: its input is
        // the answer.
        "tool_use" if b.get("name").and_then(Value::as_str) == Some(STRUCTURED_TOOL) => {
            ContentPart::Text {
                text: match b.get("input") {
                    Some(v @ Value::Object(_)) => v.to_string(),
                    _ => "{}".to_owned(),
                },
            }
        }
        "tool_use" => ContentPart::ToolCall {
            id: take_string(&mut b, "id").unwrap_or_default(),
            name: take_string(&mut b, "name").unwrap_or_default(),
            arguments: match b.get("input") {
                Some(v @ Value::Object(_)) => v.to_string(),
                _ => "{}".to_owned(),
            },
        },
        "thinking" => ContentPart::Thinking {
            text: take_string(&mut b, "thinking").unwrap_or_default(),
            signature: take_string(&mut b, "signature").filter(|s| !s.is_empty()),
        },
        "redacted_thinking" => ContentPart::RedactedThinking {
            data: take_string(&mut b, "data")?,
        },
        _ => return None,
    })
}

#[derive(Serialize)]
struct WireResponse<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<WireBlock<'a>>,
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
    usage: WireUsage,
}

/// The `input` object of a tool call; arguments that are not a JSON object
/// (a provider's malformed output) are kept under `_raw` rather than lost.
pub(super) fn input_object(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => serde_json::json!({ "_raw": arguments }),
    }
}

/// Encodes an IR response as Anthropic's message body for a client.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let mut has_tool_calls = false;
    let content = resp
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text { text } if text.is_empty() => None,
            ContentPart::Text { text } => Some(WireBlock::Text { text }),
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            } => {
                has_tool_calls = true;
                Some(WireBlock::ToolUse {
                    id: if id.is_empty() {
                        Cow::Owned(synth_id("toolu_"))
                    } else {
                        tool_id(id)
                    },
                    name,
                    input: input_object(arguments),
                })
            }
            ContentPart::Thinking { text, signature } => Some(WireBlock::Thinking {
                thinking: text,
                signature: signature.as_deref().unwrap_or(""),
            }),
            ContentPart::RedactedThinking { data } => Some(WireBlock::RedactedThinking { data }),
            // Images and tool results do not appear in assistant answers.
            ContentPart::Image { .. } | ContentPart::ToolResult { .. } => None,
        })
        .collect();
    let stop_reason = match &resp.finish_reason {
        Some(r) => stop_reason_from_finish(r),
        None if has_tool_calls => "tool_use",
        None => "end_turn",
    };
    let body = WireResponse {
        id: if resp.id.is_empty() {
            Cow::Owned(synth_id("msg_"))
        } else {
            Cow::Borrowed(&resp.id)
        },
        kind: "message",
        role: "assistant",
        model: &resp.model,
        content,
        stop_reason,
        stop_sequence: None,
        usage: usage_from_ir(&resp.usage.unwrap_or_default()),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FinishReason;

    #[test]
    fn stop_reason_inferred_when_missing() {
        let resp = ChatResponse {
            content: vec![ContentPart::ToolCall {
                id: String::new(),
                name: "f".into(),
                arguments: "not json".into(),
            }],
            ..ChatResponse::default()
        };
        let v: Value = serde_json::from_slice(&encode_response(&resp)).unwrap();
        assert_eq!(v["stop_reason"], "tool_use");
        assert!(v["id"].as_str().unwrap().starts_with("msg_"));
        assert!(v["content"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_"));
        assert_eq!(v["content"][0]["input"]["_raw"], "not json");
        assert_eq!(v["stop_sequence"], Value::Null);
        let none = encode_response(&ChatResponse::default());
        let v: Value = serde_json::from_slice(&none).unwrap();
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["content"], serde_json::json!([]));
        assert_eq!(v["usage"]["input_tokens"], 0);
    }

    #[test]
    fn error_body_is_an_error() {
        let e = decode_response(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("Overloaded"), "{e}");
        assert!(decode_response(b"[1,2]").is_err());
        assert!(decode_response(b"{").is_err());
    }

    #[test]
    fn finish_reason_passes_through() {
        let r =
            decode_response(br#"{"id":"msg_1","content":[],"stop_reason":"pause_turn"}"#).unwrap();
        assert_eq!(
            r.finish_reason,
            Some(FinishReason::Other("pause_turn".into()))
        );
        assert_eq!(r.usage, None);
    }
}
