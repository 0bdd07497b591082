//! OpenAI Responses wire format (`POST /v1/responses`).
//!
//! Client side: what `client.responses.create` (OpenAI SDKs, Codex CLI)
//! sends and expects. Provider side: an upstream configured with
//! `wire_api: responses`. A Responses client in front of a Responses upstream
//! is passed through natively; this module only runs when translating.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    ChatRequest, ChatResponse, ContentPart, FinishReason, ImageSource, Message, Reasoning,
    ResponseFormat, Role, SseEvent, StreamDecode, StreamEncode, StreamEvent, StreamOptions, Tool,
    ToolChoice, TranslateError, Usage,
};

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn err(msg: String) -> TranslateError {
    TranslateError::new(msg)
}

/// Unix seconds now.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A process-unique hex suffix for synthesized ids (no rand crate: time and a
/// counter).
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{t:016x}{:06x}", n & 0xff_ffff)
}

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

fn type_of(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

/// Takes a string field out of a JSON object without copying it.
fn take_str(v: &mut Value, key: &str) -> Option<String> {
    match v.get_mut(key)?.take() {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn need_responses_upstream(what: &str) -> TranslateError {
    err(format!(
        "{what} can only be served by a Responses upstream (wire_api: responses)"
    ))
}

// ---------------------------------------------------------------------------
// Request: client side
// ---------------------------------------------------------------------------

/// Decodes a `POST /v1/responses` body.
pub fn decode_request(mut body: Value) -> Result<ChatRequest, TranslateError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(err("request body must be a JSON object".into()));
    };
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
    match obj.remove("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => req.messages.push(Message {
            role: Role::User,
            content: vec![ContentPart::Text { text }],
        }),
        Some(Value::Array(items)) => decode_items(items, &mut req)?,
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

fn decode_items(items: Vec<Value>, req: &mut ChatRequest) -> Result<(), TranslateError> {
    // call_id → function name, for tool results (Gemini needs the name).
    let mut names: HashMap<String, String> = HashMap::new();
    req.messages.reserve(items.len());
    for (i, mut item) in items.into_iter().enumerate() {
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

/// The text of a reasoning item: its summary parts (joined by a blank line),
/// else its raw `reasoning_text` content.
fn reasoning_text(m: &mut Map<String, Value>) -> String {
    let mut text = String::new();
    for key in ["summary", "content"] {
        if let Some(Value::Array(parts)) = m.get_mut(key) {
            for p in parts.iter_mut() {
                if let Some(t) = take_str(p, "text") {
                    if !text.is_empty() {
                        text.push_str("\n\n");
                    }
                    text.push_str(&t);
                }
            }
        }
        if !text.is_empty() {
            break;
        }
    }
    text
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

// ---------------------------------------------------------------------------
// Request: provider side
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct ReqBody<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<Cow<'a, str>>,
    input: Vec<InItem<'a>>,
    store: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<TextOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<EffortOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InItem<'a> {
    Message {
        role: &'static str,
        content: Vec<InPart<'a>>,
    },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: ToolOutput<'a>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InPart<'a> {
    InputText { text: &'a str },
    OutputText { text: &'a str },
    InputImage { image_url: Cow<'a, str> },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolOutput<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<InPart<'a>>),
}

#[derive(Serialize)]
struct ToolDef<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: Cow<'a, Value>,
    strict: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolChoiceOut<'a> {
    Mode(&'static str),
    Function {
        #[serde(rename = "type")]
        ty: &'static str,
        name: &'a str,
    },
}

#[derive(Serialize)]
struct TextOut<'a> {
    format: FormatOut<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FormatOut<'a> {
    Text,
    JsonObject,
    JsonSchema {
        name: &'a str,
        schema: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

#[derive(Serialize)]
struct EffortOut<'a> {
    effort: &'a str,
}

fn image_url(source: &ImageSource) -> Cow<'_, str> {
    match source {
        ImageSource::Url { url } => Cow::Borrowed(url),
        ImageSource::Base64 { media_type, data } => {
            Cow::Owned(format!("data:{media_type};base64,{data}"))
        }
    }
}

/// The Responses effort for a thinking budget (Anthropic `budget_tokens`,
/// Gemini `thinkingBudget`).
fn effort_for_budget(budget: u64) -> &'static str {
    match budget {
        0..=4096 => "low",
        4097..=16384 => "medium",
        _ => "high",
    }
}

/// A call's arguments as clients parse them: JSON text, never empty (a call
/// whose upstream sent no arguments takes none: `{}`).
fn args_or_empty_object(arguments: &str) -> &str {
    if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    }
}

/// The Responses API refuses `max_output_tokens` below 16.
const MIN_OUTPUT_TOKENS: u64 = 16;

/// Encodes the body for an upstream `POST /v1/responses`.
pub fn encode_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let instructions = {
        let mut texts = req.system.iter().filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        });
        match (texts.next(), texts.next()) {
            (None, _) => None,
            (Some(one), None) => Some(Cow::Borrowed(one)),
            (Some(a), Some(b)) => {
                let mut s = format!("{a}\n\n{b}");
                for t in texts {
                    s.push_str("\n\n");
                    s.push_str(t);
                }
                Some(Cow::Owned(s))
            }
        }
    };

    let mut input = Vec::with_capacity(req.messages.len());
    for msg in &req.messages {
        encode_message(msg, &mut input);
    }

    let tools = req
        .tools
        .iter()
        .map(|t| ToolDef {
            ty: "function",
            name: &t.name,
            description: t.description.as_deref(),
            parameters: if t.parameters.is_object() {
                Cow::Borrowed(&t.parameters)
            } else {
                Cow::Owned(serde_json::json!({"type": "object", "properties": {}}))
            },
            // Responses makes function tools strict unless told otherwise;
            // schemas written for other providers rarely satisfy strict mode.
            strict: t.strict.unwrap_or(false),
        })
        .collect();
    let tool_choice = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => ToolChoiceOut::Mode("auto"),
        ToolChoice::None => ToolChoiceOut::Mode("none"),
        ToolChoice::Required => ToolChoiceOut::Mode("required"),
        ToolChoice::Function(name) => ToolChoiceOut::Function {
            ty: "function",
            name,
        },
    });
    let text = req.response_format.as_ref().map(|f| TextOut {
        format: match f {
            ResponseFormat::Text => FormatOut::Text,
            ResponseFormat::JsonObject => FormatOut::JsonObject,
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => FormatOut::JsonSchema {
                name: if name.is_empty() { "response" } else { name },
                schema,
                strict: *strict,
            },
        },
    });
    let reasoning = req.reasoning.as_ref().and_then(|r| {
        let effort = match (&r.effort, r.budget_tokens) {
            (Some(e), _) => e.as_str(),
            (None, _) if r.disabled => return None,
            (None, Some(0)) => return None,
            (None, Some(b)) => effort_for_budget(b),
            (None, None) => return None,
        };
        Some(EffortOut { effort })
    });

    let body = ReqBody {
        model: &req.model,
        instructions,
        input,
        store: false,
        stream: req.stream,
        max_output_tokens: req.max_tokens.map(|m| m.max(MIN_OUTPUT_TOKENS)),
        temperature: req.temperature,
        top_p: req.top_p,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        text,
        reasoning,
        user: req.user.as_deref(),
    };
    serde_json::to_vec(&body).map_err(|e| err(format!("encoding the Responses request: {e}")))
}

fn encode_message<'a>(msg: &'a Message, input: &mut Vec<InItem<'a>>) {
    let assistant = msg.role == Role::Assistant;
    let role = if assistant { "assistant" } else { "user" };
    let mut parts: Vec<InPart<'a>> = Vec::new();
    let flush = |parts: &mut Vec<InPart<'a>>, input: &mut Vec<InItem<'a>>| {
        if !parts.is_empty() {
            input.push(InItem::Message {
                role,
                content: std::mem::take(parts),
            });
        }
    };
    for part in &msg.content {
        match part {
            ContentPart::Text { text } => parts.push(if assistant {
                InPart::OutputText { text }
            } else {
                InPart::InputText { text }
            }),
            ContentPart::Image { source } => {
                // Assistant turns cannot carry images in Responses.
                if !assistant {
                    parts.push(InPart::InputImage {
                        image_url: image_url(source),
                    });
                }
            }
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            } => {
                flush(&mut parts, input);
                input.push(InItem::FunctionCall {
                    call_id: id,
                    name,
                    arguments: if arguments.is_empty() {
                        "{}"
                    } else {
                        arguments
                    },
                });
            }
            ContentPart::ToolResult {
                call_id, content, ..
            } => {
                flush(&mut parts, input);
                input.push(InItem::FunctionCallOutput {
                    call_id,
                    output: tool_output(content),
                });
            }
            // Reasoning items can only be replayed with their original ids /
            // encrypted content, which other formats do not carry.
            ContentPart::Thinking { .. } | ContentPart::RedactedThinking { .. } => {}
        }
    }
    flush(&mut parts, input);
}

fn tool_output(content: &[ContentPart]) -> ToolOutput<'_> {
    let has_image = content
        .iter()
        .any(|p| matches!(p, ContentPart::Image { .. }));
    if has_image {
        return ToolOutput::Parts(
            content
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(InPart::InputText { text }),
                    ContentPart::Image { source } => Some(InPart::InputImage {
                        image_url: image_url(source),
                    }),
                    _ => None,
                })
                .collect(),
        );
    }
    let mut texts = content.iter().filter_map(|p| match p {
        ContentPart::Text { text } => Some(text.as_str()),
        _ => None,
    });
    ToolOutput::Text(match (texts.next(), texts.next()) {
        (None, _) => Cow::Borrowed(""),
        (Some(one), None) => Cow::Borrowed(one),
        (Some(a), Some(b)) => {
            let mut s = format!("{a}\n{b}");
            for t in texts {
                s.push('\n');
                s.push_str(t);
            }
            Cow::Owned(s)
        }
    })
}

// ---------------------------------------------------------------------------
// Response: provider side (decode) and client side (encode)
// ---------------------------------------------------------------------------

fn parse_usage(u: &Value) -> Option<Usage> {
    let input_tokens = u.get("input_tokens")?.as_u64()?;
    let output_tokens = u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        input_tokens,
        output_tokens,
        cached_input_tokens: u
            .get("input_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64),
        cache_creation_input_tokens: None,
        reasoning_tokens: u
            .get("output_tokens_details")
            .and_then(|d| d.get("reasoning_tokens"))
            .and_then(Value::as_u64),
    })
}

/// The finish reason of a finished response object.
fn finish_of(resp: &Value, saw_tool_call: bool) -> FinishReason {
    let status = resp
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("completed");
    match status {
        "incomplete" => {
            match resp
                .get("incomplete_details")
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
            {
                Some("max_output_tokens") => FinishReason::Length,
                Some("content_filter") => FinishReason::ContentFilter,
                Some(other) => FinishReason::Other(other.to_owned()),
                None => FinishReason::Other("incomplete".to_owned()),
            }
        }
        "completed" => {
            let calls_in_output = resp
                .get("output")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|i| type_of(i) == Some("function_call")));
            if saw_tool_call || calls_in_output {
                FinishReason::ToolCalls
            } else {
                FinishReason::Stop
            }
        }
        other => FinishReason::Other(other.to_owned()),
    }
}

fn error_message(e: &Value) -> Option<String> {
    match e {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| Some(e.to_string())),
        _ => None,
    }
}

/// Decodes an upstream's non-streaming Responses body.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| err(format!("invalid JSON in the Responses body: {e}")))?;
    if !v.is_object() {
        return Err(err("Responses body: expected a JSON object".into()));
    }
    if let Some(msg) = v.get("error").and_then(error_message) {
        return Err(err(format!("upstream response failed: {msg}")));
    }
    if v.get("status").and_then(Value::as_str) == Some("failed") {
        return Err(err("upstream response failed".into()));
    }
    let finish_reason = Some(finish_of(&v, false));
    let usage = v.get("usage").and_then(parse_usage);
    let mut resp = ChatResponse {
        id: take_str(&mut v, "id").unwrap_or_else(|| format!("resp_{}", unique_suffix())),
        model: take_str(&mut v, "model").unwrap_or_default(),
        created: v.get("created_at").and_then(Value::as_u64).unwrap_or(0),
        content: Vec::new(),
        finish_reason,
        usage,
    };
    let output = match v.get_mut("output").map(Value::take) {
        Some(Value::Array(o)) => o,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(err("output: expected an array".into())),
    };
    for mut item in output {
        let Some(m) = item.as_object_mut() else {
            continue;
        };
        match m.get("type").and_then(Value::as_str) {
            Some("reasoning") => {
                let text = reasoning_text(m);
                let signature = match m.remove("encrypted_content") {
                    Some(Value::String(s)) => Some(s),
                    _ => None,
                };
                if !text.is_empty() || signature.is_some() {
                    resp.content.push(ContentPart::Thinking { text, signature });
                }
            }
            Some("message") => {
                if let Some(Value::Array(parts)) = m.get_mut("content") {
                    for p in parts.iter_mut() {
                        let text = match type_of(p) {
                            Some("output_text") | Some("text") => take_str(p, "text"),
                            Some("refusal") => take_str(p, "refusal"),
                            _ => None,
                        };
                        if let Some(text) = text {
                            resp.content.push(ContentPart::Text { text });
                        }
                    }
                }
            }
            Some("function_call") => {
                let name = match m.remove("name") {
                    Some(Value::String(s)) => s,
                    _ => String::new(),
                };
                let arguments = match m.remove("arguments") {
                    Some(Value::String(s)) => s,
                    Some(v @ Value::Object(_)) => v.to_string(),
                    _ => String::new(),
                };
                let id = match (m.remove("call_id"), m.remove("id")) {
                    (Some(Value::String(s)), _) | (_, Some(Value::String(s))) => s,
                    _ => format!("call_{}", unique_suffix()),
                };
                resp.content.push(ContentPart::ToolCall {
                    id,
                    name,
                    arguments,
                });
            }
            // Built-in tool calls (web_search_call, ...) have no neutral form.
            _ => {}
        }
    }
    Ok(resp)
}

#[derive(Serialize)]
struct Part<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'static [Value]>,
}

impl<'a> Part<'a> {
    fn output_text(text: &'a str) -> Self {
        Part {
            ty: "output_text",
            text,
            annotations: Some(&[]),
        }
    }
    fn summary(text: &'a str) -> Self {
        Part {
            ty: "summary_text",
            text,
            annotations: None,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutItem<'a> {
    Reasoning {
        id: &'a str,
        summary: Vec<Part<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<&'a str>,
    },
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: Vec<Part<'a>>,
    },
    FunctionCall {
        id: &'a str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
        status: &'static str,
    },
}

#[derive(Serialize)]
struct IncompleteDetails {
    reason: &'static str,
}

#[derive(Serialize)]
struct CachedDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningDetails {
    reasoning_tokens: u64,
}

#[derive(Serialize)]
struct UsageOut {
    input_tokens: u64,
    input_tokens_details: CachedDetails,
    output_tokens: u64,
    output_tokens_details: ReasoningDetails,
    total_tokens: u64,
}

impl From<&Usage> for UsageOut {
    fn from(u: &Usage) -> Self {
        UsageOut {
            input_tokens: u.input_tokens,
            input_tokens_details: CachedDetails {
                cached_tokens: u.cached_input_tokens.unwrap_or(0),
            },
            output_tokens: u.output_tokens,
            output_tokens_details: ReasoningDetails {
                reasoning_tokens: u.reasoning_tokens.unwrap_or(0),
            },
            total_tokens: u.total(),
        }
    }
}

/// The response object, as the SDKs read it.
#[derive(Serialize)]
struct RespObj<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Option<()>,
    incomplete_details: Option<IncompleteDetails>,
    model: &'a str,
    output: Vec<OutItem<'a>>,
    parallel_tool_calls: bool,
    tool_choice: &'static str,
    tools: &'static [Value],
    usage: Option<UsageOut>,
}

/// The status and incomplete details for a finish reason.
fn status_of(reason: Option<&FinishReason>) -> (&'static str, Option<IncompleteDetails>) {
    match reason {
        Some(FinishReason::Length) => (
            "incomplete",
            Some(IncompleteDetails {
                reason: "max_output_tokens",
            }),
        ),
        Some(FinishReason::ContentFilter) => (
            "incomplete",
            Some(IncompleteDetails {
                reason: "content_filter",
            }),
        ),
        _ => ("completed", None),
    }
}

/// Encodes a non-streaming response for a Responses client.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let suffix = unique_suffix();
    let id = if resp.id.is_empty() {
        Cow::Owned(format!("resp_{suffix}"))
    } else {
        Cow::Borrowed(resp.id.as_str())
    };
    // Group the content into output items: consecutive texts form one
    // message.
    enum G<'a> {
        Msg(Vec<&'a str>),
        Reason(&'a str, Option<&'a str>),
        Call(&'a str, &'a str, &'a str),
    }
    let mut groups: Vec<G<'_>> = Vec::new();
    for part in &resp.content {
        match part {
            ContentPart::Text { text } => match groups.last_mut() {
                Some(G::Msg(texts)) => texts.push(text),
                _ => groups.push(G::Msg(vec![text])),
            },
            ContentPart::Thinking { text, signature } => {
                groups.push(G::Reason(text, signature.as_deref()))
            }
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            } => groups.push(G::Call(id, name, arguments)),
            _ => {}
        }
    }
    let ids: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let prefix = match g {
                G::Msg(_) => "msg",
                G::Reason(..) => "rs",
                G::Call(..) => "fc",
            };
            format!("{prefix}_{suffix}{i}")
        })
        .collect();
    let output = groups
        .iter()
        .zip(&ids)
        .map(|(g, id)| match g {
            G::Msg(texts) => OutItem::Message {
                id,
                status: "completed",
                role: "assistant",
                content: texts.iter().map(|t| Part::output_text(t)).collect(),
            },
            G::Reason(text, sig) => OutItem::Reasoning {
                id,
                summary: if text.is_empty() {
                    Vec::new()
                } else {
                    vec![Part::summary(text)]
                },
                encrypted_content: *sig,
            },
            G::Call(call_id, name, arguments) => OutItem::FunctionCall {
                id,
                call_id,
                name,
                arguments: args_or_empty_object(arguments),
                status: "completed",
            },
        })
        .collect();
    let (status, incomplete_details) = status_of(resp.finish_reason.as_ref());
    let obj = RespObj {
        id: &id,
        object: "response",
        created_at: if resp.created == 0 {
            now_secs()
        } else {
            resp.created
        },
        status,
        error: None,
        incomplete_details,
        model: &resp.model,
        output,
        parallel_tool_calls: true,
        tool_choice: "auto",
        tools: &[],
        usage: resp.usage.as_ref().map(UsageOut::from),
    };
    serde_json::to_vec(&obj).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Stream: provider side
// ---------------------------------------------------------------------------

struct ToolSlot {
    item_id: Option<String>,
    output_index: Option<u64>,
    index: u32,
    args_seen: bool,
}

/// Decodes an upstream Responses event stream.
pub struct StreamDecoder {
    started: bool,
    finished: bool,
    next_tool: u32,
    tools: Vec<ToolSlot>,
    /// (item id, part index) of the last reasoning delta: a new part gets a
    /// blank line before it.
    thinking_key: Option<(String, u64)>,
    /// Ids of message items whose text came as deltas; `None` once a delta
    /// came without an item id (then `done` items are never replayed).
    text_items: Option<Vec<String>>,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self {
            started: false,
            finished: false,
            next_tool: 0,
            tools: Vec::new(),
            thinking_key: None,
            text_items: Some(Vec::new()),
        }
    }
}

#[derive(Clone, Copy)]
enum Ev {
    Created,
    ItemAdded,
    ItemDone,
    TextDelta,
    ArgsDelta,
    ArgsDone,
    ThinkDelta,
    Finished,
    Failed,
    Error,
}

impl StreamDecoder {
    fn ensure_start(&mut self, resp: Option<&mut Value>, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let (id, model) = match resp {
            Some(r) => (take_str(r, "id"), take_str(r, "model")),
            None => (None, None),
        };
        out.push(StreamEvent::Start {
            id: id.unwrap_or_else(|| format!("resp_{}", unique_suffix())),
            model: model.unwrap_or_else(|| "unknown".to_owned()),
        });
    }

    /// The tool slot of an event, by item id, else by output index.
    fn slot_pos(&self, item_id: Option<&str>, output_index: Option<u64>) -> Option<usize> {
        self.tools
            .iter()
            .position(|s| item_id.is_some() && s.item_id.as_deref() == item_id)
            .or_else(|| {
                self.tools
                    .iter()
                    .position(|s| output_index.is_some() && s.output_index == output_index)
            })
    }

    fn slot_of(&self, v: &Value) -> Option<usize> {
        self.slot_pos(
            v.get("item_id").and_then(Value::as_str),
            v.get("output_index").and_then(Value::as_u64),
        )
    }

    /// A function_call item begins (or shows up whole in a `done` event).
    fn start_tool(
        &mut self,
        item: &mut Value,
        output_index: Option<u64>,
        out: &mut Vec<StreamEvent>,
    ) {
        let index = self.next_tool;
        self.next_tool = self.next_tool.saturating_add(1);
        let item_id = take_str(item, "id");
        let id = take_str(item, "call_id")
            .or_else(|| item_id.clone())
            .unwrap_or_else(|| format!("call_{}", unique_suffix()));
        let name = take_str(item, "name").unwrap_or_default();
        out.push(StreamEvent::ToolCallStart { index, id, name });
        let args = take_str(item, "arguments").unwrap_or_default();
        let args_seen = !args.is_empty();
        if args_seen {
            out.push(StreamEvent::ToolCallDelta {
                index,
                arguments: args,
            });
        }
        self.tools.push(ToolSlot {
            item_id,
            output_index,
            index,
            args_seen,
        });
    }

    /// Whole arguments from a `done` event, emitted only when no delta came.
    fn done_args(&mut self, pos: usize, args: Option<String>, out: &mut Vec<StreamEvent>) {
        if let Some(slot) = self.tools.get_mut(pos) {
            if !slot.args_seen {
                if let Some(a) = args.filter(|a| !a.is_empty()) {
                    slot.args_seen = true;
                    out.push(StreamEvent::ToolCallDelta {
                        index: slot.index,
                        arguments: a,
                    });
                }
            }
        }
    }
}

impl StreamDecode for StreamDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if ev.is_done() || ev.data.trim().is_empty() {
            return Ok(());
        }
        let mut v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| err(format!("invalid JSON in the Responses stream: {e}")))?;
        let ty = type_of(&v).or(ev.event.as_deref()).unwrap_or("");
        let kind = match ty {
            "response.created" | "response.in_progress" | "response.queued" => Ev::Created,
            "response.output_item.added" => Ev::ItemAdded,
            "response.output_item.done" => Ev::ItemDone,
            "response.output_text.delta" | "response.refusal.delta" => Ev::TextDelta,
            "response.function_call_arguments.delta" => Ev::ArgsDelta,
            "response.function_call_arguments.done" => Ev::ArgsDone,
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                Ev::ThinkDelta
            }
            "response.completed" | "response.incomplete" => Ev::Finished,
            "response.failed" => Ev::Failed,
            "error" => Ev::Error,
            _ => return Ok(()),
        };
        match kind {
            Ev::Created => self.ensure_start(v.get_mut("response"), out),
            Ev::ItemAdded => {
                self.ensure_start(None, out);
                let output_index = v.get("output_index").and_then(Value::as_u64);
                if let Some(item) = v.get_mut("item") {
                    if type_of(item) == Some("function_call") {
                        self.start_tool(item, output_index, out);
                    }
                }
            }
            Ev::ItemDone => {
                self.ensure_start(None, out);
                let output_index = v.get("output_index").and_then(Value::as_u64);
                let Some(mut item) = v.get_mut("item").map(Value::take) else {
                    return Ok(());
                };
                match type_of(&item) {
                    Some("function_call") => {
                        let item_id = item.get("id").and_then(Value::as_str);
                        match self.slot_pos(item_id, output_index) {
                            Some(pos) => {
                                let args = take_str(&mut item, "arguments");
                                self.done_args(pos, args, out);
                            }
                            None => self.start_tool(&mut item, output_index, out),
                        }
                    }
                    Some("reasoning") => {
                        if let Some(signature) = take_str(&mut item, "encrypted_content") {
                            out.push(StreamEvent::ThinkingSignature { signature });
                        }
                    }
                    Some("message") => {
                        // Servers that send the text only in the finished
                        // item (no deltas) still get it through.
                        let id = item.get("id").and_then(Value::as_str);
                        let streamed = match (&self.text_items, id) {
                            (None, _) => true,
                            (Some(ids), Some(id)) => ids.iter().any(|i| i == id),
                            (Some(_), None) => false,
                        };
                        if !streamed {
                            if let Some(Value::Array(parts)) = item.get_mut("content") {
                                for p in parts.iter_mut() {
                                    let text = match type_of(p) {
                                        Some("output_text") => take_str(p, "text"),
                                        Some("refusal") => take_str(p, "refusal"),
                                        _ => None,
                                    };
                                    if let Some(text) = text.filter(|t| !t.is_empty()) {
                                        out.push(StreamEvent::TextDelta { text });
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            Ev::TextDelta => {
                self.ensure_start(None, out);
                match (
                    v.get("item_id").and_then(Value::as_str),
                    &mut self.text_items,
                ) {
                    (Some(id), Some(ids)) => {
                        if ids.last().map(String::as_str) != Some(id) {
                            ids.push(id.to_owned());
                        }
                    }
                    (None, ids) => *ids = None,
                    (Some(_), None) => {}
                }
                if let Some(text) = take_str(&mut v, "delta").filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::TextDelta { text });
                }
            }
            Ev::ArgsDelta => {
                self.ensure_start(None, out);
                let delta = take_str(&mut v, "delta").filter(|t| !t.is_empty());
                let pos = self.slot_of(&v);
                if let (Some(arguments), Some(slot)) =
                    (delta, pos.and_then(|p| self.tools.get_mut(p)))
                {
                    slot.args_seen = true;
                    out.push(StreamEvent::ToolCallDelta {
                        index: slot.index,
                        arguments,
                    });
                }
            }
            Ev::ArgsDone => {
                self.ensure_start(None, out);
                let args = take_str(&mut v, "arguments");
                if let Some(pos) = self.slot_of(&v) {
                    self.done_args(pos, args, out);
                }
            }
            Ev::ThinkDelta => {
                self.ensure_start(None, out);
                let Some(text) = take_str(&mut v, "delta").filter(|t| !t.is_empty()) else {
                    return Ok(());
                };
                let item_id = take_str(&mut v, "item_id").unwrap_or_default();
                let part = v
                    .get("summary_index")
                    .or_else(|| v.get("content_index"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                match &self.thinking_key {
                    Some((id, p)) if *id == item_id && *p == part => {}
                    Some(_) => {
                        out.push(StreamEvent::ThinkingDelta {
                            text: "\n\n".to_owned(),
                        });
                        self.thinking_key = Some((item_id, part));
                    }
                    None => self.thinking_key = Some((item_id, part)),
                }
                out.push(StreamEvent::ThinkingDelta { text });
            }
            Ev::Finished => {
                let mut resp = v.get_mut("response").map(Value::take).unwrap_or_default();
                self.ensure_start(Some(&mut resp), out);
                if self.finished {
                    return Ok(());
                }
                self.finished = true;
                if let Some(u) = resp.get("usage").and_then(parse_usage) {
                    out.push(StreamEvent::Usage(u));
                }
                let reason = finish_of(&resp, !self.tools.is_empty());
                out.push(StreamEvent::Finish { reason });
            }
            Ev::Failed => {
                let mut resp = v.get_mut("response").map(Value::take).unwrap_or_default();
                self.ensure_start(Some(&mut resp), out);
                let message = resp
                    .get("error")
                    .and_then(error_message)
                    .unwrap_or_else(|| "the upstream response failed".to_owned());
                out.push(StreamEvent::Error { message });
            }
            Ev::Error => {
                self.ensure_start(None, out);
                let message = take_str(&mut v, "message")
                    .or_else(|| v.get("error").and_then(error_message))
                    .unwrap_or_else(|| "upstream stream error".to_owned());
                out.push(StreamEvent::Error { message });
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Stream: client side
// ---------------------------------------------------------------------------

enum Item {
    Message {
        id: String,
        text: String,
    },
    Reasoning {
        id: String,
        text: String,
        signature: Option<String>,
        part_open: bool,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl Item {
    fn id(&self) -> &str {
        match self {
            Item::Message { id, .. } | Item::Reasoning { id, .. } | Item::Call { id, .. } => id,
        }
    }

    /// The item as the SDK reads it; `done` items carry their full content.
    fn view(&self, done: bool) -> OutItem<'_> {
        let status = if done { "completed" } else { "in_progress" };
        match self {
            Item::Message { id, text } => OutItem::Message {
                id,
                status,
                role: "assistant",
                content: if done {
                    vec![Part::output_text(text)]
                } else {
                    Vec::new()
                },
            },
            Item::Reasoning {
                id,
                text,
                signature,
                ..
            } => OutItem::Reasoning {
                id,
                summary: if done && !text.is_empty() {
                    vec![Part::summary(text)]
                } else {
                    Vec::new()
                },
                encrypted_content: signature.as_deref(),
            },
            Item::Call {
                id,
                call_id,
                name,
                arguments,
            } => OutItem::FunctionCall {
                id,
                call_id,
                name,
                arguments: if done {
                    args_or_empty_object(arguments)
                } else {
                    ""
                },
                status,
            },
        }
    }
}

/// One stream event; absent fields are left out.
#[derive(Serialize, Default)]
struct EvOut<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    sequence_number: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<RespObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<OutItem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<Part<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<&'static [Value]>,
}

/// Writes `event: <type>\ndata: <json>\n\n` straight into `out`.
fn write(out: &mut BytesMut, ev: &EvOut<'_>) {
    out.put_slice(b"event: ");
    out.put_slice(ev.ty.as_bytes());
    out.put_slice(b"\ndata: ");
    let _ = serde_json::to_writer(out.writer(), ev);
    out.put_slice(b"\n\n");
}

/// Encodes neutral events as the Responses event stream the OpenAI SDKs and
/// Codex expect.
pub struct StreamEncoder {
    opts: StreamOptions,
    seq: u64,
    started: bool,
    done: bool,
    id: String,
    model: String,
    created_at: u64,
    suffix: String,
    items: Vec<Item>,
    /// Index in `items` of the item still open.
    open: Option<usize>,
    /// Neutral tool index → index in `items`.
    tool_items: Vec<(u32, usize)>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
}

impl StreamEncoder {
    pub fn new(opts: StreamOptions) -> Self {
        Self {
            opts,
            seq: 0,
            started: false,
            done: false,
            id: String::new(),
            model: String::new(),
            created_at: 0,
            suffix: String::new(),
            items: Vec::new(),
            open: None,
            tool_items: Vec::new(),
            usage: None,
            finish: None,
        }
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    fn resp_obj(&self, done: bool) -> RespObj<'_> {
        let (status, incomplete_details) = if done {
            status_of(self.finish.as_ref())
        } else {
            ("in_progress", None)
        };
        RespObj {
            id: &self.id,
            object: "response",
            created_at: self.created_at,
            status,
            error: None,
            incomplete_details,
            model: &self.model,
            output: if done {
                self.items.iter().map(|i| i.view(true)).collect()
            } else {
                Vec::new()
            },
            parallel_tool_calls: true,
            tool_choice: "auto",
            tools: &[],
            usage: if done {
                self.usage.as_ref().map(UsageOut::from)
            } else {
                None
            },
        }
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        self.suffix = unique_suffix();
        self.id = match id {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => format!("resp_{}", self.suffix),
        };
        self.model = match (&self.opts.model_override, model) {
            (Some(m), _) => m.clone(),
            (None, Some(m)) => m.to_owned(),
            (None, None) => String::new(),
        };
        self.created_at = now_secs();
        for ty in ["response.created", "response.in_progress"] {
            let seq = self.next_seq();
            write(
                out,
                &EvOut {
                    ty,
                    sequence_number: seq,
                    response: Some(self.resp_obj(false)),
                    ..EvOut::default()
                },
            );
        }
    }

    fn new_item_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}{}", self.suffix, self.items.len())
    }

    /// Closes the open item with its `done` events.
    fn close_open(&mut self, out: &mut BytesMut) {
        let Some(idx) = self.open.take() else {
            return;
        };
        let seq = self.seq;
        let Some(item) = self.items.get(idx) else {
            return;
        };
        let mut n = seq;
        let mut next = || {
            let s = n;
            n += 1;
            s
        };
        let item_id = Some(item.id());
        let output_index = Some(idx);
        match item {
            Item::Message { text, .. } => {
                write(
                    out,
                    &EvOut {
                        ty: "response.output_text.done",
                        sequence_number: next(),
                        item_id,
                        output_index,
                        content_index: Some(0),
                        text: Some(text),
                        logprobs: Some(&[]),
                        ..EvOut::default()
                    },
                );
                write(
                    out,
                    &EvOut {
                        ty: "response.content_part.done",
                        sequence_number: next(),
                        item_id,
                        output_index,
                        content_index: Some(0),
                        part: Some(Part::output_text(text)),
                        ..EvOut::default()
                    },
                );
            }
            Item::Reasoning {
                text, part_open, ..
            } => {
                if *part_open {
                    write(
                        out,
                        &EvOut {
                            ty: "response.reasoning_summary_text.done",
                            sequence_number: next(),
                            item_id,
                            output_index,
                            summary_index: Some(0),
                            text: Some(text),
                            ..EvOut::default()
                        },
                    );
                    write(
                        out,
                        &EvOut {
                            ty: "response.reasoning_summary_part.done",
                            sequence_number: next(),
                            item_id,
                            output_index,
                            summary_index: Some(0),
                            part: Some(Part::summary(text)),
                            ..EvOut::default()
                        },
                    );
                }
            }
            Item::Call { arguments, .. } => {
                write(
                    out,
                    &EvOut {
                        ty: "response.function_call_arguments.done",
                        sequence_number: next(),
                        item_id,
                        output_index,
                        arguments: Some(args_or_empty_object(arguments)),
                        ..EvOut::default()
                    },
                );
            }
        }
        write(
            out,
            &EvOut {
                ty: "response.output_item.done",
                sequence_number: next(),
                output_index,
                item: Some(item.view(true)),
                ..EvOut::default()
            },
        );
        self.seq = n;
    }

    /// Closes the open item and opens `item` (`output_item.added`, plus
    /// `content_part.added` for a message). Returns its output index.
    fn open_item(&mut self, item: Item, out: &mut BytesMut) -> usize {
        self.close_open(out);
        let idx = self.items.len();
        self.items.push(item);
        self.open = Some(idx);
        let seq = self.next_seq();
        let Some(item) = self.items.get(idx) else {
            return idx;
        };
        write(
            out,
            &EvOut {
                ty: "response.output_item.added",
                sequence_number: seq,
                output_index: Some(idx),
                item: Some(item.view(false)),
                ..EvOut::default()
            },
        );
        if let Item::Message { id, .. } = item {
            write(
                out,
                &EvOut {
                    ty: "response.content_part.added",
                    sequence_number: seq + 1,
                    item_id: Some(id),
                    output_index: Some(idx),
                    content_index: Some(0),
                    part: Some(Part::output_text("")),
                    ..EvOut::default()
                },
            );
            self.seq += 1;
        }
        idx
    }

    fn open_reasoning(&mut self, out: &mut BytesMut) -> usize {
        match self.open {
            Some(i) if matches!(self.items.get(i), Some(Item::Reasoning { .. })) => i,
            _ => {
                let id = self.new_item_id("rs");
                self.open_item(
                    Item::Reasoning {
                        id,
                        text: String::new(),
                        signature: None,
                        part_open: false,
                    },
                    out,
                )
            }
        }
    }

    fn text_delta(&mut self, delta: &str, out: &mut BytesMut) {
        let idx = match self.open {
            Some(i) if matches!(self.items.get(i), Some(Item::Message { .. })) => i,
            _ => {
                let id = self.new_item_id("msg");
                self.open_item(
                    Item::Message {
                        id,
                        text: String::new(),
                    },
                    out,
                )
            }
        };
        let seq = self.next_seq();
        if let Some(Item::Message { id, text }) = self.items.get_mut(idx) {
            text.push_str(delta);
            write(
                out,
                &EvOut {
                    ty: "response.output_text.delta",
                    sequence_number: seq,
                    item_id: Some(id),
                    output_index: Some(idx),
                    content_index: Some(0),
                    delta: Some(delta),
                    logprobs: Some(&[]),
                    ..EvOut::default()
                },
            );
        }
    }

    fn thinking_delta(&mut self, delta: &str, out: &mut BytesMut) {
        let idx = self.open_reasoning(out);
        let mut seq = self.next_seq();
        let Some(Item::Reasoning {
            id,
            text,
            part_open,
            ..
        }) = self.items.get_mut(idx)
        else {
            return;
        };
        if !*part_open {
            *part_open = true;
            write(
                out,
                &EvOut {
                    ty: "response.reasoning_summary_part.added",
                    sequence_number: seq,
                    item_id: Some(id),
                    output_index: Some(idx),
                    summary_index: Some(0),
                    part: Some(Part::summary("")),
                    ..EvOut::default()
                },
            );
            seq += 1;
            self.seq += 1;
        }
        text.push_str(delta);
        write(
            out,
            &EvOut {
                ty: "response.reasoning_summary_text.delta",
                sequence_number: seq,
                item_id: Some(id),
                output_index: Some(idx),
                summary_index: Some(0),
                delta: Some(delta),
                ..EvOut::default()
            },
        );
    }

    fn tool_start(&mut self, index: u32, call_id: &str, name: &str, out: &mut BytesMut) -> usize {
        let id = self.new_item_id("fc");
        let call_id = if call_id.is_empty() {
            format!("call_{}{}", self.suffix, self.items.len())
        } else {
            call_id.to_owned()
        };
        let idx = self.open_item(
            Item::Call {
                id,
                call_id,
                name: name.to_owned(),
                arguments: String::new(),
            },
            out,
        );
        self.tool_items.push((index, idx));
        idx
    }

    fn tool_delta(&mut self, index: u32, delta: &str, out: &mut BytesMut) {
        let idx = match self.tool_items.iter().find(|(t, _)| *t == index) {
            Some(&(_, i)) => i,
            None => self.tool_start(index, "", "", out),
        };
        let seq = self.next_seq();
        if let Some(Item::Call { id, arguments, .. }) = self.items.get_mut(idx) {
            arguments.push_str(delta);
            write(
                out,
                &EvOut {
                    ty: "response.function_call_arguments.delta",
                    sequence_number: seq,
                    item_id: Some(id),
                    output_index: Some(idx),
                    delta: Some(delta),
                    ..EvOut::default()
                },
            );
        }
    }
}

impl StreamEncode for StreamEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if let StreamEvent::Start { id, model } = ev {
            self.start(Some(id), Some(model), out);
            return;
        }
        self.start(None, None, out);
        match ev {
            // Opaque Anthropic data: no other format can carry it.
            StreamEvent::RedactedThinking { .. } => {}
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta { text } => {
                if !text.is_empty() {
                    self.text_delta(text, out)
                }
            }
            StreamEvent::ThinkingDelta { text } => {
                if !text.is_empty() {
                    self.thinking_delta(text, out)
                }
            }
            StreamEvent::ThinkingSignature { signature } => {
                let idx = self.open_reasoning(out);
                if let Some(Item::Reasoning { signature: s, .. }) = self.items.get_mut(idx) {
                    *s = Some(signature.clone());
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if !self.tool_items.iter().any(|(t, _)| t == index) {
                    self.tool_start(*index, id, name, out);
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if !arguments.is_empty() {
                    self.tool_delta(*index, arguments, out)
                }
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Finish { reason } => self.finish = Some(reason.clone()),
            StreamEvent::Error { message } => self.fail(None, message, out),
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.start(None, None, out);
        self.close_open(out);
        self.done = true;
        let ty = match status_of(self.finish.as_ref()).0 {
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        let seq = self.next_seq();
        write(
            out,
            &EvOut {
                ty,
                sequence_number: seq,
                response: Some(self.resp_obj(true)),
                ..EvOut::default()
            },
        );
    }

    /// Responses error events carry no HTTP status.
    fn fail(&mut self, _status: Option<u16>, message: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        let seq = self.next_seq();
        crate::error::responses_error_event(message, Some(seq), out);
    }
}
