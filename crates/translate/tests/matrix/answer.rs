//! One abstract answer, written in every provider's wire format (a JSON
//! body and an SSE transcript), and the view of an answer that a client
//! reads back.

use apiproxy_translate::{FinishReason, Format};
use serde_json::{json, Value};

/// A tool call; `args` is its arguments JSON text, cut into stream deltas.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub args: Vec<String>,
}

impl Call {
    pub fn args_text(&self) -> String {
        self.args.concat()
    }

    /// The arguments object; no argument text at all means `{}`.
    pub fn args_value(&self) -> Value {
        let text = self.args_text();
        if text.is_empty() {
            return json!({});
        }
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// Token counts in the IR convention: `input` includes `cached`, `output`
/// includes `reasoning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub reasoning: Option<u64>,
}

/// How the answer ended, as a provider would say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The natural end: `stop` without tool calls, `tool_calls` with.
    Natural,
    Length,
    Filter,
}

/// An answer as the model produced it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub thinking: Vec<String>,
    /// The signature closing the thinking (only with thinking).
    pub signature: Option<String>,
    pub text: Vec<String>,
    pub calls: Vec<Call>,
    pub usage: Tokens,
    pub end: End,
}

impl Answer {
    /// The finish reason every client must end up with.
    pub fn finish(&self) -> FinishReason {
        match self.end {
            End::Natural if self.calls.is_empty() => FinishReason::Stop,
            End::Natural => FinishReason::ToolCalls,
            End::Length => FinishReason::Length,
            End::Filter => FinishReason::ContentFilter,
        }
    }

    /// What a client of `client` must read back when `provider` answered.
    pub fn expected(&self, provider: Format, client: Format) -> View {
        let signed = |f: Format| f != Format::OpenAiChat;
        let reasoning = |f: Format| f != Format::Anthropic;
        View {
            thinking: self.thinking.concat(),
            // As the provider issued it to a client of its own kind, else
            // wrapped with the issuing kind (see `signature`).
            signature: self
                .signature
                .clone()
                .filter(|_| signed(provider) && signed(client))
                .map(|s| {
                    if provider == client {
                        s
                    } else {
                        apiproxy_translate::signature::wrap(provider, &s)
                    }
                }),
            text: self.text.concat(),
            calls: self
                .calls
                .iter()
                .map(|c| ViewCall {
                    // Gemini mints its own ids.
                    id: (provider != Format::Gemini).then(|| c.id.clone()),
                    name: c.name.clone(),
                    args: c.args_value(),
                })
                .collect(),
            input: self.usage.input,
            cached: self.usage.cached,
            output: self.usage.output,
            reasoning: (reasoning(provider) && reasoning(client))
                .then(|| self.usage.reasoning.unwrap_or(0)),
            finish: self.finish(),
        }
    }
}

/// A tool call as a client read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewCall {
    /// `None`: any non-empty id will do (compared with `matches`).
    pub id: Option<String>,
    pub name: String,
    pub args: Value,
}

/// An answer as a client read it back.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub thinking: String,
    pub signature: Option<String>,
    pub text: String,
    pub calls: Vec<ViewCall>,
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    /// Compared only when both formats carry reasoning tokens.
    pub reasoning: Option<u64>,
    pub finish: FinishReason,
}

impl View {
    /// Asserts `self` (what the client read) matches `want`.
    pub fn assert_matches(&self, want: &View, ctx: &str) {
        assert_eq!(self.thinking, want.thinking, "{ctx}: thinking");
        assert_eq!(self.signature, want.signature, "{ctx}: thinking signature");
        assert_eq!(self.text, want.text, "{ctx}: text");
        assert_eq!(
            self.calls.len(),
            want.calls.len(),
            "{ctx}: tool calls {:?}",
            self.calls
        );
        let mut ids = Vec::new();
        for (k, (got, want)) in self.calls.iter().zip(&want.calls).enumerate() {
            assert_eq!(got.name, want.name, "{ctx}: call {k} name");
            assert_eq!(got.args, want.args, "{ctx}: call {k} arguments");
            let id = got.id.clone().unwrap_or_default();
            assert!(!id.is_empty(), "{ctx}: call {k} has no id");
            if let Some(w) = &want.id {
                assert_eq!(&id, w, "{ctx}: call {k} id");
            }
            assert!(!ids.contains(&id), "{ctx}: call {k} id {id} repeated");
            ids.push(id);
        }
        assert_eq!(
            (self.input, self.cached, self.output),
            (want.input, want.cached, want.output),
            "{ctx}: usage (input incl. cached, cached, output)"
        );
        if want.reasoning.is_some() {
            assert_eq!(
                self.reasoning.unwrap_or(0),
                want.reasoning.unwrap_or(0),
                "{ctx}: reasoning tokens"
            );
        }
        assert_eq!(self.finish, want.finish, "{ctx}: finish reason");
    }
}

/// The fixed answer of the matrix tests: thinking, text, two parallel tool
/// calls with streamed arguments, cached input tokens, a tool-call finish.
pub fn sample_answer() -> Answer {
    Answer {
        thinking: vec!["The user wants ".into(), "weather and time.".into()],
        signature: Some("EqQBCkYIARgCKkA0sig==".into()),
        text: vec!["Checking ".into(), "both \"now\".".into()],
        calls: vec![
            Call {
                id: "call_weather_1".into(),
                name: "get_weather".into(),
                args: vec!["{\"city\":".into(), "\"Paris\",\"unit\":\"c\"}".into()],
            },
            Call {
                id: "call_time_2".into(),
                name: "get_time".into(),
                args: vec!["{\"tz\":\"Europe/".into(), "Paris\",\"h24\":true}".into()],
            },
        ],
        usage: Tokens {
            input: 1200,
            cached: 1000,
            output: 90,
            reasoning: Some(30),
        },
        end: End::Natural,
    }
}

// ---------------------------------------------------------------------------
// Provider wire: non-streaming bodies
// ---------------------------------------------------------------------------

/// The answer as `provider`'s non-streaming response body.
pub fn provider_body(provider: Format, a: &Answer) -> Value {
    match provider {
        // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
        Format::Bedrock => unreachable!("Bedrock is not in this matrix"),
        Format::OpenAiChat => chat_body(a),
        Format::OpenAiResponses => responses_body(a),
        Format::Anthropic => anthropic_body(a),
        Format::Gemini => gemini_body(a),
    }
}

fn chat_finish(a: &Answer) -> &'static str {
    match a.end {
        End::Natural if a.calls.is_empty() => "stop",
        End::Natural => "tool_calls",
        End::Length => "length",
        End::Filter => "content_filter",
    }
}

fn chat_usage(u: &Tokens) -> Value {
    let mut v = json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
    });
    if let Some(r) = u.reasoning {
        v["completion_tokens_details"] = json!({"reasoning_tokens": r, "audio_tokens": 0});
    }
    v
}

fn chat_body(a: &Answer) -> Value {
    let text = a.text.concat();
    let mut msg = json!({
        "role": "assistant",
        "content": if text.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    if !a.thinking.is_empty() {
        msg["reasoning_content"] = json!(a.thinking.concat());
    }
    if !a.calls.is_empty() {
        msg["tool_calls"] = a
            .calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.args_text()}}))
            .collect();
    }
    json!({
        "id": "chatcmpl-Bx1", "object": "chat.completion", "created": 1_760_000_000u64,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": msg, "logprobs": null, "finish_reason": chat_finish(a)}],
        "usage": chat_usage(&a.usage),
        "system_fingerprint": "fp_1",
    })
}

fn responses_status(a: &Answer) -> (&'static str, Value) {
    match a.end {
        End::Natural => ("completed", Value::Null),
        End::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
        End::Filter => ("incomplete", json!({"reason": "content_filter"})),
    }
}

fn responses_usage(u: &Tokens) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning.unwrap_or(0)},
        "total_tokens": u.input + u.output,
    })
}

/// Responses output items: (item id, the finished item).
fn responses_items(a: &Answer) -> Vec<(String, Value)> {
    let mut items = Vec::new();
    if !a.thinking.is_empty() {
        let mut it = json!({"type": "reasoning", "id": "rs_1",
            "summary": [{"type": "summary_text", "text": a.thinking.concat()}]});
        if let Some(s) = &a.signature {
            it["encrypted_content"] = json!(s);
        }
        items.push(("rs_1".to_owned(), it));
    }
    if !a.text.is_empty() {
        items.push((
            "msg_1".to_owned(),
            json!({"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": a.text.concat(), "annotations": []}]}),
        ));
    }
    for (k, c) in a.calls.iter().enumerate() {
        let id = format!("fc_{k}");
        items.push((
            id.clone(),
            json!({"type": "function_call", "id": id, "call_id": c.id, "name": c.name,
                "arguments": c.args_text(), "status": "completed"}),
        ));
    }
    items
}

fn responses_object(a: &Answer, done: bool) -> Value {
    let (status, details) = if done {
        responses_status(a)
    } else {
        ("in_progress", Value::Null)
    };
    json!({
        "id": "resp_abc", "object": "response", "created_at": 1_760_000_000u64,
        "status": status, "error": null, "incomplete_details": details,
        "model": "gpt-5-2025-08-07",
        "output": if done { responses_items(a).into_iter().map(|(_, v)| v).collect() } else { vec![] },
        "usage": if done { responses_usage(&a.usage) } else { Value::Null },
    })
}

fn responses_body(a: &Answer) -> Value {
    responses_object(a, true)
}

fn anthropic_stop(a: &Answer) -> &'static str {
    match a.end {
        End::Natural if a.calls.is_empty() => "end_turn",
        End::Natural => "tool_use",
        End::Length => "max_tokens",
        End::Filter => "refusal",
    }
}

fn anthropic_usage(u: &Tokens, output: u64) -> Value {
    json!({
        "input_tokens": u.input - u.cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached,
        "output_tokens": output,
    })
}

fn anthropic_body(a: &Answer) -> Value {
    let mut content = Vec::new();
    if !a.thinking.is_empty() {
        content.push(json!({"type": "thinking", "thinking": a.thinking.concat(),
            "signature": a.signature.clone().unwrap_or_default()}));
    }
    if !a.text.is_empty() {
        content.push(json!({"type": "text", "text": a.text.concat()}));
    }
    for c in &a.calls {
        content
            .push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.args_value()}));
    }
    json!({
        "id": "msg_01Xyz", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "content": content,
        "stop_reason": anthropic_stop(a), "stop_sequence": null,
        "usage": anthropic_usage(&a.usage, a.usage.output),
    })
}

fn gemini_finish(a: &Answer) -> &'static str {
    match a.end {
        End::Natural => "STOP",
        End::Length => "MAX_TOKENS",
        End::Filter => "SAFETY",
    }
}

fn gemini_usage(u: &Tokens) -> Value {
    let thoughts = u.reasoning.unwrap_or(0);
    let mut v = json!({
        "promptTokenCount": u.input,
        "candidatesTokenCount": u.output - thoughts,
        "cachedContentTokenCount": u.cached,
        "totalTokenCount": u.input + u.output,
    });
    if let Some(r) = u.reasoning {
        v["thoughtsTokenCount"] = json!(r);
    }
    v
}

fn gemini_thought(text: &str, signature: Option<&String>) -> Value {
    let mut p = json!({"text": text, "thought": true});
    if let Some(s) = signature {
        p["thoughtSignature"] = json!(s);
    }
    p
}

fn gemini_call(c: &Call) -> Value {
    json!({"functionCall": {"name": c.name, "args": c.args_value()}})
}

fn gemini_body(a: &Answer) -> Value {
    let mut parts = Vec::new();
    if !a.thinking.is_empty() {
        parts.push(gemini_thought(&a.thinking.concat(), a.signature.as_ref()));
    }
    if !a.text.is_empty() {
        parts.push(json!({"text": a.text.concat()}));
    }
    parts.extend(a.calls.iter().map(gemini_call));
    json!({
        "candidates": [{"content": {"role": "model", "parts": parts},
            "finishReason": gemini_finish(a), "index": 0}],
        "usageMetadata": gemini_usage(&a.usage),
        "modelVersion": "gemini-2.5-flash", "responseId": "gem-resp-1",
    })
}

// ---------------------------------------------------------------------------
// Provider wire: SSE transcripts
// ---------------------------------------------------------------------------

/// The answer as `provider`'s SSE stream, the way that provider writes it.
pub fn provider_stream(provider: Format, a: &Answer) -> String {
    match provider {
        // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
        Format::Bedrock => unreachable!("Bedrock is not in this matrix"),
        Format::OpenAiChat => chat_stream(a),
        Format::OpenAiResponses => responses_stream(a),
        Format::Anthropic => anthropic_stream(a),
        Format::Gemini => gemini_stream(a),
    }
}

fn data(out: &mut String, v: &Value) {
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
}

fn event(out: &mut String, name: &str, v: &Value) {
    out.push_str("event: ");
    out.push_str(name);
    out.push('\n');
    data(out, v);
}

fn chat_stream(a: &Answer) -> String {
    let mut out = String::new();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-Bx1", "object": "chat.completion.chunk", "created": 1_760_000_000u64,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    data(
        &mut out,
        &chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ),
    );
    for t in &a.thinking {
        data(
            &mut out,
            &chunk(json!({"reasoning_content": t}), Value::Null),
        );
    }
    for t in &a.text {
        data(&mut out, &chunk(json!({"content": t}), Value::Null));
    }
    for (k, c) in a.calls.iter().enumerate() {
        data(
            &mut out,
            &chunk(
                json!({"tool_calls": [{"index": k, "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": ""}}]}),
                Value::Null,
            ),
        );
        for d in &c.args {
            data(
                &mut out,
                &chunk(
                    json!({"tool_calls": [{"index": k, "function": {"arguments": d}}]}),
                    Value::Null,
                ),
            );
        }
    }
    data(&mut out, &chunk(json!({}), json!(chat_finish(a))));
    data(
        &mut out,
        &json!({"id": "chatcmpl-Bx1", "object": "chat.completion.chunk", "created": 1_760_000_000u64,
            "model": "gpt-4o-2024-08-06", "choices": [], "usage": chat_usage(&a.usage)}),
    );
    out.push_str("data: [DONE]\n\n");
    out
}

fn responses_stream(a: &Answer) -> String {
    let mut out = String::new();
    let mut seq = 0u64;
    let mut ev = |out: &mut String, mut v: Value| {
        v["sequence_number"] = json!(seq);
        seq += 1;
        let name = v["type"].as_str().unwrap_or_default().to_owned();
        event(out, &name, &v);
    };
    ev(
        &mut out,
        json!({"type": "response.created", "response": responses_object(a, false)}),
    );
    ev(
        &mut out,
        json!({"type": "response.in_progress", "response": responses_object(a, false)}),
    );
    for (idx, (id, item)) in responses_items(a).into_iter().enumerate() {
        match item["type"].as_str() {
            Some("reasoning") => {
                ev(
                    &mut out,
                    json!({"type": "response.output_item.added", "output_index": idx,
                    "item": {"type": "reasoning", "id": id, "summary": []}}),
                );
                ev(
                    &mut out,
                    json!({"type": "response.reasoning_summary_part.added", "item_id": id,
                    "output_index": idx, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
                );
                for t in &a.thinking {
                    ev(
                        &mut out,
                        json!({"type": "response.reasoning_summary_text.delta", "item_id": id,
                        "output_index": idx, "summary_index": 0, "delta": t}),
                    );
                }
                ev(
                    &mut out,
                    json!({"type": "response.reasoning_summary_text.done", "item_id": id,
                    "output_index": idx, "summary_index": 0, "text": a.thinking.concat()}),
                );
                ev(
                    &mut out,
                    json!({"type": "response.reasoning_summary_part.done", "item_id": id,
                    "output_index": idx, "summary_index": 0,
                    "part": {"type": "summary_text", "text": a.thinking.concat()}}),
                );
            }
            Some("message") => {
                ev(
                    &mut out,
                    json!({"type": "response.output_item.added", "output_index": idx,
                    "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}}),
                );
                ev(
                    &mut out,
                    json!({"type": "response.content_part.added", "item_id": id, "output_index": idx,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
                );
                for t in &a.text {
                    ev(
                        &mut out,
                        json!({"type": "response.output_text.delta", "item_id": id,
                        "output_index": idx, "content_index": 0, "delta": t, "logprobs": []}),
                    );
                }
                ev(
                    &mut out,
                    json!({"type": "response.output_text.done", "item_id": id, "output_index": idx,
                    "content_index": 0, "text": a.text.concat(), "logprobs": []}),
                );
                ev(
                    &mut out,
                    json!({"type": "response.content_part.done", "item_id": id, "output_index": idx,
                    "content_index": 0, "part": {"type": "output_text", "text": a.text.concat(), "annotations": []}}),
                );
            }
            _ => {
                let mut added = item.clone();
                added["arguments"] = json!("");
                added["status"] = json!("in_progress");
                ev(
                    &mut out,
                    json!({"type": "response.output_item.added", "output_index": idx, "item": added}),
                );
                let k: usize = id.trim_start_matches("fc_").parse().unwrap_or(0);
                for d in &a.calls[k].args {
                    ev(
                        &mut out,
                        json!({"type": "response.function_call_arguments.delta", "item_id": id,
                        "output_index": idx, "delta": d}),
                    );
                }
                ev(
                    &mut out,
                    json!({"type": "response.function_call_arguments.done", "item_id": id,
                    "output_index": idx, "arguments": a.calls[k].args_text()}),
                );
            }
        }
        ev(
            &mut out,
            json!({"type": "response.output_item.done", "output_index": idx, "item": item}),
        );
    }
    let last = match a.end {
        End::Natural => "response.completed",
        _ => "response.incomplete",
    };
    ev(
        &mut out,
        json!({"type": last, "response": responses_object(a, true)}),
    );
    out
}

fn anthropic_stream(a: &Answer) -> String {
    let mut out = String::new();
    let ev = |out: &mut String, v: Value| {
        let name = v["type"].as_str().unwrap_or_default().to_owned();
        event(out, &name, &v);
    };
    ev(
        &mut out,
        json!({"type": "message_start", "message": {
        "id": "msg_01Xyz", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null,
        "stop_sequence": null, "usage": anthropic_usage(&a.usage, 1)}}),
    );
    ev(&mut out, json!({"type": "ping"}));
    let mut index = 0;
    if !a.thinking.is_empty() {
        ev(
            &mut out,
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        );
        for t in &a.thinking {
            ev(
                &mut out,
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "thinking_delta", "thinking": t}}),
            );
        }
        if let Some(s) = &a.signature {
            ev(
                &mut out,
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "signature_delta", "signature": s}}),
            );
        }
        ev(
            &mut out,
            json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    if !a.text.is_empty() {
        ev(
            &mut out,
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}),
        );
        for t in &a.text {
            ev(
                &mut out,
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": t}}),
            );
        }
        ev(
            &mut out,
            json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    for c in &a.calls {
        ev(
            &mut out,
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}}),
        );
        for d in &c.args {
            ev(
                &mut out,
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": d}}),
            );
        }
        ev(
            &mut out,
            json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    ev(
        &mut out,
        json!({"type": "message_delta",
        "delta": {"stop_reason": anthropic_stop(a), "stop_sequence": null},
        "usage": {"output_tokens": a.usage.output}}),
    );
    ev(&mut out, json!({"type": "message_stop"}));
    out
}

fn gemini_stream(a: &Answer) -> String {
    let mut out = String::new();
    let chunk = |parts: Vec<Value>, finish: Option<&str>, usage: Value| {
        let mut cand = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            cand["finishReason"] = json!(f);
        }
        json!({"candidates": [cand], "usageMetadata": usage,
            "modelVersion": "gemini-2.5-flash", "responseId": "gem-resp-1"})
    };
    // Gemini repeats the prompt count on every chunk; the full counts come last.
    let early = json!({"promptTokenCount": a.usage.input,
        "cachedContentTokenCount": a.usage.cached, "totalTokenCount": a.usage.input});
    for (k, t) in a.thinking.iter().enumerate() {
        let sig = a.signature.as_ref().filter(|_| k + 1 == a.thinking.len());
        data(
            &mut out,
            &chunk(vec![gemini_thought(t, sig)], None, early.clone()),
        );
    }
    for t in &a.text {
        data(
            &mut out,
            &chunk(vec![json!({"text": t})], None, early.clone()),
        );
    }
    if !a.calls.is_empty() {
        // Gemini sends parallel calls whole, together.
        data(
            &mut out,
            &chunk(
                a.calls.iter().map(gemini_call).collect(),
                None,
                early.clone(),
            ),
        );
    }
    data(
        &mut out,
        &chunk(
            vec![json!({"text": ""})],
            Some(gemini_finish(a)),
            gemini_usage(&a.usage),
        ),
    );
    out
}
