//! Client side: reading what came back into one neutral [`Answer`],
//! checking on the way that it is well formed for the client's SDK.

use serde_json::Value;

use super::provider::{anthropic_stop, chat_finish, gemini_finish};
use super::*;

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
                // The two reasons OpenAI documents; the filter's is named
                // (the output limit's is what "incomplete" alone means).
                let reason = &v["incomplete_details"]["reason"];
                if reason == "content_filter" {
                    a.finish = "incomplete: content_filter".into();
                } else {
                    ensure(
                        reason == "max_output_tokens",
                        format!("incomplete_details {}", v["incomplete_details"]),
                    )?;
                }
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
    match wire {
        Wire::Chat => chat_stream(&events),
        Wire::Responses => responses_stream(&events),
        Wire::Anthropic => anthropic_stream(&events),
        Wire::Gemini => gemini_stream(body, &events),
    }
}

/// OpenAI chat: unnamed chunks of one id and model, tool calls opened in order, `[DONE]` last.
fn chat_stream(events: &[Event]) -> Result<Answer, String> {
    let mut a = Answer::default();
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
        let v: Value =
            serde_json::from_str(&e.data).map_err(|err| format!("chunk {:?}: {err}", e.data))?;
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
                    .ok_or("tool call delta without index")? as usize;
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
    Ok(a)
}

/// OpenAI Responses: named events in sequence, `response.created` first, the completed response telling the same story as the deltas.
fn responses_stream(events: &[Event]) -> Result<Answer, String> {
    let mut a = Answer::default();
    let mut items: Vec<Value> = Vec::new(); // function_call items by output order
    let mut args: std::collections::HashMap<String, String> = Default::default();
    let mut last_seq: Option<u64> = None;
    let mut completed = None;
    for (n, e) in events.iter().enumerate() {
        let v: Value =
            serde_json::from_str(&e.data).map_err(|err| format!("event {:?}: {err}", e.data))?;
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
            "response.output_text.delta" => a.text += v["delta"].as_str().unwrap_or_default(),
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
    Ok(a)
}

/// Anthropic messages: `message_start`, blocks opened, filled and closed one at a time, `message_delta`, `message_stop` last (pings skipped).
fn anthropic_stream(events: &[Event]) -> Result<Answer, String> {
    let mut a = Answer::default();
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
        let v: Value =
            serde_json::from_str(&e.data).map_err(|err| format!("event {:?}: {err}", e.data))?;
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
            "message_stop" => ensure(n + 1 == real.len(), "events after message_stop".into())?,
            other => return Err(format!("unknown event type {other}")),
        }
    }
    ensure(
        real.last()
            .is_some_and(|e| e.name.as_deref() == Some("message_stop")),
        "no message_stop".into(),
    )?;
    a.usage = input_tokens.zip(output_tokens);
    Ok(a)
}

/// Gemini: `data:` lines only, each a candidate chunk of one model version.
fn gemini_stream(body: &str, events: &[Event]) -> Result<Answer, String> {
    let mut a = Answer::default();
    ensure(
        !body
            .lines()
            .any(|l| !l.trim().is_empty() && !l.starts_with("data:")),
        format!("Gemini streams carry `data:` lines only: {body}"),
    )?;
    for e in events {
        let v: Value =
            serde_json::from_str(&e.data).map_err(|err| format!("chunk {:?}: {err}", e.data))?;
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
