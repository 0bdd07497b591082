//! A whole answer and a stream of it, both ways, in the neutral
//! representation: [`AnswerBuilder`] gathers a streamed answer into one
//! [`ChatResponse`], and [`answer_events`] turns a whole answer into the
//! stream events that tell it. With them a stored whole answer can be given
//! to a streaming client (through the client format's stream encoder), and
//! a streamed one stored whole (the gateway's response cache).

use crate::{ChatResponse, ContentPart, StreamEvent};

/// The stream events that tell `resp`, in order: the start, its content
/// parts, the usage, the finish. Fed to a format's stream encoder (and its
/// `finish`), they make that format's stream of the answer.
pub fn answer_events(resp: &ChatResponse) -> Vec<StreamEvent> {
    let mut events = Vec::with_capacity(resp.content.len() + 3);
    events.push(StreamEvent::Start {
        id: resp.id.clone(),
        model: resp.model.clone(),
    });
    let mut tool_index = 0u32;
    for part in &resp.content {
        match part {
            ContentPart::Text { text } => {
                events.push(StreamEvent::TextDelta { text: text.clone() })
            }
            ContentPart::Thinking { text, signature } => {
                events.push(StreamEvent::ThinkingDelta { text: text.clone() });
                if let Some(signature) = signature {
                    events.push(StreamEvent::ThinkingSignature {
                        signature: signature.clone(),
                    });
                }
            }
            ContentPart::RedactedThinking { data } => {
                events.push(StreamEvent::RedactedThinking { data: data.clone() })
            }
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            } => {
                events.push(StreamEvent::ToolCallStart {
                    index: tool_index,
                    id: id.clone(),
                    name: name.clone(),
                });
                events.push(StreamEvent::ToolCallDelta {
                    index: tool_index,
                    arguments: arguments.clone(),
                });
                tool_index += 1;
            }
            // Parts only requests carry.
            ContentPart::Image { .. } | ContentPart::ToolResult { .. } => {}
        }
    }
    if let Some(u) = resp.usage {
        events.push(StreamEvent::Usage(u));
    }
    if let Some(reason) = &resp.finish_reason {
        events.push(StreamEvent::Finish {
            reason: reason.clone(),
        });
    }
    events
}

/// Gathers a streamed answer's events into the whole answer.
#[derive(Debug, Default)]
pub struct AnswerBuilder {
    resp: ChatResponse,
    /// Stream index of each tool call → its place in `resp.content`.
    tools: Vec<(u32, usize)>,
    finished: bool,
    failed: bool,
}

impl AnswerBuilder {
    /// Adds one event.
    pub fn push(&mut self, ev: &StreamEvent) {
        let content = &mut self.resp.content;
        match ev {
            StreamEvent::Start { id, model } => {
                self.resp.id.clone_from(id);
                self.resp.model.clone_from(model);
            }
            StreamEvent::TextDelta { text } => match content.last_mut() {
                Some(ContentPart::Text { text: t }) => t.push_str(text),
                _ => content.push(ContentPart::Text { text: text.clone() }),
            },
            StreamEvent::ThinkingDelta { text } => match content.last_mut() {
                Some(ContentPart::Thinking {
                    text: t,
                    signature: None,
                }) => t.push_str(text),
                _ => content.push(ContentPart::Thinking {
                    text: text.clone(),
                    signature: None,
                }),
            },
            StreamEvent::ThinkingSignature { signature } => match content.last_mut() {
                Some(ContentPart::Thinking { signature: s, .. }) => *s = Some(signature.clone()),
                _ => content.push(ContentPart::Thinking {
                    text: String::new(),
                    signature: Some(signature.clone()),
                }),
            },
            StreamEvent::RedactedThinking { data } => {
                content.push(ContentPart::RedactedThinking { data: data.clone() })
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.tools.push((*index, content.len()));
                content.push(ContentPart::ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                });
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let at = self.tools.iter().rev().find(|(i, _)| i == index);
                match at.and_then(|(_, at)| content.get_mut(*at)) {
                    Some(ContentPart::ToolCall { arguments: a, .. }) => a.push_str(arguments),
                    // Arguments of a call never started: the answer is not whole.
                    _ => self.failed = true,
                }
            }
            StreamEvent::Usage(u) => self.resp.usage = Some(*u),
            StreamEvent::Finish { reason } => {
                self.resp.finish_reason = Some(reason.clone());
                self.finished = true;
            }
            StreamEvent::Error { .. } => self.failed = true,
        }
    }

    /// Marks the stream as broken (it cannot be told whole any more).
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// Whether [`AnswerBuilder::finish`] gives an answer (checked before
    /// it, which moves the answer being built).
    pub fn is_whole(&self) -> bool {
        self.finished && !self.failed
    }

    /// The whole answer: `None` unless the stream said how the model
    /// stopped and reported no error (a cut or failed stream is no answer).
    pub fn finish(self) -> Option<ChatResponse> {
        self.is_whole().then_some(self.resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FinishReason, Usage};

    fn answer() -> ChatResponse {
        ChatResponse {
            id: "r1".into(),
            model: "m".into(),
            created: 0,
            content: vec![
                ContentPart::Thinking {
                    text: "hmm".into(),
                    signature: Some("sig".into()),
                },
                ContentPart::Text {
                    text: "hello".into(),
                },
                ContentPart::ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                },
                ContentPart::ToolCall {
                    id: "c2".into(),
                    name: "g".into(),
                    arguments: "{}".into(),
                },
            ],
            finish_reason: Some(FinishReason::ToolCalls),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 5,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_whole_answer_told_as_a_stream_gathers_back_into_itself() {
        let mut b = AnswerBuilder::default();
        for ev in answer_events(&answer()) {
            b.push(&ev);
        }
        assert_eq!(b.finish(), Some(answer()));
    }

    #[test]
    fn deltas_join_and_interleaved_tool_arguments_find_their_call() {
        let mut b = AnswerBuilder::default();
        let evs = [
            StreamEvent::Start {
                id: "r".into(),
                model: "m".into(),
            },
            StreamEvent::TextDelta { text: "he".into() },
            StreamEvent::TextDelta { text: "llo".into() },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "a".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "b".into(),
                name: "g".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"x\":".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{}".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "1}".into(),
            },
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
            },
        ];
        for ev in &evs {
            b.push(ev);
        }
        let r = b.finish().expect("finished");
        assert_eq!(
            r.content,
            vec![
                ContentPart::Text {
                    text: "hello".into()
                },
                ContentPart::ToolCall {
                    id: "a".into(),
                    name: "f".into(),
                    arguments: "{\"x\":1}".into()
                },
                ContentPart::ToolCall {
                    id: "b".into(),
                    name: "g".into(),
                    arguments: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn a_cut_or_failed_stream_is_no_answer() {
        let mut cut = AnswerBuilder::default();
        cut.push(&StreamEvent::TextDelta { text: "hi".into() });
        assert_eq!(cut.finish(), None, "no finish");
        let mut failed = AnswerBuilder::default();
        failed.push(&StreamEvent::TextDelta { text: "hi".into() });
        failed.push(&StreamEvent::Error {
            message: "boom".into(),
        });
        failed.push(&StreamEvent::Finish {
            reason: FinishReason::Stop,
        });
        assert_eq!(failed.finish(), None, "an error event");
        let mut stray = AnswerBuilder::default();
        stray.push(&StreamEvent::ToolCallDelta {
            index: 3,
            arguments: "{}".into(),
        });
        stray.push(&StreamEvent::Finish {
            reason: FinishReason::Stop,
        });
        assert_eq!(stray.finish(), None, "arguments of no call");
    }

    #[test]
    fn a_stored_answer_reads_back_the_same() {
        let json = serde_json::to_vec(&answer()).expect("serializes");
        let back: ChatResponse = serde_json::from_slice(&json).expect("reads back");
        assert_eq!(back, answer());
    }
}
