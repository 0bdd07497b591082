//! Relaying a successful upstream answer to the client: whole bodies and SSE
//! streams, passed through (same format) or translated event by event.
//!
//! Nothing of an answer is written to the client until the upstream has
//! produced its first piece, so an upstream that stalls or breaks before
//! that can still be replaced by the next candidate. A streaming client
//! that waits gets keep-alives meanwhile (`server.sse_keepalive_s`): the
//! event stream is then open, and failover still works until the first
//! real byte; after it, or when every candidate failed, the stream ends
//! with one error event in the client's format.

use std::future::Future;
use std::time::{Duration, Instant};

use apiproxy_translate::passthrough::{
    self as same_format, passthrough_body, passthrough_body_with_finish,
};
use apiproxy_translate::{self as translate, Format};
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::respond::{self, Headers};
use super::upstream_error;
use crate::error::GatewayError;
use crate::metrics;
use crate::upstream::http::{Incoming, SendError};
use crate::upstream::kind::Kind;

mod cached;
mod convert;
mod fault;

pub use cached::{cached, Replay};
use convert::Converter;
pub use fault::RelayFault;

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
    /// Keep-alive interval for a streaming client; `None`: none.
    pub keepalive: Option<Duration>,
    /// The upstream's kind: it may call a good answer a refusal (Azure's
    /// content filter).
    pub kind: &'static dyn Kind,
}

/// How relaying ended.
pub enum Outcome {
    Done,
    /// The client went away; the upstream request was dropped with it.
    ClientGone,
    /// The upstream failed. If nothing was written yet (`ctx.first_byte` is
    /// `None`) the caller may try the next candidate; otherwise the stream
    /// was already closed with an error event.
    Failed(RelayFault),
}

pub async fn relay(
    session: &mut Session,
    ctx: &mut RequestCtx,
    resp: &mut Incoming,
    plan: &RelayPlan<'_>,
    headers: &Headers,
) -> Outcome {
    if let Some(enc) = resp
        .header_str("content-encoding")
        .filter(|e| !e.trim().eq_ignore_ascii_case("identity"))
    {
        // The gateway never asks for a compressed answer: one that comes
        // anyway cannot be read (nor passed on: the client did not ask either).
        return Outcome::Failed(RelayFault::Compressed(enc.to_owned()));
    }
    if let Some(fill) = ctx.cache_fill.as_mut() {
        // A new answer: whatever an earlier attempt left is dropped.
        fill.start(plan.upstream, plan.stream && plan.passthrough);
    }
    let sse = resp
        .header_str("content-type")
        .is_some_and(|t| t.starts_with(plan.upstream.stream_content_type()));
    if plan.stream && sse {
        stream(session, ctx, resp, plan, headers).await
    } else if plan.stream {
        // Some upstreams answer a streaming request with one JSON body.
        Outcome::Failed(RelayFault::NotAStream)
    } else {
        whole(session, ctx, resp, plan, headers).await
    }
}

/// Reads from the upstream unless the client leaves first, keeping a
/// quiet stream alive meanwhile.
async fn next_chunk(
    session: &mut Session,
    resp: &mut Incoming,
    ctx: &mut RequestCtx,
    plan: &RelayPlan<'_>,
    headers: &Headers,
) -> Step {
    let waited = Instant::now();
    let step = match wait_keeping_alive(
        session,
        ctx,
        headers,
        plan.client,
        plan.keepalive,
        resp.chunk(),
    )
    .await
    {
        Waited::Ready(Ok(Some(c))) => Step::Chunk(c),
        Waited::Ready(Ok(None)) => Step::End,
        Waited::Ready(Err(e)) => Step::Error(e),
        Waited::ClientGone => Step::ClientGone,
    };
    ctx.upstream_wait += waited.elapsed();
    step
}

/// How waiting on an upstream ended.
pub enum Waited<T> {
    Ready(T),
    /// The client left (or a keep-alive could not be written to it).
    ClientGone,
}

/// Awaits `fut` unless the client leaves first. With `every`, a client
/// that got no byte for that long gets a keep-alive (the event stream is
/// opened for it if need be), and another one every `every` after.
pub async fn wait_keeping_alive<F: Future>(
    session: &mut Session,
    ctx: &mut RequestCtx,
    headers: &Headers,
    client: Format,
    every: Option<Duration>,
    fut: F,
) -> Waited<F::Output> {
    let mut fut = std::pin::pin!(fut);
    loop {
        let due = every.map(|e| ctx.last_write.unwrap_or(ctx.start) + e);
        let quiet = async {
            match due {
                Some(d) => crate::timer::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            v = &mut fut => return Waited::Ready(v),
            _ = super::client_gone(session) => return Waited::ClientGone,
            _ = quiet => {}
        }
        let ka = Bytes::from_static(same_format::keepalive(client));
        // Boxed: a keep-alive is rare, and every open stream's future
        // would otherwise carry the size of writing one.
        let written = Box::pin(async {
            open_stream(session, ctx, headers).await.is_ok()
                && session.write_response_body(Some(ka), false).await.is_ok()
        })
        .await;
        if !written {
            return Waited::ClientGone;
        }
        ctx.last_write = Some(Instant::now());
    }
}

/// Ends a request whose event stream is already open (keep-alives went out)
/// with `e` as one error event in the client's format, and `Ok`; otherwise
/// hands `e` back, to be answered as an error response.
pub async fn close_or_err(
    session: &mut Session,
    ctx: &mut RequestCtx,
    client: Format,
    e: GatewayError,
) -> Result<(), GatewayError> {
    if !ctx.inflight_stream {
        return Err(e);
    }
    let mut out = BytesMut::new();
    same_format::end_with_error(client, Some(e.status), &e.message, &mut out);
    if write(session, ctx, out.freeze(), true).await.is_err() {
        ctx.client_gone = true;
    }
    ctx.status = e.status;
    end_stream_gauge(ctx);
    Ok(())
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
        match next_chunk(session, resp, ctx, plan, headers).await {
            Step::Chunk(c) => {
                if body.len() + c.len() > MAX_RESPONSE_BODY {
                    return Outcome::Failed(RelayFault::TooLarge {
                        limit: MAX_RESPONSE_BODY,
                    });
                }
                body.extend_from_slice(&c);
            }
            Step::End => break,
            Step::Error(e) => return Outcome::Failed(RelayFault::Upstream(e)),
            Step::ClientGone => return gone(ctx),
        }
    }
    if let Some(message) = plan.kind.refused_answer(&body) {
        return refused(session, ctx, plan, &body, &message, headers).await;
    }
    if let Some(fill) = ctx.cache_fill.as_mut() {
        // Kept as the upstream's bytes: decoded only if it is ever a hit.
        fill.whole(plan.upstream, &body);
    }
    let out = if plan.passthrough {
        if ctx.answer.is_some() {
            if let Ok(r) = translate::decode_response(plan.upstream, &body) {
                capture_text(ctx, &r);
            }
        }
        // Only a traced request has the body read for its finish reasons.
        let read_body = if super::trace::sampled(ctx) {
            passthrough_body_with_finish
        } else {
            passthrough_body
        };
        let read = match read_body(plan.upstream, &body, plan.model_override.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                let fault = RelayFault::InvalidJson(e.to_string());
                return Outcome::Failed(fault.scrubbed(plan.provider_keys));
            }
        };
        ctx.usage = read.usage;
        if let Some(f) = read.finish_reasons {
            ctx.finish_reasons = f.into_vec();
        }
        if plan.upstream == Format::OpenAiResponses {
            ctx.response_id = response_id_of(&body);
        }
        if ctx.usage.is_none() {
            // Nothing reported: the usage will be estimated from the output.
            if let Ok(r) = translate::decode_response(plan.upstream, &body) {
                ctx.relayed_output_bytes = response_output_bytes(&r);
            }
        }
        match read.renamed {
            Some(b) => Bytes::from(b),
            None => body.freeze(),
        }
    } else {
        let mut r = match translate::decode_response(plan.upstream, &body) {
            Ok(r) => r,
            Err(e) => {
                let fault = RelayFault::Unreadable(e);
                return Outcome::Failed(fault.scrubbed(plan.provider_keys));
            }
        };
        ctx.usage = r.usage;
        ctx.relayed_output_bytes = response_output_bytes(&r);
        capture_text(ctx, &r);
        note_finish(ctx, plan.client, &r, false);

        if let Some(m) = &plan.model_override {
            r.model.clone_from(m);
        }
        if let Some(keep) = ctx.keep_response.as_ref().filter(|_| keeps_here(plan)) {
            // The gateway's id: the upstream's is neither unique across
            // providers nor a Responses id.
            r.id.clone_from(&keep.id);
        }
        Bytes::from(translate::encode_response(plan.client, &r))
    };
    if let Some(mut keep) = kept_here(ctx, plan) {
        // Kept before the client has the answer: its next turn finds it.
        keep.answered(&out);
        keep.save().await;
    }
    ctx.status = 200;
    ctx.first_byte = Some(ctx.start.elapsed());
    let headers = &respond::with_debug_cost(headers, ctx.cost_usd());
    match respond::json(session, 200, out, headers).await {
        Ok(()) => Outcome::Done,
        Err(_) => gone(ctx),
    }
}

/// Whether the gateway keeps this answer's Responses state: a Responses
/// client served by an upstream that keeps none (`proxy/responses.rs`).
fn keeps_here(plan: &RelayPlan<'_>) -> bool {
    plan.client == Format::OpenAiResponses && plan.upstream != Format::OpenAiResponses
}

/// What the answer is kept with, when the gateway keeps it.
fn kept_here(ctx: &mut RequestCtx, plan: &RelayPlan<'_>) -> Option<Box<super::ctx::Keep>> {
    if keeps_here(plan) {
        ctx.keep_response.take()
    } else {
        None
    }
}

/// A good answer the upstream's kind calls a refusal (a content filter):
/// a 400 in the client's error shape, its usage still counted.
async fn refused(
    session: &mut Session,
    ctx: &mut RequestCtx,
    plan: &RelayPlan<'_>,
    body: &[u8],
    message: &str,
    headers: &Headers,
) -> Outcome {
    if let Ok(r) = translate::decode_response(plan.upstream, body) {
        ctx.usage = r.usage;
    }
    let message = upstream_error::scrub(message, plan.provider_keys);
    ctx.status = 400;
    ctx.first_byte = Some(ctx.start.elapsed());
    let mut h = headers.clone();
    respond::strip_debug(&mut h);
    let out = translate::error_body(plan.client, 400, &message);
    match respond::json(session, 400, out, &h).await {
        Ok(()) => Outcome::Done,
        Err(_) => gone(ctx),
    }
}

/// The top-level `id` of a Responses answer (the rest of the body skipped).
fn response_id_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        id: Option<String>,
    }
    serde_json::from_slice::<Answer>(body).ok()?.id
}

/// Bytes of generated output in a whole answer (see
/// `passthrough::output_bytes`).
fn response_output_bytes(r: &translate::ChatResponse) -> u64 {
    r.content
        .iter()
        .map(|part| match part {
            translate::ContentPart::Text { text }
            | translate::ContentPart::Thinking { text, .. } => text.len() as u64,
            translate::ContentPart::ToolCall {
                name, arguments, ..
            } => (name.len() + arguments.len()) as u64,
            _ => 0,
        })
        .sum()
}

/// Notes, for a traced request, why a whole answer the client gets
/// translated (or from the cache) ended, as its format tells it.
fn note_finish(ctx: &mut RequestCtx, client: Format, r: &translate::ChatResponse, stream: bool) {
    if !super::trace::sampled(ctx) {
        return;
    }
    let called_tools = r
        .content
        .iter()
        .any(|p| matches!(p, translate::ContentPart::ToolCall { .. }));
    let reason = translate::finish::client_finish_reason(
        client,
        r.finish_reason.as_ref(),
        called_tools,
        stream,
    );
    ctx.finish_reasons = reason.map(|r| vec![r.to_owned()]).unwrap_or_default();
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

fn gone(ctx: &mut RequestCtx) -> Outcome {
    ctx.client_gone = true;
    // The client may not have read how the answer ended.
    ctx.finish_reasons.clear();
    if ctx.status == 0 {
        ctx.status = 499;
    }
    Outcome::ClientGone
}

async fn stream(
    session: &mut Session,
    ctx: &mut RequestCtx,
    resp: &mut Incoming,
    plan: &RelayPlan<'_>,
    headers: &Headers,
) -> Outcome {
    let mut conv = Converter::new(plan, ctx.answer.is_some(), super::trace::sampled(ctx));
    let keeps = keeps_here(plan);
    if let Some(keep) = ctx.keep_response.as_ref().filter(|_| keeps) {
        conv.set_response_id(keep.id.clone());
    }
    let mut out = BytesMut::new();
    // Part of this answer reached the client: no failover any more.
    let mut answered = false;

    let result: Result<(), RelayFault> = loop {
        let chunk = match next_chunk(session, resp, ctx, plan, headers).await {
            Step::Chunk(c) => Some(c),
            Step::End => None,
            Step::Error(e) => break Err(RelayFault::Upstream(e)),
            Step::ClientGone => {
                end_stream_gauge(ctx);
                return gone(ctx);
            }
        };
        let mut end = chunk.is_none();
        let mut failure = conv.feed(chunk.as_deref(), ctx, &mut out).err();
        // What the upstream already sent (Pingora has it buffered, or the
        // socket has it) joins this write: one write to the client per
        // burst, not one per upstream chunk. Nothing is waited for.
        while failure.is_none() && !end && out.len() < COALESCE_BYTES {
            match ready_now(resp.chunk()) {
                None => break,
                Some(Ok(c)) => {
                    end = c.is_none();
                    failure = conv.feed(c.as_deref(), ctx, &mut out).err();
                }
                Some(Err(e)) => failure = Some(RelayFault::Upstream(e)),
            }
        }
        if let Some(f) = failure {
            // Once the upstream produced part of the answer, that part is
            // the client's: it is written, then the stream ends with an
            // error event. Before that, the next candidate may answer.
            if !out.is_empty() {
                answered = true;
                if open_stream(session, ctx, headers).await.is_err() {
                    return gone(ctx);
                }
            }
            break Err(f);
        }
        if !out.is_empty() || end {
            answered = true;
            if open_stream(session, ctx, headers).await.is_err() {
                return gone(ctx);
            }
            upstream_error::scrub_bytes(&mut out, plan.provider_keys);
            // What is kept is what the client gets, scrubbed.
            if let Some(keep) = ctx.keep_response.as_mut().filter(|_| keeps) {
                keep.scan_events(&out);
            }
            if end {
                if let Some(keep) = kept_here(ctx, plan) {
                    // Kept before the stream ends: the client's next turn
                    // finds it.
                    keep.save().await;
                }
            }
            if write(session, ctx, out.split().freeze(), end)
                .await
                .is_err()
            {
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
        // Nothing of this answer was written (keep-alives may have been):
        // the stream stays open for the next candidate.
        Err(fault) if !answered => Outcome::Failed(fault.scrubbed(plan.provider_keys)),
        Err(fault) => {
            let fault = fault.scrubbed(plan.provider_keys);
            log::warn!(
                "stream from {} broke after it started: {}",
                ctx.provider,
                crate::error::Chain(&fault)
            );
            conv.fail(
                fault.status(),
                &format!("upstream stream failed: {fault}"),
                &mut out,
            );
            upstream_error::scrub_bytes(&mut out, plan.provider_keys);
            let _ = write(session, ctx, out.split().freeze(), true).await;
            end_stream_gauge(ctx);
            Outcome::Failed(fault)
        }
    }
}

/// Most bytes gathered from an upstream burst before writing to the client.
const COALESCE_BYTES: usize = 64 * 1024;

/// Polls `fut` once: its output if it is ready without waiting. Dropping a
/// pending body read is safe: Pingora commits its parser state before each
/// await, and a pending socket read has consumed nothing.
fn ready_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Opens the event stream to the client (status and headers), once.
async fn open_stream(
    session: &mut Session,
    ctx: &mut RequestCtx,
    headers: &Headers,
) -> pingora::Result<()> {
    if ctx.inflight_stream {
        return Ok(());
    }
    ctx.status = 200;
    ctx.inflight_stream = true;
    metrics::INFLIGHT_STREAMS.inc();
    let h = respond::stream_header(session, headers)?;
    let r = session.write_response_header(h, false).await;
    if r.is_err() {
        ctx.client_gone = true;
    }
    r
}

/// Writes answer bytes to the client; the first ones mark the time to
/// first byte (keep-alives do not: they are written apart).
async fn write(
    session: &mut Session,
    ctx: &mut RequestCtx,
    data: Bytes,
    end: bool,
) -> pingora::Result<()> {
    if ctx.first_byte.is_none() && !data.is_empty() {
        ctx.first_byte = Some(ctx.start.elapsed());
    }
    ctx.last_write = Some(Instant::now());
    session.write_response_body(Some(data), end).await
}

fn end_stream_gauge(ctx: &mut RequestCtx) {
    if ctx.inflight_stream {
        ctx.inflight_stream = false;
        metrics::INFLIGHT_STREAMS.dec();
    }
}
