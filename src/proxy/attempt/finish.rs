//! Relaying a good answer, and recording how that ended: a failure before
//! anything reached the client is the candidate's (the next may answer).

use pingora::proxy::Session;

use super::record::{AttemptOutcome, Ended};
use super::{Answer, Attempts, Tried};
use crate::proxy::ctx::{RequestCtx, ServedBy};
use crate::proxy::failover::AttemptError;
use crate::proxy::relay::{self, Outcome, RelayPlan};
use crate::proxy::request::Parsed;
use crate::proxy::respond::Headers;

impl Attempts<'_> {
    /// Relays a good answer. A failure before anything reached the client
    /// is the candidate's (the next one may answer); after that the stream
    /// has ended with an error event and the request is over.
    pub(super) async fn finish(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut answer: Box<Answer<'_>>,
        parsed: &Parsed,
        headers: &mut Headers,
    ) -> Tried {
        // The answer stays in its box for the stream's life: moved out, it
        // would take ~1.2 KiB more of this future per open stream.
        let (provider, c, api_key_index, sent_at) = (
            answer.provider,
            answer.c,
            answer.api_key_index,
            answer.sent_at,
        );
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
            let serving = crate::proxy::session::Serving {
                provider_id: &provider.config.id,
                model_id: &c.model,
                api_key_index,
            };
            Box::pin(crate::proxy::session::claim_before_answer(
                store.as_ref(),
                ctx,
                serving,
            ))
            .await;
        }
        let plan = RelayPlan {
            client: self.fmt,
            upstream: answer.wire,
            stream: parsed.stream,
            passthrough: answer.passthrough,
            model_override: c.logical.then(|| c.requested.clone()),
            include_usage: parsed.include_usage,
            provider_keys: &provider.config.secrets,
            kind: provider.kind(),
            keepalive: self.keepalive,
        };
        let relayed = relay::relay(session, ctx, &mut answer.resp, &plan, headers).await;
        let ended = Ended {
            api_key_index,
            sent_at: Some(sent_at),
            status: Some(ctx.status).filter(|s| *s != 0),
            span: answer.span,
            ..Ended::new(provider, c)
        };
        match relayed {
            Outcome::Done => {
                // Streams are judged by their first byte, answers whole.
                let latency = match ctx.first_byte {
                    Some(fb) if parsed.stream => {
                        (ctx.start + fb).saturating_duration_since(sent_at)
                    }
                    _ => sent_at.elapsed(),
                };
                let ended = Ended {
                    latency: Some(latency),
                    ..ended
                };
                self.record(ended, AttemptOutcome::Ok);
                // Only a 200 answer (not a refusal relayed in its place).
                if let Some(fill) = ctx.cache_fill.take().filter(|_| ctx.status == 200) {
                    let store = self.gw.state.store().await;
                    fill.store(store.as_ref(), &provider.config.id, &c.model);
                }
                ctx.served_by = Some(ServedBy {
                    provider: provider.config.id.clone(),
                    model: c.model.clone(),
                    api_key_index,
                });
                // Boxed: inline, the pool's release future would take
                // ~5 KiB of this future during the whole stream.
                let Answer { resp, _hold, .. } = *answer;
                Box::pin(resp.release(self.gw.connector())).await;
                drop(_hold);
                Tried::Answered
            }
            Outcome::ClientGone => {
                self.record(ended, AttemptOutcome::ClientGone);
                Tried::Answered
            }
            Outcome::Failed(fault) => {
                // Already answered, and closed with an error event: the
                // stream is over. Before that, a broken answer always
                // moves on to the next candidate.
                let answered = ctx.first_byte.is_some();
                if !answered {
                    crate::proxy::respond::strip_debug(headers);
                }
                let ended = Ended {
                    status: None,
                    answered,
                    ..ended
                };
                self.record(
                    ended,
                    AttemptOutcome::Failed(AttemptError::BrokenAnswer(fault)),
                );
                if answered {
                    Tried::Answered
                } else {
                    Tried::Failed
                }
            }
        }
    }
}
