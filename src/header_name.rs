//! The names of the headers the gateway writes, typed without a parse or
//! a copy where they are known. Pingora's `insert_header` parses a name and
//! copies its value at every call; the upstream request's headers and the
//! answer's are written on every request, so they go into the header map
//! as typed names instead (`upstream::http`, `proxy::respond`). A leaf.

use http::header::{self, HeaderName, InvalidHeaderName};

/// Request headers the gateway reads on every request, named once (a
/// lookup by `&str` parses the name first).
pub const X_DEBUG: HeaderName = HeaderName::from_static("x-debug");
pub const X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
/// The W3C trace context's headers (read from the client, sent upstream).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `k` as a header name: the gateway's own names without a parse (a name
/// outside the standard set is otherwise copied into an allocation of its
/// own), any other parsed.
pub fn of(k: &'static str) -> Result<HeaderName, InvalidHeaderName> {
    Ok(match k {
        "authorization" => header::AUTHORIZATION,
        "content-type" => header::CONTENT_TYPE,
        "cache-control" => header::CACHE_CONTROL,
        "retry-after" => header::RETRY_AFTER,
        "x-api-key" => HeaderName::from_static("x-api-key"),
        "api-key" => HeaderName::from_static("api-key"),
        "x-goog-api-key" => HeaderName::from_static("x-goog-api-key"),
        "anthropic-version" => HeaderName::from_static("anthropic-version"),
        "traceparent" => TRACEPARENT,
        "tracestate" => TRACESTATE,
        "x-apiproxy-cache" => HeaderName::from_static("x-apiproxy-cache"),
        "x-ratelimit-limit-requests" => HeaderName::from_static("x-ratelimit-limit-requests"),
        "x-ratelimit-remaining-requests" => {
            HeaderName::from_static("x-ratelimit-remaining-requests")
        }
        "x-ratelimit-limit-tokens" => HeaderName::from_static("x-ratelimit-limit-tokens"),
        "x-ratelimit-remaining-tokens" => HeaderName::from_static("x-ratelimit-remaining-tokens"),
        "x-budget-limit-usd" => HeaderName::from_static("x-budget-limit-usd"),
        "x-budget-remaining-usd" => HeaderName::from_static("x-budget-remaining-usd"),
        _ => HeaderName::from_bytes(k.as_bytes())?,
    })
}

/// The headers the provider kinds carry a key in: their values are
/// marked sensitive (never shown by a debug print of the header).
pub fn carries_a_key(name: &HeaderName) -> bool {
    [
        header::AUTHORIZATION.as_str(),
        "x-api-key",
        "api-key",
        "x-goog-api-key",
    ]
    .contains(&name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name written without a parse is the name it stands for.
    #[test]
    fn each_known_name_is_the_name_it_stands_for() {
        for k in [
            "authorization",
            "content-type",
            "cache-control",
            "retry-after",
            "x-api-key",
            "api-key",
            "x-goog-api-key",
            "anthropic-version",
            "traceparent",
            "tracestate",
            "x-apiproxy-cache",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-budget-limit-usd",
            "x-budget-remaining-usd",
            "anthropic-beta",
        ] {
            let parsed = HeaderName::from_bytes(k.as_bytes()).unwrap();
            assert_eq!(of(k).unwrap(), parsed, "{k}");
        }
        assert!(of("bad name").is_err());
        assert!(carries_a_key(&of("x-goog-api-key").unwrap()));
        assert!(!carries_a_key(&of("anthropic-version").unwrap()));
    }
}
