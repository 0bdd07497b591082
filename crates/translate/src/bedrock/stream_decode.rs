//! ConverseStream events (one per frame, see [`super::event_stream`]) →
//! neutral events.

use std::collections::HashMap;

use serde_json::Value;

use super::event_stream::EXCEPTION_EVENT;
use super::finish_from_stop_reason;
use super::usage::{usage_object, Counts};
use crate::common::unique_token;
use crate::{SseEvent, StreamDecode, StreamEvent, TranslateError};

/// Decodes one ConverseStream answer.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    /// Converse's `contentBlockIndex` of each tool-use block → the IR's
    /// tool-call index.
    tools: HashMap<u64, u32>,
    next_tool: u32,
    usage: Counts,
}

impl StreamDecoder {
    fn ensure_started(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            // Converse names neither the answer nor the model.
            out.push(StreamEvent::Start {
                id: format!("msg_bdrk_{}", unique_token()),
                model: String::new(),
            });
        }
    }

    fn block_start(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let Some(tool) = v.get("start").and_then(|s| s.get("toolUse")) else {
            return;
        };
        let block = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let index = self.next_tool;
        self.next_tool += 1;
        self.tools.insert(block, index);
        let s = |k: &str| tool.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        out.push(StreamEvent::ToolCallStart {
            index,
            id: s("toolUseId"),
            name: s("name"),
        });
    }

    fn block_delta(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let Some(delta) = v.get("delta") else {
            return;
        };
        let str_at = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        if let Some(text) = str_at(delta, "text") {
            out.push(StreamEvent::TextDelta { text });
        } else if let Some(tool) = delta.get("toolUse") {
            let block = v
                .get("contentBlockIndex")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if let (Some(&index), Some(arguments)) = (self.tools.get(&block), str_at(tool, "input"))
            {
                out.push(StreamEvent::ToolCallDelta { index, arguments });
            }
        } else if let Some(r) = delta.get("reasoningContent") {
            if let Some(text) = str_at(r, "text") {
                out.push(StreamEvent::ThinkingDelta { text });
            } else if let Some(signature) = str_at(r, "signature") {
                out.push(StreamEvent::ThinkingSignature { signature });
            } else if let Some(data) = str_at(r, "redactedContent") {
                out.push(StreamEvent::RedactedThinking { data });
            }
        }
    }
}

impl StreamDecode for StreamDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let name = ev.event.as_deref().unwrap_or("");
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| {
            TranslateError::new(format!(
                "bedrock stream: invalid JSON in `{name}` event: {e}"
            ))
        })?;
        match name {
            "messageStart" => self.ensure_started(out),
            "contentBlockStart" => {
                self.ensure_started(out);
                self.block_start(&v, out);
            }
            "contentBlockDelta" => {
                self.ensure_started(out);
                self.block_delta(&v, out);
            }
            "messageStop" => {
                self.ensure_started(out);
                if let Some(r) = v.get("stopReason").and_then(Value::as_str) {
                    out.push(StreamEvent::Finish {
                        reason: finish_from_stop_reason(r),
                    });
                }
            }
            "metadata" => {
                if let Some(u) = usage_object(&v) {
                    self.ensure_started(out);
                    self.usage.update(&Counts::read(u));
                    out.push(StreamEvent::Usage(self.usage.to_ir()));
                }
            }
            EXCEPTION_EVENT => {
                self.ensure_started(out);
                let kind = v.get("type").and_then(Value::as_str).unwrap_or("exception");
                let message = v.get("message").and_then(Value::as_str).unwrap_or(kind);
                out.push(StreamEvent::Error {
                    message: format!("{kind}: {message}"),
                });
            }
            // contentBlockStop and events added later carry nothing here.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FinishReason, Usage};

    fn ev(name: &str, data: &str) -> SseEvent {
        SseEvent {
            event: Some(name.to_owned()),
            data: data.to_owned(),
        }
    }

    #[test]
    fn converse_stream_decodes() {
        let mut d = StreamDecoder::default();
        let mut out = Vec::new();
        for e in [
            ev("messageStart", r#"{"role":"assistant"}"#),
            ev(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
            ),
            ev("contentBlockStop", r#"{"contentBlockIndex":0}"#),
            ev(
                "contentBlockStart",
                r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t1","name":"f"}}}"#,
            ),
            ev(
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"a\":1}"}}}"#,
            ),
            ev("messageStop", r#"{"stopReason":"tool_use"}"#),
            ev(
                "metadata",
                r#"{"usage":{"inputTokens":5,"outputTokens":2,"totalTokens":7},"metrics":{"latencyMs":1}}"#,
            ),
        ] {
            d.decode(&e, &mut out).unwrap();
        }
        assert!(matches!(out[0], StreamEvent::Start { .. }));
        assert_eq!(
            out[1..].to_vec(),
            vec![
                StreamEvent::TextDelta { text: "Hi".into() },
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "t1".into(),
                    name: "f".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: r#"{"a":1}"#.into()
                },
                StreamEvent::Finish {
                    reason: FinishReason::ToolCalls
                },
                StreamEvent::Usage(Usage {
                    input_tokens: 5,
                    output_tokens: 2,
                    ..Usage::default()
                }),
            ]
        );
        let mut out = Vec::new();
        d.decode(
            &ev(
                EXCEPTION_EVENT,
                r#"{"type":"throttlingException","message":"slow"}"#,
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![StreamEvent::Error {
                message: "throttlingException: slow".into()
            }]
        );
    }
}
