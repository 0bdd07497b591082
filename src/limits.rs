//! The limits of a generation request: the buckets it counts in (its
//! client key's first, then the gateway-wide `limits`), its key's budget,
//! the tokens and the cost it reserves at admission, the 429/503 and the
//! `x-ratelimit-*` headers, and the settlement of the reservations with what
//! the answer used after it.
//!
//! Admission is one store call ([`Store::admit_spending`]): every limit, the
//! budget included, is checked before anything is counted, so a request
//! refused by its key's limit uses none of the gateway's, and a refused
//! request consumes nothing at all. Token limits and budgets see
//! reservations: a request reserves an estimate of its tokens (the body's
//! size for the input, its `max_tokens` or the format's equivalent, else
//! `limits.default_output_tokens`, for each choice it asks for) and of its
//! cost, so concurrent requests cannot all slip under a `tpm` or a budget
//! that none of them has counted against yet.
//!
//! Every token a provider generates for a client is charged to it: once
//! the first byte reached the client the request is served, and when the
//! provider's usage is missing (a client that left before the last event)
//! or partial (a stream cut short), it is estimated from what was relayed
//! ([`charged_usage`], the one estimate for tpm, budget and the cost
//! metric) and the request keeps at least its reservation
//! ([`settled_amount`]). A [`Charge`] is what settles a reservation; charges
//! add up (a hedge's loser is charged too).

use std::time::Duration;

use apiproxy_store::{
    Admission, Deferred, LimitBucket, LimitKind, RateDecision, Reservation, SpendState, Store,
};
use apiproxy_translate::{Format, Usage};
use serde_json::Value;

use crate::config::{ClientKey, Config};
use crate::error::GatewayError;
use crate::pricing::budget::{micros, BudgetAsk};

/// Bytes of request body counted as one input token in the estimate (the
/// usual English ratio; JSON punctuation makes it generous).
const BYTES_PER_TOKEN: usize = 4;

/// The name of the bucket every request counts in with `limits.rpm`/`tpm`.
const GLOBAL: &str = "global";

/// The prefix of a client key's bucket name (`key:` and its owner id).
const CLIENT_KEY_BUCKET_PREFIX: &str = "key:";

/// The name of the bucket a client key counts in, by its owner id
/// (`ClientKey::owner_id`): the one place it is built.
pub fn client_key_bucket(owner_id: &str) -> String {
    format!("{CLIENT_KEY_BUCKET_PREFIX}{owner_id}")
}

/// The most choices (`n`, `candidateCount`) an estimate multiplies by: a
/// client sending a huge `n` reserves a lot, not an overflow.
const MAX_CHOICES: u64 = 128;

/// The buckets a request with `key` counts in, its key's first.
pub fn buckets_for(key: Option<&ClientKey>, config: &Config) -> Vec<LimitBucket> {
    let mut buckets = Vec::with_capacity(2);
    if let Some(k) = key {
        // A key that sets no limit has `auth.default_key_rpm`/`tpm`.
        let rpm = k.rpm.or(config.auth.default_key_rpm);
        let tpm = k.tpm.or(config.auth.default_key_tpm);
        if rpm.is_some() || tpm.is_some() {
            buckets.push(LimitBucket {
                name: client_key_bucket(k.owner_id()),
                rpm,
                tpm,
            });
        }
    }
    if config.global_rpm.is_some() || config.global_tpm.is_some() {
        buckets.push(LimitBucket {
            name: GLOBAL.to_owned(),
            rpm: config.global_rpm,
            tpm: config.global_tpm,
        });
    }
    buckets
}

/// The tokens a request may use, estimated before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// The body's size in tokens.
    pub input: u64,
    /// The most output it asks for, over every choice.
    pub output: u64,
    /// The output cap the request gave, per choice (`None`: it gave none).
    pub max_tokens: Option<u64>,
}

impl Estimate {
    /// Input and output together: what a `tpm` reserves.
    pub fn tokens(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// The tokens a request may use, estimated before it is sent: its body's
/// size in tokens, and the most output it asks for (`max_tokens`,
/// `max_completion_tokens`, `max_output_tokens`, Gemini's
/// `generationConfig.maxOutputTokens`; without one `default_output`) times
/// the choices it asks for (`n`, Gemini's `candidateCount`).
/// `top_level` reads one top-level member of the body.
pub fn token_estimate(
    fmt: Format,
    top_level: impl Fn(&str) -> Option<Value>,
    body_bytes: usize,
    default_output: u64,
) -> Estimate {
    let input = body_bytes.div_ceil(BYTES_PER_TOKEN).max(1) as u64;
    let field = |path: &[&str]| {
        let (first, rest) = path.split_first()?;
        let v = top_level(first)?;
        rest.iter().try_fold(&v, |v, k| v.get(k))?.as_u64()
    };
    let (cap, choices) = match fmt {
        Format::OpenAiChat => (
            field(&["max_completion_tokens"]).or_else(|| field(&["max_tokens"])),
            field(&["n"]),
        ),
        Format::OpenAiResponses => (field(&["max_output_tokens"]), None),
        Format::Anthropic => (field(&["max_tokens"]), None),
        Format::Bedrock => (field(&["inferenceConfig", "maxTokens"]), None),
        Format::Gemini => (
            field(&["generationConfig", "maxOutputTokens"])
                .or_else(|| field(&["generation_config", "max_output_tokens"])),
            field(&["generationConfig", "candidateCount"])
                .or_else(|| field(&["generation_config", "candidate_count"])),
        ),
    };
    let choices = choices.unwrap_or(1).clamp(1, MAX_CHOICES);
    Estimate {
        input,
        output: cap.unwrap_or(default_output).saturating_mul(choices),
        max_tokens: cap,
    }
}

/// The usage of an answer whose provider reported none (a client that left
/// before the last event, a provider that does not report it): the input
/// as estimated at admission, the output from the bytes of text relayed.
/// The one estimator for tpm, budget and the cost metric.
pub fn estimated_usage(input_estimate: u64, relayed_output_bytes: u64) -> Usage {
    Usage {
        input_tokens: input_estimate,
        output_tokens: relayed_output_bytes.div_ceil(BYTES_PER_TOKEN as u64),
        ..Usage::default()
    }
}

/// The usage an answer is charged with, and whether it was estimated:
/// nothing when nothing was `served` (no byte reached the client); the
/// provider's report when the answer was whole; else (a stream `cut_short`,
/// the client gone or the upstream broken, before its last event) at least
/// the estimate from the output relayed, since a report seen so far may be
/// partial (Anthropic's first event says 1 output token) or missing
/// (OpenAI's comes last).
pub fn charged_usage(
    reported: Option<Usage>,
    served: bool,
    cut_short: bool,
    input_estimate: u64,
    relayed_output_bytes: u64,
) -> (Option<Usage>, bool) {
    if !served {
        return (reported, false);
    }
    let estimate = estimated_usage(input_estimate, relayed_output_bytes);
    match reported {
        None => (Some(estimate), true),
        Some(mut u) if cut_short && estimate.output_tokens > u.output_tokens => {
            u.output_tokens = estimate.output_tokens;
            (Some(u), true)
        }
        Some(u) => (Some(u), false),
    }
}

/// What an answer is charged to its client: tokens and money. Charges add
/// up (an answer and a hedge's loser).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Charge {
    pub tokens: u64,
    /// The cost in USD (0 for an unpriced model).
    pub cost_usd: f64,
    /// The usage was estimated ([`estimated_usage`]): the reservation is
    /// kept when it is larger.
    pub estimated: bool,
}

impl Charge {
    /// What `usage` costs at `price` (`None`: unpriced, no money).
    pub fn of(usage: &Usage, price: Option<&crate::config::Price>, estimated: bool) -> Charge {
        Charge {
            tokens: usage.total(),
            cost_usd: price.map_or(0.0, |p| crate::pricing::cost_usd(p, usage)),
            estimated,
        }
    }
}

/// Both charges together (an answer and a hedge's loser).
impl std::ops::Add for Charge {
    type Output = Charge;

    fn add(self, other: Charge) -> Charge {
        Charge {
            tokens: self.tokens.saturating_add(other.tokens),
            cost_usd: self.cost_usd + other.cost_usd,
            estimated: self.estimated || other.estimated,
        }
    }
}

/// What a reservation becomes at settlement: `charged` (`None`: nothing
/// was served, the reservation is released), at least the reservation
/// when the charge was estimated.
pub fn settled_amount(reserved: u64, charged: Option<u64>, estimated: bool) -> u64 {
    match charged {
        None => 0,
        Some(n) if estimated => n.max(reserved),
        Some(n) => n,
    }
}

/// Tokens reserved at admission, to be replaced by the real usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReservation {
    /// The buckets with a `tpm` the request was admitted in.
    buckets: Vec<String>,
    reservation: Reservation,
}

/// A cost reserved on a budget at admission, to be replaced by the real cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendReservation {
    /// The budget's counter.
    name: String,
    /// Millionths of a dollar.
    reserved: u64,
    ttl: Duration,
}

/// What an admitted request reserved: tokens of its `tpm` windows, money
/// of its key's budget.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// `None` when no bucket has a `tpm`.
    pub tokens: Option<TokenReservation>,
    /// `None` without a budget.
    pub spend: Option<SpendReservation>,
}

impl Reserved {
    /// Whether anything is to be settled.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_none() && self.spend.is_none()
    }

    /// Queues the settlement: each reservation is replaced by what
    /// `charge` says (`None`: nothing reached the client, released).
    pub fn settle(self, store: &dyn Store, charge: Option<Charge>) {
        let estimated = charge.is_some_and(|c| c.estimated);
        if let Some(t) = self.tokens {
            let used = settled_amount(t.reservation.tokens, charge.map(|c| c.tokens), estimated);
            store.defer(Deferred::Settle {
                buckets: t.buckets,
                reservation: t.reservation,
                used,
            });
        }
        if let Some(s) = self.spend {
            let spent = settled_amount(s.reserved, charge.map(|c| micros(c.cost_usd)), estimated);
            store.defer(Deferred::Spend {
                name: s.name,
                reserved: s.reserved,
                spent,
                ttl: s.ttl,
            });
        }
    }
}

/// An admitted request: its headers and what it reserved.
#[derive(Debug)]
pub struct Admitted {
    /// `x-ratelimit-*` and `x-budget-*`.
    pub headers: Vec<(&'static str, String)>,
    pub reserved: Reserved,
}

/// Admits the request (one store call: rate limits and budget) or refuses
/// it: 429 with `Retry-After` past a limit or a spent budget, 503 when a
/// budget cannot be checked. The headers describe the key's limits either
/// way.
pub async fn admit(
    store: &dyn Store,
    client_key_label: Option<&str>,
    buckets: Vec<LimitBucket>,
    estimate: u64,
    budget: Option<BudgetAsk>,
) -> Result<Admitted, (GatewayError, Vec<(&'static str, String)>)> {
    if buckets.is_empty() && budget.is_none() {
        return Ok(Admitted {
            headers: Vec::new(),
            reserved: Reserved::default(),
        });
    }
    let spend = budget.as_ref().map(|b| &b.limit);
    let admission = store.admit_spending(&buckets, estimate, spend).await;
    let mut headers = RateHeaders::of_key(client_key_label, &buckets, &admission).headers();
    if let (Some(b), Some(d)) = (&budget, admission.spend) {
        match d.state {
            SpendState::Unknown => {
                crate::metrics::RATE_LIMITED
                    .with_label_values(&[client_key_label.unwrap_or("-"), "budget_unknown"])
                    .inc();
                return Err((b.cannot_be_checked(), headers));
            }
            SpendState::Exhausted => {
                headers.extend(b.headers(d.spent));
                crate::metrics::RATE_LIMITED
                    .with_label_values(&[client_key_label.unwrap_or("-"), "budget"])
                    .inc();
                return Err((b.spent(), headers));
            }
            SpendState::Reserved => headers.extend(b.headers(d.spent)),
        }
    }
    if let Some((i, kind)) = admission.refused {
        let global = buckets[i].name == GLOBAL;
        let decision = match kind {
            LimitKind::Requests => admission.buckets[i].requests,
            LimitKind::Tokens => admission.buckets[i].tokens,
        }
        .unwrap_or_default();
        return Err((refusal(client_key_label, global, kind, decision), headers));
    }
    let tpm_buckets: Vec<String> = buckets
        .into_iter()
        .filter(|b| b.tpm.is_some())
        .map(|b| b.name)
        .collect();
    let tokens = (!tpm_buckets.is_empty()).then_some(TokenReservation {
        buckets: tpm_buckets,
        reservation: admission.reservation,
    });
    let spend = budget.zip(admission.spend).map(|(b, d)| SpendReservation {
        name: b.limit.name,
        reserved: d.reserved,
        ttl: b.limit.ttl,
    });
    Ok(Admitted {
        headers,
        reserved: Reserved { tokens, spend },
    })
}

/// The 429 for a refusal, counted in `apiproxy_rate_limited_total`.
fn refusal(
    client_key_label: Option<&str>,
    global: bool,
    kind: LimitKind,
    d: RateDecision,
) -> GatewayError {
    let what = match (global, kind) {
        (false, LimitKind::Requests) => "requests",
        (false, LimitKind::Tokens) => "tokens",
        (true, LimitKind::Requests) => "global requests",
        (true, LimitKind::Tokens) => "global tokens",
    };
    crate::metrics::RATE_LIMITED
        .with_label_values(&[client_key_label.unwrap_or("-"), what])
        .inc();
    let whose = if global {
        "the gateway's"
    } else {
        "this key's"
    };
    GatewayError::rate_limited(
        format!(
            "rate limit exceeded: {whose} {what} limit of {} per minute; retry in {} s",
            d.limit, d.retry_after_secs
        ),
        d.retry_after_secs,
    )
}

/// Rate-limit state of one request's key, for its response headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateHeaders {
    pub requests: Option<RateDecision>,
    pub tokens: Option<RateDecision>,
}

impl RateHeaders {
    /// The key's bucket (the first, when the request has a key with limits).
    fn of_key(
        client_key_name: Option<&str>,
        buckets: &[LimitBucket],
        admission: &Admission,
    ) -> Self {
        match (client_key_name, buckets.first(), admission.buckets.first()) {
            (Some(_), Some(b), Some(d)) if b.name.starts_with(CLIENT_KEY_BUCKET_PREFIX) => {
                RateHeaders {
                    requests: d.requests,
                    tokens: d.tokens,
                }
            }
            _ => RateHeaders::default(),
        }
    }

    /// `x-ratelimit-*` headers (on every response of a limited key).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(d) = self.requests {
            h.push(("x-ratelimit-limit-requests", d.limit.to_string()));
            h.push(("x-ratelimit-remaining-requests", d.remaining.to_string()));
        }
        if let Some(d) = self.tokens {
            h.push(("x-ratelimit-limit-tokens", d.limit.to_string()));
            h.push(("x-ratelimit-remaining-tokens", d.remaining.to_string()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::budget::spend_limit;
    use serde_json::json;

    fn top(body: &Value) -> impl Fn(&str) -> Option<Value> + '_ {
        |k| body.get(k).cloned()
    }

    fn tokens(fmt: Format, body: &Value, bytes: usize) -> u64 {
        token_estimate(fmt, top(body), bytes, 1024).tokens()
    }

    #[test]
    fn estimates_count_the_body_and_the_output_asked_for() {
        let body = json!({"max_tokens": 100});
        assert_eq!(tokens(Format::OpenAiChat, &body, 40), 110);
        assert_eq!(tokens(Format::Anthropic, &body, 41), 111);
        let body = json!({"max_completion_tokens": 7, "max_tokens": 100});
        assert_eq!(tokens(Format::OpenAiChat, &body, 4), 8);
        let body = json!({"max_output_tokens": 50});
        assert_eq!(tokens(Format::OpenAiResponses, &body, 0), 51);
        let body = json!({"generationConfig": {"maxOutputTokens": 20}});
        assert_eq!(tokens(Format::Gemini, &body, 8), 22);
        // No output bound: `limits.default_output_tokens`.
        assert_eq!(
            token_estimate(Format::Gemini, top(&json!({})), 400, 1024),
            Estimate {
                input: 100,
                output: 1024,
                max_tokens: None,
            }
        );
    }

    #[test]
    fn every_choice_asked_for_is_counted() {
        let body = json!({"max_tokens": 100, "n": 3});
        assert_eq!(tokens(Format::OpenAiChat, &body, 4), 301);
        assert_eq!(tokens(Format::OpenAiChat, &json!({"n": 2}), 4), 2049);
        let body = json!({"generationConfig": {"maxOutputTokens": 20, "candidateCount": 2}});
        assert_eq!(tokens(Format::Gemini, &body, 4), 41);
        // A made-up `n` is bounded, never an overflow; `n: 0` counts one.
        let huge = json!({"max_tokens": u64::MAX, "n": 1_000_000});
        assert_eq!(tokens(Format::OpenAiChat, &huge, 4), u64::MAX);
        assert_eq!(
            tokens(Format::OpenAiChat, &json!({"n": 1_000_000}), 0),
            1 + 1024 * 128
        );
        assert_eq!(tokens(Format::OpenAiChat, &json!({"n": 0}), 0), 1 + 1024);
    }

    #[test]
    fn a_served_answer_without_usage_keeps_at_least_its_reservation() {
        // Reported usage replaces the reservation, up or down.
        assert_eq!(settled_amount(100, Some(30), false), 30);
        assert_eq!(settled_amount(100, Some(300), false), 300);
        // Estimated: never less than reserved.
        assert_eq!(settled_amount(100, Some(30), true), 100);
        assert_eq!(settled_amount(100, Some(300), true), 300);
        // Nothing served: released.
        assert_eq!(settled_amount(100, None, false), 0);
        let u = estimated_usage(25, 10);
        assert_eq!((u.input_tokens, u.output_tokens), (25, 3));
        // Charged usage: nothing served, nothing estimated.
        assert_eq!(charged_usage(None, false, true, 25, 400), (None, false));
        // Served without a report: the estimate.
        assert_eq!(
            charged_usage(None, true, false, 25, 400),
            (Some(estimated_usage(25, 400)), true)
        );
        // A whole answer's report stands.
        let reported = Usage {
            input_tokens: 30,
            output_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(
            charged_usage(Some(reported), true, false, 25, 400),
            (Some(reported), false)
        );
        // A stream cut short: the partial report's output is raised to what
        // was relayed; its input stays the provider's.
        let (u, estimated) = charged_usage(Some(reported), true, true, 25, 400);
        assert!(estimated);
        assert_eq!(
            u.map(|u| (u.input_tokens, u.output_tokens)),
            Some((30, 100))
        );
        let more = Usage {
            output_tokens: 500,
            ..reported
        };
        assert_eq!(
            charged_usage(Some(more), true, true, 25, 400),
            (Some(more), false)
        );
        assert_eq!(micros(1.5), 1_500_000);
        assert_eq!(micros(f64::NAN), 0);
        assert_eq!(micros(-1.0), 0);
    }

    fn bucket(name: &str, rpm: Option<u64>, tpm: Option<u64>) -> LimitBucket {
        LimitBucket {
            name: name.into(),
            rpm,
            tpm,
        }
    }

    #[tokio::test]
    async fn the_key_refuses_first_and_the_headers_are_the_keys() {
        let store = apiproxy_store::memory::MemoryStore::new(&Default::default());
        let buckets = || {
            vec![
                bucket("key:alice", Some(1), Some(100)),
                bucket("global", Some(10), None),
            ]
        };
        let ok = admit(&store, Some("alice"), buckets(), 30, None)
            .await
            .expect("admitted");
        let header = |h: &[(&str, String)], name: &str| {
            h.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        };
        assert_eq!(
            header(&ok.headers, "x-ratelimit-remaining-requests").as_deref(),
            Some("0")
        );
        assert_eq!(
            header(&ok.headers, "x-ratelimit-remaining-tokens").as_deref(),
            Some("70"),
            "the reservation counts"
        );
        let reserved = ok.reserved;
        let (e, headers) = admit(&store, Some("alice"), buckets(), 30, None)
            .await
            .unwrap_err();
        assert_eq!(e.status, 429);
        assert!(
            e.message.contains("this key's requests limit of 1"),
            "{}",
            e.message
        );
        assert_eq!(
            header(&headers, "x-ratelimit-remaining-requests").as_deref(),
            Some("0")
        );
        // Settled with the real usage: 30 reserved become 12 used.
        let used = Charge {
            tokens: 12,
            ..Charge::default()
        };
        reserved.settle(&store, Some(used));
        assert_eq!(store.check_tokens("key:alice", 100).await.remaining, 88);
        // The gateway-wide bucket saw one request only.
        assert_eq!(store.hit_requests("global", 10).await.remaining, 8);
    }

    #[tokio::test]
    async fn unknown_usage_keeps_the_estimate_only_when_served() {
        let store = apiproxy_store::memory::MemoryStore::new(&Default::default());
        let estimated = Charge {
            tokens: 5,
            estimated: true,
            ..Charge::default()
        };
        for (charge, left) in [(None, 100), (Some(estimated), 60)] {
            let name = format!("key:{}", charge.is_some());
            let b = vec![bucket(&name, None, Some(100))];
            let ok = admit(&store, Some("x"), b, 40, None)
                .await
                .expect("admitted");
            ok.reserved.settle(&store, charge);
            assert_eq!(store.check_tokens(&name, 100).await.remaining, left);
        }
    }

    fn budget_ask(name: &str, limit_usd: f64, reserve_usd: f64) -> BudgetAsk {
        BudgetAsk {
            limit: spend_limit(name.into(), limit_usd, reserve_usd, Duration::from_secs(60)),
            limit_usd,
            period: crate::config::BudgetPeriod::Day,
            renews_in_secs: 60,
        }
    }

    #[tokio::test]
    async fn a_budget_is_reserved_capped_and_settled_to_the_real_cost() {
        let store = apiproxy_store::memory::MemoryStore::new(&Default::default());
        // $1 of $2.50 reserved; then $1; then the last $0.50 (capped).
        let mut held = Vec::new();
        for remaining in ["2.50000000", "1.50000000", "0.50000000"] {
            let ok = admit(
                &store,
                Some("a"),
                vec![],
                0,
                Some(budget_ask("b:a", 2.5, 1.0)),
            )
            .await
            .expect("admitted");
            assert!(ok
                .headers
                .contains(&("x-budget-remaining-usd", remaining.to_owned())));
            held.push(ok.reserved);
        }
        let (e, headers) = admit(
            &store,
            Some("a"),
            vec![],
            0,
            Some(budget_ask("b:a", 2.5, 1.0)),
        )
        .await
        .unwrap_err();
        assert_eq!((e.status, e.retry_after), (429, Some(60)));
        assert!(headers.contains(&("x-budget-remaining-usd", "0.00000000".to_owned())));
        // Settled at $0.10 each: $0.30 spent, $2.20 left.
        for r in held {
            let cost = Charge {
                cost_usd: 0.1,
                ..Charge::default()
            };
            r.settle(&store, Some(cost));
        }
        assert_eq!(
            store.add_spend("b:a", 0, Duration::from_secs(60)).await,
            300_000
        );
    }

    #[test]
    fn headers_for_both_limits() {
        let d = RateDecision {
            allowed: true,
            limit: 5,
            remaining: 4,
            retry_after_secs: 0,
        };
        let h = RateHeaders {
            requests: Some(d),
            tokens: None,
        }
        .headers();
        assert_eq!(
            h,
            [
                ("x-ratelimit-limit-requests", "5".into()),
                ("x-ratelimit-remaining-requests", "4".into())
            ]
        );
    }
}
