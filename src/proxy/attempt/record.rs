//! How one attempt ended ([`AttemptOutcome`], with its metric label) and
//! its one record (`Attempts::record`): the request's history,
//! `apiproxy_upstream_attempts_total`, the key's and the upstream's records
//! (health counts, latency, breaker, cooldowns) and the failures the final
//! error names. What follows a failure is `failover::decide`'s.

use std::time::{Duration, Instant};

use super::Attempts;
use crate::metrics;
use crate::proxy::ctx::AttemptLog;
use crate::proxy::failover::{self, AttemptError, FailedAttempt, FailureContext, NextStep};
use crate::routing::metrics as route_metrics;
use crate::routing::Candidate;
use crate::upstream::{now_ms, Provider};

/// How one attempt ended; its label is `apiproxy_upstream_attempts_total`'s
/// `outcome` and the request history's.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The answer was relayed to its end.
    Ok,
    /// The client left while it was relayed.
    ClientGone,
    /// The side of a hedged race given up when the other answered.
    HedgeCancelled,
    /// The attempt failed (or its candidate was passed over).
    Failed(AttemptError),
}

impl AttemptOutcome {
    /// The metric's and the history's label (a fixed set).
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::ClientGone => "client_gone",
            AttemptOutcome::HedgeCancelled => "hedge_cancelled",
            AttemptOutcome::Failed(e) => e.outcome_label(),
        }
    }
}

/// One attempt as its end is recorded (`Attempts::record`).
pub(super) struct Ended<'r> {
    pub(super) provider: &'r Provider,
    pub(super) c: &'r Candidate,
    pub(super) api_key_index: Option<usize>,
    /// When its request left; `None`: the candidate was passed over.
    pub(super) sent_at: Option<Instant>,
    /// The upstream's status, when it answered.
    pub(super) status: Option<u16>,
    /// For an answer: how long it took (to a stream's first byte), `None`
    /// for a token count's; for a hedge given up: how long it had waited.
    pub(super) latency: Option<Duration>,
    /// A refusal about this request alone (see `refusal.rs`).
    pub(super) request_only: bool,
    /// The upstream's refusal was read and can be relayed.
    pub(super) relayable: bool,
    /// Part of the answer already reached the client.
    pub(super) answered: bool,
    /// The keys tried for this candidate, when another key may follow.
    pub(super) tried_keys: Option<&'r mut Vec<usize>>,
    /// Its attempt span (a traced request).
    pub(super) span: Option<opentelemetry::trace::SpanId>,
}

impl<'r> Ended<'r> {
    /// A candidate passed over: nothing sent, no key.
    pub(super) fn new(provider: &'r Provider, c: &'r Candidate) -> Self {
        Ended {
            provider,
            c,
            api_key_index: None,
            sent_at: None,
            status: None,
            latency: None,
            request_only: false,
            relayable: false,
            answered: false,
            tried_keys: None,
            span: None,
        }
    }
}

impl Attempts<'_> {
    /// Records how one attempt (or a candidate passed over) ended, in one
    /// place: the request's history, `apiproxy_upstream_attempts_total`,
    /// the key's and the upstream's records (health, latency, breaker,
    /// cooldowns) and the failures the final error names. For a failure,
    /// returns what follows it (`failover::decide`).
    pub(super) fn record(&self, ended: Ended<'_>, outcome: AttemptOutcome) -> NextStep {
        let Ended {
            provider,
            c,
            api_key_index,
            sent_at,
            status,
            latency,
            request_only,
            relayable,
            answered,
            tried_keys,
            span,
        } = ended;
        if self.keep_log {
            let mut line =
                AttemptLog::new(provider.id(), &c.model, outcome.label(), status, sent_at);
            line.span_id = span;
            self.log.lock().push(line);
        }
        let routing = &self.rt.config.routing;
        // A candidate passed over sent nothing: no attempt to count.
        if sent_at.is_some() && matches!(outcome, AttemptOutcome::Ok | AttemptOutcome::Failed(_)) {
            metrics::inc(&metrics::ATTEMPTS, &[provider.id(), outcome.label()]);
        }
        let error = match outcome {
            AttemptOutcome::Ok => {
                provider.tally.record_success();
                let stats = &c.stats;
                // An answer without a latency (a token count) teaches
                // routing nothing about how fast the upstream generates.
                let t = match latency {
                    Some(l) => {
                        stats.on_success(now_ms(), l.as_secs_f64() * 1000.0, &routing.scoring)
                    }
                    None => stats.on_untimed_success(now_ms(), &routing.scoring),
                };
                route_metrics::note_transition(provider, t);
                if let Some(k) = api_key_index {
                    provider.key_succeeded(k);
                }
                return NextStep::NextCandidate;
            }
            AttemptOutcome::ClientGone => return NextStep::NextCandidate,
            AttemptOutcome::HedgeCancelled => {
                // It waited at least that long: routing learns as much.
                let waited = latency.unwrap_or_default().as_secs_f64() * 1000.0;
                c.stats.on_abandoned(now_ms(), waited, &routing.scoring);
                return NextStep::NextCandidate;
            }
            AttemptOutcome::Failed(error) => error,
        };
        let next = if sent_at.is_none() {
            NextStep::NextCandidate
        } else if answered {
            // The client has part of this answer: nothing follows, but the
            // upstream failed it.
            self.upstream_failed(provider, c);
            NextStep::NextCandidate
        } else {
            self.decide(provider, c, api_key_index, &error, request_only, tried_keys)
        };
        if next == NextStep::Relay && relayable {
            // The upstream's refusal is the answer, not a failure.
            return next;
        }
        // The message was scrubbed of the provider's keys when it was read.
        log::debug!(
            "attempt failed: {}/{}: {}",
            provider.config.id,
            c.model,
            crate::error::Chain(&error)
        );
        self.failures.lock().push(FailedAttempt {
            provider: provider.config.id.clone(),
            model: c.model.clone(),
            error,
        });
        match next {
            // Only an error status is ever relayed.
            NextStep::Relay => NextStep::NextCandidate,
            other => other,
        }
    }

    /// What follows a failed attempt that was sent (`failover::decide`),
    /// and what it changes: the key cooled, the upstream's fault counted,
    /// the key noted as tried when another may do better.
    pub(super) fn decide(
        &self,
        provider: &Provider,
        c: &Candidate,
        api_key_index: Option<usize>,
        error: &AttemptError,
        request_only: bool,
        tried_keys: Option<&mut Vec<usize>>,
    ) -> NextStep {
        let routing = &self.rt.config.routing;
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
        if let (true, false, Some(k), Some(tried)) =
            (key_refused, request_only, api_key_index, tried_keys)
        {
            tried.push(k);
            other_key = provider.has_key_left(tried, routing.ratelimit_reserve);
        }
        let d = failover::decide(
            error,
            FailureContext {
                retryable,
                other_key,
                request_only,
            },
        );
        if let (Some(cause), Some(k)) = (d.cool_key, api_key_index) {
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
            self.upstream_failed(provider, c);
        }
        d.next
    }

    /// Counts a failure that says something about the upstream in its
    /// record (which may open its breaker).
    pub(super) fn upstream_failed(&self, provider: &Provider, c: &Candidate) {
        let r = &self.rt.config.routing;
        provider.tally.record_failure();
        let t = c.stats.on_failure(now_ms(), &r.scoring, &r.breaker);
        route_metrics::note_transition(provider, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::http::{SendError, SendKind};

    /// The labels are a user contract (`apiproxy_upstream_attempts_total`,
    /// the console's request history): they never change.
    #[test]
    fn outcome_labels() {
        let failed = AttemptOutcome::Failed;
        let cases = [
            (AttemptOutcome::Ok, "ok"),
            (AttemptOutcome::ClientGone, "client_gone"),
            (AttemptOutcome::HedgeCancelled, "hedge_cancelled"),
            (failed(AttemptError::CircuitOpen), "circuit_open"),
            (failed(AttemptError::AtCapacity), "at_capacity"),
            (failed(AttemptError::NoUsableKey), "no_key"),
            (
                failed(AttemptError::KeysRateLimited { retry_after: 1 }),
                "keys_rate_limited",
            ),
            (
                failed(AttemptError::Send(SendError::new(SendKind::Connect, "x"))),
                "connect_error",
            ),
            (
                failed(AttemptError::Send(SendError::new(SendKind::Timeout, "x"))),
                "timeout",
            ),
            (
                failed(AttemptError::Send(SendError::new(SendKind::Io, "x"))),
                "io_error",
            ),
            (
                failed(AttemptError::BrokenAnswer(
                    crate::proxy::relay::RelayFault::NoEvent,
                )),
                "stream_error",
            ),
        ];
        for (outcome, label) in cases {
            assert_eq!(outcome.label(), label, "{outcome:?}");
        }
        for (status, label) in [(429, "429"), (404, "4xx"), (503, "5xx")] {
            let e = AttemptError::Status {
                status,
                message: String::new(),
                retry_after: None,
            };
            assert_eq!(failed(e).label(), label);
        }
    }
}
