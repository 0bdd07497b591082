//! Provider side of streams: Anthropic's SSE events → neutral
//! [`StreamEvent`]s.
//!
//! Upstream: `message_start`, then per content block `content_block_start`
//! / `content_block_delta`s / `content_block_stop`, then `message_delta`
//! (stop reason, output usage) and `message_stop`; `ping` and `error` may
//! come anywhere.

use serde_json::Value;

use super::response::error_message;
use super::usage::{usage_object, Counts};
use super::{finish_from_stop_reason, synth_id, STRUCTURED_TOOL};
use crate::{FinishReason, SseEvent, StreamDecode, StreamEvent, TranslateError};

/// What an upstream content block index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    /// A tool_use block and its tool-call index (counted from 0).
    Tool(u32),
    /// The structured-output tool's block: its input is answer text.
    Structured,
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
    /// Usage reported so far (`message_start`, then `message_delta`).
    usage: Counts,
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
            Some("tool_use")
                if block.get("name").and_then(Value::as_str) == Some(STRUCTURED_TOOL) =>
            {
                if let Some(input) = block.get("input").filter(|i| match i {
                    Value::Object(m) => !m.is_empty(),
                    _ => false,
                }) {
                    out.push(StreamEvent::TextDelta {
                        text: input.to_string(),
                    });
                }
                BlockKind::Structured
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
            Some("input_json_delta") if kind == Some(BlockKind::Structured) => {
                let text = take_str(delta, "partial_json");
                if !text.is_empty() {
                    out.push(StreamEvent::TextDelta { text });
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
        let reported = usage_object(&v).map(Counts::read);
        if let Some(c) = &reported {
            self.usage.update(c);
        }
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .and_then(EventKind::parse);
        match kind {
            None => {} // ping, content_block_stop, message_stop, unknown events.
            Some(EventKind::MessageStart) => {
                let mut msg = v.get_mut("message").map(Value::take).unwrap_or_default();
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
                    let mut reason = finish_from_stop_reason(reason);
                    // Stopped to "call" only the structured-output tool.
                    if reason == FinishReason::ToolCalls && self.next_tool == 0 {
                        reason = FinishReason::Stop;
                    }
                    out.push(StreamEvent::Finish { reason });
                }
            }
            Some(EventKind::Error) => {
                self.ensure_started(out);
                out.push(StreamEvent::Error {
                    message: error_message(&v),
                });
            }
        }
        if reported.is_some() {
            self.ensure_started(out);
            out.push(StreamEvent::Usage(self.usage.to_ir()));
        }
        Ok(())
    }
}
