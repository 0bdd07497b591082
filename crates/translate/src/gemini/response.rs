//! Non-streaming responses: a `GenerateContentResponse` ↔ IR.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::parts::{decode_parts, encode_parts, IdMode};
use super::usage::{usage_object, Counts};
use super::{
    decode_finish, encode_finish, encode_usage, err, get_any, take_any, unique_token, want_object,
    Path,
};
use crate::{ChatResponse, ContentPart, FinishReason, TranslateError};

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The message of a Google error object (`{"code","message","status"}`).
pub(super) fn error_message(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("message").and_then(Value::as_str) {
            Some(m) => m.to_owned(),
            None => e.to_string(),
        },
        other => other.to_string(),
    }
}

pub(super) fn prompt_block_reason(m: &Map<String, Value>) -> Option<&str> {
    get_any(m, "promptFeedback", "prompt_feedback")
        .and_then(|pf| pf.as_object())
        .and_then(|pf| get_any(pf, "blockReason", "block_reason"))
        .and_then(Value::as_str)
}

pub(super) fn first_candidate(m: &mut Map<String, Value>) -> Option<Map<String, Value>> {
    match m.get_mut("candidates") {
        Some(Value::Array(c)) if !c.is_empty() => match c.swap_remove(0) {
            Value::Object(o) => Some(o),
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn take_string(m: &mut Map<String, Value>, camel: &str, snake: &str) -> Option<String> {
    match take_any(m, camel, snake) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

pub fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| err(format!("gemini response: invalid JSON: {e}")))?;
    let usage = usage_object(&v).map(|u| Counts::read(u).to_ir());
    let mut m = want_object(v, "gemini response")?;
    if let Some(e) = m.get("error") {
        return Err(err(error_message(e)));
    }
    let id = take_string(&mut m, "responseId", "response_id")
        .unwrap_or_else(|| format!("resp_{}", unique_token()));
    let model = take_string(&mut m, "modelVersion", "model_version").unwrap_or_default();
    let mut resp = ChatResponse {
        id,
        model,
        created: now_secs(),
        content: Vec::new(),
        finish_reason: None,
        usage,
    };
    match first_candidate(&mut m) {
        Some(mut cand) => {
            if let Some(Value::Object(mut content)) = cand.remove("content") {
                if let Some(parts) = content.remove("parts").filter(|p| !p.is_null()) {
                    let token = unique_token();
                    let mut next = 0;
                    resp.content = decode_parts(
                        parts,
                        Path::Name("candidates[0].content.parts"),
                        &mut IdMode::Answer {
                            token: &token,
                            next: &mut next,
                        },
                    )?;
                }
            }
            let saw_tool = resp
                .content
                .iter()
                .any(|p| matches!(p, ContentPart::ToolCall { .. }));
            resp.finish_reason = get_any(&cand, "finishReason", "finish_reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty() && *r != "FINISH_REASON_UNSPECIFIED")
                .map(|r| decode_finish(r, saw_tool));
        }
        None => {
            if prompt_block_reason(&m).is_some() {
                resp.finish_reason = Some(FinishReason::ContentFilter);
            }
        }
    }
    Ok(resp)
}

pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let mut parts = Vec::with_capacity(resp.content.len());
    encode_parts(&resp.content, &HashMap::new(), false, &mut parts);
    let mut cand = Map::new();
    if !parts.is_empty() || resp.finish_reason != Some(FinishReason::ContentFilter) {
        cand.insert("content".into(), json!({"parts": parts, "role": "model"}));
    }
    if let Some(r) = &resp.finish_reason {
        cand.insert("finishReason".into(), json!(encode_finish(r)));
    }
    cand.insert("index".into(), json!(0));
    let mut body = Map::new();
    body.insert("candidates".into(), json!([cand]));
    if let Some(u) = &resp.usage {
        body.insert("usageMetadata".into(), encode_usage(u));
    }
    body.insert("modelVersion".into(), json!(resp.model));
    body.insert("responseId".into(), json!(resp.id));
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}
