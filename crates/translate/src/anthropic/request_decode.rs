//! Client side: a `/v1/messages` request body → IR. Takes the body by value
//! so big strings (base64 images) are moved, never copied.

use serde_json::{Map, Value};

use crate::body::{Body, Member};
use crate::ir::cache_control_of;
use crate::{
    CacheAt, CacheMark, ChatRequest, ContentPart, ImageSource, Message, Reasoning, ResponseFormat,
    Role, Tool, ToolChoice, TranslateError,
};

fn err(path: impl std::fmt::Display, what: &str) -> TranslateError {
    TranslateError::new(format!("{path}: {what}"))
}

/// A present, non-null field (`null` counts as absent: many clients send it
/// for unset options).
fn field(obj: &mut Map<String, Value>, key: &str) -> Option<Value> {
    match obj.remove(key) {
        None | Some(Value::Null) => None,
        v => v,
    }
}

fn string(v: Value, path: impl std::fmt::Display) -> Result<String, TranslateError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(err(path, "expected a string")),
    }
}

fn req_string(
    obj: &mut Map<String, Value>,
    key: &str,
    path: &dyn Fn() -> String,
) -> Result<String, TranslateError> {
    match field(obj, key) {
        Some(v) => string(v, format_args!("{}.{key}", path())),
        None => Err(err(format_args!("{}.{key}", path()), "required")),
    }
}

fn opt_u64(obj: &mut Map<String, Value>, key: &str) -> Result<Option<u64>, TranslateError> {
    match field(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| err(key, "expected a non-negative integer")),
    }
}

fn opt_f64(obj: &mut Map<String, Value>, key: &str) -> Result<Option<f64>, TranslateError> {
    match field(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| err(key, "expected a number")),
    }
}

fn opt_bool(
    obj: &mut Map<String, Value>,
    key: &str,
    path: impl std::fmt::Display,
) -> Result<Option<bool>, TranslateError> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(err(format_args!("{path}{key}"), "expected a boolean")),
    }
}

fn object(v: Value, path: &dyn Fn() -> String) -> Result<Map<String, Value>, TranslateError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(err(path(), "expected an object")),
    }
}

/// Decodes an Anthropic Messages request body sent by a client.
pub fn decode_request(body: Value) -> Result<ChatRequest, TranslateError> {
    decode_body(Body::decoded(body)?)
}

/// [`decode_request`] of a body whose messages may still be raw text.
pub(crate) fn decode_body(mut body: Body<'_>) -> Result<ChatRequest, TranslateError> {
    let messages = body.take("messages");
    let obj = &mut body.obj;
    let mut req = ChatRequest::default();
    // `model` may be absent when the body carries a `models` list instead.
    if let Some(v) = field(obj, "model") {
        req.model = string(v, "model")?;
    }
    if let Some(v) = field(obj, "system") {
        decode_system(v, &mut req)?;
    }
    match messages {
        Some(Member::Array(msgs)) => {
            req.messages.reserve(msgs.len());
            for (i, m) in msgs.values().enumerate() {
                decode_message(m?, i, &mut req)?;
            }
        }
        None | Some(Member::Value(Value::Null)) => return Err(err("messages", "required")),
        Some(_) => return Err(err("messages", "expected an array of messages")),
    }
    req.max_tokens = opt_u64(obj, "max_tokens")?;
    req.temperature = opt_f64(obj, "temperature")?;
    req.top_p = opt_f64(obj, "top_p")?;
    req.top_k = opt_u64(obj, "top_k")?;
    req.stream = opt_bool(obj, "stream", "")?.unwrap_or(false);
    match field(obj, "stop_sequences") {
        None => {}
        Some(Value::Array(a)) => {
            req.stop = a
                .into_iter()
                .enumerate()
                .map(|(i, s)| string(s, format_args!("stop_sequences[{i}]")))
                .collect::<Result<_, _>>()?;
        }
        Some(_) => return Err(err("stop_sequences", "expected an array of strings")),
    }
    if let Some(v) = field(obj, "tools") {
        let Value::Array(tools) = v else {
            return Err(err("tools", "expected an array"));
        };
        req.tools.reserve(tools.len());
        for (i, t) in tools.into_iter().enumerate() {
            if let Some(ttl) = cache_control_of(&t) {
                req.cache.push(CacheMark {
                    at: CacheAt::Tool(req.tools.len()),
                    ttl,
                });
            }
            req.tools.push(decode_tool(t, i)?);
        }
    }
    if let Some(v) = field(obj, "tool_choice") {
        let mut tc = object(v, &|| "tool_choice".into())?;
        let kind = req_string(&mut tc, "type", &|| "tool_choice".into())?;
        req.tool_choice = Some(match kind.as_str() {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Function(req_string(&mut tc, "name", &|| "tool_choice".into())?),
            other => {
                return Err(err(
                    "tool_choice.type",
                    &format!("unknown value `{other}` (expected auto, any, tool or none)"),
                ))
            }
        });
        if let Some(disable) = opt_bool(&mut tc, "disable_parallel_tool_use", "tool_choice.")? {
            req.parallel_tool_calls = Some(!disable);
        }
    }
    if let Some(v) = field(obj, "thinking") {
        let mut th = object(v, &|| "thinking".into())?;
        let kind = req_string(&mut th, "type", &|| "thinking".into())?;
        req.reasoning = Some(match kind.as_str() {
            "enabled" => Reasoning {
                budget_tokens: opt_u64(&mut th, "budget_tokens").map_err(|_| {
                    err("thinking.budget_tokens", "expected a non-negative integer")
                })?,
                ..Reasoning::default()
            },
            // Model-chosen thinking depth: enabled, no fixed budget.
            "adaptive" => Reasoning::default(),
            "disabled" => Reasoning {
                disabled: true,
                ..Reasoning::default()
            },
            other => {
                return Err(err(
                    "thinking.type",
                    &format!("unknown value `{other}` (expected enabled or disabled)"),
                ))
            }
        });
    }
    if let Some(v) = field(obj, "output_config") {
        let mut oc = object(v, &|| "output_config".into())?;
        if let Some(f) = field(&mut oc, "format") {
            req.response_format = Some(decode_output_format(f, "output_config.format")?);
        }
        if let Some(e) = field(&mut oc, "effort") {
            let effort = string(e, "output_config.effort")?;
            req.reasoning.get_or_insert_with(Reasoning::default).effort = Some(effort);
        }
    }
    // The structured-outputs beta's spelling of the same thing.
    if let Some(f) = field(obj, "output_format") {
        req.response_format = Some(decode_output_format(f, "output_format")?);
    }
    if let Some(v) = field(obj, "metadata") {
        let mut md = object(v, &|| "metadata".into())?;
        if let Some(u) = field(&mut md, "user_id") {
            req.user = Some(string(u, "metadata.user_id")?);
        }
    }
    Ok(req)
}

/// `output_config.format` (or the beta's `output_format`):
/// `{"type": "json_schema", "schema": {...}}`.
fn decode_output_format(v: Value, path: &str) -> Result<ResponseFormat, TranslateError> {
    let mut f = object(v, &|| path.to_owned())?;
    let kind = req_string(&mut f, "type", &|| path.to_owned())?;
    if kind != "json_schema" {
        return Err(err(
            format_args!("{path}.type"),
            &format!("unknown value `{kind}` (expected json_schema)"),
        ));
    }
    match field(&mut f, "schema") {
        Some(schema @ Value::Object(_)) => Ok(ResponseFormat::JsonSchema {
            // Anthropic's format has no name; OpenAI requires one.
            name: "output".to_owned(),
            schema,
            strict: Some(true),
        }),
        _ => Err(err(
            format_args!("{path}.schema"),
            "required: a JSON Schema object",
        )),
    }
}

fn decode_system(v: Value, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let out = &mut req.system;
    match v {
        Value::String(text) => {
            if !text.is_empty() {
                out.push(ContentPart::Text { text });
            }
        }
        Value::Array(blocks) => {
            for (j, b) in blocks.into_iter().enumerate() {
                let path = || format!("system[{j}]");
                if let Some(ttl) = cache_control_of(&b) {
                    req.cache.push(CacheMark {
                        at: CacheAt::System(out.len()),
                        ttl,
                    });
                }
                let mut b = object(b, &path)?;
                let kind = req_string(&mut b, "type", &path)?;
                if kind != "text" {
                    return Err(err(
                        path(),
                        &format!("block type `{kind}` is not allowed in system (text only)"),
                    ));
                }
                out.push(ContentPart::Text {
                    text: req_string(&mut b, "text", &path)?,
                });
            }
        }
        _ => {
            return Err(err(
                "system",
                "expected a string or an array of text blocks",
            ))
        }
    }
    Ok(())
}

fn decode_message(m: Value, i: usize, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let path = || format!("messages[{i}]");
    let mut m = object(m, &path)?;
    let role = req_string(&mut m, "role", &path)?;
    let role = match role.as_str() {
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        // Not in Anthropic's API, but Claude-style bodies sent to the chat
        // endpoint carry them: hoisted like OpenAI system messages.
        "system" | "developer" => None,
        other => {
            return Err(err(
                format_args!("messages[{i}].role"),
                &format!("unknown role `{other}` (expected user or assistant)"),
            ))
        }
    };
    let content = match field(&mut m, "content") {
        Some(Value::String(text)) => vec![ContentPart::Text { text }],
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (j, b) in blocks.into_iter().enumerate() {
                let path = || format!("messages[{i}].content[{j}]");
                if let (Some(ttl), Some(_)) = (cache_control_of(&b), role) {
                    req.cache.push(CacheMark {
                        at: CacheAt::Part {
                            message: req.messages.len(),
                            part: parts.len(),
                        },
                        ttl,
                    });
                }
                parts.push(decode_block(b, &path, false)?);
            }
            parts
        }
        Some(_) => {
            return Err(err(
                format_args!("messages[{i}].content"),
                "expected a string or an array of content blocks",
            ))
        }
        None => return Err(err(format_args!("messages[{i}].content"), "required")),
    };
    match role {
        Some(role) => req.messages.push(Message { role, content }),
        None => {
            for part in content {
                match part {
                    ContentPart::Text { .. } => req.system.push(part),
                    _ => {
                        return Err(err(
                            format_args!("messages[{i}].content"),
                            "a system message may only hold text",
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

/// One content block. `in_tool_result`: only text and images are allowed.
fn decode_block(
    b: Value,
    path: &dyn Fn() -> String,
    in_tool_result: bool,
) -> Result<ContentPart, TranslateError> {
    let mut b = object(b, path)?;
    let kind = req_string(&mut b, "type", path)?;
    let part = match kind.as_str() {
        "text" => ContentPart::Text {
            text: req_string(&mut b, "text", path)?,
        },
        "image" => {
            let spath = || format!("{}.source", path());
            let mut src = match field(&mut b, "source") {
                Some(v) => object(v, &spath)?,
                None => return Err(err(spath(), "required")),
            };
            let stype = req_string(&mut src, "type", &spath)?;
            let source = match stype.as_str() {
                "base64" => ImageSource::Base64 {
                    media_type: req_string(&mut src, "media_type", &spath)?,
                    data: req_string(&mut src, "data", &spath)?,
                },
                "url" => ImageSource::Url {
                    url: req_string(&mut src, "url", &spath)?,
                },
                other => {
                    return Err(err(
                        format_args!("{}.type", spath()),
                        &format!(
                            "image source type `{other}` is not supported (use base64 or url)"
                        ),
                    ))
                }
            };
            ContentPart::Image { source }
        }
        // OpenAI-style image part inside a Claude-style body (chat endpoint).
        "image_url" => {
            let url = match field(&mut b, "image_url") {
                Some(Value::String(u)) => u,
                Some(Value::Object(mut o)) => {
                    req_string(&mut o, "url", &|| format!("{}.image_url", path()))?
                }
                _ => return Err(err(format_args!("{}.image_url", path()), "required")),
            };
            ContentPart::Image {
                source: image_from_url(url),
            }
        }
        "tool_use" if !in_tool_result => {
            let id = req_string(&mut b, "id", path)?;
            let name = req_string(&mut b, "name", path)?;
            let arguments = match field(&mut b, "input") {
                None => "{}".to_owned(),
                Some(input) => input.to_string(),
            };
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            }
        }
        "tool_result" if !in_tool_result => {
            let call_id = req_string(&mut b, "tool_use_id", path)?;
            let content = match field(&mut b, "content") {
                None => Vec::new(),
                Some(Value::String(text)) => vec![ContentPart::Text { text }],
                Some(Value::Array(blocks)) => {
                    let mut parts = Vec::with_capacity(blocks.len());
                    for (k, nb) in blocks.into_iter().enumerate() {
                        let npath = || format!("{}.content[{k}]", path());
                        parts.push(decode_block(nb, &npath, true)?);
                    }
                    parts
                }
                Some(_) => {
                    return Err(err(
                        format_args!("{}.content", path()),
                        "expected a string or an array of content blocks",
                    ))
                }
            };
            let is_error = opt_bool(&mut b, "is_error", format_args!("{}.", path()))?;
            ContentPart::ToolResult {
                call_id,
                name: None,
                content,
                is_error: is_error.unwrap_or(false),
            }
        }
        "thinking" if !in_tool_result => {
            let text = req_string(&mut b, "thinking", path)?;
            let signature = match field(&mut b, "signature") {
                None => None,
                Some(s) => Some(string(s, format_args!("{}.signature", path()))?),
            };
            ContentPart::Thinking { text, signature }
        }
        "redacted_thinking" if !in_tool_result => ContentPart::RedactedThinking {
            data: req_string(&mut b, "data", path)?,
        },
        other => {
            let hint = if in_tool_result {
                "inside tool_result only text and image blocks are supported"
            } else {
                "supported: text, image, tool_use, tool_result, thinking, redacted_thinking"
            };
            return Err(err(
                path(),
                &format!("content block type `{other}` is not supported by this gateway ({hint})"),
            ));
        }
    };
    Ok(part)
}

/// `data:<media>;base64,<data>` → inline bytes; anything else is a URL.
fn image_from_url(url: String) -> ImageSource {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((media_type, data)) = rest.split_once(";base64,") {
            return ImageSource::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            };
        }
    }
    ImageSource::Url { url }
}

fn decode_tool(t: Value, i: usize) -> Result<Tool, TranslateError> {
    let path = || format!("tools[{i}]");
    let mut t = object(t, &path)?;
    if let Some(kind) = t.get("type").and_then(Value::as_str) {
        if kind != "custom" {
            return Err(err(
                path(),
                &format!(
                    "server tool `{kind}` is not supported by this gateway (only custom tools with name and input_schema)"
                ),
            ));
        }
    }
    let name = req_string(&mut t, "name", &path)?;
    let description = match field(&mut t, "description") {
        None => None,
        Some(d) => Some(string(d, format_args!("tools[{i}].description"))?),
    };
    let parameters = match field(&mut t, "input_schema") {
        None => serde_json::json!({"type": "object", "properties": {}}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(err(
                format_args!("tools[{i}].input_schema"),
                "expected a JSON Schema object",
            ))
        }
    };
    Ok(Tool {
        name,
        description,
        parameters,
        strict: None,
    })
}
