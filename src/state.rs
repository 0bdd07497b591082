//! The gateway's side of shared state: opening the store once, rate-limit
//! checks and their headers, and the context snippets kept per session.

use apiproxy_store::{RateDecision, Store};
use apiproxy_translate::Format;
use serde_json::Value;

use crate::error::GatewayError;

/// The store, opened on first use.
pub use apiproxy_store::LazyStore as SharedState;

/// Rate-limit state of one request, for its response headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateHeaders {
    pub requests: Option<RateDecision>,
    pub tokens: Option<RateDecision>,
}

impl RateHeaders {
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

/// Counts the request against the key's and the global limits. `Err`: 429
/// with `Retry-After`.
pub async fn check_limits(
    store: &dyn Store,
    key_name: Option<&str>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    global_rpm: Option<u64>,
    global_tpm: Option<u64>,
) -> Result<RateHeaders, (GatewayError, RateHeaders)> {
    let mut out = RateHeaders::default();
    let refuse = |what: &str, d: RateDecision, out: RateHeaders| {
        crate::metrics::RATE_LIMITED
            .with_label_values(&[key_name.unwrap_or("-"), what])
            .inc();
        let e = GatewayError::rate_limited(
            format!(
                "rate limit exceeded: {} {what} limit of {} per minute; retry in {} s",
                if what.starts_with("global") {
                    "the gateway's"
                } else {
                    "this key's"
                },
                d.limit,
                d.retry_after_secs
            ),
            d.retry_after_secs,
        );
        Err((e, out))
    };
    if let Some(limit) = global_rpm {
        let d = store.hit_requests("global", limit).await;
        if !d.allowed {
            return refuse("global requests", d, out);
        }
    }
    if let Some(limit) = global_tpm {
        let d = store.check_tokens("global", limit).await;
        if !d.allowed {
            return refuse("global tokens", d, out);
        }
    }
    if let (Some(name), Some(limit)) = (key_name, rpm) {
        let d = store.hit_requests(&format!("key:{name}"), limit).await;
        out.requests = Some(d);
        if !d.allowed {
            return refuse("requests", d, out);
        }
    }
    if let (Some(name), Some(limit)) = (key_name, tpm) {
        let d = store.check_tokens(&format!("key:{name}"), limit).await;
        out.tokens = Some(d);
        if !d.allowed {
            return refuse("tokens", d, out);
        }
    }
    Ok(out)
}

/// Shortens every string in `v` to at most `max` characters.
pub fn truncate_strings(v: &mut Value, max: usize) {
    match v {
        Value::String(s) => {
            if let Some((i, _)) = s.char_indices().nth(max) {
                s.truncate(i);
                s.push('…');
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| truncate_strings(x, max)),
        Value::Object(o) => o.values_mut().for_each(|x| truncate_strings(x, max)),
        _ => {}
    }
}

/// The part of a request worth keeping as context: the newest turn (last
/// message / content / input item), strings cut to `max` characters.
pub fn request_snippet(fmt: Format, body: &Value, model: &str, max: usize) -> Value {
    let last = match fmt {
        Format::OpenAiChat | Format::Anthropic => {
            body.get("messages").and_then(|m| m.as_array()?.last())
        }
        Format::Gemini => body.get("contents").and_then(|m| m.as_array()?.last()),
        Format::OpenAiResponses => match body.get("input") {
            Some(Value::Array(items)) => items.last(),
            other => other,
        },
    };
    let mut snippet = serde_json::json!({
        "model": model,
        "format": fmt.as_str(),
        "message": last.cloned().unwrap_or(Value::Null),
    });
    truncate_strings(&mut snippet, max);
    snippet
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snippets_keep_the_newest_turn_cut_short() {
        let body = json!({"messages": [{"role": "user", "content": "old"}, {"role": "user", "content": "abcdefghij"}]});
        let s = request_snippet(Format::OpenAiChat, &body, "fast", 4);
        assert_eq!(s["message"]["content"], "abcd…");
        assert_eq!(s["model"], "fast");
        let r = request_snippet(
            Format::OpenAiResponses,
            &json!({"input": "hello"}),
            "m",
            100,
        );
        assert_eq!(r["message"], "hello");
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
