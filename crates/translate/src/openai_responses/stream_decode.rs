//! Provider side of streams: an upstream Responses event stream → neutral
//! [`StreamEvent`]s.

use serde_json::Value;

use super::response::{error_message, finish_of};
use super::usage::{usage_object, Counts};
use super::{err, take_str, type_of, unique_suffix};
use crate::{SseEvent, StreamDecode, StreamEvent, TranslateError};

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
    /// Usage reported so far.
    usage: Counts,
    usage_seen: bool,
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
            usage: Counts::default(),
            usage_seen: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
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
    /// Events that carry nothing for the neutral stream.
    Other,
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
        let reported = usage_object(&v).map(Counts::read);
        if let Some(c) = &reported {
            self.usage.update(c);
            self.usage_seen = true;
        }
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
            _ => Ev::Other,
        };
        if reported.is_some() && kind != Ev::Finished {
            // Usage outside the closing event (not OpenAI's habit): passed
            // on as it comes, so every path counts the same.
            self.ensure_start(v.get_mut("response"), out);
            out.push(StreamEvent::Usage(self.usage.to_ir()));
        }
        match kind {
            Ev::Other => {}
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
                    if reported.is_some() {
                        out.push(StreamEvent::Usage(self.usage.to_ir()));
                    }
                    return Ok(());
                }
                self.finished = true;
                if self.usage_seen {
                    out.push(StreamEvent::Usage(self.usage.to_ir()));
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
