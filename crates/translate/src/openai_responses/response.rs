//! Non-streaming responses: the Responses `response` object ↔ IR.

use std::borrow::Cow;

use serde_json::Value;

use super::usage::{usage_object, Counts};
use super::wire::{status_of, OutItem, Part, RespObj, UsageOut};
use super::{
    args_or_empty_object, err, now_secs, reasoning_text, take_str, type_of, unique_suffix,
};
use crate::{ChatResponse, ContentPart, FinishReason, TranslateError};

/// The finish reason of a finished response object.
pub(super) fn finish_of(resp: &Value, saw_tool_call: bool) -> FinishReason {
    let status = resp
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("completed");
    match status {
        "incomplete" => {
            match resp
                .get("incomplete_details")
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
            {
                Some("max_output_tokens") => FinishReason::Length,
                Some("content_filter") => FinishReason::ContentFilter,
                Some(other) => FinishReason::Other(other.to_owned()),
                None => FinishReason::Other("incomplete".to_owned()),
            }
        }
        "completed" => {
            let calls_in_output = resp
                .get("output")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|i| type_of(i) == Some("function_call")));
            if saw_tool_call || calls_in_output {
                FinishReason::ToolCalls
            } else {
                FinishReason::Stop
            }
        }
        other => FinishReason::Other(other.to_owned()),
    }
}

pub(super) fn error_message(e: &Value) -> Option<String> {
    match e {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| Some(e.to_string())),
        _ => None,
    }
}

/// Decodes an upstream's non-streaming Responses body.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| err(format!("invalid JSON in the Responses body: {e}")))?;
    if !v.is_object() {
        return Err(err("Responses body: expected a JSON object".into()));
    }
    if let Some(msg) = v.get("error").and_then(error_message) {
        return Err(err(format!("upstream response failed: {msg}")));
    }
    if v.get("status").and_then(Value::as_str) == Some("failed") {
        return Err(err("upstream response failed".into()));
    }
    let finish_reason = Some(finish_of(&v, false));
    let usage = usage_object(&v).map(|u| Counts::read(u).to_ir());
    let mut resp = ChatResponse {
        id: take_str(&mut v, "id").unwrap_or_else(|| format!("resp_{}", unique_suffix())),
        model: take_str(&mut v, "model").unwrap_or_default(),
        created: v.get("created_at").and_then(Value::as_u64).unwrap_or(0),
        content: Vec::new(),
        finish_reason,
        usage,
    };
    let output = match v.get_mut("output").map(Value::take) {
        Some(Value::Array(o)) => o,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(err("output: expected an array".into())),
    };
    for mut item in output {
        let Some(m) = item.as_object_mut() else {
            continue;
        };
        match m.get("type").and_then(Value::as_str) {
            Some("reasoning") => {
                let text = reasoning_text(m);
                let signature = match m.remove("encrypted_content") {
                    Some(Value::String(s)) => Some(s),
                    _ => None,
                };
                if !text.is_empty() || signature.is_some() {
                    resp.content.push(ContentPart::Thinking { text, signature });
                }
            }
            Some("message") => {
                if let Some(Value::Array(parts)) = m.get_mut("content") {
                    for p in parts.iter_mut() {
                        let text = match type_of(p) {
                            Some("output_text") | Some("text") => take_str(p, "text"),
                            Some("refusal") => take_str(p, "refusal"),
                            _ => None,
                        };
                        if let Some(text) = text {
                            resp.content.push(ContentPart::Text { text });
                        }
                    }
                }
            }
            Some("function_call") => {
                let name = match m.remove("name") {
                    Some(Value::String(s)) => s,
                    _ => String::new(),
                };
                let arguments = match m.remove("arguments") {
                    Some(Value::String(s)) => s,
                    Some(v @ Value::Object(_)) => v.to_string(),
                    _ => String::new(),
                };
                let id = match (m.remove("call_id"), m.remove("id")) {
                    (Some(Value::String(s)), _) | (_, Some(Value::String(s))) => s,
                    _ => format!("call_{}", unique_suffix()),
                };
                resp.content.push(ContentPart::ToolCall {
                    id,
                    name,
                    arguments,
                });
            }
            // Built-in tool calls (web_search_call, ...) have no neutral form.
            _ => {}
        }
    }
    Ok(resp)
}
/// Encodes a non-streaming response for a Responses client.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let suffix = unique_suffix();
    let id = if resp.id.is_empty() {
        Cow::Owned(format!("resp_{suffix}"))
    } else {
        Cow::Borrowed(resp.id.as_str())
    };
    // Group the content into output items: consecutive texts form one
    // message.
    enum G<'a> {
        Msg(Vec<&'a str>),
        Reason(&'a str, Option<&'a str>),
        Call(&'a str, &'a str, &'a str),
    }
    let mut groups: Vec<G<'_>> = Vec::new();
    for part in &resp.content {
        match part {
            ContentPart::Text { text } => match groups.last_mut() {
                Some(G::Msg(texts)) => texts.push(text),
                _ => groups.push(G::Msg(vec![text])),
            },
            ContentPart::Thinking { text, signature } => {
                groups.push(G::Reason(text, signature.as_deref()))
            }
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            } => groups.push(G::Call(id, name, arguments)),
            _ => {}
        }
    }
    let ids: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let prefix = match g {
                G::Msg(_) => "msg",
                G::Reason(..) => "rs",
                G::Call(..) => "fc",
            };
            format!("{prefix}_{suffix}{i}")
        })
        .collect();
    let output = groups
        .iter()
        .zip(&ids)
        .map(|(g, id)| match g {
            G::Msg(texts) => OutItem::Message {
                id,
                status: "completed",
                role: "assistant",
                content: texts.iter().map(|t| Part::output_text(t)).collect(),
            },
            G::Reason(text, sig) => OutItem::Reasoning {
                id,
                summary: if text.is_empty() {
                    Vec::new()
                } else {
                    vec![Part::summary(text)]
                },
                encrypted_content: *sig,
            },
            G::Call(call_id, name, arguments) => OutItem::FunctionCall {
                id,
                call_id,
                name,
                arguments: args_or_empty_object(arguments),
                status: "completed",
            },
        })
        .collect();
    let (status, incomplete_details) = status_of(resp.finish_reason.as_ref());
    let obj = RespObj {
        id: &id,
        object: "response",
        created_at: if resp.created == 0 {
            now_secs()
        } else {
            resp.created
        },
        status,
        error: None,
        incomplete_details,
        model: &resp.model,
        output,
        parallel_tool_calls: true,
        tool_choice: "auto",
        tools: &[],
        usage: resp.usage.as_ref().map(UsageOut::from),
    };
    serde_json::to_vec(&obj).unwrap_or_default()
}
