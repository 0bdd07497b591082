//! A token count (`POST /v1/messages/count_tokens`,
//! `/v1/responses/input_tokens`, Gemini `:countTokens`), routed like a
//! generation request of its format: the same key decision, model
//! resolution and candidates, counted in the key's and the gateway's rpm
//! but not in a tpm or a budget (it generates nothing), and no session
//! binding made or moved. Each candidate in order: an Anthropic or Gemini
//! upstream is asked its own count endpoint through the attempt machinery
//! (keys, breaker, failover on connect errors and retryable statuses; its
//! refusal relayed in the client's shape); an OpenAI-kind upstream, which
//! has no count endpoint for chat models, is counted here with its model
//! family's tokenizer (`translate::count::count_locally`), the answer
//! marked `x-apiproxy-token-count: estimated`.

use std::sync::Arc;

use apiproxy_store::{LimitBucket, Store};
use apiproxy_translate::{count, Format};
use pingora::proxy::Session;

use super::attempt::{Attempts, Tried};
use super::ctx::RequestCtx;
use super::llm;
use super::request::{LlmRoute, Parsed};
use super::respond::{self, Headers};
use super::Gateway;
use crate::config::ClientKey;
use crate::error::GatewayError;
use crate::metrics;
use crate::routing::{Candidate, Runtime};
use crate::upstream::Provider;

/// The header that marks a count the gateway made itself.
const ESTIMATED: (&str, &str) = ("x-apiproxy-token-count", "estimated");

/// Answers a token count. `Err` is returned only while nothing has been
/// written to the client; the caller writes it in the client's shape.
pub async fn handle(
    gw: &Gateway,
    rt: &Arc<Runtime>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: LlmRoute,
    headers: &mut Headers,
) -> Result<(), GatewayError> {
    let fmt = route.format;
    let key = super::client_key(gw, rt, session, ctx).await?;
    let key = key.as_deref();
    let mut parsed = llm::read_request(rt, session, ctx, &route).await?;
    // A count is one answer, whatever `stream` or `Accept` said.
    parsed.stream = false;
    parsed.stream_added = false;
    ctx.keep_attempt_log = rt.config.console.collect;
    ctx.requested_model = parsed.names.first().cloned().unwrap_or_default();
    llm::authorize_models(key, &parsed.names)?;
    llm::check_model_count(rt, &parsed.names)?;
    let store = gw.state.store().await;
    // A continued conversation is counted whole, where its state lives.
    let kept_at = llm::continue_response(store, rt, key, ctx, fmt, &mut parsed).await?;
    // A count keeps nothing.
    ctx.keep_response = None;
    let mut candidates = llm::resolve_candidates(rt, &parsed.names, &ctx.requested_model).await?;
    if let Some((id, provider)) = kept_at {
        llm::stay_with(rt, &mut candidates, &id, &provider)?;
    }
    admit(store.as_ref(), rt, key, headers).await?;

    let attempts = Attempts::new(gw, rt, session, ctx, fmt, &parsed, None).counting();
    let max_attempts = rt.config.routing.max_attempts;
    for (n, c) in candidates.iter().enumerate() {
        if attempts.sent() >= max_attempts {
            break;
        }
        let provider = &rt.providers[c.provider];
        // A kind without a count endpoint (OpenAI's) is counted here.
        if provider.count_tokens_path(&c.model).is_none() {
            return count_locally(session, ctx, rt, fmt, c, provider, &parsed, headers).await;
        }
        let (tried, _) = attempts
            .try_candidate(session, ctx, &candidates, n, &parsed, headers)
            .await?;
        match tried {
            Tried::Answered => return Ok(()),
            Tried::Failed if n + 1 < candidates.len() => {
                metrics::FAILOVERS.with_label_values(&[provider.id()]).inc();
            }
            Tried::Failed => {}
        }
    }
    Err(attempts.all_failed())
}

/// Admits the count against the rpm limits of its key and of the gateway
/// (429 past them): a count generates nothing, so it reserves no tokens
/// and asks nothing of a budget.
async fn admit(
    store: &dyn Store,
    rt: &Runtime,
    key: Option<&ClientKey>,
    headers: &mut Headers,
) -> Result<(), GatewayError> {
    let buckets: Vec<LimitBucket> = crate::limits::buckets_for(key, &rt.config)
        .into_iter()
        .filter(|b| b.rpm.is_some())
        .map(|b| LimitBucket { tpm: None, ..b })
        .collect();
    let label = key.map(|k| metrics::client_key_label(&k.id, &k.name));
    match crate::limits::admit(store, label, buckets, 0, None).await {
        Ok(admitted) => {
            headers.extend(admitted.headers);
            Ok(())
        }
        Err((e, limit_headers)) => {
            headers.extend(limit_headers);
            Err(e)
        }
    }
}

/// Counts the request for an OpenAI-kind candidate with its model's
/// tokenizer and writes the answer, marked as the gateway's estimate.
#[allow(clippy::too_many_arguments)]
async fn count_locally(
    session: &mut Session,
    ctx: &mut RequestCtx,
    rt: &Runtime,
    fmt: Format,
    c: &Candidate,
    provider: &Provider,
    parsed: &Parsed,
    headers: &mut Headers,
) -> Result<(), GatewayError> {
    let limits = rt.config.server.translate_limits();
    let bytes = parsed.body.bytes().clone();
    let model = c.model.clone();
    // Off the worker thread: tokenizing is CPU work in proportion to the
    // body (~36 ms for 100 KB in a debug build), and the first count loads
    // the tokenizer's table (~0.6 s in a debug build); other requests on
    // this worker must not wait for either.
    let counted = tokio::task::spawn_blocking(move || {
        let mut req = count::decode_count_request(fmt, &bytes, &limits)?;
        req.model = model;
        count::count_locally(&req)
    })
    .await
    .map_err(|e| GatewayError::internal(format!("the local token count failed: {e}")))?;
    let tokens = counted.map_err(|e| GatewayError::bad_request(e.message))?;
    ctx.provider.clone_from(&provider.config.id);
    ctx.upstream_model.clone_from(&c.model);
    ctx.status = 200;
    headers.push((ESTIMATED.0, ESTIMATED.1.to_owned()));
    let body = count::count_answer(fmt, tokens);
    if respond::json(session, 200, body, headers).await.is_err() {
        ctx.client_gone = true;
    }
    Ok(())
}
