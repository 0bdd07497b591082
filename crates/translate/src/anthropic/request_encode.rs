//! Provider side: IR → the body for `POST https://api.anthropic.com/v1/messages`,
//! borrowing from the IR (no copies of images or long texts).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

use super::wire::{is_false, WireBlock, WireImageSource};
use super::{tool_id, STRUCTURED_TOOL};
use crate::{
    CacheAt, CacheMark, ChatRequest, ContentPart, ImageSource, Message, Reasoning, ResponseFormat,
    Role, ToolChoice, TranslateError,
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
    system: Vec<Block<'a>>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<WireOutputConfig<'a>>,
}

/// Anthropic's native structured outputs: `output_config.format`.
#[derive(Serialize)]
struct WireOutputConfig<'a> {
    format: WireOutputFormat<'a>,
}

#[derive(Serialize)]
struct WireOutputFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: &'a Value,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<WireCache<'a>>,
}

/// A request content block with its prompt-cache breakpoint, if any.
#[derive(Serialize)]
struct Block<'a> {
    #[serde(flatten)]
    block: WireBlock<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<WireCache<'a>>,
}

impl<'a> From<WireBlock<'a>> for Block<'a> {
    fn from(block: WireBlock<'a>) -> Self {
        Block {
            block,
            cache_control: None,
        }
    }
}

/// `cache_control: {type: ephemeral, ttl}`.
#[derive(Serialize, Clone, Copy)]
struct WireCache<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<&'a str>,
}

/// Anthropic refuses more than this many breakpoints in one request.
pub const MAX_CACHE_BREAKPOINTS: usize = 4;

/// The client's breakpoints Anthropic takes: the last
/// [`MAX_CACHE_BREAKPOINTS`] in prompt order (tools, system, messages), as
/// a later breakpoint caches a longer prefix.
fn kept_marks(req: &ChatRequest) -> Vec<&CacheMark> {
    let mut marks: Vec<&CacheMark> = req.cache.iter().collect();
    marks.sort_by_key(|m| match m.at {
        CacheAt::Tool(i) => (0, i, 0),
        CacheAt::System(i) => (1, i, 0),
        CacheAt::Part { message, part } => (2, message, part),
    });
    marks.dedup_by_key(|m| m.at);
    let skip = marks.len().saturating_sub(MAX_CACHE_BREAKPOINTS);
    marks.split_off(skip)
}

fn cache_at<'a>(marks: &[&'a CacheMark], at: CacheAt) -> Option<WireCache<'a>> {
    marks.iter().find(|m| m.at == at).map(|m| WireCache {
        kind: "ephemeral",
        ttl: m.ttl.as_deref(),
    })
}

/// Breakpoints for a client that set none (`providers[].prompt_cache:
/// auto`): the end of the tool list, of the system prompt and of the last
/// user turn: three, under Anthropic's four.
pub fn auto_cache_marks(req: &mut ChatRequest) {
    if !req.cache.is_empty() {
        return;
    }
    if let Some(i) = req.tools.len().checked_sub(1) {
        req.cache.push(CacheMark {
            at: CacheAt::Tool(i),
            ttl: None,
        });
    }
    if let Some(i) = req.system.len().checked_sub(1) {
        req.cache.push(CacheMark {
            at: CacheAt::System(i),
            ttl: None,
        });
    }
    let last_user = req
        .messages
        .iter()
        .rposition(|m| m.role == Role::User && !m.content.is_empty());
    if let Some(message) = last_user {
        req.cache.push(CacheMark {
            at: CacheAt::Part {
                message,
                part: req.messages[message].content.len() - 1,
            },
            ttl: None,
        });
    }
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
pub(crate) fn thinking_budget(r: &Reasoning) -> Option<Option<u64>> {
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

/// Whether `model` has Anthropic's native structured outputs
/// (`output_config.format`): the Claude 4.5 generation and later. Claude 3
/// and the 4.0 / 4.1 models (dated `claude-sonnet-4-20250514`, Vertex
/// `claude-opus-4-1@...`) predate it; unknown names are taken as current.
pub fn native_structured_output(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    if ["claude-2", "claude-3", "claude-instant"]
        .iter()
        .any(|old| m.contains(old))
    {
        return false;
    }
    for family in ["opus-4", "sonnet-4", "haiku-4"] {
        if let Some(pos) = m.find(family) {
            let rest = &m[pos + family.len()..];
            let minor: String = rest
                .strip_prefix(['-', '.'])
                .unwrap_or("")
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            // A date (8 digits) or nothing is the 4.0 model.
            return matches!(minor.parse::<u32>(), Ok(n) if (5..100).contains(&n));
        }
    }
    true
}

/// How a requested JSON schema reaches Anthropic.
enum Structured<'a> {
    /// Not asked for.
    None,
    /// `output_config.format`.
    Native(&'a Value),
    /// One more tool, [`STRUCTURED_TOOL`], forced; its input is the answer
    /// (the decoders turn its call back into text).
    ForcedTool(&'a Value),
}

fn structured_of(req: &ChatRequest) -> Result<Structured<'_>, TranslateError> {
    match &req.response_format {
        None | Some(ResponseFormat::Text) => Ok(Structured::None),
        Some(ResponseFormat::JsonObject) => Err(err(
            "response_format",
            "JSON mode without a schema (OpenAI json_object, Gemini responseMimeType \
             application/json alone) cannot be expressed for an Anthropic upstream, which \
             constrains output only to a JSON schema: send a json_schema with a schema",
        )),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            if !schema.is_object() {
                return Err(err(
                    "response_format.json_schema.schema",
                    "expected a JSON Schema object",
                ));
            }
            Ok(if native_structured_output(&req.model) {
                Structured::Native(schema)
            } else {
                Structured::ForcedTool(schema)
            })
        }
    }
}

/// The thinking setting sent: `Some(Some(budget))` enabled, `Some(None)`
/// disabled, `None` not sent.
fn thinking_of(req: &ChatRequest) -> Option<Option<u64>> {
    let emulated = matches!(structured_of(req), Ok(Structured::ForcedTool(_)));
    let forced_tool = emulated
        || matches!(
            req.tool_choice,
            Some(ToolChoice::Required | ToolChoice::Function(_))
        ) && !req.tools.is_empty();
    let thinking = req.reasoning.as_ref().and_then(thinking_budget);
    // Anthropic refuses thinking together with forced tool use; the forced
    // tool is what the caller's code depends on, so thinking goes.
    if forced_tool && matches!(thinking, Some(Some(_))) {
        return None;
    }
    // With thinking on, Anthropic wants the tool-use turn whose results are
    // being sent to begin with its signed thinking; history from another
    // provider (its thinking dropped as foreign) has none, so this turn
    // goes without thinking.
    if matches!(thinking, Some(Some(_))) && unsigned_tool_turn(req) {
        return None;
    }
    thinking
}

/// Whether the request answers tool calls (only tool results after the
/// last assistant turn) whose turn has no signed thinking block (or
/// redacted thinking) that Anthropic would take back.
fn unsigned_tool_turn(req: &ChatRequest) -> bool {
    let Some(pos) = req.messages.iter().rposition(|m| m.role == Role::Assistant) else {
        return false;
    };
    let answering = req.messages[pos + 1..].iter().all(|m| {
        m.content
            .iter()
            .all(|p| matches!(p, ContentPart::ToolResult { .. }))
    }) && pos + 1 < req.messages.len();
    let last = &req.messages[pos];
    let calls = last
        .content
        .iter()
        .any(|p| matches!(p, ContentPart::ToolCall { .. }));
    let signed = last.content.iter().any(|p| match p {
        ContentPart::Thinking { signature, .. } => {
            signature.as_deref().is_some_and(|s| !s.is_empty())
        }
        ContentPart::RedactedThinking { .. } => true,
        _ => false,
    });
    answering && calls && !signed
}

/// `max_tokens` as sent (Anthropic requires it).
pub(crate) fn max_tokens_of(req: &ChatRequest, budget: Option<u64>) -> u64 {
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

    let marks = kept_marks(req);
    let mut system: Vec<Block> = Vec::with_capacity(req.system.len() + 1);
    for (i, part) in req.system.iter().enumerate() {
        match part {
            ContentPart::Text { text } if text.is_empty() => {}
            ContentPart::Text { text } => system.push(Block {
                block: WireBlock::Text { text },
                cache_control: cache_at(&marks, CacheAt::System(i)),
            }),
            _ => {
                return Err(err(
                    format_args!("system[{i}]"),
                    "Anthropic accepts only text in the system prompt",
                ))
            }
        }
    }
    let structured = structured_of(req)?;
    let messages = encode_messages(&req.messages, &marks)?;
    let (mut tools, tool_choice) = encode_tools(req, &structured);
    for (i, t) in tools.iter_mut().enumerate().take(req.tools.len()) {
        t.cache_control = cache_at(&marks, CacheAt::Tool(i));
    }

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
        output_config: match structured {
            Structured::Native(schema) => Some(WireOutputConfig {
                format: WireOutputFormat {
                    kind: "json_schema",
                    schema,
                },
            }),
            _ => None,
        },
    };
    serde_json::to_vec(&body).map_err(|e| TranslateError::new(format!("encoding request: {e}")))
}

/// The tool list and tool choice sent; a schema emulated with a forced tool
/// adds [`STRUCTURED_TOOL`] and forces it (or, when the client declared
/// tools of its own, forces some tool, so theirs stay callable).
fn encode_tools<'a>(
    req: &'a ChatRequest,
    structured: &Structured<'a>,
) -> (Vec<WireTool<'a>>, Option<WireToolChoice<'a>>) {
    let mut tools: Vec<WireTool> = req
        .tools
        .iter()
        .map(|t| WireTool {
            name: &t.name,
            description: t.description.as_deref().filter(|d| !d.is_empty()),
            input_schema: input_schema(&t.parameters),
            cache_control: None,
        })
        .collect();
    let disable_parallel = req.parallel_tool_calls == Some(false);
    if let Structured::ForcedTool(schema) = structured {
        let own_tools = !tools.is_empty();
        tools.push(WireTool {
            name: STRUCTURED_TOOL,
            description: Some("Give the final answer: its input is the answer."),
            input_schema: input_schema(schema),
            cache_control: None,
        });
        let (kind, name) = match &req.tool_choice {
            Some(ToolChoice::Function(n)) => ("tool", Some(n.as_str())),
            _ if own_tools => ("any", None),
            _ => ("tool", Some(STRUCTURED_TOOL)),
        };
        let choice = WireToolChoice {
            kind,
            name,
            disable_parallel_tool_use: disable_parallel,
        };
        return (tools, Some(choice));
    }
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
    (tools, tool_choice)
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

fn encode_messages<'a>(
    msgs: &'a [Message],
    marks: &[&'a CacheMark],
) -> Result<Vec<WireMessage<'a>>, TranslateError> {
    let mut out: Vec<WireMessage> = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let mut content: Vec<Block> = Vec::with_capacity(m.content.len());
        for (j, part) in m.content.iter().enumerate() {
            let cache = cache_at(
                marks,
                CacheAt::Part {
                    message: i,
                    part: j,
                },
            );
            match encode_part(part, m.role, i)? {
                Some(block) => content.push(Block {
                    block,
                    cache_control: cache,
                }),
                // A breakpoint on a part Anthropic does not take sits on
                // the block before it.
                None => {
                    if let (Some(c), Some(prev)) = (cache, content.last_mut()) {
                        prev.cache_control = Some(c);
                    }
                }
            }
        }
        if content.is_empty() {
            // Anthropic refuses empty turns; one with nothing it can carry
            // (say, only unsigned thinking) is left out.
            continue;
        }
        let has_results = content.iter().any(|b| b.block.is_tool_result());
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
fn results_first(content: &mut [Block<'_>]) {
    // Stable: keeps the order within results and within the rest.
    content.sort_by_key(|b| !b.block.is_tool_result());
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
