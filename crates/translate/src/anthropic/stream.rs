//! Streams: Anthropic's SSE events ↔ neutral [`StreamEvent`]s.
//!
//! Upstream: `message_start`, then per content block `content_block_start`
//! / `content_block_delta`s / `content_block_stop`, then `message_delta`
//! (stop reason, output usage) and `message_stop`; `ping` and `error` may
//! come anywhere.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::response::error_message;
use super::wire::WireBlock;
use super::{finish_from_stop_reason, stop_reason_from_finish, synth_id, tool_id, usage_from_ir};
use crate::{
    error::stream_error_event, FinishReason, Format, SseEvent, StreamDecode, StreamEncode,
    StreamEvent, StreamOptions, TranslateError, Usage,
};

// ---------------------------------------------------------------------------
// Decoder (provider side)
// ---------------------------------------------------------------------------

/// What an upstream content block index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    /// A tool_use block and its tool-call index (counted from 0).
    Tool(u32),
    /// Server-tool blocks and other kinds with no neutral shape.
    Ignored,
}

/// Decodes Anthropic's stream into neutral events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    /// Upstream block index → kind; a handful per answer.
    blocks: Vec<(u64, BlockKind)>,
    next_tool: u32,
    /// Counts from `message_start`, Anthropic convention (input excludes cache).
    input_tokens: u64,
    output_tokens: u64,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
}

fn take_str(v: &mut Value, key: &str) -> String {
    match v.get_mut(key).map(Value::take) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    }
}

impl StreamDecoder {
    fn ensure_started(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: synth_id("msg_"),
                model: String::new(),
            });
        }
    }

    fn kind_of(&self, index: u64) -> Option<BlockKind> {
        self.blocks
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, k)| *k)
    }

    fn set_kind(&mut self, index: u64, kind: BlockKind) {
        match self.blocks.iter_mut().find(|(i, _)| *i == index) {
            Some(slot) => slot.1 = kind,
            None => self.blocks.push((index, kind)),
        }
    }

    fn usage(&self) -> Usage {
        super::usage_to_ir(
            self.input_tokens,
            self.output_tokens,
            self.cache_read,
            self.cache_creation,
        )
    }

    /// Folds an Anthropic usage object into the running counts.
    fn merge_usage(&mut self, u: &Value) {
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(v) = n("input_tokens") {
            self.input_tokens = v;
        }
        if let Some(v) = n("output_tokens") {
            self.output_tokens = v;
        }
        if let Some(v) = n("cache_read_input_tokens") {
            self.cache_read = Some(v);
        }
        if let Some(v) = n("cache_creation_input_tokens") {
            self.cache_creation = Some(v);
        }
    }

    fn block_start(&mut self, mut v: Value, out: &mut Vec<StreamEvent>) {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let mut block = v
            .get_mut("content_block")
            .map(Value::take)
            .unwrap_or_default();
        let kind = match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = take_str(&mut block, "text");
                if !text.is_empty() {
                    out.push(StreamEvent::TextDelta { text });
                }
                BlockKind::Text
            }
            Some("thinking") => {
                let text = take_str(&mut block, "thinking");
                if !text.is_empty() {
                    out.push(StreamEvent::ThinkingDelta { text });
                }
                let signature = take_str(&mut block, "signature");
                if !signature.is_empty() {
                    out.push(StreamEvent::ThinkingSignature { signature });
                }
                BlockKind::Thinking
            }
            Some("redacted_thinking") => {
                out.push(StreamEvent::RedactedThinking {
                    data: take_str(&mut block, "data"),
                });
                BlockKind::Ignored
            }
            Some("tool_use") => {
                let tool = self.next_tool;
                self.next_tool = self.next_tool.saturating_add(1);
                let mut id = take_str(&mut block, "id");
                if id.is_empty() {
                    id = synth_id("toolu_");
                }
                out.push(StreamEvent::ToolCallStart {
                    index: tool,
                    id,
                    name: take_str(&mut block, "name"),
                });
                // The input normally streams as input_json_delta; a block
                // that starts with it whole is passed on as one delta.
                if let Some(input) = block.get("input").filter(|i| match i {
                    Value::Object(m) => !m.is_empty(),
                    _ => false,
                }) {
                    out.push(StreamEvent::ToolCallDelta {
                        index: tool,
                        arguments: input.to_string(),
                    });
                }
                BlockKind::Tool(tool)
            }
            _ => BlockKind::Ignored,
        };
        self.set_kind(index, kind);
    }

    fn block_delta(&mut self, mut v: Value, out: &mut Vec<StreamEvent>) {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let Some(delta) = v.get_mut("delta") else {
            return;
        };
        let kind = self.kind_of(index);
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") if matches!(kind, Some(BlockKind::Text) | None) => {
                let text = take_str(delta, "text");
                if !text.is_empty() {
                    out.push(StreamEvent::TextDelta { text });
                }
            }
            Some("thinking_delta") if matches!(kind, Some(BlockKind::Thinking) | None) => {
                let text = take_str(delta, "thinking");
                if !text.is_empty() {
                    out.push(StreamEvent::ThinkingDelta { text });
                }
            }
            Some("signature_delta") if matches!(kind, Some(BlockKind::Thinking) | None) => {
                let signature = take_str(delta, "signature");
                if !signature.is_empty() {
                    out.push(StreamEvent::ThinkingSignature { signature });
                }
            }
            Some("input_json_delta") => {
                if let Some(BlockKind::Tool(tool)) = kind {
                    let arguments = take_str(delta, "partial_json");
                    if !arguments.is_empty() {
                        out.push(StreamEvent::ToolCallDelta {
                            index: tool,
                            arguments,
                        });
                    }
                }
            }
            // citations_delta and deltas of ignored blocks.
            _ => {}
        }
    }
}

/// The upstream events that carry something.
#[derive(Clone, Copy)]
enum EventKind {
    MessageStart,
    BlockStart,
    BlockDelta,
    MessageDelta,
    Error,
}

impl EventKind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "message_start" => Self::MessageStart,
            "content_block_start" => Self::BlockStart,
            "content_block_delta" => Self::BlockDelta,
            "message_delta" => Self::MessageDelta,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

impl StreamDecode for StreamDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if ev.is_done() {
            return Ok(()); // Not Anthropic's, but harmless from a relay.
        }
        let mut v: Value = serde_json::from_str(&ev.data).map_err(|e| {
            TranslateError::new(format!(
                "anthropic stream: invalid JSON in `{}` event: {e}",
                ev.event.as_deref().unwrap_or("message")
            ))
        })?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .and_then(EventKind::parse);
        match kind {
            None => {} // ping, content_block_stop, message_stop, unknown events.
            Some(EventKind::MessageStart) => {
                let mut msg = v.get_mut("message").map(Value::take).unwrap_or_default();
                if let Some(u) = msg.get("usage").filter(|u| u.is_object()) {
                    self.merge_usage(u);
                }
                if !self.started {
                    self.started = true;
                    let mut id = take_str(&mut msg, "id");
                    if id.is_empty() {
                        id = synth_id("msg_");
                    }
                    out.push(StreamEvent::Start {
                        id,
                        model: take_str(&mut msg, "model"),
                    });
                }
                if msg.get("usage").is_some_and(Value::is_object) {
                    out.push(StreamEvent::Usage(self.usage()));
                }
            }
            Some(EventKind::BlockStart) => {
                self.ensure_started(out);
                self.block_start(v, out);
            }
            Some(EventKind::BlockDelta) => {
                self.ensure_started(out);
                self.block_delta(v, out);
            }
            Some(EventKind::MessageDelta) => {
                self.ensure_started(out);
                let reason = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                if let Some(reason) = reason {
                    out.push(StreamEvent::Finish {
                        reason: finish_from_stop_reason(reason),
                    });
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    self.merge_usage(u);
                    out.push(StreamEvent::Usage(self.usage()));
                }
            }
            Some(EventKind::Error) => {
                self.ensure_started(out);
                out.push(StreamEvent::Error {
                    message: error_message(&v),
                });
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Encoder (client side)
// ---------------------------------------------------------------------------

/// The content block the encoder has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    /// `signed`: its signature was sent; more thinking opens a new block.
    Thinking {
        signed: bool,
    },
    Tool(u32),
}

/// Encodes neutral events as the SSE stream Anthropic's SDKs expect.
pub struct StreamEncoder {
    opts: StreamOptions,
    /// Id and model from `Start`, until `message_start` is written: it waits
    /// for the first content so it can carry the input usage when the
    /// upstream sends it up front.
    start: Option<(String, String)>,
    message_started: bool,
    usage: Usage,
    next_block: u32,
    open: Option<(u32, OpenBlock)>,
    /// Tool-call index → its block index.
    tool_blocks: Vec<(u32, u32)>,
    finish: Option<FinishReason>,
    done: bool,
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: WireBlock<'a>,
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: Delta<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
}

/// Appends `event: <name>\ndata: <json>\n\n`, serializing straight into `out`.
fn emit<T: Serialize>(out: &mut BytesMut, name: &str, data: &T) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    // Our shapes hold only strings, integers and JSON values: cannot fail.
    let _ = serde_json::to_writer(out.writer(), data);
    out.put_slice(b"\n\n");
}

impl StreamEncoder {
    pub fn new(opts: StreamOptions) -> Self {
        Self {
            opts,
            start: None,
            message_started: false,
            usage: Usage::default(),
            next_block: 0,
            open: None,
            tool_blocks: Vec::new(),
            finish: None,
            done: false,
        }
    }

    fn message_start(&mut self, out: &mut BytesMut) {
        if self.message_started {
            return;
        }
        self.message_started = true;
        let (id, model) = self
            .start
            .take()
            .unwrap_or_else(|| (synth_id("msg_"), String::new()));
        let model = self.opts.model_override.as_deref().unwrap_or(&model);
        let id = if id.is_empty() { synth_id("msg_") } else { id };
        let usage = usage_from_ir(&self.usage);
        let v = json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage,
            }
        });
        emit(out, "message_start", &v);
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some((index, _)) = self.open.take() {
            emit(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, kind: OpenBlock, block: WireBlock<'_>, out: &mut BytesMut) -> u32 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block = self.next_block.saturating_add(1);
        emit(
            out,
            "content_block_start",
            &BlockStart {
                kind: "content_block_start",
                index,
                content_block: block,
            },
        );
        self.open = Some((index, kind));
        index
    }

    fn delta(out: &mut BytesMut, index: u32, delta: Delta<'_>) {
        emit(
            out,
            "content_block_delta",
            &BlockDelta {
                kind: "content_block_delta",
                index,
                delta,
            },
        );
    }

    fn open_tool(&mut self, tool: u32, id: &str, name: &str, out: &mut BytesMut) -> u32 {
        let id = if id.is_empty() {
            synth_id("toolu_").into()
        } else {
            tool_id(id)
        };
        let block = WireBlock::ToolUse {
            id,
            name,
            input: Value::Object(Map::new()),
        };
        let index = self.open_block(OpenBlock::Tool(tool), block, out);
        self.tool_blocks.push((tool, index));
        index
    }

    fn open_thinking(&mut self, out: &mut BytesMut) -> u32 {
        let block = WireBlock::Thinking {
            thinking: "",
            signature: "",
        };
        self.open_block(OpenBlock::Thinking { signed: false }, block, out)
    }
}

impl StreamEncode for StreamEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match ev {
            StreamEvent::Start { id, model } => {
                if !self.message_started && self.start.is_none() {
                    self.start = Some((id.clone(), model.clone()));
                }
            }
            StreamEvent::Usage(u) => self.usage = *u,
            StreamEvent::TextDelta { text } => {
                if text.is_empty() {
                    return;
                }
                self.message_start(out);
                let index = match self.open {
                    Some((i, OpenBlock::Text)) => i,
                    _ => self.open_block(OpenBlock::Text, WireBlock::Text { text: "" }, out),
                };
                Self::delta(out, index, Delta::Text { text });
            }
            StreamEvent::ThinkingDelta { text } => {
                if text.is_empty() {
                    return;
                }
                self.message_start(out);
                let index = match self.open {
                    Some((i, OpenBlock::Thinking { signed: false })) => i,
                    _ => self.open_thinking(out),
                };
                Self::delta(out, index, Delta::Thinking { thinking: text });
            }
            StreamEvent::ThinkingSignature { signature } => {
                self.message_start(out);
                let index = match self.open {
                    Some((i, OpenBlock::Thinking { signed: false })) => i,
                    // A signature with no thinking text before it (thinking
                    // display omitted): a block of its own.
                    _ => self.open_thinking(out),
                };
                Self::delta(out, index, Delta::Signature { signature });
                self.open = Some((index, OpenBlock::Thinking { signed: true }));
            }
            StreamEvent::RedactedThinking { data } => {
                self.message_start(out);
                self.open_block(
                    OpenBlock::Thinking { signed: true },
                    WireBlock::RedactedThinking { data },
                    out,
                );
                self.close_block(out);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.message_start(out);
                self.open_tool(*index, id, name, out);
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if arguments.is_empty() {
                    return;
                }
                self.message_start(out);
                let block = match self.open {
                    Some((b, OpenBlock::Tool(t))) if t == *index => b,
                    _ => match self.tool_blocks.iter().find(|(t, _)| t == index).copied() {
                        // Arguments for a call whose block is already closed
                        // (providers that interleave parallel calls): the
                        // SDKs accumulate by block index.
                        Some((_, b)) => b,
                        // Arguments for a call never started: open it.
                        None => self.open_tool(*index, "", "", out),
                    },
                };
                Self::delta(
                    out,
                    block,
                    Delta::InputJson {
                        partial_json: arguments,
                    },
                );
            }
            StreamEvent::Finish { reason } => {
                self.message_start(out);
                self.close_block(out);
                self.finish = Some(reason.clone());
            }
            StreamEvent::Error { message } => self.fail(None, message, out),
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        self.message_start(out);
        self.close_block(out);
        let stop_reason = match &self.finish {
            Some(r) => stop_reason_from_finish(r),
            None if !self.tool_blocks.is_empty() => "tool_use",
            None => "end_turn",
        };
        // Newer SDKs take input and cache counts from message_delta too,
        // which matters when the upstream only reports them at the end.
        let v = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": usage_from_ir(&self.usage),
        });
        emit(out, "message_delta", &v);
        emit(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn fail(&mut self, status: Option<u16>, message: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        stream_error_event(Format::Anthropic, status, message, out);
    }
}
