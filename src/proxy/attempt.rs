//! Trying candidates: each attempt is sent and awaited up to its answer's
//! head ([`Attempts::reach`], which touches neither the client nor the
//! request's context, so two can race: `hedge.rs`), then a good answer is
//! relayed ([`Attempts::finish`]). What follows a failed attempt is
//! `failover::decide`'s.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use apiproxy_translate::Format;
use parking_lot::Mutex;
use pingora::proxy::Session;

use super::ctx::{AttemptLog, RequestCtx, ServedBy};
use super::encode::BodyEncoder;
use super::failover::{self, AttemptError, FailedAttempt, FailureContext, NextStep};
use super::hedge::{self, Side};
use super::refusal::Refusal;
use super::relay::{self, Outcome, RelayPlan, Waited};
use super::request::Parsed;
use super::respond::Headers;
use super::Gateway;
use crate::error::GatewayError;
use crate::metrics;
use crate::routing::metrics as route_metrics;
use crate::routing::{Candidate, Runtime};
use crate::upstream::capacity::Slot;
use crate::upstream::http::{self, Incoming, Outgoing, SendError};
use crate::upstream::ratelimit;
use crate::upstream::stats::{InFlight, UpstreamStats};
use crate::upstream::{now_ms, KeyChoice, Provider};

/// The upstream (and key) a session is bound to: tried first.
#[derive(Debug, Clone, Copy)]
pub struct StickyTarget {
    /// Index into [`Runtime::providers`].
    pub provider: usize,
    pub key_index: usize,
}

/// How trying one candidate ended.
pub enum Tried {
    /// The client has its answer (or left): stop.
    Answered,
    /// Every usable key failed: the next candidate.
    Failed,
}

/// The state of a request's attempts. Shared by the two sides of a hedge,
/// hence the locks (never held across an await).
pub struct Attempts<'a> {
    gw: &'a Gateway,
    rt: &'a Runtime,
    fmt: Format,
    stream: bool,
    debug: bool,
    /// The client's keep-alive interval, for a stream.
    keepalive: Option<Duration>,
    forwarded: Vec<(&'static str, String)>,
    encoder: Mutex<BodyEncoder>,
    sticky: Option<StickyTarget>,
    failures: Mutex<Vec<FailedAttempt>>,
    /// Attempts and candidates passed over since the last look, for the
    /// request's history (`ctx.attempt_log`, the console's request detail).
    log: Mutex<Vec<AttemptLog>>,
    /// Whether that history is kept (the console collects).
    keep_log: bool,
    /// Attempts sent so far, a hedge's included.
    sent: AtomicU32,
    /// The request has had its hedge (at most one).
    hedged: AtomicBool,
    /// The request's client key, whose share of the hedge budget a hedge
    /// takes (`RequestCtx::state_owner`).
    owner: Option<String>,
    /// The request's input in tokens, estimated from its size: what an
    /// attempt a hedged race gave up is charged (`hedge::Abandoned`).
    input_estimate: u64,
    /// `routing.request_timeout_ms` from the start: past it, 504.
    pub deadline: Instant,
}

/// How reaching one candidate ended, before anything was written to the
/// client.
enum Reached<'r> {
    /// A 2xx answer's head (and a stream's first chunk): to relay.
    Answer(Box<Answer<'r>>),
    /// The upstream refused the request itself: its refusal is the answer.
    Refused {
        provider: &'r Provider,
        refusal: Refusal,
    },
    /// The request cannot be sent (its body does not translate): the
    /// client's error.
    Error(GatewayError),
    /// Every usable key failed, each failure recorded: the next candidate.
    Failed,
}

impl Reached<'_> {
    /// Ends a hedge race: anything but a failure.
    fn decisive(&self) -> bool {
        !matches!(self, Reached::Failed)
    }
}

/// A good answer whose body is still to be relayed, with what it holds.
struct Answer<'r> {
    provider: &'r Provider,
    c: &'r Candidate,
    key_index: Option<usize>,
    resp: Incoming,
    sent_at: Instant,
    /// The body sent was the client's own (same format).
    passthrough: bool,
    _hold: Hold<'r>,
}

/// A good answer's head, as one attempt got it.
struct Sent {
    resp: Incoming,
    sent_at: Instant,
    /// The body sent was the client's own (same format).
    passthrough: bool,
}

/// Why one attempt failed, and the upstream's refusal when it sent one.
type Failure = (AttemptError, Option<Refusal>);

/// What an attempt holds until its answer is relayed: a unit of its
/// provider's and its key's capacity, and its place in the in-flight count.
struct Hold<'r> {
    _provider: Slot<'r>,
    _key: Option<Slot<'r>>,
    _in_flight: InFlight,
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

impl<'a> Attempts<'a> {
    /// The attempts of one request.
    pub fn new(
        gw: &'a Gateway,
        rt: &'a Runtime,
        session: &Session,
        ctx: &RequestCtx,
        fmt: Format,
        parsed: &Parsed,
        sticky: Option<StickyTarget>,
    ) -> Self {
        Attempts {
            gw,
            rt,
            fmt,
            stream: parsed.stream,
            debug: wants_debug(session),
            keepalive: rt.config.server.sse_keepalive.filter(|_| parsed.stream),
            forwarded: super::request::forwarded_headers(fmt, session),
            encoder: Mutex::new(BodyEncoder::new(fmt, rt.config.server.translate_limits())),
            sticky,
            failures: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            keep_log: rt.config.console.collect,
            sent: AtomicU32::new(0),
            hedged: AtomicBool::new(false),
            owner: ctx.state_owner().map(str::to_owned),
            input_estimate: crate::limits::token_estimate(fmt, |_| None, parsed.body_bytes, 0)
                .input,
            deadline: Instant::now() + rt.config.routing.request_timeout,
        }
    }

    /// Attempts sent so far.
    pub fn sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Whether another pass over the candidates may help (see
    /// `failover::worth_another_round`); the pass's failures are then
    /// forgotten.
    pub fn start_another_round(&self) -> bool {
        let mut f = self.failures.lock();
        let worth = failover::worth_another_round(&f);
        if worth {
            f.clear();
        }
        worth
    }

    /// The error when every candidate failed.
    pub fn all_failed(&self) -> GatewayError {
        failover::all_failed(&self.failures.lock())
    }

    /// Tries `candidates[i]`, hedged on a later candidate of the same name
    /// when its logical model says so. Returns the hedge's index when one
    /// was started (the caller does not try it again this pass).
    pub async fn try_candidate(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        candidates: &[Candidate],
        i: usize,
        parsed: &Parsed,
        headers: &mut Headers,
    ) -> Result<(Tried, Option<usize>), GatewayError> {
        let c = &candidates[i];
        let hedge = self.hedge_target(candidates, i);
        let mut hedge_started: Option<Instant> = None;
        let started = Instant::now();
        let start_hedge = || {
            let (h, _) = hedge?;
            self.start_hedge(&candidates[h], parsed, &mut hedge_started)
        };
        // Each side is boxed once where it is made: a future is moved (and
        // copied whole) by every wrapper it passes through, and an attempt's
        // is several KiB; inline, the race and the timeout around it made
        // the request's future ~90 KiB, copied into Pingora's box for each
        // request.
        let racing = hedge::race(
            Box::pin(self.reach(c, parsed)),
            hedge.map(|(_, after)| after),
            start_hedge,
            Reached::decisive,
        );
        let left = self.deadline.saturating_duration_since(started);
        let waiting = tokio::time::timeout(left, racing);
        // Boxed too: done before the answer is relayed, so inline it would
        // only be ~2 KiB of dead space in every open stream's future.
        let waited = Box::pin(relay::wait_keeping_alive(
            session,
            ctx,
            headers,
            self.fmt,
            self.keepalive,
            waiting,
        ))
        .await;
        for line in self.log.lock().drain(..) {
            ctx.push_attempt(line);
        }
        let raced = match waited {
            Waited::Ready(Ok(r)) => r,
            Waited::Ready(Err(_)) => return Err(deadline_passed(self.rt)),
            Waited::ClientGone => {
                ctx.client_gone = true;
                if ctx.status == 0 {
                    ctx.status = 499;
                }
                return Ok((Tried::Answered, None));
            }
        };
        ctx.upstream_wait += started.elapsed();
        ctx.attempts = self.sent();
        let hedge_index = hedge.map(|(h, _)| h).filter(|_| raced.hedged);
        if let Some(h) = hedge_index {
            self.settle_race(ctx, &candidates[h], c, &raced, started, hedge_started);
        }
        let tried = match raced.outcome {
            Reached::Answer(a) => Box::pin(self.finish(session, ctx, a, parsed, headers)).await,
            Reached::Refused { provider, refusal } => {
                Box::pin(refusal.relay(self.fmt, session, ctx, provider, headers)).await?;
                Tried::Answered
            }
            Reached::Error(e) => return Err(e),
            Reached::Failed => {
                if let Some(f) = self.failures.lock().last() {
                    ctx.provider.clone_from(&f.provider);
                    ctx.upstream_model.clone_from(&f.model);
                }
                Tried::Failed
            }
        };
        Ok((tried, hedge_index))
    }

    /// The candidate a hedge of `candidates[i]` would go to, and when: the
    /// next one of the same name that can take a request now, when that
    /// name is a logical model with `hedge_after_ms` and the request has
    /// had no hedge yet.
    fn hedge_target(&self, candidates: &[Candidate], i: usize) -> Option<(usize, Duration)> {
        let c = &candidates[i];
        if !c.logical || self.hedged.load(Ordering::Relaxed) {
            return None;
        }
        let model = self.rt.config.logical_model(&c.requested)?;
        // A non-streaming answer's first byte is the whole answer: its
        // hedge runs two generations to the end, so only when asked.
        if !self.stream && !model.hedge_non_stream {
            return None;
        }
        let after = model.hedge_after?;
        let now = now_ms();
        let h = (i + 1..candidates.len()).find(|&j| {
            candidates[j].requested == c.requested
                && self.rt.inputs(&candidates[j], now).available()
        })?;
        Some((h, after))
    }

    /// Starts the hedge on `c` when the attempt cap and the hedge budget
    /// (the floor of hedges at once, then the key's share) allow.
    fn start_hedge<'r>(
        &'r self,
        c: &'r Candidate,
        parsed: &'r Parsed,
        started: &mut Option<Instant>,
    ) -> Option<impl std::future::Future<Output = Reached<'r>> + 'r> {
        let provider = self.rt.providers[c.provider].id();
        if self.sent() >= self.rt.config.routing.max_attempts {
            return None;
        }
        let routing = &self.rt.config.routing;
        let Some(ticket) = self.rt.hedges.try_take(
            self.owner.as_deref(),
            routing.hedge_budget_percent,
            routing.hedge_min_concurrency,
        ) else {
            route_metrics::HEDGES
                .with_label_values(&[provider, "skipped_budget"])
                .inc();
            return None;
        };
        self.hedged.store(true, Ordering::Relaxed);
        route_metrics::HEDGES
            .with_label_values(&[provider, "started"])
            .inc();
        log::debug!("hedging {} on {provider}/{}", c.requested, c.model);
        *started = Some(Instant::now());
        Some(Box::pin(async move {
            // Counted as running until the race is over.
            let _running = ticket;
            self.reach(c, parsed).await
        }))
    }

    /// Counts how a hedged race ended and teaches routing about the side
    /// given up: it waited at least that long.
    fn settle_race(
        &self,
        ctx: &mut RequestCtx,
        hedge_c: &Candidate,
        first_c: &Candidate,
        raced: &hedge::Raced<Reached<'_>>,
        first_started: Instant,
        hedge_started: Option<Instant>,
    ) {
        let hedge_provider = self.rt.providers[hedge_c.provider].id();
        if matches!(raced.outcome, Reached::Answer(_)) {
            let outcome = match raced.from {
                Side::Hedge => "won",
                Side::First => "lost",
            };
            route_metrics::HEDGES
                .with_label_values(&[hedge_provider, outcome])
                .inc();
        }
        let abandoned = match raced.abandoned {
            Some(Side::First) => Some((first_c, first_started)),
            Some(Side::Hedge) => hedge_started.map(|t| (hedge_c, t)),
            None => None,
        };
        if let Some((c, since)) = abandoned {
            let p = &self.rt.providers[c.provider];
            let provider = p.id();
            ctx.note_attempt(provider, &c.model, "hedge_cancelled", None, Some(since));
            // The provider read it: its tokens are the key's too.
            ctx.abandoned = Some(hedge::Abandoned::new(p, &c.model, self.input_estimate));
            let waited = since.elapsed().as_secs_f64() * 1000.0;
            self.rt
                .stats(c)
                .on_abandoned(now_ms(), waited, &self.rt.config.routing.scoring);
        }
    }

    /// Tries candidate `c` with each of its provider's usable keys in turn
    /// (a key refused, rate limited or at its own capacity gives way to the
    /// next) until one gives a good answer's head. Writes nothing to the
    /// client: it may race a hedge.
    async fn reach<'r>(&'r self, c: &'r Candidate, parsed: &'r Parsed) -> Reached<'r> {
        let provider: &'r Provider = &self.rt.providers[c.provider];
        let routing = &self.rt.config.routing;
        let cfg = &provider.config;
        let Some(slot) = provider
            .capacity
            .acquire(now_ms(), cfg.max_concurrency, cfg.max_qps)
        else {
            self.pass_over(provider, c, AttemptError::AtCapacity);
            return Reached::Failed;
        };
        let stats = self.rt.stats(c);
        let (admitted, transition) = stats.admit(now_ms(), &routing.breaker);
        route_metrics::note_transition(provider, transition);
        if !admitted {
            self.pass_over(provider, c, AttemptError::CircuitOpen);
            return Reached::Failed;
        }
        let mut tried_keys: Vec<usize> = Vec::new();
        // A key was skipped for its own capacity (then "no key" is a 429).
        let mut busy = false;
        loop {
            if self.sent() >= routing.max_attempts {
                return Reached::Failed;
            }
            let prefer = self
                .sticky
                .filter(|s| s.provider == c.provider)
                .map(|s| s.key_index);
            let (key_index, key_slot) =
                match provider.pick_key(prefer, &tried_keys, routing.ratelimit_reserve) {
                    KeyChoice::Key(k) => match provider.acquire_key(k) {
                        Some(s) => (Some(k), s),
                        None => {
                            busy = true;
                            tried_keys.push(k);
                            continue;
                        }
                    },
                    KeyChoice::Keyless => (None, None),
                    KeyChoice::AllBusy => {
                        self.pass_over(provider, c, AttemptError::AtCapacity);
                        return Reached::Failed;
                    }
                    KeyChoice::AllCooling => {
                        let e = if busy {
                            AttemptError::AtCapacity
                        } else if let Some(retry_after) = provider.rate_limited_for() {
                            AttemptError::KeysRateLimited { retry_after }
                        } else {
                            AttemptError::NoUsableKey
                        };
                        self.pass_over(provider, c, e);
                        return Reached::Failed;
                    }
                };
            let in_flight = stats.start();
            let started = Instant::now();
            let (error, refusal) = match self.send(provider, c, key_index, parsed).await {
                Ok(Ok(Sent {
                    resp,
                    sent_at,
                    passthrough,
                })) => {
                    return Reached::Answer(Box::new(Answer {
                        provider,
                        c,
                        key_index,
                        resp,
                        sent_at,
                        passthrough,
                        _hold: Hold {
                            _provider: slot,
                            _key: key_slot,
                            _in_flight: in_flight,
                        },
                    }))
                }
                Ok(Err(failed)) => failed,
                Err(e) => return Reached::Error(e),
            };
            drop((in_flight, key_slot));
            let status = match &error {
                AttemptError::Status { status, .. } => Some(*status),
                _ => None,
            };
            self.note(provider, c, error.outcome_label(), status, Some(started));
            let request_only = refusal.as_ref().is_some_and(|r| r.request_only);
            match self.after_failure(
                provider,
                &stats,
                key_index,
                &error,
                request_only,
                &mut tried_keys,
            ) {
                NextStep::NextKey => self.fail(provider, c, error),
                NextStep::NextCandidate => {
                    self.fail(provider, c, error);
                    return Reached::Failed;
                }
                NextStep::Relay => {
                    return match refusal {
                        Some(refusal) => Reached::Refused { provider, refusal },
                        None => {
                            // Only an error status is ever relayed.
                            self.fail(provider, c, error);
                            Reached::Failed
                        }
                    };
                }
            }
        }
    }

    /// One attempt with one key: encode, send, and wait for a good
    /// answer's head (for a stream, its first chunk too: the first byte is
    /// what a hedge races for). `Ok(Err)` describes the failure.
    async fn send(
        &self,
        provider: &Provider,
        c: &Candidate,
        key_index: Option<usize>,
        parsed: &Parsed,
    ) -> Result<Result<Sent, Failure>, GatewayError> {
        let (body, passthrough) = {
            let mut enc = self.encoder.lock();
            let body = enc.encode(provider.config.format, c, parsed)?;
            (body, enc.last_was_passthrough)
        };
        let target = crate::config::filters::Target {
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
        let mut out_headers = provider.auth_headers(provider.key(key_index));
        if provider.config.format == self.fmt {
            out_headers.extend(self.forwarded.iter().cloned());
        }
        let path = provider.request_path(&c.model, self.stream);
        self.sent.fetch_add(1, Ordering::Relaxed);
        let sent_at = Instant::now();
        let sent = http::send(
            &self.gw.connector,
            provider,
            Outgoing {
                method: "POST",
                path: &path,
                body,
                stream: self.stream,
                headers: out_headers,
                edits: edits.as_ref(),
            },
        )
        .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let error = match e {
                    SendError::Connect(m, _) => AttemptError::Connect(m),
                    SendError::Timeout => AttemptError::Timeout,
                    SendError::Io(m, _) => AttemptError::Io(m),
                };
                return Ok(Err((error, None)));
            }
        };
        let reading = ratelimit::parse(|h| resp.header_str(h), now_ms());
        if let (Some(k), Some(r)) = (key_index, reading.clone()) {
            provider.note_ratelimit(k, r);
        }
        if !(200..300).contains(&resp.status()) {
            // Boxed: a refusal is the rare path, its future is not made
            // part of every attempt's.
            return Ok(Err(Box::pin(Refusal::read(
                &self.gw.connector,
                resp,
                provider,
                reading,
            ))
            .await));
        }
        let sse = resp
            .header_str("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if self.stream && sse {
            if let Err(e) = resp.peek().await {
                let error = AttemptError::BrokenAnswer {
                    timed_out: matches!(e, SendError::Timeout),
                    reason: e.to_string(),
                };
                return Ok(Err((error, None)));
            }
        }
        Ok(Ok(Sent {
            resp,
            sent_at,
            passthrough,
        }))
    }

    /// Counts a failed attempt and decides what follows it: cools the key,
    /// counts an upstream fault, and notes the key as tried when another
    /// may do better.
    #[allow(clippy::too_many_arguments)]
    fn after_failure(
        &self,
        provider: &Provider,
        stats: &UpstreamStats,
        key_index: Option<usize>,
        error: &AttemptError,
        request_only: bool,
        tried_keys: &mut Vec<usize>,
    ) -> NextStep {
        let routing = &self.rt.config.routing;
        metrics::ATTEMPTS
            .with_label_values(&[provider.id(), error.outcome_label()])
            .inc();
        let retryable = matches!(error, AttemptError::Status { status, .. }
            if provider.config.retryable.contains(*status));
        let key_refused = matches!(
            error,
            AttemptError::Status {
                status: 401 | 403 | 429,
                ..
            }
        );
        let mut other_key = false;
        if let (true, false, Some(k)) = (key_refused, request_only, key_index) {
            tried_keys.push(k);
            other_key = provider.has_key_left(tried_keys, routing.ratelimit_reserve);
        }
        let d = failover::decide(
            error,
            FailureContext {
                retryable,
                other_key,
                request_only,
            },
        );
        if let (Some(cause), Some(k)) = (d.cool_key, key_index) {
            let retry_after = match error {
                AttemptError::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            provider.cool_key(k, cause, retry_after, &routing.cooldowns);
            route_metrics::KEY_COOLDOWNS
                .with_label_values(&[provider.id(), cause.name()])
                .inc();
        }
        if d.upstream_fault {
            self.upstream_failed(provider, stats);
        }
        d.next
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
    fn pass_over(&self, provider: &Provider, c: &Candidate, error: AttemptError) {
        self.note(provider, c, error.outcome_label(), None, None);
        self.fail(provider, c, error);
    }

    /// A line in the request's history (`started`: `None` when nothing was
    /// sent).
    fn note(
        &self,
        provider: &Provider,
        c: &Candidate,
        outcome: &'static str,
        status: Option<u16>,
        started: Option<Instant>,
    ) {
        if self.keep_log {
            let line = AttemptLog::new(provider.id(), &c.model, outcome, status, started);
            self.log.lock().push(line);
        }
    }

    fn fail(&self, provider: &Provider, c: &Candidate, error: AttemptError) {
        // The message was scrubbed of the provider's keys when it was read.
        log::debug!(
            "attempt failed: {}/{}: {error}",
            provider.config.id,
            c.model
        );
        self.failures.lock().push(FailedAttempt {
            provider: provider.config.id.clone(),
            model: c.model.clone(),
            error,
        });
    }

    /// Relays a good answer. A failure before anything reached the client
    /// is the candidate's (the next one may answer); after that the stream
    /// has ended with an error event and the request is over.
    async fn finish(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut answer: Box<Answer<'_>>,
        parsed: &Parsed,
        headers: &mut Headers,
    ) -> Tried {
        // The answer stays in its box for the stream's life: moved out, it
        // would take ~1.2 KiB more of this future per open stream.
        let (provider, c, key_index, sent_at) =
            (answer.provider, answer.c, answer.key_index, answer.sent_at);
        ctx.provider.clone_from(&provider.config.id);
        ctx.upstream_model.clone_from(&c.model);
        ctx.price = crate::pricing::price_of(&provider.config, &c.model);
        if self.debug {
            headers.push(("x-debug-provider", provider.config.id.clone()));
            headers.push(("x-debug-model", c.model.clone()));
            headers.push(("x-debug-attempts", ctx.attempts.to_string()));
        }
        if ctx.session_id.is_some() {
            // Before the first byte: the client's next turn may reach
            // another replica as soon as it has this answer. Boxed: done
            // before the relay, it stays out of an open stream's future.
            let store = self.gw.state.store().await;
            let serving = super::session::Serving {
                provider_id: &provider.config.id,
                model_id: &c.model,
                key_index,
            };
            Box::pin(super::session::claim_before_answer(
                store.as_ref(),
                ctx,
                serving,
            ))
            .await;
        }
        let plan = RelayPlan {
            client: self.fmt,
            upstream: provider.config.format,
            stream: parsed.stream,
            passthrough: answer.passthrough,
            model_override: c.logical.then(|| c.requested.clone()),
            include_usage: parsed.include_usage,
            provider_keys: &provider.config.api_keys,
            keepalive: self.keepalive,
        };
        let stats = self.rt.stats(c);
        let relayed = relay::relay(session, ctx, &mut answer.resp, &plan, headers).await;
        let (outcome, status) = match &relayed {
            Outcome::Done => ("ok", Some(ctx.status).filter(|s| *s != 0)),
            Outcome::ClientGone => ("client_gone", Some(ctx.status).filter(|s| *s != 0)),
            Outcome::Failed { .. } => ("stream_error", None),
        };
        ctx.note_attempt(provider.id(), &c.model, outcome, status, Some(sent_at));
        match relayed {
            Outcome::Done => {
                metrics::inc(&metrics::ATTEMPTS, &[provider.id(), "ok"]);
                // Streams are judged by their first byte, answers whole.
                let latency = match ctx.first_byte {
                    Some(fb) if parsed.stream => {
                        (ctx.start + fb).saturating_duration_since(sent_at)
                    }
                    _ => sent_at.elapsed(),
                };
                provider.health.record_success(latency);
                let r = &self.rt.config.routing;
                let t = stats.on_success(now_ms(), latency.as_secs_f64() * 1000.0, &r.scoring);
                route_metrics::note_transition(provider, t);
                if let Some(k) = key_index {
                    provider.key_succeeded(k);
                }
                ctx.served_by = Some(ServedBy {
                    provider: provider.config.id.clone(),
                    model: c.model.clone(),
                    key_index,
                });
                // Boxed: inline, the pool's release future would take
                // ~5 KiB of this future during the whole stream.
                let Answer { resp, _hold, .. } = *answer;
                Box::pin(resp.release(&self.gw.connector)).await;
                drop(_hold);
                Tried::Answered
            }
            Outcome::ClientGone => Tried::Answered,
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
                    self.upstream_failed(provider, &stats);
                    self.fail(provider, c, error);
                    return Tried::Answered;
                }
                super::respond::strip_debug(headers);
                // A broken answer always moves on to the next candidate.
                self.after_failure(provider, &stats, key_index, &error, false, &mut Vec::new());
                self.fail(provider, c, error);
                Tried::Failed
            }
        }
    }
}

/// `x-debug: true` asks for the `x-debug-*` response headers.
fn wants_debug(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get("x-debug")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true") || v.as_bytes() == b"1")
}
