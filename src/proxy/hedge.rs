//! Hedged requests: when an attempt has not answered `hedge_after_ms`
//! after it started, a second one starts on the next upstream, and the
//! first decisive outcome wins. The loser's future is dropped on the spot,
//! which closes its upstream connection (an unfinished HTTP/1.1 exchange is
//! never pooled). What counts as decisive, and which upstream the hedge
//! goes to, is the caller's (`attempt/hedging.rs`); this file races, and says what
//! the side given up is charged ([`Abandoned`]).

use std::future::Future;

use apiproxy_translate::Usage;

use crate::config::Price;
use crate::metrics;
use crate::routing::Runtime;
use crate::upstream::Provider;

/// An attempt a hedged race gave up after sending it. The provider read
/// the request (and may have generated an answer nobody sees), so the
/// request's client key is charged its input, estimated from the request's
/// size, at that upstream's price: in its tpm, its budget, and the token
/// and cost metrics under that upstream's labels. Its output is unknown
/// (the connection was closed) and counts as none.
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub provider: String,
    pub model: String,
    pub price: Option<Price>,
    pub usage: Usage,
}

impl Abandoned {
    /// The attempt on `provider`'s `model`, of a request of about
    /// `input_tokens` tokens of input.
    pub fn new(provider: &Provider, model: &str, input_tokens: u64) -> Self {
        Abandoned {
            provider: provider.config.id.clone(),
            model: model.to_owned(),
            price: crate::pricing::price_of(&provider.config, model),
            usage: Usage {
                input_tokens,
                ..Usage::default()
            },
        }
    }

    /// Its cost, when its model is priced.
    pub fn cost_usd(&self) -> Option<f64> {
        Some(crate::pricing::cost_usd(self.price.as_ref()?, &self.usage))
    }

    /// Counts its tokens and cost in the metrics (`key`: the client key's
    /// name, `-` without one).
    pub fn count(&self, rt: &Runtime, key: &str) {
        let model = metrics::upstream_model_label(rt, &self.provider, &self.model);
        metrics::add_tokens(
            &metrics::TOKENS.with_label_values(&[self.provider.as_str(), model, "input"]),
            self.usage.input_tokens,
        );
        if let Some(c) = self.cost_usd() {
            metrics::COST
                .with_label_values(&[self.provider.as_str(), model, key])
                .inc_by(c);
        }
    }
}

/// Which side of a race an outcome came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The attempt that was running when the hedge was due.
    First,
    /// The hedge.
    Hedge,
}

/// How a race ended.
#[derive(Debug)]
pub struct Raced<T> {
    pub outcome: T,
    pub from: Side,
    /// A hedge was started.
    pub hedged: bool,
    /// The side that was still running when the other won, now dropped.
    pub abandoned: Option<Side>,
}

/// Runs `first`; when it has not finished once `wait` has (`None`: never),
/// calls `start_hedge` and, when that gives a future, races the two. `wait`
/// is polled only while `first` is pending (the gateway's is a sleep on
/// Pingora's shared timer, `crate::timer`; the tests' one on Tokio's paused
/// clock). The
/// first outcome that is `decisive` wins and the other side is dropped at
/// once; an outcome that is not (a failure, already recorded by the side
/// itself) leaves the other side running, and its outcome is the race's.
pub async fn race<T, F, W, H, S, D>(
    first: F,
    wait: Option<W>,
    start_hedge: S,
    decisive: D,
) -> Raced<T>
where
    F: Future<Output = T>,
    W: Future<Output = ()>,
    H: Future<Output = T>,
    S: FnOnce() -> Option<H>,
    D: Fn(&T) -> bool,
{
    let mut first = std::pin::pin!(first);
    let alone = |outcome| Raced {
        outcome,
        from: Side::First,
        hedged: false,
        abandoned: None,
    };
    let Some(wait) = wait else {
        return alone(first.await);
    };
    let hedge = tokio::select! {
        biased;
        outcome = &mut first => return alone(outcome),
        _ = wait => start_hedge(),
    };
    let Some(hedge) = hedge else {
        return alone(first.await);
    };
    let mut hedge = std::pin::pin!(hedge);
    let (outcome, from) = tokio::select! {
        outcome = &mut first => (outcome, Side::First),
        outcome = &mut hedge => (outcome, Side::Hedge),
    };
    if decisive(&outcome) {
        let abandoned = match from {
            Side::First => Side::Hedge,
            Side::Hedge => Side::First,
        };
        return Raced {
            outcome,
            from,
            hedged: true,
            abandoned: Some(abandoned),
        };
    }
    // One side failed: the other is the request's chance now.
    let (outcome, from) = match from {
        Side::First => (hedge.await, Side::Hedge),
        Side::Hedge => (first.await, Side::First),
    };
    Raced {
        outcome,
        from,
        hedged: true,
        abandoned: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// An outcome after `ms`; `Err` is a failure (not decisive). Notes
    /// whether it was dropped before it finished.
    fn side(
        ms: u64,
        outcome: Result<&'static str, &'static str>,
        dropped: Arc<AtomicBool>,
    ) -> impl Future<Output = Result<&'static str, &'static str>> {
        struct Flag(Arc<AtomicBool>, bool);
        impl Drop for Flag {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
        }
        async move {
            let mut f = Flag(dropped, false);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            f.1 = true;
            outcome
        }
    }

    fn flag() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_attempt_loses_to_the_hedge_and_is_dropped() {
        let (a, b) = (flag(), flag());
        let r = race(
            side(3_000, Ok("slow"), a.clone()),
            Some(tokio::time::sleep(Duration::from_millis(200))),
            || Some(side(50, Ok("fast"), b.clone())),
            Result::is_ok,
        )
        .await;
        assert_eq!(
            (r.outcome, r.from, r.hedged),
            (Ok("fast"), Side::Hedge, true)
        );
        assert_eq!(r.abandoned, Some(Side::First));
        assert!(a.load(Ordering::SeqCst), "the loser was dropped unfinished");
        assert!(!b.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_first_attempt_starts_no_hedge() {
        let started = AtomicBool::new(false);
        let r = race(
            side(100, Ok("first"), flag()),
            Some(tokio::time::sleep(Duration::from_millis(200))),
            || {
                started.store(true, Ordering::SeqCst);
                Some(side(1, Ok("hedge"), flag()))
            },
            Result::is_ok,
        )
        .await;
        assert_eq!((r.outcome, r.hedged), (Ok("first"), false));
        assert!(!started.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_keeps_the_other_side_running() {
        // The hedge fails first: the slow first attempt still answers.
        let r = race(
            side(1_000, Ok("first"), flag()),
            Some(tokio::time::sleep(Duration::from_millis(200))),
            || Some(side(10, Err("hedge failed"), flag())),
            Result::is_ok,
        )
        .await;
        assert_eq!(
            (r.outcome, r.from, r.abandoned),
            (Ok("first"), Side::First, None)
        );
        // The first fails after the hedge started: the hedge answers.
        let r = race(
            side(300, Err("first failed"), flag()),
            Some(tokio::time::sleep(Duration::from_millis(200))),
            || Some(side(500, Ok("hedge"), flag())),
            Result::is_ok,
        )
        .await;
        assert_eq!((r.outcome, r.from), (Ok("hedge"), Side::Hedge));
        // Both fail: the last failure is the outcome.
        let r = race(
            side(300, Err("first failed"), flag()),
            Some(tokio::time::sleep(Duration::from_millis(200))),
            || Some(side(500, Err("hedge failed"), flag())),
            Result::is_ok,
        )
        .await;
        assert_eq!((r.outcome, r.hedged), (Err("hedge failed"), true));
    }

    #[tokio::test(start_paused = true)]
    async fn no_hedge_when_none_may_start() {
        let r = race(
            side(1_000, Ok("first"), flag()),
            Some(tokio::time::sleep(Duration::from_millis(200))),
            || None::<std::future::Ready<Result<&'static str, &'static str>>>,
            Result::is_ok,
        )
        .await;
        assert_eq!((r.outcome, r.hedged), (Ok("first"), false));
        let r = race(
            side(1_000, Ok("first"), flag()),
            None::<tokio::time::Sleep>,
            || -> Option<std::future::Ready<_>> { panic!("no hedge without hedge_after_ms") },
            Result::is_ok,
        )
        .await;
        assert_eq!(r.outcome, Ok("first"));
    }
}
