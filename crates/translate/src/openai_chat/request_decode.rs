//! Client side: a `/v1/chat/completions` request body → IR. Takes the body
//! by value so big strings (base64 images) are moved, never copied.

use serde_json::{Map, Value};

use super::content::decode_part;
use super::{expected, opt_string, req_string, synth_id, take, Obj};
use crate::body::{Body, Items, Member};
use crate::ir::{cache_control_in, cache_control_of};
use crate::{
    CacheAt, CacheMark, ChatRequest, ContentPart, Message, Reasoning, ResponseFormat, Role, Tool,
    ToolChoice, TranslateError,
};

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

/// Decodes a `/v1/chat/completions` request body.
pub fn decode_request(body: Value) -> Result<ChatRequest, TranslateError> {
    decode_body(Body::decoded(body)?)
}

/// [`decode_request`] of a body whose messages may still be raw text.
pub(crate) fn decode_body(mut body: Body<'_>) -> Result<ChatRequest, TranslateError> {
    let messages = body.take("messages");
    let obj = &mut body.obj;
    let mut req = ChatRequest {
        model: opt_string(obj, "model", "")?.unwrap_or_default(),
        ..ChatRequest::default()
    };

    let messages = match messages {
        Some(Member::Array(a)) => a,
        Some(Member::Value(v)) if !v.is_null() => {
            return Err(expected("messages", "an array of messages", &v))
        }
        _ => {
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

fn decode_messages(messages: Items<'_>, req: &mut ChatRequest) -> Result<(), TranslateError> {
    // The previous message was a tool/function result (consecutive ones are
    // merged into one User message).
    let mut prev_tool = false;
    // Id given to the last legacy `function_call`, for the `function` reply.
    let mut legacy_call: Option<String> = None;
    for (i, m) in messages.values().enumerate() {
        let mut m = match m? {
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
                            if let Some(ttl) = cache_control_of(&p) {
                                req.cache.push(CacheMark {
                                    at: CacheAt::System(req.system.len()),
                                    ttl,
                                });
                            }
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
                // LiteLLM's message-level spelling: the message's last part.
                let whole = cache_control_in(&m);
                match m.remove("content") {
                    Some(Value::String(s)) => content.push(ContentPart::Text { text: s }),
                    Some(Value::Array(parts)) => {
                        content.reserve(parts.len());
                        for (j, p) in parts.into_iter().enumerate() {
                            if let Some(ttl) = cache_control_of(&p) {
                                req.cache.push(CacheMark {
                                    at: CacheAt::Part {
                                        message: req.messages.len(),
                                        part: content.len(),
                                    },
                                    ttl,
                                });
                            }
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
                if let (Some(ttl), Some(part)) = (whole, content.len().checked_sub(1)) {
                    req.cache.push(CacheMark {
                        at: CacheAt::Part {
                            message: req.messages.len(),
                            part,
                        },
                        ttl,
                    });
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
                if let Some(ttl) = cache_control_in(&t) {
                    req.cache.push(CacheMark {
                        at: CacheAt::Tool(req.tools.len()),
                        ttl,
                    });
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
