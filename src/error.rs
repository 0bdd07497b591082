//! The gateway's one error type: it knows its HTTP status and renders itself
//! in the client format's own error shape.

use apiproxy_translate::{error_body, Format};

/// A request that ends in an error response.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: u16,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl GatewayError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
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
