//! Error bodies in each client format's own shape, and the translation error.

use bytes::BytesMut;
use serde_json::json;

use crate::{sse, Format};

/// A body could not be decoded or encoded; the message says what is wrong in
/// words a client can act on (`messages[2].content: expected a string or an
/// array`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    pub message: String,
}

impl TranslateError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TranslateError {}

/// OpenAI's `error.type` for a status.
fn openai_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        // The other refusals of the request itself (405, 408, 421, 431, ...).
        400..=499 => "invalid_request_error",
        _ => "upstream_error",
    }
}

/// OpenAI's `error.code` for a status.
fn openai_code(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request",
        401 => "invalid_api_key",
        // A model outside the key's list, an unpriced model on a budget, a
        // reference to another key's object, a cross-site request.
        403 => "permission_denied",
        404 => "model_not_found",
        413 => "request_too_large",
        429 => "rate_limit_exceeded",
        400..=499 => "invalid_request",
        504 => "upstream_timeout",
        _ => "upstream_unavailable",
    }
}

/// Anthropic's `error.type` for a status.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Google's canonical status name for an HTTP status.
fn gemini_status(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        400..=499 => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    }
}

/// The error body a client speaking `fmt` expects for `status`.
pub fn error_body(fmt: Format, status: u16, message: &str) -> Vec<u8> {
    let v = match fmt {
        Format::OpenAiChat | Format::OpenAiResponses => json!({
            "error": {"message": message, "type": openai_type(status), "code": openai_code(status)}
        }),
        Format::Anthropic => json!({
            "type": "error",
            "error": {"type": anthropic_type(status), "message": message}
        }),
        Format::Gemini => json!({
            "error": {"code": status, "message": message, "status": gemini_status(status)}
        }),
        Format::Bedrock => json!({ "message": message }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The one SSE event that ends a started stream with an upstream failure,
/// in the client's format (`status` is the upstream's, when there was one).
pub fn stream_error_event(fmt: Format, status: Option<u16>, message: &str, out: &mut BytesMut) {
    match fmt {
        Format::OpenAiChat => {
            let v =
                json!({"error": {"type": "upstream_error", "status": status, "message": message}});
            sse::write_data(out, v.to_string().as_bytes());
        }
        Format::OpenAiResponses => responses_error_event(message, None, out),
        Format::Anthropic => {
            let kind = anthropic_type(status.unwrap_or(502));
            let v = json!({"type": "error", "error": {"type": kind, "message": message}});
            sse::write_event(out, "error", v.to_string().as_bytes());
        }
        Format::Gemini => {
            let code = status.unwrap_or(502);
            let v =
                json!({"error": {"code": code, "message": message, "status": gemini_status(code)}});
            sse::write_data(out, v.to_string().as_bytes());
        }
        Format::Bedrock => crate::bedrock::exception_frame(message, out),
    }
}

/// The Responses `error` stream event. A translating encoder passes the
/// stream's next `sequence_number` (the SDKs' `ResponseErrorEvent` has one);
/// a relay that never numbered the stream passes `None`.
pub fn responses_error_event(message: &str, sequence_number: Option<u64>, out: &mut BytesMut) {
    let mut v =
        json!({"type": "error", "code": "upstream_error", "message": message, "param": null});
    if let Some(n) = sequence_number {
        v["sequence_number"] = json!(n);
    }
    sse::write_event(out, "error", v.to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn refusals_of_the_request_are_client_errors_in_every_shape() {
        for status in [405, 408, 421, 431] {
            let o = parse(&error_body(Format::OpenAiChat, status, "no"));
            assert_eq!(o["error"]["type"], "invalid_request_error", "{status}");
            assert_eq!(o["error"]["code"], "invalid_request", "{status}");
            let a = parse(&error_body(Format::Anthropic, status, "no"));
            assert_eq!(a["error"]["type"], "invalid_request_error", "{status}");
            let g = parse(&error_body(Format::Gemini, status, "no"));
            assert_eq!(g["error"]["status"], "INVALID_ARGUMENT", "{status}");
        }
        let o = parse(&error_body(Format::OpenAiChat, 403, "no"));
        assert_eq!(o["error"]["code"], "permission_denied");
    }

    #[test]
    fn shapes() {
        let o = parse(&error_body(Format::OpenAiChat, 401, "bad key"));
        assert_eq!(o["error"]["type"], "authentication_error");
        assert_eq!(o["error"]["message"], "bad key");
        let a = parse(&error_body(Format::Anthropic, 404, "no model"));
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "not_found_error");
        let g = parse(&error_body(Format::Gemini, 429, "slow down"));
        assert_eq!(g["error"]["code"], 429);
        assert_eq!(g["error"]["status"], "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn openai_stream_error_matches_the_interface() {
        let mut b = BytesMut::new();
        stream_error_event(Format::OpenAiChat, Some(500), "boom", &mut b);
        let s = std::str::from_utf8(&b).unwrap();
        let data = s.strip_prefix("data: ").unwrap().trim_end();
        let v = parse(data.as_bytes());
        assert_eq!(v["error"]["type"], "upstream_error");
        assert_eq!(v["error"]["status"], 500);
        assert_eq!(v["error"]["message"], "boom");
    }
}
