//! Client side of streams: neutral [`StreamEvent`]s → the Responses event
//! stream (`response.created`, `response.output_item.added`, deltas, ...,
//! `response.completed`).

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::Value;

use super::wire::{status_of, OutItem, Part, RespObj, UsageOut};
use super::{args_or_empty_object, now_secs, unique_suffix};
use crate::{FinishReason, StreamEncode, StreamEvent, StreamOptions, Usage};

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
