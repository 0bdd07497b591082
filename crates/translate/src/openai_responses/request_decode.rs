//! Client side: a `POST /v1/responses` body → IR. Takes the body by value so
//! big strings (base64 images) are moved, never copied.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{err, reasoning_text, take_str, type_of};
use crate::body::{Body, Items, Member};
use crate::{
    ChatRequest, ContentPart, ImageSource, Message, Reasoning, ResponseFormat, Role, Tool,
    ToolChoice, TranslateError,
};

fn opt_string(
    m: &mut Map<String, Value>,
    key: &str,
    path: &dyn Fn() -> String,
) -> Result<Option<String>, TranslateError> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("{}{key}: expected a string", path()))),
    }
}

fn req_string(
    m: &mut Map<String, Value>,
    key: &str,
    path: &dyn Fn() -> String,
) -> Result<String, TranslateError> {
    opt_string(m, key, path)?.ok_or_else(|| err(format!("{}{key}: required", path())))
}

fn opt_f64(m: &Map<String, Value>, key: &str) -> Result<Option<f64>, TranslateError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| err(format!("{key}: expected a number"))),
    }
}

fn opt_u64(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, TranslateError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| err(format!("{key}: expected a non-negative integer"))),
    }
}

fn opt_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, TranslateError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(err(format!("{key}: expected a boolean"))),
    }
}

fn need_responses_upstream(what: &str) -> TranslateError {
    err(format!(
        "{what} can only be served by a Responses upstream (wire_api: responses)"
    ))
}
/// Decodes a `POST /v1/responses` body.
pub fn decode_request(body: Value) -> Result<ChatRequest, TranslateError> {
    if !body.is_object() {
        return Err(err("request body must be a JSON object".into()));
    }
    decode_body(Body::decoded(body)?)
}

/// [`decode_request`] of a body whose input items may still be raw text.
pub(crate) fn decode_body(mut body: Body<'_>) -> Result<ChatRequest, TranslateError> {
    let input = body.take("input");
    let obj = &mut body.obj;
    let root = || String::new();
    for key in ["previous_response_id", "conversation"] {
        if obj.get(key).is_some_and(|v| !v.is_null()) {
            return Err(err(format!(
                "{key}: server-side conversation state needs a Responses upstream \
                 (wire_api: responses); send the whole conversation in `input` instead"
            )));
        }
    }
    if obj.get("prompt").is_some_and(|v| !v.is_null()) {
        return Err(err(
            "prompt: stored prompt templates need a Responses upstream (wire_api: responses)"
                .into(),
        ));
    }
    if obj.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(err(
            "background: background responses need a Responses upstream (wire_api: responses)"
                .into(),
        ));
    }

    let mut req = ChatRequest {
        model: opt_string(obj, "model", &root)?.unwrap_or_default(),
        ..ChatRequest::default()
    };
    if let Some(instr) = opt_string(obj, "instructions", &root)? {
        if !instr.is_empty() {
            req.system.push(ContentPart::Text { text: instr });
        }
    }
    match input {
        None | Some(Member::Value(Value::Null)) => {}
        Some(Member::Value(Value::String(text))) => req.messages.push(Message {
            role: Role::User,
            content: vec![ContentPart::Text { text }],
        }),
        Some(Member::Array(items)) => decode_items(items, &mut req)?,
        Some(_) => {
            return Err(err(
                "input: expected a string or an array of input items".into()
            ))
        }
    }

    match obj.remove("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            req.tools.reserve(tools.len());
            for (i, t) in tools.into_iter().enumerate() {
                req.tools.push(decode_tool(t, i)?);
            }
        }
        Some(_) => return Err(err("tools: expected an array".into())),
    }
    req.tool_choice = match obj.remove("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(err(format!(
                    "tool_choice: expected \"auto\", \"none\", \"required\" or an object, got \"{other}\""
                )))
            }
        }),
        Some(mut v @ Value::Object(_)) => match type_of(&v) {
            Some("function") => match take_str(&mut v, "name") {
                Some(name) => Some(ToolChoice::Function(name)),
                None => return Err(err("tool_choice.name: required".into())),
            },
            Some(other) => {
                return Err(need_responses_upstream(&format!(
                    "tool_choice type '{other}'"
                )))
            }
            None => return Err(err("tool_choice.type: required".into())),
        },
        Some(_) => return Err(err("tool_choice: expected a string or an object".into())),
    };
    req.parallel_tool_calls = opt_bool(obj, "parallel_tool_calls")?;

    match obj.remove("text") {
        None | Some(Value::Null) => {}
        Some(Value::Object(mut text)) => {
            req.response_format = match text.remove("format") {
                None | Some(Value::Null) => None,
                Some(f) => Some(decode_format(f)?),
            };
        }
        Some(_) => return Err(err("text: expected an object".into())),
    }
    match obj.remove("reasoning") {
        None | Some(Value::Null) => {}
        Some(Value::Object(mut r)) => {
            // `summary` / `generate_summary` have no neutral form: dropped.
            if let Some(effort) = opt_string(&mut r, "effort", &|| "reasoning.".into())? {
                let disabled = effort == "none";
                req.reasoning = Some(Reasoning {
                    effort: Some(effort),
                    budget_tokens: None,
                    disabled,
                });
            }
        }
        Some(_) => return Err(err("reasoning: expected an object".into())),
    }
    req.max_tokens = opt_u64(obj, "max_output_tokens")?;
    req.temperature = opt_f64(obj, "temperature")?;
    req.top_p = opt_f64(obj, "top_p")?;
    req.user = opt_string(obj, "user", &root)?;
    if req.user.is_none() {
        req.user = opt_string(obj, "safety_identifier", &root)?;
    }
    req.stream = opt_bool(obj, "stream")?.unwrap_or(false);
    // A Responses stream always ends with the usage.
    req.stream_include_usage = req.stream;
    Ok(req)
}

fn decode_format(mut f: Value) -> Result<ResponseFormat, TranslateError> {
    if !f.is_object() {
        return Err(err("text.format: expected an object".into()));
    }
    match type_of(&f) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let name = match f.get_mut("name").map(Value::take) {
                None | Some(Value::Null) => "response".to_owned(),
                Some(Value::String(s)) => s,
                Some(_) => return Err(err("text.format.name: expected a string".into())),
            };
            let schema = match f.get_mut("schema").map(Value::take) {
                Some(s @ Value::Object(_)) => s,
                None | Some(Value::Null) => return Err(err("text.format.schema: required".into())),
                Some(_) => return Err(err("text.format.schema: expected an object".into())),
            };
            let strict = match f.get("strict") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => return Err(err("text.format.strict: expected a boolean".into())),
            };
            Ok(ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            })
        }
        Some(other) => Err(err(format!(
            "text.format.type: expected text, json_object or json_schema, got '{other}'"
        ))),
        None => Err(err("text.format.type: required".into())),
    }
}

fn decode_tool(mut t: Value, i: usize) -> Result<Tool, TranslateError> {
    let path = || format!("tools[{i}].");
    let Some(m) = t.as_object_mut() else {
        return Err(err(format!("tools[{i}]: expected an object")));
    };
    match m.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(need_responses_upstream(&format!("tool type '{other}'")));
        }
        None => return Err(err(format!("tools[{i}].type: required"))),
    }
    // Tolerate the Chat Completions nesting under `function`.
    if !m.contains_key("name") {
        if let Some(Value::Object(inner)) = m.remove("function") {
            m.extend(inner);
        }
    }
    let name = req_string(m, "name", &path)?;
    let description = opt_string(m, "description", &path)?;
    let parameters = match m.remove("parameters") {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p,
        Some(_) => return Err(err(format!("tools[{i}].parameters: expected an object"))),
    };
    let strict = match m.get("strict") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(err(format!("tools[{i}].strict: expected a boolean"))),
    };
    Ok(Tool {
        name,
        description,
        parameters,
        strict,
    })
}

/// Appends an assistant part: consecutive assistant items (messages,
/// reasoning, function calls) form one assistant turn.
fn push_assistant(messages: &mut Vec<Message>, part: ContentPart) {
    match messages.last_mut() {
        Some(m) if m.role == Role::Assistant => m.content.push(part),
        _ => messages.push(Message {
            role: Role::Assistant,
            content: vec![part],
        }),
    }
}

/// Appends a tool result: consecutive results form one user turn.
fn push_tool_result(messages: &mut Vec<Message>, part: ContentPart) {
    match messages.last_mut() {
        Some(m)
            if m.role == Role::User
                && m.content
                    .iter()
                    .all(|p| matches!(p, ContentPart::ToolResult { .. })) =>
        {
            m.content.push(part)
        }
        _ => messages.push(Message {
            role: Role::User,
            content: vec![part],
        }),
    }
}

#[derive(Clone, Copy)]
enum ItemKind {
    Message,
    FunctionCall,
    FunctionCallOutput,
    Reasoning,
}

fn decode_items(items: Items<'_>, req: &mut ChatRequest) -> Result<(), TranslateError> {
    // call_id → function name, for tool results (Gemini needs the name).
    let mut names: HashMap<String, String> = HashMap::new();
    req.messages.reserve(items.len());
    for (i, item) in items.values().enumerate() {
        let mut item = item?;
        let path = || format!("input[{i}].");
        let Some(m) = item.as_object_mut() else {
            return Err(err(format!("input[{i}]: expected an object")));
        };
        let kind = match m.get("type") {
            None | Some(Value::Null) => ItemKind::Message,
            Some(Value::String(t)) => match t.as_str() {
                "message" => ItemKind::Message,
                "function_call" => ItemKind::FunctionCall,
                "function_call_output" => ItemKind::FunctionCallOutput,
                "reasoning" => ItemKind::Reasoning,
                "item_reference" => {
                    return Err(err(format!(
                    "input[{i}]: item references need a Responses upstream (wire_api: responses)"
                )))
                }
                other => {
                    return Err(need_responses_upstream(&format!(
                        "input[{i}]: item type '{other}'"
                    )))
                }
            },
            Some(_) => return Err(err(format!("input[{i}].type: expected a string"))),
        };
        match kind {
            ItemKind::Message => decode_message(m, i, req)?,
            ItemKind::FunctionCall => {
                let call_id = req_string(m, "call_id", &path)?;
                let name = req_string(m, "name", &path)?;
                let arguments = match m.remove("arguments") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s,
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(_) => return Err(err(format!("input[{i}].arguments: expected a string"))),
                };
                names.insert(call_id.clone(), name.clone());
                push_assistant(
                    &mut req.messages,
                    ContentPart::ToolCall {
                        id: call_id,
                        name,
                        arguments,
                    },
                );
            }
            ItemKind::FunctionCallOutput => {
                let call_id = req_string(m, "call_id", &path)?;
                let content = match m.remove("output") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::String(text)) => vec![ContentPart::Text { text }],
                    Some(Value::Array(parts)) => {
                        let mut out = Vec::with_capacity(parts.len());
                        for (j, p) in parts.into_iter().enumerate() {
                            out.push(decode_part(p, &|| format!("input[{i}].output[{j}]"))?);
                        }
                        out
                    }
                    Some(v @ Value::Object(_)) => vec![ContentPart::Text {
                        text: v.to_string(),
                    }],
                    Some(_) => {
                        return Err(err(format!(
                            "input[{i}].output: expected a string or an array of content parts"
                        )))
                    }
                };
                let name = names.get(&call_id).cloned();
                push_tool_result(
                    &mut req.messages,
                    ContentPart::ToolResult {
                        call_id,
                        name,
                        content,
                        is_error: false,
                    },
                );
            }
            ItemKind::Reasoning => {
                let text = reasoning_text(m);
                let signature = opt_string(m, "encrypted_content", &path)?;
                if !text.is_empty() || signature.is_some() {
                    push_assistant(&mut req.messages, ContentPart::Thinking { text, signature });
                }
            }
        }
    }
    Ok(())
}

fn decode_message(
    m: &mut Map<String, Value>,
    i: usize,
    req: &mut ChatRequest,
) -> Result<(), TranslateError> {
    let path = || format!("input[{i}].");
    let role = req_string(m, "role", &path)?;
    let content = match m.remove("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![ContentPart::Text { text }],
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.into_iter().enumerate() {
                out.push(decode_part(p, &|| format!("input[{i}].content[{j}]"))?);
            }
            out
        }
        Some(_) => {
            return Err(err(format!(
                "input[{i}].content: expected a string or an array of content parts"
            )))
        }
    };
    match role.as_str() {
        "user" => req.messages.push(Message {
            role: Role::User,
            content,
        }),
        "assistant" => {
            for part in content {
                if let ContentPart::Image { .. } = part {
                    return Err(err(format!(
                        "input[{i}].content: assistant messages cannot carry images"
                    )));
                }
                push_assistant(&mut req.messages, part);
            }
        }
        "system" | "developer" => {
            for (j, part) in content.into_iter().enumerate() {
                if !matches!(part, ContentPart::Text { .. }) {
                    return Err(err(format!(
                        "input[{i}].content[{j}]: {role} messages can only carry text"
                    )));
                }
                req.system.push(part);
            }
        }
        other => {
            return Err(err(format!(
                "input[{i}].role: expected user, assistant, system or developer, got '{other}'"
            )))
        }
    }
    Ok(())
}

fn decode_part(mut p: Value, path: &dyn Fn() -> String) -> Result<ContentPart, TranslateError> {
    let Some(m) = p.as_object_mut() else {
        return Err(err(format!("{}: expected an object", path())));
    };
    let dot = || format!("{}.", path());
    let ty = match m.get("type") {
        Some(Value::String(t)) => t.as_str(),
        None => return Err(err(format!("{}.type: required", path()))),
        Some(_) => return Err(err(format!("{}.type: expected a string", path()))),
    };
    match ty {
        "input_text" | "output_text" | "text" => Ok(ContentPart::Text {
            text: req_string(m, "text", &dot)?,
        }),
        "refusal" => Ok(ContentPart::Text {
            text: req_string(m, "refusal", &dot)?,
        }),
        "input_image" => {
            if m.get("file_id").is_some_and(|v| !v.is_null()) && m.get("image_url").is_none() {
                return Err(need_responses_upstream(&format!(
                    "{}: images by file_id",
                    path()
                )));
            }
            let url = match m.remove("image_url") {
                Some(Value::String(s)) => s,
                Some(Value::Object(mut o)) => match o.remove("url") {
                    Some(Value::String(s)) => s,
                    _ => return Err(err(format!("{}.image_url.url: required", path()))),
                },
                None | Some(Value::Null) => {
                    return Err(err(format!("{}.image_url: required", path())))
                }
                Some(_) => return Err(err(format!("{}.image_url: expected a string", path()))),
            };
            Ok(ContentPart::Image {
                source: image_source(url, path)?,
            })
        }
        other => Err(need_responses_upstream(&format!(
            "{}: content type '{other}'",
            path()
        ))),
    }
}

/// An http(s) URL or a base64 `data:` URL. The base64 payload is moved, not
/// copied.
fn image_source(mut url: String, path: &dyn Fn() -> String) -> Result<ImageSource, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let Some(semi) = rest.find(";base64,") else {
            return Err(err(format!(
                "{}.image_url: only base64 data URLs are supported",
                path()
            )));
        };
        let media_type = rest[..semi].to_owned();
        url.drain(..5 + semi + 8);
        return Ok(ImageSource::Base64 {
            media_type,
            data: url,
        });
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(ImageSource::Url { url })
    } else {
        Err(err(format!(
            "{}.image_url: expected an http(s) URL or a data URL",
            path()
        )))
    }
}
