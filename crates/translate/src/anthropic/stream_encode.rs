//! Client side of streams: neutral [`StreamEvent`]s → Anthropic's SSE
//! events (`message_start`, content blocks, `message_delta`,
//! `message_stop`).

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::wire::WireBlock;
use super::{stop_reason_from_finish, synth_id, tool_id, usage_from_ir};
use crate::{
    error::stream_error_event, FinishReason, Format, StreamEncode, StreamEvent, StreamOptions,
    Usage,
};

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
