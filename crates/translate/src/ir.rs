//! The neutral representation every wire format is decoded into and encoded
//! from. It is the union of what OpenAI Chat, OpenAI Responses, Anthropic
//! Messages and Gemini can say about one chat turn; a field one format cannot
//! carry is mapped or dropped by that format's encoder (see
//! `docs/translation.md`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A chat request in no particular wire format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The model the client asked for (the proxy replaces it with the
    /// upstream's model name before encoding).
    pub model: String,
    /// System / developer instructions, in order. Decoders hoist system
    /// messages found among the turns here.
    pub system: Vec<ContentPart>,
    /// The conversation turns, oldest first.
    pub messages: Vec<Message>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Number of choices; only 1 is portable.
    pub n: Option<u64>,
    pub stream: bool,
    /// The client asked for usage in the stream (OpenAI
    /// `stream_options.include_usage`); formats that always send usage
    /// ignore it.
    pub stream_include_usage: bool,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub reasoning: Option<Reasoning>,
    /// End-user id (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Prompt-cache breakpoints the client set (Anthropic `cache_control`,
    /// also sent by OpenAI-format SDKs on content parts), in no order.
    pub cache: Vec<CacheMark>,
}

/// A prompt-cache breakpoint: the prompt up to and including `at` is
/// cached (Anthropic `cache_control: {type: ephemeral, ttl}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMark {
    pub at: CacheAt,
    /// `"5m"` or `"1h"` as the client gave it; `None`: the default (5m).
    pub ttl: Option<String>,
}

/// Where a [`CacheMark`] sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheAt {
    /// The system part of this index.
    System(usize),
    /// The tool of this index (caches the whole tool list up to it).
    Tool(usize),
    /// This part of this message.
    Part { message: usize, part: usize },
}

/// The breakpoint a JSON object (block, part, tool, message) carries in its
/// `cache_control`: `Some(ttl)` for `{type: "ephemeral", ttl?}`.
pub(crate) fn cache_control_of(v: &Value) -> Option<Option<String>> {
    cache_control_in(v.as_object()?)
}

/// [`cache_control_of`] of an object's fields.
pub(crate) fn cache_control_in(v: &Map<String, Value>) -> Option<Option<String>> {
    let cc = v.get("cache_control")?;
    if cc.get("type").and_then(Value::as_str) != Some("ephemeral") {
        return None;
    }
    Some(cc.get("ttl").and_then(Value::as_str).map(str::to_owned))
}

/// Who said a message. Tool results travel in `User` messages as
/// [`ContentPart::ToolResult`] parts (the Anthropic shape); encoders for
/// formats with a separate tool role split them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentPart>,
}

/// A piece of message content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ContentPart {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    /// A call the assistant made. `arguments` is the JSON text of the
    /// arguments object, as OpenAI carries it.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// The result of a tool call, sent back by the client.
    ToolResult {
        call_id: String,
        /// The function's name when the format carries it (Gemini needs it;
        /// encoders look it up from the matching `ToolCall` otherwise).
        name: Option<String>,
        /// Text and images.
        content: Vec<ContentPart>,
        is_error: bool,
    },
    /// Model reasoning shown to the client (Anthropic `thinking`, OpenAI
    /// `reasoning_content`, Gemini `thought` parts).
    Thinking {
        text: String,
        signature: Option<String>,
    },
    /// Anthropic `redacted_thinking`: opaque, only Anthropic can use it.
    RedactedThinking {
        data: String,
    },
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImageSource {
    /// An http(s) URL.
    Url { url: String },
    /// Inline bytes, base64 encoded (no `data:` prefix).
    Base64 { media_type: String, data: String },
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
    /// OpenAI `strict`.
    pub strict: Option<bool>,
}

/// How the model must use tools.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Must call some tool (OpenAI `required`, Anthropic `any`, Gemini `ANY`).
    Required,
    /// Must call this tool.
    Function(String),
}

/// Structured output.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        name: String,
        schema: Value,
        strict: Option<bool>,
    },
}

/// Reasoning / thinking settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reasoning {
    /// OpenAI `reasoning_effort`: "minimal" | "low" | "medium" | "high".
    pub effort: Option<String>,
    /// Anthropic `thinking.budget_tokens`, Gemini `thinkingBudget`.
    pub budget_tokens: Option<u64>,
    /// Thinking switched off explicitly.
    pub disabled: bool,
}

/// A complete (non-streaming) answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// Text, thinking and tool calls, in the order the model produced them.
    pub content: Vec<ContentPart>,
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<Usage>,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// Natural end or a stop sequence.
    Stop,
    /// Max tokens reached.
    Length,
    /// The model called tools.
    ToolCalls,
    ContentFilter,
    /// Anything else, as the provider spelled it.
    Other(String),
}

/// Token counts. `input_tokens` includes cached tokens (OpenAI convention);
/// Anthropic's separate cache counts are folded in by its decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input_tokens: Option<u64>,
    /// Input tokens written to the prompt cache (Anthropic), both classes.
    pub cache_creation_input_tokens: Option<u64>,
    /// Of those, the ones written for one hour (Anthropic's
    /// `cache_creation.ephemeral_1h_input_tokens`, billed at 2× input
    /// against 1.25× for the 5-minute class).
    pub cache_creation_1h_input_tokens: Option<u64>,
    /// Output tokens spent on reasoning (included in `output_tokens`).
    pub reasoning_tokens: Option<u64>,
}

impl Usage {
    /// Input plus output tokens (saturating: counts come from upstreams).
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// One step of a streamed answer, in no particular format. Decoders emit
/// them in order; encoders turn them into the client's SSE events.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The answer begins. Sent once, before any other event.
    Start { id: String, model: String },
    /// More answer text.
    TextDelta { text: String },
    /// More reasoning text.
    ThinkingDelta { text: String },
    /// The signature closing a thinking block (Anthropic).
    ThinkingSignature { signature: String },
    /// A whole Anthropic `redacted_thinking` block: opaque, only Anthropic
    /// can use it (clients must send it back on the next turn); encoders of
    /// other formats skip it.
    RedactedThinking { data: String },
    /// A tool call begins. `index` counts tool calls from 0 in this answer.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    /// More JSON text of a tool call's arguments.
    ToolCallDelta { index: u32, arguments: String },
    /// Token counts; may come more than once (the last one wins).
    Usage(Usage),
    /// The model stopped.
    Finish { reason: FinishReason },
    /// The upstream reported an error inside the stream.
    Error { message: String },
}

/// Extra JSON fields a decoder kept for a same-format encoder.
pub type Extra = Map<String, Value>;
