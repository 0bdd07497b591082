//! An attempt's hedge: where and when it goes (the next candidate of the
//! same logical model, within the attempt cap and the hedge budget), and
//! how a hedged race is settled (counted, and the side given up charged
//! and taught to routing). The race itself is `proxy::hedge`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::record::{AttemptOutcome, Ended};
use super::{Attempts, Reached};
use crate::proxy::ctx::RequestCtx;
use crate::proxy::hedge::{self, Side};
use crate::proxy::request::Parsed;
use crate::routing::metrics as route_metrics;
use crate::routing::Candidate;
use crate::upstream::now_ms;

impl Attempts<'_> {
    /// The candidate a hedge of `candidates[i]` would go to, and when: the
    /// next one of the same name that can take a request now, when that
    /// name is a logical model with `hedge_after_ms` and the request has
    /// had no hedge yet.
    pub(super) fn hedge_target(
        &self,
        candidates: &[Candidate],
        i: usize,
    ) -> Option<(usize, Duration)> {
        let c = &candidates[i];
        // A count answers in milliseconds: nothing to race.
        if !c.logical || self.count || self.hedged.load(Ordering::Relaxed) {
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
    pub(super) fn start_hedge<'r>(
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
    pub(super) fn settle_race(
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
            let ended = Ended {
                sent_at: Some(since),
                latency: Some(since.elapsed()),
                span: self.span_of(c),
                ..Ended::new(p, c)
            };
            self.record(ended, AttemptOutcome::HedgeCancelled);
            // The provider read it: its tokens are the key's too.
            ctx.abandoned = Some(Box::new(hedge::Abandoned::new(
                p,
                &c.model,
                self.input_estimate,
            )));
        }
    }
}
