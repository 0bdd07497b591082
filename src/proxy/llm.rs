//! A generation request from start to end, one named step each:
//! authenticate, read the request, authorize its models, admit it against
//! the limits, resolve its candidates, stick to the session's upstream,
//! then try the candidates (each with its keys, maybe hedged: `attempt/`)
//! until one answers. Nothing reaches the client before an upstream's first
//! byte, so every failure until then moves on (`failover.rs` decides where).

use std::sync::Arc;
use std::time::Instant;

use apiproxy_store::{SessionBinding, Store};
use apiproxy_translate::Format;
use pingora::proxy::Session;

use super::attempt::{Attempts, StickyTarget, Tried};
use super::cache::{CacheResult, CachedAnswer, Plan};
use super::ctx::RequestCtx;
use super::relay;
use super::request::{self, LlmRoute, Parsed};
use super::respond::Headers;
use super::responses;
use super::Gateway;
use crate::config::ClientKey;
use crate::error::GatewayError;
use crate::metrics;
use crate::routing::{Candidate, Runtime};
use crate::{context, limits};

/// Handles the request. `Err` is returned only while nothing has been
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
    // The steps before the attempts are boxed: this future lives as long
    // as the answer is relayed (a stream's whole life), so it is only as
    // large as what it keeps for the attempts, not as its largest step.
    let mut parsed = Box::pin(read_request(rt, session, ctx, &route)).await?;
    ctx.stream = parsed.stream;
    ctx.keep_attempt_log = rt.config.console.collect || super::trace::sampled(ctx);
    ctx.requested_model = parsed.names.first().cloned().unwrap_or_default();
    authorize_models(key, &parsed.names)?;
    check_model_count(rt, &parsed.names)?;

    let store = gw.state.store().await;
    // Before the admission: an expanded conversation is charged whole.
    let kept_at = continue_response(store, rt, key, ctx, fmt, &mut parsed).await?;
    let sid = session_id(session);
    // The candidates before the admission: a budget reserves what the
    // request may cost on them.
    let mut candidates = resolve_candidates(rt, &parsed.names, &ctx.requested_model).await?;
    if let Some((id, provider)) = &kept_at {
        stay_with(rt, &mut candidates, id, provider)?;
    }
    let cache = Plan::of(rt, key, fmt, &parsed, session.req_header());
    // One store round trip on the request path: the admission (rate limits
    // and budget), the session lookup and the response cache's lookup go
    // out together; a cached answer is used only once admitted.
    let lookup = async {
        match &cache {
            Some(plan) => plan.lookup(store.as_ref()).await,
            None => None,
        }
    };
    let (admitted, binding, cached) = Box::pin(async {
        tokio::join!(
            admit(
                store.as_ref(),
                rt,
                key,
                fmt,
                &parsed,
                &candidates,
                ctx,
                headers
            ),
            owned_binding(store.as_ref(), sid.as_deref(), key.map(|k| k.id.as_str())),
            lookup,
        )
    })
    .await;
    admitted?;
    if let Some(plan) = cache {
        // Moved out on every path: not kept across the attempts.
        if let Some(hit) = { cached } {
            return Box::pin(answer_from_cache(
                rt, session, ctx, &parsed, fmt, hit, headers,
            ))
            .await;
        }
        let result = if plan.reads() {
            CacheResult::Miss
        } else {
            CacheResult::Bypass
        };
        ctx.cache = Some(result);
        headers.push(("x-apiproxy-cache", result.as_str().to_owned()));
        ctx.cache_fill = plan.into_fill(rt.config.cache.max_entry_bytes);
    }
    ctx.session_id = sid;
    let (candidates, sticky) = stick_to_session(rt, ctx, candidates, binding, fmt, &parsed);
    super::trace::note_candidates(rt, ctx, &candidates);

    // Every request earns its key's share of the hedge budget.
    let routing = &rt.config.routing;
    rt.hedges
        .deposit(ctx.state_owner(), routing.hedge_budget_percent);
    let attempts = Attempts::new(gw, rt, session, ctx, fmt, &parsed, sticky);
    'rounds: for round in 0..routing.retry_rounds {
        if round > 0 {
            // Another pass only after upstream failures, after a pause that
            // doubles per pass and fits in the request's deadline.
            let pause = routing
                .retry_backoff
                .saturating_mul(1 << (round - 1).min(8));
            let left = attempts.deadline.saturating_duration_since(Instant::now());
            if left <= pause
                || attempts.sent() >= routing.max_attempts
                || !attempts.start_another_round()
            {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        // A candidate a hedge already tried this pass.
        let mut hedged: Option<usize> = None;
        for n in 0..candidates.len() {
            if hedged == Some(n) {
                continue;
            }
            if attempts.sent() >= routing.max_attempts {
                break 'rounds;
            }
            let tried = attempts
                .try_candidate(session, ctx, &candidates, n, &parsed, headers)
                .await;
            // With keep-alives sent the event stream is open: errors end it.
            let (tried, hedge) = match tried {
                Ok(t) => t,
                Err(e) => return Box::pin(relay::close_or_err(session, ctx, fmt, e)).await,
            };
            hedged = hedged.or(hedge);
            match tried {
                Tried::Answered => return Ok(()),
                Tried::Failed if n + 1 < candidates.len() => {
                    metrics::FAILOVERS
                        .with_label_values(&[rt.providers[candidates[n].provider].id()])
                        .inc();
                }
                Tried::Failed => {}
            }
        }
    }
    let mut failed = attempts.all_failed();
    if let Some((id, provider)) = &kept_at {
        // The state lives there: say why no other upstream was tried.
        failed.message = format!(
            "previous_response_id '{id}' is kept by provider `{provider}`, which did not answer (a conversation stored at a provider stays there): {}",
            failed.message
        );
    }
    Box::pin(relay::close_or_err(session, ctx, fmt, failed)).await
}

/// Answers an admitted request from the response cache: no upstream, and
/// its token and cost reservations are released at settlement (it is
/// charged nothing). What the answer would have cost upstream is counted
/// as saved.
async fn answer_from_cache(
    rt: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    parsed: &Parsed,
    fmt: Format,
    hit: CachedAnswer,
    headers: &mut Headers,
) -> Result<(), GatewayError> {
    ctx.cache = Some(CacheResult::Hit);
    headers.push(("x-apiproxy-cache", CacheResult::Hit.as_str().to_owned()));
    let saved = rt.provider(&hit.provider).and_then(|p| {
        let price = crate::pricing::price_of(&p.config, &hit.model)?;
        Some(crate::pricing::cost_usd(&price, hit.answer.usage.as_ref()?))
    });
    if let Some(usd) = saved.filter(|c| *c > 0.0) {
        metrics::CACHE_SAVED_USD
            .with_label_values(&[ctx.requested_model.as_str()])
            .inc_by(usd);
    }
    let how = relay::Replay {
        client: fmt,
        stream: parsed.stream,
        model: &ctx.requested_model.clone(),
        include_usage: parsed.include_usage,
    };
    relay::cached(session, ctx, hit.answer, &how, headers).await;
    Ok(())
}

/// 400 past `routing.max_models` names.
pub(super) fn check_model_count(rt: &Runtime, names: &[String]) -> Result<(), GatewayError> {
    let max_models = rt.config.routing.max_models;
    if names.len() > max_models {
        return Err(GatewayError::bad_request(format!(
            "at most {max_models} models per request (`model` and `models` together; routing.max_models)"
        )));
    }
    Ok(())
}

/// Reads the body (bounded by `server.max_body_bytes`) and parses it.
pub(super) async fn read_request(
    rt: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &LlmRoute,
) -> Result<Parsed, GatewayError> {
    let server = &rt.config.server;
    let pace = request::BodyPace::of(server);
    let body = request::read_body(session, server.max_body_bytes, pace).await?;
    let console = &rt.config.console;
    if console.capture_bodies && console.collect {
        ctx.captured_body = Some(crate::redact::redact_body(&body, console.max_body_chars));
    }
    super::trace::capture_content(rt, ctx, &body);
    let mut parsed = request::parse(route.format, &body, route, session)?;
    crate::model_name::check(&parsed.names, rt.config.server.max_model_name_bytes)?;
    if route.format == Format::OpenAiChat {
        crate::compat::rewrite_input(&mut parsed.body)?;
    }
    Ok(parsed)
}

/// Every model the request names must be allowed for its key.
pub(super) fn authorize_models(
    key: Option<&ClientKey>,
    names: &[String],
) -> Result<(), GatewayError> {
    let Some(k) = key else { return Ok(()) };
    match names.iter().find(|n| !k.allows(n)) {
        Some(denied) => Err(GatewayError::forbidden(format!(
            "model `{denied}` is not allowed for this key"
        ))),
        None => Ok(()),
    }
}

/// The references of a request (`proxy/refs.rs`) and the Responses state
/// it continues (`proxy/responses.rs`): 403 for an object stored at the
/// provider which its key did not receive through the gateway; a
/// `previous_response_id` the gateway keeps is expanded into the body
/// (and the answer of a Responses request set up to be kept); one a
/// provider keeps gives `(id, provider)`, where the request must go; any
/// other is "not found" (400, OpenAI's answer), whoever else holds it.
/// Costs store reads only when the body continues a response.
pub(super) async fn continue_response(
    store: &Arc<dyn Store>,
    rt: &Runtime,
    key: Option<&ClientKey>,
    ctx: &mut RequestCtx,
    fmt: Format,
    parsed: &mut Parsed,
) -> Result<Option<(String, String)>, GatewayError> {
    let trusted = key.is_some_and(|k| k.provider_refs_any);
    let refs = super::refs::references(parsed.body.bytes());
    if !trusted {
        if let Some(e) = super::refs::refusal(&refs) {
            return Err(e);
        }
    }
    if fmt == Format::OpenAiResponses {
        let bounds = responses::Bounds {
            max_chain: rt.config.store.responses_max_chain,
            max_body_bytes: rt.config.server.max_body_bytes,
            ttl: rt.config.store.responses_ttl,
        };
        // Boxed: only a request that continues a response pays for its
        // size.
        if let Some(expanded) =
            Box::pin(responses::prepare(store, ctx, &parsed.body, bounds)).await?
        {
            parsed.body_bytes = expanded.len();
            parsed.body = crate::body::RawBody::parse(bytes::Bytes::from(expanded))
                .map_err(|e| GatewayError::internal(format!("the expanded conversation: {e:?}")))?;
            return Ok(None);
        }
    }
    let Some(id) = refs.response_id else {
        return Ok(None);
    };
    match store.reference(responses::owner(ctx), &id).await {
        Some(provider) if !provider.is_empty() => Ok(Some((id, provider))),
        Some(_) => Ok(None),
        // A trusted key may name what it got elsewhere.
        None if trusted => Ok(None),
        None => Err(responses::previous_not_found(&id)),
    }
}

/// Keeps only the candidates of `provider`, which keeps response `id`: the
/// conversation's state lives there and cannot move.
pub(super) fn stay_with(
    rt: &Runtime,
    candidates: &mut Vec<Candidate>,
    id: &str,
    provider: &str,
) -> Result<(), GatewayError> {
    candidates.retain(|c| rt.providers[c.provider].id() == provider);
    if candidates.is_empty() {
        return Err(GatewayError::upstream(
            503,
            format!(
                "previous_response_id '{id}' is kept by provider `{provider}`, which cannot serve this request now (a conversation stored at a provider stays there)"
            ),
        ));
    }
    Ok(())
}

/// Admits the request against its key's and the gateway's limits and its
/// key's budget (429 past them, 503 when the budget cannot be checked, 403
/// when a budgeted key asks for a model without a price; nothing counted)
/// and keeps its reservations for the settlement after the answer.
#[allow(clippy::too_many_arguments)]
async fn admit(
    store: &dyn Store,
    rt: &Runtime,
    key: Option<&ClientKey>,
    fmt: Format,
    parsed: &Parsed,
    candidates: &[Candidate],
    ctx: &mut RequestCtx,
    headers: &mut Headers,
) -> Result<(), GatewayError> {
    let buckets = limits::buckets_for(key, &rt.config);
    let estimate = limits::token_estimate(
        fmt,
        |k| parsed.body.member(k),
        parsed.body_bytes,
        rt.config.default_output_tokens,
    );
    ctx.input_estimate = estimate.input;
    ctx.max_tokens = estimate.max_tokens;
    let budget = match key {
        Some(k) if k.budget.is_some() => {
            let most = most_expensive(rt, candidates, estimate)?;
            crate::pricing::budget::ask(k, most)
        }
        _ => None,
    };
    let client_key_label = key.map(|k| crate::metrics::client_key_label(&k.id, &k.name));
    match limits::admit(store, client_key_label, buckets, estimate.tokens(), budget).await {
        Ok(admitted) => {
            headers.extend(admitted.headers);
            ctx.reserved = admitted.reserved;
            Ok(())
        }
        Err((e, limit_headers)) => {
            headers.extend(limit_headers);
            Err(e)
        }
    }
}

/// What a request of `estimate` tokens costs at most on any of its
/// candidates (its budget reserves that). A candidate without a price
/// cannot be charged, so a budgeted key may not use it: 403 naming the
/// missing price.
fn most_expensive(
    rt: &Runtime,
    candidates: &[Candidate],
    estimate: limits::Estimate,
) -> Result<f64, GatewayError> {
    let usage = apiproxy_translate::Usage {
        input_tokens: estimate.input,
        output_tokens: estimate.output,
        ..Default::default()
    };
    let mut most = 0.0_f64;
    for c in candidates {
        let provider = &rt.providers[c.provider].config;
        let Some(price) = crate::pricing::price_of(provider, &c.model) else {
            return Err(GatewayError::forbidden(format!(
                "model `{}` of provider `{}` has no price, and this key has a budget:                  it can be used once the operator prices it (`providers[].pricing` of `{}`)",
                c.model, provider.id, provider.id
            )));
        };
        most = most.max(crate::pricing::cost_usd(&price, &usage));
    }
    Ok(most)
}

/// `X-Session-Id`, when given (trimmed, at most 256 bytes).
fn session_id(session: &Session) -> Option<String> {
    session
        .req_header()
        .headers
        .get(crate::header_name::X_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .map(str::to_owned)
}

/// The session's binding, when there is one and it belongs to the
/// request's client key (another key's binding is neither followed nor
/// moved).
async fn owned_binding(
    store: &dyn Store,
    sid: Option<&str>,
    key: Option<&str>,
) -> Option<SessionBinding> {
    let binding = store.get_session(sid?).await?;
    binding.belongs_to(key).then_some(binding)
}

/// The candidates for the request's names, in routing order: 404 when no
/// name is known, 503 when the known ones have no enabled upstream. A name
/// missing while a provider's catalog has not been listed since start waits
/// for that listing (bounded by the provider's connect timeout): a model
/// known only from a catalog never gets 404 because the gateway just started.
pub(super) async fn resolve_candidates(
    rt: &Runtime,
    names: &[String],
    requested: &str,
) -> Result<Vec<Candidate>, GatewayError> {
    let (mut candidates, mut unknown) = rt.candidates(names);
    if !unknown.is_empty() {
        let pending: Vec<_> = rt
            .providers
            .iter()
            .filter(|p| p.catalog_pending())
            .collect();
        if !pending.is_empty() {
            futures_util::future::join_all(pending.iter().map(|p| p.await_first_listing())).await;
            (candidates, unknown) = rt.candidates(names);
        }
    }
    if !candidates.is_empty() {
        return Ok(candidates);
    }
    Err(match unknown.first() {
        Some(name) => GatewayError::not_found(format!("model `{name}` not found")),
        None => GatewayError::upstream(
            503,
            format!("no upstream is available for model `{requested}`"),
        ),
    })
}

/// With `X-Session-Id`: moves the upstream the session is bound to (while
/// it is healthy) to the front, and prepares the context snippet.
fn stick_to_session(
    rt: &Runtime,
    ctx: &mut RequestCtx,
    mut candidates: Vec<Candidate>,
    binding: Option<SessionBinding>,
    fmt: Format,
    parsed: &Parsed,
) -> (Vec<Candidate>, Option<StickyTarget>) {
    if ctx.session_id.is_none() {
        return (candidates, None);
    }
    let mut sticky = None;
    ctx.binding.clone_from(&binding);
    if let Some(b) = binding {
        if let Some(pos) = rt.bound_candidate(&candidates, &b) {
            let c = candidates.remove(pos);
            sticky = Some(StickyTarget {
                provider: c.provider,
                api_key_index: b.key_index,
            });
            candidates.insert(0, c);
        }
    }
    let max = rt.config.context.max_chars;
    ctx.capture_limit = max;
    ctx.answer = Some(String::new());
    ctx.context_request = Some(context::request_snippet(
        fmt,
        &parsed.body,
        &ctx.requested_model,
        max,
    ));
    (candidates, sticky)
}
