//! Provider side of streams: Gemini SSE chunks (`alt=sse`) → neutral
//! [`StreamEvent`]s.

use serde_json::{Map, Value};

use super::parts::{decode_parts, IdMode};
use super::response::{error_message, first_candidate, prompt_block_reason, take_string};
use super::usage::Counts;
use super::{decode_finish, err, get_any, unique_token, want_object, Path};
use crate::{
    ContentPart, FinishReason, SseEvent, StreamDecode, StreamEvent, TranslateError, Usage,
};

/// Gemini SSE (`alt=sse`): every `data:` is a whole GenerateContentResponse.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    token: String,
    tool_index: u32,
    finished: bool,
    /// Usage reported so far, and what was last emitted of it.
    usage: Counts,
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

    /// Reads the chunk's usage report; a changed total is passed on.
    fn usage(&mut self, m: &Map<String, Value>, out: &mut Vec<StreamEvent>) {
        let reported = get_any(m, "usageMetadata", "usage_metadata").filter(|u| u.is_object());
        if let Some(u) = reported {
            self.usage.update(&Counts::read(u));
            let u = self.usage.to_ir();
            if self.last_usage != Some(u) {
                self.last_usage = Some(u);
                out.push(StreamEvent::Usage(u));
            }
        }
    }

    fn chunk(&mut self, v: Value, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let mut m = want_object(v, "gemini stream chunk")?;
        if let Some(e) = m.get("error") {
            let message = error_message(e);
            self.start(&mut Map::new(), out);
            self.usage(&m, out);
            out.push(StreamEvent::Error { message });
            return Ok(());
        }
        self.start(&mut m, out);
        // Usage before the chunk's content: Gemini reports the prompt size
        // on its first chunk, and an Anthropic client's `message_start`
        // (written with the first content) can only carry what came before.
        self.usage(&m, out);
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
