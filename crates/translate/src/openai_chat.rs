//! OpenAI Chat Completions wire format (`/v1/chat/completions`), both as the
//! client's format and as the provider's (OpenAI and the OpenAI-compatible
//! servers: vLLM, DeepSeek, Groq, OpenRouter, Ollama, ...).
//!
//! Mapping notes (kept in sync with `docs/translation.md`):
//! - system/developer messages are hoisted into `ChatRequest::system`; on the
//!   way out they become one `system` message (parts joined with a blank line).
//! - `tool` / legacy `function` messages become `User` messages of
//!   `ToolResult` parts (consecutive ones merged); on the way out every
//!   `ToolResult` is one `tool` message, placed before the rest of its turn.
//! - `reasoning_content` / `reasoning` (DeepSeek, vLLM, OpenRouter) is
//!   `Thinking`; OpenAI does not take it back, so the request encoder drops it.
//! - A stream's `Finish` is held back until the usage-only chunk (or
//!   `[DONE]`) that follows it, so decoders downstream see `Usage` first.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::stream_error_event;
use crate::ir::{
    ChatRequest, ChatResponse, ContentPart, FinishReason, ImageSource, Message, Reasoning,
    ResponseFormat, Role, StreamEvent, Tool, ToolChoice, Usage,
};
use crate::{sse, Format, SseEvent, StreamDecode, StreamEncode, StreamOptions, TranslateError};

type Obj = Map<String, Value>;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `<path>: expected <want>, got <type>`.
fn expected(path: impl std::fmt::Display, want: &str, got: &Value) -> TranslateError {
    TranslateError::new(format!("{path}: expected {want}, got {}", type_name(got)))
}

/// Removes `key` from `obj`; `null` counts as absent.
fn take(obj: &mut Obj, key: &str) -> Option<Value> {
    match obj.remove(key) {
        Some(Value::Null) | None => None,
        v => v,
    }
}

fn opt_string(obj: &mut Obj, key: &str, prefix: &str) -> Result<Option<String>, TranslateError> {
    match take(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(expected(format_args!("{prefix}{key}"), "a string", &v)),
    }
}

fn req_string(obj: &mut Obj, key: &str, prefix: &str) -> Result<String, TranslateError> {
    opt_string(obj, key, prefix)?
        .ok_or_else(|| TranslateError::new(format!("{prefix}{key}: required (a string)")))
}

fn opt_f64(obj: &mut Obj, key: &str) -> Result<Option<f64>, TranslateError> {
    match take(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| expected(key, "a number", &v)),
    }
}

fn opt_u64(obj: &mut Obj, key: &str) -> Result<Option<u64>, TranslateError> {
    match take(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| expected(key, "a non-negative integer", &v)),
    }
}

fn opt_bool(obj: &mut Obj, key: &str, prefix: &str) -> Result<Option<bool>, TranslateError> {
    match take(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(v) => Err(expected(format_args!("{prefix}{key}"), "a boolean", &v)),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh id such as `chatcmpl-<24 hex digits>` (no rand crate: time and a
/// process-wide counter, mixed).
fn synth_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // splitmix64 of time ^ counter, so consecutive ids do not look alike.
    let mut z = (t ^ n.rotate_left(32)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("{prefix}{z:016x}{:08x}", n as u32)
}

fn finish_from_str(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// The OpenAI spelling of a finish reason. A `Stop` of an answer that called
/// tools is `tool_calls` (Gemini says STOP there; agents key on tool_calls);
/// an unknown provider reason is `stop` (OpenAI clients know only five).
fn finish_to_str(r: Option<&FinishReason>, called_tools: bool) -> &str {
    match r {
        None | Some(FinishReason::Stop) if called_tools => "tool_calls",
        None | Some(FinishReason::Stop) => "stop",
        Some(FinishReason::Length) => "length",
        Some(FinishReason::ToolCalls) => "tool_calls",
        Some(FinishReason::ContentFilter) => "content_filter",
        Some(FinishReason::Other(s)) => match s.as_str() {
            "stop" | "length" | "tool_calls" | "content_filter" | "function_call" => s.as_str(),
            _ if called_tools => "tool_calls",
            _ => "stop",
        },
    }
}

// ---------------------------------------------------------------------------
// Requests: client body -> IR
// ---------------------------------------------------------------------------

/// Decodes a `/v1/chat/completions` request body.
pub fn decode_request(mut body: Value) -> Result<ChatRequest, TranslateError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(TranslateError::new("request body must be a JSON object"));
    };
    let mut req = ChatRequest {
        model: opt_string(obj, "model", "")?.unwrap_or_default(),
        ..ChatRequest::default()
    };

    let messages = match take(obj, "messages") {
        Some(Value::Array(a)) => a,
        Some(v) => return Err(expected("messages", "an array of messages", &v)),
        None => {
            return Err(TranslateError::new(
                "messages: required (an array of messages)",
            ))
        }
    };
    if messages.is_empty() {
        return Err(TranslateError::new(
            "messages: expected at least one message, got an empty array",
        ));
    }
    decode_messages(messages, &mut req)?;

    decode_tools(obj, &mut req)?;

    req.parallel_tool_calls = opt_bool(obj, "parallel_tool_calls", "")?;
    req.response_format = decode_response_format(take(obj, "response_format"))?;
    req.max_tokens = match opt_u64(obj, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => opt_u64(obj, "max_tokens")?,
    };
    req.stop = match take(obj, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .enumerate()
            .map(|(i, s)| match s {
                Value::String(s) => Ok(s),
                v => Err(expected(format_args!("stop[{i}]"), "a string", &v)),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(expected("stop", "a string or an array of strings", &v)),
    };
    req.temperature = opt_f64(obj, "temperature")?;
    req.top_p = opt_f64(obj, "top_p")?;
    req.top_k = opt_u64(obj, "top_k")?; // vLLM / OpenRouter extension
    req.seed = match take(obj, "seed") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| expected("seed", "an integer", &v))?,
        ),
    };
    req.n = opt_u64(obj, "n")?;
    req.presence_penalty = opt_f64(obj, "presence_penalty")?;
    req.frequency_penalty = opt_f64(obj, "frequency_penalty")?;
    req.user = opt_string(obj, "user", "")?;
    req.stream = opt_bool(obj, "stream", "")?.unwrap_or(false);
    match take(obj, "stream_options") {
        None => {}
        Some(Value::Object(mut so)) => {
            req.stream_include_usage =
                opt_bool(&mut so, "include_usage", "stream_options.")?.unwrap_or(false);
        }
        Some(v) => return Err(expected("stream_options", "an object", &v)),
    }

    // reasoning_effort (OpenAI); `reasoning: {effort, max_tokens}` (OpenRouter).
    if let Some(effort) = opt_string(obj, "reasoning_effort", "")? {
        req.reasoning = Some(Reasoning {
            disabled: effort == "none",
            effort: Some(effort),
            budget_tokens: None,
        });
    } else if let Some(Value::Object(mut r)) = take(obj, "reasoning") {
        let effort = opt_string(&mut r, "effort", "reasoning.")?;
        let budget_tokens = match take(&mut r, "max_tokens") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| expected("reasoning.max_tokens", "an integer", &v))?,
            ),
        };
        let disabled = matches!(r.get("enabled"), Some(Value::Bool(false)))
            || effort.as_deref() == Some("none");
        req.reasoning = Some(Reasoning {
            effort,
            budget_tokens,
            disabled,
        });
    }
    Ok(req)
}

fn decode_messages(messages: Vec<Value>, req: &mut ChatRequest) -> Result<(), TranslateError> {
    // The previous message was a tool/function result (consecutive ones are
    // merged into one User message).
    let mut prev_tool = false;
    // Id given to the last legacy `function_call`, for the `function` reply.
    let mut legacy_call: Option<String> = None;
    for (i, m) in messages.into_iter().enumerate() {
        let mut m = match m {
            Value::Object(m) => m,
            v => {
                return Err(expected(
                    format_args!("messages[{i}]"),
                    "a message object",
                    &v,
                ))
            }
        };
        let role = match m.remove("role") {
            Some(Value::String(s)) => s,
            Some(v) => return Err(expected(format_args!("messages[{i}].role"), "a string", &v)),
            None => return Err(TranslateError::new(format!("messages[{i}].role: required"))),
        };
        let mut is_tool = false;
        match role.as_str() {
            "system" | "developer" => {
                let path = format!("messages[{i}].content");
                match m.remove("content") {
                    Some(Value::String(s)) => req.system.push(ContentPart::Text { text: s }),
                    Some(Value::Array(parts)) => {
                        for (j, p) in parts.into_iter().enumerate() {
                            match decode_part(p, &path, j)? {
                                t @ ContentPart::Text { .. } => req.system.push(t),
                                _ => {
                                    return Err(TranslateError::new(format!(
                                        "{path}[{j}]: {role} messages take text parts only"
                                    )))
                                }
                            }
                        }
                    }
                    Some(v) => {
                        return Err(expected(path, "a string or an array of text parts", &v))
                    }
                    None => return Err(TranslateError::new(format!("{path}: required"))),
                }
            }
            "user" => {
                let path = format!("messages[{i}].content");
                let mut content = Vec::new();
                match m.remove("content") {
                    Some(Value::String(s)) => content.push(ContentPart::Text { text: s }),
                    Some(Value::Array(parts)) => {
                        content.reserve(parts.len());
                        for (j, p) in parts.into_iter().enumerate() {
                            content.push(decode_part(p, &path, j)?);
                        }
                    }
                    Some(v) => {
                        return Err(expected(path, "a string or an array of content parts", &v))
                    }
                    None => {
                        return Err(TranslateError::new(format!(
                            "{path}: required (a string or an array of content parts)"
                        )))
                    }
                }
                req.messages.push(Message {
                    role: Role::User,
                    content,
                });
            }
            "assistant" => {
                let content = decode_assistant(&mut m, i, &mut legacy_call)?;
                req.messages.push(Message {
                    role: Role::Assistant,
                    content,
                });
            }
            "tool" | "function" => {
                is_tool = true;
                let prefix = format!("messages[{i}].");
                let (call_id, name) = if role == "tool" {
                    (req_string(&mut m, "tool_call_id", &prefix)?, None)
                } else {
                    let name = req_string(&mut m, "name", &prefix)?;
                    let id = legacy_call.take().unwrap_or_else(|| format!("call_{name}"));
                    (id, Some(name))
                };
                let content = decode_tool_content(m.remove("content"), &prefix)?;
                let part = ContentPart::ToolResult {
                    call_id,
                    name,
                    content,
                    is_error: false,
                };
                match req.messages.last_mut() {
                    Some(last) if prev_tool && last.role == Role::User => last.content.push(part),
                    _ => req.messages.push(Message {
                        role: Role::User,
                        content: vec![part],
                    }),
                }
            }
            other => {
                return Err(TranslateError::new(format!(
                    "messages[{i}].role: unsupported role \"{other}\" (expected system, \
                     developer, user, assistant or tool)"
                )))
            }
        }
        prev_tool = is_tool;
    }
    Ok(())
}

fn decode_assistant(
    m: &mut Obj,
    i: usize,
    legacy_call: &mut Option<String>,
) -> Result<Vec<ContentPart>, TranslateError> {
    let mut content = Vec::new();
    // DeepSeek / vLLM `reasoning_content`, OpenRouter / newer vLLM `reasoning`.
    for key in ["reasoning_content", "reasoning"] {
        if let Some(Value::String(s)) = m.remove(key) {
            if !s.is_empty() {
                content.push(ContentPart::Thinking {
                    text: s,
                    signature: None,
                });
                break;
            }
        }
    }
    let path = format!("messages[{i}].content");
    match m.remove("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                content.push(ContentPart::Text { text: s });
            }
        }
        Some(Value::Array(parts)) => {
            for (j, p) in parts.into_iter().enumerate() {
                match decode_part(p, &path, j)? {
                    ContentPart::Text { text } if text.is_empty() => {}
                    part => content.push(part),
                }
            }
        }
        Some(v) => {
            return Err(expected(
                path,
                "a string, null or an array of content parts",
                &v,
            ))
        }
    }
    if let Some(Value::String(s)) = m.remove("refusal") {
        if !s.is_empty() {
            content.push(ContentPart::Text { text: s });
        }
    }
    match take(m, "tool_calls") {
        None => {}
        Some(Value::Array(calls)) => {
            for (k, c) in calls.into_iter().enumerate() {
                let prefix = format!("messages[{i}].tool_calls[{k}].");
                let mut c = match c {
                    Value::Object(c) => c,
                    v => {
                        return Err(expected(
                            format_args!("messages[{i}].tool_calls[{k}]"),
                            "an object",
                            &v,
                        ))
                    }
                };
                if let Some(t) = c.get("type").and_then(Value::as_str) {
                    if t != "function" {
                        return Err(TranslateError::new(format!(
                            "{prefix}type: tool call type \"{t}\" is not supported for translation"
                        )));
                    }
                }
                let id = opt_string(&mut c, "id", &prefix)?.unwrap_or_else(|| synth_id("call_"));
                let (name, arguments) = decode_function(take(&mut c, "function"), &prefix)?;
                content.push(ContentPart::ToolCall {
                    id,
                    name,
                    arguments,
                });
            }
        }
        Some(v) => {
            return Err(expected(
                format_args!("messages[{i}].tool_calls"),
                "an array",
                &v,
            ))
        }
    }
    if let Some(f) = take(m, "function_call") {
        let prefix = format!("messages[{i}].");
        let (name, arguments) = decode_function(Some(f), &prefix)?;
        let id = format!("call_{name}_{i}");
        *legacy_call = Some(id.clone());
        content.push(ContentPart::ToolCall {
            id,
            name,
            arguments,
        });
    }
    Ok(content)
}

/// `{name, arguments}` of a tool call (`arguments` as JSON text; an object is
/// accepted and serialized, a missing one is `{}`).
fn decode_function(f: Option<Value>, prefix: &str) -> Result<(String, String), TranslateError> {
    let mut f = match f {
        Some(Value::Object(f)) => f,
        Some(v) => return Err(expected(format_args!("{prefix}function"), "an object", &v)),
        None => return Err(TranslateError::new(format!("{prefix}function: required"))),
    };
    let fp = format!("{prefix}function.");
    let name = req_string(&mut f, "name", &fp)?;
    let arguments = match take(&mut f, "arguments") {
        None => "{}".to_owned(),
        Some(Value::String(s)) => s,
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(v) => return Err(expected(format_args!("{fp}arguments"), "a JSON string", &v)),
    };
    Ok((name, arguments))
}

/// A tool message's content: a string or an array of text parts.
fn decode_tool_content(v: Option<Value>, prefix: &str) -> Result<Vec<ContentPart>, TranslateError> {
    let path = format!("{prefix}content");
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![ContentPart::Text { text: s }]),
        Some(Value::Array(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(j, p)| decode_part(p, &path, j))
            .collect(),
        Some(v) => Err(expected(path, "a string or an array of content parts", &v)),
    }
}

/// One element of a content array.
fn decode_part(p: Value, path: &str, j: usize) -> Result<ContentPart, TranslateError> {
    let mut p = match p {
        Value::Object(p) => p,
        v => {
            return Err(expected(
                format_args!("{path}[{j}]"),
                "a content part object",
                &v,
            ))
        }
    };
    let ty = match p.remove("type") {
        Some(Value::String(s)) => s,
        None if p.contains_key("text") => "text".to_owned(),
        Some(v) => return Err(expected(format_args!("{path}[{j}].type"), "a string", &v)),
        None => return Err(TranslateError::new(format!("{path}[{j}].type: required"))),
    };
    let prefix = format!("{path}[{j}].");
    match ty.as_str() {
        "text" | "input_text" | "output_text" => Ok(ContentPart::Text {
            text: req_string(&mut p, "text", &prefix)?,
        }),
        "refusal" => Ok(ContentPart::Text {
            text: req_string(&mut p, "refusal", &prefix)?,
        }),
        "image_url" => {
            let url = match take(&mut p, "image_url") {
                Some(Value::Object(mut o)) => {
                    req_string(&mut o, "url", &format!("{prefix}image_url."))?
                }
                Some(Value::String(s)) => s,
                Some(v) => {
                    return Err(expected(
                        format_args!("{prefix}image_url"),
                        "an object with a url",
                        &v,
                    ))
                }
                None => return Err(TranslateError::new(format!("{prefix}image_url: required"))),
            };
            Ok(ContentPart::Image {
                source: parse_image_url(url, &format!("{prefix}image_url.url"))?,
            })
        }
        "input_audio" | "file" | "input_file" | "audio" | "video_url" | "input_video" => {
            Err(TranslateError::new(format!(
                "{path}[{j}]: content part type \"{ty}\" is not supported for translation"
            )))
        }
        other => Err(TranslateError::new(format!(
            "{path}[{j}].type: unknown content part type \"{other}\""
        ))),
    }
}

/// An `image_url.url`: http(s) or `data:<mime>[;params];base64,<data>`.
fn parse_image_url(mut url: String, path: &str) -> Result<ImageSource, TranslateError> {
    let starts = |p: &str| {
        url.as_bytes()
            .get(..p.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(p.as_bytes()))
    };
    if starts("http://") || starts("https://") {
        return Ok(ImageSource::Url { url });
    }
    if starts("data:") {
        let Some(comma) = url.find(',') else {
            return Err(TranslateError::new(format!(
                "{path}: malformed data URL (no comma)"
            )));
        };
        let meta = url.get(5..comma).unwrap_or_default();
        let mut fields = meta.split(';');
        let media_type = fields.next().unwrap_or_default().trim().to_owned();
        if !fields.any(|f| f.trim().eq_ignore_ascii_case("base64")) {
            return Err(TranslateError::new(format!(
                "{path}: only base64 data URLs are supported"
            )));
        }
        if media_type.is_empty() {
            return Err(TranslateError::new(format!(
                "{path}: data URL has no media type"
            )));
        }
        // Move the (possibly huge) payload instead of copying it.
        url.drain(..=comma);
        return Ok(ImageSource::Base64 {
            media_type,
            data: url,
        });
    }
    Err(TranslateError::new(format!(
        "{path}: expected an http(s) URL or a base64 data URL"
    )))
}

fn decode_tools(obj: &mut Obj, req: &mut ChatRequest) -> Result<(), TranslateError> {
    match take(obj, "tools") {
        None => {}
        Some(Value::Array(tools)) => {
            req.tools.reserve(tools.len());
            for (k, t) in tools.into_iter().enumerate() {
                let mut t = match t {
                    Value::Object(t) => t,
                    v => return Err(expected(format_args!("tools[{k}]"), "an object", &v)),
                };
                if let Some(ty) = t.get("type").and_then(Value::as_str) {
                    if ty != "function" {
                        return Err(TranslateError::new(format!(
                            "tools[{k}].type: tool type \"{ty}\" is not supported for translation \
                             (only function tools)"
                        )));
                    }
                }
                let f = match take(&mut t, "function") {
                    Some(Value::Object(f)) => f,
                    Some(v) => {
                        return Err(expected(
                            format_args!("tools[{k}].function"),
                            "an object",
                            &v,
                        ))
                    }
                    None => {
                        return Err(TranslateError::new(format!(
                            "tools[{k}].function: required"
                        )))
                    }
                };
                req.tools
                    .push(decode_function_def(f, &format!("tools[{k}].function."))?);
            }
        }
        Some(v) => return Err(expected("tools", "an array", &v)),
    }
    // Legacy `functions` (only when there are no `tools`).
    match take(obj, "functions") {
        None => {}
        Some(Value::Array(fs)) if req.tools.is_empty() => {
            for (k, f) in fs.into_iter().enumerate() {
                let f = match f {
                    Value::Object(f) => f,
                    v => return Err(expected(format_args!("functions[{k}]"), "an object", &v)),
                };
                req.tools
                    .push(decode_function_def(f, &format!("functions[{k}]."))?);
            }
        }
        Some(Value::Array(_)) => {}
        Some(v) => return Err(expected("functions", "an array", &v)),
    }
    req.tool_choice = match take(obj, "tool_choice") {
        Some(v) => Some(decode_tool_choice(v, "tool_choice")?),
        None => match take(obj, "function_call") {
            Some(v) => Some(decode_tool_choice(v, "function_call")?),
            None => None,
        },
    };
    Ok(())
}

fn decode_function_def(mut f: Obj, prefix: &str) -> Result<Tool, TranslateError> {
    let name = req_string(&mut f, "name", prefix)?;
    let description = opt_string(&mut f, "description", prefix)?;
    let parameters = match take(&mut f, "parameters") {
        None => serde_json::json!({"type": "object", "properties": {}}),
        Some(v @ Value::Object(_)) => v,
        Some(v) => {
            return Err(expected(
                format_args!("{prefix}parameters"),
                "a JSON Schema object",
                &v,
            ))
        }
    };
    let strict = opt_bool(&mut f, "strict", prefix)?;
    Ok(Tool {
        name,
        description,
        parameters,
        strict,
    })
}

fn decode_tool_choice(v: Value, path: &str) -> Result<ToolChoice, TranslateError> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" | "any" => Ok(ToolChoice::Required),
            other => Err(TranslateError::new(format!(
                "{path}: unknown value \"{other}\" (expected auto, none, required or a function)"
            ))),
        },
        Value::Object(mut o) => {
            // {type:function, function:{name}} or legacy {name}.
            if let Some(Value::Object(mut f)) = o.remove("function") {
                return Ok(ToolChoice::Function(req_string(
                    &mut f,
                    "name",
                    &format!("{path}.function."),
                )?));
            }
            if let Some(name) = opt_string(&mut o, "name", &format!("{path}."))? {
                return Ok(ToolChoice::Function(name));
            }
            match o.get("type").and_then(Value::as_str) {
                Some("auto") => Ok(ToolChoice::Auto),
                Some("none") => Ok(ToolChoice::None),
                Some("required") => Ok(ToolChoice::Required),
                _ => Err(TranslateError::new(format!(
                    "{path}: expected \"auto\", \"none\", \"required\" or \
                     {{\"type\":\"function\",\"function\":{{\"name\":...}}}}"
                ))),
            }
        }
        v => Err(expected(path, "a string or an object", &v)),
    }
}

fn decode_response_format(v: Option<Value>) -> Result<Option<ResponseFormat>, TranslateError> {
    let mut o = match v {
        None => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(v) => return Err(expected("response_format", "an object", &v)),
    };
    let ty = req_string(&mut o, "type", "response_format.")?;
    match ty.as_str() {
        "text" => Ok(Some(ResponseFormat::Text)),
        "json_object" => Ok(Some(ResponseFormat::JsonObject)),
        "json_schema" => {
            let mut js = match take(&mut o, "json_schema") {
                Some(Value::Object(js)) => js,
                Some(v) => return Err(expected("response_format.json_schema", "an object", &v)),
                None => {
                    return Err(TranslateError::new(
                        "response_format.json_schema: required for type json_schema",
                    ))
                }
            };
            let name = opt_string(&mut js, "name", "response_format.json_schema.")?
                .unwrap_or_else(|| "response".to_owned());
            let schema = take(&mut js, "schema").unwrap_or_else(|| Value::Object(Map::new()));
            let strict = opt_bool(&mut js, "strict", "response_format.json_schema.")?;
            Ok(Some(ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            }))
        }
        other => Err(TranslateError::new(format!(
            "response_format.type: unknown value \"{other}\" (expected text, json_object or json_schema)"
        ))),
    }
}

// ---------------------------------------------------------------------------
// Requests: IR -> provider body
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct ReqOut<'a> {
    model: &'a str,
    messages: Vec<MsgOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<RespFmtOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptsOut>,
}

#[derive(Serialize)]
struct StreamOptsOut {
    include_usage: bool,
}

#[derive(Serialize)]
struct MsgOut<'a> {
    role: &'static str,
    content: Option<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ContentOut<'a> {
    Str(Cow<'a, str>),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PartOut<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrlOut<'a> },
}

#[derive(Serialize)]
struct ImageUrlOut<'a> {
    url: UrlOut<'a>,
}

/// An image URL, written without building the data URL in memory first.
struct UrlOut<'a>(&'a ImageSource);

impl Serialize for UrlOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ImageSource::Url { url } => s.serialize_str(url),
            ImageSource::Base64 { media_type, data } => {
                s.collect_str(&format_args!("data:{media_type};base64,{data}"))
            }
        }
    }
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FnCallOut<'a>,
}

#[derive(Serialize)]
struct FnCallOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

fn tool_call_out<'a>(id: &'a str, name: &'a str, arguments: &'a str) -> ToolCallOut<'a> {
    ToolCallOut {
        id,
        kind: "function",
        function: FnCallOut {
            name,
            // Some servers choke on an empty arguments string.
            arguments: if arguments.trim().is_empty() {
                "{}"
            } else {
                arguments
            },
        },
    }
}

#[derive(Serialize)]
struct ToolOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FnDefOut<'a>,
}

#[derive(Serialize)]
struct FnDefOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RespFmtOut<'a> {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaOut<'a> },
}

#[derive(Serialize)]
struct JsonSchemaOut<'a> {
    name: &'a str,
    schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// Thresholds for `Reasoning::budget_tokens` → `reasoning_effort`:
/// up to 4096 → low, up to 16384 → medium, above → high; 0 → omitted.
/// (Claude Code's think / think hard / ultrathink budgets are 4000 / 10000 /
/// 31999, which land on low / medium / high.)
pub fn effort_for_budget(budget: u64) -> Option<&'static str> {
    match budget {
        0 => None,
        1..=4096 => Some("low"),
        4097..=16384 => Some("medium"),
        _ => Some("high"),
    }
}

/// Joins text parts; borrows when there is only one.
fn join_texts<'a>(parts: impl Iterator<Item = &'a str>, sep: &str) -> Option<Cow<'a, str>> {
    let mut out: Option<Cow<'a, str>> = None;
    for t in parts {
        out = Some(match out {
            None => Cow::Borrowed(t),
            Some(prev) => {
                let mut s = prev.into_owned();
                s.push_str(sep);
                s.push_str(t);
                Cow::Owned(s)
            }
        });
    }
    out
}

/// A tool result as the text of a `tool` message. Images become a short
/// note (`[image: <url>]` / `[image: <media type>, not shown]`): OpenAI tool
/// messages carry text only. An error result is prefixed with `Error: `.
fn tool_result_text<'a>(content: &'a [ContentPart], is_error: bool) -> Cow<'a, str> {
    let pieces = content.iter().filter_map(|p| match p {
        ContentPart::Text { text } => Some(Cow::Borrowed(text.as_str())),
        ContentPart::Image {
            source: ImageSource::Url { url },
        } => Some(Cow::Owned(format!("[image: {url}]"))),
        ContentPart::Image {
            source: ImageSource::Base64 { media_type, .. },
        } => Some(Cow::Owned(format!("[image: {media_type}, not shown]"))),
        _ => None,
    });
    let mut out: Cow<'a, str> = if is_error {
        Cow::Owned("Error: ".to_owned())
    } else {
        Cow::Borrowed("")
    };
    let mut first = true;
    for piece in pieces {
        if first && !is_error {
            out = piece;
        } else {
            let s = out.to_mut();
            if !first {
                s.push('\n');
            }
            s.push_str(&piece);
        }
        first = false;
    }
    out
}

/// Encodes a request for an OpenAI(-compatible) Chat Completions upstream.
pub fn encode_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = join_texts(
        req.system.iter().filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        }),
        "\n\n",
    ) {
        messages.push(MsgOut {
            role: "system",
            content: Some(ContentOut::Str(system)),
            tool_calls: None,
            tool_call_id: None,
        });
    }
    for m in &req.messages {
        match m.role {
            Role::User => encode_user(m, &mut messages),
            Role::Assistant => encode_assistant(m, &mut messages),
        }
    }

    let tools: Vec<ToolOut> = req
        .tools
        .iter()
        .map(|t| ToolOut {
            kind: "function",
            function: FnDefOut {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: &t.parameters,
                strict: t.strict,
            },
        })
        .collect();
    let has_tools = !tools.is_empty();
    // OpenAI rejects tool_choice / parallel_tool_calls without tools.
    let tool_choice = req
        .tool_choice
        .as_ref()
        .filter(|_| has_tools)
        .map(|c| match c {
            ToolChoice::Auto => Value::from("auto"),
            ToolChoice::None => Value::from("none"),
            ToolChoice::Required => Value::from("required"),
            ToolChoice::Function(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}})
            }
        });
    let response_format = req.response_format.as_ref().map(|f| match f {
        ResponseFormat::Text => RespFmtOut::Text,
        ResponseFormat::JsonObject => RespFmtOut::JsonObject,
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => RespFmtOut::JsonSchema {
            json_schema: JsonSchemaOut {
                name,
                schema,
                strict: *strict,
            },
        },
    });
    let reasoning_effort = req.reasoning.as_ref().and_then(|r| match &r.effort {
        Some(e) => Some(e.as_str()),
        None if r.disabled => None,
        None => r.budget_tokens.and_then(effort_for_budget),
    });

    let out = ReqOut {
        model: &req.model,
        messages,
        max_completion_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: &req.stop,
        seed: req.seed,
        n: req.n,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        user: req.user.as_deref(),
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls.filter(|_| has_tools),
        response_format,
        reasoning_effort,
        stream: req.stream.then_some(true),
        stream_options: req.stream.then_some(StreamOptsOut {
            include_usage: true,
        }),
    };
    serde_json::to_vec(&out).map_err(|e| TranslateError::new(format!("encoding request: {e}")))
}

fn encode_user<'a>(m: &'a Message, out: &mut Vec<MsgOut<'a>>) {
    // Tool results first: OpenAI wants the `tool` messages right after the
    // assistant message that made the calls.
    for p in &m.content {
        if let ContentPart::ToolResult {
            call_id,
            content,
            is_error,
            ..
        } = p
        {
            out.push(MsgOut {
                role: "tool",
                content: Some(ContentOut::Str(tool_result_text(content, *is_error))),
                tool_calls: None,
                tool_call_id: Some(call_id),
            });
        }
    }
    let mut parts: Vec<PartOut<'a>> = m
        .content
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text { text } => Some(PartOut::Text { text }),
            ContentPart::Image { source } => Some(PartOut::ImageUrl {
                image_url: ImageUrlOut {
                    url: UrlOut(source),
                },
            }),
            _ => None,
        })
        .collect();
    let content = match parts.pop() {
        None => return,
        Some(PartOut::Text { text }) if parts.is_empty() => ContentOut::Str(Cow::Borrowed(text)),
        Some(p) => {
            parts.push(p);
            ContentOut::Parts(parts)
        }
    };
    out.push(MsgOut {
        role: "user",
        content: Some(content),
        tool_calls: None,
        tool_call_id: None,
    });
}

fn encode_assistant<'a>(m: &'a Message, out: &mut Vec<MsgOut<'a>>) {
    // Thinking / RedactedThinking are dropped (OpenAI does not take them
    // back); images and tool results cannot appear in an assistant turn.
    let text = join_texts(
        m.content.iter().filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        }),
        "\n\n",
    );
    let calls: Vec<ToolCallOut<'a>> = m
        .content
        .iter()
        .filter_map(|p| match p {
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            } => Some(tool_call_out(id, name, arguments)),
            _ => None,
        })
        .collect();
    let content = match (text, calls.is_empty()) {
        (Some(t), _) => Some(ContentOut::Str(t)),
        (None, false) => None,
        (None, true) => Some(ContentOut::Str(Cow::Borrowed(""))),
    };
    out.push(MsgOut {
        role: "assistant",
        content,
        tool_calls: (!calls.is_empty()).then_some(calls),
        tool_call_id: None,
    });
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
struct UsageIn {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetailsIn>,
    completion_tokens_details: Option<CompletionDetailsIn>,
    /// DeepSeek's cache hit count.
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromptDetailsIn {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionDetailsIn {
    reasoning_tokens: Option<u64>,
}

impl UsageIn {
    fn into_ir(self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
            cached_input_tokens: self
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .or(self.prompt_cache_hit_tokens),
            cache_creation_input_tokens: None,
            reasoning_tokens: self
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetailsOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionDetailsOut>,
}

#[derive(Serialize)]
struct PromptDetailsOut {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetailsOut {
    reasoning_tokens: u64,
}

impl From<&Usage> for UsageOut {
    fn from(u: &Usage) -> Self {
        UsageOut {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.input_tokens.saturating_add(u.output_tokens),
            prompt_tokens_details: u
                .cached_input_tokens
                .map(|c| PromptDetailsOut { cached_tokens: c }),
            completion_tokens_details: u.reasoning_tokens.map(|r| CompletionDetailsOut {
                reasoning_tokens: r,
            }),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponseIn {
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    choices: Option<Vec<ChoiceIn>>,
    usage: Option<UsageIn>,
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChoiceIn {
    index: Option<u64>,
    message: Option<MessageIn>,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageIn {
    content: Option<Value>,
    reasoning_content: Option<String>,
    reasoning: Option<Value>,
    refusal: Option<String>,
    tool_calls: Option<Vec<ToolCallIn>>,
    function_call: Option<FnIn>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCallIn {
    id: Option<String>,
    function: Option<FnIn>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FnIn {
    name: Option<String>,
    arguments: Option<Value>,
}

fn arguments_text(v: Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
    }
}

/// The message of an `{"error": ...}` body or stream event.
fn error_message(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => e.to_string(),
        },
        _ => e.to_string(),
    }
}

/// Decodes an OpenAI(-compatible) non-streaming response body.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let r: ResponseIn = serde_json::from_slice(body)
        .map_err(|e| TranslateError::new(format!("upstream response is not valid JSON: {e}")))?;
    if let Some(e) = r.error.as_ref().filter(|e| !e.is_null()) {
        return Err(TranslateError::new(format!(
            "upstream error: {}",
            error_message(e)
        )));
    }
    let mut resp = ChatResponse {
        id: r.id.unwrap_or_default(),
        model: r.model.unwrap_or_default(),
        created: r.created.unwrap_or(0),
        usage: r.usage.map(UsageIn::into_ir),
        ..ChatResponse::default()
    };
    let mut choices = r.choices.unwrap_or_default();
    let pos = choices
        .iter()
        .position(|c| c.index.unwrap_or(0) == 0)
        .unwrap_or(0);
    if pos < choices.len() {
        let choice = choices.swap_remove(pos);
        resp.finish_reason = choice.finish_reason.as_deref().map(finish_from_str);
        if let Some(msg) = choice.message {
            decode_response_message(msg, &mut resp.content)?;
        }
    }
    Ok(resp)
}

fn decode_response_message(
    msg: MessageIn,
    out: &mut Vec<ContentPart>,
) -> Result<(), TranslateError> {
    let thinking = match (msg.reasoning_content, msg.reasoning) {
        (Some(s), _) if !s.is_empty() => Some(s),
        (_, Some(Value::String(s))) if !s.is_empty() => Some(s),
        _ => None,
    };
    if let Some(text) = thinking {
        out.push(ContentPart::Thinking {
            text,
            signature: None,
        });
    }
    match msg.content {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                out.push(ContentPart::Text { text: s });
            }
        }
        Some(Value::Array(parts)) => {
            for (j, p) in parts.into_iter().enumerate() {
                match decode_part(p, "choices[0].message.content", j) {
                    Ok(ContentPart::Text { text }) if text.is_empty() => {}
                    Ok(part) => out.push(part),
                    Err(_) => {} // parts we cannot carry in an answer are skipped
                }
            }
        }
        Some(v) => {
            return Err(expected(
                "choices[0].message.content",
                "a string or an array",
                &v,
            ))
        }
    }
    if let Some(s) = msg.refusal.filter(|s| !s.is_empty()) {
        out.push(ContentPart::Text { text: s });
    }
    for c in msg.tool_calls.unwrap_or_default() {
        let f = c.function.unwrap_or_default();
        out.push(ContentPart::ToolCall {
            id: c
                .id
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| synth_id("call_")),
            name: f.name.unwrap_or_default(),
            arguments: arguments_text(f.arguments),
        });
    }
    if let Some(f) = msg.function_call {
        out.push(ContentPart::ToolCall {
            id: synth_id("call_"),
            name: f.name.unwrap_or_default(),
            arguments: arguments_text(f.arguments),
        });
    }
    Ok(())
}

#[derive(Serialize)]
struct RespOut<'a> {
    id: Cow<'a, str>,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [RespChoiceOut<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct RespChoiceOut<'a> {
    index: u32,
    message: RespMsgOut<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct RespMsgOut<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallOut<'a>>>,
    refusal: Option<()>,
}

/// Encodes a `chat.completion` object for the client.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let texts = |want_thinking: bool| {
        resp.content.iter().filter_map(move |p| match p {
            ContentPart::Text { text } if !want_thinking => Some(text.as_str()),
            ContentPart::Thinking { text, .. } if want_thinking => Some(text.as_str()),
            _ => None,
        })
    };
    let calls: Vec<ToolCallOut> = resp
        .content
        .iter()
        .filter_map(|p| match p {
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            } => Some(tool_call_out(id, name, arguments)),
            _ => None,
        })
        .collect();
    let has_calls = !calls.is_empty();
    let content = match join_texts(texts(false), "") {
        Some(t) => Some(t),
        None if has_calls => None,
        None => Some(Cow::Borrowed("")),
    };
    let out = RespOut {
        id: if resp.id.is_empty() {
            Cow::Owned(synth_id("chatcmpl-"))
        } else {
            Cow::Borrowed(&resp.id)
        },
        object: "chat.completion",
        created: if resp.created == 0 {
            now_secs()
        } else {
            resp.created
        },
        model: &resp.model,
        choices: [RespChoiceOut {
            index: 0,
            message: RespMsgOut {
                role: "assistant",
                content,
                reasoning_content: join_texts(texts(true), ""),
                tool_calls: has_calls.then_some(calls),
                refusal: None,
            },
            logprobs: None,
            finish_reason: finish_to_str(resp.finish_reason.as_ref(), has_calls),
        }],
        usage: resp.usage.as_ref().map(UsageOut::from),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Streams: upstream chunks -> IR events
// ---------------------------------------------------------------------------

/// A string borrowed from the chunk when it has no escapes. (`Option<Cow>`
/// alone never borrows: serde only special-cases a bare `Cow` field.)
#[derive(Deserialize)]
#[serde(transparent)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Str<'_> {
    fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChunkIn<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow)]
    choices: Option<Vec<ChunkChoiceIn<'a>>>,
    usage: Option<UsageIn>,
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChunkChoiceIn<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<DeltaIn<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeltaIn<'a> {
    #[serde(borrow)]
    content: Option<Str<'a>>,
    #[serde(borrow)]
    reasoning_content: Option<Str<'a>>,
    #[serde(borrow)]
    reasoning: Option<Str<'a>>,
    #[serde(borrow)]
    refusal: Option<Str<'a>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCallDeltaIn<'a>>>,
    #[serde(borrow)]
    function_call: Option<FnDeltaIn<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCallDeltaIn<'a> {
    index: Option<u32>,
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    function: Option<FnDeltaIn<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FnDeltaIn<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    arguments: Option<Str<'a>>,
}

/// A tool call being streamed.
struct ToolSlot {
    /// The upstream's `index`, when it sends one.
    key: Option<u32>,
    /// Our index (tool calls counted from 0).
    index: u32,
    id: String,
    name: String,
    /// Arguments received before the name (sent with the start).
    pending_args: String,
    started: bool,
}

/// Decodes an OpenAI(-compatible) Chat Completions stream.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    tools: Vec<ToolSlot>,
    /// A finish reason waiting for the usage chunk that follows it.
    pending_finish: Option<FinishReason>,
    finished: bool,
}

impl StreamDecoder {
    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: match id {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    _ => synth_id("chatcmpl-"),
                },
                model: model.unwrap_or_default().to_owned(),
            });
        }
    }

    fn flush_finish(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(reason) = self.pending_finish.take() {
            self.finished = true;
            out.push(StreamEvent::Finish { reason });
        }
    }

    /// Starts tool calls whose name never came (so they are not lost).
    fn flush_tools(&mut self, out: &mut Vec<StreamEvent>) {
        for slot in &mut self.tools {
            if !slot.started {
                Self::start_slot(slot, out);
            }
        }
    }

    fn start_slot(slot: &mut ToolSlot, out: &mut Vec<StreamEvent>) {
        slot.started = true;
        let id = if slot.id.is_empty() {
            synth_id("call_")
        } else {
            slot.id.clone()
        };
        out.push(StreamEvent::ToolCallStart {
            index: slot.index,
            id,
            name: std::mem::take(&mut slot.name),
        });
        if !slot.pending_args.is_empty() {
            out.push(StreamEvent::ToolCallDelta {
                index: slot.index,
                arguments: std::mem::take(&mut slot.pending_args),
            });
        }
    }

    fn tool_delta(
        &mut self,
        key: Option<u32>,
        id: Option<&str>,
        f: Option<FnDeltaIn<'_>>,
        out: &mut Vec<StreamEvent>,
    ) {
        let id = id.filter(|s| !s.is_empty());
        let pos = match (key, id) {
            // A known index with another call's id: a server that numbers
            // every call 0 (seen in the wild); it is a new call.
            (Some(k), Some(id)) => self
                .tools
                .iter()
                .rposition(|s| s.key == Some(k))
                .filter(|&p| {
                    self.tools
                        .get(p)
                        .is_some_and(|s| s.id.is_empty() || s.id == id)
                }),
            (Some(k), None) => self.tools.iter().rposition(|s| s.key == Some(k)),
            (None, Some(id)) => self.tools.iter().rposition(|s| s.id == id),
            // No index and no id: more of the latest call.
            (None, None) => self.tools.len().checked_sub(1),
        };
        let (name, args) = match f {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        let pos = match pos {
            Some(p) => p,
            None => {
                self.tools.push(ToolSlot {
                    key,
                    index: self.tools.len() as u32,
                    id: id.unwrap_or_default().to_owned(),
                    name: String::new(),
                    pending_args: String::new(),
                    started: false,
                });
                self.tools.len() - 1
            }
        };
        let Some(slot) = self.tools.get_mut(pos) else {
            return;
        };
        if slot.started {
            if let Some(a) = args.filter(|a| !a.is_empty()) {
                out.push(StreamEvent::ToolCallDelta {
                    index: slot.index,
                    arguments: a.into_owned(),
                });
            }
            return;
        }
        if slot.id.is_empty() {
            if let Some(id) = id {
                slot.id = id.to_owned();
            }
        }
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            slot.name.push_str(&n);
        }
        if let Some(a) = args {
            slot.pending_args.push_str(&a);
        }
        if !slot.name.is_empty() {
            Self::start_slot(slot, out);
        }
    }
}

impl StreamDecode for StreamDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            self.flush_tools(out);
            self.flush_finish(out);
            return Ok(());
        }
        let chunk: ChunkIn = serde_json::from_str(data).map_err(|e| {
            TranslateError::new(format!("upstream stream chunk is not valid JSON: {e}"))
        })?;
        let has_payload = chunk.error.as_ref().is_some_and(|e| !e.is_null())
            || chunk.usage.is_some()
            || chunk.choices.as_ref().is_some_and(|c| !c.is_empty());
        if !self.started && !has_payload && chunk.id.as_deref().unwrap_or_default().is_empty() {
            // Azure's first chunk (prompt_filter_results) has an empty id and
            // model and nothing else: wait for the one that names them.
            return Ok(());
        }
        self.start(chunk.id.as_deref(), chunk.model.as_deref(), out);
        if let Some(e) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            self.flush_finish(out);
            out.push(StreamEvent::Error {
                message: error_message(e),
            });
            return Ok(());
        }
        let usage = chunk.usage.map(UsageIn::into_ir);
        let choices = chunk.choices.unwrap_or_default();
        if self.pending_finish.is_some() && choices.iter().any(|c| c.index.unwrap_or(0) == 0) {
            // More of the answer after its finish reason: do not hold it back.
            self.flush_finish(out);
        }
        for choice in choices {
            if choice.index.unwrap_or(0) != 0 {
                continue; // only the first choice is translated
            }
            if let Some(delta) = choice.delta {
                let thinking = match (delta.reasoning_content, delta.reasoning) {
                    (Some(t), _) if !t.is_empty() => Some(t),
                    (_, Some(t)) if !t.is_empty() => Some(t),
                    _ => None,
                };
                if let Some(t) = thinking {
                    out.push(StreamEvent::ThinkingDelta {
                        text: t.into_owned(),
                    });
                }
                if let Some(t) = delta.content.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::TextDelta {
                        text: t.into_owned(),
                    });
                }
                if let Some(t) = delta.refusal.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::TextDelta {
                        text: t.into_owned(),
                    });
                }
                for tc in delta.tool_calls.unwrap_or_default() {
                    self.tool_delta(tc.index, tc.id.as_deref(), tc.function, out);
                }
                if let Some(f) = delta.function_call {
                    self.tool_delta(Some(u32::MAX), None, Some(f), out);
                }
            }
            if let Some(r) = choice.finish_reason.filter(|r| !r.is_empty()) {
                if !self.finished && self.pending_finish.is_none() {
                    self.flush_tools(out);
                    self.pending_finish = Some(finish_from_str(&r));
                }
            }
        }
        if let Some(u) = usage {
            out.push(StreamEvent::Usage(u));
            // The usage chunk closes the answer: release the finish.
            self.flush_finish(out);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Streams: IR events -> client chunks
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ChunkChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDeltaOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDeltaOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FnDeltaOut<'a>,
}

#[derive(Serialize)]
struct FnDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Writes `chat.completion.chunk` SSE events for a client.
pub struct StreamEncoder {
    opts: StreamOptions,
    id: String,
    model: String,
    created: u64,
    started: bool,
    finished: bool,
    errored: bool,
    done: bool,
    called_tools: bool,
    /// Tool calls started whose arguments never came: they get `{}` before
    /// the finish, as clients parse the accumulated text as JSON.
    argless: Vec<u32>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new(opts: StreamOptions) -> Self {
        Self {
            opts,
            id: String::new(),
            model: String::new(),
            created: 0,
            started: false,
            finished: false,
            errored: false,
            done: false,
            called_tools: false,
            argless: Vec::new(),
            usage: None,
        }
    }

    fn args_delta(&self, index: u32, arguments: &str, out: &mut BytesMut) {
        self.write_delta(
            out,
            DeltaOut {
                tool_calls: Some([ToolCallDeltaOut {
                    index,
                    id: None,
                    kind: None,
                    function: FnDeltaOut {
                        name: None,
                        arguments,
                    },
                }]),
                ..DeltaOut::default()
            },
            None,
        );
    }

    fn write_chunk(
        &self,
        out: &mut BytesMut,
        choices: &[ChunkChoiceOut<'_>],
        usage: Option<UsageOut>,
    ) {
        let chunk = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        out.put_slice(b"data: ");
        // Serializing plain structs into memory cannot fail.
        let _ = serde_json::to_writer(BufMut::writer(&mut *out), &chunk);
        out.put_slice(b"\n\n");
    }

    fn write_delta(&self, out: &mut BytesMut, delta: DeltaOut<'_>, finish_reason: Option<&str>) {
        self.write_chunk(
            out,
            &[ChunkChoiceOut {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            None,
        );
    }

    /// Writes the role chunk, once (with a synthesized id if the upstream's
    /// start never came).
    fn ensure_started(&mut self, id: Option<&str>, model: Option<&str>, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = match id {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => synth_id("chatcmpl-"),
        };
        self.model = match (&self.opts.model_override, model) {
            (Some(m), _) => m.clone(),
            (None, Some(m)) => m.to_owned(),
            (None, None) => String::new(),
        };
        self.created = now_secs();
        self.write_delta(
            out,
            DeltaOut {
                role: Some("assistant"),
                content: Some(""),
                ..DeltaOut::default()
            },
            None,
        );
    }

    fn write_finish(&mut self, reason: Option<&FinishReason>, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.finished = true;
        for index in std::mem::take(&mut self.argless) {
            self.args_delta(index, "{}", out);
        }
        let r = finish_to_str(reason, self.called_tools);
        self.write_delta(out, DeltaOut::default(), Some(r));
    }
}

impl StreamEncode for StreamEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if let StreamEvent::Start { id, model } = ev {
            self.ensure_started(Some(id.as_str()), Some(model.as_str()), out);
            return;
        }
        self.ensure_started(None, None, out);
        match ev {
            // Opaque Anthropic data: no other format can carry it.
            StreamEvent::RedactedThinking { .. } => {}
            StreamEvent::Start { .. } | StreamEvent::ThinkingSignature { .. } => {}
            StreamEvent::TextDelta { text } => {
                if !text.is_empty() {
                    self.write_delta(
                        out,
                        DeltaOut {
                            content: Some(text),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                }
            }
            StreamEvent::ThinkingDelta { text } => {
                if !text.is_empty() {
                    self.write_delta(
                        out,
                        DeltaOut {
                            reasoning_content: Some(text),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.called_tools = true;
                self.argless.push(*index);
                self.write_delta(
                    out,
                    DeltaOut {
                        tool_calls: Some([ToolCallDeltaOut {
                            index: *index,
                            id: Some(id),
                            kind: Some("function"),
                            function: FnDeltaOut {
                                name: Some(name),
                                arguments: "",
                            },
                        }]),
                        ..DeltaOut::default()
                    },
                    None,
                );
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if !arguments.is_empty() {
                    self.argless.retain(|i| i != index);
                    self.args_delta(*index, arguments, out);
                }
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Finish { reason } => self.write_finish(Some(reason), out),
            StreamEvent::Error { message } => {
                self.errored = true;
                stream_error_event(Format::OpenAiChat, None, message, out);
            }
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.ensure_started(None, None, out);
        if !self.errored {
            self.write_finish(None, out);
            if self.opts.include_usage {
                if let Some(u) = self.usage {
                    self.write_chunk(out, &[], Some(UsageOut::from(&u)));
                }
            }
        }
        sse::write_data(out, b"[DONE]");
        self.done = true;
    }

    fn fail(&mut self, status: Option<u16>, message: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        stream_error_event(Format::OpenAiChat, status, message, out);
        sse::write_data(out, b"[DONE]");
        self.errored = true;
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_urls() {
        let p = |u: &str| parse_image_url(u.to_owned(), "x");
        assert_eq!(
            p("HTTPS://a/b.png"),
            Ok(ImageSource::Url {
                url: "HTTPS://a/b.png".into()
            })
        );
        assert_eq!(
            p("data:image/webp;charset=x;base64,UklG"),
            Ok(ImageSource::Base64 {
                media_type: "image/webp".into(),
                data: "UklG".into()
            })
        );
        assert!(p("data:image/png,raw").is_err());
        assert!(p("data:;base64,AA").is_err());
        assert!(p("data:").is_err());
        assert!(p("héllo").is_err());
        assert!(p("").is_err());
    }

    #[test]
    fn synthesized_ids_differ() {
        let a = synth_id("chatcmpl-");
        let b = synth_id("chatcmpl-");
        assert_ne!(a, b);
        assert!(a.starts_with("chatcmpl-") && a.len() == "chatcmpl-".len() + 24);
    }

    #[test]
    fn stream_strings_are_borrowed() {
        let c: ChunkIn =
            serde_json::from_str(r#"{"id":"x","choices":[{"delta":{"content":"abc"}}]}"#).unwrap();
        assert!(matches!(c.id, Some(Str(Cow::Borrowed(_)))));
        let d = c.choices.unwrap().pop().unwrap().delta.unwrap();
        assert!(matches!(d.content, Some(Str(Cow::Borrowed("abc")))));
    }
}
