//! Trying candidates, one request's attempts ([`Attempts`]): each candidate
//! is reached (`reach.rs`: sent with each usable key and awaited up to its
//! answer's head, touching neither the client nor the request's context,
//! so it can race a hedge: `hedging.rs`), then a good answer is relayed
//! (`finish.rs`). How each attempt ended is recorded in one place
//! (`record.rs`); what follows a failed attempt is `failover::decide`'s.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use apiproxy_translate::Format;
use opentelemetry::trace::SpanId;
use parking_lot::Mutex;
use pingora::proxy::Session;

use super::ctx::{AttemptLog, RequestCtx};
use super::encode::BodyEncoder;
use super::failover::{self, AttemptError, FailedAttempt};
use super::hedge;
use super::refusal::Refusal;
use super::relay::{self, Waited};
use super::request::Parsed;
use super::respond::Headers;
use super::Gateway;
use crate::error::GatewayError;
use crate::routing::{Candidate, Runtime};
use crate::upstream::capacity::Slot;
use crate::upstream::http::Incoming;
use crate::upstream::stats::InFlight;
use crate::upstream::Provider;

mod count;
mod finish;
mod hedging;
mod reach;
mod record;

/// The upstream (and key) a session is bound to: tried first.
#[derive(Debug, Clone, Copy)]
pub struct StickyTarget {
    /// Index into [`Runtime::providers`].
    pub provider: usize,
    pub api_key_index: usize,
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
    /// The attempts ask for a token count (`proxy/count.rs`): each
    /// provider's count endpoint, its number written in the client's
    /// shape, never hedged.
    count: bool,
    /// The request's place in a trace: each attempt sends a `traceparent`
    /// of its own span (`telemetry.otlp`).
    trace: Option<crate::telemetry::RequestTrace>,
    /// Without tracing: the client's `traceparent` and `tracestate`,
    /// passed on as they came.
    passed_trace: Vec<(&'static str, String)>,
    /// The span of each candidate's latest attempt (by the candidate's
    /// address), for the side of a hedged race given up.
    spans: Mutex<Vec<(usize, SpanId)>>,
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
    api_key_index: Option<usize>,
    resp: Incoming,
    sent_at: Instant,
    /// The body sent was the client's own (same format).
    passthrough: bool,
    /// The wire format it was sent in (and is answered in).
    wire: Format,
    /// Its attempt span (a traced request).
    span: Option<SpanId>,
    _hold: Hold<'r>,
}

/// A good answer's head, as one attempt got it.
struct Sent {
    resp: Incoming,
    sent_at: Instant,
    /// The body sent was the client's own (same format).
    passthrough: bool,
    /// The wire format it was sent in.
    wire: Format,
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
            keep_log: ctx.keep_attempt_log,
            sent: AtomicU32::new(0),
            hedged: AtomicBool::new(false),
            owner: ctx.state_owner().map(str::to_owned),
            input_estimate: crate::limits::token_estimate(fmt, |_| None, parsed.body_bytes, 0)
                .input,
            deadline: Instant::now() + rt.config.routing.request_timeout,
            count: false,
            trace: ctx.trace.as_deref().cloned(),
            passed_trace: match (&ctx.trace, &gw.telemetry) {
                (None, None) => {
                    crate::telemetry::client_trace_headers(&session.req_header().headers)
                }
                _ => Vec::new(),
            },
            spans: Mutex::new(Vec::new()),
        }
    }

    /// The same attempts asking each candidate for a token count instead
    /// of a generation.
    pub fn counting(mut self) -> Self {
        self.count = true;
        self
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
            hedge.map(|(_, after)| crate::timer::sleep_until(started + after)),
            start_hedge,
            Reached::decisive,
        );
        let left = self.deadline.saturating_duration_since(started);
        let waiting = crate::timer::timeout(left, racing);
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
        self.flush_log(ctx);
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
            Reached::Answer(a) if self.count => {
                let tried = Box::pin(self.finish_count(session, ctx, a, headers)).await;
                self.flush_log(ctx);
                tried
            }
            Reached::Answer(a) => {
                let tried = Box::pin(self.finish(session, ctx, a, parsed, headers)).await;
                self.flush_log(ctx);
                tried
            }
            Reached::Refused { provider, refusal } => {
                self.flush_log(ctx);
                Box::pin(refusal.relay(self.fmt, session, ctx, provider, headers)).await?;
                Tried::Answered
            }
            Reached::Error(e) => return Err(e),
            Reached::Failed => {
                self.flush_log(ctx);
                if let Some(f) = self.failures.lock().last() {
                    ctx.provider.clone_from(&f.provider);
                    ctx.upstream_model.clone_from(&f.model);
                }
                Tried::Failed
            }
        };
        Ok((tried, hedge_index))
    }

    /// A new span for an attempt of `c`, when the request is traced
    /// (noted as `c`'s latest when it is sampled).
    fn attempt_span(&self, c: &Candidate) -> Option<SpanId> {
        let t = self.trace.as_ref()?;
        let span = t.attempt_span_id();
        if t.sampled {
            let at = std::ptr::from_ref(c) as usize;
            let mut spans = self.spans.lock();
            spans.retain(|(c, _)| *c != at);
            spans.push((at, span));
        }
        Some(span)
    }

    /// The span of `c`'s latest attempt.
    fn span_of(&self, c: &Candidate) -> Option<SpanId> {
        let at = std::ptr::from_ref(c) as usize;
        self.spans
            .lock()
            .iter()
            .find(|(c, _)| *c == at)
            .map(|s| s.1)
    }

    /// The trace headers an attempt sends: its own `traceparent` when the
    /// request is traced, else the client's as they came.
    fn trace_headers(&self, span: Option<SpanId>, out: &mut Vec<(&'static str, String)>) {
        match (&self.trace, span) {
            (Some(t), Some(span)) => {
                out.push(("traceparent", t.traceparent(span)));
                if let Some(s) = &t.tracestate {
                    out.push(("tracestate", s.clone()));
                }
            }
            _ => out.extend(self.passed_trace.iter().cloned()),
        }
    }

    /// Moves the history lines recorded since the last look into the
    /// request's (`record` has no context: it may run on a hedge's side).
    fn flush_log(&self, ctx: &mut RequestCtx) {
        for line in self.log.lock().drain(..) {
            ctx.push_attempt(line);
        }
    }
}

/// `x-debug: true` asks for the `x-debug-*` response headers.
fn wants_debug(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(crate::header_name::X_DEBUG)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true") || v.as_bytes() == b"1")
}
