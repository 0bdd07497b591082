//! A token count's good answer: the provider's number read (Anthropic's
//! `input_tokens`, Gemini's `totalTokens`) and written in the client's
//! shape. An answer without a number is the candidate's failure (the next
//! may answer), never a count of 0.

use apiproxy_translate::{count, TranslateError};
use pingora::proxy::Session;

use super::record::{AttemptOutcome, Ended};
use super::{Answer, Attempts, Tried};
use crate::proxy::ctx::RequestCtx;
use crate::proxy::failover::AttemptError;
use crate::proxy::relay::RelayFault;
use crate::proxy::respond::{self, Headers};

/// Largest count answer read: a count is a few dozen bytes (Gemini adds a
/// per-modality breakdown).
const MAX_COUNT_ANSWER: usize = 64 * 1024;

impl Attempts<'_> {
    /// Reads a count answer and writes it in the client's shape.
    pub(super) async fn finish_count(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        answer: Box<Answer<'_>>,
        headers: &mut Headers,
    ) -> Tried {
        let Answer {
            provider,
            c,
            api_key_index,
            mut resp,
            sent_at,
            span,
            _hold,
            ..
        } = *answer;
        ctx.provider.clone_from(&provider.config.id);
        ctx.upstream_model.clone_from(&c.model);
        let ended = Ended {
            api_key_index,
            sent_at: Some(sent_at),
            status: Some(resp.status()),
            span,
            ..Ended::new(provider, c)
        };
        let counted = match resp.body(MAX_COUNT_ANSWER).await {
            Ok(body) => {
                count::count_of_answer(provider.model_format(&c.model), &body).ok_or_else(|| {
                    RelayFault::Unreadable(TranslateError::new(
                        "the provider's count answer holds no token count",
                    ))
                })
            }
            Err(e) => Err(RelayFault::Upstream(e)),
        };
        let tokens = match counted {
            Ok(n) => n,
            Err(fault) => {
                let fault = fault.scrubbed(&provider.config.api_keys);
                let ended = Ended {
                    status: None,
                    ..ended
                };
                self.record(
                    ended,
                    AttemptOutcome::Failed(AttemptError::BrokenAnswer(fault)),
                );
                return Tried::Failed;
            }
        };
        resp.release(self.gw.connector()).await;
        drop(_hold);
        // No latency: a count's says nothing of how fast the upstream
        // generates.
        self.record(ended, AttemptOutcome::Ok);
        if self.debug {
            headers.push(("x-debug-provider", provider.config.id.clone()));
            headers.push(("x-debug-model", c.model.clone()));
            headers.push(("x-debug-attempts", ctx.attempts.to_string()));
        }
        ctx.status = 200;
        let body = count::count_answer(self.fmt, tokens);
        if respond::json(session, 200, body, headers).await.is_err() {
            ctx.client_gone = true;
        }
        Tried::Answered
    }
}
