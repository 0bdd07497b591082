//! Streams: Gemini SSE chunks ↔ neutral [`StreamEvent`]s.

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use super::parts::{args_object, decode_parts, IdMode};
use super::response::{error_message, first_candidate, prompt_block_reason, take_string};
use super::{
    decode_finish, decode_usage, encode_finish, encode_usage, err, get_any, unique_token,
    want_object, Path,
};
use crate::{
    sse, ContentPart, FinishReason, Format, SseEvent, StreamDecode, StreamEncode, StreamEvent,
    StreamOptions, TranslateError, Usage,
};

/// Gemini SSE (`alt=sse`): every `data:` is a whole GenerateContentResponse.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    token: String,
    tool_index: u32,
    finished: bool,
    last_usage: Option<Usage>,
}

impl StreamDecoder {
    fn start(&mut self, m: &mut Map<String, Value>, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        self.token = unique_token();
        let id = take_string(m, "responseId", "response_id")
            .unwrap_or_else(|| format!("resp_{}", self.token));
        let model = take_string(m, "modelVersion", "model_version").unwrap_or_default();
        out.push(StreamEvent::Start { id, model });
    }

    fn chunk(&mut self, v: Value, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let mut m = want_object(v, "gemini stream chunk")?;
        if let Some(e) = m.get("error") {
            let message = error_message(e);
            self.start(&mut Map::new(), out);
            out.push(StreamEvent::Error { message });
            return Ok(());
        }
        self.start(&mut m, out);
        // Usage before the chunk's content: Gemini reports the prompt size
        // on its first chunk, and an Anthropic client's `message_start`
        // (written with the first content) can only carry what came before.
        if let Some(u) = get_any(&m, "usageMetadata", "usage_metadata").and_then(decode_usage) {
            if self.last_usage != Some(u) {
                self.last_usage = Some(u);
                out.push(StreamEvent::Usage(u));
            }
        }
        let mut finish = None;
        match first_candidate(&mut m) {
            Some(mut cand) => {
                if let Some(Value::Object(mut content)) = cand.remove("content") {
                    if let Some(parts) = content.remove("parts").filter(|p| !p.is_null()) {
                        let mut next = self.tool_index;
                        let parts = decode_parts(
                            parts,
                            Path::Name("candidates[0].content.parts"),
                            &mut IdMode::Answer {
                                token: &self.token,
                                next: &mut next,
                            },
                        )?;
                        self.emit_parts(parts, out);
                    }
                }
                finish = get_any(&cand, "finishReason", "finish_reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty() && *r != "FINISH_REASON_UNSPECIFIED")
                    .map(|r| decode_finish(r, self.tool_index > 0));
            }
            None => {
                if prompt_block_reason(&m).is_some() {
                    finish = Some(FinishReason::ContentFilter);
                }
            }
        }
        if let Some(reason) = finish {
            if !self.finished {
                self.finished = true;
                out.push(StreamEvent::Finish { reason });
            }
        }
        Ok(())
    }

    fn emit_parts(&mut self, parts: Vec<ContentPart>, out: &mut Vec<StreamEvent>) {
        for p in parts {
            match p {
                ContentPart::Text { text } => {
                    if !text.is_empty() {
                        out.push(StreamEvent::TextDelta { text });
                    }
                }
                ContentPart::Thinking { text, signature } => {
                    if !text.is_empty() {
                        out.push(StreamEvent::ThinkingDelta { text });
                    }
                    if let Some(signature) = signature {
                        out.push(StreamEvent::ThinkingSignature { signature });
                    }
                }
                ContentPart::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    let index = self.tool_index;
                    self.tool_index += 1;
                    out.push(StreamEvent::ToolCallStart { index, id, name });
                    out.push(StreamEvent::ToolCallDelta { index, arguments });
                }
                ContentPart::Image { source } => {
                    // No image event in the neutral stream: a data URL as text
                    // would be noise; images in streamed answers are dropped.
                    let _ = source;
                }
                ContentPart::ToolResult { .. } | ContentPart::RedactedThinking { .. } => {}
            }
        }
    }
}

impl StreamDecode for StreamDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let data = ev.data.trim();
        if data.is_empty() || ev.is_done() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| err(format!("gemini stream chunk: invalid JSON: {e}")))?;
        match v {
            // Without alt=sse Gemini streams a JSON array of chunks.
            Value::Array(items) => {
                for item in items {
                    self.chunk(item, out)?;
                }
                Ok(())
            }
            v => self.chunk(v, out),
        }
    }
}

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
