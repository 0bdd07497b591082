//! A request's trace as the proxy sees it: the spans' facts taken from
//! what the logging phase already holds (the access log's and the
//! console's), handed to `crate::telemetry` at the end of the request.
//! Nothing is added along the request's path but the attempt spans' ids.

use std::time::Duration;

use apiproxy_translate::Format;

use super::ctx::RequestCtx;
use crate::routing::{Candidate, Runtime};
use crate::telemetry::{self, AttemptSpan, Finished, Telemetry};

/// `gen_ai.operation.name` of a token count (the conventions name none).
pub const COUNT_OPERATION: &str = "count_tokens";

/// `gen_ai.operation.name` of a generation in a client format.
pub fn operation(fmt: Format) -> &'static str {
    match fmt {
        Format::Gemini => "generate_content",
        // No client speaks Bedrock's Converse; it is a chat API.
        Format::OpenAiChat | Format::OpenAiResponses | Format::Anthropic | Format::Bedrock => {
            "chat"
        }
    }
}

/// Whether the request is traced and sampled: only then is anything
/// gathered for its spans.
pub fn sampled(ctx: &RequestCtx) -> bool {
    ctx.trace.as_ref().is_some_and(|t| t.sampled)
}

/// Notes the candidates and their scores, for a sampled request.
pub fn note_candidates(rt: &Runtime, ctx: &mut RequestCtx, candidates: &[Candidate]) {
    if sampled(ctx) {
        ctx.routing = candidates
            .iter()
            .map(|c| {
                let id = rt.providers[c.provider].id();
                let mut name = String::with_capacity(id.len() + 1 + c.model.len());
                name.push_str(id);
                name.push('/');
                name.push_str(&c.model);
                (name, c.score)
            })
            .collect();
    }
}

/// Keeps the redacted body and turns on the answer's capture when the
/// trace carries content (`telemetry.capture_content`).
pub fn capture_content(rt: &Runtime, ctx: &mut RequestCtx, body: &[u8]) {
    let max = rt.config.console.max_body_chars;
    let Some(t) = ctx.trace.as_mut().filter(|t| t.capture_content) else {
        return;
    };
    t.input_content = Some(crate::redact::redact_body(body, max));
    if ctx.answer.is_none() {
        ctx.answer = Some(String::new());
    }
    ctx.capture_limit = ctx.capture_limit.max(max);
}

/// Hands a sampled request's spans to the export queue.
pub fn finish(
    t: &Telemetry,
    rt: &Runtime,
    ctx: &mut RequestCtx,
    fmt: Format,
    elapsed: Duration,
    cost: Option<f64>,
) {
    let Some(mut trace) = ctx.trace.take().filter(|t| t.sampled).map(|t| *t) else {
        return;
    };
    // The answering candidate's score (`provider/model`, as noted).
    let (provider, model) = (ctx.provider.as_str(), ctx.upstream_model.as_str());
    let score = ctx
        .served_by
        .as_ref()
        .and_then(|_| {
            ctx.routing.iter().find(|(c, _)| {
                c.strip_prefix(provider).and_then(|r| r.strip_prefix('/')) == Some(model)
            })
        })
        .map(|(_, s)| *s);
    let input_content = trace.input_content.take();
    let ctx = &*ctx;
    let provider_name = |id: &str| {
        rt.provider(id)
            .map(|p| telemetry::provider_name(p.config.kind))
    };
    let attempts = ctx
        .attempt_log
        .iter()
        .filter_map(|a| {
            Some(AttemptSpan {
                span_id: a.span_id?,
                provider_id: &a.provider,
                provider_name: provider_name(&a.provider),
                model: &a.model,
                outcome: a.outcome,
                status: a.status,
                start: a.started?.saturating_duration_since(ctx.start),
                duration: Duration::from_secs_f64(a.ms / 1000.0),
            })
        })
        .collect();
    let usage = ctx.usage;
    let output_content = trace
        .capture_content
        .then_some(ctx.answer.as_deref())
        .flatten();
    t.finish(&Finished {
        trace,
        duration: elapsed,
        requested_model: &ctx.requested_model,
        provider_id: &ctx.provider,
        provider_name: provider_name(&ctx.provider),
        response_model: &ctx.upstream_model,
        finish_reasons: &ctx.finish_reasons,
        client_format: fmt.as_str(),
        stream: ctx.stream,
        status: ctx.status,
        time_to_first_token: ctx.first_byte,
        input_tokens: usage.map(|u| u.input_tokens),
        output_tokens: usage.map(|u| u.output_tokens),
        cached_input_tokens: usage.and_then(|u| u.cached_input_tokens),
        cache_creation_input_tokens: usage.and_then(|u| u.cache_creation_input_tokens),
        usage_estimated: ctx.usage_estimated,
        max_tokens: ctx.max_tokens,
        cost_usd: cost,
        key_name: ctx.client_key_name.as_deref(),
        candidates: &ctx.routing,
        score,
        cache: ctx.cache.map(super::cache::CacheResult::as_str),
        attempts,
        input_content,
        output_content,
    });
}
