//! Requests: a `/v1/messages` client body → IR, and IR → the body sent to
//! `POST https://api.anthropic.com/v1/messages`.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

use super::tool_id;
use super::wire::{is_false, WireBlock, WireImageSource};
use crate::{
    ChatRequest, ContentPart, ImageSource, Message, Reasoning, ResponseFormat, Role, Tool,
    ToolChoice, TranslateError,
};

/// `max_tokens` sent when the client gave none: Anthropic requires the field.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Anthropic refuses a thinking budget below this.
const MIN_THINKING_BUDGET: u64 = 1024;

// ---------------------------------------------------------------------------
// Decoding (client side)
// ---------------------------------------------------------------------------

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
    let Value::Object(mut obj) = body else {
        return Err(TranslateError::new("request body must be a JSON object"));
    };
    let mut req = ChatRequest::default();
    // `model` may be absent when the body carries a `models` list instead.
    if let Some(v) = field(&mut obj, "model") {
        req.model = string(v, "model")?;
    }
    if let Some(v) = field(&mut obj, "system") {
        decode_system(v, &mut req.system)?;
    }
    match field(&mut obj, "messages") {
        Some(Value::Array(msgs)) => {
            req.messages.reserve(msgs.len());
            for (i, m) in msgs.into_iter().enumerate() {
                decode_message(m, i, &mut req)?;
            }
        }
        Some(_) => return Err(err("messages", "expected an array of messages")),
        None => return Err(err("messages", "required")),
    }
    req.max_tokens = opt_u64(&mut obj, "max_tokens")?;
    req.temperature = opt_f64(&mut obj, "temperature")?;
    req.top_p = opt_f64(&mut obj, "top_p")?;
    req.top_k = opt_u64(&mut obj, "top_k")?;
    req.stream = opt_bool(&mut obj, "stream", "")?.unwrap_or(false);
    match field(&mut obj, "stop_sequences") {
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
    if let Some(v) = field(&mut obj, "tools") {
        let Value::Array(tools) = v else {
            return Err(err("tools", "expected an array"));
        };
        req.tools.reserve(tools.len());
        for (i, t) in tools.into_iter().enumerate() {
            req.tools.push(decode_tool(t, i)?);
        }
    }
    if let Some(v) = field(&mut obj, "tool_choice") {
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
    if let Some(v) = field(&mut obj, "thinking") {
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
    if let Some(v) = field(&mut obj, "metadata") {
        let mut md = object(v, &|| "metadata".into())?;
        if let Some(u) = field(&mut md, "user_id") {
            req.user = Some(string(u, "metadata.user_id")?);
        }
    }
    Ok(req)
}

fn decode_system(v: Value, out: &mut Vec<ContentPart>) -> Result<(), TranslateError> {
    match v {
        Value::String(text) => {
            if !text.is_empty() {
                out.push(ContentPart::Text { text });
            }
        }
        Value::Array(blocks) => {
            for (j, b) in blocks.into_iter().enumerate() {
                let path = || format!("system[{j}]");
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

// ---------------------------------------------------------------------------
// Encoding (provider side)
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<WireBlock<'a>>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<WireThinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<WireMetadata<'a>>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Vec<WireBlock<'a>>,
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
}

#[derive(Serialize)]
struct WireToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    disable_parallel_tool_use: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireThinking {
    Enabled { budget_tokens: u64 },
    Disabled,
}

#[derive(Serialize)]
struct WireMetadata<'a> {
    user_id: &'a str,
}

/// The thinking setting for Anthropic: `Some(Some(budget))` enabled,
/// `Some(None)` explicitly disabled, `None` not sent.
fn thinking_budget(r: &Reasoning) -> Option<Option<u64>> {
    if r.disabled || r.budget_tokens == Some(0) {
        return Some(None);
    }
    if let Some(b) = r.budget_tokens {
        return Some(Some(b.max(MIN_THINKING_BUDGET)));
    }
    let budget = match r.effort.as_deref() {
        // OpenAI's "no reasoning" levels: leave thinking off.
        Some("none" | "minimal") => return None,
        Some("low") => 1024,
        Some("high") => 16384,
        Some("xhigh" | "max") => 32768,
        // "medium", unknown levels, and reasoning asked for without a level.
        _ => 4096,
    };
    Some(Some(budget))
}

/// Encodes the body for Anthropic's `POST /v1/messages`.
pub fn encode_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let forced_tool = matches!(
        req.tool_choice,
        Some(ToolChoice::Required | ToolChoice::Function(_))
    ) && !req.tools.is_empty();
    let mut thinking = req.reasoning.as_ref().and_then(thinking_budget);
    // Anthropic refuses thinking together with forced tool use; the forced
    // tool is what the caller's code depends on, so thinking goes.
    if forced_tool && matches!(thinking, Some(Some(_))) {
        thinking = None;
    }
    let budget = thinking.flatten();

    let max_tokens = match (req.max_tokens, budget) {
        (None, None) => DEFAULT_MAX_TOKENS,
        (None, Some(b)) => b + DEFAULT_MAX_TOKENS,
        (Some(m), None) => m,
        // Anthropic counts thinking inside max_tokens and needs room for the
        // answer: a limit at or under the budget is taken as the answer's.
        (Some(m), Some(b)) if m <= b => b.saturating_add(m.max(1)),
        (Some(m), Some(_)) => m,
    };

    let mut system = Vec::with_capacity(req.system.len() + 1);
    for (i, part) in req.system.iter().enumerate() {
        match part {
            ContentPart::Text { text } if text.is_empty() => {}
            ContentPart::Text { text } => system.push(WireBlock::Text { text }),
            _ => {
                return Err(err(
                    format_args!("system[{i}]"),
                    "Anthropic accepts only text in the system prompt",
                ))
            }
        }
    }
    let format_line = response_format_instruction(req.response_format.as_ref());
    if let Some(line) = &format_line {
        system.push(WireBlock::Text { text: line });
    }

    let messages = encode_messages(&req.messages)?;

    let tools: Vec<WireTool> = req
        .tools
        .iter()
        .map(|t| WireTool {
            name: &t.name,
            description: t.description.as_deref().filter(|d| !d.is_empty()),
            input_schema: input_schema(&t.parameters),
        })
        .collect();
    let disable_parallel = req.parallel_tool_calls == Some(false);
    let tool_choice = if tools.is_empty() {
        None // Anthropic refuses tool_choice without tools.
    } else {
        let (kind, name) = match &req.tool_choice {
            None | Some(ToolChoice::Auto) => ("auto", None),
            Some(ToolChoice::None) => ("none", None),
            Some(ToolChoice::Required) => ("any", None),
            Some(ToolChoice::Function(n)) => ("tool", Some(n.as_str())),
        };
        (req.tool_choice.is_some() || disable_parallel).then_some(WireToolChoice {
            kind,
            name,
            // Meaningless (and refused) with tool_choice none.
            disable_parallel_tool_use: disable_parallel && kind != "none",
        })
    };

    // With thinking on, Anthropic refuses temperature and top_k changes and
    // top_p below 0.95.
    let (temperature, top_p, top_k) = if budget.is_some() {
        (None, req.top_p.filter(|p| *p >= 0.95), None)
    } else {
        // OpenAI allows temperature up to 2, Anthropic up to 1.
        (
            req.temperature.map(|t| t.clamp(0.0, 1.0)),
            req.top_p,
            req.top_k,
        )
    };

    let body = WireRequest {
        model: &req.model,
        max_tokens,
        system,
        messages,
        temperature,
        top_p,
        top_k,
        stop_sequences: req
            .stop
            .iter()
            .map(String::as_str)
            // Anthropic refuses whitespace-only stop sequences.
            .filter(|s| !s.trim().is_empty())
            .collect(),
        stream: req.stream,
        tools,
        tool_choice,
        thinking: thinking.map(|b| match b {
            Some(budget_tokens) => WireThinking::Enabled { budget_tokens },
            None => WireThinking::Disabled,
        }),
        metadata: req.user.as_deref().map(|user_id| WireMetadata { user_id }),
    };
    serde_json::to_vec(&body).map_err(|e| TranslateError::new(format!("encoding request: {e}")))
}

/// Anthropic Messages has no JSON mode: the wanted format becomes one more
/// system instruction.
fn response_format_instruction(rf: Option<&ResponseFormat>) -> Option<String> {
    match rf? {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(
            "Respond only with a single valid JSON object, with no text before or after it."
                .to_owned(),
        ),
        ResponseFormat::JsonSchema { name, schema, .. } => Some(format!(
            "Respond only with a single valid JSON object, with no text before or after it, \
             matching this JSON Schema (named \"{name}\"): {schema}"
        )),
    }
}

/// Anthropic requires `input_schema` to be an object schema with its
/// `type` spelled out; OpenAI tools may have no parameters at all.
fn input_schema(params: &Value) -> Cow<'_, Value> {
    match params {
        Value::Object(m) if m.contains_key("type") => Cow::Borrowed(params),
        Value::Object(m) if !m.is_empty() => {
            let mut m = m.clone();
            m.insert("type".to_owned(), Value::String("object".to_owned()));
            Cow::Owned(Value::Object(m))
        }
        _ => Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
    }
}

fn image_source(src: &ImageSource) -> WireImageSource<'_> {
    match src {
        ImageSource::Url { url } => WireImageSource::Url { url },
        ImageSource::Base64 { media_type, data } => WireImageSource::Base64 { media_type, data },
    }
}

/// Tool call arguments (JSON text) → the `input` object Anthropic wants.
fn tool_input(id: &str, name: &str, arguments: &str) -> Result<Value, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(Value::Null) => Ok(Value::Object(Map::new())),
        _ => Err(TranslateError::new(format!(
            "tool call `{id}` ({name}): arguments are not a JSON object: {}",
            truncate(arguments, 200)
        ))),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn encode_messages(msgs: &[Message]) -> Result<Vec<WireMessage<'_>>, TranslateError> {
    let mut out: Vec<WireMessage> = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let mut content = Vec::with_capacity(m.content.len());
        for part in &m.content {
            if let Some(block) = encode_part(part, m.role, i)? {
                content.push(block);
            }
        }
        if content.is_empty() {
            // Anthropic refuses empty turns; one with nothing it can carry
            // (say, only unsigned thinking) is left out.
            continue;
        }
        let has_results = content.iter().any(WireBlock::is_tool_result);
        match out.last_mut() {
            // Results split over consecutive user turns (one OpenAI `tool`
            // message each) must all sit in the turn right after the
            // tool_use turn.
            Some(prev) if m.role == Role::User && prev.role == "user" && has_results => {
                prev.content.append(&mut content);
                results_first(&mut prev.content);
            }
            _ => {
                if has_results {
                    results_first(&mut content);
                }
                out.push(WireMessage {
                    role: match m.role {
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    },
                    content,
                });
            }
        }
    }
    Ok(out)
}

/// Anthropic requires tool_result blocks before any other content of a turn.
fn results_first(content: &mut [WireBlock<'_>]) {
    // Stable: keeps the order within results and within the rest.
    content.sort_by_key(|b| !b.is_tool_result());
}

fn encode_part(
    part: &ContentPart,
    role: Role,
    i: usize,
) -> Result<Option<WireBlock<'_>>, TranslateError> {
    Ok(Some(match part {
        // Anthropic refuses empty text blocks.
        ContentPart::Text { text } if text.is_empty() => return Ok(None),
        ContentPart::Text { text } => WireBlock::Text { text },
        ContentPart::Image { source } => WireBlock::Image {
            source: image_source(source),
        },
        ContentPart::ToolCall {
            id,
            name,
            arguments,
        } => {
            if role != Role::Assistant {
                return Err(err(
                    format_args!("messages[{i}]"),
                    "a tool call can only appear in an assistant message",
                ));
            }
            WireBlock::ToolUse {
                id: tool_id(id),
                name,
                input: tool_input(id, name, arguments)?,
            }
        }
        ContentPart::ToolResult {
            call_id,
            content,
            is_error,
            ..
        } => {
            if role != Role::User {
                return Err(err(
                    format_args!("messages[{i}]"),
                    "a tool result can only appear in a user message",
                ));
            }
            let content = content
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } if !text.is_empty() => {
                        Some(WireBlock::Text { text })
                    }
                    ContentPart::Image { source } => Some(WireBlock::Image {
                        source: image_source(source),
                    }),
                    _ => None,
                })
                .collect();
            WireBlock::ToolResult {
                tool_use_id: tool_id(call_id),
                content,
                is_error: *is_error,
            }
        }
        // Anthropic refuses unsigned thinking; it only takes back its own.
        ContentPart::Thinking { text, signature } => match signature.as_deref() {
            Some(sig) if !sig.is_empty() && role == Role::Assistant => WireBlock::Thinking {
                thinking: text,
                signature: sig,
            },
            _ => return Ok(None),
        },
        ContentPart::RedactedThinking { data } if role == Role::Assistant => {
            WireBlock::RedactedThinking { data }
        }
        ContentPart::RedactedThinking { .. } => return Ok(None),
    }))
}
