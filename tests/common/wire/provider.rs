//! Provider side: what a provider of each kind answers, written from the
//! providers' API references, and the mock that picks an answer from the
//! request it got.

use serde_json::{json, Value};

use super::*;
use crate::common::{Recorded, Reply};

/// Responses function_call item ids.
const FC_IDS: [&str; 2] = [
    "fc_67ca09c6bedc8190a7abfec07b1a1332",
    "fc_67ca09c6bedc8190a7abfec07b1a1333",
];

/// A non-streaming answer from a provider of `kind`.
pub fn provider_json(kind: Wire, model: &str, shape: Shape) -> Value {
    let (input, output) = shape.usage();
    let model = served_model(kind, model);
    let calls = shape.calls();
    match kind {
        Wire::Chat => {
            let mut message = json!({"role": "assistant", "content": shape.text(), "refusal": null, "annotations": []});
            if shape.has_calls() {
                message["tool_calls"] = calls
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        json!({"id": call_id(kind, i), "type": "function",
                            "function": {"name": TOOL_NAME, "arguments": a.to_string()}})
                    })
                    .collect();
            }
            json!({
                "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
                "object": "chat.completion",
                "created": 1741569952,
                "model": model,
                "choices": [{
                    "index": 0, "message": message, "logprobs": null,
                    "finish_reason": chat_finish(shape)
                }],
                "usage": {
                    "prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                        "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
                },
                "service_tier": "default",
                "system_fingerprint": "fp_06737a9306"
            })
        }
        Wire::Responses => {
            let mut items = vec![responses_message(shape.text())];
            for (i, a) in calls.iter().enumerate() {
                items.push(responses_call(i, &a.to_string(), "completed"));
            }
            let status = if shape == Shape::Length {
                "incomplete"
            } else {
                "completed"
            };
            responses_object(&model, status, items, Some((input, output)))
        }
        Wire::Anthropic => {
            let mut content = vec![json!({"type": "text", "text": shape.text()})];
            for (i, a) in calls.iter().enumerate() {
                content.push(json!({"type": "tool_use", "id": call_id(kind, i), "name": TOOL_NAME, "input": a}));
            }
            json!({
                "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": anthropic_stop(shape),
                "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": output,
                    "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                    "service_tier": "standard"}
            })
        }
        Wire::Gemini => {
            let mut parts = vec![json!({"text": shape.text()})];
            for a in &calls {
                parts.push(json!({"functionCall": {"name": TOOL_NAME, "args": a}}));
            }
            json!({
                "candidates": [{
                    "content": {"parts": parts, "role": "model"},
                    "finishReason": gemini_finish(shape),
                    "index": 0
                }],
                "usageMetadata": gemini_usage(input, output),
                "modelVersion": model,
                "responseId": "mQTFaPCfH4W9xN8Pk5GQwQE"
            })
        }
    }
}

pub(super) fn chat_finish(shape: Shape) -> &'static str {
    match shape {
        Shape::Text => "stop",
        Shape::Tool | Shape::Parallel => "tool_calls",
        Shape::Length => "length",
    }
}

pub(super) fn anthropic_stop(shape: Shape) -> &'static str {
    match shape {
        Shape::Text => "end_turn",
        Shape::Tool | Shape::Parallel => "tool_use",
        Shape::Length => "max_tokens",
    }
}

pub(super) fn gemini_finish(shape: Shape) -> &'static str {
    match shape {
        Shape::Length => "MAX_TOKENS",
        _ => "STOP",
    }
}

fn gemini_usage(input: u64, output: u64) -> Value {
    json!({
        "promptTokenCount": input,
        "candidatesTokenCount": output,
        "totalTokenCount": input + output,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": input}]
    })
}

const RESPONSES_MSG_ID: &str = "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41";

fn responses_message(text: &str) -> Value {
    json!({
        "type": "message", "id": RESPONSES_MSG_ID,
        "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
    })
}

fn responses_call(i: usize, args: &str, status: &str) -> Value {
    json!({
        "type": "function_call", "id": FC_IDS[i],
        "call_id": call_id(Wire::Responses, i), "name": TOOL_NAME,
        "arguments": args, "status": status
    })
}

fn responses_object(
    model: &str,
    status: &str,
    output: Vec<Value>,
    usage: Option<(u64, u64)>,
) -> Value {
    json!({
        "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
        "object": "response",
        "created_at": 1741476777,
        "status": status,
        "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": true,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage.map(|(i, o)| json!({
            "input_tokens": i, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": o, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": i + o
        })),
        "user": null,
        "metadata": {}
    })
}

/// A streamed answer from a provider of `kind`: each element is one SSE
/// event exactly as the provider writes it (without the blank line that
/// ends it).
pub fn provider_sse(kind: Wire, model: &str, shape: Shape) -> Vec<String> {
    let model = served_model(kind, model);
    match kind {
        Wire::Chat => chat_sse(&model, shape),
        Wire::Responses => responses_sse(&model, shape),
        Wire::Anthropic => anthropic_sse(&model, shape),
        Wire::Gemini => gemini_sse(&model, shape),
    }
}

/// An unnamed SSE event.
fn data(v: Value) -> String {
    format!("data: {v}")
}

/// An SSE event named after its `type`.
fn named(v: Value) -> String {
    format!(
        "event: {}\ndata: {v}",
        v["type"].as_str().unwrap_or_default()
    )
}

/// OpenAI chat chunks, a usage chunk and `[DONE]`.
fn chat_sse(model: &str, shape: Shape) -> Vec<String> {
    let kind = Wire::Chat;
    let (input, output) = shape.usage();
    let calls = shape.calls();
    let text_pieces = shape.pieces();
    let mut ev = Vec::new();
    let chunk = |delta: Value, finish: Value| {
        data(json!({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion.chunk",
            "created": 1741570283, "model": model, "service_tier": "default",
            "system_fingerprint": "fp_06737a9306",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        }))
    };
    ev.push(chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    ));
    for p in &text_pieces {
        ev.push(chunk(json!({"content": p}), Value::Null));
    }
    for i in 0..calls.len() {
        ev.push(chunk(
            json!({"tool_calls": [{"index": i, "id": call_id(kind, i), "type": "function",
                "function": {"name": TOOL_NAME, "arguments": ""}}]}),
            Value::Null,
        ));
        for a in shape.arg_pieces(i) {
            ev.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": a}}]}),
                Value::Null,
            ));
        }
    }
    ev.push(chunk(json!({}), json!(chat_finish(shape))));
    ev.push(data(json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion.chunk",
        "created": 1741570283, "model": model, "service_tier": "default",
        "system_fingerprint": "fp_06737a9306", "choices": [],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    })));
    ev.push("data: [DONE]".into());
    ev
}

/// OpenAI Responses events, `response.created` to `response.completed`.
fn responses_sse(model: &str, shape: Shape) -> Vec<String> {
    let (input, output) = shape.usage();
    let calls = shape.calls();
    let text_pieces = shape.pieces();
    let mut ev = Vec::new();
    let mut seq = 0u64;
    let mut push = |mut v: Value, ev: &mut Vec<String>| {
        v["sequence_number"] = json!(seq);
        seq += 1;
        ev.push(named(v));
    };
    let msg_id = RESPONSES_MSG_ID;
    push(
        json!({"type": "response.created", "response": responses_object(model, "in_progress", vec![], None)}),
        &mut ev,
    );
    push(
        json!({"type": "response.in_progress", "response": responses_object(model, "in_progress", vec![], None)}),
        &mut ev,
    );
    push(
        json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"id": msg_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
        &mut ev,
    );
    push(
        json!({"type": "response.content_part.added", "item_id": msg_id, "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
        &mut ev,
    );
    for p in &text_pieces {
        push(
            json!({"type": "response.output_text.delta", "item_id": msg_id, "output_index": 0,
                "content_index": 0, "delta": p, "logprobs": []}),
            &mut ev,
        );
    }
    let text = text_pieces.concat();
    push(
        json!({"type": "response.output_text.done", "item_id": msg_id, "output_index": 0,
            "content_index": 0, "text": text, "logprobs": []}),
        &mut ev,
    );
    push(
        json!({"type": "response.content_part.done", "item_id": msg_id, "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": text, "annotations": []}}),
        &mut ev,
    );
    push(
        json!({"type": "response.output_item.done", "output_index": 0, "item": responses_message(&text)}),
        &mut ev,
    );
    let mut items = vec![responses_message(&text)];
    for (i, whole) in calls.iter().enumerate() {
        let args = whole.to_string();
        let out_index = i + 1;
        push(
            json!({"type": "response.output_item.added", "output_index": out_index,
                "item": responses_call(i, "", "in_progress")}),
            &mut ev,
        );
        for a in shape.arg_pieces(i) {
            push(
                json!({"type": "response.function_call_arguments.delta", "item_id": FC_IDS[i],
                    "output_index": out_index, "delta": a}),
                &mut ev,
            );
        }
        push(
            json!({"type": "response.function_call_arguments.done", "item_id": FC_IDS[i],
                "output_index": out_index, "arguments": args}),
            &mut ev,
        );
        push(
            json!({"type": "response.output_item.done", "output_index": out_index,
                "item": responses_call(i, &args, "completed")}),
            &mut ev,
        );
        items.push(responses_call(i, &args, "completed"));
    }
    let (ty, status) = if shape == Shape::Length {
        ("response.incomplete", "incomplete")
    } else {
        ("response.completed", "completed")
    };
    push(
        json!({"type": ty, "response": responses_object(model, status, items, Some((input, output)))}),
        &mut ev,
    );
    ev
}

/// Anthropic message events, `message_start` to `message_stop`.
fn anthropic_sse(model: &str, shape: Shape) -> Vec<String> {
    let kind = Wire::Anthropic;
    let (input, output) = shape.usage();
    let calls = shape.calls();
    let text_pieces = shape.pieces();
    let mut ev = Vec::new();
    ev.push(named(json!({"type": "message_start", "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": 1, "service_tier": "standard"}
    }})));
    ev.push(named(json!({"type": "content_block_start", "index": 0,
        "content_block": {"type": "text", "text": ""}})));
    ev.push("event: ping\ndata: {\"type\": \"ping\"}".into());
    for p in &text_pieces {
        ev.push(named(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": p}})));
    }
    ev.push(named(json!({"type": "content_block_stop", "index": 0})));
    for i in 0..calls.len() {
        let index = i + 1;
        ev.push(named(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": call_id(kind, i), "name": TOOL_NAME, "input": {}}})));
        ev.push(named(json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": ""}})));
        for a in shape.arg_pieces(i) {
            ev.push(named(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": a}})));
        }
        ev.push(named(json!({"type": "content_block_stop", "index": index})));
    }
    ev.push(named(json!({"type": "message_delta",
        "delta": {"stop_reason": anthropic_stop(shape), "stop_sequence": null},
        "usage": {"output_tokens": output}})));
    ev.push(named(json!({"type": "message_stop"})));
    ev
}

/// Gemini `data:` chunks.
fn gemini_sse(model: &str, shape: Shape) -> Vec<String> {
    let (input, output) = shape.usage();
    let calls = shape.calls();
    let text_pieces = shape.pieces();
    let mut ev = Vec::new();
    // Gemini sends `data:` lines only, each a whole GenerateContentResponse,
    // with running usage in every chunk and the finish reason on the last.
    let n = text_pieces.len();
    for (i, p) in text_pieces.iter().enumerate() {
        let last = i + 1 == n && calls.is_empty();
        let mut cand = json!({"content": {"parts": [{"text": p}], "role": "model"}, "index": 0});
        if last {
            cand["finishReason"] = json!(gemini_finish(shape));
        }
        let out_so_far = if last { output } else { (i as u64) + 1 };
        ev.push(data(json!({
            "candidates": [cand],
            "usageMetadata": gemini_usage(input, out_so_far),
            "modelVersion": model,
            "responseId": "mQTFaPCfH4W9xN8Pk5GQwQE"
        })));
    }
    if !calls.is_empty() {
        // Function calls come whole, all of one turn in one chunk.
        let parts: Vec<Value> = calls
            .iter()
            .map(|a| json!({"functionCall": {"name": TOOL_NAME, "args": a}}))
            .collect();
        ev.push(data(json!({
            "candidates": [{"content": {"parts": parts, "role": "model"},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": gemini_usage(input, output),
            "modelVersion": model,
            "responseId": "mQTFaPCfH4W9xN8Pk5GQwQE"
        })));
    }
    ev
}

/// The in-band error event a provider of `kind` sends when it fails in the
/// middle of a stream.
pub fn provider_stream_error(kind: Wire) -> String {
    match kind {
        Wire::Chat => format!(
            "data: {}",
            json!({"error": {"message": "The server had an error while processing your request.",
                "type": "server_error", "param": null, "code": null}})
        ),
        Wire::Responses => format!(
            "event: response.failed\ndata: {}",
            json!({"type": "response.failed", "sequence_number": 99, "response": {
                "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41", "object": "response",
                "status": "failed", "output": [],
                "error": {"code": "server_error", "message": "The server had an error while processing your request."}}})
        ),
        Wire::Anthropic => format!(
            "event: error\ndata: {}",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        ),
        Wire::Gemini => format!(
            "data: {}",
            json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                "status": "UNAVAILABLE"}})
        ),
    }
}

/// A provider's own error body for `status`.
pub fn provider_error(kind: Wire, status: u16, message: &str) -> Value {
    match kind {
        Wire::Chat | Wire::Responses => json!({"error": {
            "message": message, "type": if status == 400 { "invalid_request_error" } else { "server_error" },
            "param": null, "code": null}}),
        Wire::Anthropic => json!({"type": "error", "error": {
            "type": if status == 400 { "invalid_request_error" } else { "overloaded_error" },
            "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}),
        Wire::Gemini => json!({"error": {"code": status, "message": message,
            "status": if status == 400 { "INVALID_ARGUMENT" } else { "UNAVAILABLE" }}}),
    }
}

/// The upstream model a recorded request asked for (Gemini: from the path).
pub fn requested_model(kind: Wire, rec: &Recorded) -> String {
    match kind {
        Wire::Gemini => rec
            .path
            .split("/models/")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .unwrap_or_default()
            .to_owned(),
        _ => serde_json::from_slice::<Value>(&rec.body)
            .ok()
            .and_then(|v| v["model"].as_str().map(str::to_owned))
            .unwrap_or_default(),
    }
}

/// Whether a recorded request asked for a stream (Gemini: the path).
pub fn requested_stream(kind: Wire, rec: &Recorded) -> bool {
    match kind {
        Wire::Gemini => rec.path.contains(":streamGenerateContent"),
        _ => serde_json::from_slice::<Value>(&rec.body)
            .ok()
            .and_then(|v| v["stream"].as_bool())
            .unwrap_or(false),
    }
}

/// The message an upstream 400 carries in the tests.
pub const UPSTREAM_400: &str = "Invalid value for 'temperature': must be at most 2.";

/// A mock provider of `kind`. The upstream model decides the behaviour:
/// `*-400` answers 400, `*-503` answers 503, `*-cut` breaks its stream after
/// a few events; otherwise a text answer, or a tool call when the request
/// declares the tool and carries no tool result yet.
pub fn provider_reply(kind: Wire, rec: &Recorded) -> Reply {
    if kind == Wire::Chat && rec.path.ends_with("/responses") {
        // A Chat Completions service without the Responses API, as most
        // OpenAI-compatible ones are: what `wire_api: auto` falls back from.
        return Reply::json(
            404,
            provider_error(kind, 404, "Not found: /v1/responses").to_string(),
        );
    }
    let model = requested_model(kind, rec);
    let stream = requested_stream(kind, rec);
    if model.ends_with("-400") {
        return Reply::json(400, provider_error(kind, 400, UPSTREAM_400).to_string());
    }
    if model.ends_with("-503") {
        return Reply::json(
            503,
            provider_error(kind, 503, "The server is overloaded.").to_string(),
        );
    }
    let body = String::from_utf8_lossy(&rec.body);
    let shape = if model.ends_with("-length") {
        Shape::Length
    } else if model.ends_with("-parallel") {
        Shape::Parallel
    } else if body.contains(TOOL_NAME) && !body.contains(TOOL_OUTPUT) {
        Shape::Tool
    } else {
        Shape::Text
    };
    if !stream {
        return Reply::json(200, provider_json(kind, &model, shape).to_string());
    }
    let mut events = provider_sse(kind, &model, shape);
    // Up to (and including) the first piece of text.
    let first_text = events
        .iter()
        .position(|e| e.contains(ANSWER_PIECES[0]))
        .unwrap_or(0);
    if model.ends_with("-midfail") {
        events.truncate(first_text + 1);
        events.push(provider_stream_error(kind));
    }
    let mut reply = Reply::sse(&events);
    if kind == Wire::Gemini {
        // Google ends its events with CRLF pairs.
        for c in &mut reply.chunks {
            c.1 = String::from_utf8_lossy(&c.1)
                .replace('\n', "\r\n")
                .into_bytes();
        }
    }
    if model.ends_with("-cut") {
        // Then the connection drops.
        reply = reply.cut_after(first_text + 1);
    }
    reply
}
