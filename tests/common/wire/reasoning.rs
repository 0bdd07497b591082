//! Reasoning on both sides: how each client format asks for it and replays
//! a previous turn (thinking and its signature included) as its SDK does,
//! and mock providers that refuse, as the real APIs do, a thinking
//! signature they did not issue, reasoning fields they do not know, and a
//! request that lost the reasoning setting.

use serde_json::{json, Value};

use super::*;
use crate::common::{Recorded, Reply};

/// The signature the Anthropic mock issues (Anthropic's look: base64 of a
/// protobuf starting 0x12).
pub const ANTHROPIC_SIGNATURE: &str = "EqQBCkYIARgCKkAntMockSignature0001";
/// What the Anthropic mock thinks aloud.
pub const THOUGHT: &str = "The user wants Paris weather; call the tool.";
/// Gemini's own signatures (base64 of a protobuf starting 0x0a).
pub const GEMINI_SIGNATURE: &str = "CiQBGemMockSignature0001";
/// The signature Google documents for history from another model.
pub const GEMINI_SKIP: &str = "skip_thought_signature_validator";

/// The client's turn-1 request: the tool scenario with reasoning asked for
/// in the client's own form.
pub fn reasoning_request(wire: Wire, model: &str, key: &str) -> ClientRequest {
    let mut r = client_request(wire, model, Scenario::Tool, false, key);
    add_reasoning(wire, &mut r.body);
    r
}

fn add_reasoning(wire: Wire, b: &mut Value) {
    match wire {
        Wire::Chat => b["reasoning_effort"] = json!("low"),
        Wire::Responses => b["reasoning"] = json!({"effort": "low", "summary": "auto"}),
        Wire::Anthropic => {
            b["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
            b["max_tokens"] = json!(4096);
        }
        Wire::Gemini => {
            b["generationConfig"] =
                json!({"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}})
        }
    }
}

/// Turn 2: turn 1's request with the client's answer (`answer`, the
/// client's JSON body) appended as its SDK replays it, and the tool's
/// result; routed to `model`, streaming or not.
pub fn continue_request(
    wire: Wire,
    first: &ClientRequest,
    answer: &Value,
    model: &str,
    stream: bool,
) -> ClientRequest {
    let mut body = first.body.clone();
    let mut path = first.path.clone();
    match wire {
        Wire::Chat => {
            let m = &answer["choices"][0]["message"];
            let msg = json!({"role": "assistant", "content": m["content"], "tool_calls": m["tool_calls"]});
            let id = msg["tool_calls"][0]["id"].clone();
            push(&mut body["messages"], msg);
            push(
                &mut body["messages"],
                json!({"role": "tool", "tool_call_id": id, "content": TOOL_OUTPUT}),
            );
        }
        Wire::Responses => {
            let mut call_id = Value::Null;
            for item in answer["output"].as_array().into_iter().flatten() {
                if item["type"] == "function_call" {
                    call_id = item["call_id"].clone();
                }
                push(&mut body["input"], item.clone());
            }
            push(
                &mut body["input"],
                json!({"type": "function_call_output", "call_id": call_id, "output": TOOL_OUTPUT}),
            );
        }
        Wire::Anthropic => {
            let content = answer["content"].clone();
            let id = content
                .as_array()
                .and_then(|c| c.iter().find(|b| b["type"] == "tool_use"))
                .map(|b| b["id"].clone())
                .unwrap_or_default();
            push(
                &mut body["messages"],
                json!({"role": "assistant", "content": content}),
            );
            push(
                &mut body["messages"],
                json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": TOOL_OUTPUT}]}),
            );
        }
        Wire::Gemini => {
            push(
                &mut body["contents"],
                answer["candidates"][0]["content"].clone(),
            );
            push(
                &mut body["contents"],
                json!({"role": "user", "parts": [{"functionResponse": {"name": TOOL_NAME,
                    "response": {"result": TOOL_OUTPUT}}}]}),
            );
            let m = path
                .split("/models/")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .unwrap_or_default()
                .to_owned();
            path = path.replace(&m, model);
            if stream {
                path = path.replace(":generateContent", ":streamGenerateContent?alt=sse");
            }
        }
    }
    if wire != Wire::Gemini {
        body["model"] = json!(model);
        if stream {
            body["stream"] = json!(true);
        }
    }
    ClientRequest {
        path,
        headers: first.headers.clone(),
        body,
    }
}

fn push(arr: &mut Value, v: Value) {
    if let Some(a) = arr.as_array_mut() {
        a.push(v);
    }
}

fn refuse(kind: Wire, message: &str) -> Reply {
    Reply::json(400, provider_error(kind, 400, message).to_string())
}

/// What the real API of `kind` refuses in a request carrying history from
/// another provider; `None` when it is acceptable.
pub fn reasoning_refusal(kind: Wire, v: &Value) -> Option<String> {
    match kind {
        Wire::Anthropic => {
            let thinking = v["thinking"]["type"] == "enabled";
            let first_turn = !v.to_string().contains(TOOL_OUTPUT);
            // The test asks for reasoning on every turn: the first must
            // reach Anthropic as a thinking budget.
            if first_turn && (!thinking || v["thinking"]["budget_tokens"].as_u64()? < 1024) {
                return Some(format!(
                    "thinking: expected enabled with budget_tokens >= 1024, got {}",
                    v["thinking"]
                ));
            }
            // With thinking on, an assistant tool-use turn being answered
            // must begin with its thinking block.
            let last_assistant = v["messages"]
                .as_array()?
                .iter()
                .rev()
                .find(|m| m["role"] == "assistant");
            if let (true, Some(m)) = (thinking, last_assistant) {
                let blocks = m["content"].as_array().cloned().unwrap_or_default();
                let uses_tool = blocks.iter().any(|b| b["type"] == "tool_use");
                let first = blocks
                    .first()
                    .map(|b| b["type"].clone())
                    .unwrap_or_default();
                if uses_tool && first != "thinking" && first != "redacted_thinking" {
                    return Some("messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `text`. When `thinking` is enabled, a final `assistant` message must start with a thinking block.".into());
                }
            }
            for m in v["messages"].as_array()? {
                for b in m["content"].as_array().into_iter().flatten() {
                    let t = b["type"].as_str().unwrap_or_default();
                    if ![
                        "text",
                        "image",
                        "tool_use",
                        "tool_result",
                        "thinking",
                        "redacted_thinking",
                    ]
                    .contains(&t)
                    {
                        return Some(format!("messages: Input tag '{t}' found using 'type' does not match any of the expected tags"));
                    }
                    if t == "thinking" && b["signature"] != ANTHROPIC_SIGNATURE {
                        return Some(format!(
                            "messages.1.content.0: Invalid `signature` in `thinking` block: {}",
                            b["signature"]
                        ));
                    }
                }
            }
            None
        }
        Wire::Gemini => {
            let tc = &v["generationConfig"]["thinkingConfig"];
            if tc.get("thinkingBudget").is_none() && tc.get("thinkingLevel").is_none() {
                return Some("generationConfig.thinkingConfig: missing".into());
            }
            for c in v["contents"].as_array()? {
                for p in c["parts"].as_array().into_iter().flatten() {
                    if let Some(s) = p.get("thoughtSignature") {
                        if s != GEMINI_SIGNATURE && s != GEMINI_SKIP {
                            return Some(format!("Corrupted thought signature: {s}"));
                        }
                    }
                    // Gemini 3 requires the first call of a model turn signed.
                    if c["role"] == "model"
                        && p.get("functionCall").is_some()
                        && p.get("thoughtSignature").is_none()
                    {
                        return Some(
                            "Function call is missing a thought_signature in functionCall parts."
                                .into(),
                        );
                    }
                }
            }
            None
        }
        Wire::Chat => {
            if v.get("reasoning_effort").is_none() {
                return Some("reasoning_effort: missing".into());
            }
            for m in v["messages"].as_array()? {
                for k in m.as_object()?.keys() {
                    if ![
                        "role",
                        "content",
                        "tool_calls",
                        "tool_call_id",
                        "name",
                        "refusal",
                    ]
                    .contains(&k.as_str())
                    {
                        return Some(format!("Unrecognized message field: '{k}'"));
                    }
                }
            }
            None
        }
        Wire::Responses => {
            if v["reasoning"].get("effort").is_none() {
                return Some("reasoning.effort: missing".into());
            }
            for item in v["input"].as_array().into_iter().flatten() {
                if item["type"] == "reasoning" {
                    return Some(format!(
                        "The encrypted content for item {} could not be verified.",
                        item["id"]
                    ));
                }
            }
            None
        }
    }
}

/// Anthropic's answer: a signed thinking block, a bit of text, a tool call.
fn anthropic_thinking_answer(model: &str) -> Value {
    json!({"id": "msg_01Think", "type": "message", "role": "assistant",
        "model": served_model(Wire::Anthropic, model),
        "content": [
            {"type": "thinking", "thinking": THOUGHT, "signature": ANTHROPIC_SIGNATURE},
            {"type": "text", "text": PREFACE},
            {"type": "tool_use", "id": "toolu_01Think", "name": TOOL_NAME, "input": tool_args()}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 40, "output_tokens": 30}})
}

/// A mock provider of `kind` for reasoning conversations: refuses what
/// [`reasoning_refusal`] finds; the Anthropic mock answers the first turn
/// with signed thinking and a tool call; every other turn gets the text
/// answer.
pub fn reasoning_reply(kind: Wire, rec: &Recorded) -> Reply {
    if let Some(missing) = no_responses_api(kind, rec) {
        return missing;
    }
    let v: Value = serde_json::from_slice(&rec.body).unwrap_or_default();
    if let Some(why) = reasoning_refusal(kind, &v) {
        return refuse(kind, &why);
    }
    let model = requested_model(kind, rec);
    let body = String::from_utf8_lossy(&rec.body);
    if kind == Wire::Anthropic && !body.contains(TOOL_OUTPUT) {
        return Reply::json(200, anthropic_thinking_answer(&model).to_string());
    }
    if !requested_stream(kind, rec) {
        return Reply::json(200, provider_json(kind, &model, Shape::Text).to_string());
    }
    Reply::sse(&provider_sse(kind, &model, Shape::Text))
}
