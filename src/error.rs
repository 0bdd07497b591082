//! The gateway's one error type: it says where the error came from (the
//! client, an upstream, or the gateway itself), knows its HTTP status and
//! renders itself in the client format's own error shape.

use std::sync::Arc;

use apiproxy_translate::{error_body, Format};

/// Who caused an error: decides its status class and whether it says
/// anything about an upstream's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client's request: bad JSON, an unknown key or model, a limit.
    Client,
    /// The providers behind: every candidate failed, or one refused the
    /// request and its answer is relayed.
    Upstream,
    /// The gateway itself (a bug or a failed write): 500.
    Gateway,
}

/// A request that ends in an error response.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub source: ErrorSource,
    pub status: u16,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// What caused it, for the log (`source()`); never shown to the client.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl GatewayError {
    fn with(source: ErrorSource, status: u16, message: impl Into<String>) -> Self {
        GatewayError {
            source,
            status,
            message: message.into(),
            retry_after: None,
            cause: None,
        }
    }

    /// Keeps `cause` as this error's source.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// A problem with the client's request, answered with `status` (4xx).
    pub fn client(status: u16, message: impl Into<String>) -> Self {
        Self::with(ErrorSource::Client, status, message)
    }

    /// The upstreams failed the request (502, 503, 504, or a relayed status).
    pub fn upstream(status: u16, message: impl Into<String>) -> Self {
        Self::with(ErrorSource::Upstream, status, message)
    }

    /// The gateway failed on its own: 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::with(ErrorSource::Gateway, 500, message)
    }

    /// The gateway cannot decide the request now (its shared store is out
    /// of reach): 503 with `Retry-After: 1`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::with(ErrorSource::Gateway, 503, message).retry_after(1)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::client(400, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::client(401, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::client(403, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::client(404, message)
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::client(429, message);
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// Sets `Retry-After` (seconds).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The body in the client's error shape.
    pub fn body(&self, fmt: Format) -> Vec<u8> {
        error_body(fmt, self.status, &self.message)
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An error with its causes, for a log line: each cause whose words are
/// not already in the text so far (Pingora's errors name their own
/// causes) follows after `: caused by `.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut said = self.0.to_string();
        let mut next = self.0.source();
        while let Some(e) = next {
            let words = e.to_string();
            if !said.contains(&words) {
                said.push_str(": caused by ");
                said.push_str(&words);
            }
            next = e.source();
        }
        f.write_str(&said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("attempt failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let e = GatewayError::internal("writing the response").caused_by(Outer(
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe"),
        ));
        assert_eq!(
            Chain(&e).to_string(),
            "500 writing the response: caused by attempt failed: caused by broken pipe"
        );
        // A cause already named in the text is not repeated.
        let e = GatewayError::internal("writing: broken pipe").caused_by(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "broken pipe",
        ));
        assert_eq!(Chain(&e).to_string(), "500 writing: broken pipe");
    }
}
