//! Reaching one candidate: each usable key in turn, sent and awaited up
//! to a good answer's head (a stream's first chunk too). Touches neither
//! the client nor the request's context, so a hedge can race it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use opentelemetry::trace::SpanId;

use super::record::{AttemptOutcome, Ended};
use super::{Answer, Attempts, Failure, Hold, Reached, Sent};
use crate::error::GatewayError;
use crate::proxy::failover::{AttemptError, NextStep};
use crate::proxy::refusal::Refusal;
use crate::proxy::relay;
use crate::proxy::request::Parsed;
use crate::routing::metrics as route_metrics;
use crate::routing::Candidate;
use crate::upstream::http::{self, Outgoing};
use crate::upstream::ratelimit;
use crate::upstream::{now_ms, KeyChoice, Provider};

impl Attempts<'_> {
    /// Tries candidate `c` with each of its provider's usable keys in turn
    /// (a key refused, rate limited or at its own capacity gives way to the
    /// next) until one gives a good answer's head. Writes nothing to the
    /// client: it may race a hedge.
    pub(super) async fn reach<'r>(&'r self, c: &'r Candidate, parsed: &'r Parsed) -> Reached<'r> {
        let provider: &'r Provider = &self.rt.providers[c.provider];
        let routing = &self.rt.config.routing;
        let cfg = &provider.config;
        let Some(slot) = provider
            .capacity
            .acquire(now_ms(), cfg.max_concurrency, cfg.max_qps)
        else {
            self.record(
                Ended::new(provider, c),
                AttemptOutcome::Failed(AttemptError::AtCapacity),
            );
            return Reached::Failed;
        };
        let stats = &c.stats;
        let (admitted, transition) = stats.admit(now_ms(), &routing.breaker);
        route_metrics::note_transition(provider, transition);
        if !admitted {
            self.record(
                Ended::new(provider, c),
                AttemptOutcome::Failed(AttemptError::CircuitOpen),
            );
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
                .map(|s| s.api_key_index);
            let (api_key_index, key_slot) =
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
                        self.record(
                            Ended::new(provider, c),
                            AttemptOutcome::Failed(AttemptError::AtCapacity),
                        );
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
                        self.record(Ended::new(provider, c), AttemptOutcome::Failed(e));
                        return Reached::Failed;
                    }
                };
            let in_flight = stats.start();
            let started = Instant::now();
            let span = self.attempt_span(c);
            let (error, refusal) = match self.send(provider, c, api_key_index, parsed, span).await {
                Ok(Ok(Sent {
                    resp,
                    sent_at,
                    passthrough,
                    wire,
                })) => {
                    return Reached::Answer(Box::new(Answer {
                        provider,
                        c,
                        api_key_index,
                        resp,
                        sent_at,
                        passthrough,
                        wire,
                        span,
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
            let ended = Ended {
                api_key_index,
                sent_at: Some(started),
                status,
                request_only: refusal.as_ref().is_some_and(|r| r.request_only),
                relayable: refusal.is_some(),
                tried_keys: Some(&mut tried_keys),
                span,
                ..Ended::new(provider, c)
            };
            match self.record(ended, AttemptOutcome::Failed(error)) {
                NextStep::NextKey => {}
                NextStep::NextCandidate => return Reached::Failed,
                NextStep::Relay => {
                    if let Some(refusal) = refusal {
                        return Reached::Refused { provider, refusal };
                    }
                    return Reached::Failed;
                }
            }
        }
    }

    /// One attempt with one key: encode, send, and wait for a good
    /// answer's head (for a stream, its first chunk too: the first byte is
    /// what a hedge races for). `Ok(Err)` describes the failure.
    pub(super) async fn send(
        &self,
        provider: &Provider,
        c: &Candidate,
        api_key_index: Option<usize>,
        parsed: &Parsed,
        span: Option<SpanId>,
    ) -> Result<Result<Sent, Failure>, GatewayError> {
        // Counts go to the kind's own count endpoint (OpenAI kinds are
        // counted locally): never to the Responses API of `wire_api: auto`.
        let wire = if self.count {
            provider.model_format(&c.model)
        } else {
            provider.wire_format(self.fmt, &c.model)
        };
        let (body, passthrough, defaulted) = {
            let mut enc = self.encoder.lock();
            let auto_cache = provider.config.prompt_cache_auto;
            let body = if self.count {
                enc.encode_count(wire, c, parsed)?
            } else {
                enc.encode(wire, c, parsed, auto_cache)?
            };
            (body, enc.last_was_passthrough, enc.last_defaulted)
        };
        let target = crate::config::filters::Target {
            client: self.fmt,
            provider: &provider.config,
            model: &c.model,
            requested: &c.requested,
            defaulted,
        };
        let filters = &self.rt.config.filters;
        // Payload rules shape a generation (they set and drop its
        // settings); a count endpoint refuses those, so a count gets none.
        let body = if self.count {
            body
        } else {
            filters
                .apply_payload(body, &target)
                .map_err(GatewayError::internal)?
        };
        let body = provider.finish_body(wire, self.count, body);
        let edits = filters.header_edits(&target);
        // An attempt from here on, even when no token can be had (it
        // fails like a refused connection).
        self.sent.fetch_add(1, Ordering::Relaxed);
        let token = match provider.access_token(self.gw.connector()).await {
            Ok(t) => t,
            Err(e) => return Ok(Err((AttemptError::Send(e), None))),
        };
        let key = token.as_deref().or(provider.api_key(api_key_index));
        let mut out_headers = provider.auth_headers(key);
        if wire == self.fmt {
            let kind = provider.kind();
            let forwarded = self.forwarded.iter().filter(|(n, _)| kind.forwards(n));
            out_headers.extend(forwarded.cloned());
        }
        self.trace_headers(span, &mut out_headers);
        let path = if self.count {
            // OpenAI kinds are counted locally (`proxy/count.rs`), never sent.
            provider.count_tokens_path(&c.model).ok_or_else(|| {
                GatewayError::internal(format!(
                    "provider `{}` has no count endpoint",
                    provider.config.id
                ))
            })?
        } else {
            provider.request_path(wire, &c.model, self.stream)
        };
        let sent_at = Instant::now();
        let sent = http::send(
            self.gw.connector(),
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
            Err(e) => return Ok(Err((AttemptError::Send(e), None))),
        };
        let names = provider.kind().ratelimit_headers();
        let reading = ratelimit::parse(names, |h| resp.header_str(h), now_ms());
        if let (Some(k), Some(r)) = (api_key_index, reading.clone()) {
            provider.note_ratelimit(k, r);
        }
        if !(200..300).contains(&resp.status()) {
            let missing = matches!(resp.status(), 404 | 405);
            // Boxed: a refusal is the rare path, its future is not made
            // part of every attempt's.
            let refused = Box::pin(Refusal::read(
                self.gw.connector(),
                resp,
                provider,
                reading,
                wire,
            ))
            .await;
            if missing && wire != provider.model_format(&c.model) && provider.config.responses_auto
            {
                // `wire_api: auto` and no Responses API here: the same key
                // again, translated to chat (its 404 was no failure of it).
                provider.note_responses_missing();
                return Box::pin(self.send(provider, c, api_key_index, parsed, span)).await;
            }
            return Ok(Err(refused));
        }
        let sse = resp
            .header_str("content-type")
            .is_some_and(|t| t.starts_with(wire.stream_content_type()));
        if self.stream && sse {
            if let Err(e) = resp.peek().await {
                let error = AttemptError::BrokenAnswer(relay::RelayFault::Upstream(e));
                return Ok(Err((error, None)));
            }
        }
        Ok(Ok(Sent {
            resp,
            sent_at,
            passthrough,
            wire,
        }))
    }
}
