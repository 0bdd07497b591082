//! IR → Converse answers: a whole body and ConverseStream frames. The
//! gateway has no Converse endpoint for clients; these exist so the format
//! is whole (an answer of any format can be written as Converse) and so the
//! tests can check the decoders against what an encoder wrote.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::BytesMut;
use serde_json::{json, Map, Value};

use crate::{ChatResponse, ContentPart, FinishReason, StreamEncode, StreamEvent, Usage};

/// IR → Converse `stopReason`.
fn stop_reason(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "content_filtered",
        FinishReason::Other(s) => match s.as_str() {
            "stop_sequence" | "guardrail_intervened" | "model_context_window_exceeded" => s,
            _ => "end_turn",
        },
    }
}

fn usage_json(u: &Usage) -> Value {
    let read = u.cached_input_tokens.unwrap_or(0);
    let write = u.cache_creation_input_tokens.unwrap_or(0);
    let input = u.input_tokens.saturating_sub(read).saturating_sub(write);
    let mut m = Map::new();
    m.insert("inputTokens".into(), json!(input));
    m.insert("outputTokens".into(), json!(u.output_tokens));
    m.insert("totalTokens".into(), json!(u.total()));
    if let Some(r) = u.cached_input_tokens {
        m.insert("cacheReadInputTokens".into(), json!(r));
    }
    if let Some(w) = u.cache_creation_input_tokens {
        m.insert("cacheWriteInputTokens".into(), json!(w));
    }
    Value::Object(m)
}

fn block(part: &ContentPart) -> Option<Value> {
    Some(match part {
        ContentPart::Text { text } => json!({ "text": text }),
        ContentPart::ToolCall {
            id,
            name,
            arguments,
        } => {
            let input = serde_json::from_str::<Value>(arguments)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            json!({"toolUse": {"toolUseId": id, "name": name, "input": input}})
        }
        ContentPart::Thinking { text, signature } => {
            json!({"reasoningContent": {"reasoningText": {"text": text, "signature": signature}}})
        }
        ContentPart::RedactedThinking { data } => {
            json!({"reasoningContent": {"redactedContent": data}})
        }
        ContentPart::Image { .. } | ContentPart::ToolResult { .. } => return None,
    })
}

/// Encodes a whole Converse answer body.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let content: Vec<Value> = resp.content.iter().filter_map(block).collect();
    let mut body = json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(resp.finish_reason.as_ref().unwrap_or(&FinishReason::Stop)),
    });
    if let Some(u) = &resp.usage {
        body["usage"] = usage_json(u);
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Appends one event-stream frame.
fn frame(out: &mut BytesMut, headers: &[(&str, &str)], payload: &Value) {
    let mut m = Message::new(payload.to_string().into_bytes());
    for (k, v) in headers {
        m = m.add_header(Header::new(
            (*k).to_owned(),
            HeaderValue::String((*v).to_owned().into()),
        ));
    }
    // Writing only fails on headers over the format's limits; these are
    // short fixed names.
    let _ = write_message_to(&m, out);
}

fn event(out: &mut BytesMut, name: &str, payload: &Value) {
    frame(
        out,
        &[
            (":message-type", "event"),
            (":event-type", name),
            (":content-type", "application/json"),
        ],
        payload,
    );
}

/// The exception frame that ends a failed ConverseStream.
pub(crate) fn exception_frame(message: &str, out: &mut BytesMut) {
    frame(
        out,
        &[
            (":message-type", "exception"),
            (":exception-type", "internalServerException"),
            (":content-type", "application/json"),
        ],
        &json!({ "message": message }),
    );
}

/// Neutral events → ConverseStream frames.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    started: bool,
    /// The content block open now and its index.
    open: Option<u64>,
    next_block: u64,
    finished: bool,
    usage: Option<Usage>,
}

impl StreamEncoder {
    fn start(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            event(out, "messageStart", &json!({"role": "assistant"}));
        }
    }

    /// The block a delta goes to: the open one unless `new` asks for
    /// another (a tool call always opens its own).
    fn block(&mut self, new: bool, out: &mut BytesMut) -> u64 {
        match self.open {
            Some(i) if !new => i,
            _ => {
                self.close(out);
                let i = self.next_block;
                self.next_block += 1;
                self.open = Some(i);
                i
            }
        }
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some(i) = self.open.take() {
            event(out, "contentBlockStop", &json!({ "contentBlockIndex": i }));
        }
    }
}

impl StreamEncode for StreamEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        self.start(out);
        let delta = |out: &mut BytesMut, i: u64, d: Value| {
            event(
                out,
                "contentBlockDelta",
                &json!({"contentBlockIndex": i, "delta": d}),
            );
        };
        match ev {
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta { text } => {
                let i = self.block(false, out);
                delta(out, i, json!({ "text": text }));
            }
            StreamEvent::ThinkingDelta { text } => {
                let i = self.block(false, out);
                delta(out, i, json!({"reasoningContent": {"text": text}}));
            }
            StreamEvent::ThinkingSignature { signature } => {
                let i = self.block(false, out);
                delta(
                    out,
                    i,
                    json!({"reasoningContent": {"signature": signature}}),
                );
            }
            StreamEvent::RedactedThinking { data } => {
                let i = self.block(true, out);
                delta(
                    out,
                    i,
                    json!({"reasoningContent": {"redactedContent": data}}),
                );
            }
            StreamEvent::ToolCallStart { id, name, .. } => {
                let i = self.block(true, out);
                event(
                    out,
                    "contentBlockStart",
                    &json!({"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": id, "name": name}}}),
                );
            }
            StreamEvent::ToolCallDelta { arguments, .. } => {
                let i = self.block(false, out);
                delta(out, i, json!({"toolUse": {"input": arguments}}));
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Finish { reason } => {
                self.close(out);
                self.finished = true;
                event(
                    out,
                    "messageStop",
                    &json!({"stopReason": stop_reason(reason)}),
                );
            }
            StreamEvent::Error { message } => self.fail(None, message, out),
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.start(out);
        if !self.finished {
            self.encode(
                &StreamEvent::Finish {
                    reason: FinishReason::Stop,
                },
                out,
            );
        }
        if let Some(u) = self.usage.take() {
            event(
                out,
                "metadata",
                &json!({"usage": usage_json(&u), "metrics": {"latencyMs": 0}}),
            );
        }
    }

    fn fail(&mut self, _status: Option<u16>, message: &str, out: &mut BytesMut) {
        exception_frame(message, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::{decode_response, EventStreamParser, StreamDecoder};
    use crate::StreamDecode;

    #[test]
    fn encoders_and_decoders_agree() {
        let resp = ChatResponse {
            content: vec![
                ContentPart::Text { text: "hi".into() },
                ContentPart::ToolCall {
                    id: "t1".into(),
                    name: "f".into(),
                    arguments: r#"{"a":1}"#.into(),
                },
            ],
            finish_reason: Some(FinishReason::ToolCalls),
            usage: Some(Usage {
                input_tokens: 9,
                output_tokens: 2,
                cached_input_tokens: Some(4),
                ..Usage::default()
            }),
            ..ChatResponse::default()
        };
        let back = decode_response(&encode_response(&resp)).unwrap();
        assert_eq!(
            (back.content, back.finish_reason, back.usage),
            (resp.content, resp.finish_reason, resp.usage)
        );

        let events = vec![
            StreamEvent::TextDelta { text: "hi".into() },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "t1".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{}".into(),
            },
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
            },
            StreamEvent::Usage(Usage {
                input_tokens: 3,
                output_tokens: 1,
                ..Usage::default()
            }),
        ];
        let mut enc = StreamEncoder::default();
        let mut bytes = BytesMut::new();
        for e in &events {
            enc.encode(e, &mut bytes);
        }
        enc.finish(&mut bytes);
        let mut frames = Vec::new();
        let mut parser = EventStreamParser::default();
        parser.feed(&bytes, &mut frames).unwrap();
        let mut dec = StreamDecoder::default();
        let mut got = Vec::new();
        for f in &frames {
            dec.decode(f, &mut got).unwrap();
        }
        assert!(matches!(got[0], StreamEvent::Start { .. }));
        assert_eq!(got[1..].to_vec(), events);
    }
}
