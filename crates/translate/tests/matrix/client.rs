//! What a client reads: non-streaming bodies parsed by each client format's
//! own field names, streams decoded with the client format's own decoder,
//! and the structural rules each client's SSE must follow.

use apiproxy_translate::{FinishReason, Format, SseEvent, SseParser, StreamEvent};
use serde_json::Value;

use super::answer::{View, ViewCall};

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn args_of(v: &Value) -> Value {
    match v {
        Value::String(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        other => other.clone(),
    }
}

fn empty_view() -> View {
    View {
        thinking: String::new(),
        signature: None,
        text: String::new(),
        calls: Vec::new(),
        input: 0,
        cached: 0,
        output: 0,
        reasoning: None,
        finish: FinishReason::Other("none".into()),
    }
}

/// A non-streaming client body, read with the client format's field names.
pub fn read_body(client: Format, body: &[u8]) -> View {
    let v: Value = serde_json::from_slice(body).expect("client body is JSON");
    let mut view = empty_view();
    match client {
        // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
        Format::Bedrock => unreachable!("Bedrock is not in this matrix"),
        Format::OpenAiChat => {
            assert_eq!(v["object"], "chat.completion");
            let m = &v["choices"][0]["message"];
            assert_eq!(m["role"], "assistant");
            view.text = s(&m["content"]);
            view.thinking = s(&m["reasoning_content"]);
            for c in m["tool_calls"].as_array().into_iter().flatten() {
                assert_eq!(c["type"], "function");
                assert!(
                    c["function"]["arguments"].is_string(),
                    "arguments are JSON text"
                );
                view.calls.push(ViewCall {
                    id: c["id"].as_str().map(str::to_owned),
                    name: s(&c["function"]["name"]),
                    args: args_of(&c["function"]["arguments"]),
                });
            }
            view.finish = match v["choices"][0]["finish_reason"].as_str() {
                Some("stop") => FinishReason::Stop,
                Some("tool_calls") => FinishReason::ToolCalls,
                Some("length") => FinishReason::Length,
                Some("content_filter") => FinishReason::ContentFilter,
                other => FinishReason::Other(format!("{other:?}")),
            };
            let us = &v["usage"];
            view.input = u(&us["prompt_tokens"]);
            view.output = u(&us["completion_tokens"]);
            view.cached = u(&us["prompt_tokens_details"]["cached_tokens"]);
            view.reasoning = us["completion_tokens_details"]["reasoning_tokens"].as_u64();
            assert_eq!(
                u(&us["total_tokens"]),
                view.input + view.output,
                "total_tokens"
            );
        }
        Format::OpenAiResponses => {
            assert_eq!(v["object"], "response");
            for item in v["output"].as_array().into_iter().flatten() {
                match item["type"].as_str() {
                    Some("reasoning") => {
                        for p in item["summary"].as_array().into_iter().flatten() {
                            view.thinking
                                .push_str(p["text"].as_str().unwrap_or_default());
                        }
                        view.signature = item["encrypted_content"].as_str().map(str::to_owned);
                    }
                    Some("message") => {
                        assert_eq!(item["role"], "assistant");
                        for p in item["content"].as_array().into_iter().flatten() {
                            assert_eq!(p["type"], "output_text");
                            view.text.push_str(p["text"].as_str().unwrap_or_default());
                        }
                    }
                    Some("function_call") => view.calls.push(ViewCall {
                        id: item["call_id"].as_str().map(str::to_owned),
                        name: s(&item["name"]),
                        args: args_of(&item["arguments"]),
                    }),
                    other => panic!("unexpected output item {other:?}"),
                }
            }
            view.finish = responses_finish(&v, !view.calls.is_empty());
            let us = &v["usage"];
            view.input = u(&us["input_tokens"]);
            view.output = u(&us["output_tokens"]);
            view.cached = u(&us["input_tokens_details"]["cached_tokens"]);
            view.reasoning = us["output_tokens_details"]["reasoning_tokens"].as_u64();
            assert_eq!(
                u(&us["total_tokens"]),
                view.input + view.output,
                "total_tokens"
            );
        }
        Format::Anthropic => {
            assert_eq!(v["type"], "message");
            assert_eq!(v["role"], "assistant");
            for b in v["content"].as_array().into_iter().flatten() {
                match b["type"].as_str() {
                    Some("thinking") => {
                        view.thinking
                            .push_str(b["thinking"].as_str().unwrap_or_default());
                        view.signature = b["signature"]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned);
                    }
                    Some("text") => view.text.push_str(b["text"].as_str().unwrap_or_default()),
                    Some("tool_use") => {
                        assert!(b["input"].is_object(), "tool_use.input is an object");
                        view.calls.push(ViewCall {
                            id: b["id"].as_str().map(str::to_owned),
                            name: s(&b["name"]),
                            args: b["input"].clone(),
                        })
                    }
                    other => panic!("unexpected content block {other:?}"),
                }
            }
            view.finish = anthropic_finish(v["stop_reason"].as_str());
            let us = &v["usage"];
            // Anthropic's input_tokens excludes cache reads and writes.
            view.cached = u(&us["cache_read_input_tokens"]);
            view.input =
                u(&us["input_tokens"]) + view.cached + u(&us["cache_creation_input_tokens"]);
            view.output = u(&us["output_tokens"]);
        }
        Format::Gemini => {
            let cand = &v["candidates"][0];
            for p in cand["content"]["parts"].as_array().into_iter().flatten() {
                read_gemini_part(p, &mut view);
            }
            view.finish = gemini_finish(cand["finishReason"].as_str(), !view.calls.is_empty());
            read_gemini_usage(&v["usageMetadata"], &mut view);
        }
    }
    view
}

fn read_gemini_part(p: &Value, view: &mut View) {
    if let Some(sig) = p["thoughtSignature"].as_str() {
        view.signature = Some(sig.to_owned());
    }
    if let Some(t) = p["text"].as_str() {
        if p["thought"] == true {
            view.thinking.push_str(t);
        } else {
            view.text.push_str(t);
        }
    } else if p["functionCall"].is_object() {
        let c = &p["functionCall"];
        assert!(c["args"].is_object(), "functionCall.args is an object");
        view.calls.push(ViewCall {
            id: c["id"].as_str().map(str::to_owned),
            name: s(&c["name"]),
            args: c["args"].clone(),
        });
    } else {
        // Only a signature-carrying part may hold nothing else.
        let lone = p.as_object().is_some_and(|o| o.len() == 1);
        assert!(lone, "unexpected Gemini part {p}");
    }
}

fn read_gemini_usage(us: &Value, view: &mut View) {
    let thoughts = us["thoughtsTokenCount"].as_u64();
    view.input = u(&us["promptTokenCount"]);
    view.cached = u(&us["cachedContentTokenCount"]);
    view.output = u(&us["candidatesTokenCount"]) + thoughts.unwrap_or(0);
    view.reasoning = thoughts;
    assert_eq!(
        u(&us["totalTokenCount"]),
        view.input + view.output,
        "totalTokenCount"
    );
}

fn responses_finish(resp: &Value, called: bool) -> FinishReason {
    match (
        resp["status"].as_str(),
        resp["incomplete_details"]["reason"].as_str(),
    ) {
        (Some("completed"), _) if called => FinishReason::ToolCalls,
        (Some("completed"), _) => FinishReason::Stop,
        (Some("incomplete"), Some("max_output_tokens")) => FinishReason::Length,
        (Some("incomplete"), Some("content_filter")) => FinishReason::ContentFilter,
        other => FinishReason::Other(format!("{other:?}")),
    }
}

fn anthropic_finish(r: Option<&str>) -> FinishReason {
    match r {
        Some("end_turn") => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        other => FinishReason::Other(format!("{other:?}")),
    }
}

fn gemini_finish(r: Option<&str>, called: bool) -> FinishReason {
    match r {
        Some("STOP") if called => FinishReason::ToolCalls,
        Some("STOP") => FinishReason::Stop,
        Some("MAX_TOKENS") => FinishReason::Length,
        Some("SAFETY") => FinishReason::ContentFilter,
        other => FinishReason::Other(format!("{other:?}")),
    }
}

/// Splits `bytes` into chunks of 1..=`max` bytes chosen by `seed`, the
/// way reads come off a socket (cutting through UTF-8 sequences too).
pub fn chunks(bytes: &[u8], seed: u64, max: usize) -> Vec<&[u8]> {
    let mut state = seed | 1;
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = (state as usize % max.max(1)) + 1;
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

/// Parses SSE bytes fed in random small chunks.
pub fn parse_sse(bytes: &[u8], seed: u64) -> Vec<SseEvent> {
    let mut p = SseParser::default();
    let mut evs = Vec::new();
    for c in chunks(bytes, seed, 17) {
        p.feed(c, &mut evs).expect("event within limits");
    }
    p.finish(&mut evs);
    evs
}

/// Neutral events → the answer they describe (what an SDK assembles). A
/// call with no argument text is `{}` only for Anthropic clients (their
/// `tool_use` block starts with `input: {}`); OpenAI SDKs parse the
/// accumulated text, so an empty one is an error.
pub fn assemble(client: Format, events: &[StreamEvent]) -> (View, Vec<String>) {
    let mut view = empty_view();
    let mut errors = Vec::new();
    let mut calls: Vec<(u32, ViewCall, String)> = Vec::new();
    let mut starts = 0;
    for ev in events {
        match ev {
            StreamEvent::Start { .. } => starts += 1,
            StreamEvent::TextDelta { text } => view.text.push_str(text),
            StreamEvent::ThinkingDelta { text } => view.thinking.push_str(text),
            StreamEvent::ThinkingSignature { signature } => {
                view.signature = Some(signature.clone())
            }
            StreamEvent::RedactedThinking { .. } => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                assert!(
                    !calls.iter().any(|(i, ..)| i == index),
                    "tool call {index} started twice"
                );
                calls.push((
                    *index,
                    ViewCall {
                        id: Some(id.clone()),
                        name: name.clone(),
                        args: Value::Null,
                    },
                    String::new(),
                ));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                match calls.iter_mut().find(|(i, ..)| i == index) {
                    Some((_, _, args)) => args.push_str(arguments),
                    None => panic!("arguments for tool call {index} before its start"),
                }
            }
            StreamEvent::Usage(us) => {
                view.input = us.input_tokens;
                view.output = us.output_tokens;
                view.cached = us.cached_input_tokens.unwrap_or(0);
                view.reasoning = us.reasoning_tokens;
            }
            StreamEvent::Finish { reason } => view.finish = reason.clone(),
            StreamEvent::Error { message } => errors.push(message.clone()),
        }
    }
    assert!(starts <= 1, "{starts} Start events");
    calls.sort_by_key(|(i, ..)| *i);
    view.calls = calls
        .into_iter()
        .map(|(_, mut c, args)| {
            let args = if args.is_empty() && client == Format::Anthropic {
                "{}".to_owned()
            } else {
                args
            };
            // Not JSON: a value no expected answer holds, so a comparison fails.
            c.args = serde_json::from_str(&args)
                .unwrap_or_else(|e| Value::String(format!("<not JSON: {args:?}: {e}>")));
            c
        })
        .collect();
    (view, errors)
}

/// The client stream is well formed for its format. `failed`: the stream
/// ended with `fail()`, so it must end with exactly one error event.
pub fn check_stream_shape(client: Format, bytes: &[u8], failed: bool) {
    let text = std::str::from_utf8(bytes).expect("client SSE is UTF-8");
    let events = parse_sse(bytes, 7);
    assert!(!events.is_empty(), "empty client stream");
    let json = |e: &SseEvent| -> Value {
        serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("bad JSON {:?}: {err}", e.data))
    };
    match client {
        // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
        Format::Bedrock => unreachable!("Bedrock is not in this matrix"),
        Format::OpenAiChat => {
            let done: Vec<usize> = (0..events.len()).filter(|&i| events[i].is_done()).collect();
            assert_eq!(done, vec![events.len() - 1], "exactly one [DONE], last");
            assert!(
                events.iter().all(|e| e.event.is_none()),
                "chat SSE has no event names"
            );
            let body = &events[..events.len() - 1];
            let errors: Vec<usize> = (0..body.len())
                .filter(|&i| json(&body[i]).get("error").is_some())
                .collect();
            if failed {
                assert_eq!(
                    errors,
                    vec![body.len() - 1],
                    "one error, right before [DONE]"
                );
                let e = json(&body[body.len() - 1]);
                assert_eq!(e["error"]["type"], "upstream_error");
                assert!(e["error"]["message"].is_string());
            } else {
                assert!(errors.is_empty(), "no error events");
                let finishes = body
                    .iter()
                    .filter(|e| {
                        json(e)["choices"]
                            .as_array()
                            .is_some_and(|c| c.iter().any(|c| !c["finish_reason"].is_null()))
                    })
                    .count();
                assert_eq!(finishes, 1, "exactly one chunk carries the finish_reason");
            }
            for e in body.iter().filter(|e| json(e).get("error").is_none()) {
                assert_eq!(json(e)["object"], "chat.completion.chunk");
            }
        }
        Format::Anthropic => {
            for e in &events {
                let v = json(e);
                assert_eq!(
                    e.event.as_deref(),
                    v["type"].as_str(),
                    "event name = data.type"
                );
            }
            let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
            let errors = names.iter().filter(|n| **n == "error").count();
            if failed {
                assert_eq!(errors, 1, "one error event");
                assert_eq!(names.last(), Some(&"error"), "nothing after the error");
                assert_eq!(json(&events[events.len() - 1])["type"], "error");
            } else {
                assert_eq!(errors, 0);
                assert_eq!(names.first(), Some(&"message_start"));
                let n = names.len();
                assert!(n >= 3);
                assert_eq!(&names[n - 2..], &["message_delta", "message_stop"]);
                assert_eq!(names.iter().filter(|n| **n == "message_delta").count(), 1);
            }
            if !names.is_empty() && names[0] != "error" {
                assert_eq!(names[0], "message_start", "message_start first");
            }
            // Blocks: indices 0, 1, 2, ... each started once, deltas only
            // while open, each stopped (unless the stream failed).
            let mut open: Option<u64> = None;
            let mut next = 0u64;
            for e in &events {
                let v = json(e);
                match v["type"].as_str() {
                    Some("content_block_start") => {
                        assert_eq!(open, None, "a block starts while {open:?} is open");
                        assert_eq!(v["index"].as_u64(), Some(next), "consecutive block indices");
                        open = Some(next);
                        next += 1;
                    }
                    Some("content_block_delta") => {
                        assert_eq!(v["index"].as_u64(), open, "delta for a block not open")
                    }
                    Some("content_block_stop") => {
                        assert_eq!(v["index"].as_u64(), open, "stop for a block not open");
                        open = None;
                    }
                    Some("message_delta" | "message_stop") => {
                        assert_eq!(open, None, "message ends with a block open")
                    }
                    _ => {}
                }
            }
        }
        Format::OpenAiResponses => {
            let mut last_seq: Option<u64> = None;
            let mut added = Vec::new();
            let mut closed = Vec::new();
            for e in &events {
                let v = json(e);
                assert_eq!(
                    e.event.as_deref(),
                    v["type"].as_str(),
                    "event name = data.type"
                );
                let seq = v["sequence_number"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no sequence_number in {v}"));
                if let Some(prev) = last_seq {
                    assert!(seq > prev, "sequence_number {seq} after {prev}");
                }
                last_seq = Some(seq);
                let idx = v["output_index"].as_u64();
                match v["type"].as_str() {
                    Some("response.output_item.added") => {
                        assert_eq!(idx, Some(added.len() as u64), "output_index in order");
                        added.push(idx);
                    }
                    Some("response.output_item.done") => {
                        assert!(added.contains(&idx) && !closed.contains(&idx));
                        closed.push(idx);
                    }
                    Some(t) if t.ends_with(".delta") => {
                        assert!(
                            added.contains(&idx) && !closed.contains(&idx),
                            "{t} for output {idx:?} outside its item"
                        );
                    }
                    _ => {}
                }
            }
            let first = json(&events[0]);
            let last = json(&events[events.len() - 1]);
            let types: Vec<Value> = events.iter().map(|e| json(e)["type"].clone()).collect();
            if failed {
                assert_eq!(last["type"], "error", "the error is last");
                assert_eq!(types.iter().filter(|t| *t == "error").count(), 1);
                assert!(!types.iter().any(|t| t == "response.completed"));
            } else {
                assert_eq!(first["type"], "response.created");
                assert!(
                    last["type"] == "response.completed" || last["type"] == "response.incomplete",
                    "ends with response.completed, got {}",
                    last["type"]
                );
                assert_eq!(added.len(), closed.len(), "every item is done");
            }
        }
        Format::Gemini => {
            for line in text.split('\n').filter(|l| !l.is_empty()) {
                assert!(line.starts_with("data: "), "Gemini SSE line {line:?}");
            }
            let errors: Vec<usize> = (0..events.len())
                .filter(|&i| json(&events[i]).get("error").is_some())
                .collect();
            if failed {
                assert_eq!(errors, vec![events.len() - 1], "one error, last");
                let e = json(&events[events.len() - 1]);
                assert!(e["error"]["code"].is_u64() && e["error"]["status"].is_string());
            } else {
                assert!(errors.is_empty());
                for e in &events {
                    let v = json(e);
                    assert!(v["candidates"].is_array(), "chunk without candidates");
                    // Gemini sends no empty parts: a chunk with nothing to
                    // say has a content without `parts`, and an empty text
                    // part only carries a thought signature.
                    let content = &v["candidates"][0]["content"];
                    if let Some(parts) = content.get("parts") {
                        let parts = parts.as_array().expect("parts is an array");
                        assert!(!parts.is_empty(), "empty parts array in {v}");
                        for p in parts {
                            assert!(
                                p["text"] != "" || p["thoughtSignature"].is_string(),
                                "empty text part in {v}"
                            );
                        }
                    }
                }
                let last = json(&events[events.len() - 1]);
                assert!(
                    last["candidates"][0]["finishReason"].is_string(),
                    "finish last"
                );
            }
        }
    }
}
