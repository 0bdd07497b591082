//! A generation request from start to end, one named step each:
//! authenticate, read the request, authorize its models, admit it against
//! the limits, resolve its candidates, stick to the session's upstream,
//! then try the candidates (each with its keys) until one answers.
//! Nothing reaches the client before an upstream's first byte, so every
//! failure until then moves on (`failover.rs` decides where).

use std::sync::Arc;
use std::time::Instant;

use apiproxy_store::{SessionBinding, Store};
use apiproxy_translate::{self as translate, Format};
use pingora::proxy::Session;

use super::ctx::{RequestCtx, ServedBy};
use super::encode::BodyEncoder;
use super::failover::{self, AttemptError, FailedAttempt, FailureContext, NextStep};
use super::relay::{self, Outcome, RelayPlan, Waited};
use super::request::{self, LlmRoute, Parsed};
use super::respond::{self, Headers};
use super::upstream_error::{contains_key, upstream_message};
use super::Gateway;
use crate::config::ClientKey;
use crate::error::GatewayError;
use crate::metrics;
use crate::routing::metrics as route_metrics;
use crate::routing::ratelimit::{self, RateLimitReading};
use crate::routing::stats::UpstreamStats;
use crate::routing::{Candidate, Runtime};
use crate::upstream::http::{self, Incoming, Outgoing, SendError};
use crate::upstream::{now_ms, KeyChoice, Provider};
use crate::{context, limits};

/// Largest upstream error body read (to relay or to log).
const MAX_ERROR_BODY: usize = 256 * 1024;

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
    let key = super::client_key(rt, session, ctx).await?;
    let key = key.as_deref();
    let mut parsed = read_request(rt, session, ctx, &route).await?;
    ctx.stream = parsed.stream;
    ctx.keep_attempt_log = rt.config.console.collect;
    ctx.requested_model = parsed.names.first().cloned().unwrap_or_default();
    authorize_models(key, &parsed.names)?;
    let max_models = rt.config.routing.max_models;
    if parsed.names.len() > max_models {
        return Err(GatewayError::bad_request(format!(
            "at most {max_models} models per request (`model` and `models` together; routing.max_models)"
        )));
    }

    let store = gw.state.store().await;
    // The budget first: a refused request takes nothing from the rate limits.
    crate::pricing::budget::admit(store.as_ref(), key, headers).await?;
    let sid = session_id(session);
    // One store round trip on the request path: the admission and the
    // session lookup go out together.
    let (admitted, binding) = tokio::join!(
        admit(store.as_ref(), rt, key, fmt, &parsed, ctx, headers),
        owned_binding(store.as_ref(), sid.as_deref(), key.map(|k| k.name.as_str())),
    );
    admitted?;
    ctx.session_id = sid;
    let candidates = resolve_candidates(rt, &parsed.names, &ctx.requested_model).await?;
    let (candidates, sticky) = stick_to_session(rt, ctx, candidates, binding, fmt, &parsed);

    let routing = &rt.config.routing;
    let mut attempts = Attempts {
        gw,
        rt,
        fmt,
        debug: wants_debug(session),
        forwarded: request::forwarded_headers(fmt, session),
        encoder: BodyEncoder::new(fmt, rt.config.server.translate_limits()),
        sticky,
        failures: Vec::new(),
        deadline: Instant::now() + routing.request_timeout,
    };
    'rounds: for round in 0..routing.retry_rounds {
        if round > 0 {
            // Another pass only after upstream failures, after a pause that
            // doubles per pass and fits in the request's deadline.
            let pause = routing
                .retry_backoff
                .saturating_mul(1 << (round - 1).min(8));
            let left = attempts.deadline.saturating_duration_since(Instant::now());
            if !failover::worth_another_round(&attempts.failures)
                || left <= pause
                || ctx.attempts >= routing.max_attempts
            {
                break;
            }
            tokio::time::sleep(pause).await;
            attempts.failures.clear();
        }
        for (n, c) in candidates.iter().enumerate() {
            if ctx.attempts >= routing.max_attempts {
                break 'rounds;
            }
            let tried = attempts
                .try_candidate(session, ctx, c, &mut parsed, headers)
                .await;
            // With keep-alives sent the event stream is open: errors end it.
            let tried = match tried {
                Ok(t) => t,
                Err(e) => return relay::close_or_err(session, ctx, fmt, e).await,
            };
            match tried {
                Tried::Answered => return Ok(()),
                Tried::Failed if n + 1 < candidates.len() => {
                    metrics::FAILOVERS
                        .with_label_values(&[rt.providers[c.provider].id()])
                        .inc();
                }
                Tried::Failed => {}
            }
        }
    }
    relay::close_or_err(session, ctx, fmt, failover::all_failed(&attempts.failures)).await
}

/// Reads the body (bounded by `server.max_body_bytes`) and parses it.
async fn read_request(
    rt: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &LlmRoute,
) -> Result<Parsed, GatewayError> {
    let server = &rt.config.server;
    let body = request::read_body(session, server.max_body_bytes, server.body_timeout).await?;
    let console = &rt.config.console;
    if console.capture_bodies && console.collect {
        ctx.captured_body = Some(crate::console::records::redact_body(
            &body,
            console.max_body_chars,
        ));
    }
    let mut parsed = request::parse(route.format, &body, route, session)?;
    crate::model_name::check(&parsed.names, rt.config.server.max_model_name_bytes)?;
    if route.format == Format::OpenAiChat {
        crate::compat::rewrite_input(&mut parsed.body)?;
    }
    Ok(parsed)
}

/// Every model the request names must be allowed for its key.
fn authorize_models(key: Option<&ClientKey>, names: &[String]) -> Result<(), GatewayError> {
    let Some(k) = key else { return Ok(()) };
    match names.iter().find(|n| !k.allows(n)) {
        Some(denied) => Err(GatewayError::forbidden(format!(
            "model `{denied}` is not allowed for this key"
        ))),
        None => Ok(()),
    }
}

/// Admits the request against its key's and the gateway's limits (429
/// past them, nothing counted) and keeps its token reservation for the
/// settlement after the answer.
async fn admit(
    store: &dyn Store,
    rt: &Runtime,
    key: Option<&ClientKey>,
    fmt: Format,
    parsed: &Parsed,
    ctx: &mut RequestCtx,
    headers: &mut Headers,
) -> Result<(), GatewayError> {
    let buckets = limits::buckets_for(key, &rt.config);
    let estimate = limits::token_estimate(fmt, |k| parsed.body.member(k), parsed.body_bytes);
    match limits::admit(store, key.map(|k| k.name.as_str()), buckets, estimate).await {
        Ok(admitted) => {
            headers.extend(admitted.headers.headers());
            ctx.tokens = admitted.tokens;
            Ok(())
        }
        Err((e, rate)) => {
            headers.extend(rate.headers());
            Err(e)
        }
    }
}

/// `X-Session-Id`, when given (trimmed, at most 256 bytes).
fn session_id(session: &Session) -> Option<String> {
    session
        .req_header()
        .headers
        .get("x-session-id")
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
async fn resolve_candidates(
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

/// The upstream (and key) a session is bound to: tried first.
#[derive(Debug, Clone, Copy)]
struct StickyTarget {
    /// Index into [`Runtime::providers`].
    provider: usize,
    key_index: usize,
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
    if let Some(b) = binding {
        if let Some(pos) = rt.bound_candidate(&candidates, &b) {
            let c = candidates.remove(pos);
            sticky = Some(StickyTarget {
                provider: c.provider,
                key_index: b.key_index,
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

/// `x-debug: true` asks for the `x-debug-*` response headers.
fn wants_debug(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get("x-debug")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true") || v.as_bytes() == b"1")
}

/// How trying one candidate ended.
enum Tried {
    /// The client has its answer (or left): stop.
    Answered,
    /// Every usable key failed: the next candidate.
    Failed,
}

/// An upstream's refusal kept to be relayed when it is not retryable.
struct Refusal {
    status: u16,
    content_type: String,
    body: bytes::Bytes,
    /// A 429 about this request alone (see `refusal_is_request_only`).
    request_only: bool,
}

/// A 429 concerns the request alone, not the key, when the provider says
/// the request is too large for the limit, or when its own rate-limit
/// headers show the key still has requests and tokens left: cooling the
/// key (or counting it against the upstream) would let one client's
/// oversized requests take a provider away from everyone.
fn refusal_is_request_only(message: &str, reading: Option<&RateLimitReading>) -> bool {
    let m = message.to_ascii_lowercase();
    let says_too_large = ["too large", "too long", "exceeds the", "maximum context"]
        .iter()
        .any(|p| m.contains(p));
    let key_has_room = reading.is_some_and(|r| {
        r.remaining_requests.is_some_and(|n| n > 0) && r.remaining_tokens.is_some_and(|n| n > 0)
    });
    says_too_large || key_has_room
}

/// The request ran past `routing.request_timeout_ms`.
fn deadline_passed(rt: &Runtime) -> GatewayError {
    GatewayError::upstream(
        504,
        format!(
            "no answer within the request deadline of {} ms (routing.request_timeout_ms)",
            rt.config.routing.request_timeout.as_millis()
        ),
    )
}

/// How one attempt (one candidate, one key) ended.
enum Attempt {
    /// The client has its answer.
    Answered,
    Failed(AttemptError, Option<Refusal>),
}

/// The state of a request's attempts.
struct Attempts<'a> {
    gw: &'a Gateway,
    rt: &'a Runtime,
    fmt: Format,
    debug: bool,
    forwarded: Vec<(&'static str, String)>,
    encoder: BodyEncoder,
    sticky: Option<StickyTarget>,
    failures: Vec<FailedAttempt>,
    /// `routing.request_timeout_ms` from the start: past it, 504.
    deadline: Instant,
}

impl Attempts<'_> {
    /// Tries candidate `c` with each of its provider's usable keys in turn
    /// (a key that is refused or rate limited gives way to the next one).
    async fn try_candidate(
        &mut self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        c: &Candidate,
        parsed: &mut Parsed,
        headers: &mut Headers,
    ) -> Result<Tried, GatewayError> {
        let provider = Arc::clone(&self.rt.providers[c.provider]);
        let routing = &self.rt.config.routing;
        let stats = self.rt.stats(c);
        let cfg = &provider.config;
        let Some(_slot) = provider
            .capacity
            .acquire(now_ms(), cfg.max_concurrency, cfg.max_qps)
        else {
            self.pass_over(ctx, &provider, c, AttemptError::AtCapacity);
            return Ok(Tried::Failed);
        };
        let (admitted, transition) = stats.admit(now_ms(), &routing.breaker);
        route_metrics::note_transition(&provider, transition);
        if !admitted {
            self.pass_over(ctx, &provider, c, AttemptError::CircuitOpen);
            return Ok(Tried::Failed);
        }
        let mut tried_keys: Vec<usize> = Vec::new();
        loop {
            if ctx.attempts >= routing.max_attempts {
                return Ok(Tried::Failed);
            }
            let prefer = self
                .sticky
                .filter(|s| s.provider == c.provider)
                .map(|s| s.key_index);
            let key_index = match provider.pick_key(prefer, &tried_keys, routing.ratelimit_reserve)
            {
                KeyChoice::Key(i) => Some(i),
                KeyChoice::Keyless => None,
                KeyChoice::AllCooling => {
                    self.pass_over(ctx, &provider, c, AttemptError::NoUsableKey);
                    return Ok(Tried::Failed);
                }
            };
            let started = Instant::now();
            let (error, refusal) = {
                let _in_flight = stats.start();
                match self
                    .attempt(session, ctx, &provider, c, key_index, parsed, headers)
                    .await?
                {
                    Attempt::Answered => {
                        let outcome = if ctx.client_gone { "client_gone" } else { "ok" };
                        let status = Some(ctx.status).filter(|s| *s != 0);
                        ctx.note_attempt(provider.id(), &c.model, outcome, status, Some(started));
                        return Ok(Tried::Answered);
                    }
                    Attempt::Failed(e, r) => (e, r),
                }
            };
            let status = match &error {
                AttemptError::Status { status, .. } => Some(*status),
                _ => None,
            };
            ctx.note_attempt(
                provider.id(),
                &c.model,
                error.outcome_label(),
                status,
                Some(started),
            );
            metrics::ATTEMPTS
                .with_label_values(&[provider.id(), error.outcome_label()])
                .inc();
            let retryable = matches!(&error, AttemptError::Status { status, .. }
                if provider.config.retryable.contains(*status));
            let request_only = refusal.as_ref().is_some_and(|r| r.request_only);
            let mut other_key = false;
            let key_refused = matches!(
                &error,
                AttemptError::Status {
                    status: 401 | 403 | 429,
                    ..
                }
            );
            if let (true, false, Some(k)) = (key_refused, request_only, key_index) {
                tried_keys.push(k);
                other_key = matches!(
                    provider.pick_key(None, &tried_keys, routing.ratelimit_reserve),
                    KeyChoice::Key(_)
                );
            }
            let d = failover::decide(
                &error,
                FailureContext {
                    retryable,
                    other_key,
                    request_only,
                },
            );
            if let (Some(cause), Some(k)) = (d.cool_key, key_index) {
                let retry_after = match &error {
                    AttemptError::Status { retry_after, .. } => *retry_after,
                    _ => None,
                };
                provider.cool_key(k, cause, retry_after, &routing.cooldowns);
                route_metrics::KEY_COOLDOWNS
                    .with_label_values(&[provider.id(), cause.name()])
                    .inc();
            }
            if d.upstream_fault {
                self.upstream_failed(&provider, &stats);
            }
            match d.next {
                NextStep::NextKey => self.fail(&provider, c, error),
                NextStep::NextCandidate => {
                    self.fail(&provider, c, error);
                    return Ok(Tried::Failed);
                }
                NextStep::Relay => {
                    let Some(refusal) = refusal else {
                        // Only an error status is ever relayed.
                        self.fail(&provider, c, error);
                        return Ok(Tried::Failed);
                    };
                    let message = match &error {
                        AttemptError::Status { message, .. } => message.as_str(),
                        _ => "",
                    };
                    self.relay_refusal(session, ctx, &provider, refusal, message, headers)
                        .await?;
                    return Ok(Tried::Answered);
                }
            }
        }
    }

    /// Counts a failure that says something about the upstream in its
    /// record (which may open its breaker).
    fn upstream_failed(&self, provider: &Provider, stats: &UpstreamStats) {
        let r = &self.rt.config.routing;
        provider.health.record_failure();
        let t = stats.on_failure(now_ms(), &r.scoring, &r.breaker);
        route_metrics::note_transition(provider, t);
    }

    /// A candidate passed over without a request (breaker open, no usable
    /// key, no room): a failure, and a line in the request's history.
    fn pass_over(
        &mut self,
        ctx: &mut RequestCtx,
        provider: &Provider,
        c: &Candidate,
        error: AttemptError,
    ) {
        ctx.note_attempt(provider.id(), &c.model, error.outcome_label(), None, None);
        self.fail(provider, c, error);
    }

    fn fail(&mut self, provider: &Provider, c: &Candidate, error: AttemptError) {
        self.failures.push(FailedAttempt {
            provider: provider.config.id.clone(),
            model: c.model.clone(),
            error,
        });
    }

    /// One attempt: encode, send, and relay a good answer or describe the
    /// failure. Only the client leaving ends it without a failure.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &mut self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        provider: &Provider,
        c: &Candidate,
        key_index: Option<usize>,
        parsed: &mut Parsed,
        headers: &mut Headers,
    ) -> Result<Attempt, GatewayError> {
        let body = self.encoder.encode(provider.config.format, c, parsed)?;
        let target = crate::filters::Target {
            client: self.fmt,
            provider: &provider.config,
            model: &c.model,
            requested: &c.requested,
        };
        let filters = &self.rt.config.filters;
        let body = filters
            .apply_payload(body, &target)
            .map_err(GatewayError::internal)?;
        let edits = filters.header_edits(&target);
        ctx.price = crate::pricing::price_of(&provider.config, &c.model);
        let mut out_headers = provider.auth_headers(provider.key(key_index));
        if provider.config.format == self.fmt {
            out_headers.extend(self.forwarded.iter().cloned());
        }
        let path = provider.request_path(&c.model, parsed.stream);
        ctx.attempts += 1;
        ctx.provider.clone_from(&provider.config.id);
        ctx.upstream_model.clone_from(&c.model);
        let sent_at = Instant::now();
        let left = self.deadline.saturating_duration_since(sent_at);
        let keepalive = self
            .rt
            .config
            .server
            .sse_keepalive
            .filter(|_| parsed.stream);
        let sending = tokio::time::timeout(
            left,
            http::send(
                &self.gw.connector,
                provider,
                Outgoing {
                    method: "POST",
                    path: &path,
                    body,
                    stream: parsed.stream,
                    headers: out_headers,
                    edits: edits.as_ref(),
                },
            ),
        );
        let result =
            match relay::wait_keeping_alive(session, ctx, headers, self.fmt, keepalive, sending)
                .await
            {
                Waited::Ready(Ok(r)) => r,
                Waited::Ready(Err(_)) => return Err(deadline_passed(self.rt)),
                Waited::ClientGone => {
                    ctx.client_gone = true;
                    if ctx.status == 0 {
                        ctx.status = 499;
                    }
                    return Ok(Attempt::Answered);
                }
            };
        ctx.upstream_wait += sent_at.elapsed();
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                let error = match e {
                    SendError::Connect(m) => AttemptError::Connect(m),
                    SendError::Timeout => AttemptError::Timeout,
                    SendError::Io(m) => AttemptError::Io(m),
                };
                return Ok(Attempt::Failed(error, None));
            }
        };
        let reading = ratelimit::parse(|h| resp.header_str(h), now_ms());
        if let (Some(k), Some(r)) = (key_index, reading.clone()) {
            provider.note_ratelimit(k, r);
        }
        let status = resp.status();
        if !(200..300).contains(&status) {
            return Ok(self.refused(resp, provider, reading).await);
        }
        if self.debug {
            headers.push(("x-debug-provider", provider.config.id.clone()));
            headers.push(("x-debug-model", c.model.clone()));
            headers.push(("x-debug-attempts", ctx.attempts.to_string()));
        }
        let plan = RelayPlan {
            client: self.fmt,
            upstream: provider.config.format,
            stream: parsed.stream,
            passthrough: self.encoder.last_was_passthrough,
            model_override: c.logical.then(|| c.requested.clone()),
            include_usage: parsed.include_usage,
            provider_keys: &provider.config.api_keys,
            keepalive,
        };
        match relay::relay(session, ctx, &mut resp, &plan, headers).await {
            Outcome::Done => {
                metrics::ATTEMPTS
                    .with_label_values(&[provider.id(), "ok"])
                    .inc();
                // Streams are judged by their first byte, answers whole.
                let latency = match ctx.first_byte {
                    Some(fb) if parsed.stream => {
                        (ctx.start + fb).saturating_duration_since(sent_at)
                    }
                    _ => sent_at.elapsed(),
                };
                provider.health.record_success(latency);
                let r = &self.rt.config.routing;
                let t = self.rt.stats(c).on_success(
                    now_ms(),
                    latency.as_secs_f64() * 1000.0,
                    &r.scoring,
                );
                route_metrics::note_transition(provider, t);
                if let Some(k) = key_index {
                    provider.key_succeeded(k);
                }
                ctx.served_by = Some(ServedBy {
                    provider: provider.config.id.clone(),
                    model: c.model.clone(),
                    key_index,
                });
                resp.release(&self.gw.connector).await;
                Ok(Attempt::Answered)
            }
            Outcome::ClientGone => Ok(Attempt::Answered),
            Outcome::Failed { reason, status } => {
                let error = AttemptError::BrokenAnswer {
                    reason,
                    timed_out: status == Some(504),
                };
                if ctx.first_byte.is_some() {
                    // Already answered, and closed with an error event.
                    metrics::ATTEMPTS
                        .with_label_values(&[provider.id(), error.outcome_label()])
                        .inc();
                    self.upstream_failed(provider, &self.rt.stats(c));
                    self.fail(provider, c, error);
                    return Ok(Attempt::Answered);
                }
                headers.retain(|(k, _)| !k.starts_with("x-debug-"));
                Ok(Attempt::Failed(error, None))
            }
        }
    }

    /// Reads an error answer (for its message, and to relay it when it is
    /// not retryable) and gives the connection back to the pool.
    async fn refused(
        &self,
        mut resp: Incoming,
        provider: &Provider,
        reading: Option<RateLimitReading>,
    ) -> Attempt {
        let status = resp.status();
        let body = resp.body(MAX_ERROR_BODY).await.unwrap_or_default();
        let retry_after = resp
            .header_str("retry-after")
            .and_then(ratelimit::retry_after_secs);
        let content_type = resp
            .header_str("content-type")
            .unwrap_or("application/json")
            .to_owned();
        resp.release(&self.gw.connector).await;
        let message = upstream_message(&body, status, &provider.config.api_keys)
            .trim_start_matches(": ")
            .to_owned();
        let request_only = status == 429 && refusal_is_request_only(&message, reading.as_ref());
        Attempt::Failed(
            AttemptError::Status {
                status,
                message,
                retry_after,
            },
            Some(Refusal {
                status,
                content_type,
                body,
                request_only,
            }),
        )
    }

    /// Relays an upstream's refusal of the request itself (a client error
    /// it found): as it came when the formats match and it holds no key,
    /// else in the client's error shape.
    async fn relay_refusal(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        provider: &Provider,
        refusal: Refusal,
        message: &str,
        headers: &Headers,
    ) -> Result<(), GatewayError> {
        let status = refusal.status;
        if ctx.inflight_stream {
            // Keep-alives opened the stream: the refusal becomes its error event.
            return Err(GatewayError::upstream(
                status,
                format!("{}{message}", provider.config.id),
            ));
        }
        ctx.status = status;
        let mut h = headers.clone();
        h.retain(|(k, _)| !k.starts_with("x-debug-"));
        let written = if provider.config.format == self.fmt
            && !contains_key(&refusal.body, &provider.config.api_keys)
        {
            respond::write(session, status, &refusal.content_type, refusal.body, &h).await
        } else {
            let body = translate::error_body(self.fmt, status, message);
            respond::json(session, status, body, &h).await
        };
        written.map_err(|e| GatewayError::internal(format!("writing the response: {e}")))
    }
}
