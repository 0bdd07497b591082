//! Provider side of streams: an OpenAI(-compatible) `chat.completion.chunk`
//! stream → neutral [`StreamEvent`]s.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::usage::Counts;
use super::{error_message, finish_from_str, synth_id};
use crate::{FinishReason, SseEvent, StreamDecode, StreamEvent, TranslateError};

/// A string borrowed from the chunk when it has no escapes. (`Option<Cow>`
/// alone never borrows: serde only special-cases a bare `Cow` field.)
#[derive(Deserialize)]
#[serde(transparent)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Str<'_> {
    fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChunkIn<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow)]
    choices: Option<Vec<ChunkChoiceIn<'a>>>,
    usage: Option<Value>,
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChunkChoiceIn<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<DeltaIn<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeltaIn<'a> {
    #[serde(borrow)]
    content: Option<Str<'a>>,
    #[serde(borrow)]
    reasoning_content: Option<Str<'a>>,
    #[serde(borrow)]
    reasoning: Option<Str<'a>>,
    #[serde(borrow)]
    refusal: Option<Str<'a>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCallDeltaIn<'a>>>,
    #[serde(borrow)]
    function_call: Option<FnDeltaIn<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCallDeltaIn<'a> {
    index: Option<u32>,
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    function: Option<FnDeltaIn<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FnDeltaIn<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    arguments: Option<Str<'a>>,
}

/// A tool call being streamed.
struct ToolSlot {
    /// The upstream's `index`, when it sends one.
    key: Option<u32>,
    /// Our index (tool calls counted from 0).
    index: u32,
    id: String,
    name: String,
    /// Arguments received before the name (sent with the start).
    pending_args: String,
    started: bool,
}

/// Decodes an OpenAI(-compatible) Chat Completions stream.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    tools: Vec<ToolSlot>,
    /// A finish reason waiting for the usage chunk that follows it.
    pending_finish: Option<FinishReason>,
    finished: bool,
    /// Usage reported so far.
    usage: Counts,
}

impl StreamDecoder {
    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: match id {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    _ => synth_id("chatcmpl-"),
                },
                model: model.unwrap_or_default().to_owned(),
            });
        }
    }

    fn flush_finish(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(reason) = self.pending_finish.take() {
            self.finished = true;
            out.push(StreamEvent::Finish { reason });
        }
    }

    /// Starts tool calls whose name never came (so they are not lost).
    fn flush_tools(&mut self, out: &mut Vec<StreamEvent>) {
        for slot in &mut self.tools {
            if !slot.started {
                Self::start_slot(slot, out);
            }
        }
    }

    fn start_slot(slot: &mut ToolSlot, out: &mut Vec<StreamEvent>) {
        slot.started = true;
        let id = if slot.id.is_empty() {
            synth_id("call_")
        } else {
            slot.id.clone()
        };
        out.push(StreamEvent::ToolCallStart {
            index: slot.index,
            id,
            name: std::mem::take(&mut slot.name),
        });
        if !slot.pending_args.is_empty() {
            out.push(StreamEvent::ToolCallDelta {
                index: slot.index,
                arguments: std::mem::take(&mut slot.pending_args),
            });
        }
    }

    fn tool_delta(
        &mut self,
        key: Option<u32>,
        id: Option<&str>,
        f: Option<FnDeltaIn<'_>>,
        out: &mut Vec<StreamEvent>,
    ) {
        let id = id.filter(|s| !s.is_empty());
        let pos = match (key, id) {
            // A known index with another call's id: a server that numbers
            // every call 0 (seen in the wild); it is a new call.
            (Some(k), Some(id)) => self
                .tools
                .iter()
                .rposition(|s| s.key == Some(k))
                .filter(|&p| {
                    self.tools
                        .get(p)
                        .is_some_and(|s| s.id.is_empty() || s.id == id)
                }),
            (Some(k), None) => self.tools.iter().rposition(|s| s.key == Some(k)),
            (None, Some(id)) => self.tools.iter().rposition(|s| s.id == id),
            // No index and no id: more of the latest call.
            (None, None) => self.tools.len().checked_sub(1),
        };
        let (name, args) = match f {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        let pos = match pos {
            Some(p) => p,
            None => {
                self.tools.push(ToolSlot {
                    key,
                    index: self.tools.len() as u32,
                    id: id.unwrap_or_default().to_owned(),
                    name: String::new(),
                    pending_args: String::new(),
                    started: false,
                });
                self.tools.len() - 1
            }
        };
        let Some(slot) = self.tools.get_mut(pos) else {
            return;
        };
        if slot.started {
            if let Some(a) = args.filter(|a| !a.is_empty()) {
                out.push(StreamEvent::ToolCallDelta {
                    index: slot.index,
                    arguments: a.into_owned(),
                });
            }
            return;
        }
        if slot.id.is_empty() {
            if let Some(id) = id {
                slot.id = id.to_owned();
            }
        }
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            slot.name.push_str(&n);
        }
        if let Some(a) = args {
            slot.pending_args.push_str(&a);
        }
        if !slot.name.is_empty() {
            Self::start_slot(slot, out);
        }
    }
}

impl StreamDecode for StreamDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            self.flush_tools(out);
            self.flush_finish(out);
            return Ok(());
        }
        let chunk: ChunkIn = serde_json::from_str(data).map_err(|e| {
            TranslateError::new(format!("upstream stream chunk is not valid JSON: {e}"))
        })?;
        let has_payload = chunk.error.as_ref().is_some_and(|e| !e.is_null())
            || chunk.usage.as_ref().is_some_and(Value::is_object)
            || chunk.choices.as_ref().is_some_and(|c| !c.is_empty());
        if !self.started && !has_payload && chunk.id.as_deref().unwrap_or_default().is_empty() {
            // Azure's first chunk (prompt_filter_results) has an empty id and
            // model and nothing else: wait for the one that names them.
            return Ok(());
        }
        self.start(chunk.id.as_deref(), chunk.model.as_deref(), out);
        let usage = chunk.usage.as_ref().filter(|u| u.is_object()).map(|u| {
            self.usage.update(&Counts::read(u));
            self.usage.to_ir()
        });
        if let Some(e) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            self.flush_finish(out);
            if let Some(u) = usage {
                out.push(StreamEvent::Usage(u));
            }
            out.push(StreamEvent::Error {
                message: error_message(e),
            });
            return Ok(());
        }

        let choices = chunk.choices.unwrap_or_default();
        if self.pending_finish.is_some() && choices.iter().any(|c| c.index.unwrap_or(0) == 0) {
            // More of the answer after its finish reason: do not hold it back.
            self.flush_finish(out);
        }
        for choice in choices {
            if choice.index.unwrap_or(0) != 0 {
                continue; // only the first choice is translated
            }
            if let Some(delta) = choice.delta {
                let thinking = match (delta.reasoning_content, delta.reasoning) {
                    (Some(t), _) if !t.is_empty() => Some(t),
                    (_, Some(t)) if !t.is_empty() => Some(t),
                    _ => None,
                };
                if let Some(t) = thinking {
                    out.push(StreamEvent::ThinkingDelta {
                        text: t.into_owned(),
                    });
                }
                if let Some(t) = delta.content.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::TextDelta {
                        text: t.into_owned(),
                    });
                }
                if let Some(t) = delta.refusal.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::TextDelta {
                        text: t.into_owned(),
                    });
                }
                for tc in delta.tool_calls.unwrap_or_default() {
                    self.tool_delta(tc.index, tc.id.as_deref(), tc.function, out);
                }
                if let Some(f) = delta.function_call {
                    self.tool_delta(Some(u32::MAX), None, Some(f), out);
                }
            }
            if let Some(r) = choice.finish_reason.filter(|r| !r.is_empty()) {
                if !self.finished && self.pending_finish.is_none() {
                    self.flush_tools(out);
                    self.pending_finish = Some(finish_from_str(&r));
                }
            }
        }
        if let Some(u) = usage {
            out.push(StreamEvent::Usage(u));
            // The usage chunk closes the answer: release the finish.
            self.flush_finish(out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_strings_are_borrowed() {
        let c: ChunkIn =
            serde_json::from_str(r#"{"id":"x","choices":[{"delta":{"content":"abc"}}]}"#).unwrap();
        assert!(matches!(c.id, Some(Str(Cow::Borrowed(_)))));
        let d = c.choices.unwrap().pop().unwrap().delta.unwrap();
        assert!(matches!(d.content, Some(Str(Cow::Borrowed("abc")))));
    }
}
