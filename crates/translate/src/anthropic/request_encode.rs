//! Provider side: IR → the body for `POST https://api.anthropic.com/v1/messages`,
//! borrowing from the IR (no copies of images or long texts).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

use super::tool_id;
use super::wire::{is_false, WireBlock, WireImageSource};
use crate::{
    ChatRequest, ContentPart, ImageSource, Message, Reasoning, ResponseFormat, Role, ToolChoice,
    TranslateError,
};

/// `max_tokens` sent when the client gave none: Anthropic requires the field.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Anthropic refuses a thinking budget below this.
const MIN_THINKING_BUDGET: u64 = 1024;

fn err(path: impl std::fmt::Display, what: &str) -> TranslateError {
    TranslateError::new(format!("{path}: {what}"))
}

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

/// The thinking setting sent: `Some(Some(budget))` enabled, `Some(None)`
/// disabled, `None` not sent.
fn thinking_of(req: &ChatRequest) -> Option<Option<u64>> {
    let forced_tool = matches!(
        req.tool_choice,
        Some(ToolChoice::Required | ToolChoice::Function(_))
    ) && !req.tools.is_empty();
    let thinking = req.reasoning.as_ref().and_then(thinking_budget);
    // Anthropic refuses thinking together with forced tool use; the forced
    // tool is what the caller's code depends on, so thinking goes.
    if forced_tool && matches!(thinking, Some(Some(_))) {
        return None;
    }
    thinking
}

/// `max_tokens` as sent (Anthropic requires it).
fn max_tokens_of(req: &ChatRequest, budget: Option<u64>) -> u64 {
    match (req.max_tokens, budget) {
        (None, None) => DEFAULT_MAX_TOKENS,
        (None, Some(b)) => b + DEFAULT_MAX_TOKENS,
        (Some(m), None) => m,
        // Anthropic counts thinking inside max_tokens and needs room for the
        // answer: a limit at or under the budget is taken as the answer's.
        (Some(m), Some(b)) if m <= b => b.saturating_add(m.max(1)),
        (Some(m), Some(_)) => m,
    }
}

/// The top-level fields [`encode_request`] fills with its own default
/// because the request had none: `max_tokens` when neither a limit nor a
/// thinking budget was asked for (with a budget, it is computed from it).
pub fn defaulted_fields(req: &ChatRequest) -> &'static [&'static str] {
    if req.max_tokens.is_none() && thinking_of(req).flatten().is_none() {
        &["max_tokens"]
    } else {
        &[]
    }
}

/// Encodes the body for Anthropic's `POST /v1/messages`.
pub fn encode_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let thinking = thinking_of(req);
    let budget = thinking.flatten();
    let max_tokens = max_tokens_of(req, budget);

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
