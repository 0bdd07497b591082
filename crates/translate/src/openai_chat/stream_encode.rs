//! Client side of streams: neutral [`StreamEvent`]s → `chat.completion.chunk`
//! SSE events, ending with `[DONE]`.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::wire::UsageOut;
use super::{finish_to_str, now_secs, synth_id};
use crate::error::stream_error_event;
use crate::{sse, FinishReason, Format, StreamEncode, StreamEvent, StreamOptions, Usage};

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ChunkChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDeltaOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDeltaOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FnDeltaOut<'a>,
}

#[derive(Serialize)]
struct FnDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Writes `chat.completion.chunk` SSE events for a client.
pub struct StreamEncoder {
    opts: StreamOptions,
    id: String,
    model: String,
    created: u64,
    started: bool,
    finished: bool,
    errored: bool,
    done: bool,
    called_tools: bool,
    /// Tool calls started whose arguments never came: they get `{}` before
    /// the finish, as clients parse the accumulated text as JSON.
    argless: Vec<u32>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new(opts: StreamOptions) -> Self {
        Self {
            opts,
            id: String::new(),
            model: String::new(),
            created: 0,
            started: false,
            finished: false,
            errored: false,
            done: false,
            called_tools: false,
            argless: Vec::new(),
            usage: None,
        }
    }

    fn args_delta(&self, index: u32, arguments: &str, out: &mut BytesMut) {
        self.write_delta(
            out,
            DeltaOut {
                tool_calls: Some([ToolCallDeltaOut {
                    index,
                    id: None,
                    kind: None,
                    function: FnDeltaOut {
                        name: None,
                        arguments,
                    },
                }]),
                ..DeltaOut::default()
            },
            None,
        );
    }

    fn write_chunk(
        &self,
        out: &mut BytesMut,
        choices: &[ChunkChoiceOut<'_>],
        usage: Option<UsageOut>,
    ) {
        let chunk = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        out.put_slice(b"data: ");
        // Serializing plain structs into memory cannot fail.
        let _ = serde_json::to_writer(BufMut::writer(&mut *out), &chunk);
        out.put_slice(b"\n\n");
    }

    fn write_delta(&self, out: &mut BytesMut, delta: DeltaOut<'_>, finish_reason: Option<&str>) {
        self.write_chunk(
            out,
            &[ChunkChoiceOut {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            None,
        );
    }

    /// Writes the role chunk, once (with a synthesized id if the upstream's
    /// start never came).
    fn ensure_started(&mut self, id: Option<&str>, model: Option<&str>, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = match id {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => synth_id("chatcmpl-"),
        };
        self.model = match (&self.opts.model_override, model) {
            (Some(m), _) => m.clone(),
            (None, Some(m)) => m.to_owned(),
            (None, None) => String::new(),
        };
        self.created = now_secs();
        self.write_delta(
            out,
            DeltaOut {
                role: Some("assistant"),
                content: Some(""),
                ..DeltaOut::default()
            },
            None,
        );
    }

    fn write_finish(&mut self, reason: Option<&FinishReason>, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.finished = true;
        for index in std::mem::take(&mut self.argless) {
            self.args_delta(index, "{}", out);
        }
        let r = finish_to_str(reason, self.called_tools);
        self.write_delta(out, DeltaOut::default(), Some(r));
    }
}

impl StreamEncode for StreamEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if let StreamEvent::Start { id, model } = ev {
            self.ensure_started(Some(id.as_str()), Some(model.as_str()), out);
            return;
        }
        self.ensure_started(None, None, out);
        match ev {
            // Opaque Anthropic data: no other format can carry it.
            StreamEvent::RedactedThinking { .. } => {}
            StreamEvent::Start { .. } | StreamEvent::ThinkingSignature { .. } => {}
            StreamEvent::TextDelta { text } => {
                if !text.is_empty() {
                    self.write_delta(
                        out,
                        DeltaOut {
                            content: Some(text),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                }
            }
            StreamEvent::ThinkingDelta { text } => {
                if !text.is_empty() {
                    self.write_delta(
                        out,
                        DeltaOut {
                            reasoning_content: Some(text),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.called_tools = true;
                self.argless.push(*index);
                self.write_delta(
                    out,
                    DeltaOut {
                        tool_calls: Some([ToolCallDeltaOut {
                            index: *index,
                            id: Some(id),
                            kind: Some("function"),
                            function: FnDeltaOut {
                                name: Some(name),
                                arguments: "",
                            },
                        }]),
                        ..DeltaOut::default()
                    },
                    None,
                );
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if !arguments.is_empty() {
                    self.argless.retain(|i| i != index);
                    self.args_delta(*index, arguments, out);
                }
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Finish { reason } => self.write_finish(Some(reason), out),
            StreamEvent::Error { message } => {
                self.errored = true;
                stream_error_event(Format::OpenAiChat, None, message, out);
            }
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.ensure_started(None, None, out);
        if !self.errored {
            self.write_finish(None, out);
            if self.opts.include_usage {
                if let Some(u) = self.usage {
                    self.write_chunk(out, &[], Some(UsageOut::from(&u)));
                }
            }
        }
        sse::write_data(out, b"[DONE]");
        self.done = true;
    }

    fn fail(&mut self, status: Option<u16>, message: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        stream_error_event(Format::OpenAiChat, status, message, out);
        sse::write_data(out, b"[DONE]");
        self.errored = true;
        self.done = true;
    }
}
