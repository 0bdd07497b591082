//! The four wire formats as the tests see them, on both sides of the
//! gateway: what a provider of each kind answers (mock payloads written from
//! the providers' API references), how to check what such a provider
//! received, how a client of each format asks, and how to read back what it
//! got into one neutral [`Answer`] (checking the answer is well formed on
//! the way).

use serde_json::{json, Value};

use super::Recorded;

/// A wire format: a client endpoint or a provider kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// OpenAI Chat Completions.
    Chat,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini generateContent.
    Gemini,
}

pub const ALL: [Wire; 4] = [Wire::Chat, Wire::Responses, Wire::Anthropic, Wire::Gemini];

impl Wire {
    pub fn name(self) -> &'static str {
        match self {
            Wire::Chat => "chat",
            Wire::Responses => "responses",
            Wire::Anthropic => "anthropic",
            Wire::Gemini => "gemini",
        }
    }
}

/// What a conversation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// A plain question, no tools: a text answer.
    Text,
    /// Tools declared: the model answers a bit of text and one tool call.
    Tool,
    /// The tool's result sent back (the assistant's call and the result in
    /// the history): a text answer.
    ToolResult,
}

pub const SCENARIOS: [Scenario; 3] = [Scenario::Text, Scenario::Tool, Scenario::ToolResult];

pub const SYSTEM: &str = "You are terse.";
pub const QUESTION: &str = "What's the weather in Paris?";
pub const TOOL_OUTPUT: &str = "18C and sunny";
/// The text answer, and how streams split it.
pub const ANSWER: &str = "It is 18C and sunny in Paris.";
pub const ANSWER_PIECES: [&str; 3] = ["It is ", "18C and ", "sunny in Paris."];
/// The text that comes before a tool call.
pub const PREFACE: &str = "Let me check.";
pub const TOOL_NAME: &str = "get_weather";
pub const TOOL_ARGS_PIECES: [&str; 2] = [r#"{"city":"Par"#, r#"is","unit":"celsius"}"#];

pub fn tool_args() -> Value {
    json!({"city": "Paris", "unit": "celsius"})
}

impl Scenario {
    /// What the mock answers in this scenario.
    pub fn shape(self) -> Shape {
        match self {
            Scenario::Tool => Shape::Tool,
            _ => Shape::Text,
        }
    }
}

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
        },
        "required": ["city"]
    })
}

// ---------------------------------------------------------------------------
// Provider side: what each kind answers.
// ---------------------------------------------------------------------------

/// What a provider's answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The text answer, finished normally.
    Text,
    /// A bit of text and one tool call.
    Tool,
    /// A bit of text and two tool calls in one turn.
    Parallel,
    /// The text answer, cut by the output token limit.
    Length,
}

impl Shape {
    pub fn text(self) -> &'static str {
        match self {
            Shape::Text | Shape::Length => ANSWER,
            Shape::Tool | Shape::Parallel => PREFACE,
        }
    }

    fn pieces(self) -> Vec<&'static str> {
        match self {
            Shape::Text | Shape::Length => ANSWER_PIECES.to_vec(),
            Shape::Tool | Shape::Parallel => vec![PREFACE],
        }
    }

    /// The calls' arguments, in order.
    pub fn calls(self) -> Vec<Value> {
        match self {
            Shape::Text | Shape::Length => vec![],
            Shape::Tool => vec![tool_args()],
            Shape::Parallel => vec![tool_args(), json!({"city": "London", "unit": "celsius"})],
        }
    }

    /// The pieces a call's arguments are streamed in.
    fn arg_pieces(self, i: usize) -> Vec<String> {
        if i == 0 {
            TOOL_ARGS_PIECES.iter().map(|s| s.to_string()).collect()
        } else {
            let whole = self.calls()[i].to_string();
            let (a, b) = whole.split_at(7);
            vec![a.to_owned(), b.to_owned()]
        }
    }

    pub fn usage(self) -> (u64, u64) {
        match self {
            Shape::Tool | Shape::Parallel => (40, 9),
            Shape::Text => (12, 5),
            Shape::Length => (12, 7),
        }
    }

    pub fn has_calls(self) -> bool {
        matches!(self, Shape::Tool | Shape::Parallel)
    }
}

/// The model name each mock reports back (dated, as the real APIs do).
pub fn served_model(kind: Wire, asked: &str) -> String {
    match kind {
        Wire::Chat => format!("{asked}-2024-07-18"),
        Wire::Responses => format!("{asked}-2025-04-14"),
        Wire::Anthropic => format!("{asked}-20251001"),
        Wire::Gemini => asked.to_owned(),
    }
}

/// The tool call id a provider gives (Gemini gives none).
pub fn upstream_call_id(kind: Wire) -> Option<&'static str> {
    upstream_call_ids(kind).map(|c| c[0])
}

/// The ids of the first and second tool calls.
pub fn upstream_call_ids(kind: Wire) -> Option<[&'static str; 2]> {
    match kind {
        Wire::Chat => Some(["call_Zq3xV7aB9cD1eF", "call_Yp2wU6zA8bC0dE"]),
        Wire::Responses => Some(["call_R5sT6uV7wX8y", "call_Q4rS5tU6vW7x"]),
        Wire::Anthropic => Some([
            "toolu_01A09q90qw90lq917835lq9",
            "toolu_01B19r91rx91mr928946mr0",
        ]),
        Wire::Gemini => None,
    }
}

fn call_id(kind: Wire, i: usize) -> &'static str {
    upstream_call_ids(kind).map(|c| c[i]).unwrap_or_default()
}

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

fn chat_finish(shape: Shape) -> &'static str {
    match shape {
        Shape::Text => "stop",
        Shape::Tool | Shape::Parallel => "tool_calls",
        Shape::Length => "length",
    }
}

fn anthropic_stop(shape: Shape) -> &'static str {
    match shape {
        Shape::Text => "end_turn",
        Shape::Tool | Shape::Parallel => "tool_use",
        Shape::Length => "max_tokens",
    }
}

fn gemini_finish(shape: Shape) -> &'static str {
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
    let (input, output) = shape.usage();
    let model = served_model(kind, model);
    let calls = shape.calls();
    let text_pieces = shape.pieces();
    let data = |v: Value| format!("data: {v}");
    let named = |v: Value| {
        format!(
            "event: {}\ndata: {v}",
            v["type"].as_str().unwrap_or_default()
        )
    };
    let mut ev = Vec::new();
    match kind {
        Wire::Chat => {
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
        }
        Wire::Responses => {
            let mut seq = 0u64;
            let mut push = |mut v: Value, ev: &mut Vec<String>| {
                v["sequence_number"] = json!(seq);
                seq += 1;
                ev.push(named(v));
            };
            let msg_id = RESPONSES_MSG_ID;
            push(
                json!({"type": "response.created", "response": responses_object(&model, "in_progress", vec![], None)}),
                &mut ev,
            );
            push(
                json!({"type": "response.in_progress", "response": responses_object(&model, "in_progress", vec![], None)}),
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
                json!({"type": ty, "response": responses_object(&model, status, items, Some((input, output)))}),
                &mut ev,
            );
        }
        Wire::Anthropic => {
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
        }
        Wire::Gemini => {
            // Gemini sends `data:` lines only, each a whole GenerateContentResponse,
            // with running usage in every chunk and the finish reason on the last.
            let n = text_pieces.len();
            for (i, p) in text_pieces.iter().enumerate() {
                let last = i + 1 == n && calls.is_empty();
                let mut cand =
                    json!({"content": {"parts": [{"text": p}], "role": "model"}, "index": 0});
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
        }
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
pub fn provider_reply(kind: Wire, rec: &Recorded) -> super::Reply {
    use super::Reply;
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

// ---------------------------------------------------------------------------
// Provider side: what each kind must have received.
// ---------------------------------------------------------------------------

/// The text inside a content value of any shape (a string, a list of parts
/// or blocks, or one part), concatenated.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text_of).collect(),
        Value::Object(o) => o
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| o.get("parts").map(text_of))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Checks a request a provider of `kind` received: path, provider key,
/// model, stream flag, and the conversation in the provider's own shape.
pub fn check_upstream(
    kind: Wire,
    rec: &Recorded,
    model: &str,
    key: &str,
    scenario: Scenario,
    stream: bool,
) -> Result<(), String> {
    let v: Value =
        serde_json::from_slice(&rec.body).map_err(|e| format!("upstream body is not JSON: {e}"))?;
    let want_path = match kind {
        Wire::Chat => "/v1/chat/completions".to_owned(),
        Wire::Responses => "/v1/responses".to_owned(),
        Wire::Anthropic => "/v1/messages".to_owned(),
        Wire::Gemini if stream => format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
        Wire::Gemini => format!("/v1beta/models/{model}:generateContent"),
    };
    ensure(rec.method == "POST", format!("method {}", rec.method))?;
    ensure(
        rec.path == want_path,
        format!("path {} (want {want_path})", rec.path),
    )?;
    ensure(
        rec.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        format!("content-type {:?}", rec.header("content-type")),
    )?;
    // Auth in the provider's own convention, and nothing else.
    let (auth, xkey, goog) = (
        rec.header("authorization"),
        rec.header("x-api-key"),
        rec.header("x-goog-api-key"),
    );
    match kind {
        Wire::Chat | Wire::Responses => ensure(
            auth == Some(&format!("Bearer {key}")) && xkey.is_none() && goog.is_none(),
            format!("auth headers {auth:?} {xkey:?} {goog:?}"),
        )?,
        Wire::Anthropic => {
            ensure(
                xkey == Some(key) && auth.is_none() && goog.is_none(),
                format!("auth headers {auth:?} {xkey:?} {goog:?}"),
            )?;
            let versions: Vec<_> = rec
                .headers
                .iter()
                .filter(|(k, _)| k == "anthropic-version")
                .collect();
            ensure(
                versions.len() == 1,
                format!("anthropic-version headers: {versions:?}"),
            )?;
        }
        Wire::Gemini => ensure(
            goog == Some(key) && auth.is_none() && xkey.is_none(),
            format!("auth headers {auth:?} {xkey:?} {goog:?}"),
        )?,
    }
    if kind != Wire::Gemini {
        ensure(
            v["model"] == model,
            format!("body model {} (want {model})", v["model"]),
        )?;
        ensure(
            v["stream"].as_bool().unwrap_or(false) == stream,
            format!("body stream {} (want {stream})", v["stream"]),
        )?;
    } else {
        ensure(
            v.get("stream").is_none(),
            "a `stream` field in a Gemini body".into(),
        )?;
        ensure(
            v.get("model").is_none(),
            "a `model` field in a Gemini body".into(),
        )?;
    }
    match kind {
        Wire::Chat => check_chat_request(&v, scenario, stream),
        Wire::Responses => check_responses_request(&v, scenario),
        Wire::Anthropic => check_anthropic_request(&v, scenario),
        Wire::Gemini => check_gemini_request(&v, scenario),
    }
    .map_err(|e| format!("{e}; upstream body: {v}"))
}

pub fn ensure(ok: bool, what: String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what)
    }
}

fn check_chat_request(v: &Value, scenario: Scenario, stream: bool) -> Result<(), String> {
    if stream {
        ensure(
            v["stream_options"]["include_usage"] == true,
            "stream without stream_options.include_usage".into(),
        )?;
    }
    let msgs = v["messages"].as_array().ok_or("no messages")?;
    let sys: String = msgs
        .iter()
        .filter(|m| m["role"] == "system" || m["role"] == "developer")
        .map(|m| text_of(&m["content"]))
        .collect();
    ensure(sys == SYSTEM, format!("system text {sys:?}"))?;
    let user = msgs
        .iter()
        .find(|m| m["role"] == "user")
        .ok_or("no user message")?;
    ensure(
        text_of(&user["content"]) == QUESTION,
        format!("user text {}", user["content"]),
    )?;
    if scenario == Scenario::Text {
        return ensure(
            v.get("tools")
                .is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)),
            "tools sent".into(),
        );
    }
    let tool = &v["tools"][0];
    ensure(
        tool["type"] == "function"
            && tool["function"]["name"] == TOOL_NAME
            && tool["function"]["parameters"]["properties"]["city"]["type"] == "string",
        format!("tool declaration {tool}"),
    )?;
    if scenario == Scenario::ToolResult {
        let asst = msgs
            .iter()
            .find(|m| m["role"] == "assistant")
            .ok_or("no assistant message")?;
        let call = &asst["tool_calls"][0];
        ensure(
            call["type"] == "function" && call["function"]["name"] == TOOL_NAME,
            format!("assistant tool call {asst}"),
        )?;
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or("null"))
                .map_err(|e| format!("call arguments: {e}"))?;
        ensure(args["city"] == "Paris", format!("call arguments {args}"))?;
        let result = msgs
            .iter()
            .find(|m| m["role"] == "tool")
            .ok_or("no tool message")?;
        ensure(
            result["tool_call_id"] == call["id"]
                && call["id"].as_str().is_some_and(|s| !s.is_empty()),
            format!("tool result {result} for call {call}"),
        )?;
        ensure(
            text_of(&result["content"]).contains(TOOL_OUTPUT),
            format!("tool result {result}"),
        )?;
    }
    Ok(())
}

fn check_responses_request(v: &Value, scenario: Scenario) -> Result<(), String> {
    let items: Vec<Value> = match &v["input"] {
        Value::String(s) => vec![json!({"role": "user", "content": s})],
        Value::Array(a) => a.clone(),
        other => return Err(format!("input {other}")),
    };
    let sys = text_of(&v["instructions"])
        + &items
            .iter()
            .filter(|m| m["role"] == "system" || m["role"] == "developer")
            .map(|m| text_of(&m["content"]))
            .collect::<String>();
    ensure(sys == SYSTEM, format!("system text {sys:?}"))?;
    let user = items
        .iter()
        .find(|m| m["role"] == "user")
        .ok_or("no user item")?;
    ensure(
        text_of(&user["content"]) == QUESTION,
        format!("user item {user}"),
    )?;
    if scenario == Scenario::Text {
        return ensure(
            v.get("tools")
                .is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)),
            "tools sent".into(),
        );
    }
    let tool = &v["tools"][0];
    ensure(
        tool["type"] == "function"
            && tool["name"] == TOOL_NAME
            && tool["parameters"]["properties"]["city"].is_object(),
        format!("tool declaration {tool}"),
    )?;
    if scenario == Scenario::ToolResult {
        let call = items
            .iter()
            .find(|m| m["type"] == "function_call")
            .ok_or("no function_call item")?;
        ensure(call["name"] == TOOL_NAME, format!("function_call {call}"))?;
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap_or("null"))
            .map_err(|e| format!("call arguments: {e}"))?;
        ensure(args["city"] == "Paris", format!("call arguments {args}"))?;
        let out = items
            .iter()
            .find(|m| m["type"] == "function_call_output")
            .ok_or("no function_call_output item")?;
        ensure(
            out["call_id"] == call["call_id"]
                && call["call_id"].as_str().is_some_and(|s| !s.is_empty()),
            format!("output {out} for call {call}"),
        )?;
        ensure(
            text_of(&out["output"]).contains(TOOL_OUTPUT),
            format!("output {out}"),
        )?;
    }
    Ok(())
}

fn check_anthropic_request(v: &Value, scenario: Scenario) -> Result<(), String> {
    ensure(
        v["max_tokens"].as_u64().is_some_and(|n| n > 0),
        format!(
            "max_tokens {} (required by the Messages API)",
            v["max_tokens"]
        ),
    )?;
    ensure(
        text_of(&v["system"]) == SYSTEM,
        format!("system {}", v["system"]),
    )?;
    let msgs = v["messages"].as_array().ok_or("no messages")?;
    ensure(
        msgs.iter()
            .all(|m| m["role"] == "user" || m["role"] == "assistant"),
        "a role other than user/assistant".into(),
    )?;
    ensure(
        msgs[0]["role"] == "user",
        "first message is not the user's".into(),
    )?;
    ensure(
        text_of(&msgs[0]["content"]) == QUESTION,
        format!("user message {}", msgs[0]),
    )?;
    if scenario == Scenario::Text {
        return ensure(
            v.get("tools")
                .is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)),
            "tools sent".into(),
        );
    }
    let tool = &v["tools"][0];
    ensure(
        tool["name"] == TOOL_NAME && tool["input_schema"]["properties"]["city"].is_object(),
        format!("tool declaration {tool}"),
    )?;
    if scenario == Scenario::ToolResult {
        let blocks = |role: &str| -> Vec<Value> {
            msgs.iter()
                .filter(|m| m["role"] == role)
                .filter_map(|m| m["content"].as_array())
                .flatten()
                .cloned()
                .collect()
        };
        let call = blocks("assistant")
            .into_iter()
            .find(|b| b["type"] == "tool_use")
            .ok_or("no tool_use block")?;
        ensure(
            call["name"] == TOOL_NAME && call["input"]["city"] == "Paris",
            format!("tool_use {call}"),
        )?;
        let res = blocks("user")
            .into_iter()
            .find(|b| b["type"] == "tool_result")
            .ok_or("no tool_result block")?;
        ensure(
            res["tool_use_id"] == call["id"] && call["id"].as_str().is_some_and(|s| !s.is_empty()),
            format!("tool_result {res} for {call}"),
        )?;
        ensure(
            text_of(&res["content"]).contains(TOOL_OUTPUT),
            format!("tool_result {res}"),
        )?;
    }
    Ok(())
}

fn check_gemini_request(v: &Value, scenario: Scenario) -> Result<(), String> {
    let sys = v
        .get("systemInstruction")
        .or_else(|| v.get("system_instruction"));
    ensure(
        sys.is_some_and(|s| text_of(s) == SYSTEM),
        format!("systemInstruction {sys:?}"),
    )?;
    let contents = v["contents"].as_array().ok_or("no contents")?;
    ensure(
        contents
            .iter()
            .all(|c| c["role"] == "user" || c["role"] == "model"),
        "a role other than user/model".into(),
    )?;
    ensure(
        contents[0]["role"] == "user" && text_of(&contents[0]["parts"]) == QUESTION,
        format!("first content {}", contents[0]),
    )?;
    if scenario == Scenario::Text {
        return ensure(
            v.get("tools")
                .is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)),
            "tools sent".into(),
        );
    }
    let decl = v["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            t.get("functionDeclarations")
                .or_else(|| t.get("function_declarations"))
        })
        .filter_map(Value::as_array)
        .flatten()
        .next()
        .ok_or("no functionDeclarations")?;
    ensure(
        decl["name"] == TOOL_NAME && decl["parameters"]["properties"]["city"].is_object(),
        format!("function declaration {decl}"),
    )?;
    if scenario == Scenario::ToolResult {
        let parts: Vec<&Value> = contents
            .iter()
            .filter_map(|c| c["parts"].as_array())
            .flatten()
            .collect();
        let call = parts
            .iter()
            .find_map(|p| p.get("functionCall"))
            .ok_or("no functionCall part")?;
        ensure(
            call["name"] == TOOL_NAME && call["args"]["city"] == "Paris",
            format!("functionCall {call}"),
        )?;
        let resp = parts
            .iter()
            .find_map(|p| p.get("functionResponse"))
            .ok_or("no functionResponse part")?;
        ensure(
            resp["name"] == TOOL_NAME,
            format!("functionResponse {resp}"),
        )?;
        ensure(
            resp["response"].to_string().contains(TOOL_OUTPUT),
            format!("functionResponse {resp}"),
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Client side: how each format asks.
// ---------------------------------------------------------------------------

/// A client request: path (with query), headers, body.
pub struct ClientRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// The request an SDK of `wire` sends for `scenario`, authenticating with
/// `key` the way that SDK does.
pub fn client_request(
    wire: Wire,
    model: &str,
    scenario: Scenario,
    stream: bool,
    key: &str,
) -> ClientRequest {
    let tools = scenario != Scenario::Text;
    let call_args = tool_args().to_string();
    let (path, headers, body) = match wire {
        Wire::Chat => {
            let mut messages = vec![
                json!({"role": "system", "content": SYSTEM}),
                json!({"role": "user", "content": QUESTION}),
            ];
            if scenario == Scenario::ToolResult {
                messages.push(
                    json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_client1", "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": call_args}}]}),
                );
                messages.push(
                    json!({"role": "tool", "tool_call_id": "call_client1", "content": TOOL_OUTPUT}),
                );
            }
            let mut b = json!({"model": model, "messages": messages});
            if tools {
                b["tools"] = json!([{"type": "function", "function": {
                    "name": TOOL_NAME, "description": "Current weather in a city", "parameters": weather_schema()}}]);
            }
            if stream {
                b["stream"] = json!(true);
                b["stream_options"] = json!({"include_usage": true});
            }
            (
                "/v1/chat/completions".to_owned(),
                vec![("authorization".to_owned(), format!("Bearer {key}"))],
                b,
            )
        }
        Wire::Responses => {
            let mut input = vec![json!({"role": "user", "content": QUESTION})];
            if scenario == Scenario::ToolResult {
                input.push(
                    json!({"type": "function_call", "call_id": "call_client1", "name": TOOL_NAME,
                    "arguments": call_args}),
                );
                input.push(json!({"type": "function_call_output", "call_id": "call_client1", "output": TOOL_OUTPUT}));
            }
            let mut b = json!({"model": model, "instructions": SYSTEM, "input": input});
            if tools {
                b["tools"] = json!([{"type": "function", "name": TOOL_NAME,
                    "description": "Current weather in a city", "parameters": weather_schema()}]);
            }
            if stream {
                b["stream"] = json!(true);
            }
            (
                "/v1/responses".to_owned(),
                vec![("authorization".to_owned(), format!("Bearer {key}"))],
                b,
            )
        }
        Wire::Anthropic => {
            let mut messages = vec![json!({"role": "user", "content": QUESTION})];
            if scenario == Scenario::ToolResult {
                messages.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_client1",
                    "name": TOOL_NAME, "input": tool_args()}]}));
                messages.push(json!({"role": "user", "content": [{"type": "tool_result",
                    "tool_use_id": "toolu_client1", "content": TOOL_OUTPUT}]}));
            }
            let mut b =
                json!({"model": model, "max_tokens": 1024, "system": SYSTEM, "messages": messages});
            if tools {
                b["tools"] = json!([{"name": TOOL_NAME, "description": "Current weather in a city",
                    "input_schema": weather_schema()}]);
            }
            if stream {
                b["stream"] = json!(true);
            }
            (
                "/v1/messages".to_owned(),
                vec![
                    ("x-api-key".to_owned(), key.to_owned()),
                    ("anthropic-version".to_owned(), "2023-06-01".to_owned()),
                ],
                b,
            )
        }
        Wire::Gemini => {
            let mut contents = vec![json!({"role": "user", "parts": [{"text": QUESTION}]})];
            if scenario == Scenario::ToolResult {
                contents.push(json!({"role": "model", "parts": [{"functionCall": {"name": TOOL_NAME, "args": tool_args()}}]}));
                contents.push(
                    json!({"role": "user", "parts": [{"functionResponse": {"name": TOOL_NAME,
                    "response": {"result": TOOL_OUTPUT}}}]}),
                );
            }
            let mut b =
                json!({"systemInstruction": {"parts": [{"text": SYSTEM}]}, "contents": contents});
            if tools {
                b["tools"] = json!([{"functionDeclarations": [{"name": TOOL_NAME,
                    "description": "Current weather in a city", "parameters": weather_schema()}]}]);
            }
            let path = if stream {
                format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
            } else {
                format!("/v1beta/models/{model}:generateContent")
            };
            (path, vec![("x-goog-api-key".to_owned(), key.to_owned())], b)
        }
    };
    ClientRequest {
        path,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------
// Client side: reading what came back.
// ---------------------------------------------------------------------------

/// A tool call as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub args: Value,
}

/// An answer in no particular format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub model: String,
    pub text: String,
    pub calls: Vec<Call>,
    /// The finish reason as the client format spells it (Responses: the
    /// response status).
    pub finish: String,
    /// (input, output) tokens.
    pub usage: Option<(u64, u64)>,
}

/// The finish reason a client of `wire` should see.
pub fn expected_finish(wire: Wire, shape: Shape) -> &'static str {
    match wire {
        Wire::Chat => chat_finish(shape),
        Wire::Responses if shape == Shape::Length => "incomplete",
        Wire::Responses => "completed",
        Wire::Anthropic => anthropic_stop(shape),
        Wire::Gemini => gemini_finish(shape),
    }
}

fn args_of(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("tool arguments {s:?} are not JSON: {e}"))
}

fn str_of(v: &Value, what: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{what} is not a string: {v}"))
}

/// Reads a non-streaming answer in `wire`'s format.
pub fn parse_json_answer(wire: Wire, v: &Value) -> Result<Answer, String> {
    let mut a = Answer::default();
    match wire {
        Wire::Chat => {
            ensure(
                v["object"] == "chat.completion",
                format!("object {}", v["object"]),
            )?;
            ensure(
                v["id"].is_string() && v["created"].is_u64(),
                "id/created".into(),
            )?;
            a.model = str_of(&v["model"], "model")?;
            let choice = &v["choices"][0];
            ensure(choice["index"] == 0, "choices[0].index".into())?;
            let msg = &choice["message"];
            ensure(msg["role"] == "assistant", format!("role {}", msg["role"]))?;
            a.text = msg["content"].as_str().unwrap_or_default().to_owned();
            for c in msg["tool_calls"].as_array().into_iter().flatten() {
                ensure(c["type"] == "function", format!("tool call type {c}"))?;
                a.calls.push(Call {
                    id: str_of(&c["id"], "tool call id")?,
                    name: str_of(&c["function"]["name"], "function.name")?,
                    args: args_of(&str_of(&c["function"]["arguments"], "function.arguments")?)?,
                });
            }
            a.finish = str_of(&choice["finish_reason"], "finish_reason")?;
            let u = &v["usage"];
            if !u.is_null() {
                let (i, o) = (u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64());
                ensure(
                    u["total_tokens"].as_u64() == i.zip(o).map(|(i, o)| i + o),
                    format!("usage {u}"),
                )?;
                a.usage = i.zip(o);
            }
        }
        Wire::Responses => {
            ensure(v["object"] == "response", format!("object {}", v["object"]))?;
            ensure(v["id"].is_string(), "id".into())?;
            a.model = str_of(&v["model"], "model")?;
            a.finish = str_of(&v["status"], "status")?;
            if a.finish == "incomplete" {
                ensure(
                    v["incomplete_details"]["reason"] == "max_output_tokens",
                    format!("incomplete_details {}", v["incomplete_details"]),
                )?;
            }
            for item in v["output"].as_array().ok_or("no output")? {
                match item["type"].as_str() {
                    Some("message") => {
                        ensure(item["role"] == "assistant", format!("message {item}"))?;
                        for p in item["content"].as_array().into_iter().flatten() {
                            ensure(p["type"] == "output_text", format!("content part {p}"))?;
                            a.text += p["text"].as_str().unwrap_or_default();
                        }
                    }
                    Some("function_call") => a.calls.push(Call {
                        id: str_of(&item["call_id"], "call_id")?,
                        name: str_of(&item["name"], "name")?,
                        args: args_of(&str_of(&item["arguments"], "arguments")?)?,
                    }),
                    Some("reasoning") => {}
                    other => return Err(format!("output item type {other:?}")),
                }
            }
            let u = &v["usage"];
            if !u.is_null() {
                a.usage = u["input_tokens"].as_u64().zip(u["output_tokens"].as_u64());
            }
        }
        Wire::Anthropic => {
            ensure(
                v["type"] == "message" && v["role"] == "assistant",
                format!("type/role {} {}", v["type"], v["role"]),
            )?;
            ensure(v["id"].is_string(), "id".into())?;
            a.model = str_of(&v["model"], "model")?;
            for b in v["content"].as_array().ok_or("no content")? {
                match b["type"].as_str() {
                    Some("text") => a.text += b["text"].as_str().unwrap_or_default(),
                    Some("tool_use") => {
                        ensure(b["input"].is_object(), format!("tool_use input {b}"))?;
                        a.calls.push(Call {
                            id: str_of(&b["id"], "tool_use id")?,
                            name: str_of(&b["name"], "name")?,
                            args: b["input"].clone(),
                        })
                    }
                    Some("thinking") => {}
                    other => return Err(format!("content block type {other:?}")),
                }
            }
            a.finish = str_of(&v["stop_reason"], "stop_reason")?;
            let u = &v["usage"];
            a.usage = u["input_tokens"].as_u64().zip(u["output_tokens"].as_u64());
        }
        Wire::Gemini => {
            a.model = str_of(&v["modelVersion"], "modelVersion")?;
            let cand = &v["candidates"][0];
            ensure(
                cand["content"]["role"] == "model",
                format!("candidate role {}", cand["content"]["role"]),
            )?;
            gemini_parts(cand, &mut a)?;
            a.finish = str_of(&cand["finishReason"], "finishReason")?;
            let u = &v["usageMetadata"];
            a.usage = u["promptTokenCount"]
                .as_u64()
                .zip(u["candidatesTokenCount"].as_u64());
        }
    }
    Ok(a)
}

fn gemini_parts(cand: &Value, a: &mut Answer) -> Result<(), String> {
    for p in cand["content"]["parts"].as_array().into_iter().flatten() {
        if p["thought"] == true {
            continue;
        }
        if let Some(t) = p["text"].as_str() {
            a.text += t;
        } else if let Some(fc) = p.get("functionCall") {
            ensure(fc["args"].is_object(), format!("functionCall args {fc}"))?;
            a.calls.push(Call {
                id: fc["id"].as_str().unwrap_or_default().to_owned(),
                name: str_of(&fc["name"], "functionCall.name")?,
                args: fc["args"].clone(),
            });
        } else {
            return Err(format!("unexpected part {p}"));
        }
    }
    Ok(())
}

/// One SSE event: its `event:` name (if any) and its data.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

/// Splits an SSE body into events (blank-line separated; comments skipped).
pub fn sse_events(body: &str) -> Vec<Event> {
    let mut out = Vec::new();
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    for line in body.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            if !data.is_empty() || name.is_some() {
                out.push(Event {
                    name: name.take(),
                    data: data.join("\n"),
                });
                data.clear();
            }
        } else if let Some(n) = line.strip_prefix("event:") {
            name = Some(n.trim().to_owned());
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    if !data.is_empty() {
        out.push(Event {
            name,
            data: data.join("\n"),
        });
    }
    out
}

/// Reads a streamed answer in `wire`'s format, checking the event sequence
/// is one that format's SDK accepts. An error event fails with its text.
pub fn parse_stream_answer(wire: Wire, body: &str) -> Result<Answer, String> {
    let events = sse_events(body);
    ensure(!events.is_empty(), "empty stream".into())?;
    let mut a = Answer::default();
    match wire {
        Wire::Chat => {
            ensure(
                events.iter().all(|e| e.name.is_none()),
                "OpenAI chat events carry no names".into(),
            )?;
            let (last, chunks) = events.split_last().ok_or("no events")?;
            ensure(last.data == "[DONE]", format!("last event {:?}", last.data))?;
            // index → (id, name, arguments)
            let mut calls: Vec<(String, String, String)> = Vec::new();
            let mut id = None;
            for e in chunks {
                let v: Value = serde_json::from_str(&e.data)
                    .map_err(|err| format!("chunk {:?}: {err}", e.data))?;
                if v.get("error").is_some() {
                    return Err(format!("error event: {v}"));
                }
                ensure(
                    v["object"] == "chat.completion.chunk",
                    format!("chunk object {v}"),
                )?;
                let this_id = str_of(&v["id"], "chunk id")?;
                ensure(
                    id.get_or_insert_with(|| this_id.clone()) == &this_id,
                    "chunk ids differ".into(),
                )?;
                let m = str_of(&v["model"], "chunk model")?;
                if a.model.is_empty() {
                    a.model = m;
                } else {
                    ensure(
                        a.model == m,
                        format!("chunk models differ: {} vs {m}", a.model),
                    )?;
                }
                for c in v["choices"].as_array().ok_or("no choices")? {
                    let d = &c["delta"];
                    a.text += d["content"].as_str().unwrap_or_default();
                    for tc in d["tool_calls"].as_array().into_iter().flatten() {
                        let i = tc["index"]
                            .as_u64()
                            .ok_or("tool call delta without index")?
                            as usize;
                        if let Some(tid) = tc["id"].as_str() {
                            ensure(
                                i == calls.len(),
                                format!("tool call {i} opened out of order"),
                            )?;
                            ensure(tc["type"] == "function", format!("tool call start {tc}"))?;
                            calls.push((
                                tid.to_owned(),
                                str_of(&tc["function"]["name"], "function.name")?,
                                String::new(),
                            ));
                        }
                        let entry = calls
                            .get_mut(i)
                            .ok_or(format!("delta for unopened tool call {i}"))?;
                        entry.2 += tc["function"]["arguments"].as_str().unwrap_or_default();
                    }
                    if let Some(f) = c["finish_reason"].as_str() {
                        ensure(a.finish.is_empty(), "two finish reasons".into())?;
                        a.finish = f.to_owned();
                    }
                }
                if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                    ensure(
                        v["choices"].as_array().is_some_and(Vec::is_empty),
                        "usage on a chunk with choices".into(),
                    )?;
                    a.usage = u["prompt_tokens"]
                        .as_u64()
                        .zip(u["completion_tokens"].as_u64());
                }
            }
            for (id, name, args) in calls {
                a.calls.push(Call {
                    id,
                    name,
                    args: args_of(&args)?,
                });
            }
        }
        Wire::Responses => {
            let mut items: Vec<Value> = Vec::new(); // function_call items by output order
            let mut args: std::collections::HashMap<String, String> = Default::default();
            let mut last_seq: Option<u64> = None;
            let mut completed = None;
            for (n, e) in events.iter().enumerate() {
                let v: Value = serde_json::from_str(&e.data)
                    .map_err(|err| format!("event {:?}: {err}", e.data))?;
                let ty = str_of(&v["type"], "event type")?;
                ensure(
                    e.name.as_deref() == Some(ty.as_str()),
                    format!("event name {:?} for type {ty}", e.name),
                )?;
                if let Some(s) = v["sequence_number"].as_u64() {
                    ensure(
                        last_seq.is_none_or(|l| s > l),
                        format!("sequence_number {s} after {last_seq:?}"),
                    )?;
                    last_seq = Some(s);
                }
                if n == 0 {
                    ensure(ty == "response.created", format!("first event {ty}"))?;
                    a.model = str_of(&v["response"]["model"], "response.model")?;
                }
                match ty.as_str() {
                    "error" | "response.failed" => return Err(format!("error event: {v}")),
                    "response.output_text.delta" => {
                        a.text += v["delta"].as_str().unwrap_or_default()
                    }
                    "response.output_item.added" if v["item"]["type"] == "function_call" => {
                        items.push(v["item"].clone())
                    }
                    "response.function_call_arguments.delta" => {
                        *args.entry(str_of(&v["item_id"], "item_id")?).or_default() +=
                            v["delta"].as_str().unwrap_or_default();
                    }
                    "response.function_call_arguments.done" => {
                        let id = str_of(&v["item_id"], "item_id")?;
                        ensure(
                            args.get(&id).map(String::as_str).unwrap_or_default()
                                == v["arguments"].as_str().unwrap_or("?"),
                            format!("arguments.done {v} differs from the deltas {args:?}"),
                        )?;
                    }
                    "response.completed" | "response.incomplete" => {
                        ensure(n + 1 == events.len(), format!("events after {ty}"))?;
                        completed = Some(v["response"].clone());
                    }
                    _ => {}
                }
            }
            let done = completed.ok_or("no response.completed or response.incomplete")?;
            for item in items {
                let id = str_of(&item["id"], "function_call item id")?;
                a.calls.push(Call {
                    id: str_of(&item["call_id"], "call_id")?,
                    name: str_of(&item["name"], "name")?,
                    args: args_of(args.get(&id).map(String::as_str).unwrap_or_default())?,
                });
            }
            // The final response must tell the same story as the deltas.
            let whole = parse_json_answer(Wire::Responses, &done)?;
            ensure(
                whole.text == a.text,
                format!("completed text {:?} vs deltas {:?}", whole.text, a.text),
            )?;
            ensure(
                whole.calls == a.calls,
                format!("completed calls {:?} vs deltas {:?}", whole.calls, a.calls),
            )?;
            ensure(whole.model == a.model, "completed model differs".into())?;
            a.finish = whole.finish;
            a.usage = whole.usage;
        }
        Wire::Anthropic => {
            let mut open: Option<(usize, String)> = None; // index, type
            let mut next_index = 0usize;
            let mut input_tokens = None;
            let mut output_tokens = None;
            let mut cur_call: Option<(String, String, String)> = None;
            let real: Vec<&Event> = events
                .iter()
                .filter(|e| e.name.as_deref() != Some("ping"))
                .collect();
            for (n, e) in real.iter().enumerate() {
                let v: Value = serde_json::from_str(&e.data)
                    .map_err(|err| format!("event {:?}: {err}", e.data))?;
                let ty = str_of(&v["type"], "event type")?;
                ensure(
                    e.name.as_deref() == Some(ty.as_str()),
                    format!("event name {:?} for type {ty}", e.name),
                )?;
                match ty.as_str() {
                    "error" => return Err(format!("error event: {v}")),
                    "message_start" => {
                        ensure(n == 0, "message_start not first".into())?;
                        let m = &v["message"];
                        ensure(
                            m["type"] == "message" && m["role"] == "assistant",
                            format!("message_start {m}"),
                        )?;
                        a.model = str_of(&m["model"], "message.model")?;
                        input_tokens = m["usage"]["input_tokens"].as_u64();
                    }
                    "content_block_start" => {
                        ensure(open.is_none(), "block started inside a block".into())?;
                        let i = v["index"].as_u64().ok_or("no index")? as usize;
                        ensure(
                            i == next_index,
                            format!("block index {i}, expected {next_index}"),
                        )?;
                        next_index += 1;
                        let b = &v["content_block"];
                        let bt = str_of(&b["type"], "block type")?;
                        if bt == "tool_use" {
                            cur_call = Some((
                                str_of(&b["id"], "tool_use id")?,
                                str_of(&b["name"], "name")?,
                                String::new(),
                            ));
                        } else if bt == "text" {
                            a.text += b["text"].as_str().unwrap_or_default();
                        }
                        open = Some((i, bt));
                    }
                    "content_block_delta" => {
                        let (i, bt) = open.as_ref().ok_or("delta outside a block")?;
                        ensure(
                            v["index"].as_u64() == Some(*i as u64),
                            "delta for another block".into(),
                        )?;
                        let d = &v["delta"];
                        match (bt.as_str(), d["type"].as_str()) {
                            ("text", Some("text_delta")) => {
                                a.text += d["text"].as_str().unwrap_or_default()
                            }
                            ("tool_use", Some("input_json_delta")) => {
                                if let Some(c) = cur_call.as_mut() {
                                    c.2 += d["partial_json"].as_str().unwrap_or_default();
                                }
                            }
                            ("thinking", Some("thinking_delta" | "signature_delta")) => {}
                            (b, dt) => return Err(format!("{dt:?} delta in a {b} block")),
                        }
                    }
                    "content_block_stop" => {
                        let (i, bt) = open.take().ok_or("stop outside a block")?;
                        ensure(
                            v["index"].as_u64() == Some(i as u64),
                            "stop for another block".into(),
                        )?;
                        if bt == "tool_use" {
                            let (id, name, json) = cur_call.take().ok_or("tool_use lost")?;
                            let args = if json.is_empty() {
                                json!({})
                            } else {
                                args_of(&json)?
                            };
                            a.calls.push(Call { id, name, args });
                        }
                    }
                    "message_delta" => {
                        ensure(open.is_none(), "message_delta inside a block".into())?;
                        a.finish = str_of(&v["delta"]["stop_reason"], "stop_reason")?;
                        output_tokens = v["usage"]["output_tokens"].as_u64();
                        if let Some(i) = v["usage"]["input_tokens"].as_u64() {
                            input_tokens = Some(i);
                        }
                    }
                    "message_stop" => {
                        ensure(n + 1 == real.len(), "events after message_stop".into())?
                    }
                    other => return Err(format!("unknown event type {other}")),
                }
            }
            ensure(
                real.last()
                    .is_some_and(|e| e.name.as_deref() == Some("message_stop")),
                "no message_stop".into(),
            )?;
            a.usage = input_tokens.zip(output_tokens);
        }
        Wire::Gemini => {
            ensure(
                !body
                    .lines()
                    .any(|l| !l.trim().is_empty() && !l.starts_with("data:")),
                format!("Gemini streams carry `data:` lines only: {body}"),
            )?;
            for e in &events {
                let v: Value = serde_json::from_str(&e.data)
                    .map_err(|err| format!("chunk {:?}: {err}", e.data))?;
                if v.get("error").is_some() {
                    return Err(format!("error event: {v}"));
                }
                let m = str_of(&v["modelVersion"], "modelVersion")?;
                if a.model.is_empty() {
                    a.model = m;
                } else {
                    ensure(
                        a.model == m,
                        format!("modelVersion differs: {} vs {m}", a.model),
                    )?;
                }
                if let Some(cand) = v["candidates"].get(0) {
                    gemini_parts(cand, &mut a)?;
                    if let Some(f) = cand["finishReason"].as_str() {
                        a.finish = f.to_owned();
                    }
                }
                let u = &v["usageMetadata"];
                if let Some(x) = u["promptTokenCount"]
                    .as_u64()
                    .zip(u["candidatesTokenCount"].as_u64())
                {
                    a.usage = Some(x);
                }
            }
        }
    }
    Ok(a)
}

/// The error event(s) of a stream in `wire`'s format, and the events that
/// follow the first one.
pub fn stream_errors(wire: Wire, body: &str) -> (Vec<Value>, usize) {
    let events = sse_events(body);
    let is_error = |e: &Event| -> Option<Value> {
        let v: Value = serde_json::from_str(&e.data).ok()?;
        let err = match wire {
            Wire::Chat | Wire::Gemini => v.get("error").is_some(),
            Wire::Responses => {
                matches!(v["type"].as_str(), Some("error" | "response.failed"))
                    && e.name.as_deref() == v["type"].as_str()
            }
            Wire::Anthropic => v["type"] == "error" && e.name.as_deref() == Some("error"),
        };
        err.then_some(v)
    };
    let mut errors = Vec::new();
    let mut after = 0;
    for e in &events {
        if let Some(v) = is_error(e) {
            errors.push(v);
        } else if !errors.is_empty() {
            let closing = wire == Wire::Chat && e.data == "[DONE]";
            if !closing {
                after += 1;
            }
        }
    }
    (errors, after)
}
