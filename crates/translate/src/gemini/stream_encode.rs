//! Client side of streams: neutral [`StreamEvent`]s → Gemini SSE chunks,
//! `data: ` lines only (the Gemini SDKs parse nothing else).

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use super::parts::args_object;
use super::{encode_finish, encode_usage, unique_token};
use crate::{sse, FinishReason, Format, StreamEncode, StreamEvent, StreamOptions, Usage};

/// A tool call whose arguments are being collected.
struct OpenCall {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

/// Neutral events → `data: <GenerateContentResponse>` lines only.
pub struct StreamEncoder {
    opts: StreamOptions,
    id: String,
    model: String,
    started: bool,
    done: bool,
    calls: Vec<OpenCall>,
    pending_sig: Option<String>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new(opts: StreamOptions) -> Self {
        Self {
            opts,
            id: String::new(),
            model: String::new(),
            started: false,
            done: false,
            calls: Vec::new(),
            pending_sig: None,
            finish: None,
            usage: None,
        }
    }

    fn ensure_started(&mut self) {
        if !self.started {
            self.started = true;
            self.id = format!("resp_{}", unique_token());
            if let Some(m) = &self.opts.model_override {
                self.model = m.clone();
            }
        }
    }

    fn write_chunk(
        &mut self,
        parts: Vec<Value>,
        finish: Option<&str>,
        usage: Option<Value>,
        out: &mut BytesMut,
    ) {
        self.ensure_started();
        let mut cand = Map::new();
        // A chunk with nothing to say (Gemini's last one, holding only the
        // finish reason and usage) has a content without `parts`, as Gemini
        // sends it.
        let content = if parts.is_empty() {
            json!({"role": "model"})
        } else {
            json!({"parts": parts, "role": "model"})
        };
        cand.insert("content".into(), content);
        if let Some(f) = finish {
            cand.insert("finishReason".into(), json!(f));
        }
        cand.insert("index".into(), json!(0));
        let mut body = Map::new();
        body.insert("candidates".into(), json!([cand]));
        if let Some(u) = usage {
            body.insert("usageMetadata".into(), u);
        }
        body.insert("modelVersion".into(), json!(self.model));
        body.insert("responseId".into(), json!(self.id));
        if let Ok(bytes) = serde_json::to_vec(&Value::Object(body)) {
            sse::write_data(out, &bytes);
        }
    }

    fn part(&mut self, mut v: Value) -> Value {
        if let (Some(s), Value::Object(m)) = (self.pending_sig.take(), &mut v) {
            m.insert("thoughtSignature".into(), Value::String(s));
        }
        v
    }

    /// Emits every buffered tool call, in one chunk (as Gemini sends
    /// parallel calls).
    fn flush_calls(&mut self, out: &mut BytesMut) {
        if self.calls.is_empty() {
            return;
        }
        let calls = std::mem::take(&mut self.calls);
        let parts: Vec<Value> = calls
            .into_iter()
            .map(|c| {
                self.part(json!({"functionCall": {
                    "id": c.id, "name": c.name, "args": args_object(&c.arguments)
                }}))
            })
            .collect();
        self.write_chunk(parts, None, None, out);
    }
}

impl StreamEncode for StreamEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match ev {
            // Opaque Anthropic data: no other format can carry it.
            StreamEvent::RedactedThinking { .. } => {}
            StreamEvent::Start { id, model } => {
                if !self.started {
                    self.started = true;
                    self.id = if id.is_empty() {
                        format!("resp_{}", unique_token())
                    } else {
                        id.clone()
                    };
                    self.model = self
                        .opts
                        .model_override
                        .clone()
                        .unwrap_or_else(|| model.clone());
                }
            }
            StreamEvent::TextDelta { text } => {
                self.flush_calls(out);
                if text.is_empty() && self.pending_sig.is_none() {
                    return;
                }
                let p = self.part(json!({ "text": text }));
                self.write_chunk(vec![p], None, None, out);
            }
            StreamEvent::ThinkingDelta { text } => {
                self.flush_calls(out);
                if text.is_empty() {
                    return;
                }
                let p = json!({"text": text, "thought": true});
                self.write_chunk(vec![p], None, None, out);
            }
            StreamEvent::ThinkingSignature { signature } => {
                self.pending_sig = Some(signature.clone());
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if !self.calls.iter().any(|c| c.index == *index) {
                    self.flush_calls(out);
                    self.calls.push(OpenCall {
                        index: *index,
                        id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                    });
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(c) = self.calls.iter_mut().find(|c| c.index == *index) {
                    c.arguments.push_str(arguments);
                }
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Finish { reason } => {
                self.flush_calls(out);
                self.finish = Some(reason.clone());
            }
            StreamEvent::Error { message } => {
                self.flush_calls(out);
                crate::error::stream_error_event(Format::Gemini, None, message, out);
                self.done = true;
            }
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.flush_calls(out);
        self.done = true;
        let reason = self.finish.take().unwrap_or(FinishReason::Stop);
        // An empty text part only to carry a signature nothing followed
        // (Gemini's own closing part); never an empty part on its own.
        let parts = match self.pending_sig {
            Some(_) => vec![self.part(json!({ "text": "" }))],
            None => Vec::new(),
        };
        let usage = self.usage.as_ref().map(encode_usage);
        self.write_chunk(parts, Some(encode_finish(&reason)), usage, out);
    }

    fn fail(&mut self, status: Option<u16>, message: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        crate::error::stream_error_event(Format::Gemini, status, message, out);
    }
}
