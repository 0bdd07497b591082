//! Bytes of generated output (text, reasoning, tool-call names and
//! arguments) in one stream event of a format, read straight from the
//! event's JSON: what the same-format relay counts, without decoding the
//! event into the IR, to estimate the usage of an answer whose provider
//! never reports it (a client that leaves before the last event). It reads
//! the fields the format's stream decoder turns into
//! [`crate::StreamEvent::TextDelta`], `ThinkingDelta`, `ToolCallStart` and
//! `ToolCallDelta` (see [`crate::passthrough::output_bytes`], the translating
//! path's count).

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::Format;

/// A string field, borrowed from the event when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

fn len(t: &Option<Text<'_>>) -> u64 {
    t.as_ref().map_or(0, |t| t.0.len() as u64)
}

/// A part of an event that carries output.
trait Output {
    fn output(&self) -> u64;
}

/// The output of every element of an array, summed as it is read (no
/// vector is built: this runs for every event of every relayed stream).
struct Sum<T>(u64, PhantomData<T>);

impl<'de, T: Deserialize<'de> + Output> Deserialize<'de> for Sum<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Each<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Output> Visitor<'de> for Each<T> {
            type Value = Sum<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Sum<T>, A::Error> {
                let mut total = 0u64;
                while let Some(item) = seq.next_element::<T>()? {
                    total = total.saturating_add(item.output());
                }
                Ok(Sum(total, PhantomData))
            }
        }
        d.deserialize_seq(Each(PhantomData))
    }
}

fn sum<T>(s: &Option<Sum<T>>) -> u64 {
    s.as_ref().map_or(0, |s| s.0)
}

#[derive(Deserialize)]
struct ChatChunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Sum<ChatChoice<'a>>>,
}

#[derive(Deserialize)]
struct ChatChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<ChatDelta<'a>>,
}

#[derive(Deserialize)]
struct ChatDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Text<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Text<'a>>,
    #[serde(borrow, default)]
    reasoning: Option<Text<'a>>,
    #[serde(borrow, default)]
    refusal: Option<Text<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Sum<ChatToolCall<'a>>>,
    #[serde(borrow, default)]
    function_call: Option<ChatFunction<'a>>,
}

#[derive(Deserialize)]
struct ChatToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<ChatFunction<'a>>,
}

#[derive(Deserialize)]
struct ChatFunction<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    arguments: Option<Text<'a>>,
}

fn function(f: &Option<ChatFunction<'_>>) -> u64 {
    f.as_ref().map_or(0, |f| len(&f.name) + len(&f.arguments))
}

impl Output for ChatToolCall<'_> {
    fn output(&self) -> u64 {
        function(&self.function)
    }
}

impl Output for ChatChoice<'_> {
    fn output(&self) -> u64 {
        let Some(d) = &self.delta else { return 0 };
        // The decoder takes `reasoning_content`, else `reasoning`.
        let thinking = match &d.reasoning_content {
            Some(_) => len(&d.reasoning_content),
            None => len(&d.reasoning),
        };
        len(&d.content)
            + thinking
            + len(&d.refusal)
            + sum(&d.tool_calls)
            + function(&d.function_call)
    }
}

#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(borrow, default)]
    delta: Option<AnthropicPart<'a>>,
    #[serde(borrow, default)]
    content_block: Option<AnthropicPart<'a>>,
}

#[derive(Deserialize)]
struct AnthropicPart<'a> {
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default)]
    thinking: Option<Text<'a>>,
    #[serde(borrow, default)]
    partial_json: Option<Text<'a>>,
    /// A tool call's name (`content_block_start` of a `tool_use`).
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    /// A `redacted_thinking` block.
    #[serde(borrow, default)]
    data: Option<Text<'a>>,
}

impl Output for AnthropicPart<'_> {
    fn output(&self) -> u64 {
        len(&self.text)
            + len(&self.thinking)
            + len(&self.partial_json)
            + len(&self.name)
            + len(&self.data)
    }
}

impl Output for AnthropicEvent<'_> {
    fn output(&self) -> u64 {
        self.delta.as_ref().map_or(0, Output::output)
            + self.content_block.as_ref().map_or(0, Output::output)
    }
}

/// A ConverseStream event's payload: `contentBlockDelta`'s `delta`, or
/// `contentBlockStart`'s `start.toolUse` (its name).
#[derive(Deserialize)]
struct BedrockEvent<'a> {
    #[serde(borrow, default)]
    delta: Option<BedrockDelta<'a>>,
    #[serde(borrow, default)]
    start: Option<BedrockStart<'a>>,
}

#[derive(Deserialize)]
struct BedrockDelta<'a> {
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default, rename = "toolUse")]
    tool_use: Option<BedrockToolUse<'a>>,
    #[serde(borrow, default, rename = "reasoningContent")]
    reasoning: Option<BedrockReasoning<'a>>,
}

#[derive(Deserialize)]
struct BedrockStart<'a> {
    #[serde(borrow, default, rename = "toolUse")]
    tool_use: Option<BedrockToolUse<'a>>,
}

#[derive(Deserialize)]
struct BedrockToolUse<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    input: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct BedrockReasoning<'a> {
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
}

impl Output for BedrockEvent<'_> {
    fn output(&self) -> u64 {
        let tool =
            |t: &Option<BedrockToolUse<'_>>| t.as_ref().map_or(0, |t| len(&t.name) + len(&t.input));
        let delta = self.delta.as_ref().map_or(0, |d| {
            len(&d.text) + tool(&d.tool_use) + d.reasoning.as_ref().map_or(0, |r| len(&r.text))
        });
        delta + self.start.as_ref().map_or(0, |s| tool(&s.tool_use))
    }
}

#[derive(Deserialize)]
struct GeminiChunk<'a> {
    #[serde(borrow, default)]
    candidates: Option<Sum<GeminiCandidate<'a>>>,
}

#[derive(Deserialize)]
struct GeminiCandidate<'a> {
    #[serde(borrow, default)]
    content: Option<GeminiContent<'a>>,
}

#[derive(Deserialize)]
struct GeminiContent<'a> {
    #[serde(borrow, default)]
    parts: Option<Sum<GeminiPart<'a>>>,
}

#[derive(Deserialize)]
struct GeminiPart<'a> {
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default, rename = "functionCall", alias = "function_call")]
    function_call: Option<GeminiCall<'a>>,
}

#[derive(Deserialize)]
struct GeminiCall<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    /// An object: counted as the JSON text the decoder makes of it.
    #[serde(default)]
    args: Option<Value>,
}

impl Output for GeminiCandidate<'_> {
    fn output(&self) -> u64 {
        self.content.as_ref().map_or(0, |c| sum(&c.parts))
    }
}

impl Output for GeminiPart<'_> {
    fn output(&self) -> u64 {
        let call = self.function_call.as_ref().map_or(0, |f| {
            let args = f
                .args
                .as_ref()
                .map_or(2, |a| serde_json::to_vec(a).map_or(0, |v| v.len() as u64));
            len(&f.name) + args
        });
        len(&self.text) + call
    }
}

impl Output for GeminiChunk<'_> {
    fn output(&self) -> u64 {
        sum(&self.candidates)
    }
}

impl Output for ChatChunk<'_> {
    fn output(&self) -> u64 {
        sum(&self.choices)
    }
}

#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Text<'a>>,
    /// The text of a `*.delta` event.
    #[serde(borrow, default)]
    delta: Option<Text<'a>>,
    /// `response.output_item.added`: a function call's name.
    #[serde(borrow, default)]
    item: Option<ResponsesItem<'a>>,
}

#[derive(Deserialize)]
struct ResponsesItem<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
}

impl Output for ResponsesEvent<'_> {
    fn output(&self) -> u64 {
        let kind = self.kind.as_ref().map_or("", |k| &k.0);
        match kind {
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.reasoning_summary_text.delta"
            | "response.reasoning_text.delta"
            | "response.function_call_arguments.delta" => len(&self.delta),
            "response.output_item.added" => self
                .item
                .as_ref()
                .filter(|i| i.kind.as_ref().is_some_and(|k| k.0 == "function_call"))
                .map_or(0, |i| len(&i.name)),
            _ => 0,
        }
    }
}

/// The output bytes of one event's JSON (`data`), checking that it is JSON.
/// `Err` when it is not JSON, or not the shape the format's events have
/// (the caller then checks it is JSON and counts nothing).
pub fn in_slice(fmt: Format, data: &[u8]) -> serde_json::Result<u64> {
    fn read<'a, T: Deserialize<'a> + Output>(data: &'a [u8]) -> serde_json::Result<u64> {
        Ok(serde_json::from_slice::<T>(data)?.output())
    }
    match fmt {
        Format::OpenAiChat => read::<ChatChunk<'_>>(data),
        Format::OpenAiResponses => read::<ResponsesEvent<'_>>(data),
        Format::Anthropic => read::<AnthropicEvent<'_>>(data),
        Format::Gemini => read::<GeminiChunk<'_>>(data),
        Format::Bedrock => read::<BedrockEvent<'_>>(data),
    }
}

/// [`in_slice`] of an event already parsed (0 when it is not the format's
/// shape).
pub fn in_value(fmt: Format, v: &Value) -> u64 {
    fn read<'a, T: Deserialize<'a> + Output>(v: &'a Value) -> u64 {
        T::deserialize(v).map_or(0, |t| t.output())
    }
    match fmt {
        Format::OpenAiChat => read::<ChatChunk<'_>>(v),
        Format::OpenAiResponses => read::<ResponsesEvent<'_>>(v),
        Format::Anthropic => read::<AnthropicEvent<'_>>(v),
        Format::Gemini => read::<GeminiChunk<'_>>(v),
        Format::Bedrock => read::<BedrockEvent<'_>>(v),
    }
}
