//! The stream converter: upstream SSE bytes in, the client's SSE bytes
//! out, through the translate crate's same-format relay or a decoder and
//! encoder pair. Pure: no I/O, its faults typed.

use apiproxy_translate::bedrock::event_stream::FrameError;
use apiproxy_translate::bedrock::EventStreamParser;
use apiproxy_translate::passthrough::{
    self as same_format, PassthroughOptions, PassthroughStream, StreamFault,
};
use apiproxy_translate::{
    self as translate, FinishReason, Format, SseEvent, SseParser, StreamEvent, StreamOptions,
};
use bytes::BytesMut;

use super::fault::RelayFault;
use super::RelayPlan;
use crate::proxy::ctx::RequestCtx;

/// Turns upstream SSE bytes into client SSE bytes.
pub(super) enum Converter {
    /// Same format: the upstream's bytes, with the model renamed and usage
    /// read on the way (the translate crate's same-format relay).
    Passthrough(PassthroughStream),
    Translate {
        parser: Framing,
        decoder: Box<dyn translate::StreamDecode>,
        encoder: Box<dyn translate::StreamEncode>,
        /// Reused for every chunk: parsed events, and neutral events of one.
        events: Vec<SseEvent>,
        neutral: Vec<StreamEvent>,
        saw_event: bool,
        /// The id the answer is given instead of the upstream's (a
        /// Responses answer the gateway keeps: `proxy/responses.rs`).
        response_id: Option<String>,
        /// What the client's stream will end with (a traced request only).
        finish: Option<SeenFinish>,
    },
}

/// What decides the finish reason a translated stream ends with, as the
/// client format's encoder decides it.
pub(super) struct SeenFinish {
    client: Format,
    reason: Option<FinishReason>,
    called_tools: bool,
}

impl SeenFinish {
    fn see(&mut self, e: &StreamEvent) {
        match e {
            StreamEvent::Finish { reason } => self.reason = Some(reason.clone()),
            StreamEvent::ToolCallStart { .. } => self.called_tools = true,
            _ => {}
        }
    }

    /// The reason the client's stream ended with.
    fn told(&self) -> Vec<String> {
        translate::finish::client_finish_reason(
            self.client,
            self.reason.as_ref(),
            self.called_tools,
            true,
        )
        .map(|r| vec![r.to_owned()])
        .unwrap_or_default()
    }
}

/// How the upstream's stream is cut into events: SSE, or Bedrock's binary
/// event-stream frames (each frame an event named by its type).
pub(super) enum Framing {
    Sse(SseParser),
    EventStream(EventStreamParser),
}

impl Framing {
    fn of(upstream: Format) -> Self {
        match upstream {
            Format::Bedrock => Framing::EventStream(EventStreamParser::default()),
            _ => Framing::Sse(SseParser::default()),
        }
    }

    /// Pushes the events `chunk` completes (`None`: the stream ended).
    fn feed(&mut self, chunk: Option<&[u8]>, out: &mut Vec<SseEvent>) -> Result<(), RelayFault> {
        match (self, chunk) {
            (Framing::Sse(p), Some(c)) => p.feed(c, out).map_err(RelayFault::EventTooLarge),
            (Framing::Sse(p), None) => {
                p.finish(out);
                Ok(())
            }
            (Framing::EventStream(p), c) => match c {
                Some(c) => p.feed(c, out),
                None => p.finish(),
            }
            .map_err(|e| match e {
                FrameError::TooLarge(e) => RelayFault::EventTooLarge(e),
                FrameError::Corrupt(_) => RelayFault::StreamUnreadable(e.to_string()),
            }),
        }
    }
}

impl Converter {
    /// With `traced`, the finish reasons are gathered for the trace.
    pub(super) fn new(plan: &RelayPlan<'_>, capturing: bool, traced: bool) -> Self {
        if plan.passthrough {
            Converter::Passthrough(PassthroughStream::new(
                plan.client,
                PassthroughOptions {
                    model_override: plan.model_override.clone(),
                    // The gateway asked for it on the client's behalf.
                    drop_usage_chunk: !plan.include_usage,
                    capture_text: capturing,
                    count_output: true,
                    finish_reasons: traced,
                },
            ))
        } else {
            Converter::Translate {
                parser: Framing::of(plan.upstream),
                decoder: translate::stream_decoder(plan.upstream),
                encoder: translate::stream_encoder(
                    plan.client,
                    StreamOptions {
                        model_override: plan.model_override.clone(),
                        include_usage: plan.include_usage,
                    },
                ),
                events: Vec::new(),
                neutral: Vec::new(),
                saw_event: false,
                response_id: None,
                finish: traced.then_some(SeenFinish {
                    client: plan.client,
                    reason: None,
                    called_tools: false,
                }),
            }
        }
    }

    /// Converts upstream bytes (`None`: the upstream ended the stream),
    /// appending what the client gets to `out`.
    pub(super) fn feed(
        &mut self,
        chunk: Option<&[u8]>,
        ctx: &mut RequestCtx,
        out: &mut BytesMut,
    ) -> Result<(), RelayFault> {
        match self {
            Converter::Passthrough(relay) => {
                let r = match chunk {
                    Some(c) => relay.feed(c, out),
                    None => relay.finish(out),
                };
                if let Some(fill) = ctx.cache_fill.as_mut() {
                    fill.bytes(chunk);
                }
                ctx.usage = relay.usage();
                if ctx.response_id.is_none() {
                    ctx.response_id = relay.response_id().map(str::to_owned);
                }
                ctx.relayed_output_bytes = relay.output_bytes();
                if ctx.answer.is_some() {
                    let text = relay.take_text();
                    ctx.capture(&text);
                }
                r.map_err(|e| match e {
                    StreamFault::TooLarge(e) => RelayFault::EventTooLarge(e),
                    StreamFault::InvalidJson(_) => RelayFault::StreamUnreadable(e.to_string()),
                })?;
                if chunk.is_none() {
                    if relay.events() == 0 {
                        return Err(RelayFault::NoEvent);
                    }
                    // Known only for a stream that ended, not one cut short.
                    if let Some(f) = relay.take_finish_reasons() {
                        ctx.finish_reasons = f.into_vec();
                    }
                }
                Ok(())
            }
            Converter::Translate {
                parser,
                decoder,
                encoder,
                events,
                neutral,
                saw_event,
                response_id,
                finish,
            } => {
                events.clear();
                parser.feed(chunk, events)?;
                for ev in events.iter() {
                    *saw_event = true;
                    neutral.clear();
                    decoder
                        .decode(ev, neutral)
                        .map_err(|e| RelayFault::StreamUnreadable(e.message))?;
                    for e in neutral.iter_mut() {
                        if let (StreamEvent::Start { id, .. }, Some(ours)) =
                            (&mut *e, &*response_id)
                        {
                            id.clone_from(ours);
                        }
                        ctx.relayed_output_bytes += same_format::output_bytes(e);
                        match e {
                            // Decoders report the running total.
                            StreamEvent::Usage(u) => ctx.usage = Some(*u),
                            StreamEvent::TextDelta { text } => ctx.capture(text),
                            _ => {}
                        }
                        if let Some(fill) = ctx.cache_fill.as_mut() {
                            fill.event(e);
                        }
                        if let Some(f) = finish.as_mut() {
                            f.see(e);
                        }
                        encoder.encode(e, out);
                    }
                }
                if chunk.is_none() {
                    if !*saw_event {
                        return Err(RelayFault::NoEvent);
                    }
                    encoder.finish(out);
                    if let Some(f) = finish.as_ref() {
                        ctx.finish_reasons = f.told();
                    }
                }
                Ok(())
            }
        }
    }

    /// Gives a translated answer the id `id` instead of the upstream's.
    pub(super) fn set_response_id(&mut self, id: String) {
        if let Converter::Translate { response_id, .. } = self {
            *response_id = Some(id);
        }
    }

    /// The stream breaks after it started: one error event and the end.
    pub(super) fn fail(&mut self, status: Option<u16>, message: &str, out: &mut BytesMut) {
        match self {
            Converter::Translate { encoder, .. } => encoder.fail(status, message, out),
            Converter::Passthrough(relay) => relay.fail(status, message, out),
        }
    }
}
