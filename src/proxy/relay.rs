//! Relaying a successful upstream answer to the client: whole bodies and SSE
//! streams, passed through (same format) or translated event by event.
//!
//! Nothing is written to the client until the upstream has produced the
//! first piece of the answer, so an upstream that stalls or breaks before
//! that can still be replaced by the next candidate.

use std::time::Instant;

use apiproxy_translate::{
    self as translate, Format, SseEvent, SseParser, StreamEvent, StreamOptions,
};
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde_json::Value;

use super::ctx::RequestCtx;
use super::passthrough::{merge_usage, model_key, rewrite_string_field, usage_of, usage_of_json};
use super::respond::{self, Headers};
use crate::metrics;
use crate::upstream::http::{Incoming, SendError};

/// Largest non-streaming upstream body accepted.
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

/// How the answer must be shaped.
pub struct RelayPlan<'a> {
    pub client: Format,
    pub upstream: Format,
    pub stream: bool,
    /// The request body went through untranslated.
    pub passthrough: bool,
    /// The logical model name to show instead of the upstream's.
    pub model_override: Option<String>,
    /// An OpenAI chat client asked for the usage chunk.
    pub include_usage: bool,
    /// The upstream's keys: an upstream may echo one in a stream (an
    /// in-band error naming the key), and none may reach the client.
    pub provider_keys: &'a [String],
}

/// How relaying ended.
pub enum Outcome {
    Done,
    /// The client went away; the upstream request was dropped with it.
    ClientGone,
    /// The upstream failed. If nothing was written yet (`ctx.first_byte` is
    /// `None`) the caller may try the next candidate; otherwise the stream
    /// was already closed with an error event.
    Failed {
        reason: String,
        status: Option<u16>,
    },
}

pub async fn relay(
    session: &mut Session,
    ctx: &mut RequestCtx,
    resp: &mut Incoming,
    plan: &RelayPlan<'_>,
    headers: &Headers,
) -> Outcome {
    let sse = resp
        .header_str("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if plan.stream && sse {
        stream(session, ctx, resp, plan, headers).await
    } else if plan.stream {
        // Some upstreams answer a streaming request with one JSON body.
        Outcome::Failed {
            reason: "upstream answered a streaming request without an event stream".into(),
            status: None,
        }
    } else {
        whole(session, ctx, resp, plan, headers).await
    }
}

/// Reads from the upstream unless the client leaves first.
async fn next_chunk(session: &mut Session, resp: &mut Incoming, ctx: &mut RequestCtx) -> Step {
    let waited = Instant::now();
    let step = tokio::select! {
        r = resp.chunk() => match r {
            Ok(Some(c)) => Step::Chunk(c),
            Ok(None) => Step::End,
            Err(e) => Step::Error(e),
        },
        _ = super::client_gone(session) => Step::ClientGone,
    };
    ctx.upstream_wait += waited.elapsed();
    step
}

enum Step {
    Chunk(Bytes),
    End,
    Error(SendError),
    ClientGone,
}

async fn whole(
    session: &mut Session,
    ctx: &mut RequestCtx,
    resp: &mut Incoming,
    plan: &RelayPlan<'_>,
    headers: &Headers,
) -> Outcome {
    let mut body = BytesMut::new();
    loop {
        match next_chunk(session, resp, ctx).await {
            Step::Chunk(c) => {
                if body.len() + c.len() > MAX_RESPONSE_BODY {
                    return failed(
                        format!("response body larger than {MAX_RESPONSE_BODY} bytes"),
                        None,
                    );
                }
                body.extend_from_slice(&c);
            }
            Step::End => break,
            Step::Error(e) => return failed(e.to_string(), timeout_status(&e)),
            Step::ClientGone => return gone(ctx),
        }
    }
    let out = if plan.passthrough {
        if ctx.answer.is_some() {
            if let Ok(r) = translate::decode_response(plan.upstream, &body) {
                capture_text(ctx, &r);
            }
        }
        match &plan.model_override {
            Some(m) => {
                let mut v: Value = match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => return failed(format!("upstream answered invalid JSON: {e}"), None),
                };
                ctx.usage = usage_of(plan.upstream, &v);
                if let Some(obj) = v.as_object_mut() {
                    let key = model_key(plan.client);
                    if obj.contains_key(key) {
                        obj.insert(key.into(), Value::String(m.clone()));
                    }
                }
                match serde_json::to_vec(&v) {
                    Ok(b) => Bytes::from(b),
                    Err(e) => return failed(format!("re-encoding the response: {e}"), None),
                }
            }
            None => {
                // Only the usage is needed: read it without building the
                // whole answer (the body is still checked to be JSON).
                ctx.usage = match usage_of_json(plan.upstream, &body) {
                    Ok(u) => u,
                    Err(e) => return failed(format!("upstream answered invalid JSON: {e}"), None),
                };
                body.freeze()
            }
        }
    } else {
        let mut r = match translate::decode_response(plan.upstream, &body) {
            Ok(r) => r,
            Err(e) => return failed(format!("upstream answer could not be read: {e}"), None),
        };
        ctx.usage = r.usage;
        capture_text(ctx, &r);
        if let Some(m) = &plan.model_override {
            r.model.clone_from(m);
        }
        Bytes::from(translate::encode_response(plan.client, &r))
    };
    ctx.status = 200;
    ctx.first_byte = Some(ctx.start.elapsed());
    let headers = &crate::pricing::with_debug_cost(headers, ctx.cost_usd());
    match respond::json(session, 200, out, headers).await {
        Ok(()) => Outcome::Done,
        Err(_) => gone(ctx),
    }
}

/// Keeps the answer's text for the context store (when a session asked).
fn capture_text(ctx: &mut RequestCtx, r: &translate::ChatResponse) {
    if ctx.answer.is_none() {
        return;
    }
    for part in &r.content {
        if let translate::ContentPart::Text { text } = part {
            ctx.capture(text);
        }
    }
}

fn failed(reason: String, status: Option<u16>) -> Outcome {
    Outcome::Failed { reason, status }
}

fn gone(ctx: &mut RequestCtx) -> Outcome {
    ctx.client_gone = true;
    if ctx.status == 0 {
        ctx.status = 499;
    }
    Outcome::ClientGone
}

fn timeout_status(e: &SendError) -> Option<u16> {
    matches!(e, SendError::Timeout).then_some(504)
}

/// Turns upstream SSE events into client SSE bytes.
enum Converter {
    /// Same format: events re-emitted as they came, with the model renamed
    /// and usage read on the way; decoded only when the answer's text is
    /// kept for a session.
    Passthrough {
        capture: Option<(Box<dyn translate::StreamDecode>, Vec<StreamEvent>)>,
    },
    Translate {
        decoder: Box<dyn translate::StreamDecode>,
        encoder: Box<dyn translate::StreamEncode>,
        events: Vec<StreamEvent>,
    },
}

impl Converter {
    fn new(plan: &RelayPlan<'_>, capturing: bool) -> Self {
        if plan.passthrough {
            Converter::Passthrough {
                capture: capturing.then(|| (translate::stream_decoder(plan.upstream), Vec::new())),
            }
        } else {
            Converter::Translate {
                decoder: translate::stream_decoder(plan.upstream),
                encoder: translate::stream_encoder(
                    plan.client,
                    StreamOptions {
                        model_override: plan.model_override.clone(),
                        include_usage: plan.include_usage,
                    },
                ),
                events: Vec::new(),
            }
        }
    }

    /// Converts one upstream event, appending to `out`.
    fn event(
        &mut self,
        ev: &SseEvent,
        plan: &RelayPlan<'_>,
        ctx: &mut RequestCtx,
        out: &mut BytesMut,
    ) -> Result<(), String> {
        match self {
            Converter::Passthrough { capture } => {
                if let Some((decoder, events)) = capture {
                    events.clear();
                    if decoder.decode(ev, events).is_ok() {
                        for e in events.iter() {
                            if let StreamEvent::TextDelta { text } = e {
                                ctx.capture(text);
                            }
                        }
                    }
                }
                passthrough_event(ev, plan, ctx, out);
                Ok(())
            }
            Converter::Translate {
                decoder,
                encoder,
                events,
            } => {
                events.clear();
                decoder.decode(ev, events).map_err(|e| e.message)?;
                for e in events.iter() {
                    match e {
                        StreamEvent::Usage(u) => ctx.usage = Some(merge_usage(ctx.usage, *u)),
                        StreamEvent::TextDelta { text } => ctx.capture(text),
                        _ => {}
                    }
                    encoder.encode(e, out);
                }
                Ok(())
            }
        }
    }

    /// The upstream stream ended normally.
    fn finish(&mut self, out: &mut BytesMut) {
        if let Converter::Translate { encoder, .. } = self {
            encoder.finish(out);
        }
    }

    /// The stream breaks after it started: one error event and the end.
    fn fail(&mut self, client: Format, status: Option<u16>, message: &str, out: &mut BytesMut) {
        match self {
            Converter::Translate { encoder, .. } => encoder.fail(status, message, out),
            Converter::Passthrough { .. } => {
                translate::stream_error_event(client, status, message, out);
                if client == Format::OpenAiChat {
                    translate::sse::write_data(out, b"[DONE]");
                }
            }
        }
    }
}

fn passthrough_event(
    ev: &SseEvent,
    plan: &RelayPlan<'_>,
    ctx: &mut RequestCtx,
    out: &mut BytesMut,
) {
    let data = ev.data.as_str();
    if data.contains("\"usage") {
        if let Ok(v) = serde_json::from_str::<Value>(data) {
            if let Some(u) = usage_of(plan.upstream, &v) {
                ctx.usage = Some(merge_usage(ctx.usage, u));
                // The usage-only chunk the gateway asked for on the client's behalf.
                let usage_only = plan.client == Format::OpenAiChat
                    && v.get("choices")
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty);
                if usage_only && !plan.include_usage {
                    return;
                }
            }
        }
    }
    let renamed = plan
        .model_override
        .as_deref()
        .and_then(|m| rewrite_string_field(data, model_key(plan.client), m));
    let data = renamed.as_deref().unwrap_or(data);
    match (&ev.event, plan.client) {
        (Some(name), f) if f != Format::Gemini => {
            translate::sse::write_event(out, name, data.as_bytes())
        }
        _ => translate::sse::write_data(out, data.as_bytes()),
    }
}

async fn stream(
    session: &mut Session,
    ctx: &mut RequestCtx,
    resp: &mut Incoming,
    plan: &RelayPlan<'_>,
    headers: &Headers,
) -> Outcome {
    let mut parser = SseParser::default();
    let mut conv = Converter::new(plan, ctx.answer.is_some());
    let mut events = Vec::new();
    let mut out = BytesMut::new();
    let mut started = false;
    let mut saw_event = false;

    let result: Result<(), (String, Option<u16>)> = loop {
        let step = next_chunk(session, resp, ctx).await;
        let (chunk, end) = match step {
            Step::Chunk(c) => (c, false),
            Step::End => (Bytes::new(), true),
            Step::Error(e) => break Err((e.to_string(), timeout_status(&e))),
            Step::ClientGone => {
                end_stream_gauge(ctx);
                return gone(ctx);
            }
        };
        events.clear();
        if let Err(e) = parser.feed(&chunk, &mut events) {
            break Err((e.to_string(), None));
        }
        if end {
            parser.finish(&mut events);
        }
        let mut bad = None;
        for ev in &events {
            saw_event = true;
            if let Err(e) = conv.event(ev, plan, ctx, &mut out) {
                bad = Some(e);
                break;
            }
        }
        if let Some(e) = bad {
            break Err((format!("upstream stream could not be read: {e}"), None));
        }
        if end {
            if !saw_event {
                break Err(("upstream closed the stream without an event".into(), None));
            }
            conv.finish(&mut out);
        }
        if !out.is_empty() || end {
            if !started {
                started = true;
                if let Err(e) = start_stream(session, ctx, headers).await {
                    log::debug!("client write failed: {e}");
                    return gone(ctx);
                }
            }
            scrub_keys(&mut out, plan.provider_keys);
            let data = out.split().freeze();
            if session.write_response_body(Some(data), end).await.is_err() {
                end_stream_gauge(ctx);
                return gone(ctx);
            }
        }
        if end {
            break Ok(());
        }
    };
    match result {
        Ok(()) => {
            end_stream_gauge(ctx);
            Outcome::Done
        }
        Err((reason, status)) if !started => Outcome::Failed { reason, status },
        Err((reason, status)) => {
            let reason = scrub_str(&reason, plan.provider_keys);
            log::warn!(
                "stream from {} broke after it started: {reason}",
                ctx.provider
            );
            conv.fail(
                plan.client,
                status,
                &format!("upstream stream failed: {reason}"),
                &mut out,
            );
            scrub_keys(&mut out, plan.provider_keys);
            let _ = session
                .write_response_body(Some(out.split().freeze()), true)
                .await;
            end_stream_gauge(ctx);
            Outcome::Failed { reason, status }
        }
    }
}

/// Replaces every provider key in `out` (whole SSE events, so a key is
/// never split across two calls) with `***`.
fn scrub_keys(out: &mut BytesMut, keys: &[String]) {
    for key in keys.iter().map(String::as_bytes).filter(|k| k.len() >= 4) {
        if find(out, key).is_none() {
            continue;
        }
        let mut clean = BytesMut::with_capacity(out.len());
        let mut rest = &out[..];
        while let Some(i) = find(rest, key) {
            clean.extend_from_slice(&rest[..i]);
            clean.extend_from_slice(b"***");
            rest = &rest[i + key.len()..];
        }
        clean.extend_from_slice(rest);
        *out = clean;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `s` with every provider key replaced by `***`.
fn scrub_str(s: &str, keys: &[String]) -> String {
    keys.iter()
        .filter(|k| k.len() >= 4)
        .fold(s.to_owned(), |acc, k| acc.replace(k.as_str(), "***"))
}

async fn start_stream(
    session: &mut Session,
    ctx: &mut RequestCtx,
    headers: &Headers,
) -> pingora::Result<()> {
    ctx.status = 200;
    ctx.first_byte = Some(ctx.start.elapsed());
    ctx.inflight_stream = true;
    metrics::INFLIGHT_STREAMS.inc();
    let h = respond::header(200, "text/event-stream", None, headers)?;
    session.write_response_header(h, false).await
}

fn end_stream_gauge(ctx: &mut RequestCtx) {
    if ctx.inflight_stream {
        ctx.inflight_stream = false;
        metrics::INFLIGHT_STREAMS.dec();
    }
}
