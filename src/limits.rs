//! The rate limits of a generation request: the buckets it counts in (its
//! client key's first, then the gateway-wide `limits`), the tokens it
//! reserves at admission, the 429 and the `x-ratelimit-*` headers, and the
//! settlement of the reservation with the real usage after the answer.
//!
//! Admission is one store call ([`Store::admit`]): every limit is checked
//! before anything is counted, so a request refused by its key's limit uses
//! none of the gateway's, and a refused request consumes nothing at all.
//! Token limits see reservations: a request reserves an estimate of its
//! tokens (the body's size for the input, its `max_tokens` or the format's
//! equivalent for the output), so concurrent requests cannot all slip under
//! a `tpm` that none of them has counted against yet.

use apiproxy_store::{
    Admission, Deferred, LimitBucket, LimitKind, RateDecision, Reservation, Store,
};
use apiproxy_translate::Format;
use serde_json::Value;

use crate::config::{ClientKey, Config};
use crate::error::GatewayError;

/// Bytes of request body counted as one input token in the estimate (the
/// usual English ratio; JSON punctuation makes it generous).
const BYTES_PER_TOKEN: usize = 4;

/// The name of the bucket every request counts in with `limits.rpm`/`tpm`.
const GLOBAL: &str = "global";

/// The buckets a request with `key` counts in, its key's first.
pub fn buckets_for(key: Option<&ClientKey>, config: &Config) -> Vec<LimitBucket> {
    let mut buckets = Vec::with_capacity(2);
    if let Some(k) = key.filter(|k| k.rpm.is_some() || k.tpm.is_some()) {
        buckets.push(LimitBucket {
            name: format!("key:{}", k.id),
            rpm: k.rpm,
            tpm: k.tpm,
        });
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

/// The tokens a request may use, estimated before it is sent: its body's
/// size in tokens plus the most output it asks for (`max_tokens`,
/// `max_completion_tokens`, `max_output_tokens`, Gemini's
/// `generationConfig.maxOutputTokens`).
/// `top_level` reads one top-level member of the body.
pub fn token_estimate(
    fmt: Format,
    top_level: impl Fn(&str) -> Option<Value>,
    body_bytes: usize,
) -> u64 {
    let input = body_bytes.div_ceil(BYTES_PER_TOKEN).max(1) as u64;
    let field = |path: &[&str]| {
        let (first, rest) = path.split_first()?;
        let v = top_level(first)?;
        rest.iter().try_fold(&v, |v, k| v.get(k))?.as_u64()
    };
    let output = match fmt {
        Format::OpenAiChat => field(&["max_completion_tokens"]).or_else(|| field(&["max_tokens"])),
        Format::OpenAiResponses => field(&["max_output_tokens"]),
        Format::Anthropic => field(&["max_tokens"]),
        Format::Gemini => field(&["generationConfig", "maxOutputTokens"])
            .or_else(|| field(&["generation_config", "max_output_tokens"])),
    };
    input.saturating_add(output.unwrap_or(0))
}

/// Tokens reserved at admission, to be replaced by the real usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReservation {
    /// The buckets with a `tpm` the request was admitted in.
    buckets: Vec<String>,
    reservation: Reservation,
}

impl TokenReservation {
    /// Queues the settlement: the reservation is replaced by `used` tokens
    /// (`None`: usage unknown; an answer that was served keeps its estimate,
    /// one that was not releases it).
    pub fn settle(self, store: &dyn Store, used: Option<u64>, served: bool) {
        let used = match used {
            Some(n) => n,
            None if served => self.reservation.tokens,
            None => 0,
        };
        store.defer(Deferred::Settle {
            buckets: self.buckets,
            reservation: self.reservation,
            used,
        });
    }
}

impl TokenReservation {
    /// Counts `tokens` more in the request's buckets, beyond its own
    /// usage: what an attempt a hedged race gave up cost (the provider ran
    /// it for this request). A settlement that reserved nothing and adds
    /// `tokens`.
    pub fn charge_extra(&self, store: &dyn Store, tokens: u64) {
        if tokens == 0 {
            return;
        }
        store.defer(Deferred::Settle {
            buckets: self.buckets.clone(),
            reservation: Reservation::default(),
            used: tokens,
        });
    }
}

/// An admitted request: its headers and what it reserved.
#[derive(Debug)]
pub struct Admitted {
    pub headers: RateHeaders,
    /// `None` when no bucket has a `tpm`.
    pub tokens: Option<TokenReservation>,
}

/// Admits the request (one store call) or refuses it with 429 and
/// `Retry-After`; the headers describe the key's limits either way.
pub async fn admit(
    store: &dyn Store,
    key_name: Option<&str>,
    buckets: Vec<LimitBucket>,
    estimate: u64,
) -> Result<Admitted, (GatewayError, RateHeaders)> {
    if buckets.is_empty() {
        return Ok(Admitted {
            headers: RateHeaders::default(),
            tokens: None,
        });
    }
    let admission = store.admit(&buckets, estimate).await;
    let headers = RateHeaders::of_key(key_name, &buckets, &admission);
    if let Some((i, kind)) = admission.refused {
        let global = buckets[i].name == GLOBAL;
        let decision = match kind {
            LimitKind::Requests => admission.buckets[i].requests,
            LimitKind::Tokens => admission.buckets[i].tokens,
        }
        .unwrap_or_default();
        return Err((refusal(key_name, global, kind, decision), headers));
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
    Ok(Admitted { headers, tokens })
}

/// The 429 for a refusal, counted in `apiproxy_rate_limited_total`.
fn refusal(key_name: Option<&str>, global: bool, kind: LimitKind, d: RateDecision) -> GatewayError {
    let what = match (global, kind) {
        (false, LimitKind::Requests) => "requests",
        (false, LimitKind::Tokens) => "tokens",
        (true, LimitKind::Requests) => "global requests",
        (true, LimitKind::Tokens) => "global tokens",
    };
    crate::metrics::RATE_LIMITED
        .with_label_values(&[key_name.unwrap_or("-"), what])
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
    fn of_key(key_name: Option<&str>, buckets: &[LimitBucket], admission: &Admission) -> Self {
        match (key_name, buckets.first(), admission.buckets.first()) {
            (Some(_), Some(b), Some(d)) if b.name.starts_with("key:") => RateHeaders {
                requests: d.requests,
                tokens: d.tokens,
            },
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
    use serde_json::json;

    fn top(body: &Value) -> impl Fn(&str) -> Option<Value> + '_ {
        |k| body.get(k).cloned()
    }

    #[test]
    fn estimates_count_the_body_and_the_output_asked_for() {
        let body = json!({"max_tokens": 100});
        assert_eq!(token_estimate(Format::OpenAiChat, top(&body), 40), 110);
        assert_eq!(token_estimate(Format::Anthropic, top(&body), 41), 111);
        let body = json!({"max_completion_tokens": 7, "max_tokens": 100});
        assert_eq!(token_estimate(Format::OpenAiChat, top(&body), 4), 8);
        let body = json!({"max_output_tokens": 50});
        assert_eq!(token_estimate(Format::OpenAiResponses, top(&body), 0), 51);
        let body = json!({"generationConfig": {"maxOutputTokens": 20}});
        assert_eq!(token_estimate(Format::Gemini, top(&body), 8), 22);
        // No output bound: the input alone.
        assert_eq!(token_estimate(Format::Gemini, top(&json!({})), 400), 100);
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
        let ok = admit(&store, Some("alice"), buckets(), 30)
            .await
            .expect("admitted");
        assert_eq!(ok.headers.requests.map(|d| d.remaining), Some(0));
        assert_eq!(
            ok.headers.tokens.map(|d| d.remaining),
            Some(70),
            "the reservation counts"
        );
        let tokens = ok.tokens.expect("a tpm bucket");
        let (e, headers) = admit(&store, Some("alice"), buckets(), 30)
            .await
            .unwrap_err();
        assert_eq!(e.status, 429);
        assert!(
            e.message.contains("this key's requests limit of 1"),
            "{}",
            e.message
        );
        assert_eq!(headers.requests.map(|d| d.remaining), Some(0));
        // Settled with the real usage: 30 reserved become 12 used.
        tokens.settle(&store, Some(12), true);
        assert_eq!(store.check_tokens("key:alice", 100).await.remaining, 88);
        // The gateway-wide bucket saw one request only.
        assert_eq!(store.hit_requests("global", 10).await.remaining, 8);
    }

    #[tokio::test]
    async fn unknown_usage_keeps_the_estimate_only_when_served() {
        let store = apiproxy_store::memory::MemoryStore::new(&Default::default());
        for (served, left) in [(false, 100), (true, 60)] {
            let name = format!("key:{served}");
            let b = vec![bucket(&name, None, Some(100))];
            let ok = admit(&store, Some("x"), b, 40).await.expect("admitted");
            ok.tokens.expect("tpm").settle(&store, None, served);
            assert_eq!(store.check_tokens(&name, 100).await.remaining, left);
        }
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
